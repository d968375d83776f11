package proxy

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/tetherproxy/tether/lifecycle"
)

// A quiet leg parks: its pump's goroutine ends, and the waker (an epoll
// instance, Linux) starts the pump again when the socket turns readable. An
// idle session therefore holds no goroutine and no buffer. A pump parks only
// at a frame boundary with nothing buffered, when the read it is about to
// block in would find nothing, and when no data frame came on its leg for
// Options.ParkAfter: a call that streams audio never parks, and one that went quiet
// parks then (parkClock). It needs raw access to the socket (plain TCP; a
// TLS leg's pump waits on its goroutine).

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

// mayPark reports whether the pump may park on its next read of src (if
// the leg is quiet by then).
func (p *pump) mayPark(src *leg) bool {
	return src.rd.park.on && src.rd.idle() && !p.st.inMessage && p.dstErr == nil && !p.r.ended.Load()
}

// parkClock is a leg reader's side of parking. On a leg whose pump parks,
// the reader keeps a read deadline about ParkAfter ahead (lead; moved on
// when less than half is left, so not at every read): a pump waiting in a
// read at a frame boundary wakes when the leg has been quiet for ParkAfter,
// and parks. On such a leg every other read deadline goes through
// leg.setReadDeadline. Owned by the reading pump, but for ext and extAt.
type parkClock struct {
	// on: the leg's pump parks (startParking); boundary: the header read in
	// progress is at a frame boundary, nothing of it read yet, and the pump
	// may park.
	on, boundary bool
	// after is Options.ParkAfter; lastData is when the last data frame was
	// read (nanoseconds since the leg's base); deadline is the park deadline
	// set on the socket (since base), 0 for none.
	after, lastData, deadline int64
	// ext: teardown set a read deadline of its own (at extAt, Unix
	// nanoseconds); the reader leaves the socket's deadline alone from then.
	ext   atomic.Bool
	extAt atomic.Int64
}

// quiet reports whether no data frame came for ParkAfter.
func (c *parkClock) quiet(base time.Time) bool {
	return int64(time.Since(base))-c.lastData >= c.after
}

// arm keeps the park deadline set before a read.
func (c *parkClock) arm(conn net.Conn, base time.Time) {
	if !c.on || c.ext.Load() {
		return
	}
	now := int64(time.Since(base))
	if c.deadline != 0 && c.deadline-now >= c.lead()/2 {
		return
	}
	c.set(conn, base, now+c.lead())
}

// lead is how far ahead the park deadline is set: ParkAfter, but never so
// close that a read would find it passed before it looked at the socket.
func (c *parkClock) lead() int64 { return max(c.after, int64(minParkLead)) }

const minParkLead = 50 * time.Millisecond

// rearm moves the deadline on after it passed while the leg was not quiet
// (to when it will be), or in the middle of a frame; the read that follows
// does not arm it again.
func (c *parkClock) rearm(conn net.Conn, base time.Time) {
	now := int64(time.Since(base))
	at := c.lastData + c.after
	if at < now+int64(minParkLead) {
		at = now + c.lead()
	}
	c.set(conn, base, at)
}

func (c *parkClock) set(conn net.Conn, base time.Time, at int64) {
	c.deadline = at
	_ = conn.SetReadDeadline(base.Add(time.Duration(at)))
	c.keepExt(conn)
}

// disarm clears the park deadline as the pump parks.
func (c *parkClock) disarm(conn net.Conn) {
	c.deadline = 0
	_ = conn.SetReadDeadline(time.Time{})
	c.keepExt(conn)
}

// keepExt restores teardown's deadline if it was set while the reader set
// its own.
func (c *parkClock) keepExt(conn net.Conn) {
	if c.ext.Load() {
		_ = conn.SetReadDeadline(time.Unix(0, c.extAt.Load()))
	}
}

// expired reports whether err is the park deadline passing; retry, that
// teardown's deadline replaced it after it passed, so the read must wait on.
func (c *parkClock) expired(err error, base time.Time) (expired, retry bool) {
	if !c.on || c.deadline == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, false
	}
	if c.ext.Load() {
		return false, time.Now().UnixNano() < c.extAt.Load()
	}
	return int64(time.Since(base)) >= c.deadline, false
}

// setReadDeadline sets a read deadline of teardown's on the leg; the park
// deadline is not set again.
func (l *leg) setReadDeadline(t time.Time) {
	l.rd.park.extAt.Store(t.UnixNano())
	l.rd.park.ext.Store(true)
	_ = l.conn.SetReadDeadline(t)
}

// Start relays on goroutines of its own and returns; done runs (on one of
// them) when the session has ended, both pumps have stopped and both sockets
// are closed.
func (r *Relay) Start(obs Observer, done func()) {
	r.obs = obs
	r.done = done
	r.pumps.Store(2)
	// The upstream pump of a call that may resume does not park: a resume is
	// driven from it, and interrupts it with read deadlines.
	r.leg(lifecycle.Client).startParking(r.opts.ParkAfter)
	if r.res == nil {
		r.leg(lifecycle.Upstream).startParking(r.opts.ParkAfter)
	}
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
		// Not parked (the leg closed or teardown began meanwhile, or epoll
		// failed): the next read waits here.
		p.noPark = true
	}
}

// startParking lets the leg's pump park, after a quiet of after.
func (l *leg) startParking(after time.Duration) {
	c := &l.rd.park
	c.on = parkSupported && l.rd.raw.ok()
	c.after = int64(after)
	c.lastData = -c.after // quiet until the first data frame
}

// parkRead parks the pump on l, its source leg. A parked pump keeps
// nothing: it stopped at a frame boundary with nothing of a message held,
// so the wake-up starts a new one, and an idle session holds no pump.
func (l *leg) parkRead(p *pump) bool {
	if l.wake == nil {
		r, d := p.r, p.d
		l.wake = func() { newPump(r, d).serve() }
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
