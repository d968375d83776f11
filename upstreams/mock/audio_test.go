package mock

import (
	"bytes"
	"testing"
)

func TestG711RoundTrip(t *testing.T) {
	for _, v := range []int16{0, 1, -1, 100, -100, 1000, -1000, 8000, -8000, 32000, -32000, 32767, -32768} {
		for name, rt := range map[string]func(int16) int16{
			"ulaw": func(x int16) int16 { return ulawToLinear(linearToUlaw(x)) },
			"alaw": func(x int16) int16 { return alawToLinear(linearToAlaw(x)) },
		} {
			got := rt(v)
			// G.711 keeps about 4 bits of mantissa: the error is within 1/16
			// of the value, plus the step at zero.
			if d := int(got) - int(v); d < 0 && -d > int(abs(v))/16+16 || d > 0 && d > int(abs(v))/16+16 {
				t.Errorf("%s(%d) = %d", name, v, got)
			}
		}
	}
	if ulawToLinear(0xff) != 0 || alawToLinear(0xd5) != 8 {
		t.Errorf("silence: ulaw 0xff = %d, alaw 0xd5 = %d", ulawToLinear(0xff), alawToLinear(0xd5))
	}
}

func abs(v int16) int32 {
	if v < 0 {
		return -int32(v)
	}
	return int32(v)
}

func TestBoundAudio(t *testing.T) {
	buf := []byte("0123456789")
	if got := boundAudio(buf, 10); string(got) != "0123456789" {
		t.Errorf("under the limit: %q", got)
	}
	buf = []byte("0123456789ABCDEFGHIJ") // 20 > 16: keep the newest 12
	if got := boundAudio(buf, 16); string(got) != "89ABCDEFGHIJ" {
		t.Errorf("over the limit: %q", got)
	}
}

func TestTones(t *testing.T) {
	tt := tones()
	if len(tt[formatPCM]) != 48000 || len(tt[formatPCMU]) != 8000 || len(tt[formatPCMA]) != 8000 {
		t.Fatalf("tone lengths %d %d %d, want one second each", len(tt[formatPCM]), len(tt[formatPCMU]), len(tt[formatPCMA]))
	}
	// Quiet: below the VAD level, so a looped-back answer is not speech.
	for f, p := range tt {
		var v vadState
		win := audioFormat(f).bytesPerSecond() * vadWindowMillis / 1000
		for i := 0; i+win <= len(p); i += win {
			v.feed(win/audioFormat(f).sampleBytes(), audioFormat(f).sumSquares(p[i:i+win]))
			if v.endWindow(500) == vadStarted {
				t.Errorf("format %d: the tone counts as speech", f)
				break
			}
		}
	}
	if bytes.Equal(tt[formatPCMU], tt[formatPCMA]) {
		t.Errorf("mu-law and A-law tones are identical")
	}
}
