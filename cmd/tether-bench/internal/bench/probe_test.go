package bench

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestProbePayloadIsExactSizeAndValidJSON(t *testing.T) {
	for _, size := range []int{MinFrameBytes, MinFrameBytes + 1, MinFrameBytes + 2, MinFrameBytes + 3, DefaultFrameBytes, 64 << 10} {
		p, err := probePayload(size)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != size {
			t.Fatalf("payload of %d bytes, want %d", len(p), size)
		}
		var ev struct {
			Type    string `json:"type"`
			EventID string `json:"event_id"`
			Audio   string `json:"audio"`
		}
		if err := json.Unmarshal(p, &ev); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if ev.Type != "input_audio_buffer.append" || len(ev.EventID) != len("bench_")+idLen {
			t.Fatalf("size %d: type %q event_id %q", size, ev.Type, ev.EventID)
		}
		if _, err := base64.StdEncoding.DecodeString(ev.Audio); err != nil || len(ev.Audio) == 0 {
			t.Fatalf("size %d: audio is not base64 (%d chars): %v", size, len(ev.Audio), err)
		}
	}
	if _, err := probePayload(MinFrameBytes - 1); err == nil {
		t.Fatal("a payload below the minimum must be refused")
	}
}

func TestProbeStampRoundTrip(t *testing.T) {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	p, err := newProbe(DefaultFrameBytes, mask)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seq  uint64
		sent time.Duration
	}{{0, 0}, {1, 1}, {123456789012, 9_223_372_036_854_775_807}, {42, 3 * time.Hour}} {
		p.stamp(c.seq, c.sent)
		// Decode the frame as the mock does: header, then unmask.
		h, err := ws.ReadHeader(bytesReader(p.frame))
		if err != nil {
			t.Fatal(err)
		}
		if !h.Masked || h.OpCode != ws.OpText || int(h.Length) != DefaultFrameBytes || ws.HeaderSize(h) != p.hdrLen {
			t.Fatalf("header %+v", h)
		}
		payload := append([]byte(nil), p.frame[p.hdrLen:]...)
		ws.Cipher(payload, h.Mask, 0)
		if !json.Valid(payload) {
			t.Fatalf("stamped payload is not JSON: %.120s", payload)
		}
		seq, sent, err := parseProbe(payload[:probeHead])
		if err != nil || seq != c.seq || sent != c.sent {
			t.Fatalf("parse = %d, %s, %v; want %d, %s", seq, sent, err, c.seq, c.sent)
		}
	}
}

func TestParseProbeRejectsOtherEvents(t *testing.T) {
	for _, s := range []string{
		`{"type":"session.created","event_id":"event_1","session":{}}`,
		`{"type":"input_audio_buffer.append","event_id":"bench_00000000000x_0000000000000000000","audio":""}`,
		`{"type":"input_audio_buffer.append","event_id":"bench_000000000001-0000000000000000000","audio":""}`,
		`{"type":"input_audio_buffer.append"`,
	} {
		if _, _, err := parseProbe([]byte(s)[:min(len(s), probeHead)]); err == nil {
			t.Errorf("parseProbe accepted %q", s)
		}
	}
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func bytesReader(b []byte) *sliceReader { return &sliceReader{b: b} }
