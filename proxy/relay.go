package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/lifecycle"
)

// Observer is what the relay reports to. *lifecycle.Session implements it;
// the relay holds no telemetry code of its own.
type Observer interface {
	Frame(d lifecycle.Direction, n int64)
	Event(d lifecycle.Direction, typ, responseID []byte)
	Captured(d lifecycle.Direction, typ, payload []byte)
	Pong(leg lifecycle.Leg)
	CloseReceived(leg lifecycle.Leg, code uint16, reason string)
	LegError(leg lifecycle.Leg, err error)
	End(reason lifecycle.Reason)
	Ended() bool
}

// Relay tuning.
const (
	// chunkSize is the payload slice streamed per read/write: frames up to
	// this size go out in one write together with their header.
	chunkSize = 32 << 10
	// captureMax bounds a captured rare event (response.done with a long transcript).
	captureMax = 1 << 20
)

// bufPool holds chunk buffers; one is held only while a frame is in flight.
var bufPool = sync.Pool{New: func() any { return new([headerBufSize + chunkSize]byte) }}

// capturePool holds buffers for rare events captured whole.
var capturePool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// leg is one WebSocket connection of a session.
type leg struct {
	conn net.Conn
	// rd reads from conn, starting with bytes that arrived with the
	// handshake; it holds a read buffer only while bytes are buffered.
	// Owned by this leg's reading pump.
	rd legReader
	// isClient: peer frames are masked and tether writes unmasked frames.
	isClient bool
	// wsem is the write lock (capacity 1): held while one whole frame is
	// written, so pings and closes go out at frame boundaries.
	wsem chan struct{}
	// partial is set (under wsem) when a frame was left half-written: no
	// further frame may be written on this leg.
	partial bool
	// hdr is the header read buffer, owned by the reading pump.
	hdr [headerBufSize]byte
	// closed is set once conn.Close has been called.
	closed atomic.Bool
	// written counts data bytes written to conn (liveness while a frame is long).
	written atomic.Uint64
	// pendMu guards the control frames waiting for the frame in flight to end.
	pendMu   sync.Mutex
	pendPing [8]byte
	hasPing  bool
	pendPong [125]byte
	pongLen  int
	hasPong  bool
}

func newLeg(conn net.Conn, br *bufio.Reader, isClient bool) *leg {
	l := &leg{conn: conn, isClient: isClient, wsem: make(chan struct{}, 1)}
	l.rd.init(conn, br)
	return l
}

// ctlBuf holds one encoded control frame or a control payload being read.
type ctlBuf [headerBufSize + 125]byte

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
	n := putHeader(buf[:], h)
	m := copy(buf[n:], payload)
	if h.Masked {
		ws.Cipher(buf[n:n+m], h.Mask, 0)
	}
	_, err := l.conn.Write(buf[:n+m])
	return err
}

var errPartialFrame = errors.New("leg has a partially written frame")

// Options tune a relay.
type Options struct {
	// MaxFrameBytes bounds a data frame's payload on either leg (close 1009 beyond).
	MaxFrameBytes int64
	// CloseLinger is how long teardown waits for peers to answer close frames
	// before closing the sockets.
	CloseLinger time.Duration
	// CloseWriteTimeout bounds writing a close frame at teardown.
	CloseWriteTimeout time.Duration
	// Redactor cleans close reasons relayed from the upstream.
	Redactor *Redactor
}

// Relay joins a client leg and an upstream leg. It implements
// lifecycle.Transport.
type Relay struct {
	opts  Options
	legs  [2]*leg // index lifecycle.Leg
	obs   Observer
	ended atomic.Bool // set by Shutdown
	// shutdownDone is closed when Shutdown has finished writing close frames;
	// Run waits for it before closing the sockets.
	shutdownDone chan struct{}
	// log receives panic reports; nil is allowed.
	log *slog.Logger
}

// NewRelay prepares a relay. clientBR/upstreamBR may be nil or hold bytes
// read past the handshake.
func NewRelay(client net.Conn, clientBR *bufio.Reader, upstream net.Conn, upstreamBR *bufio.Reader, opts Options) *Relay {
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 16 << 20
	}
	if opts.CloseLinger <= 0 {
		opts.CloseLinger = time.Second
	}
	if opts.CloseWriteTimeout <= 0 {
		opts.CloseWriteTimeout = time.Second
	}
	r := &Relay{opts: opts, shutdownDone: make(chan struct{})}
	r.legs[lifecycle.Client] = newLeg(client, clientBR, true)
	r.legs[lifecycle.Upstream] = newLeg(upstream, upstreamBR, false)
	return r
}

// Run relays until the session ends and both pumps have exited, then closes
// both sockets. The calling goroutine pumps client->upstream; one more
// goroutine pumps upstream->client.
func (r *Relay) Run(obs Observer) {
	r.obs = obs
	done := make(chan struct{})
	go r.pumpUpstreamToClient(done)
	r.pumpClientToUpstream()
	<-done
	if !obs.Ended() {
		obs.End(lifecycle.ReasonClientError)
	}
	// The session has ended, so Shutdown runs (or ran) exactly once: let it
	// finish its close frames before the sockets go.
	<-r.shutdownDone
	r.legs[0].close()
	r.legs[1].close()
}

// pumpUpstreamToClient is named so goroutine dumps explain themselves.
func (r *Relay) pumpUpstreamToClient(done chan<- struct{}) {
	defer close(done)
	defer r.recoverSession()
	r.pump(lifecycle.UpstreamToClient)
}

// pumpClientToUpstream runs on the handler's goroutine.
func (r *Relay) pumpClientToUpstream() {
	defer r.recoverSession()
	r.pump(lifecycle.ClientToUpstream)
}

func (l *leg) close() {
	if l.closed.CompareAndSwap(false, true) {
		_ = l.conn.Close()
	}
}

// Ping implements lifecycle.Transport: the ping goes out now if the leg is
// between frames, else right after the frame in flight. It never blocks.
func (r *Relay) Ping(which lifecycle.Leg) error {
	if r.ended.Load() {
		return nil
	}
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
	return r.legs[which].sendControl(ws.OpPing, p[:])
}

// WriteProgress implements lifecycle.Transport: bytes of data frames written
// to the leg so far. While a long frame is being written, a leg that accepts
// bytes is alive even if its pong waits behind that frame.
func (r *Relay) WriteProgress(which lifecycle.Leg) uint64 {
	return r.legs[which].written.Load()
}

// Shutdown implements lifecycle.Transport: close frames at a frame boundary,
// bounded in time, then a short linger for the peers' answers.
func (r *Relay) Shutdown(client, upstream lifecycle.CloseFrame) {
	r.ended.Store(true)
	defer close(r.shutdownDone)
	now := time.Now()
	frames := [2]lifecycle.CloseFrame{client, upstream}
	for i, l := range r.legs {
		if frames[i].Code == lifecycle.CodeNone {
			// Nothing to say on this leg (it failed): close it now.
			l.close()
			continue
		}
		// Unblock readers after the linger and a writer stuck on a full socket now.
		_ = l.conn.SetReadDeadline(now.Add(r.opts.CloseLinger))
		_ = l.conn.SetWriteDeadline(now.Add(r.opts.CloseWriteTimeout))
	}
	for i, l := range r.legs {
		f := frames[i]
		if f.Code == lifecycle.CodeNone || l.closed.Load() {
			continue
		}
		if !l.lockWithin(r.opts.CloseWriteTimeout / 4) {
			l.close() // a frame is stuck mid-way: no valid close frame can follow it
			continue
		}
		var buf [125]byte
		payload := appendClosePayload(buf[:0], f.Code, f.Reason)
		err := l.writeControlLocked(ws.OpClose, payload)
		l.unlock()
		if err != nil {
			l.close()
		}
	}
}

// pump reads frames from one leg and writes them to the other until an
// error, a close, or the end of the session.
func (r *Relay) pump(d lifecycle.Direction) {
	srcLeg, dstLeg := lifecycle.Client, lifecycle.Upstream
	if d == lifecycle.UpstreamToClient {
		srcLeg, dstLeg = lifecycle.Upstream, lifecycle.Client
	}
	src, dst := r.legs[srcLeg], r.legs[dstLeg]
	var (
		st      frameState
		peek    Peeker
		capture *[]byte // captured message so far (unmasked); nil when not capturing
		capOK   bool    // capture holds the message from its first byte
	)
	wantResp := d == lifecycle.UpstreamToClient
	defer src.rd.release()
	for {
		h, err := readHeader(&src.rd, src.hdr[:])
		if err != nil {
			if r.ended.Load() {
				return
			}
			if errors.Is(err, errHeaderLengthInvalid) {
				r.obs.End(lifecycle.ReasonProtocolError)
				return
			}
			r.obs.LegError(srcLeg, err)
			return
		}
		if r.ended.Load() {
			// Tearing down: discard until the peer's close, EOF or the linger deadline.
			if h.OpCode == ws.OpClose {
				return
			}
			if _, err := src.rd.Discard(int(min(h.Length, 1<<30))); err != nil {
				return
			}
			continue
		}
		if err := st.checkHeader(h, src.isClient, r.opts.MaxFrameBytes); err != nil {
			if err == ErrFrameTooLarge {
				r.obs.End(lifecycle.ReasonFrameTooLarge)
			} else {
				r.obs.End(lifecycle.ReasonProtocolError)
			}
			return
		}
		if h.OpCode.IsControl() {
			if !r.control(srcLeg, src, h) {
				return
			}
			continue
		}

		// Data frame. A new message starts with text/binary; continuations extend it.
		if h.OpCode != ws.OpContinuation {
			peek.Reset(wantResp)
			if capture != nil {
				putCapture(capture)
				capture = nil
			}
			// Only upstream events are ever captured whole (wantCapture).
			capOK = st.text && d == lifecycle.UpstreamToClient
		}
		if failed, err := r.forward(d, src, dst, h, st.text, &peek, &capture, &capOK); err != nil {
			// Reported here, after forward released dst's write lock: ending
			// the session writes close frames, which needs that lock.
			if !r.ended.Load() && err != errPartialFrame {
				r.obs.LegError(failed, err)
			}
			return
		}
		r.obs.Frame(d, h.Length)
		if h.Fin && st.text {
			if typ := peek.Type(); typ != nil {
				faultHook(d, typ)
				r.obs.Event(d, typ, peek.ResponseID())
				if capture != nil && capOK {
					r.obs.Captured(d, typ, *capture)
				}
			}
			if capture != nil {
				putCapture(capture)
				capture = nil
			}
		}
	}
}

func putCapture(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // let unusually large captures go
	}
	*b = (*b)[:0]
	capturePool.Put(b)
}

// wantCapture reports whether a peeked upstream event type is one of the rare
// events the session parses whole.
func wantCapture(d lifecycle.Direction, typ []byte) bool {
	if d != lifecycle.UpstreamToClient {
		return false
	}
	switch string(typ) {
	case "error", "response.created", "response.done", "session.created", "session.updated":
		return true
	}
	return false
}

// forward streams one data frame from src to dst: header and payload as
// received (mask included), chunk by chunk through a pooled buffer, under
// dst's write lock. It reports failures to the observer and returns non-nil
// when the pump must stop.
func (r *Relay) forward(d lifecycle.Direction, src, dst *leg, h ws.Header, text bool, peek *Peeker, capture **[]byte, capOK *bool) (failed lifecycle.Leg, err error) {
	srcLeg, dstLeg := lifecycle.Client, lifecycle.Upstream
	if d == lifecycle.UpstreamToClient {
		srcLeg, dstLeg = lifecycle.Upstream, lifecycle.Client
	}
	buf := bufPool.Get().(*[headerBufSize + chunkSize]byte)
	defer bufPool.Put(buf)
	n := putHeader(buf[:], h)
	remaining := h.Length
	var off int // payload offset within this frame, for the mask
	dst.lock()
	defer dst.unlockFlush()
	if dst.partial {
		return dstLeg, errPartialFrame
	}
	for {
		chunk := int(min(remaining, int64(chunkSize)))
		if _, err := io.ReadFull(&src.rd, buf[n:n+chunk]); err != nil {
			if n == 0 || off > 0 {
				dst.partial = true
			}
			return srcLeg, err
		}
		p := buf[n : n+chunk]
		if text {
			r.inspect(d, h, p, off, peek, capture, capOK)
		}
		out := buf[:n+chunk]
		if d == lifecycle.UpstreamToClient && text && off == 0 && int64(chunk) == h.Length && h.Fin &&
			string(peek.Type()) == "error" {
			// A whole upstream error event is in hand: scrub credentials from
			// its message before the client sees it (rare; may allocate).
			out = r.scrubError(out[:n], p)
		}
		if _, err := dst.conn.Write(out); err != nil {
			dst.partial = true
			return dstLeg, err
		}
		dst.written.Add(uint64(len(out)))
		remaining -= int64(chunk)
		off += chunk
		n = 0
		if remaining == 0 {
			// Frame boundary: pings and pongs that waited for it go out now.
			if err := dst.flushPendingLocked(); err != nil {
				return dstLeg, err
			}
			return dstLeg, nil
		}
	}
}

// scrubError returns the frame (header hdr, payload p) with credentials
// redacted from the payload, re-framed if its length changed.
func (r *Relay) scrubError(hdr, p []byte) []byte {
	clean := r.opts.Redactor.Redact(string(p))
	if clean == string(p) {
		return hdr[:len(hdr)+len(p)]
	}
	frame := make([]byte, headerBufSize+len(clean))
	n := putHeader(frame, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(clean))})
	return append(frame[:n], clean...)
}

// inspect feeds a payload chunk to the peeker and, for rare events, the capture buffer.
func (r *Relay) inspect(d lifecycle.Direction, h ws.Header, p []byte, off int, peek *Peeker, capture **[]byte, capOK *bool) {
	var mask [4]byte
	if h.Masked {
		mask = h.Mask
	}
	before := peek.Done()
	if !before {
		peek.Feed(p, mask, off)
	}
	if !*capOK {
		return
	}
	typ := peek.Type()
	if typ != nil && !wantCapture(d, typ) {
		*capOK = false
		if *capture != nil {
			putCapture(*capture)
			*capture = nil
		}
		return
	}
	if typ == nil && peek.Done() {
		*capOK = false // no type: nothing to parse
		return
	}
	if *capture == nil {
		*capture = capturePool.Get().(*[]byte)
	}
	b := **capture
	if len(b)+len(p) > captureMax {
		*capOK = false
		return
	}
	start := len(b)
	b = append(b, p...)
	if h.Masked {
		ws.Cipher(b[start:], mask, off)
	}
	**capture = b
}

// control handles a control frame from leg src. It returns false when the pump must stop.
func (r *Relay) control(which lifecycle.Leg, src *leg, h ws.Header) bool {
	in := ctlPool.Get().(*ctlBuf)
	defer ctlPool.Put(in)
	p := in[:h.Length]
	if _, err := io.ReadFull(&src.rd, p); err != nil {
		r.obs.LegError(which, err)
		return false
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		// Answer on the same leg at a frame boundary, without waiting for a
		// long frame in flight there (that would stall this direction).
		if err := src.sendControl(ws.OpPong, p); err != nil && !r.ended.Load() {
			r.obs.LegError(which, err)
			return false
		}
	case ws.OpPong:
		r.obs.Pong(which)
	case ws.OpClose:
		code, reason, err := parseClose(p)
		if err != nil {
			r.obs.End(lifecycle.ReasonProtocolError)
			return false
		}
		rs := string(reason)
		if which == lifecycle.Upstream {
			rs = r.opts.Redactor.Redact(rs)
		}
		r.obs.CloseReceived(which, code, truncateUTF8(rs, MaxCloseReason))
		return false
	}
	return true
}

// WriteFirst writes an already-encoded frame (the upstream's first event,
// read during the dial) to the client leg before the relay starts.
func (r *Relay) WriteFirst(frame []byte) error {
	l := r.legs[lifecycle.Client]
	l.lock()
	defer l.unlock()
	_, err := l.conn.Write(frame)
	return err
}
