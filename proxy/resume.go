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
// call the caller did not end, the upstream pump carries the call over to a
// new upstream session: it finishes the answers the old session left
// unfinished for the client, dials again, gives the new session the call's
// replay and swallows the answers to it, then sends on the client messages
// held meanwhile and relays on. The client pump never waits: while a resume
// is in progress it holds the client's messages (the most recent
// ResumeOptions.Buffer of audio, everything else whole) instead of writing
// them. If no upstream takes the call over, the call ends as it would have
// without resuming.

// ResumeObserver is the session's side of resuming; *lifecycle.Session
// implements it.
type ResumeObserver interface {
	// CaptureClient and ClientCaptured: client messages the call keeps.
	CaptureClient(typ []byte) bool
	ClientCaptured(typ, payload []byte)
	// Swallow: a held upstream message ends the upstream session and the
	// call resumes from it, so the client does not see it.
	Swallow(typ, payload []byte) bool
	// ResumeBegin: the upstream leg ended; whether the call resumes.
	ResumeBegin(trigger lifecycle.Trigger) bool
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
	// maxHeldBytes bounds the client messages held while resuming, whatever
	// their kind.
	maxHeldBytes = 8 << 20
	// endingWait is how long the upstream may take to close its socket
	// after an ending event the call resumes from.
	endingWait = time.Second
)

// resumer is a relay's resume state.
type resumer struct {
	obs  ResumeObserver
	opts ResumeOptions
	// ctx is cancelled when the session ends: a dial in progress gives up.
	ctx    context.Context
	cancel context.CancelFunc

	// active is set (under mu) while a resume is in progress: client
	// messages are held, not written.
	active atomic.Bool
	mu     sync.Mutex
	// trigger and began describe the resume in progress.
	trigger lifecycle.Trigger
	began   time.Time
	// interrupt is the trigger of Relay.Interrupt, for the read it fails.
	interrupt lifecycle.Trigger
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
// (see ResumeObserver). Call it before Run.
func (r *Relay) EnableResume(obs ResumeObserver, opts ResumeOptions) {
	ctx, cancel := context.WithCancel(context.Background())
	r.res = &resumer{obs: obs, opts: opts, ctx: ctx, cancel: cancel, cur: -1}
}

// Interrupt implements lifecycle.Interrupter: the upstream pump's read
// fails at once and the call resumes for trigger.
func (r *Relay) Interrupt(trigger lifecycle.Trigger) {
	rs := r.res
	if rs == nil {
		return
	}
	rs.mu.Lock()
	if rs.interrupt == "" {
		rs.interrupt = trigger
	}
	rs.mu.Unlock()
	_ = r.leg(lifecycle.Upstream).conn.SetReadDeadline(time.Unix(1, 0))
}

// begin starts a resume for trigger unless one is in progress; it reports
// whether one is in progress now. A trigger from Interrupt or a swallowed
// ending event wins over the one given.
func (rs *resumer) begin(trigger lifecycle.Trigger) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.active.Load() {
		return true
	}
	if rs.interrupt != "" {
		trigger = rs.interrupt
	}
	if !rs.obs.ResumeBegin(trigger) {
		return false
	}
	rs.trigger, rs.began = trigger, time.Now()
	rs.held, rs.heldBytes, rs.cur, rs.skipping, rs.dropped = nil, 0, -1, false, 0
	rs.active.Store(true)
	return true
}

// readTrigger is the trigger of a failed upstream read.
func (rs *resumer) readTrigger() lifecycle.Trigger {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return cmpTrigger(rs.interrupt, lifecycle.TriggerUpstreamError)
}

func cmpTrigger(a, b lifecycle.Trigger) lifecycle.Trigger {
	if a != "" {
		return a
	}
	return b
}

// closeResumes reports whether an upstream close frame with code is a
// failure a call resumes from: the server went away or failed (a close
// after an ending event the call resumes from always is).
func closeResumes(code wsframe.CloseCode) bool {
	switch code {
	case wsframe.GoingAway, wsframe.InternalError, wsframe.ServiceRestart, wsframe.TryAgainLater:
		return true
	}
	return false
}

// swallow keeps an ending event from the client; the upstream then has
// endingWait to close its socket before the resume goes on without it.
func (r *Relay) swallow(msg []byte) {
	rs := r.res
	rs.mu.Lock()
	rs.swallowed = append([]byte(nil), msg...)
	rs.mu.Unlock()
	_ = r.leg(lifecycle.Upstream).conn.SetReadDeadline(time.Now().Add(endingWait))
}

// hold keeps a client frame for the next upstream session while a resume
// is in progress; it reports whether it did. typ is the message's type
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
	now := time.Now()
	if rs.cur < 0 {
		if ws.OpCode(frame[0]&0x0f) == ws.OpContinuation || rs.skipping {
			// The rest of a message whose start went to the old upstream.
			rs.skipping = !fin
			if fin {
				rs.dropped++
			}
			return true
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
	return true
}

// trimLocked drops the held audio older than Buffer, and the oldest audio
// while more than maxHeldBytes are held.
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
}

// flushLocked writes the held client messages to l, the new upstream leg,
// and ends holding: from now on the client pump writes to l. It reports
// the messages sent and dropped.
func (rs *resumer) flushLocked(l *leg, timeout time.Duration) (sent, dropped int, err error) {
	rs.trimLocked(time.Now())
	l.lock()
	defer l.unlock()
	for _, m := range rs.held {
		if err == nil {
			_ = l.conn.SetWriteDeadline(time.Now().Add(timeout * time.Duration(1+len(m.b)>>16)))
			err = l.writeLocked(m.b)
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
	rs.held, rs.heldBytes, rs.cur, rs.dropped, rs.skipping = nil, 0, -1, 0, false
	rs.interrupt, rs.swallowed = "", nil
	return sent, dropped, err
}

// endingSeen reports whether an ending event was kept from the client.
func (rs *resumer) endingSeen() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.swallowed != nil
}

// upstreamLost resumes the call after its upstream leg ended (trigger);
// fallback ends the call as it would have ended without resuming. It
// reports whether the call goes on.
func (p *pump) upstreamLost(trigger lifecycle.Trigger, fallback func()) bool {
	if p.r.res == nil || !p.r.res.begin(trigger) {
		fallback()
		return false
	}
	return p.resume(fallback)
}

// resume carries the call over to a new upstream session (a resume began).
func (p *pump) resume(fallback func()) bool {
	r, rs := p.r, p.r.res
	rs.mu.Lock()
	rec := lifecycle.Resume{Trigger: rs.trigger, Start: rs.began, From: rs.obs.Upstream()}
	rs.mu.Unlock()
	if p.dst.midMessage {
		// The client is in the middle of an upstream message that will
		// never end: the call cannot go on cleanly.
		return p.resumeFailed(rec, "the upstream ended in the middle of a message to the client", fallback)
	}
	old := p.src
	p.releaseBuffers()
	old.rd.release()
	old.close()
	interrupted, replay := rs.obs.ResumePlan()
	for _, m := range interrupted {
		if err := p.relayOwn(m, true); err != nil {
			return p.resumeFailed(rec, "client: "+err.Error(), fallback)
		}
	}
	up, err := rs.opts.Dial(rs.ctx, rec.Trigger, rec.From, replay.Start)
	var de *upstreams.DialError
	switch {
	case err == nil:
		rec.Dials = dialRecords(up.Attempts)
	case errors.As(err, &de):
		rec.Dials = dialRecords(de.Attempts)
	}
	if err != nil {
		return p.resumeFailed(rec, err.Error(), fallback)
	}
	nl := newLeg(up.Net, up.BR, false, old.base)
	nl.heard.Store(int64(time.Since(nl.base)))
	if up.FirstType != "" {
		// Swallowed: the client has its session; the call learns the new id.
		r.obs.Captured([]byte(up.FirstType), up.FirstPayload)
	}
	if err := p.replay(nl, replay); err != nil {
		nl.close()
		return p.resumeFailed(rec, "replay: "+err.Error(), fallback)
	}
	rec.Upstream = up.Upstream.Name
	rs.mu.Lock()
	if r.ended.Load() {
		rs.mu.Unlock()
		nl.close()
		return false
	}
	var ferr error
	rec.Buffered, rec.Dropped, ferr = rs.flushLocked(nl, r.opts.CloseWriteTimeout)
	r.legs[lifecycle.Upstream].Store(nl)
	rec.Result, rec.Gap, rec.HistoryItems = lifecycle.ResumeOK, time.Since(rec.Start), len(replay.Messages)
	if replay.Start != nil {
		rec.HistoryItems = historyItems(replay.Start)
	} else if rec.HistoryItems > 0 {
		rec.HistoryItems-- // the session.update
	}
	n := rs.obs.Resumed(rec)
	rs.active.Store(false)
	rs.mu.Unlock()
	p.src, p.st, p.started = nl, frameState{}, false
	if ferr != nil {
		// The new leg failed at once: the next read finds out.
		_ = nl.conn.SetReadDeadline(time.Unix(1, 0))
	}
	notice := rs.obs.ResumeNotice(dialect.ResumeNotice{Resumes: n, Trigger: string(rec.Trigger),
		UpstreamSessionID: conversationOf(up), HistoryItems: rec.HistoryItems,
		BufferedMessages: rec.Buffered, DroppedMessages: rec.Dropped})
	if notice != nil {
		_ = p.relayOwn(notice, false) // a failed client leg is found out by its pump
	}
	return true
}

// resumeFailed ends a resume that found no upstream: the ending event kept
// from the client reaches it after all, then the call ends as it would
// have (fallback).
func (p *pump) resumeFailed(rec lifecycle.Resume, why string, fallback func()) bool {
	r, rs := p.r, p.r.res
	rs.mu.Lock()
	swallowed := rs.swallowed
	rs.held, rs.heldBytes, rs.cur, rs.dropped, rs.swallowed, rs.interrupt = nil, 0, -1, 0, nil, ""
	rs.active.Store(false)
	rs.mu.Unlock()
	rec.Result, rec.Err = lifecycle.ResumeFailed, r.opts.Redactor.Redact(why)
	if swallowed != nil && !p.dst.midMessage {
		_ = p.relayOwn(swallowed, false)
	}
	rs.obs.ResumeFailed(rec)
	fallback()
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
// answers (swallowed; anything else is relayed to the client), within
// ResumeOptions.Timeout.
func (p *pump) replay(l *leg, rp dialect.Replay) error {
	if len(rp.Messages) == 0 {
		return nil
	}
	timeout := p.r.res.opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	deadline := time.Now().Add(timeout)
	_ = l.conn.SetWriteDeadline(deadline)
	l.lock()
	for _, m := range rp.Messages {
		if err := l.writeFrameLocked(ws.OpText, m); err != nil {
			l.unlock()
			return err
		}
	}
	l.unlock()
	_ = l.conn.SetWriteDeadline(time.Time{})
	if rp.Acks == nil {
		return nil
	}
	_ = l.conn.SetReadDeadline(deadline)
	defer l.conn.SetReadDeadline(time.Time{})
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
			var c ctlBuf
			b := c[:h.Length]
			if _, err := io.ReadFull(&l.rd, b); err != nil {
				return err
			}
			switch h.OpCode {
			case ws.OpPing:
				_ = l.sendControl(ws.OpPong, b)
			case ws.OpClose:
				code, _, _ := wsframe.ParseClose(b)
				return fmt.Errorf("the new upstream session closed (%d) before answering the replay", code)
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
			swallow, done := rp.Acks.Ack([]byte(typ), msg)
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

// messageType decodes a JSON message's type ("" when it has none).
func messageType(msg []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(msg, &ev)
	return ev.Type
}

// historyItems counts the history a GPT-Live start replays (session.input).
func historyItems(start []byte) int {
	var ev struct {
		Session struct {
			Input []json.RawMessage `json:"input"`
		} `json:"session"`
	}
	_ = json.Unmarshal(start, &ev)
	return len(ev.Session.Input)
}

// conversationOf is the upstream session id in a dialed conn's first event.
func conversationOf(up *upstreams.Conn) string {
	var ev struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
	}
	_ = json.Unmarshal(up.FirstPayload, &ev)
	return ev.Session.ID
}

var (
	_ ResumeObserver        = (*lifecycle.Session)(nil)
	_ lifecycle.Interrupter = (*Relay)(nil)
)
