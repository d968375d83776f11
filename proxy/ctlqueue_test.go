package proxy

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
)

// A client ping that arrives while the heartbeat's own ping is being
// written on the client leg (sendControl holds the write lock) must still
// be answered: the pong is queued for the lock holder, and the holder is
// sendControl, which must flush it as it releases the lock.
func TestPongQueuedDuringPingIsFlushed(t *testing.T) {
	cp, cr := net.Pipe() // the client side is read by the test only
	up, ur := net.Pipe()
	upPeer := newPeer(up, false)
	r, sess, done := startRealtimeRelay(t, cr, ur)
	defer func() {
		sess.End(lifecycle.ReasonAdmin)
		cp.Close()
		up.Close()
		<-upPeer.done
		<-done
	}()
	cl := r.leg(lifecycle.Client)

	// The heartbeat's ping: blocks in its write (nobody reads cp yet),
	// holding the client leg's write lock.
	pingErr := make(chan error, 1)
	go func() { pingErr <- r.Ping(lifecycle.Client) }()
	testkit.WaitFor(t, 2*time.Second, "heartbeat ping in its write", func() bool { return cl.writing.Load() != 0 })

	// The client pings meanwhile: its pong is queued for the lock holder.
	go func() { _ = ws.WriteFrame(cp, ws.MaskFrame(ws.NewPingFrame([]byte("client-ping")))) }()
	testkit.WaitFor(t, 2*time.Second, "the pong queued", func() bool { return cl.hasPend.Load() })

	h, _, err := testkit.ReadFrameWithin(cp, 2*time.Second)
	if err != nil || h.OpCode != ws.OpPing {
		t.Fatalf("first frame: %v %v, want the heartbeat ping", h.OpCode, err)
	}
	h, p, err := testkit.ReadFrameWithin(cp, time.Second)
	if err != nil || h.OpCode != ws.OpPong || !bytes.Equal(p, []byte("client-ping")) {
		t.Fatalf("after the heartbeat ping: %v %q %v; want the pong to the client's ping (stranded in leg.pend: hasPend=%v)",
			h.OpCode, p, err, cl.hasPend.Load())
	}
	if err := <-pingErr; err != nil {
		t.Fatal(err)
	}
}

// Pings queued on the client leg from both sides (tether's own and the
// client's, answered with pongs) while a large upstream frame streams
// through it in fragments: once everything stops, the last of each went
// out (only the latest of each kind needs to).
func TestControlFramesDuringLargeFrame(t *testing.T) {
	for round := range 3 {
		cp, cr := tcpPair(t)
		up, ur := tcpPair(t)
		r, sess, done := startRealtimeRelay(t, cr, ur)
		cl := r.leg(lifecycle.Client)

		const size = 4 << 20
		go func() { _ = ws.WriteFrame(up, ws.NewBinaryFrame(make([]byte, size))) }()
		stop := make(chan struct{})
		var lastOwn, lastClient [8]byte
		ownDone, clientDone := make(chan struct{}), make(chan struct{})
		// tether's pings (as the heartbeat sends them), and the client's.
		go pingEvery(stop, ownDone, 'o', &lastOwn, func(p []byte) error { _ = cl.sendControl(ws.OpPing, p); return nil })
		go pingEvery(stop, clientDone, 'c', &lastClient, func(p []byte) error {
			return ws.WriteFrame(cp, ws.MaskFrame(ws.NewPingFrame(p)))
		})
		var gotOwn, gotPong [8]byte
		got := 0
		stopped := false
		for {
			wait := 2 * time.Second
			if stopped {
				wait = 500 * time.Millisecond
			}
			h, p, err := testkit.ReadFrameWithin(cp, wait)
			if err != nil {
				if !stopped {
					t.Fatalf("round %d: %v after %d of %d bytes", round, err, got, size)
				}
				break // quiet for 500 ms after everything stopped
			}
			switch h.OpCode {
			case ws.OpPing:
				copy(gotOwn[:], p)
			case ws.OpPong:
				copy(gotPong[:], p)
			default:
				got += len(p)
				if got < size {
					time.Sleep(50 * time.Microsecond) // a slowish reader
				}
			}
			if got >= size && !stopped {
				stopped = true
				close(stop)
				<-ownDone
				<-clientDone
			}
		}
		if gotOwn != lastOwn {
			t.Errorf("round %d: last ping of tether's seen %x, last sent %x", round, gotOwn, lastOwn)
		}
		if gotPong != lastClient {
			t.Errorf("round %d: last pong seen %x, last client ping %x (pending %v)", round, gotPong, lastClient, cl.hasPend.Load())
		}
		sess.End(lifecycle.ReasonAdmin)
		cp.Close()
		up.Close()
		<-done
	}
}

// startRealtimeRelay runs a Realtime session's relay between the client end
// cr and the upstream end ur; done is closed once the relay has finished.
func startRealtimeRelay(t testing.TB, cr, ur net.Conn) (r *Relay, sess *lifecycle.Session, done chan struct{}) {
	t.Helper()
	mgr := lifecycle.NewManager(testLifecycle())
	done = make(chan struct{})
	sess = runRelay(t, mgr, lifecycle.Info{Upstream: "t", Dialect: realtime.Dialect{}},
		func(*lifecycle.Session) *Relay { r = NewRelay(cr, nil, ur, nil, testRelayOptions()); return r }, done)
	return r, sess, done
}

// pingEvery sends pings tagged tag through send every 200 µs until stop,
// keeping the last one sent in *last; it closes done as it stops.
func pingEvery(stop <-chan struct{}, done chan<- struct{}, tag byte, last *[8]byte, send func([]byte) error) {
	defer close(done)
	for i := uint64(1); ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		var p [8]byte
		p[0], p[6], p[7] = tag, byte(i>>8), byte(i)
		if send(p[:]) != nil {
			return
		}
		*last = p
		time.Sleep(200 * time.Microsecond)
	}
}
