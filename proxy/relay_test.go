package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
)

// peer is the far end of one leg: the caller (client=true, sends masked
// frames) or the backend (sends unmasked frames).
type peer struct {
	conn     net.Conn
	client   bool
	frames   chan ws.Frame // frames received, payload unmasked
	raw      chan []byte   // exact bytes of each data frame received (header + payload)
	autoPong atomic.Bool
	done     chan struct{}
}

func newPeer(conn net.Conn, client bool) *peer {
	p := &peer{conn: conn, client: client, frames: make(chan ws.Frame, 64), raw: make(chan []byte, 64), done: make(chan struct{})}
	p.autoPong.Store(true)
	go p.read()
	return p
}

func (p *peer) read() {
	defer close(p.done)
	defer close(p.frames)
	for {
		h, err := ws.ReadHeader(p.conn)
		if err != nil {
			return
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(p.conn, payload); err != nil {
			return
		}
		if !h.OpCode.IsControl() {
			var hb [wsframe.MaxHeaderSize]byte
			n := wsframe.PutHeader(hb[:], h)
			p.raw <- append(append([]byte(nil), hb[:n]...), payload...)
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		if h.OpCode == ws.OpPing && p.autoPong.Load() {
			p.send(ws.NewPongFrame(payload))
			continue
		}
		p.frames <- ws.Frame{Header: h, Payload: payload}
	}
}

func (p *peer) send(f ws.Frame) {
	if p.client {
		f = ws.MaskFrameInPlace(f)
	}
	_ = ws.WriteFrame(p.conn, f)
}

func (p *peer) text(s string) { p.send(ws.NewTextFrame([]byte(s))) }

// next returns the next frame that is not a ping/pong.
func (p *peer) next(t *testing.T) ws.Frame {
	t.Helper()
	for {
		select {
		case f, ok := <-p.frames:
			if !ok {
				t.Fatal("leg closed before the expected frame")
			}
			if f.Header.OpCode == ws.OpPong || f.Header.OpCode == ws.OpPing {
				continue
			}
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for a frame")
		}
	}
}

// expectClose reads until a close frame and returns its code and reason.
func (p *peer) expectClose(t *testing.T) (wsframe.CloseCode, string) {
	t.Helper()
	f := p.next(t)
	for f.Header.OpCode != ws.OpClose {
		f = p.next(t)
	}
	if len(f.Payload) < 2 {
		return wsframe.NoStatusReceived, ""
	}
	return wsframe.CloseCode(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

// drainClose drains the leg until it ends and returns the code of the first
// close frame received; got is false if none came.
func (p *peer) drainClose() (code wsframe.CloseCode, got bool) {
	for f := range p.frames {
		if f.Header.OpCode == ws.OpClose && !got {
			code, got = wsframe.NoStatusReceived, true
			if len(f.Payload) >= 2 {
				code = wsframe.CloseCode(binary.BigEndian.Uint16(f.Payload))
			}
		}
	}
	return code, got
}

// writeHeader writes a frame header alone: the payload is up to the caller.
func (p *peer) writeHeader(hdr ws.Header) error {
	var b [wsframe.MaxHeaderSize]byte
	_, err := p.conn.Write(b[:wsframe.PutHeader(b[:], hdr)])
	return err
}

// expectNoClose drains the leg until it ends and fails if a close frame came.
func (p *peer) expectEnd(t *testing.T) {
	t.Helper()
	for range p.frames {
	}
}

type harness struct {
	client, upstream *peer
	mgr              *lifecycle.Manager
	sess             *lifecycle.Session
	done             chan struct{}
}

func testLifecycle() lifecycle.Options {
	return lifecycle.Options{
		ClientHeartbeat:     lifecycle.HeartbeatOptions{Interval: time.Hour, Timeout: time.Minute},
		UpstreamHeartbeat:   lifecycle.HeartbeatOptions{Interval: time.Hour, Timeout: time.Minute},
		FatalUpstreamErrors: []string{"session_expired"},
	}
}

func testRelayOptions() Options {
	// ParkAfter 1ns: a TCP leg's pump parks whenever it would wait, so
	// every test over TCP runs through parking and waking.
	return Options{MaxFrameBytes: 8 << 20, CloseLinger: 200 * time.Millisecond, CloseWriteTimeout: 200 * time.Millisecond,
		Redactor: NewRedactor("sk-test-SECRET"), ParkAfter: time.Nanosecond}
}

func newHarness(t testing.TB, lo lifecycle.Options, ro Options) *harness {
	cp, cr := net.Pipe()
	up, ur := net.Pipe()
	return startHarness(t, cp, cr, up, ur, lo, ro)
}

func startHarness(t testing.TB, clientPeer, clientRelay, upPeer, upRelay net.Conn, lo lifecycle.Options, ro Options) *harness {
	h := &harness{mgr: lifecycle.NewManager(lo), done: make(chan struct{})}
	h.client = newPeer(clientPeer, true)
	h.upstream = newPeer(upPeer, false)
	h.sess = startRelay(t, h.mgr, "test", clientRelay, upRelay, ro, h.done)
	return h
}

// startRelay reserves a slot on mgr, opens a Realtime session for upstream
// and runs a relay between clientRelay and upRelay on it; done is closed
// once the relay returned and the session was released.
func startRelay(t testing.TB, mgr *lifecycle.Manager, upstream string, clientRelay, upRelay net.Conn, ro Options,
	done chan struct{}) *lifecycle.Session {
	t.Helper()
	return runRelay(t, mgr, lifecycle.Info{Upstream: upstream, Dialect: realtime.Dialect{}},
		func(*lifecycle.Session) *Relay { return NewRelay(clientRelay, nil, upRelay, nil, ro) }, done)
}

// runRelay reserves a slot on mgr, opens a session with info and runs on
// it the relay newRelay makes for it; done is closed once the relay
// returned and the session was released.
func runRelay(t testing.TB, mgr *lifecycle.Manager, info lifecycle.Info, newRelay func(*lifecycle.Session) *Relay,
	done chan struct{}) *lifecycle.Session {
	t.Helper()
	release, err := mgr.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	sess := mgr.Open(info)
	r := newRelay(sess)
	sess.Start(r)
	r.Start(sess, func() { // as the handler starts it: no goroutine waits
		mgr.Finished(sess, release)
		close(done)
	})
	return sess
}

// wait waits for the relay to finish and closes the peers.
func (h *harness) wait(t testing.TB) lifecycle.Summary {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not finish")
	}
	h.client.conn.Close()
	h.upstream.conn.Close()
	<-h.client.done
	<-h.upstream.done
	if n := h.mgr.Len(); n != 0 {
		t.Fatalf("%d sessions still registered", n)
	}
	return h.sess.Summary()
}

// reassemble reads the raw frames of one message from p and returns its
// unmasked payload and the number of frames. It fails unless the first
// frame has opcode op and the rest are continuations, only the last has FIN,
// every payload is at most chunkSize, and each is masked iff masked.
func reassemble(t *testing.T, p *peer, op ws.OpCode, masked bool) ([]byte, int) {
	t.Helper()
	var out []byte
	for n := 0; ; n++ {
		raw := <-p.raw
		<-p.frames // the same frame, decoded
		h, err := ws.ReadHeader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		want := ws.OpContinuation
		if n == 0 {
			want = op
		}
		if h.OpCode != want || h.Masked != masked || h.Length > chunkSize {
			t.Fatalf("fragment %d: opcode %v masked %v length %d", n, h.OpCode, h.Masked, h.Length)
		}
		pay := bytes.Clone(raw[len(raw)-int(h.Length):])
		if h.Masked {
			ws.Cipher(pay, h.Mask, 0)
		}
		out = append(out, pay...)
		if h.Fin {
			return out, n + 1
		}
	}
}

func TestRelayForwardsFramesVerbatim(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	// Client -> upstream: masked frames up to 32 KiB arrive byte for byte,
	// mask included; longer ones as fragments of at most 32 KiB, each masked
	// with the client's key rotated to its offset.
	for _, size := range []int{0, 10, 125, 126, chunkSize, chunkSize + 1, 65535, 65536, 3 << 20} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		f := ws.MaskFrameInPlace(ws.NewBinaryFrame(bytes.Clone(payload)))
		var want bytes.Buffer
		_ = ws.WriteFrame(&want, f)
		go func() { _ = ws.WriteFrame(h.client.conn, f) }()
		if size <= chunkSize {
			if got := <-h.upstream.raw; !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("size %d: upstream got %d bytes, not the client's frame verbatim", size, len(got))
			}
			<-h.upstream.frames
			continue
		}
		got, frags := reassemble(t, h.upstream, ws.OpBinary, true)
		if !bytes.Equal(got, payload) {
			t.Fatalf("size %d: reassembled %d bytes differ from the client's payload", size, len(got))
		}
		if min := (size + chunkSize - 1) / chunkSize; frags < min {
			t.Fatalf("size %d: %d fragments, want at least %d", size, frags, min)
		}
	}
	// Upstream -> client: unmasked frames, verbatim.
	ev := `{"type":"response.output_audio.delta","response_id":"resp_1","delta":"` + strings.Repeat("QUJD", 3000) + `"}`
	var want bytes.Buffer
	_ = ws.WriteFrame(&want, ws.NewTextFrame([]byte(ev)))
	h.upstream.text(ev)
	if got := <-h.client.raw; !bytes.Equal(got, want.Bytes()) {
		t.Fatal("client did not get the upstream frame verbatim")
	}
	<-h.client.frames
	// Fragmented message with an interleaved ping from the client.
	h.client.send(ws.Frame{Header: ws.Header{OpCode: ws.OpText, Length: 5}, Payload: []byte(`{"typ`)})
	h.client.send(ws.NewPingFrame([]byte("hi")))
	h.client.send(ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 9}, Payload: []byte(`e":"x"}  `)})
	if f := <-h.client.frames; f.Header.OpCode != ws.OpPong || string(f.Payload) != "hi" {
		t.Fatalf("ping mid-message: got %v %q, want pong \"hi\"", f.Header.OpCode, f.Payload)
	}
	first, second := <-h.upstream.raw, <-h.upstream.raw
	if first[0]&0x80 != 0 || second[0]&0x0f != byte(ws.OpContinuation) {
		t.Fatal("fragments not relayed as fragments")
	}
	h.client.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye")))
	sum := h.wait(t)
	if sum.Reason != lifecycle.ReasonClientClosed {
		t.Fatalf("reason %s", sum.Reason)
	}
	if sum.Frames[lifecycle.ClientToUpstream] != 11 || sum.Frames[lifecycle.UpstreamToClient] != 1 {
		t.Fatalf("frames %v", sum.Frames)
	}
}

func TestTeardownRows(t *testing.T) {
	type want struct {
		reason         lifecycle.Reason
		clientCode     wsframe.CloseCode // 0: no close frame expected
		upstreamCode   wsframe.CloseCode
		clientReason   string
		upstreamReason string
	}
	cases := []struct {
		name string
		act  func(h *harness)
		want want
	}{
		{"client closes", func(h *harness) {
			h.client.send(ws.NewCloseFrame(ws.NewCloseFrameBody(4100, "done")))
		}, want{lifecycle.ReasonClientClosed, 4100, 4100, "done", "done"}},
		{"upstream closes with a secret in the reason", func(h *harness) {
			h.upstream.send(ws.NewCloseFrame(ws.NewCloseFrameBody(3000, "invalid_api_key sk-test-SECRET")))
		}, want{lifecycle.ReasonUpstreamClosed, 3000, 3000, "invalid_api_key [redacted]", "invalid_api_key [redacted]"}},
		{"upstream resets", func(h *harness) { h.upstream.conn.Close() },
			want{reason: lifecycle.ReasonUpstreamError, clientCode: 1014}},
		{"client vanishes", func(h *harness) { h.client.conn.Close() },
			want{reason: lifecycle.ReasonClientError, upstreamCode: 1001}},
		{"frame too large", func(h *harness) {
			h.client.send(ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 9 << 20}})
		}, want{reason: lifecycle.ReasonFrameTooLarge, clientCode: 1009, upstreamCode: 1000}},
		{"unmasked client frame", func(h *harness) {
			_ = ws.WriteFrame(h.client.conn, ws.NewTextFrame([]byte("x")))
		}, want{reason: lifecycle.ReasonProtocolError, clientCode: 1002, upstreamCode: 1000}},
		{"bad close code", func(h *harness) {
			h.client.send(ws.NewCloseFrame([]byte{0x03, 0xed}))
		}, want{reason: lifecycle.ReasonProtocolError, clientCode: 1002, upstreamCode: 1000}},
		{"fatal upstream error event", func(h *harness) {
			h.upstream.text(`{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"over"}}`)
		}, want{reason: lifecycle.ReasonUpstreamFatalEvent, clientCode: 1014, upstreamCode: 1000}},
		{"admin", func(h *harness) { h.sess.End(lifecycle.ReasonAdmin) },
			want{reason: lifecycle.ReasonAdmin, clientCode: 4003, upstreamCode: 1000}},
		{"shutdown", func(h *harness) { h.mgr.CloseAll(lifecycle.ReasonShutdown) },
			want{reason: lifecycle.ReasonShutdown, clientCode: 1001, upstreamCode: 1001}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testLifecycle(), testRelayOptions())
			tc.act(h)
			check := func(p *peer, code wsframe.CloseCode, reason, leg string) {
				if code == 0 {
					for f := range p.frames {
						if f.Header.OpCode == ws.OpClose {
							t.Errorf("%s leg: unexpected close frame", leg)
						}
					}
					return
				}
				got, r := p.expectClose(t)
				if got != code {
					t.Errorf("%s leg: close %d, want %d", leg, got, code)
				}
				if reason != "" && r != reason {
					t.Errorf("%s leg: reason %q, want %q", leg, r, reason)
				}
			}
			check(h.client, tc.want.clientCode, tc.want.clientReason, "client")
			check(h.upstream, tc.want.upstreamCode, tc.want.upstreamReason, "upstream")
			sum := h.wait(t)
			if sum.Reason != tc.want.reason {
				t.Fatalf("reason %s, want %s", sum.Reason, tc.want.reason)
			}
		})
	}
}

// Timing rows run in a synctest bubble: fake time, in-memory pipes.
func TestTimedTeardown(t *testing.T) {
	cases := []struct {
		name       string
		lo         func(*lifecycle.Options)
		setup      func(h *harness)
		after      time.Duration
		reason     lifecycle.Reason
		clientCode wsframe.CloseCode
		upCode     wsframe.CloseCode
	}{
		{"idle", func(o *lifecycle.Options) { o.IdleTimeout = 30 * time.Second }, nil,
			30 * time.Second, lifecycle.ReasonIdleTimeout, 4000, 1000},
		{"max duration", func(o *lifecycle.Options) { o.MaxDuration = time.Minute }, nil,
			time.Minute, lifecycle.ReasonMaxDuration, 4001, 1000},
		{"upstream stops answering pings", func(o *lifecycle.Options) {
			o.UpstreamHeartbeat = lifecycle.HeartbeatOptions{Interval: 5 * time.Second, Timeout: 2 * time.Second}
		}, func(h *harness) { h.upstream.autoPong.Store(false) },
			7 * time.Second, lifecycle.ReasonUpstreamHeartbeatTimeout, 4002, 1001},
		{"client stops answering pings", func(o *lifecycle.Options) {
			o.ClientHeartbeat = lifecycle.HeartbeatOptions{Interval: 5 * time.Second, Timeout: 2 * time.Second}
		}, func(h *harness) { h.client.autoPong.Store(false) },
			7 * time.Second, lifecycle.ReasonClientHeartbeatTimeout, 1001, 1001},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lo := testLifecycle()
				tc.lo(&lo)
				h := newHarness(t, lo, testRelayOptions())
				if tc.setup != nil {
					tc.setup(h)
				}
				start := time.Now()
				synctest.Wait()
				time.Sleep(tc.after - time.Millisecond)
				synctest.Wait()
				if h.sess.Ended() {
					t.Fatalf("ended early, after %v", time.Since(start))
				}
				time.Sleep(2 * time.Millisecond)
				synctest.Wait()
				if !h.sess.Ended() {
					t.Fatalf("not ended after %v", time.Since(start))
				}
				if c, _ := h.client.expectClose(t); c != tc.clientCode {
					t.Errorf("client close %d, want %d", c, tc.clientCode)
				}
				if c, _ := h.upstream.expectClose(t); c != tc.upCode {
					t.Errorf("upstream close %d, want %d", c, tc.upCode)
				}
				sum := h.wait(t)
				if sum.Reason != tc.reason {
					t.Fatalf("reason %s", sum.Reason)
				}
			})
		})
	}
}

func TestHeartbeatsKeepHealthySessionOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lo := testLifecycle()
		lo.ClientHeartbeat = lifecycle.HeartbeatOptions{Interval: 5 * time.Second, Timeout: 2 * time.Second}
		lo.UpstreamHeartbeat = lo.ClientHeartbeat
		lo.IdleTimeout = 0 // audio without speech events is no turn activity: idle is not under test
		h := newHarness(t, lo, testRelayOptions())
		for range 20 { // 100 s of traffic: heartbeats answered
			h.client.text(`{"type":"input_audio_buffer.append","audio":"AAAA"}`)
			<-h.upstream.raw
			time.Sleep(5 * time.Second)
			synctest.Wait()
		}
		if h.sess.Ended() {
			t.Fatalf("healthy session ended: %s", h.sess.Summary().Reason)
		}
		h.client.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))
		if sum := h.wait(t); sum.Reason != lifecycle.ReasonClientClosed {
			t.Fatalf("reason %s", sum.Reason)
		}
	})
}

func TestDrainWaitsForResponseBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lo := testLifecycle()
		lo.DrainTimeout = 30 * time.Second
		h := newHarness(t, lo, testRelayOptions())
		h.upstream.text(`{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}`)
		h.client.next(t)
		synctest.Wait() // the relay records the event after forwarding it
		drained := make(chan struct{})
		go func() { h.mgr.Drain(t.Context()); close(drained) }()
		synctest.Wait()
		if h.sess.Ended() {
			t.Fatal("session closed mid-response")
		}
		time.Sleep(3 * time.Second)
		h.upstream.text(`{"type":"response.output_audio.delta","response_id":"resp_1","delta":"AAAA"}`)
		h.upstream.text(`{"type":"response.done","response":{"id":"resp_1","status":"completed","usage":{"input_tokens":3,"output_tokens":5}}}`)
		if f := h.client.next(t); !bytes.Contains(f.Payload, []byte("output_audio.delta")) {
			t.Fatalf("got %s", f.Payload)
		}
		if f := h.client.next(t); !bytes.Contains(f.Payload, []byte("response.done")) {
			t.Fatalf("got %s", f.Payload)
		}
		if c, _ := h.client.expectClose(t); c != 1001 {
			t.Fatalf("client close %d", c)
		}
		<-drained
		sum := h.wait(t)
		if sum.Reason != lifecycle.ReasonShutdown || sum.Responses != 1 || sum.Tokens.Input != 3 || sum.Tokens.Output != 5 {
			t.Fatalf("summary %+v", sum)
		}
	})
}

// Upstream error events are scrubbed before the client sees any of them,
// whatever their size or framing, and arrive as one message; events that
// are not errors stream on unheld.
func TestErrorEventsScrubbedWhateverTheirFraming(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	// msg is an error event with the key in its message; with a pad the
	// type comes first (the peeker looks for it in the first 64 KiB).
	msg := func(pad int) string {
		if pad > 0 {
			return `{"type":"error","error":{"message":"Incorrect API key provided: sk-test-SECRET.` +
				strings.Repeat(" ", pad) + `","code":"invalid_request_error"},"event_id":"ev_1"}`
		}
		return `{"error":{"message":"Incorrect API key provided: sk-test-SECRET.","code":"invalid_request_error"},` +
			`"event_id":"ev_1","type":"error"}`
	}
	// readMessage returns the next data message the client got, reassembled.
	readMessage := func() (string, int) {
		var b []byte
		for n := 1; ; n++ {
			f := h.client.next(t)
			b = append(b, f.Payload...)
			if f.Header.Fin {
				return string(b), n
			}
		}
	}
	cases := []struct {
		name  string
		pad   int
		split []int // frame boundaries within the message
	}{
		{"one small frame", 0, nil},
		{"three fragments, type in the last", 0, []int{5, 40}},
		{"one 200 KB frame", 200 << 10, nil},
		{"200 KB in 7 fragments", 200 << 10, []int{1, 1000, 40 << 10, 41 << 10, 100 << 10, 199 << 10}},
	}
	for _, tc := range cases {
		ev := msg(tc.pad)
		cuts := append(append([]int{0}, tc.split...), len(ev))
		for i := 0; i+1 < len(cuts); i++ {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			p := []byte(ev[cuts[i]:cuts[i+1]])
			h.upstream.send(ws.Frame{Header: ws.Header{Fin: i+2 == len(cuts), OpCode: op, Length: int64(len(p))}, Payload: p})
		}
		got, frames := readMessage()
		if strings.Contains(got, "SECRET") || !strings.Contains(got, "[redacted]") {
			t.Fatalf("%s: client got an unscrubbed error event (%d bytes)", tc.name, len(got))
		}
		if want := strings.Replace(ev, "sk-test-SECRET", "[redacted]", 1); got != want {
			t.Fatalf("%s: message changed beyond the redaction", tc.name)
		}
		t.Logf("%s: %d bytes in %d frames, scrubbed", tc.name, len(got), frames)
	}
	// A long audio delta in fragments is not held: its first fragment
	// reaches the client before the upstream sends the rest.
	delta := `{"type":"response.output_audio.delta","delta":"` + strings.Repeat("A", 100<<10)
	h.upstream.send(ws.Frame{Header: ws.Header{OpCode: ws.OpText, Length: int64(len(delta))}, Payload: []byte(delta)})
	if f := h.client.next(t); f.Header.OpCode != ws.OpText || f.Header.Fin {
		t.Fatalf("first fragment of a delta: %v fin=%v", f.Header.OpCode, f.Header.Fin)
	}
	for f := h.client.next(t); ; f = h.client.next(t) {
		if f.Header.Length < chunkSize {
			break // the last piece of the first fragment
		}
	}
	tail := []byte(`"}`)
	h.upstream.send(ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 2}, Payload: tail})
	if f := h.client.next(t); !f.Header.Fin || string(f.Payload) != `"}` {
		t.Fatalf("last fragment %q fin=%v", f.Payload, f.Header.Fin)
	}
	h.upstream.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))
	if sum := h.wait(t); sum.Reason != lifecycle.ReasonUpstreamClosed {
		t.Fatalf("reason %s", sum.Reason)
	}
}

// An upstream that stalls in the middle of a long frame, while the client
// streams audio, is named: upstream_heartbeat_timeout, and the client gets
// its 4002 close frame between the fragments already relayed.
func TestMidFrameStallNamesTheStalledLeg(t *testing.T) {
	for _, stalled := range []lifecycle.Leg{lifecycle.Upstream, lifecycle.Client} {
		t.Run(stalled.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hb := lifecycle.HeartbeatOptions{Interval: time.Second, Timeout: 500 * time.Millisecond}
				lo := testLifecycle()
				lo.ClientHeartbeat, lo.UpstreamHeartbeat = hb, hb
				h := newHarness(t, lo, testRelayOptions())
				bad, good := h.upstream, h.client
				want, wantCode := lifecycle.ReasonUpstreamHeartbeatTimeout, wsframe.CloseCode(4002)
				hdr := ws.Header{Fin: true, OpCode: ws.OpText, Length: 200 << 10}
				if stalled == lifecycle.Client {
					bad, good = h.client, h.upstream
					want, wantCode = lifecycle.ReasonClientHeartbeatTimeout, 1001
					hdr.Masked, hdr.Mask = true, [4]byte{9, 8, 7, 6}
				}
				var b [wsframe.MaxHeaderSize]byte
				n := wsframe.PutHeader(b[:], hdr)
				bad.autoPong.Store(false)
				go func() { // whatever the stalled peer receives is dropped
					for {
						select {
						case <-bad.frames:
						case <-bad.raw:
						case <-bad.done:
							return
						}
					}
				}()
				go func() {
					for {
						select {
						case <-good.raw:
						case <-good.done:
							return
						}
					}
				}()
				start := time.Now()
				go func() {
					_, _ = bad.conn.Write(b[:n])
					_, _ = bad.conn.Write(bytes.Repeat([]byte{' '}, 1024)) // then nothing
				}()
				// The good peer keeps streaming 20 ms frames.
				stop := make(chan struct{})
				go func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
							good.text(`{"type":"input_audio_buffer.append","audio":"AAAA"}`)
						}
					}
				}()
				code, _ := good.expectClose(t)
				close(stop)
				took := time.Since(start)
				sum := h.wait(t)
				if sum.Reason != want || code != wantCode {
					t.Fatalf("reason %s, good peer got close %d; want %s / %d", sum.Reason, code, want, wantCode)
				}
				if took > hb.Interval+hb.Timeout {
					t.Fatalf("stall noticed after %v", took)
				}
			})
		})
	}
}
