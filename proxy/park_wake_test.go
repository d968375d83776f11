package proxy

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
)

type wakeMsg struct {
	op    ws.OpCode
	parts []string // fragments, sent with a pause between them
}

// Messages of every shape (single frame, fragmented, text and binary,
// upstream text whose type comes only in a later fragment) each sent after
// the pump parked: a new pump at every wake-up relays them whole, with the
// right opcodes, and scrubs the upstream error event.
func TestParkedPumpWakesForEveryMessageShape(t *testing.T) {
	if !parkSupported {
		t.Skip("legs park on Linux only")
	}
	cp, cr := tcpPair(t)
	up, ur := tcpPair(t)
	r, sess, done := startRealtimeRelay(t, cr, ur)
	defer func() {
		sess.End(lifecycle.ReasonAdmin)
		cp.Close()
		up.Close()
		<-done
	}()
	msgs := []wakeMsg{
		{ws.OpText, []string{`{"type":"a"}`}},
		{ws.OpText, []string{`{"type":"response.output_audio.delta","delta":"AA`, `AA`, `AA"}`}},
		{ws.OpBinary, []string{"\x00\x01\x02"}},
		{ws.OpBinary, []string{"\x03", "\x04", "\x05"}},
		{ws.OpText, []string{`{"event_id":"e1",`, `"type":"error","error":{"message":"key sk-test-SECRET"}}`}},
		{ws.OpText, []string{`{"type":"b"}`}},
	}
	for _, fromClient := range []bool{true, false} {
		src, dst := up, cp
		srcLeg := r.leg(lifecycle.Upstream)
		if fromClient {
			src, dst = cp, up
			srcLeg = r.leg(lifecycle.Client)
		}
		for i, m := range msgs {
			testkit.WaitFor(t, 2*time.Second, "the pump parked", func() bool { return srcLeg.parkState.Load() == legParked })
			go func() {
				for j, part := range m.parts {
					op := ws.OpContinuation
					if j == 0 {
						op = m.op
					}
					f := ws.NewFrame(op, j == len(m.parts)-1, []byte(part))
					if fromClient {
						f = ws.MaskFrame(f)
					}
					_ = ws.WriteFrame(src, f)
					time.Sleep(20 * time.Millisecond)
				}
			}()
			var got []byte
			for j := 0; ; j++ {
				h, p, err := testkit.ReadFrameWithin(dst, 2*time.Second)
				if err != nil {
					t.Fatalf("client=%v msg %d: %v", fromClient, i, err)
				}
				if h.OpCode.IsControl() {
					j--
					continue
				}
				want := ws.OpContinuation
				if j == 0 {
					want = m.op
				}
				if h.OpCode != want {
					t.Fatalf("client=%v msg %d frame %d: opcode %v, want %v", fromClient, i, j, h.OpCode, want)
				}
				got = append(got, p...)
				if h.Fin {
					break
				}
			}
			whole := strings.Join(m.parts, "")
			if strings.Contains(whole, "SECRET") && !fromClient {
				if bytes.Contains(got, []byte("SECRET")) {
					t.Fatalf("msg %d: upstream error event not scrubbed: %s", i, got)
				}
			} else if string(got) != whole {
				t.Fatalf("client=%v msg %d: got %q, want %q", fromClient, i, got, whole)
			}
		}
	}
}
