package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// targetStats are the counters of one target, shared by its sessions.
type targetStats struct {
	rtt      *Histogram // probe round trips (send to echo fully received)
	connect  *Histogram // dial start to the 101 answer
	setup    *Histogram // dial start to the first event (session.created)
	lateness *Histogram // actual send time minus scheduled send time

	sent, recv           atomic.Uint64 // probes
	sentBytes, recvBytes atomic.Uint64 // probe frames on the wire, headers included
	late                 atomic.Uint64 // sends later than Options.LateAfter
	connected, failed    atomic.Int64  // sessions set up / that failed to be
	dropped              atomic.Int64  // set-up sessions that ended before the run closed them
	firstDial, lastUp    atomic.Int64  // nanoseconds since the run's base; lastUp is the latest setup

	live *liveStats // GPT-Live shape only

	mu   sync.Mutex
	errs map[string]uint64 // guarded by mu; error kind -> count
}

func newTargetStats() *targetStats {
	t := &targetStats{rtt: NewHistogram(), connect: NewHistogram(), setup: NewHistogram(),
		lateness: NewHistogram(), errs: map[string]uint64{}}
	t.firstDial.Store(-1)
	return t
}

// fail counts one error of a kind (a short fixed label, not a message).
func (t *targetStats) fail(kind string) {
	t.mu.Lock()
	t.errs[kind]++
	t.mu.Unlock()
}

func (t *targetStats) errors() (total uint64, kinds map[string]uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kinds = make(map[string]uint64, len(t.errs))
	for k, v := range t.errs {
		kinds[k] = v
		total += v
	}
	return total, kinds
}

// session is one client WebSocket of the load. Its reader goroutine (run)
// owns the connection; its probes are sent by the sender of its shard.
type session struct {
	r     *runner
	tgt   *target
	phase time.Duration // offset of this session's ticks within an interval

	conn net.Conn   // set by dialSession before up is closed
	br   io.Reader  // buffered reader of conn; owned by run
	wmu  sync.Mutex // serialises writes: probes, pongs, the close frame
	// closing is set when the runner sent our close frame.
	closing atomic.Bool
	// readDone is set when the reader stopped; the sender's failures are
	// then consequences, not new errors.
	readDone atomic.Bool
	// up is closed once the session is set up (or failed to be).
	up   chan struct{}
	upOK bool // set before up is closed

	probe  *probe    // owned by the shard sender
	seq    uint64    // next probe sequence number; owned by the shard sender
	mask   [4]byte   // for control frames
	expect uint64    // next echoed sequence number; owned by run
	live   *liveCall // GPT-Live shape only
	// Read buffers, owned by run.
	hdr      [ws.MaxHeaderSize]byte
	head     [probeHead]byte
	ctl      [125]byte
	liveHead [256]byte
}

// errorKind maps an error to a short label for the report.
func errorKind(prefix string, err error) string {
	var se ws.StatusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s: http %d", prefix, int(se))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return prefix + ": eof"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return prefix + ": timeout"
	case errors.Is(err, net.ErrClosed):
		return prefix + ": closed"
	default:
		var oe *net.OpError
		if errors.As(err, &oe) {
			return prefix + ": " + oe.Err.Error()
		}
		return prefix + ": " + err.Error()
	}
}

// dialSession connects and sets up one session: dial, wait for the first
// event, turn the echo fault on. It returns false on failure (counted).
func (s *session) dialSession(ctx context.Context) bool {
	st := s.tgt.stats
	start := time.Now()
	st.firstDial.CompareAndSwap(-1, int64(start.Sub(s.r.base)))
	d := ws.Dialer{Timeout: s.r.opts.HandshakeTimeout}
	conn, br, _, err := d.Dial(ctx, s.tgt.URL)
	if err != nil {
		st.fail(errorKind("connect", err))
		return false
	}
	st.connect.Record(time.Since(start))
	s.conn = conn
	size := 4 << 10
	if s.r.opts.FrameBytes > size {
		size = 64 << 10
	}
	var src io.Reader = conn
	if br != nil && br.Buffered() > 0 {
		extra, _ := br.Peek(br.Buffered())
		src = io.MultiReader(bytes.NewReader(bytes.Clone(extra)), conn)
	}
	if br != nil {
		ws.PutReader(br)
	}
	s.br = bufio.NewReaderSize(src, size)
	binary.LittleEndian.PutUint32(s.mask[:], rand.Uint32())

	_ = conn.SetReadDeadline(time.Now().Add(s.r.opts.HandshakeTimeout))
	if s.r.opts.Shape == ShapeLive {
		return s.dialLive(st, start)
	}
	// The first event must be session.created (answering pings meanwhile).
	if !s.expectEvent(st, realtime.SessionCreated, "setup: first event is not session.created") {
		return false
	}
	st.setup.Record(time.Since(start))
	// Configure the session as a client does, so that both directions have
	// carried an event (a realistic idle session), and wait for the answer.
	if err := s.write(controlFrame(ws.OpText, sessionUpdate, s.mask)); err != nil {
		st.fail(errorKind("setup", err))
		return false
	}
	if !s.expectEvent(st, realtime.SessionUpdated, "setup: session.update was not answered with session.updated") {
		return false
	}
	_ = conn.SetReadDeadline(time.Time{})
	if s.r.opts.Rate > 0 {
		if err := s.write(controlFrame(ws.OpText, echoEvent, s.mask)); err != nil {
			st.fail(errorKind("setup", err))
			return false
		}
	}
	if s.r.opts.Rate > 0 {
		p, err := newProbe(s.r.opts.FrameBytes, s.mask)
		if err != nil {
			st.fail("setup: " + err.Error())
			return false
		}
		s.probe = p
	}
	st.lastUp.Store(int64(time.Since(s.r.base)))
	st.connected.Add(1)
	return true
}

// dialLive sets a GPT-Live call up: session.start, then session.started.
func (s *session) dialLive(st *targetStats, start time.Time) bool {
	if err := s.write(controlFrame(ws.OpText, liveStartEvent, s.mask)); err != nil {
		st.fail(errorKind("setup", err))
		return false
	}
	if !s.expectEvent(st, live.SessionStarted, "setup: session.start was not answered with session.started") {
		return false
	}
	st.setup.Record(time.Since(start))
	_ = s.conn.SetReadDeadline(time.Time{})
	s.live = &liveCall{}
	if s.r.opts.Rate > 0 {
		s.probe = newLiveProbe(s.mask)
	}
	st.lastUp.Store(int64(time.Since(s.r.base)))
	st.connected.Add(1)
	return true
}

// expectEvent reads the next event during setup; unless it is one of type
// typ (or cannot be read), it records the failure (wrong: the kind for a
// wrong event) and returns false.
func (s *session) expectEvent(st *targetStats, typ, wrong string) bool {
	ev, err := s.readEvent()
	if err != nil {
		st.fail(errorKind("setup", err))
		return false
	}
	if !bytes.Contains(ev, []byte(`"`+typ+`"`)) {
		st.fail(wrong)
		return false
	}
	return true
}

// readEvent returns the first 64 KiB of the next text or binary message,
// answering pings meanwhile.
func (s *session) readEvent() ([]byte, error) {
	for {
		h, err := ws.ReadHeaderBuffer(s.br, s.hdr[:])
		if err != nil {
			return nil, err
		}
		if h.OpCode.IsControl() {
			if !s.control(h) {
				return nil, errors.New("closed by peer")
			}
			continue
		}
		head := make([]byte, min(h.Length, 64<<10))
		if _, err := io.ReadFull(s.br, head); err != nil {
			return nil, err
		}
		if err := discard(s.br, h.Length-int64(len(head))); err != nil {
			return nil, err
		}
		return head, nil
	}
}

func discard(r io.Reader, n int64) error {
	if n <= 0 {
		return nil
	}
	if br, ok := r.(*bufio.Reader); ok && n < 1<<30 {
		_, err := br.Discard(int(n))
		return err
	}
	_, err := io.CopyN(io.Discard, r, n)
	return err
}

func (s *session) write(frame []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.conn.Write(frame)
	return err
}

// run sets the session up, then reads until the close handshake or an
// error, and returns with the connection closed.
func (s *session) run(ctx context.Context) {
	ok := s.dialSession(ctx)
	s.upOK = ok
	close(s.up)
	if !ok {
		s.tgt.stats.failed.Add(1)
		if s.conn != nil {
			s.conn.Close()
		}
		return
	}
	if s.live != nil {
		s.readLive()
		s.liveEnd()
	} else {
		s.read()
	}
	s.readDone.Store(true)
	if !s.closing.Load() {
		s.tgt.stats.dropped.Add(1)
	}
	s.conn.Close()
}

// nextData reads frames until a data frame, answering control frames; it
// returns the frame's header and its first bytes (up to len(buf); the rest
// is skipped), or ok=false when the session is over (a read failure is
// counted unless the session is closing).
func (s *session) nextData(buf []byte) (h ws.Header, head []byte, ok bool) {
	st := s.tgt.stats
	for {
		h, err := ws.ReadHeaderBuffer(s.br, s.hdr[:])
		if err == nil && h.OpCode.IsControl() {
			if !s.control(h) {
				return h, nil, false
			}
			continue
		}
		if err == nil {
			head = buf[:min(int(h.Length), len(buf))]
			if _, err = io.ReadFull(s.br, head); err == nil {
				err = discard(s.br, h.Length-int64(len(head)))
			}
		}
		if err != nil {
			if !s.closing.Load() {
				st.fail(errorKind("read", err))
			}
			return h, nil, false
		}
		return h, head, true
	}
}

// read handles frames until the session ends.
func (s *session) read() {
	st := s.tgt.stats
	for {
		h, head, ok := s.nextData(s.head[:probeHead])
		if !ok {
			return
		}
		seq, sent, err := parseProbe(head)
		if err != nil || h.OpCode != ws.OpText {
			if bytes.Contains(head, []byte(`"type":"`+realtime.Error+`"`)) {
				st.fail("upstream error event")
			} else {
				st.fail("unexpected frame")
			}
			continue
		}
		now := time.Since(s.r.base)
		st.rtt.Record(now - sent)
		st.recv.Add(1)
		st.recvBytes.Add(uint64(ws.HeaderSize(h)) + uint64(h.Length))
		if seq != s.expect {
			st.fail("echo out of order")
		}
		s.expect = seq + 1
	}
}

// readLive handles a GPT-Live call's frames until the session ends.
func (s *session) readLive() {
	for {
		h, head, ok := s.nextData(s.liveHead[:])
		if !ok {
			return
		}
		s.liveFrame(head, uint64(ws.HeaderSize(h))+uint64(h.Length))
	}
}

// control handles a control frame; false means the session is over.
func (s *session) control(h ws.Header) bool {
	p := s.ctl[:h.Length]
	if _, err := io.ReadFull(s.br, p); err != nil {
		return false
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		if !s.closing.Load() {
			_ = s.write(controlFrame(ws.OpPong, p, s.mask))
		}
	case ws.OpClose:
		if !s.closing.Load() {
			code, reason := ws.ParseCloseFrameData(p)
			s.tgt.stats.fail(fmt.Sprintf("closed by peer: %d %s", code, wsframe.Abbrev(reason, 40)))
			_ = s.write(controlFrame(ws.OpClose, p[:min(len(p), 2)], s.mask))
		}
		return false
	}
	return true
}

// close starts the closing handshake (close 1000) and bounds the wait for
// the peer's answer; run then returns.
func (s *session) close(linger time.Duration) {
	if s.closing.Swap(true) {
		return
	}
	deadline := time.Now().Add(linger)
	_ = s.conn.SetWriteDeadline(deadline) // unblocks a writer stuck on a full socket
	_ = s.write(controlFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), s.mask))
	_ = s.conn.SetReadDeadline(deadline)
}
