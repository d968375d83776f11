package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

// GPT-Live upgrades: the client speaks first. The handshake is checked and
// admitted as for Realtime, then answered 101 at once; the client's first
// message must be session.start. Only then is the upstream dialed (with
// failover, each upstream getting the same session.start), and a dial
// succeeds on session.started. Messages the client sends meanwhile are held
// (up to maxLiveHeld bytes; beyond that tether stops reading) and forwarded
// after session.started, in order. Failures after the 101 reach the client
// as a GPT-Live error event and a close frame, never as a hang.

const (
	// maxLiveStart bounds session.start (instructions of 16,384 tokens and
	// an 8,192-token history fit with room to spare).
	maxLiveStart = 256 << 10
	// maxLiveHeld bounds the client's messages held until session.started.
	maxLiveHeld = 1 << 20
)

// ServeLive implements the GPT-Live upgrade paths (server.live_paths).
func (h *Handler) ServeLive(w http.ResponseWriter, r *http.Request) {
	requestedAt := time.Now()
	c, release, ok := h.preflight(w, r, h.authenticate)
	if !ok {
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()
	conn, rw, _, err := (&ws.HTTPUpgrader{}).Upgrade(r, w)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		h.rejected(RejectBadHandshake)
		h.log.Info("client upgrade failed", "client", r.RemoteAddr, "err", err)
		return
	}
	lc := &liveClient{conn: conn, br: rw.Reader, maxFrame: cmp.Or(h.opts.Relay.MaxFrameBytes, math.MaxInt64),
		frameWait: h.waitBound()}
	info := h.sessionInfo(r, c, requestedAt)
	info.Dialect = live.Dialect{}
	handedOff = h.startLive(r, lc, info, release)
}

// startLive reads session.start, dials and opens the session. It reports
// whether the relay took over (and with it the admission slot).
func (h *Handler) startLive(r *http.Request, lc *liveClient, info lifecycle.Info, release func()) bool {
	deadline := time.Now().Add(h.opts.HandshakeTimeout)
	if h.opts.HandshakeTimeout <= 0 {
		deadline = time.Time{}
	}
	_ = lc.conn.SetReadDeadline(deadline)
	// A drain does not wait for a client that has not spoken yet.
	stopWatch := context.AfterFunc(h.mgr.DrainStarted(), func() { _ = lc.conn.SetReadDeadline(time.Unix(1, 0)) })
	payload, err := lc.readStart()
	stopWatch()
	if h.mgr.Draining() {
		h.rejected(RejectDraining)
		lc.finish(live.NewError(live.ErrTypeServer, live.CodeShuttingDown, drainingRejection.msg, ""), wsframe.GoingAway, "tether shutting down")
		return false
	}
	if err != nil {
		h.liveStartFailed(lc, info, err)
		return false
	}
	start, err := live.ParseStart(payload)
	if err != nil {
		code := live.CodeInvalidValue
		if errors.Is(err, live.ErrNotStart) {
			code = live.CodeStartRequired
		}
		h.liveRefuse(lc, info, RejectBadHandshake, live.ErrTypeInvalidRequest, code, err.Error(), "", wsframe.PolicyViolation)
		return false
	}
	info.Model = start.Model
	if err := h.dialer.CheckLiveModel(start.Model); err != nil {
		h.liveRefuse(lc, info, RejectModelNotAllowed, live.ErrTypeInvalidRequest, live.CodeModelNotAllowed,
			fmt.Sprintf("model %q is not served by this proxy", start.Model), start.EventID, wsframe.PolicyViolation)
		return false
	}
	// The dial gives up when the client leaves; the client waits for at most
	// the dial (bounded by the handshake timeout) without a deadline of its own.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	_ = lc.conn.SetReadDeadline(time.Time{})
	lc.done, lc.cancel = make(chan struct{}), cancel
	go lc.holdUntilStarted()
	req := upstreamRequest(r, caller{model: start.Model})
	req.RawQuery, req.Start = "", payload
	up, rj, dialErr := h.dialUpstream(ctx, r, req, &info)
	var de *upstreams.DialError
	var refusal []byte
	if errors.As(dialErr, &de) {
		refusal = de.Refusal
	}
	lc.stop()
	if rj != nil || lc.err != nil {
		if up != nil {
			closeStarted(up)
		}
		h.liveDialFailed(lc, info, rj, refusal, start.EventID)
		return false
	}
	_ = lc.conn.SetReadDeadline(time.Time{})
	req.Start = payload
	return h.openLive(lc, info, up, req, release)
}

// openLive opens the session: session.started goes to the client, the
// held client messages upstream, and the relay takes over.
func (h *Handler) openLive(lc *liveClient, info lifecycle.Info, up *upstreams.Conn, req upstreams.Request, release func()) (handedOff bool) {
	s := h.mgr.Open(info)
	s.ReleaseOnEnd(release)
	defer func() {
		if !handedOff {
			s.End(lifecycle.ReasonPanic)
			_ = lc.conn.Close()
			_ = up.Net.Close()
			h.mgr.Finished(s, release)
		}
	}()
	ro := h.opts.Relay
	ro.Logger = cmp.Or(ro.Logger, h.log)
	relay := NewRelay(lc.conn, lc.br, up.Net, up.BR, ro)
	s.ClientCaptured([]byte(live.SessionStart), req.Start)
	h.enableResume(s, relay, req)
	s.Frame(lifecycle.ClientToUpstream, int64(lc.startLen))
	for _, ev := range up.Early {
		// Not yet known to be harmless: scrubbed like a message the peeker cannot read.
		ev = scrubJSON(ro.Redactor, ev)
		frame := make([]byte, wsframe.MaxHeaderSize+len(ev))
		n := wsframe.PutHeader(frame, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(ev))})
		n += copy(frame[n:], ev)
		if err := relay.WriteFirst(frame[:n]); err != nil {
			s.LegError(lifecycle.Client, err)
			break
		}
		s.Frame(lifecycle.UpstreamToClient, int64(len(ev)))
	}
	if err := relay.WriteFirst(up.First); err != nil {
		s.LegError(lifecycle.Client, err)
	} else {
		s.Frame(lifecycle.UpstreamToClient, int64(len(up.FirstPayload)))
		s.Captured([]byte(up.FirstType), up.FirstPayload)
	}
	if lc.inMessage {
		relay.ResumeClientMessage(lc.msgText)
	}
	// The timers run from here: a stalled upstream that does not take the
	// held messages is found out by its heartbeat (the write makes no
	// progress), as any stalled write. The relay's pumps start after.
	s.Start(relay)
	if len(lc.held) > 0 {
		sent, err := relay.WriteBefore(lifecycle.Upstream, lc.held, lc.inMessage)
		if err != nil {
			s.LegError(lifecycle.Upstream, err)
		}
		for _, n := range lc.heldSizes {
			if sent {
				s.Frame(lifecycle.ClientToUpstream, int64(n))
			}
		}
	}
	h.startRelay(s, relay, release)
	return true
}

// liveStartFailed answers a client whose first message did not come as a
// session.start: it left, sent a bad frame, took too long or sent too much.
func (h *Handler) liveStartFailed(lc *liveClient, info lifecycle.Info, err error) {
	var ce *clientClose
	switch {
	case errors.As(err, &ce):
		h.rejected(RejectClientClosed)
		lc.finish(nil, ce.code, "")
	case errors.Is(err, errLiveStartTooLarge):
		h.liveRefuse(lc, info, RejectBadHandshake, live.ErrTypeInvalidRequest, live.CodeStartRequired,
			fmt.Sprintf("session.start over %d bytes (or a frame over server.max_frame_bytes)", maxLiveStart), "", wsframe.MessageTooBig)
	case errors.Is(err, errLiveNotText):
		h.liveRefuse(lc, info, RejectBadHandshake, live.ErrTypeInvalidRequest, live.CodeStartRequired,
			"the first message must be session.start, a JSON text message", "", wsframe.PolicyViolation)
	case isTimeout(err):
		h.liveRefuse(lc, info, RejectBadHandshake, live.ErrTypeInvalidRequest, live.CodeStartTimeout,
			"no whole session.start (or frame) within the handshake timeout", "", wsframe.PolicyViolation)
	case errors.Is(err, errLiveFrame):
		h.rejected(RejectBadHandshake)
		lc.finish(nil, wsframe.ProtocolError, "protocol error")
	default: // the socket failed: nobody to answer
		h.rejected(RejectBadHandshake)
		_ = lc.conn.Close()
	}
}

// liveDialFailed answers a client for whom no session started: it left or
// misbehaved meanwhile, or no upstream started one.
func (h *Handler) liveDialFailed(lc *liveClient, info lifecycle.Info, rj *rejection, refusal []byte, eventID string) {
	if lc.err != nil {
		h.liveStartFailed(lc, info, lc.err)
		return
	}
	h.rejected(rj.reason)
	switch {
	case rj == drainingRejection:
		lc.finish(live.NewError(live.ErrTypeServer, live.CodeShuttingDown, rj.msg, eventID), wsframe.GoingAway, "tether shutting down")
	case refusal != nil:
		// The service refused this session.start (its invalid_request_error,
		// scrubbed): the client's to fix, not a reason to retry.
		lc.finish(scrubJSON(h.opts.Relay.Redactor, refusal), wsframe.PolicyViolation, "session.start refused")
	default:
		msg := "no upstream could start the session"
		if rj.reason == RejectUpstreamRateLimited {
			msg = "the upstream is rate limiting; retry later"
		}
		lc.finish(live.NewError(live.ErrTypeServer, live.CodeUpstreamUnavailable, msg, eventID), wsframe.TryAgainLater, "upstream unavailable")
	}
}

// closeStarted ends an upstream session that started for a client who is
// gone: session.close and a close frame, best effort, then the socket.
func closeStarted(up *upstreams.Conn) {
	_ = up.Net.SetWriteDeadline(time.Now().Add(time.Second))
	_ = upstreams.WriteMasked(up.Net, ws.OpText, live.CloseMessage)
	var p [2]byte
	_ = upstreams.WriteMasked(up.Net, ws.OpClose, wsframe.AppendClose(p[:0], wsframe.NormalClosure, ""))
	_ = up.Net.Close()
}

// liveRefuse refuses a session.start: error event, close, counted and recorded.
func (h *Handler) liveRefuse(lc *liveClient, info lifecycle.Info, reason, errType, code, msg, eventID string, cc wsframe.CloseCode) {
	h.rejected(reason)
	h.mgr.HandshakeFailed(info, http.StatusSwitchingProtocols, reason)
	lc.finish(live.NewError(errType, code, msg, eventID), cc, reason)
}

// Errors of the client's first message.
var (
	errLiveFrame         = errors.New("malformed frame before session.started")
	errLiveStartTooLarge = errors.New("session.start (or a frame before session.started) too large")
	errLiveNotText       = errors.New("the first message is not text")
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientClose: the client sent a close frame before its session started.
type clientClose struct{ code wsframe.CloseCode }

func (c *clientClose) Error() string { return fmt.Sprintf("client closed (%d)", c.code) }

// liveClient is the client leg of a GPT-Live session until the relay takes
// it over: it reads session.start, then holds what follows.
type liveClient struct {
	conn     net.Conn
	br       *bufio.Reader
	maxFrame int64
	startLen int // payload bytes of session.start

	mu      sync.Mutex
	stopped bool // stop was called: no new frame is read
	busy    bool // a frame is being read
	done    chan struct{}
	cancel  func() // gives up the dial when holding ends early
	// held are the client's frames after session.start, as received
	// (masked), and their payload sizes; err is why holding ended early.
	held      []byte
	heldSizes []int
	err       error
	// inMessage: the held frames end inside a fragmented message (msgText:
	// a text one), which the relay continues.
	inMessage, msgText bool
	// frameWait bounds the wait for a frame coming in when holding stops.
	frameWait time.Duration
}

// readStart reads the client's first message, answering pings.
func (lc *liveClient) readStart() ([]byte, error) {
	var msg []byte
	var st frameState
	for {
		h, payload, err := lc.readFrame(&st, maxLiveStart-int64(len(msg)))
		if err != nil {
			return nil, err
		}
		if h.OpCode.IsControl() {
			continue
		}
		if !st.text {
			return nil, errLiveNotText // GPT-Live speaks JSON text only
		}
		ws.Cipher(payload, h.Mask, 0)
		msg = append(msg, payload...)
		if h.Fin {
			lc.startLen = len(msg)
			return msg, nil
		}
	}
}

// readFrame reads one whole frame (at most limit payload bytes for data
// frames). Pings are answered; a close is a *clientClose.
func (lc *liveClient) readFrame(st *frameState, limit int64) (ws.Header, []byte, error) {
	h, hn, err := lc.peekHeader()
	if err != nil {
		return h, nil, err
	}
	if err := st.checkHeader(h, true, lc.maxFrame); err != nil {
		if err == ErrFrameTooLarge {
			return h, nil, errLiveStartTooLarge
		}
		return h, nil, errLiveFrame
	}
	if !h.OpCode.IsControl() && h.Length > limit {
		return h, nil, errLiveStartTooLarge
	}
	_, _ = lc.br.Discard(hn)
	return lc.readPayload(h)
}

// peekHeader parses the next frame header without consuming it: a frame
// that is not to be read yet stays whole in the buffer for the relay.
func (lc *liveClient) peekHeader() (ws.Header, int, error) {
	b, err := lc.br.Peek(2)
	if err != nil {
		return ws.Header{}, 0, err
	}
	n := 2
	if b[1]&0x80 != 0 {
		n += 4
	}
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b, err = lc.br.Peek(n); err != nil {
		return ws.Header{}, 0, err
	}
	var hb [wsframe.MaxHeaderSize]byte
	h, err := readHeader(bytes.NewReader(b), hb[:])
	if err != nil {
		return h, 0, errLiveFrame
	}
	return h, n, nil
}

// readPayload reads h's payload (the header consumed); pings are answered,
// a close is a *clientClose.
func (lc *liveClient) readPayload(h ws.Header) (ws.Header, []byte, error) {
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(lc.br, payload); err != nil {
		return h, nil, err
	}
	switch h.OpCode {
	case ws.OpPing:
		p := append([]byte(nil), payload...)
		ws.Cipher(p, h.Mask, 0)
		return h, payload, lc.writeControl(ws.OpPong, p)
	case ws.OpClose:
		p := append([]byte(nil), payload...)
		ws.Cipher(p, h.Mask, 0)
		code, _, err := wsframe.ParseClose(p)
		if err != nil {
			return h, nil, errLiveFrame
		}
		return h, nil, &clientClose{code: code}
	}
	return h, payload, nil
}

// holdUntilStarted reads the client's frames, a whole frame at a time,
// until stop, and keeps the data frames (as received) up to maxLiveHeld
// bytes: a frame that does not fit is left unread, in the socket, for the
// relay to stream once the session runs (the client waits in TCP flow
// control meanwhile), even in the middle of a fragmented message (the
// relay continues it, see Relay.ResumeClientMessage).
func (lc *liveClient) holdUntilStarted() {
	defer close(lc.done)
	defer func() {
		if lc.err != nil {
			lc.cancel()
		}
	}()
	var st frameState
	for {
		h, hn, err := lc.peekHeader()
		lc.mu.Lock()
		if lc.stopped {
			lc.mu.Unlock()
			return
		}
		if err == nil {
			if cerr := st.checkHeader(h, true, lc.maxFrame); cerr != nil {
				err = errLiveFrame
				if cerr == ErrFrameTooLarge {
					err = errLiveStartTooLarge
				}
			}
		}
		if err != nil {
			lc.err = err
			lc.mu.Unlock()
			return
		}
		if !h.OpCode.IsControl() && int64(len(lc.held))+h.Length > maxLiveHeld {
			lc.mu.Unlock()
			return // over the budget: the relay reads it
		}
		lc.busy = true
		lc.mu.Unlock()
		head, _ := lc.br.Peek(hn)
		head = bytes.Clone(head)
		_, _ = lc.br.Discard(hn)
		h, payload, err := lc.readPayload(h)
		lc.mu.Lock()
		lc.busy = false
		switch {
		case err != nil:
			lc.err = err
		case !h.OpCode.IsControl():
			lc.held = append(append(lc.held, head...), payload...)
			lc.heldSizes = append(lc.heldSizes, len(payload))
			lc.inMessage, lc.msgText = st.inMessage, st.text
		}
		stop := lc.err != nil || lc.stopped
		lc.mu.Unlock()
		if stop {
			return
		}
	}
}

// stop ends holding at the next frame boundary and waits for it: a frame
// coming in may take up to frameWait more.
func (lc *liveClient) stop() {
	lc.mu.Lock()
	if lc.done == nil { // holding never started
		lc.mu.Unlock()
		return
	}
	lc.stopped = true
	if lc.busy {
		_ = lc.conn.SetReadDeadline(time.Now().Add(lc.frameWait))
	} else {
		_ = lc.conn.SetReadDeadline(time.Unix(1, 0)) // wakes a Peek; nothing is consumed
	}
	lc.mu.Unlock()
	<-lc.done
}

// writeControl writes a control frame to the client (unmasked).
func (lc *liveClient) writeControl(op ws.OpCode, payload []byte) error {
	var buf ctlBuf
	n := wsframe.PutHeader(buf[:], ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))})
	n += copy(buf[n:], payload)
	_ = lc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := lc.conn.Write(buf[:n])
	_ = lc.conn.SetWriteDeadline(time.Time{})
	return err
}

// finish sends event (if any) and a close frame, waits briefly for the
// client's close, and closes the socket.
func (lc *liveClient) finish(event []byte, code wsframe.CloseCode, reason string) {
	_ = lc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if event != nil {
		var hb [wsframe.MaxHeaderSize]byte
		n := wsframe.PutHeader(hb[:], ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(event))})
		_, _ = lc.conn.Write(append(hb[:n:n], event...))
	}
	var p [125]byte
	_ = lc.writeControl(ws.OpClose, wsframe.AppendClose(p[:0], code, reason))
	_ = lc.conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(lc.br, 1<<20)) // until the client's close or EOF
	_ = lc.conn.Close()
}
