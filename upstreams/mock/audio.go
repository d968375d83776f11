package mock

import (
	"encoding/binary"
	"math"
	"sync"
)

// audioFormat is a GA audio format (session.audio.input/output.format.type).
type audioFormat uint8

const (
	formatPCM  audioFormat = iota // audio/pcm: 16-bit little-endian, 24 kHz, mono
	formatPCMU                    // audio/pcmu: G.711 mu-law, 8 kHz
	formatPCMA                    // audio/pcma: G.711 A-law, 8 kHz
)

func parseFormat(typ string) (audioFormat, bool) {
	switch typ {
	case "audio/pcm":
		return formatPCM, true
	case "audio/pcmu":
		return formatPCMU, true
	case "audio/pcma":
		return formatPCMA, true
	}
	return 0, false
}

// bytesPerSecond is the data rate of f.
func (f audioFormat) bytesPerSecond() int {
	if f == formatPCM {
		return 48000
	}
	return 8000
}

// millis is the playing time of n bytes of f.
func (f audioFormat) millis(n int) int {
	return int(int64(n) * 1000 / int64(f.bytesPerSecond()))
}

// sampleBytes is the size of one sample of f.
func (f audioFormat) sampleBytes() int {
	if f == formatPCM {
		return 2
	}
	return 1
}

// sumSquares is the sum of the squares of the samples in p (whole samples).
func (f audioFormat) sumSquares(p []byte) int64 {
	var sum int64
	switch f {
	case formatPCMU:
		for _, b := range p {
			v := int64(ulawTable[b])
			sum += v * v
		}
	case formatPCMA:
		for _, b := range p {
			v := int64(alawTable[b])
			sum += v * v
		}
	default:
		for i := 0; i+1 < len(p); i += 2 {
			v := int64(int16(binary.LittleEndian.Uint16(p[i:])))
			sum += v * v
		}
	}
	return sum
}

const (
	// maxInputBytes bounds the uncommitted input audio of a session (and the
	// committed audio waiting for a response): the OpenAI limit of one
	// append. Beyond it the oldest audio is dropped.
	maxInputBytes = 15 << 20
	// commitMinMillis is the least audio a commit accepts.
	commitMinMillis = 100
	// vadWindowMillis is the VAD analysis window.
	vadWindowMillis = 10
	// vadLevel is the RMS (of 16-bit samples) above which a window is speech:
	// 1/32 of full scale, about -30 dBFS.
	vadLevel = 1024
)

// boundAudio drops the oldest bytes of buf when it holds more than limit, down
// to three quarters of limit, so the copy is paid once per quarter of limit
// appended and not on every append.
func boundAudio(buf []byte, limit int) []byte {
	if len(buf) <= limit {
		return buf
	}
	keep := limit - limit/4
	n := copy(buf, buf[len(buf)-keep:])
	return buf[:n]
}

// vadState is the energy-based voice activity detector of one session. It
// measures the audio timeline (bytes appended), not the wall clock, so a test
// can send seconds of audio at once.
type vadState struct {
	rest       int   // bytes of a partial sample at the end of the input, not analysed yet
	winSamples int   // samples in the current window so far
	winSum     int64 // sum of their squares
	totalMs    int64 // audio appended since the session started, in whole windows
	inSpeech   bool
	silenceMs  int    // trailing silence while in speech
	itemID     string // id the committed item will get
}

// vadEvent is what one analysis window found.
type vadEvent uint8

const (
	vadNone vadEvent = iota
	vadStarted
	vadStopped
)

// feed adds samples (their count and sum of squares) to the current window.
func (v *vadState) feed(samples int, sumSquares int64) {
	v.winSamples += samples
	v.winSum += sumSquares
}

// endWindow classifies the full current window and reports speech starting
// or stopping. silenceMs is the session's silence_duration_ms.
func (v *vadState) endWindow(silenceMs int) vadEvent {
	loud := v.winSum >= int64(vadLevel)*int64(vadLevel)*int64(v.winSamples)
	v.winSamples, v.winSum = 0, 0
	v.totalMs += vadWindowMillis
	switch {
	case !v.inSpeech && loud:
		v.inSpeech, v.silenceMs = true, 0
		return vadStarted
	case v.inSpeech && loud:
		v.silenceMs = 0
	case v.inSpeech:
		v.silenceMs += vadWindowMillis
		if v.silenceMs >= silenceMs {
			v.inSpeech = false
			return vadStopped
		}
	}
	return vadNone
}

// Tones synthesised for responses with no committed audio: one second of a
// quiet 440 Hz sine in each output format, below the VAD level.
var tones = sync.OnceValue(func() [3][]byte {
	var t [3][]byte
	const amp, hz = 1000.0, 440.0 // RMS about 700: below vadLevel
	pcm := make([]byte, 48000)
	for i := range 24000 {
		v := int16(amp * math.Sin(2*math.Pi*hz*float64(i)/24000))
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(v))
	}
	t[formatPCM] = pcm
	mu, a := make([]byte, 8000), make([]byte, 8000)
	for i := range 8000 {
		v := int16(amp * math.Sin(2*math.Pi*hz*float64(i)/8000))
		mu[i], a[i] = linearToUlaw(v), linearToAlaw(v)
	}
	t[formatPCMU], t[formatPCMA] = mu, a
	return t
})

// G.711 decoding tables.
var ulawTable, alawTable = func() (u, a [256]int16) {
	for i := range 256 {
		u[i], a[i] = ulawToLinear(byte(i)), alawToLinear(byte(i))
	}
	return u, a
}()

func ulawToLinear(u byte) int16 {
	u = ^u
	t := (int32(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func alawToLinear(a byte) int16 {
	a ^= 0x55
	t := int32(a&0x0f) << 4
	switch seg := (a & 0x70) >> 4; seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

func linearToUlaw(pcm int16) byte {
	const bias, clip = 0x84, 32635
	v := int32(pcm)
	var sign byte
	if v < 0 {
		v, sign = -v, 0x80
	}
	v = min(v, clip) + bias
	exp := byte(7)
	for mask := int32(0x4000); v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := byte(v>>(exp+3)) & 0x0f
	return ^(sign | exp<<4 | mant)
}

var alawSegEnd = [8]int32{0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff}

func linearToAlaw(pcm int16) byte {
	v := int32(pcm) >> 3
	mask := byte(0xd5)
	if v < 0 {
		mask, v = 0x55, -v-1
	}
	seg := 0
	for seg < 8 && v > alawSegEnd[seg] {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	aval := byte(seg << 4)
	if seg < 2 {
		aval |= byte(v>>1) & 0x0f
	} else {
		aval |= byte(v>>seg) & 0x0f
	}
	return aval ^ mask
}
