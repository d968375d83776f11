package bench

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/realtime"
)

// A probe is one input_audio_buffer.append event carrying its own sequence
// number and send time in event_id, so that its echo (verbatim, from the
// mock upstream's echo fault) gives a round trip without any state:
//
//	{"type":"input_audio_buffer.append","event_id":"bench_SSSSSSSSSSSS_TTTTTTTTTTTTTTTTTTT","audio":"..."}
//
// S is the sequence number within the session and T the send time in
// nanoseconds since the run's clock base, both zero-padded decimals, so the
// frame length never changes and only those 32 bytes are rewritten (and
// re-masked) per send.
const (
	probePrefix = `{"type":"` + realtime.InputAudioAppend + `","event_id":"bench_`
	seqDigits   = 12
	timeDigits  = 19
	idLen       = seqDigits + 1 + timeDigits
	probeMiddle = `","audio":"`
	probeSuffix = `"}`
	// probeHead is how many payload bytes identify a probe.
	probeHead = len(probePrefix) + idLen
	// MinFrameBytes is the smallest probe payload (4 base64 characters of audio).
	MinFrameBytes = probeHead + len(probeMiddle) + 4 + len(probeSuffix)
)

// echoEvent turns the mock upstream's echo fault on for the session.
var echoEvent = []byte(`{"type":"` + realtime.MockFault + `","fault":"echo"}`)

// sessionUpdate is the configuration a session sends after session.created,
// as clients do; the upstream answers session.updated.
var sessionUpdate = []byte(`{"type":"` + realtime.SessionUpdate + `","session":{"type":"realtime","instructions":"tether-bench"}}`)

// probe is a session's pre-encoded append frame, masked as a client sends it.
type probe struct {
	frame  []byte // header and masked payload
	hdrLen int
	mask   [4]byte
	fixed  bool // never stamped (the GPT-Live append)
}

// audioBlock is 100 ms of a 440 Hz tone, 24 kHz pcm16 mono, in base64: it
// tiles without a seam (44 whole cycles, 4800 bytes = a multiple of 3).
var audioBlock = func() []byte {
	raw := make([]byte, 4800)
	for i := range 2400 {
		v := int16(8000 * math.Sin(2*math.Pi*440*float64(i)/24000))
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(v))
	}
	return []byte(base64.StdEncoding.EncodeToString(raw))
}()

// probePayload returns an unmasked probe payload of exactly size bytes
// (stamped with zeros): base64 audio in whole quanta, padded with JSON
// whitespace before the closing brace.
func probePayload(size int) ([]byte, error) {
	if size < MinFrameBytes {
		return nil, fmt.Errorf("frame size %d: the smallest probe is %d bytes", size, MinFrameBytes)
	}
	fixed := probeHead + len(probeMiddle) + len(probeSuffix)
	audio := (size - fixed) / 4 * 4
	p := make([]byte, 0, size)
	p = append(p, probePrefix...)
	p = append(p, bytes.Repeat([]byte{'0'}, seqDigits)...)
	p = append(p, '_')
	p = append(p, bytes.Repeat([]byte{'0'}, timeDigits)...)
	p = append(p, probeMiddle...)
	for audio > 0 {
		n := min(audio, len(audioBlock))
		p = append(p, audioBlock[:n]...)
		audio -= n
	}
	p = append(p, '"')
	for len(p) < size-1 {
		p = append(p, ' ')
	}
	return append(p, '}'), nil
}

// newProbe encodes a masked text frame of a size-byte probe payload.
func newProbe(size int, mask [4]byte) (*probe, error) {
	payload, err := probePayload(size)
	if err != nil {
		return nil, err
	}
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(size), Masked: true, Mask: mask}
	hl := ws.HeaderSize(h)
	frame := make([]byte, hl+size)
	if err := ws.WriteHeader(&fixedWriter{buf: frame[:0:hl]}, h); err != nil {
		return nil, err
	}
	copy(frame[hl:], payload)
	ws.Cipher(frame[hl:], mask, 0)
	return &probe{frame: frame, hdrLen: hl, mask: mask}, nil
}

// stamp writes seq and the send time into the frame, masked in place.
func (p *probe) stamp(seq uint64, sent time.Duration) {
	if p.fixed {
		return
	}
	var id [idLen]byte
	putDigits(id[:seqDigits], uint64(seq))
	id[seqDigits] = '_'
	putDigits(id[seqDigits+1:], uint64(max(sent, 0)))
	off := len(probePrefix)
	dst := p.frame[p.hdrLen+off : p.hdrLen+off+idLen]
	copy(dst, id[:])
	ws.Cipher(dst, p.mask, off)
}

// putDigits writes v as zero-padded decimal filling dst (high digits are
// dropped if v does not fit).
func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

var errNotProbe = errors.New("not a bench probe")

// parseProbe reads seq and send time from the first probeHead bytes of an
// unmasked payload.
func parseProbe(head []byte) (seq uint64, sent time.Duration, err error) {
	if len(head) < probeHead || !bytes.Equal(head[:len(probePrefix)], []byte(probePrefix)) {
		return 0, 0, errNotProbe
	}
	id := head[len(probePrefix):probeHead]
	if id[seqDigits] != '_' {
		return 0, 0, errNotProbe
	}
	s, ok1 := parseDigits(id[:seqDigits])
	t, ok2 := parseDigits(id[seqDigits+1:])
	if !ok1 || !ok2 || t > math.MaxInt64 {
		return 0, 0, errNotProbe
	}
	return s, time.Duration(t), nil
}

func parseDigits(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// fixedWriter appends into a buffer of fixed capacity.
type fixedWriter struct{ buf []byte }

func (w *fixedWriter) Write(p []byte) (int, error) {
	if len(w.buf)+len(p) > cap(w.buf) {
		return 0, errors.New("header buffer too small")
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// controlFrame encodes a masked client control or small text frame.
func controlFrame(op ws.OpCode, payload []byte, mask [4]byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload)), Masked: true, Mask: mask}
	hl := ws.HeaderSize(h)
	frame := make([]byte, hl+len(payload))
	_ = ws.WriteHeader(&fixedWriter{buf: frame[:0:hl]}, h)
	copy(frame[hl:], payload)
	ws.Cipher(frame[hl:], mask, 0)
	return frame
}
