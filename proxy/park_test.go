package proxy

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
)

// startParkingHarness starts a relay over loopback TCP as the handler does
// (no goroutine waits for it), with pumps that park whenever they would
// wait.
func startParkingHarness(tb testing.TB, mgr *lifecycle.Manager) *rawHarness {
	return startParkingHarnessWith(tb, mgr, testRelayOptions())
}

func startParkingHarnessWith(tb testing.TB, mgr *lifecycle.Manager, ro Options) *rawHarness {
	cp, cr := tcpPair(tb)
	up, ur := tcpPair(tb)
	h := &rawHarness{clientPeer: cp, upPeer: up, mgr: mgr, done: make(chan struct{})}
	h.sess = runRelay(tb, mgr, lifecycle.Info{Upstream: "test"},
		func(*lifecycle.Session) *Relay { return NewRelay(cr, nil, ur, nil, ro) }, h.done)
	return h
}

// Idle sessions hold no goroutine; traffic wakes them; ending a parked
// session (from tether's side or by the peer going away) closes both legs.
func TestParkedSessions(t *testing.T) {
	if !parkSupported {
		t.Skip("legs park on Linux only")
	}
	const n = 40
	before := runtime.NumGoroutine()
	mgr := lifecycle.NewManager(testLifecycle())
	hs := make([]*rawHarness, n)
	for i := range hs {
		hs[i] = startParkingHarness(t, mgr)
	}
	up, down := voiceFrame(1<<10, true), voiceFrame(1<<10, false)
	sink := make([]byte, 2<<10)
	settled := func(what string) {
		t.Helper()
		// At most the waker's goroutine is left besides the test's own.
		testkit.WaitFor(t, 5*time.Second, what, func() bool { return runtime.NumGoroutine() <= before+1 })
	}
	settled("every pump parked before any traffic")
	for round := range 3 {
		for _, h := range hs {
			if got := h.relayOne(t, up, sink, true); got != 1<<10 {
				t.Fatalf("round %d: relayed %d payload bytes up", round, got)
			}
			h.relayOne(t, down, sink, false)
		}
		settled("every pump parked again after a round of traffic")
	}

	// A ping on a parked leg is answered.
	if _, err := hs[0].clientPeer.Write(ws.MustCompileFrame(ws.MaskFrame(ws.NewPingFrame([]byte("hb"))))); err != nil {
		t.Fatal(err)
	}
	hd, err := readHeader(hs[0].clientPeer, hs[0].hdr[:])
	if err != nil || hd.OpCode != ws.OpPong {
		t.Fatalf("ping on a parked leg: got %v, %v; want a pong", hd.OpCode, err)
	}
	if _, err := hs[0].clientPeer.Read(sink[:hd.Length]); err != nil {
		t.Fatal(err)
	}

	// Half end from tether's side while parked: both peers get the close.
	start := time.Now()
	for _, h := range hs[:n/2] {
		h.sess.End(lifecycle.ReasonAdmin)
	}
	for _, h := range hs[:n/2] {
		for _, c := range []net.Conn{h.clientPeer, h.upPeer} {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			hd, err := readHeader(c, h.hdr[:])
			if err != nil || hd.OpCode != ws.OpClose {
				t.Fatalf("parked session ended: got %v, %v; want a close frame", hd.OpCode, err)
			}
			c.Close() // the peer answers by going away
		}
	}
	for _, h := range hs[:n/2] {
		<-h.done
		if got := h.sess.Summary().Reason; got != lifecycle.ReasonAdmin {
			t.Fatalf("reason %s, want admin", got)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("parked sessions took %v to end", d)
	}
	// The other half: the client goes away while the session is parked.
	for _, h := range hs[n/2:] {
		h.clientPeer.Close()
	}
	for _, h := range hs[n/2:] {
		select {
		case <-h.done:
		case <-time.After(3 * time.Second):
			t.Fatal("a parked session whose client left did not end")
		}
		if got := h.sess.Summary().Reason; got != lifecycle.ReasonClientError && got != lifecycle.ReasonClientClosed {
			t.Fatalf("reason %s, want client_error", got)
		}
		h.upPeer.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "the waker's goroutine gone with the last leg",
		func() bool { return runtime.NumGoroutine() <= before })
}

// Streaming both ways at once through pumps that park between frames
// loses, duplicates and reorders nothing.
func TestParkWhileStreaming(t *testing.T) {
	if !parkSupported {
		t.Skip("legs park on Linux only")
	}
	mgr := lifecycle.NewManager(testLifecycle())
	h := startParkingHarness(t, mgr)
	defer h.close()
	const frames = 400
	errs := make(chan error, 2)
	send := func(c net.Conn, masked bool) {
		for i := range frames {
			f := ws.NewBinaryFrame([]byte{byte(i), byte(i >> 8), 1, 2, 3})
			if masked {
				f = ws.MaskFrame(f)
			}
			if _, err := c.Write(ws.MustCompileFrame(f)); err != nil {
				errs <- err
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // let the pump run dry and park
			}
		}
		errs <- nil
	}
	recv := func(c net.Conn, hdr []byte) error {
		buf := make([]byte, 64)
		for i := range frames {
			hd, err := readHeader(c, hdr)
			if err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf[:hd.Length]); err != nil {
				return err
			}
			if hd.Masked {
				ws.Cipher(buf[:hd.Length], hd.Mask, 0)
			}
			if got := int(buf[0]) | int(buf[1])<<8; got != i {
				t.Errorf("frame %d arrived as %d", i, got)
				return nil
			}
		}
		return nil
	}
	go send(h.clientPeer, true)
	go send(h.upPeer, false)
	var hdrUp, hdrDown [14]byte
	upDone := make(chan error, 1)
	go func() { upDone <- recv(h.upPeer, hdrUp[:]) }()
	if err := recv(h.clientPeer, hdrDown[:]); err != nil {
		t.Fatal(err)
	}
	if err := <-upDone; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A streaming leg never parks; once quiet for ParkAfter its pump parks
// without any further traffic.
func TestParkAfterQuiet(t *testing.T) {
	if !parkSupported {
		t.Skip("legs park on Linux only")
	}
	ro := testRelayOptions()
	ro.ParkAfter = 150 * time.Millisecond
	h := startParkingHarnessWith(t, lifecycle.NewManager(testLifecycle()), ro)
	defer h.close()
	upF, downF := voiceFrame(640, true), voiceFrame(640, false)
	sink := make([]byte, 1<<10)
	for i := range 20 { // 400 ms of a call, 20 ms apart
		h.relayOne(t, upF, sink, true)
		h.relayOne(t, downF, sink, false)
		if i > 0 {
			if n := runningPumps(); n < 2 {
				t.Fatalf("a pump parked while its leg streamed (%d pumps running)", n)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	testkit.WaitFor(t, 2*time.Second, "both pumps parked once quiet", func() bool { return runningPumps() == 0 })
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("pumps parked %v after the last frame, before ParkAfter", d)
	}
	h.relayOne(t, upF, sink, true) // and a parked leg still relays
	h.relayOne(t, downF, sink, false)
}

// runningPumps counts the goroutines that run a relay pump (a parked leg's
// pump has none), from every goroutine's stack: unlike a goroutine count,
// it does not see what other tests left finishing.
func runningPumps() int {
	buf := make([]byte, 256<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("proxy.(*pump).serve("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
