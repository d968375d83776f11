package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

// Resuming a call (lifecycle.resume). When the upstream leg ends under a
// call the caller did not end, the upstream pump, and only it, asks the
// session whether the call resumes (ResumeObserver.ResumeBegin). If so it
// finishes the answers the old session left unfinished for the client,
// dials again, gives the new session the call's replay and swallows the
// answers to it, then sends on the client messages held meanwhile and
// relays on; if not, or if no upstream takes the call over, the call ends
// as it would have without resuming. The client pump never waits: from
// the moment the upstream leg is known to end (a failed write, an ending
// event kept from the client, tether's own Interrupt, the upstream pump's
// failed read) it holds the client's messages instead of writing them (the
// most recent ResumeOptions.Buffer of audio, everything else whole).

// ResumeObserver is the session's side of resuming; *lifecycle.Session
// implements it.
type ResumeObserver interface {
	// CaptureClient and ClientCaptured: client messages the call keeps.
	CaptureClient(typ []byte) bool
	ClientCaptured(typ, payload []byte)
	// Swallow: a held upstream message ends the upstream session and the
	// call may resume from it, so the client does not see it (yet).
	Swallow(typ, payload []byte) bool
	// ResumeBegin: the upstream leg ended, for cause as the relay saw it.
	// It returns the trigger the ending counts as (an ending kept from the
	// client, or tether's own interrupt, wins over cause) and whether the
	// call resumes.
	ResumeBegin(cause lifecycle.Trigger) (lifecycle.Trigger, bool)
	ResumePlan() (interrupted [][]byte, replay dialect.Replay)
	Droppable(typ []byte) bool
	ResumeNotice(n dialect.ResumeNotice) []byte
	// Resumed returns the call's resume count, this one included.
	Resumed(r lifecycle.Resume) int
	ResumeFailed(r lifecycle.Resume)
	// Upstream names the upstream serving the call now.
	Upstream() string
}

// Redial dials a new upstream session for a call that resumes from the
// upstream from; start, when set, is the opening message to dial with
// (GPT-Live session.start).
type Redial func(ctx context.Context, trigger lifecycle.Trigger, from string, start []byte) (*upstreams.Conn, error)

// ResumeOptions tune resuming.
type ResumeOptions struct {
	Dial Redial
	// Buffer is how much client audio, by arrival, is held while resuming;
	// older audio messages are dropped.
	Buffer time.Duration
	// Timeout bounds the replay's answers (the dial is bounded by Dial).
	Timeout time.Duration
}

// Resume bounds.
const (
	// maxHeldBytes bounds the client messages held while resuming: audio
	// goes first, then the newest messages are dropped.
	maxHeldBytes = 8 << 20
	// endingWait is how long the upstream may take to close its socket
	// after an ending event the call may resume from.
	endingWait = time.Second
)

// resumer is a relay's resume state.
type resumer struct {
	obs  ResumeObserver
	opts ResumeOptions

	// active is set (under mu) while client messages are held, not written:
	// the upstream leg ended or is ending.
	active atomic.Bool
	mu     sync.Mutex
	// stopped: the session ended; no resume starts, and the one in
	// progress gives up (cancel stops its dial and replay).
	stopped bool
	cancel  context.CancelFunc
	// swallowed is the ending event kept from the client (scrubbed), sent
	// to it after all if the call does not resume.
	swallowed []byte
	// held are the client messages held; cur indexes the one in progress
	// (-1: none); skipping drops the rest of a message begun on the old leg.
	held      []heldMsg
	heldBytes int
	cur       int
	skipping  bool
	dropped   int
}

// heldMsg is one client message held while resuming, as received (masked).
type heldMsg struct {
	at        time.Time
	b         []byte
	done      bool
	droppable bool
}

// EnableResume makes the relay resume the call when its upstream leg ends
// (see ResumeObserver). Call it before Start: whether the upstream pump
// may park is decided there.
func (r *Relay) EnableResume(obs ResumeObserver, opts ResumeOptions) {
	if opts.Timeout <= 0 {
		opts.Timeout = fallbackWait
	}
	r.res = &resumer{obs: obs, opts: opts, cur: -1}
}

// Interrupt implements lifecycle.Interrupter: the client's messages are
// held from now on and the upstream pump's read fails at once, so the call
// resumes (if the session still agrees). It reports false when the relay
// does not resume calls.
func (r *Relay) Interrupt() bool {
	if r.res == nil {
		return false
	}
	r.res.startHolding()
	_ = r.leg(lifecycle.Upstream).conn.SetReadDeadline(time.Unix(1, 0))
	return true
}

// stop ends resuming for good (Shutdown): a resume in progress gives up,
// and one swapping legs has swapped them once this returns.
func (rs *resumer) stop() {
	rs.mu.Lock()
	rs.stopped = true
	if rs.cancel != nil {
		rs.cancel()
	}
	rs.mu.Unlock()
}

// startHolding makes the client pump hold its messages from now on.
func (rs *resumer) startHolding() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.startHoldingLocked()
}

func (rs *resumer) startHoldingLocked() {
	if rs.active.Load() || rs.stopped {
		return
	}
	rs.held, rs.heldBytes, rs.cur, rs.skipping, rs.dropped = nil, 0, -1, false, 0
	rs.active.Store(true)
}

// stopHolding drops what was held and lets the client pump write again
// (a resume that will not happen); it returns the ending event kept from
// the client, if any.
func (rs *resumer) stopHolding() (swallowed []byte) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	swallowed = rs.swallowed
	rs.held, rs.heldBytes, rs.cur, rs.skipping, rs.dropped, rs.swallowed = nil, 0, -1, false, 0, nil
	rs.active.Store(false)
	return swallowed
}

// closeResumes reports whether an upstream close frame with code is the
// server going away or failing, which a call resumes from (a close after
// an ending event kept from the client always is).
func closeResumes(code wsframe.CloseCode) bool {
	switch code {
	case wsframe.GoingAway, wsframe.InternalError, wsframe.ServiceRestart, wsframe.TryAgainLater:
		return true
	}
	return false
}

// swallow keeps an ending event from the client and holds the client's
// messages from now on; the upstream has endingWait to close its socket
// before the resume goes on without it.
func (r *Relay) swallow(msg []byte) {
	rs := r.res
	rs.mu.Lock()
	rs.swallowed = append([]byte(nil), msg...)
	rs.startHoldingLocked()
	rs.mu.Unlock()
	_ = r.leg(lifecycle.Upstream).conn.SetReadDeadline(time.Now().Add(endingWait))
}

// endingKept reports whether an ending event was kept from the client.
func (rs *resumer) endingKept() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.swallowed != nil
}

// hold keeps a client frame for the next upstream session while client
// messages are held; it reports whether it did. typ is the message's type
// (at its last frame), for Droppable.
func (rs *resumer) hold(frame []byte, fin bool, typ []byte) bool {
	if !rs.active.Load() {
		return false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.active.Load() {
		return false
	}
	rs.keepLocked(frame, fin, typ)
	return true
}

// lost handles a client frame whose write to the upstream leg failed: the
// leg ended, so client messages are held from now on and the upstream pump
// decides whether the call resumes. It reports false when failed is no
// longer the upstream leg (a resume replaced it): write the frame there.
func (rs *resumer) lost(r *Relay, failed *leg, frame []byte, fin bool, typ []byte) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r.leg(lifecycle.Upstream) != failed && !rs.active.Load() {
		return false
	}
	rs.startHoldingLocked()
	if rs.active.Load() {
		rs.keepLocked(frame, fin, typ)
	}
	return true
}

func (rs *resumer) keepLocked(frame []byte, fin bool, typ []byte) {
	now := time.Now()
	if rs.cur < 0 {
		if ws.OpCode(frame[0]&0x0f) == ws.OpContinuation || rs.skipping {
			// The rest of a message whose start went to the old upstream.
			rs.skipping = !fin
			if fin {
				rs.dropped++
			}
			return
		}
		rs.held = append(rs.held, heldMsg{at: now})
		rs.cur = len(rs.held) - 1
	}
	m := &rs.held[rs.cur]
	m.b = append(m.b, frame...)
	rs.heldBytes += len(frame)
	if fin {
		m.done, m.droppable = true, rs.obs.Droppable(typ)
		rs.cur = -1
	}
	rs.trimLocked(now)
}

// trimLocked drops the held audio older than Buffer; past maxHeldBytes,
// the oldest audio, then the newest whole messages.
func (rs *resumer) trimLocked(now time.Time) {
	cutoff := now.Add(-rs.opts.Buffer)
	kept := rs.held[:0]
	over := rs.heldBytes - maxHeldBytes
	for i, m := range rs.held {
		if m.done && m.droppable && (m.at.Before(cutoff) || over > 0) {
			over -= len(m.b)
			rs.heldBytes -= len(m.b)
			rs.dropped++
			continue
		}
		if i == rs.cur {
			rs.cur = len(kept)
		}
		kept = append(kept, m)
	}
	clear(rs.held[len(kept):])
	rs.held = kept
	for rs.heldBytes > maxHeldBytes && len(rs.held) > 0 && rs.held[len(rs.held)-1].done {
		last := rs.held[len(rs.held)-1]
		rs.heldBytes -= len(last.b)
		rs.dropped++
		rs.held = rs.held[:len(rs.held)-1]
	}
}

// flushLocked writes the held client messages to l, the new upstream leg,
// within timeout per 64 KiB, and ends holding: from now on the client pump
// writes to l. It reports the messages sent and dropped.
func (rs *resumer) flushLocked(l *leg, timeout time.Duration) (sent, dropped int, err error) {
	rs.trimLocked(time.Now())
	l.lock()
	defer l.unlockFlush()
	_ = l.conn.SetWriteDeadline(time.Now().Add(timeout * time.Duration(1+rs.heldBytes>>16)))
	for _, m := range rs.held {
		if err = l.writeLocked(m.b); err != nil {
			break
		}
		if m.done {
			sent++
		}
	}
	_ = l.conn.SetWriteDeadline(time.Time{})
	// A client message still coming goes on on l; the rest of one begun on
	// the old leg is dropped by the client pump (see pump.write).
	l.midMessage, l.skipRest = rs.cur >= 0, rs.skipping
	dropped = rs.dropped
	rs.held, rs.heldBytes, rs.cur, rs.dropped, rs.skipping, rs.swallowed = nil, 0, -1, 0, false, nil
	return sent, dropped, err
}

// upstreamLost resumes the call after its upstream leg ended, as the relay
// saw it, for cause; end ends the call as it would have ended without
// resuming, for the trigger the session counts. It reports whether the
// call goes on.
func (p *pump) upstreamLost(cause lifecycle.Trigger, end func(lifecycle.Trigger)) bool {
	rs := p.r.res
	rs.startHolding()
	trigger, ok := rs.obs.ResumeBegin(cause)
	if !ok {
		p.notResumed(trigger, end)
		return false
	}
	return p.resume(trigger, end)
}

// notResumed ends a call that does not resume: the ending event kept from
// the client reaches it after all, then the call ends as it would have.
func (p *pump) notResumed(trigger lifecycle.Trigger, end func(lifecycle.Trigger)) {
	if swallowed := p.r.res.stopHolding(); swallowed != nil && !p.dst.midMessage {
		_ = p.relayOwn(swallowed, false)
	}
	end(trigger)
}

// endUpstream ends the session as an upstream leg that ended for trigger
// (read error err, or close frame cl) would without resuming.
func (p *pump) endUpstream(trigger lifecycle.Trigger, cl *peerClose, err error) {
	switch {
	case trigger == lifecycle.TriggerUpstreamHeartbeatTimeout:
		p.r.obs.End(lifecycle.ReasonUpstreamHeartbeatTimeout)
	case trigger == lifecycle.TriggerFatalEvent:
		p.r.obs.End(lifecycle.ReasonUpstreamFatalEvent)
	case cl != nil:
		p.r.obs.CloseReceived(lifecycle.Upstream, cl.code, cl.reason)
	default:
		p.r.obs.LegError(lifecycle.Upstream, err)
	}
}

// resume carries the call over to a new upstream session (the session
// agreed). It reports whether the call goes on.
func (p *pump) resume(trigger lifecycle.Trigger, end func(lifecycle.Trigger)) bool {
	rs := p.r.res
	rec := lifecycle.Resume{Trigger: trigger, Start: time.Now(), From: rs.obs.Upstream()}
	if p.dst.midMessage {
		// The client is in the middle of an upstream message that will
		// never end: the call cannot go on cleanly.
		return p.resumeFailed(rec, "the upstream ended in the middle of a message to the client", end)
	}
	p.releaseBuffers()
	p.src.rd.release()
	p.src.close()
	ctx, ok := rs.startAttempt()
	if !ok {
		return false // the session ended
	}
	defer rs.endAttempt()
	interrupted, replay := rs.obs.ResumePlan()
	for _, m := range interrupted {
		if err := p.relayOwn(m, true); err != nil {
			return p.resumeFailed(rec, "client: "+err.Error(), end)
		}
	}
	nl, err := p.redial(ctx, &rec, replay)
	if err != nil {
		return p.resumeFailed(rec, err.Error(), end)
	}
	if err := p.replay(ctx, nl, replay); err != nil {
		nl.close()
		return p.resumeFailed(rec, "replay: "+err.Error(), end)
	}
	n, ok := p.swap(nl, &rec, replay.Items)
	if !ok {
		return false
	}
	notice := rs.obs.ResumeNotice(dialect.ResumeNotice{Resumes: n, Trigger: string(rec.Trigger),
		HistoryItems: rec.HistoryItems, BufferedMessages: rec.Buffered, DroppedMessages: rec.Dropped})
	if notice != nil {
		_ = p.relayOwn(notice, false) // a failed client leg is found out by its pump
	}
	return true
}

// startAttempt begins a resume's dial and replay unless the session ended;
// ctx ends with the session.
func (rs *resumer) startAttempt() (context.Context, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.stopped {
		return nil, false
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	return ctx, true
}

func (rs *resumer) endAttempt() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.cancel != nil {
		rs.cancel()
		rs.cancel = nil
	}
}

// redial dials the new upstream session; its first event is kept from the
// client (it has its session), but the session learns the new id from it.
func (p *pump) redial(ctx context.Context, rec *lifecycle.Resume, replay dialect.Replay) (*leg, error) {
	up, err := p.r.res.opts.Dial(ctx, rec.Trigger, rec.From, replay.Start)
	rec.Dials = dialOutcome(up, err)
	if err != nil {
		return nil, err
	}
	rec.Upstream = up.Upstream.Name
	nl := newLeg(up.Net, up.BR, false, p.src.rd.base)
	nl.heard.Store(int64(time.Since(nl.rd.base)))
	if up.FirstType != "" {
		p.r.obs.Captured([]byte(up.FirstType), up.FirstPayload)
	}
	return nl, nil
}

// swap makes nl the call's upstream leg, sending it the held client
// messages first, and records the resume. It reports the call's resume
// count, or false when the session ended meanwhile (nl is closed).
func (p *pump) swap(nl *leg, rec *lifecycle.Resume, items int) (int, bool) {
	r, rs := p.r, p.r.res
	rs.mu.Lock()
	if rs.stopped {
		rs.mu.Unlock()
		nl.close()
		return 0, false
	}
	var err error
	rec.Buffered, rec.Dropped, err = rs.flushLocked(nl, r.opts.CloseWriteTimeout)
	r.legs[lifecycle.Upstream].Store(nl)
	rec.Result, rec.Gap, rec.HistoryItems = lifecycle.ResumeOK, time.Since(rec.Start), items
	n := rs.obs.Resumed(*rec)
	rs.active.Store(false)
	rs.mu.Unlock()
	p.src, p.st, p.started = nl, frameState{}, false
	if err != nil {
		// The new leg failed at once: the next read finds out.
		_ = nl.conn.SetReadDeadline(time.Unix(1, 0))
	}
	return n, true
}

// resumeFailed ends a resume that found no upstream to take the call
// over: it is recorded, and the call ends as it would have (notResumed);
// a session that ended meanwhile is not a failure.
func (p *pump) resumeFailed(rec lifecycle.Resume, why string, end func(lifecycle.Trigger)) bool {
	if p.r.ended.Load() {
		p.r.res.stopHolding()
		return false
	}
	rec.Result, rec.Err = lifecycle.ResumeFailed, p.r.opts.Redactor.Redact(why)
	p.r.res.obs.ResumeFailed(rec)
	p.notResumed(rec.Trigger, end)
	return false
}

// relayOwn writes a whole text message tether originates to the client,
// between upstream messages; asUpstream also reports it to the session as
// an upstream event (an answer finished on the old upstream's behalf).
func (p *pump) relayOwn(msg []byte, asUpstream bool) error {
	p.started = false
	if err := p.writeMessage(msg, true); err != nil {
		return err
	}
	p.started = false
	if asUpstream {
		p.r.obs.Frame(lifecycle.UpstreamToClient, int64(len(msg)))
		if typ := messageType(msg); typ != "" {
			p.r.obs.Event(lifecycle.UpstreamToClient, []byte(typ), nil)
			if p.r.obs.Capture([]byte(typ)) {
				p.r.obs.Captured([]byte(typ), msg)
			}
		}
	}
	return nil
}

// replay gives the new upstream session the call's replay and reads its
// answers, within ResumeOptions.Timeout and while the session lasts.
func (p *pump) replay(ctx context.Context, l *leg, rp dialect.Replay) error {
	if len(rp.Messages) == 0 {
		return nil
	}
	deadline := time.Now().Add(p.r.res.opts.Timeout)
	_ = l.conn.SetDeadline(deadline)
	defer l.conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = l.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	l.lock()
	for _, m := range rp.Messages {
		if err := l.writeFrameLocked(ws.OpText, m); err != nil {
			l.unlock()
			return err
		}
	}
	l.unlockFlush()
	if rp.Acks == nil {
		return nil
	}
	return p.awaitAcks(l, rp.Acks)
}

// awaitAcks reads the new upstream session's messages until the replay is
// answered: its answers are kept from the client, an error event that is
// not one fails the replay, anything else is relayed.
func (p *pump) awaitAcks(l *leg, acks dialect.ReplayAcks) error {
	var st frameState
	var msg []byte
	for {
		h, err := readHeader(&l.rd, l.hdr[:])
		if err != nil {
			return err
		}
		if err := st.checkHeader(h, false, p.r.opts.MaxFrameBytes); err != nil {
			return err
		}
		if h.OpCode.IsControl() {
			if err := answerControl(l, h); err != nil {
				return err
			}
			continue
		}
		if int64(len(msg))+h.Length > captureMax {
			return errors.New("an upstream message over the capture bound during the replay")
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(&l.rd, msg[start:]); err != nil {
			return err
		}
		if !h.Fin {
			continue
		}
		if st.text {
			typ := messageType(msg)
			swallow, done := acks.Ack([]byte(typ), msg)
			if !swallow && typ == dialect.ErrorType {
				// Not an answer to the replay: the new session is failing
				// (it expired, or a fatal error): it does not carry the call.
				return errors.New("the new upstream session sent an error event during the replay")
			}
			if !swallow {
				if err := p.relayOwn(scrubJSON(p.r.opts.Redactor, msg), true); err != nil {
					return fmt.Errorf("client: %w", err)
				}
			}
			if done {
				return nil
			}
		}
		msg = msg[:0]
	}
}

// answerControl reads a control frame from l during the replay: a ping is
// answered, a close fails the replay.
func answerControl(l *leg, h ws.Header) error {
	var c ctlBuf
	b := c[:h.Length]
	if _, err := io.ReadFull(&l.rd, b); err != nil {
		return err
	}
	switch h.OpCode {
	case ws.OpPing:
		return l.sendControl(ws.OpPong, b)
	case ws.OpClose:
		code, _, _ := wsframe.ParseClose(b)
		return fmt.Errorf("the new upstream session closed (%d) before answering the replay", code)
	}
	return nil
}

// messageType decodes a JSON message's type ("" when it has none).
func messageType(msg []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(msg, &ev)
	return ev.Type
}

var (
	_ ResumeObserver        = (*lifecycle.Session)(nil)
	_ lifecycle.Interrupter = (*Relay)(nil)
)
