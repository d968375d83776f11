package proxy

import (
	"errors"
	"time"

	"github.com/tetherproxy/tether/lifecycle"
)

// A quiet leg parks: its pump's goroutine ends, and the waker (an epoll
// instance, Linux) starts the pump again when the socket turns readable. An
// idle session therefore holds no goroutine and no buffer. A pump parks only
// at a frame boundary with nothing buffered, when the read it is about to
// block in would find nothing, and when no data frame came on its leg for
// Options.ParkAfter: a call that streams audio never parks, and one that went quiet
// parks at its next wake (a heartbeat's pong at the latest). It needs raw
// access to the socket (plain TCP; a TLS leg's pump waits on its goroutine).
// The upstream pump of a call that may resume does not park: a resume is
// driven from it.

// Park states of a leg.
const (
	legRunning int32 = iota
	legParked
)

// errWouldBlock: a read that was allowed to park found nothing to read.
var errWouldBlock = errors.New("read would block")

// unpark starts the leg's parked pump again (on a new goroutine); a no-op
// when it is not parked.
func (l *leg) unpark() {
	if l.parkState.CompareAndSwap(legParked, legRunning) {
		go l.wake()
	}
}

// mayPark reports whether the pump may park on its next read of src.
func (p *pump) mayPark(src *leg) bool {
	r := p.r
	return parkSupported && src.rd.idle() && !p.st.inMessage &&
		!r.ended.Load() && (p.d == lifecycle.ClientToUpstream || r.res == nil) &&
		int64(time.Since(src.base))-p.lastData >= int64(r.opts.ParkAfter)
}

// Start relays on goroutines of its own and returns; done runs (on one of
// them) when the session has ended, both pumps have stopped and both sockets
// are closed.
func (r *Relay) Start(obs Observer, done func()) {
	r.obs = obs
	r.done = done
	r.pumps.Store(2)
	up := newPump(r, lifecycle.UpstreamToClient)
	cl := newPump(r, lifecycle.ClientToUpstream)
	if r.startInMessage != nil {
		// The message's first frames went out before the relay: continue it,
		// without peeking into its middle.
		cl.st, cl.started = *r.startInMessage, true
		cl.peek.Reset(false)
		cl.peek.SetDone()
	}
	go up.serve()
	go cl.serve()
}

// Run relays until the session ends and both pumps have stopped, then
// closes both sockets.
func (r *Relay) Run(obs Observer) {
	done := make(chan struct{})
	r.Start(obs, func() { close(done) })
	<-done
}

// serve runs the pump on the current goroutine until it stops or parks.
func (p *pump) serve() {
	parked := false
	defer func() {
		if !parked {
			p.r.pumpStopped()
		}
	}()
	defer p.r.recoverSession()
	for p.run() {
		if p.src.parkRead(p) {
			parked = true
			return // nothing of the pump may be touched from here on
		}
		p.noPark = true // registering failed: the next read waits here
	}
}

// parkRead parks the pump on l, its source leg.
func (l *leg) parkRead(p *pump) bool {
	if l.wake == nil {
		l.wake = p.serve
	}
	return parkWaker.park(l)
}

// pumpStopped is called once by each pump as it stops; the last one
// finishes the session.
func (r *Relay) pumpStopped() {
	if r.pumps.Add(-1) != 0 {
		return
	}
	if !r.obs.Ended() {
		r.obs.End(lifecycle.ReasonClientError)
	}
	// The session has ended, so Shutdown runs (or ran) exactly once: let it
	// finish its close frames before the sockets go.
	<-r.shutdownDone
	r.leg(lifecycle.Client).close()
	r.leg(lifecycle.Upstream).close()
	if r.done != nil {
		r.done()
	}
}
