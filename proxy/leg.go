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
	// base is the relay's start on the monotonic clock: heard and writing
	// hold offsets from it.
	base time.Time
	// heard is when the peer last sent bytes (any part of any frame), as
	// nanoseconds since base. Set by rd after every read that returned bytes.
	heard atomic.Int64
	// writing is when the write in progress on conn began (nanoseconds since
	// base, plus one), or 0 between writes.
	writing atomic.Int64
	// sock is conn's TCP socket (nil for pipes): its acknowledged byte count
	// tells whether a blocked write still makes progress. acked and
	// progressAt (nanoseconds since base, plus one) are the count and the
	// time it was last seen to grow; only the leg's heartbeat (through
	// Liveness) reads and writes them.
	sock       syscall.RawConn
	acked      atomic.Uint64
	progressAt atomic.Int64
	// wsem is the write lock (capacity 1): held while one frame (a fragment
	// of at most chunkSize payload bytes) is written, never while waiting
	// for the other leg, so pings and closes go out between fragments.
	wsem chan struct{}
	// partial is set (under wsem) once a write failed: the leg may hold half
	// a frame, so nothing more may be written on it.
	partial bool
	// closeSent is set (under wsem) once tether wrote its close frame:
	// nothing may follow it (RFC 6455 5.5.1).
	closeSent bool
	// midMessage is set (under wsem) while a relayed message's last frame
	// has not gone out: a message tether originates must wait for its end.
	midMessage bool
	// skipRest is set (under wsem) on a new upstream leg while the client
	// message begun on the one it replaced still comes: its rest is dropped.
	skipRest bool
	// pendingMsg (under wsem) is a message tether originates that waits for
	// the relayed message in progress to end (Relay.BeginClose).
	pendingMsg []byte
	// hdr is the header read buffer, owned by the reading pump.
	hdr [wsframe.MaxHeaderSize]byte
	// closed is set once conn.Close has been called.
	closed atomic.Bool
	// parkState (legRunning, legParked) tells whether the pump reading this
	// leg is parked (park.go); wake starts it again; parkID is the leg's id
	// with the waker (0: never parked).
	parkState atomic.Int32
	wake      func()
	parkID    uint64
	// stopPark is set by Shutdown: the leg's pump reads to the end.
	stopPark atomic.Bool
	// pendMu guards the control frames waiting for the frame in flight to end.
	pendMu   sync.Mutex
	pendPing [8]byte
	hasPing  bool
	pendPong [125]byte
	pongLen  int
	hasPong  bool
}

func newLeg(conn net.Conn, br *bufio.Reader, isClient bool, base time.Time) *leg {
	l := &leg{conn: conn, isClient: isClient, base: base, wsem: make(chan struct{}, 1), sock: tcpSocket(conn)}
	l.rd.init(conn, br, &l.heard, base)
	limitUnsent(l.sock)
	return l
}

// writeLocked writes b to the leg; the caller holds wsem. While it runs,
// writing tells the heartbeat when it began, so a peer that stopped reading
// is found out (the write makes no progress) whatever else it sends.
func (l *leg) writeLocked(b []byte) error {
	switch {
	case l.partial:
		return errPartialFrame
	case l.closeSent:
		return errCloseSent
	}
	l.writing.Store(int64(time.Since(l.base)) + 1)
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

func (l *leg) lock()   { l.wsem <- struct{}{} }
func (l *leg) unlock() { <-l.wsem }

// tryLock takes the write lock if it is free.
func (l *leg) tryLock() bool {
	select {
	case l.wsem <- struct{}{}:
		return true
	default:
		return false
	}
}

// sendControl writes a ping or pong now if the leg is between frames;
// otherwise it leaves it for the writer of the frame in flight, which flushes
// it at the frame boundary. It never waits for a frame to finish.
func (l *leg) sendControl(op ws.OpCode, payload []byte) error {
	l.pendMu.Lock()
	if op == ws.OpPing {
		copy(l.pendPing[:], payload)
		l.hasPing = true
	} else {
		l.pongLen = copy(l.pendPong[:], payload) // only the latest ping needs an answer
		l.hasPong = true
	}
	l.pendMu.Unlock()
	// Whoever holds the lock flushes before releasing it; if nobody does, we do.
	if !l.tryLock() {
		return nil
	}
	err := l.flushPendingLocked()
	l.unlock()
	return err
}

// unlockFlush releases the write lock, then writes any control frame queued
// after the holder's last flush (so none is stranded on an idle leg).
func (l *leg) unlockFlush() {
	l.unlock()
	for {
		l.pendMu.Lock()
		pending := l.hasPing || l.hasPong
		l.pendMu.Unlock()
		if !pending || !l.tryLock() {
			return // nothing waits, or the new holder flushes it
		}
		err := l.flushPendingLocked()
		l.unlock()
		if err != nil {
			return // the pumps see the broken leg on their next read or write
		}
	}
}

// flushPendingLocked writes waiting control frames; the caller holds wsem.
func (l *leg) flushPendingLocked() error {
	l.pendMu.Lock()
	ping, pong := l.hasPing, l.hasPong
	var pingP [8]byte
	var pongP [125]byte
	n := l.pongLen
	if ping {
		pingP = l.pendPing
	}
	if pong {
		copy(pongP[:n], l.pendPong[:n])
	}
	l.hasPing, l.hasPong = false, false
	l.pendMu.Unlock()
	if pong {
		if err := l.writeControlLocked(ws.OpPong, pongP[:n]); err != nil {
			return err
		}
	}
	if ping {
		return l.writeControlLocked(ws.OpPing, pingP[:])
	}
	return nil
}

// lockWithin takes the write lock, giving up after d.
func (l *leg) lockWithin(d time.Duration) bool {
	select {
	case l.wsem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l.wsem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// writeControlLocked writes a control frame; the caller holds wsem.
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

// writeFrameLocked writes one final frame tether originates; the caller holds wsem.
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
