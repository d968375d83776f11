package proxy

import (
	"bufio"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
)

// leg is one WebSocket connection of a session.
type leg struct {
	conn net.Conn
	// rd reads from conn, starting with bytes that arrived with the
	// handshake; it holds a read buffer only while bytes are buffered.
	// Owned by this leg's reading pump.
	rd legReader
	// isClient: peer frames are masked and tether writes unmasked frames.
	isClient bool
	// heard is when the peer last sent bytes (any part of any frame), as
	// nanoseconds since rd.base (the relay's start on the monotonic clock,
	// the base of every time kept here). Set by rd after every read that
	// returned bytes.
	heard atomic.Int64
	// writing is when the write in progress on conn began (nanoseconds since
	// rd.base, plus one), or 0 between writes.
	writing atomic.Int64
	// sock is conn's TCP socket (nil for pipes): its acknowledged byte count
	// tells whether a blocked write still makes progress. acked and
	// progressAt (nanoseconds since rd.base, plus one) are the count and the
	// time it was last seen to grow; only the leg's heartbeat (through
	// Liveness) reads and writes them.
	sock       syscall.RawConn
	acked      atomic.Uint64
	progressAt atomic.Int64
	// wmu is the write lock: held while one frame (a fragment of at most
	// chunkSize payload bytes) is written, never while waiting for the other
	// leg, so pings and closes go out between fragments.
	wmu sync.Mutex
	// partial is set (under wmu) once a write failed: the leg may hold half
	// a frame, so nothing more may be written on it.
	partial bool
	// closeSent is set (under wmu) once tether wrote its close frame:
	// nothing may follow it (RFC 6455 5.5.1).
	closeSent bool
	// midMessage is set (under wmu) while a relayed message's last frame
	// has not gone out: a message tether originates must wait for its end.
	midMessage bool
	// skipRest is set (under wmu) on a new upstream leg while the client
	// message begun on the one it replaced still comes: its rest is dropped.
	skipRest bool
	// pendingMsg (under wmu) is a message tether originates that waits for
	// the relayed message in progress to end (Relay.BeginClose).
	pendingMsg []byte
	// hdr is the header read buffer, owned by the reading pump.
	hdr [wsframe.MaxHeaderSize]byte
	// closed is set once conn.Close has been called.
	closed atomic.Bool
	// parkState (legRunning, legParked) tells whether the pump reading this
	// leg is parked (park.go); wake starts a new pump on it; parkID is the leg's id
	// with the waker (0: never parked).
	parkState atomic.Int32
	wake      func()
	parkID    uint64
	// stopPark is set by Shutdown: the leg's pump reads to the end.
	stopPark atomic.Bool
	// pend holds the control frames waiting for the frame in flight to
	// end, under pendMu; nil when none waits (a leg keeps no buffer for them
	// while idle). hasPend is set while pend is not nil, so a writer looks
	// at pendMu only when something waits.
	pendMu  sync.Mutex
	pend    *pendingCtl
	hasPend atomic.Bool
}

// pendingCtl is a ping and a pong that wait for a frame boundary.
type pendingCtl struct {
	ping    [8]byte
	hasPing bool
	pong    [125]byte
	pongLen int
	hasPong bool
}

var pendPool = sync.Pool{New: func() any { return new(pendingCtl) }}

func newLeg(conn net.Conn, br *bufio.Reader, isClient bool, base time.Time) *leg {
	l := &leg{conn: conn, isClient: isClient, sock: tcpSocket(conn)}
	l.rd.init(conn, br, &l.heard, base)
	limitUnsent(l.sock)
	return l
}

// writeLocked writes b to the leg; the caller holds wmu. While it runs,
// writing tells the heartbeat when it began, so a peer that stopped reading
// is found out (the write makes no progress) whatever else it sends.
func (l *leg) writeLocked(b []byte) error {
	switch {
	case l.partial:
		return errPartialFrame
	case l.closeSent:
		return errCloseSent
	}
	l.writing.Store(int64(time.Since(l.rd.base)) + 1)
	_, err := l.conn.Write(b)
	l.writing.Store(0)
	if err != nil {
		l.partial = true
	}
	return err
}

// ctlBuf holds one encoded control frame or a control payload being read.
type ctlBuf [wsframe.MaxHeaderSize + 125]byte

// ctlPool holds control frame buffers: control frames are rare, so a leg
// does not keep one of its own.
var ctlPool = sync.Pool{New: func() any { return new(ctlBuf) }}

func (l *leg) lock()   { l.wmu.Lock() }
func (l *leg) unlock() { l.wmu.Unlock() }

// tryLock takes the write lock if it is free.
func (l *leg) tryLock() bool { return l.wmu.TryLock() }

// sendControl writes a ping or pong now if the leg is between frames;
// otherwise it leaves it for the writer of the frame in flight, which flushes
// it at the frame boundary. It never waits for a frame to finish.
func (l *leg) sendControl(op ws.OpCode, payload []byte) error {
	l.pendMu.Lock()
	if l.pend == nil {
		l.pend = pendPool.Get().(*pendingCtl)
		l.hasPend.Store(true)
	}
	if op == ws.OpPing {
		copy(l.pend.ping[:], payload)
		l.pend.hasPing = true
	} else {
		l.pend.pongLen = copy(l.pend.pong[:], payload) // only the latest ping needs an answer
		l.pend.hasPong = true
	}
	l.pendMu.Unlock()
	// Whoever holds the lock flushes before releasing it; if nobody does, we do.
	if !l.tryLock() {
		return nil
	}
	if err := l.flushPendingLocked(); err != nil {
		l.unlock()
		return err
	}
	// A control frame queued while this one was written (by a caller whose
	// tryLock failed) waits for the holder, which is us.
	l.unlockFlush()
	return nil
}

// unlockFlush releases the write lock, then writes any control frame queued
// after the holder's last flush (so none is stranded on an idle leg).
func (l *leg) unlockFlush() {
	l.unlock()
	for l.hasPend.Load() && l.tryLock() {
		// Something waits and nobody else will flush it.
		err := l.flushPendingLocked()
		l.unlock()
		if err != nil {
			return // the pumps see the broken leg on their next read or write
		}
	}
}

// flushPendingLocked writes waiting control frames; the caller holds wmu.
func (l *leg) flushPendingLocked() error {
	if !l.hasPend.Load() {
		return nil
	}
	l.pendMu.Lock()
	p := l.pend
	l.pend = nil
	l.hasPend.Store(false)
	l.pendMu.Unlock()
	if p == nil {
		return nil
	}
	defer func() {
		*p = pendingCtl{}
		pendPool.Put(p)
	}()
	if p.hasPong {
		if err := l.writeControlLocked(ws.OpPong, p.pong[:p.pongLen]); err != nil {
			return err
		}
	}
	if p.hasPing {
		return l.writeControlLocked(ws.OpPing, p.ping[:])
	}
	return nil
}

// lockWithin takes the write lock, giving up after d. It is used only at
// teardown, so it polls (from 50 µs, doubling to 2 ms) rather than keeping a
// waiter of its own on every leg.
func (l *leg) lockWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 2*time.Millisecond) {
		if l.wmu.TryLock() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(wait, left))
	}
}

// writeControlLocked writes a control frame; the caller holds wmu.
func (l *leg) writeControlLocked(op ws.OpCode, payload []byte) error {
	if l.partial {
		return errPartialFrame
	}
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	if !l.isClient {
		// Frames tether originates toward the upstream are masked (client role).
		h.Masked = true
		binary.LittleEndian.PutUint32(h.Mask[:], rand.Uint32())
	}
	buf := ctlPool.Get().(*ctlBuf)
	defer ctlPool.Put(buf)
	n := wsframe.PutHeader(buf[:], h)
	m := copy(buf[n:], payload)
	if h.Masked {
		ws.Cipher(buf[n:n+m], h.Mask, 0)
	}
	return l.writeLocked(buf[:n+m])
}

// writeFrameLocked writes one final frame tether originates; the caller holds wmu.
func (l *leg) writeFrameLocked(op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	if !l.isClient {
		h.Masked = true
		binary.LittleEndian.PutUint32(h.Mask[:], rand.Uint32())
	}
	buf := make([]byte, wsframe.MaxHeaderSize+len(payload))
	n := wsframe.PutHeader(buf, h)
	m := copy(buf[n:], payload)
	if h.Masked {
		ws.Cipher(buf[n:n+m], h.Mask, 0)
	}
	return l.writeLocked(buf[:n+m])
}

// close closes the socket once. A parked pump is woken to find it closed.
func (l *leg) close() {
	if l.closed.CompareAndSwap(false, true) {
		_ = l.conn.Close()
		parkWaker.forget(l)
		l.unpark()
	}
}
