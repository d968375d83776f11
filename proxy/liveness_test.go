package proxy

// Liveness and teardown edge cases of the relay: error events the peeker
// cannot type, nothing after tether's close frame, and a blocked write that
// still makes progress versus one that does not.

import (
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
)

// An upstream error event whose "type" comes after the peeker's 64 KiB
// window is still held, scrubbed and reported: key order is not guaranteed.
func TestErrorEventTypedAfterPeekLimitIsScrubbed(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	ev := `{"event_id":"ev_1","error":{"code":"invalid_request_error","message":"` +
		strings.Repeat("x", 70<<10) + ` Incorrect API key provided: sk-test-SECRET."},"type":"error"}`
	h.upstream.send(ws.NewTextFrame([]byte(ev)))
	var got []byte
	for {
		f := h.client.next(t)
		got = append(got, f.Payload...)
		if f.Header.Fin {
			break
		}
	}
	if strings.Contains(string(got), "SECRET") {
		t.Errorf("client got the API key in a %d-byte error event whose type comes after 64 KiB", len(got))
	}
	h.upstream.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))
	h.wait(t)
}

// After tether writes a close frame on a leg it writes no data frame there
// (RFC 6455 5.5.1), even while a long frame was being relayed to it.
func TestNoDataFrameAfterCloseFrame(t *testing.T) {
	ro := testRelayOptions()
	ro.CloseLinger = time.Second
	h := newHarness(t, testLifecycle(), ro)
	const size = 1 << 20
	payload := []byte(`{"type":"response.output_audio.delta","delta":"` + strings.Repeat("A", size-50) + `"}`)
	payload = payload[:size]
	var hb [wsframe.MaxHeaderSize]byte
	n := wsframe.PutHeader(hb[:], ws.Header{Fin: true, OpCode: ws.OpText, Length: size})
	if _, err := h.upstream.conn.Write(append(hb[:n:n], payload[:100<<10]...)); err != nil {
		t.Fatal(err)
	}
	// The first fragments reach the client; then the client closes.
	if f := h.client.next(t); f.Header.OpCode != ws.OpText || f.Header.Fin {
		t.Fatalf("first fragment: %v fin=%v", f.Header.OpCode, f.Header.Fin)
	}
	h.client.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye")))
	var afterClose, afterBytes int
	closed := false
	for f := range h.client.frames {
		if f.Header.OpCode == ws.OpClose && !closed {
			closed = true
			// tether has said its last word on the client leg; the
			// upstream now sends the rest of its frame.
			go func() {
				_, _ = h.upstream.conn.Write(payload[100<<10:])
			}()
			continue
		}
		if closed && !f.Header.OpCode.IsControl() {
			afterClose++
			afterBytes += len(f.Payload)
		}
	}
	if !closed {
		t.Fatal("client got no close frame")
	}
	if afterClose > 0 {
		t.Errorf("client got %d data frames (%d bytes) after tether's close frame", afterClose, afterBytes)
	}
	h.wait(t)
}

// A live client that reads slowly (and streams its microphone at 50
// appends/s) while the model sends a long answer survives: a blocked write
// that makes progress (the peer acknowledges bytes) is not a stall. One
// that reads nothing while it keeps talking is found out within interval +
// timeout.
func TestSlowReaderSurvivesStalledReaderDoesNot(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time test")
	}
	t.Run("reads 300 KiB/s", func(t *testing.T) { slowReader(t, 300<<10) })
	t.Run("reads nothing", func(t *testing.T) { slowReader(t, 0) })
}

// tcpRelay is a session relayed between two loopback TCP legs whose far
// ends (client, upstream) the test drives, with heartbeats 1 s / 500 ms.
type tcpRelay struct {
	client, upstream net.Conn
	sess             *lifecycle.Session
	done             chan struct{} // closed once the relay and the session are finished
}

func startTCPRelay(t *testing.T) *tcpRelay {
	lo := testLifecycle()
	hb := lifecycle.HeartbeatOptions{Interval: time.Second, Timeout: 500 * time.Millisecond}
	lo.ClientHeartbeat, lo.UpstreamHeartbeat = hb, hb
	mgr := lifecycle.NewManager(lo)
	cPeer, cRelay := tcpPair(t)
	uPeer, uRelay := tcpPair(t)
	t.Cleanup(func() { cPeer.Close(); uPeer.Close() })
	tr := &tcpRelay{client: cPeer, upstream: uPeer, done: make(chan struct{})}
	tr.sess = startRelay(t, mgr, "test", cRelay, uRelay, testRelayOptions(), tr.done)
	return tr
}

// fate waits up to 3 s for the session to end. It returns the summary and
// how long it took (0: still open; it is then ended as admin). When mustEnd,
// a session still open after 3 s fails the test.
func (tr *tcpRelay) fate(t *testing.T, mustEnd bool) (lifecycle.Summary, time.Duration) {
	start := time.Now()
	select {
	case <-tr.done:
		return tr.sess.Summary(), time.Since(start)
	case <-time.After(3 * time.Second):
		if mustEnd {
			t.Error("the stalled peer was not found out in 3 s")
		}
		tr.sess.End(lifecycle.ReasonAdmin)
		<-tr.done
		return tr.sess.Summary(), 0
	}
}

// every runs send every d (0: back to back) until stop is closed or send fails.
func every(stop <-chan struct{}, d time.Duration, send func() error) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(d):
		}
		if send() != nil {
			return
		}
	}
}

// readAt reads c at rate bytes/s (0: never, until stop) and counts what it read.
func readAt(c net.Conn, rate float64, stop <-chan struct{}, read *atomic.Int64) {
	if rate == 0 {
		<-stop
		return
	}
	buf := make([]byte, 2048)
	start := time.Now()
	for {
		time.Sleep(time.Until(start.Add(time.Duration(float64(read.Load()) / rate * float64(time.Second)))))
		n, err := c.Read(buf)
		read.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// sendText returns a sender of text frames with payload p, masked when masked.
func sendText(c net.Conn, p []byte, masked bool) func() error {
	return func() error {
		f := ws.NewTextFrame(append([]byte(nil), p...))
		if masked {
			f = ws.MaskFrameInPlace(f)
		}
		return ws.WriteFrame(c, f)
	}
}

// slowReader streams audio both ways while the client reads rate bytes/s
// (0: never), and checks the session's fate.
func slowReader(t *testing.T, rate float64) {
	tr := startTCPRelay(t)
	stop := make(chan struct{})
	defer close(stop)
	var clientRead atomic.Int64
	go readAt(tr.client, rate, stop, &clientRead)
	// The client sends a 20 ms append every 20 ms; the upstream discards what
	// it gets and streams 6 KB deltas as fast as tether takes them.
	appendEv := []byte(`{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("QUFB", 320) + `"}`)
	go every(stop, 20*time.Millisecond, sendText(tr.client, appendEv, true))
	go func() { _, _ = io.Copy(io.Discard, tr.upstream) }()
	delta := []byte(`{"type":"response.output_audio.delta","response_id":"resp_1","delta":"` + strings.Repeat("QUFB", 1600) + `"}`)
	go every(stop, 0, sendText(tr.upstream, delta, false))
	sum, took := tr.fate(t, rate == 0)
	switch {
	case rate > 0 && took > 0:
		t.Errorf("live client reading at %.0f KiB/s was killed after %v: %s (client read %d KiB)",
			rate/1024, took.Round(time.Millisecond), sum.Reason, clientRead.Load()>>10)
	case rate == 0:
		t.Logf("client that reads nothing: %s after %v", sum.Reason, took.Round(time.Millisecond))
		if sum.Reason != lifecycle.ReasonClientHeartbeatTimeout || sum.CloseUp.Code != 1001 {
			t.Errorf("reason %s, upstream close %d; want client_heartbeat_timeout, 1001", sum.Reason, sum.CloseUp.Code)
		}
		if bound := 2500 * time.Millisecond; took > bound {
			t.Errorf("stalled reader found after %v, want within %v", took, bound)
		}
	}
}

// An upstream that reads slower than the client talks holds the
// client->upstream direction back, so tether stops reading the client: the
// client, whose bytes wait unread in tether's socket, is not blamed. A slow
// upstream survives; one that reads nothing is the one found out.
func TestBackPressureBlamesTheLegThatStoppedReading(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time test")
	}
	t.Run("upstream reads 300 KiB/s", func(t *testing.T) { backPressure(t, 300<<10) })
	t.Run("upstream reads nothing", func(t *testing.T) { backPressure(t, 0) })
}

// backPressure streams 3.2 MB/s from the client to an upstream that reads
// rate bytes/s (0: never) and streams audio back.
func backPressure(t *testing.T, rate float64) {
	tr := startTCPRelay(t)
	stop := make(chan struct{})
	defer close(stop)
	go func() { _, _ = io.Copy(io.Discard, tr.client) }() // the client reads everything
	var upRead atomic.Int64
	go readAt(tr.upstream, rate, stop, &upRead)
	appendEv := []byte(`{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("QUFB", 16<<10) + `"}`)
	go every(stop, 20*time.Millisecond, sendText(tr.client, appendEv, true))
	delta := []byte(`{"type":"response.output_audio.delta","delta":"` + strings.Repeat("QUFB", 400) + `"}`)
	go every(stop, 20*time.Millisecond, sendText(tr.upstream, delta, false))
	sum, took := tr.fate(t, rate == 0)
	switch {
	case rate > 0 && took > 0:
		t.Fatalf("session with a slow but live upstream ended: %s after %v", sum.Reason, took.Round(time.Millisecond))
	case rate == 0 && sum.Reason != lifecycle.ReasonUpstreamHeartbeatTimeout:
		t.Fatalf("reason %s, want upstream_heartbeat_timeout (the upstream stopped reading)", sum.Reason)
	}
}

// A key written with JSON escapes inside an error event is still redacted:
// the decoded strings are scrubbed too.
func TestErrorEventEscapedKeyIsScrubbed(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	for _, ev := range []string{
		`{"type":"error","error":{"code":"x","message":"Bad key \u0073k-test-SECRET"}}`,
		`{"type":"error","error":{"code":"x","message":"Bad key sk-test-SEC\u0052ET, path a\/b"}}`,
	} {
		h.upstream.text(ev)
		f := h.client.next(t)
		var got struct {
			Error struct{ Message string } `json:"error"`
		}
		if err := json.Unmarshal(f.Payload, &got); err != nil {
			t.Fatalf("client got invalid JSON %q: %v", f.Payload, err)
		}
		if strings.Contains(got.Error.Message, "SECRET") || !strings.Contains(got.Error.Message, "[redacted]") {
			t.Fatalf("escaped key reached the client: %q", got.Error.Message)
		}
	}
	h.upstream.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))
	h.wait(t)
}
