package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
)

// Observer is what the relay reports to. *lifecycle.Session implements it;
// the relay holds no telemetry code of its own.
type Observer interface {
	Frame(d lifecycle.Direction, n int64)
	Event(d lifecycle.Direction, typ, responseID []byte)
	// Capture and Hold ask the session's dialect about an upstream
	// message's type: capture it whole for Captured; hold it whole and
	// scrub it before forwarding.
	Capture(typ []byte) bool
	Hold(typ []byte) bool
	Captured(typ, payload []byte)
	Pong(leg lifecycle.Leg)
	CloseReceived(leg lifecycle.Leg, code wsframe.CloseCode, reason string)
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
var bufPool = sync.Pool{New: func() any { return new([wsframe.MaxHeaderSize + chunkSize]byte) }}

// capturePool holds buffers for rare events captured whole.
var capturePool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

var (
	errPartialFrame = errors.New("leg has a partially written frame")
	errCloseSent    = errors.New("close frame already sent on the leg")
	// errTornDown: a frame was skipped because the session is tearing down.
	errTornDown = errors.New("frame skipped at teardown")
	// errErrorEventTooLarge: an upstream error event too long to hold and
	// scrub before the client sees it.
	errErrorEventTooLarge = errors.New("upstream error event over the scrubbing bound")
)

// Options tune a relay.
type Options struct {
	// MaxFrameBytes bounds a data frame's payload on either leg (close 1009
	// beyond). cmd/tether always sets it (server.max_frame_bytes, whose
	// default lives in package config); 0 means no bound (payloads are
	// streamed, never held whole).
	MaxFrameBytes int64
	// CloseLinger is how long teardown waits for peers to answer close frames
	// before closing the sockets; 0 means 1 s.
	CloseLinger time.Duration
	// CloseWriteTimeout bounds writing a close frame at teardown; 0 means 1 s.
	CloseWriteTimeout time.Duration
	// Redactor cleans close reasons relayed from the upstream.
	Redactor *Redactor
	// Logger receives panic reports; nil discards.
	Logger *slog.Logger
	// ParkAfter is how long a leg must carry no data frame before its pump
	// may park (park.go); 0 means 1 s.
	ParkAfter time.Duration
}

// Relay joins a client leg and an upstream leg. It implements
// lifecycle.Transport.
type Relay struct {
	opts Options
	// legs, index lifecycle.Leg: the upstream leg is replaced when the
	// call resumes on a new upstream session (res).
	legs [2]atomic.Pointer[leg]
	obs  Observer
	// res resumes the call when its upstream leg ends (EnableResume); nil: off.
	res   *resumer
	ended atomic.Bool // set by Shutdown
	// closing is set by BeginClose: the client's data frames are dropped
	// while the upstream answers the close.
	closing atomic.Bool
	// startInMessage, when set before Start, is the client pump's starting
	// frame state: inside a message that began before the relay
	// (ResumeClientMessage).
	startInMessage *frameState
	// shutdownDone is closed when Shutdown has finished writing close frames;
	// the last pump to stop waits for it before closing the sockets.
	shutdownDone chan struct{}
	// log receives panic reports (Options.Logger).
	log *slog.Logger
	// pumps counts the pumps not yet stopped (a parked one counts); done
	// is Start's.
	pumps atomic.Int32
	done  func()
}

// NewRelay prepares a relay. clientBR/upstreamBR may be nil or hold bytes
// read past the handshake.
func NewRelay(client net.Conn, clientBR *bufio.Reader, upstream net.Conn, upstreamBR *bufio.Reader, opts Options) *Relay {
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = math.MaxInt64
	}
	opts.CloseLinger = cmp.Or(opts.CloseLinger, time.Second)
	opts.CloseWriteTimeout = cmp.Or(opts.CloseWriteTimeout, time.Second)
	opts.ParkAfter = cmp.Or(opts.ParkAfter, time.Second)
	r := &Relay{opts: opts, shutdownDone: make(chan struct{}), log: cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))}
	base := time.Now()
	r.legs[lifecycle.Client].Store(newLeg(client, clientBR, true, base))
	r.legs[lifecycle.Upstream].Store(newLeg(upstream, upstreamBR, false, base))
	return r
}

// leg returns the session's leg which (the upstream one may be replaced by a resume).
func (r *Relay) leg(which lifecycle.Leg) *leg { return r.legs[which].Load() }

// recoverSession ends the session with reason panic and logs the stack, so
// one broken session never takes the process (and the other sessions) down.
func (r *Relay) recoverSession() {
	if v := recover(); v != nil {
		r.log.Error("session panic", "panic", v, "stack", string(debug.Stack()))
		if r.obs != nil {
			r.obs.End(lifecycle.ReasonPanic)
		}
	}
}

// Ping implements lifecycle.Transport: the ping goes out now if the leg is
// between frames, else right after the fragment in flight. It never blocks.
func (r *Relay) Ping(which lifecycle.Leg) error {
	if r.ended.Load() {
		return nil
	}
	if which == lifecycle.Upstream && r.resuming() {
		return nil // the new upstream leg is not there yet
	}
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
	return r.leg(which).sendControl(ws.OpPing, p[:])
}

// Liveness implements lifecycle.Transport: when the leg's peer last sent
// bytes (now, while some wait unread in its socket), and since when the
// write in progress on the leg has made no progress (zero between writes).
func (r *Relay) Liveness(which lifecycle.Leg) (heard, writing time.Time) {
	if which == lifecycle.Upstream && r.resuming() {
		return time.Now(), time.Time{} // no upstream leg to judge while the call resumes
	}
	l := r.leg(which)
	heard = l.rd.base.Add(time.Duration(l.heard.Load()))
	if n, ok := unreadBytes(l.sock); ok && n > 0 {
		// The peer's bytes wait for tether to read them (the other leg
		// holds this direction back): the peer is not the silent one.
		heard = time.Now()
	}
	w := l.writing.Load()
	if w == 0 {
		return heard, time.Time{}
	}
	writing = l.rd.base.Add(time.Duration(w - 1))
	// A write blocks while the peer drains the socket's queue: it makes
	// progress as long as the peer acknowledges bytes.
	if acked, ok := ackedBytes(l.sock); ok {
		if acked != l.acked.Load() {
			l.acked.Store(acked)
			l.progressAt.Store(int64(time.Since(l.rd.base)) + 1)
		}
		if p := l.progressAt.Load(); p > w {
			writing = l.rd.base.Add(time.Duration(p - 1))
		}
	}
	return heard, writing
}

// Shutdown implements lifecycle.Transport: close frames at a frame boundary,
// bounded in time, then a short linger for the peers' answers. It reports
// which close frames were written.
func (r *Relay) Shutdown(client, upstream lifecycle.CloseFrame) (sent [2]bool) {
	r.ended.Store(true)
	defer close(r.shutdownDone)
	if r.res != nil {
		// A resume in progress gives up; one swapping legs has swapped them.
		r.res.stop()
	}
	legs := [2]*leg{r.leg(lifecycle.Client), r.leg(lifecycle.Upstream)}
	now := time.Now()
	frames := [2]lifecycle.CloseFrame{client, upstream}
	for i, l := range legs {
		if frames[i].Code == lifecycle.CodeNone {
			// Nothing to say on this leg (it failed): close it now.
			l.close()
			continue
		}
		// Unblock readers after the linger and a writer stuck on a full socket now.
		// A parked pump is woken to read the peer's close (or reach the linger).
		l.setReadDeadline(now.Add(r.opts.CloseLinger))
		_ = l.conn.SetWriteDeadline(now.Add(r.opts.CloseWriteTimeout))
		l.stopPark.Store(true)
		l.unpark()
	}
	// Both legs at once: a leg whose peer stopped reading must not delay the
	// other leg's close frame.
	var wg sync.WaitGroup
	for i, l := range legs {
		f := frames[i]
		if f.Code == lifecycle.CodeNone || l.closed.Load() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i] = r.writeClose(l, f)
		}()
	}
	wg.Wait()
	return sent
}

// BeginClose implements lifecycle.Transport: msg goes upstream as a text
// message at a frame boundary, and the client's data frames are dropped from
// now on (the upstream's are still relayed: its answer reaches the client).
//
// A client message in progress upstream is never cut: it goes out whole
// first, and msg right after its last frame (see pump.write); a client that
// never finishes it leaves the close to Shutdown.
func (r *Relay) BeginClose(msg []byte) error {
	l := r.leg(lifecycle.Upstream)
	if !l.lockWithin(r.opts.CloseWriteTimeout) {
		r.closing.Store(true)
		return errPartialFrame
	}
	defer l.unlockFlush()
	if l.midMessage {
		l.pendingMsg = msg
		return nil
	}
	r.closing.Store(true)
	_ = l.conn.SetWriteDeadline(time.Now().Add(r.opts.CloseWriteTimeout))
	err := l.writeFrameLocked(ws.OpText, msg)
	_ = l.conn.SetWriteDeadline(time.Time{})
	return err
}

// writeClose writes close frame f on l at a frame boundary, after f's
// notice when l is at a message boundary. The lock is held only while a
// fragment is being written, so failing to get it means the peer stopped
// reading: the leg is closed without a frame.
func (r *Relay) writeClose(l *leg, f lifecycle.CloseFrame) bool {
	if !l.lockWithin(r.opts.CloseWriteTimeout / 4) {
		l.close()
		return false
	}
	if f.Notice != "" && !l.midMessage {
		_ = l.writeFrameLocked(ws.OpText, []byte(f.Notice)) // a failure fails the close frame too
	}
	var buf [125]byte
	payload := wsframe.AppendClose(buf[:0], f.Code, f.Reason)
	err := l.writeControlLocked(ws.OpClose, payload)
	l.closeSent = err == nil
	l.unlock()
	if err != nil {
		l.close()
		return false
	}
	return true
}

// pump relays one direction: it reads frames from src and writes them to dst.
type pump struct {
	r              *Relay
	d              lifecycle.Direction
	srcLeg, dstLeg lifecycle.Leg
	src, dst       *leg
	st             frameState
	peek           Peeker
	// started: a frame of the message in progress went out on dst, so the
	// next one is a continuation.
	started bool
	// capture holds the message so far (unmasked) while it may be a rare
	// event the session parses whole; nil when not capturing. capOK: it
	// holds the message from its first byte.
	capture *[]byte
	capOK   bool
	// holding: upstream text whose type is not known yet is held back, so an
	// error event is scrubbed of credentials before any of it reaches the
	// client; held is what was held (nil when not holding).
	holding bool
	held    *[]byte
	// dstErr is the write error that failed dst; reported once by run, and
	// from then on nothing is written to dst.
	dstErr      error
	dstReported bool
	// noPark: parking failed, so the next read waits here.
	noPark bool
}

func newPump(r *Relay, d lifecycle.Direction) *pump {
	p := &pump{r: r, d: d, srcLeg: d.Source(), dstLeg: d.Dest()}
	p.src, p.dst = r.leg(p.srcLeg), r.leg(p.dstLeg)
	return p
}

// resuming reports whether a resume is in progress.
func (r *Relay) resuming() bool { return r.res != nil && r.res.active.Load() }

// run reads frames until an error, a close, or the end of the session, and
// returns false; or it returns true when the next read would block and the
// pump may park (see Options.ParkAfter), with nothing of a message held.
func (p *pump) run() (park bool) {
	defer func() {
		if !park {
			p.src.rd.release()
			p.releaseBuffers()
		}
	}()
	for {
		src := p.src // a resume replaces the upstream leg
		src.rd.park.boundary = !p.noPark && p.mayPark(src)
		p.noPark = false
		h, err := readHeader(&src.rd, src.hdr[:])
		src.rd.park.boundary = false
		switch {
		case err == errWouldBlock:
			p.releaseBuffers() // the pump is dropped as it parks
			return true
		case err != nil:
			if !p.readFailed(err) {
				return false
			}
		case !p.frame(src, h):
			return false
		}
	}
}

// readFailed handles an error reading a frame header from the source leg;
// it reports whether the pump reads on (on a new upstream leg).
func (p *pump) readFailed(err error) bool {
	r := p.r
	switch {
	case r.ended.Load():
		return false
	case errors.Is(err, errHeaderLengthInvalid):
		r.obs.End(lifecycle.ReasonProtocolError)
		return false
	case p.d == lifecycle.UpstreamToClient && r.res != nil:
		return p.upstreamFailed(err)
	}
	r.obs.LegError(p.srcLeg, err)
	return false
}

// frame relays, answers or discards the frame whose header h was read from
// src; it reports whether the pump reads on.
func (p *pump) frame(src *leg, h ws.Header) bool {
	r := p.r
	if r.ended.Load() {
		// Tearing down: discard until the peer's close, EOF or the linger deadline.
		if h.OpCode == ws.OpClose {
			return false
		}
		_, err := src.rd.Discard(int(min(h.Length, 1<<30)))
		return err == nil
	}
	if err := p.st.checkHeader(h, src.isClient, r.opts.MaxFrameBytes); err != nil {
		if err == ErrFrameTooLarge {
			r.obs.End(lifecycle.ReasonFrameTooLarge)
		} else {
			r.obs.End(lifecycle.ReasonProtocolError)
		}
		return false
	}
	if h.OpCode.IsControl() {
		return p.controlFrame(src, h)
	}
	if p.d == lifecycle.ClientToUpstream && r.closing.Load() {
		// The upstream is answering tether's close: nothing more of the client's goes out.
		if _, err := src.rd.Discard(int(min(h.Length, 1<<30))); err != nil {
			r.obs.LegError(p.srcLeg, err)
			return false
		}
		src.rd.park.lastData = src.heard.Load() // still a streaming leg
		return true
	}
	if h.OpCode != ws.OpContinuation {
		p.startMessage()
	}
	if failed, err := p.forward(h); err != nil {
		return p.forwardFailed(failed, err)
	}
	if p.dstErr != nil && !p.dstReported {
		p.dstReported = true
		r.obs.LegError(p.dstLeg, p.dstErr)
	}
	if r.ended.Load() {
		return true // the frame was skipped: teardown began while it came in
	}
	r.obs.Frame(p.d, h.Length)
	src.rd.park.lastData = src.heard.Load()
	if h.Fin && p.st.text {
		p.messageDone()
	}
	return true
}

// controlFrame answers a ping, pong or close read from src; it reports
// whether the pump reads on.
func (p *pump) controlFrame(src *leg, h ws.Header) bool {
	r := p.r
	cl, err := r.control(p.srcLeg, src, h)
	switch {
	case err == errProtocol:
		return false
	case err != nil && p.d == lifecycle.UpstreamToClient && r.res != nil && !r.ended.Load():
		return p.upstreamFailed(err)
	case err != nil:
		if !r.ended.Load() {
			r.obs.LegError(p.srcLeg, err)
		}
		return false
	case cl != nil:
		return p.upstreamClosed(cl)
	}
	return true
}

// forwardFailed handles a frame that forward could not relay, failed being
// the leg at fault; it reports whether the pump reads on.
func (p *pump) forwardFailed(failed lifecycle.Leg, err error) bool {
	r := p.r
	switch {
	case err == errTornDown:
		return true
	case r.ended.Load() || err == errPartialFrame:
	case err == errErrorEventTooLarge:
		r.obs.End(lifecycle.ReasonFrameTooLarge)
	case failed == lifecycle.Upstream && p.d == lifecycle.UpstreamToClient && r.res != nil:
		return p.upstreamFailed(err)
	default:
		r.obs.LegError(failed, err)
	}
	return false
}

// messageDone tells the session of the text message that just ended: its
// type and, where it was captured whole, its payload.
func (p *pump) messageDone() {
	if typ := p.peek.Type(); typ != nil {
		faultHook(p.d, typ)
		p.r.obs.Event(p.d, typ, p.peek.ResponseID())
		if p.capture != nil && p.capOK {
			if p.d == lifecycle.UpstreamToClient {
				p.r.obs.Captured(typ, *p.capture)
			} else {
				p.r.res.obs.ClientCaptured(typ, *p.capture)
			}
		}
	}
	p.releaseBuffers()
}

// startMessage resets the per-message state at a text or binary frame.
func (p *pump) startMessage() {
	p.peek.Reset(p.d == lifecycle.UpstreamToClient)
	p.releaseBuffers()
	p.started = false
	// Upstream events are captured whole, or held (the dialect says which);
	// client events only for a call that may resume (its memory says which).
	upText := p.st.text && p.d == lifecycle.UpstreamToClient
	p.capOK = upText || p.st.text && p.r.res != nil
	p.holding = upText
}

func (p *pump) releaseBuffers() {
	if p.capture != nil {
		putCapture(p.capture)
		p.capture = nil
	}
	if p.held != nil {
		putCapture(p.held)
		p.held = nil
	}
	p.holding = false
}

func putCapture(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // let unusually large captures go
	}
	*b = (*b)[:0]
	capturePool.Put(b)
}

// forward relays one data frame. A frame of up to chunkSize payload bytes is
// read whole and written in one write, header and payload as received (mask
// included). A longer one goes out as fragments of at most chunkSize bytes,
// each written as soon as its bytes are read; a masked frame is split
// without copying by rotating its mask to each fragment's offset. dst's
// write lock is held only while a fragment is written. It returns the leg
// that failed and the error when the pump must stop.
func (p *pump) forward(h ws.Header) (failed lifecycle.Leg, err error) {
	buf := bufPool.Get().(*[wsframe.MaxHeaderSize + chunkSize]byte)
	defer bufPool.Put(buf)
	pay := buf[wsframe.MaxHeaderSize:]
	remaining := h.Length
	off := 0 // payload offset within this frame, for the mask
	for first := true; first || remaining > 0; first = false {
		var n int
		if h.Length <= chunkSize {
			n = int(h.Length)
			if _, err := io.ReadFull(&p.src.rd, pay[:n]); err != nil {
				return p.srcLeg, err
			}
		} else {
			// Whatever has arrived, up to a fragment; a read error that comes
			// with bytes is returned again by the next read.
			var rerr error
			if n, rerr = p.src.rd.Read(pay[:min(remaining, chunkSize)]); n == 0 {
				return p.srcLeg, cmp.Or(rerr, io.ErrNoProgress)
			}
		}
		if p.r.ended.Load() {
			// Tearing down: nothing more goes out; skip the rest of the
			// frame so the pump can read the peer's close.
			_, err := p.src.rd.Discard(int(remaining) - n)
			return p.srcLeg, err
		}
		chunk := pay[:n]
		fin := h.Fin && int64(n) == remaining
		if p.st.text {
			p.inspect(h, chunk, off)
		}
		var err error
		if p.holding {
			err = p.releaseHold()
		}
		if err == nil && p.holding {
			err = p.hold(chunk, fin)
		} else if err == nil {
			err = p.emit(buf, n, fin, h, off)
		}
		if err != nil {
			if p.r.ended.Load() && err != errErrorEventTooLarge {
				// Tearing down (dst refuses more): skip the rest of the frame
				// and read on to the peer's close, so the source's socket is
				// not closed on unread bytes (a reset that can lose tether's
				// close frame).
				if _, derr := p.src.rd.Discard(int(remaining) - n); derr != nil {
					return p.srcLeg, derr
				}
				return p.dstLeg, errTornDown
			}
			return p.dstLeg, err
		}
		remaining -= int64(n)
		off += n
	}
	return p.dstLeg, nil
}

// emit writes the n payload bytes at buf[wsframe.MaxHeaderSize:] as one
// frame of the message in progress, with the header put in front of them.
func (p *pump) emit(buf *[wsframe.MaxHeaderSize + chunkSize]byte, n int, fin bool, h ws.Header, off int) error {
	out := ws.Header{Fin: fin, OpCode: ws.OpContinuation, Length: int64(n), Masked: h.Masked}
	if !p.started {
		out.OpCode = ws.OpText
		if !p.st.text {
			out.OpCode = ws.OpBinary
		}
	}
	if h.Masked {
		out.Mask = rotateMask(h.Mask, off)
	}
	start := wsframe.PutHeaderBefore(buf[:], wsframe.MaxHeaderSize, out)
	p.started = true
	return p.write(buf[start:wsframe.MaxHeaderSize+n], fin)
}

// rotateMask returns the masking key for the bytes of a frame masked with
// mask starting at payload offset off.
func rotateMask(mask [4]byte, off int) [4]byte {
	s := off & 3
	return [4]byte{mask[s], mask[(s+1)&3], mask[(s+2)&3], mask[(s+3)&3]}
}

// write writes one encoded frame to dst under its write lock, then the
// control frames that waited for the boundary.
func (p *pump) write(frame []byte, fin bool) error {
	if p.dstErr != nil {
		return nil // dst failed: the source is still read (see dstErr)
	}
	toUpstream := p.d == lifecycle.ClientToUpstream
	if toUpstream && p.r.res != nil && p.r.res.hold(frame, fin, p.peek.Type()) {
		return nil // held for the next upstream session
	}
	dst := p.dst
	if toUpstream {
		dst = p.r.leg(lifecycle.Upstream) // a resume replaces it
	}
	dst.lock()
	if toUpstream && (p.r.closing.Load() || dst.skipRest) {
		// tether's close message went (or goes) out: the client's frames
		// stop here; or the rest of a message begun on a previous upstream leg.
		dst.skipRest = dst.skipRest && !fin
		dst.unlockFlush()
		return nil
	}
	err := dst.writeLocked(frame)
	if err == nil {
		dst.midMessage = !fin
		if fin && dst.pendingMsg != nil {
			// tether's close message waited for this message's end.
			err = dst.writeFrameLocked(ws.OpText, dst.pendingMsg)
			dst.pendingMsg = nil
			p.r.closing.Store(true)
		}
	}
	if err != nil && toUpstream && p.r.res != nil && !p.r.ended.Load() {
		dst.unlock()
		if !p.r.res.lost(p.r, dst, frame, fin, p.peek.Type()) {
			return p.write(frame, fin) // a resume replaced the leg: write it there
		}
		// The upstream leg ended under the call: the frame is held, and the
		// upstream pump, whose read now fails, decides whether it resumes.
		dst.close()
		return nil
	}
	if err != nil && err != errCloseSent && !p.r.ended.Load() {
		// dst failed. The source is still read, its events still reach the
		// session (a graceful close waits for the upstream's answer even
		// when the client is gone), until the session ends.
		p.dstErr = err
		err = nil
	}
	if err == nil {
		err = dst.flushPendingLocked()
	}
	dst.unlockFlush()
	return err
}

// releaseHold ends holding once the peeked type shows the message is not
// one the dialect holds: what was held goes out, and the rest of the message
// streams as usual. A message whose type the peeker cannot tell (escaped,
// or beyond its window) stays held to its end.
func (p *pump) releaseHold() error {
	typ := p.peek.Type()
	if typ == nil || p.r.obs.Hold(typ) {
		return nil
	}
	p.holding = false
	if p.held == nil {
		return nil
	}
	var err error
	if len(*p.held) > 0 {
		err = p.writeMessage(*p.held, false)
	}
	putCapture(p.held)
	p.held = nil
	return err
}

// hold keeps upstream text back while its type is unknown or one the
// dialect holds (an error event): such a message is held whole (up to
// captureMax), scrubbed of credentials and then written as one message.
// Upstream frames are unmasked, so held bytes are plain.
func (p *pump) hold(chunk []byte, fin bool) error {
	if p.held == nil {
		p.held = capturePool.Get().(*[]byte)
	}
	if len(*p.held)+len(chunk) > captureMax {
		return errErrorEventTooLarge
	}
	*p.held = append(*p.held, chunk...)
	if !fin {
		return nil
	}
	p.holding = false
	msg := *p.held
	typ := p.peek.Type()
	if typ == nil {
		// The peeker could not tell (rare): decode the type, so the event
		// is still scrubbed, reported and, if wanted, captured.
		var ev struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(msg, &ev) == nil && ev.Type != "" {
			p.peek.SetType(ev.Type)
			typ = p.peek.Type()
			if typ != nil && p.r.obs.Capture(typ) {
				if p.capture == nil {
					p.capture = capturePool.Get().(*[]byte)
				}
				*p.capture = append((*p.capture)[:0], msg...)
				p.capOK = true
			}
		}
	}
	if typ != nil && p.r.res != nil && p.r.res.obs.Swallow(typ, msg) {
		// It ends the upstream session and the call resumes from it.
		p.r.swallow(p.scrub(msg, true))
		return nil
	}
	return p.writeMessage(p.scrub(msg, typ == nil || p.r.obs.Hold(typ)), true)
}

// scrub returns msg with credentials redacted when it is sensitive (an
// error event, or a message of unknown type).
func (p *pump) scrub(msg []byte, sensitive bool) []byte {
	if !sensitive {
		return msg
	}
	return scrubJSON(p.r.opts.Redactor, msg)
}

// scrubJSON returns the JSON message msg with credentials redacted (r nil:
// msg as it is).
func scrubJSON(r *Redactor, msg []byte) []byte {
	if r == nil {
		return msg
	}
	out := msg
	if clean := r.Redact(string(msg)); clean != string(msg) {
		out = []byte(clean)
	}
	if bytes.IndexByte(out, '\\') >= 0 {
		// JSON escapes (\u0073k-..., \/) can hide a key from a literal match:
		// look again at the decoded strings.
		if decoded, ok := redactDecoded(r, out); ok {
			out = decoded
		}
	}
	return out
}

// redactDecoded decodes the JSON message msg, redacts every string in it
// and, if that changed anything, returns it encoded again (rare: an error
// event whose credential was written with escapes).
func redactDecoded(r *Redactor, msg []byte) ([]byte, bool) {
	d := json.NewDecoder(bytes.NewReader(msg))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return nil, false
	}
	changed := false
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			if c := r.Redact(x); c != x {
				changed = true
				return c
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		}
		return v
	}
	v = walk(v)
	if !changed {
		return nil, false
	}
	out, err := json.Marshal(v)
	return out, err == nil
}

// writeMessage writes unmasked bytes of the upstream message in progress as
// frames of at most chunkSize (rare: held or scrubbed text; it copies).
func (p *pump) writeMessage(b []byte, fin bool) error {
	for {
		n := min(len(b), chunkSize)
		last := n == len(b)
		h := ws.Header{Fin: fin && last, OpCode: ws.OpContinuation, Length: int64(n)}
		if !p.started {
			h.OpCode = ws.OpText
		}
		buf := bufPool.Get().(*[wsframe.MaxHeaderSize + chunkSize]byte)
		hn := wsframe.PutHeader(buf[:], h)
		hn += copy(buf[hn:], b[:n])
		p.started = true
		err := p.write(buf[:hn], h.Fin)
		bufPool.Put(buf)
		if err != nil || last {
			return err
		}
		b = b[n:]
	}
}

// inspect feeds a payload chunk to the peeker and, for rare events, the capture buffer.
func (p *pump) inspect(h ws.Header, b []byte, off int) {
	var mask [4]byte
	if h.Masked {
		mask = h.Mask
	}
	if !p.peek.Done() {
		p.peek.Feed(b, mask, off)
	}
	if !p.capOK {
		return
	}
	typ := p.peek.Type()
	if typ != nil && !p.wants(typ) {
		p.capOK = false
		if p.capture != nil {
			putCapture(p.capture)
			p.capture = nil
		}
		return
	}
	if typ == nil && p.peek.Done() {
		p.capOK = false // no type: nothing to parse
		return
	}
	if p.capture == nil {
		p.capture = capturePool.Get().(*[]byte)
	}
	c := *p.capture
	if len(c)+len(b) > captureMax {
		p.capOK = false
		return
	}
	start := len(c)
	c = append(c, b...)
	if h.Masked {
		ws.Cipher(c[start:], mask, off)
	}
	*p.capture = c
}

// wants reports whether the session captures a message of type typ whole
// (upstream: its dialect or memory; client: its memory).
func (p *pump) wants(typ []byte) bool {
	if p.d == lifecycle.UpstreamToClient {
		return p.r.obs.Capture(typ)
	}
	return p.r.res.obs.CaptureClient(typ)
}

// peerClose is a close frame received.
type peerClose struct {
	code   wsframe.CloseCode
	reason string
}

// upstreamClosed handles a close frame from the pump's source: the call
// resumes when the upstream went away or failed (or after an ending event
// kept from the client), else the session ends. It reports whether the
// call goes on.
func (p *pump) upstreamClosed(cl *peerClose) bool {
	r := p.r
	if p.d != lifecycle.UpstreamToClient || r.res == nil || r.ended.Load() ||
		!closeResumes(cl.code) && !r.res.endingKept() && !r.res.active.Load() {
		// The upstream ended the session on purpose (or nothing resumes).
		r.obs.CloseReceived(p.srcLeg, cl.code, cl.reason)
		return false
	}
	return p.upstreamLost(lifecycle.TriggerUpstreamError, func(t lifecycle.Trigger) { p.endUpstream(t, cl, nil) })
}

// upstreamFailed handles a failed read (or pong write) on the upstream
// leg: the call resumes, or ends as the failure would end it. It reports
// whether the call goes on.
func (p *pump) upstreamFailed(err error) bool {
	return p.upstreamLost(lifecycle.TriggerUpstreamError, func(t lifecycle.Trigger) { p.endUpstream(t, nil, err) })
}

// errProtocol: a control frame ended the session as a protocol error.
var errProtocol = errors.New("malformed control frame")

// control handles a control frame from leg src. A close frame is returned,
// not acted on; an error is the leg's failure (errProtocol: the session
// already ended).
func (r *Relay) control(which lifecycle.Leg, src *leg, h ws.Header) (*peerClose, error) {
	in := ctlPool.Get().(*ctlBuf)
	defer ctlPool.Put(in)
	p := in[:h.Length]
	if _, err := io.ReadFull(&src.rd, p); err != nil {
		return nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		// Answer on the same leg at a frame boundary, without waiting for a
		// fragment in flight there.
		if err := src.sendControl(ws.OpPong, p); err != nil && !r.ended.Load() {
			return nil, err
		}
	case ws.OpPong:
		r.obs.Pong(which)
	case ws.OpClose:
		code, reason, err := wsframe.ParseClose(p)
		if err != nil {
			r.obs.End(lifecycle.ReasonProtocolError)
			return nil, errProtocol
		}
		rs := string(reason)
		if which == lifecycle.Upstream {
			rs = r.opts.Redactor.Redact(rs)
		}
		return &peerClose{code: code, reason: wsframe.TruncateUTF8(rs, wsframe.MaxCloseReason)}, nil
	}
	return nil, nil
}

// WriteFirst writes an already-encoded frame (the upstream's first event,
// read during the dial) to the client leg before the relay starts.
func (r *Relay) WriteFirst(frame []byte) error {
	_, err := r.WriteBefore(lifecycle.Client, frame, false)
	return err
}

// WriteBefore writes already-encoded frames to leg before the relay starts,
// within CloseWriteTimeout per 64 KiB (a peer that stopped reading fails
// the write, it does not hang the session). midMessage: the frames end
// inside a fragmented message, which the relay then continues.
//
// Frames for the upstream are dropped once a graceful close began (the
// session ended before they could go): it reports whether they went out.
func (r *Relay) WriteBefore(which lifecycle.Leg, frames []byte, midMessage bool) (bool, error) {
	l := r.leg(which)
	l.lock()
	defer l.unlockFlush()
	if which == lifecycle.Upstream && (r.closing.Load() || l.pendingMsg != nil) {
		return false, nil
	}
	_ = l.conn.SetWriteDeadline(time.Now().Add(r.opts.CloseWriteTimeout * time.Duration(1+len(frames)>>16)))
	defer l.conn.SetWriteDeadline(time.Time{})
	if err := l.writeLocked(frames); err != nil {
		return false, err
	}
	l.midMessage = midMessage
	return true, nil
}

// ResumeClientMessage makes the relay's client pump start inside a
// fragmented message (text or binary) that began before the relay ran: its
// next frame is a continuation. Call it before Start.
func (r *Relay) ResumeClientMessage(text bool) {
	r.startInMessage = &frameState{inMessage: true, text: text}
}
