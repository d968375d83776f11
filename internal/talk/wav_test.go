package talk

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// wavWith builds a WAV file with the given fmt fields and extra chunks
// before fmt.
func wavWith(format, channels uint16, rate uint32, bits uint16, pcm []byte, pre ...[]byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("RIFF")
	_ = binary.Write(&b, le, uint32(0)) // readers ignore the RIFF size
	b.WriteString("WAVE")
	for _, c := range pre {
		b.Write(c)
	}
	b.WriteString("fmt ")
	_ = binary.Write(&b, le, uint32(16))
	_ = binary.Write(&b, le, format)
	_ = binary.Write(&b, le, channels)
	_ = binary.Write(&b, le, rate)
	_ = binary.Write(&b, le, rate*uint32(channels)*uint32(bits/8))
	_ = binary.Write(&b, le, channels*bits/8)
	_ = binary.Write(&b, le, bits)
	b.WriteString("data")
	_ = binary.Write(&b, le, uint32(len(pcm)))
	b.Write(pcm)
	return b.Bytes()
}

func TestReadWAV(t *testing.T) {
	pcm := Tone(0.5)
	listChunk := append([]byte("LIST\x03\x00\x00\x00abc"), 0) // odd size, padded
	extensible := func() []byte {
		var b bytes.Buffer
		le := binary.LittleEndian
		b.WriteString("RIFF\x00\x00\x00\x00WAVEfmt ")
		_ = binary.Write(&b, le, uint32(40))
		for _, v := range []any{uint16(wavFormatExtensible), uint16(1), uint32(SampleRate), uint32(bytesPerSecond),
			uint16(2), uint16(16), uint16(22), uint16(16), uint32(4), uint16(wavFormatPCM)} {
			_ = binary.Write(&b, le, v)
		}
		b.Write(make([]byte, 14)) // rest of the subformat GUID
		b.WriteString("data")
		_ = binary.Write(&b, le, uint32(len(pcm)))
		b.Write(pcm)
		return b.Bytes()
	}()
	streamed := wavWith(1, 1, SampleRate, 16, pcm)
	binary.LittleEndian.PutUint32(streamed[40:], 0xFFFFFFFF) // size unknown when written to a pipe

	ok := []struct {
		name string
		in   []byte
	}{
		{"EncodeWAV", EncodeWAV(pcm)},
		{"chunk before fmt", wavWith(1, 1, SampleRate, 16, pcm, listChunk)},
		{"extensible PCM", extensible},
		{"streamed size", streamed},
		{"odd data length", wavWith(1, 1, SampleRate, 16, append(append([]byte(nil), pcm...), 7))},
	}
	for _, tc := range ok {
		got, err := ReadWAV(bytes.NewReader(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Equal(got, pcm) {
			t.Errorf("%s: got %d bytes, want the %d bytes of PCM", tc.name, len(got), len(pcm))
		}
	}

	bad := []struct {
		name, want string
		in         []byte
	}{
		{"44.1 kHz", "44100 Hz, 1 channel(s), 16-bit PCM; tether talk sends 16-bit PCM, mono, 24000 Hz", wavWith(1, 1, 44100, 16, pcm)},
		{"stereo", "2 channel(s)", wavWith(1, 2, SampleRate, 16, pcm)},
		{"8-bit", "8-bit", wavWith(1, 1, SampleRate, 8, pcm)},
		{"float", "format 3 (not PCM)", wavWith(3, 1, SampleRate, 32, pcm)},
		{"mu-law", "format 7 (not PCM)", wavWith(7, 1, 8000, 8, pcm)},
		{"too short", "the Realtime API commits no less than 100 ms", wavWith(1, 1, SampleRate, 16, pcm[:4000])},
		{"not RIFF", "no RIFF/WAVE header", append([]byte("OggS"), make([]byte, 40)...)},
		{"empty", "shorter than a RIFF header", nil},
		{"no chunks", "no fmt chunk", []byte("RIFF\x00\x00\x00\x00WAVE")},
		{"data first", "data chunk before the fmt chunk", []byte("RIFF\x00\x00\x00\x00WAVEdata\x02\x00\x00\x00ab")},
		{"truncated fmt", "truncated fmt chunk", []byte("RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")},
	}
	for _, tc := range bad {
		_, err := ReadWAV(bytes.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestTone(t *testing.T) {
	pcm := Tone(1)
	if len(pcm) != bytesPerSecond {
		t.Fatalf("1 s tone = %d bytes, want %d", len(pcm), bytesPerSecond)
	}
	var peak int16
	crossings := 0
	prev := int16(0)
	for i := 0; i < len(pcm); i += 2 {
		v := int16(binary.LittleEndian.Uint16(pcm[i:]))
		peak = max(peak, v)
		if prev < 0 && v >= 0 {
			crossings++
		}
		prev = v
	}
	if peak < 10000 || peak > 11000 {
		t.Errorf("peak %d, want about a third of full scale", peak)
	}
	if crossings < ToneHz-2 || crossings > ToneHz+2 {
		t.Errorf("%d upward zero crossings in 1 s, want ~%d (the tone frequency)", crossings, ToneHz)
	}
	if first := int16(binary.LittleEndian.Uint16(pcm)); first != 0 {
		t.Errorf("tone starts at %d, want 0 (faded in)", first)
	}
}

func FuzzReadWAV(f *testing.F) {
	f.Add(EncodeWAV(Tone(0.2)))
	f.Add(wavWith(1, 2, 44100, 16, make([]byte, 100)))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		pcm, err := ReadWAV(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(pcm)%2 != 0 || len(pcm) < minAudioBytes || len(pcm) > len(in) {
			t.Fatalf("accepted %d bytes of PCM from %d bytes of input", len(pcm), len(in))
		}
	})
}
