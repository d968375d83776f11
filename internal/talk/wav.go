package talk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// The only input audio format talk sends: the OpenAI Realtime "audio/pcm"
// format, signed 16-bit little-endian PCM, mono, 24 kHz.
const (
	SampleRate     = 24000
	bytesPerSample = 2
	bytesPerSecond = SampleRate * bytesPerSample

	// minAudioBytes is the shortest input the Realtime API commits (100 ms);
	// a shorter buffer gets input_audio_buffer_commit_empty.
	minAudioBytes = bytesPerSecond / 10

	// maxWAVBytes bounds the audio read from a file (10 minutes).
	maxWAVBytes = 10 * 60 * bytesPerSecond

	// ToneHz and ToneDuration describe the audio sent when no WAV file is given.
	ToneHz       = 440
	ToneDuration = 1 // seconds
)

const (
	wavFormatPCM        = 1
	wavFormatExtensible = 0xFFFE
)

// ReadWAVFile returns the PCM samples of a WAV file holding 16-bit PCM, mono,
// 24 kHz audio; any other format is an error that says how to convert it.
func ReadWAVFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pcm, err := ReadWAV(f)
	if err != nil {
		return nil, fmt.Errorf("wav %s: %w", path, err)
	}
	return pcm, nil
}

// ReadWAV parses a RIFF/WAVE stream and returns the samples of its data chunk.
// It accepts only 16-bit PCM, mono, 24000 Hz (WAVE_FORMAT_PCM, or
// WAVE_FORMAT_EXTENSIBLE with the PCM subformat), at least 100 ms long.
// A data chunk whose declared size runs past the end of the stream (as
// written by tools that stream to a pipe) is read to the end.
func ReadWAV(r io.Reader) ([]byte, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, errors.New("not a WAV file: shorter than a RIFF header")
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, errors.New("not a WAV file: no RIFF/WAVE header")
	}
	var haveFmt bool
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			if !haveFmt {
				return nil, errors.New("no fmt chunk")
			}
			return nil, errors.New("no data chunk")
		}
		id := string(ch[0:4])
		size := int64(binary.LittleEndian.Uint32(ch[4:8]))
		switch id {
		case "fmt ":
			if size < 16 || size > 1024 {
				return nil, fmt.Errorf("fmt chunk of %d bytes", size)
			}
			body := make([]byte, size+size%2)
			if _, err := io.ReadFull(r, body); err != nil {
				return nil, errors.New("truncated fmt chunk")
			}
			if err := checkFormat(body[:size]); err != nil {
				return nil, err
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, errors.New("data chunk before the fmt chunk")
			}
			pcm, err := io.ReadAll(io.LimitReader(r, min(size, maxWAVBytes+1)))
			if err != nil {
				return nil, fmt.Errorf("read data chunk: %w", err)
			}
			if len(pcm) > maxWAVBytes {
				return nil, fmt.Errorf("longer than %d minutes", maxWAVBytes/bytesPerSecond/60)
			}
			pcm = pcm[:len(pcm)&^1] // whole samples only
			if len(pcm) < minAudioBytes {
				return nil, fmt.Errorf("%d ms of audio; the Realtime API commits no less than 100 ms", len(pcm)*1000/bytesPerSecond)
			}
			return pcm, nil
		default:
			// LIST, fact, cue and the like; chunks are padded to even sizes.
			if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
				return nil, fmt.Errorf("truncated %q chunk", id)
			}
		}
	}
}

// checkFormat accepts a fmt chunk body describing 16-bit PCM, mono, 24 kHz.
func checkFormat(b []byte) error {
	format := binary.LittleEndian.Uint16(b[0:2])
	channels := binary.LittleEndian.Uint16(b[2:4])
	rate := binary.LittleEndian.Uint32(b[4:8])
	bits := binary.LittleEndian.Uint16(b[14:16])
	encoding := "PCM"
	switch format {
	case wavFormatPCM:
	case wavFormatExtensible:
		// cbSize(2) validBits(2) channelMask(4) subformat GUID(16), whose
		// first two bytes are the format code.
		if len(b) < 40 || binary.LittleEndian.Uint16(b[24:26]) != wavFormatPCM {
			encoding = "non-PCM (extensible)"
		}
	default:
		encoding = fmt.Sprintf("format %d (not PCM)", format)
	}
	if encoding == "PCM" && channels == 1 && rate == SampleRate && bits == 16 {
		return nil
	}
	return fmt.Errorf("%d Hz, %d channel(s), %d-bit %s; tether talk sends 16-bit PCM, mono, %d Hz "+
		"(convert with: sox in.wav -r %d -c 1 -b 16 -e signed-integer out.wav)",
		rate, channels, bits, encoding, SampleRate, SampleRate)
}

// Tone returns seconds of a ToneHz sine at a third of full scale, with 10 ms
// fades so it starts and ends without a click, as 16-bit PCM mono 24 kHz.
func Tone(seconds float64) []byte {
	n := int(seconds * SampleRate)
	fade := SampleRate / 100
	pcm := make([]byte, n*bytesPerSample)
	for i := range n {
		gain := 1.0
		if i < fade {
			gain = float64(i) / float64(fade)
		} else if n-1-i < fade {
			gain = float64(n-1-i) / float64(fade)
		}
		v := gain * math.MaxInt16 / 3 * math.Sin(2*math.Pi*ToneHz*float64(i)/SampleRate)
		binary.LittleEndian.PutUint16(pcm[i*bytesPerSample:], uint16(int16(v)))
	}
	return pcm
}

// EncodeWAV returns pcm (16-bit, mono, 24 kHz) as a WAV file.
func EncodeWAV(pcm []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("RIFF")
	_ = binary.Write(&b, le, uint32(36+len(pcm))) // a bytes.Buffer write does not fail
	b.WriteString("WAVEfmt ")
	for _, v := range []any{
		uint32(16), uint16(wavFormatPCM), uint16(1), uint32(SampleRate),
		uint32(bytesPerSecond), uint16(bytesPerSample), uint16(16),
	} {
		_ = binary.Write(&b, le, v) // a bytes.Buffer write does not fail
	}
	b.WriteString("data")
	_ = binary.Write(&b, le, uint32(len(pcm)))
	b.Write(pcm)
	return b.Bytes()
}
