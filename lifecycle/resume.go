package lifecycle

import (
	"cmp"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tetherproxy/tether/dialect"
)

// ResumeOptions configure carrying a call over to a new upstream session
// when its upstream ends it (lifecycle.resume; defaults live in package config).
type ResumeOptions struct {
	Enabled bool
	// On lists the upstream endings that resume the call.
	On []Trigger
	// MaxResumes bounds the resumes of one call.
	MaxResumes int
	// History bounds the text history a call keeps for its next upstream session.
	History dialect.HistoryBounds
	// Buffer is how much of the client's audio (by arrival time) is held
	// while resuming and sent to the new upstream session.
	Buffer time.Duration
	// Notify sends the client a tether.session.resumed event after a resume.
	Notify bool
}

// Trigger is why an upstream session ended under a call that may resume
// (lifecycle.resume.on, the tether_resumes_total{trigger} label).
type Trigger string

// Resume triggers.
const (
	// TriggerExpired: the provider's duration cap (Realtime session_expired,
	// GPT-Live session.closed reason expired).
	TriggerExpired Trigger = "expired"
	// TriggerUpstreamError: the upstream socket failed or closed with a
	// server-side failure code (1001, 1006, 1011, 1012, 1013).
	TriggerUpstreamError Trigger = "upstream_error"
	// TriggerUpstreamHeartbeatTimeout: the upstream leg failed its liveness check.
	TriggerUpstreamHeartbeatTimeout Trigger = "upstream_heartbeat_timeout"
	// TriggerFatalEvent: an error event whose code is in fatal_upstream_errors.
	TriggerFatalEvent Trigger = "fatal_event"
)

// AllTriggers lists every trigger (the default of lifecycle.resume.on).
var AllTriggers = []Trigger{TriggerExpired, TriggerUpstreamError, TriggerUpstreamHeartbeatTimeout, TriggerFatalEvent}

// Resume results (the tether_resumes_total{result} label).
const (
	// ResumeOK: the call goes on on a new upstream session.
	ResumeOK = "ok"
	// ResumeFailed: no upstream took the call over (dial or replay failed);
	// the call ended with the original reason.
	ResumeFailed = "failed"
	// ResumeExhausted: the call had resumed max_resumes times already; it
	// ended with the original reason.
	ResumeExhausted = "exhausted"
)

// Resume is one attempt to carry a call over (Hooks.SessionResumed).
type Resume struct {
	Trigger Trigger
	Result  string
	// From is the upstream whose session ended; Upstream the one that took
	// the call over ("" when none did).
	From, Upstream string
	// Dials are the attempt's upstream dials, in order.
	Dials []Dial
	// Start is when the old upstream session ended (as tether saw it).
	Start time.Time
	// Gap is from Start to the first message relayed from the new upstream
	// session being possible (the replay answered).
	Gap time.Duration
	// Resumes counts the call's successful resumes, this one included.
	Resumes int
	// HistoryItems is how many history entries were replayed.
	HistoryItems int
	// Buffered and Dropped count the client messages held while resuming:
	// sent to the new upstream session, and dropped over the buffer.
	Buffered, Dropped int
	// Err says why a failed attempt failed (redacted).
	Err string
}

// UpstreamPart is one upstream session of a call: a call that resumed has
// several, and its usage is their sum.
type UpstreamPart struct {
	Upstream     string        `json:"upstream"`
	Conversation string        `json:"conversation_id,omitempty"`
	Tokens       Tokens        `json:"tokens"`
	AudioSeconds float64       `json:"audio_seconds,omitempty"`
	Duration     time.Duration `json:"-"`
	// Ended is why this upstream session ended ("" for the last one).
	Ended Trigger `json:"ended,omitempty"`
}

// Interrupter is a Transport that can give up its upstream leg so the
// call resumes on a new upstream session (the relay implements it).
type Interrupter interface {
	// Interrupt makes the relay give up the upstream leg at once and ask
	// ResumeBegin; false means the relay does not resume calls.
	Interrupt() bool
}

// resumeState is the side of resuming of a session that can resume
// (guarded by Session.mu, but for mem, which memMu guards). A session that
// cannot (resume off, or a dialect that cannot carry a call over) has none.
type resumeState struct {
	// mem is what the call keeps to resume (never nil).
	mem   dialect.Memory
	memMu sync.Mutex
	on    map[Trigger]bool
	// pending is the trigger of an ending kept from the client (Swallow)
	// or of tether's own interrupt (a heartbeat timeout, a fatal event):
	// its effects wait for ResumeBegin's answer and the resume's outcome.
	pending Trigger
	// suppressedEnd is the upstream's own end reason (UpstreamEnded) held
	// back while a resume is pending or in progress; fatalHeld: a fatal
	// error event's end was held back (a call that does not resume then
	// ends as upstream_fatal_event when its upstream leg goes).
	suppressedEnd string
	fatalHeld     bool
	// count is the call's successful resumes; exhausted is set once a
	// resume was refused for max_resumes (reported once).
	count     int
	exhausted bool
	// parts are the upstream sessions that ended under the call;
	// partTokens, partAudio and partStart are the call's usage when the
	// current one started. ending is the old upstream session's part while
	// a resume is in progress, and endTokens and endAudio the usage then.
	parts      []UpstreamPart
	partTokens Tokens
	partAudio  float64
	partStart  time.Time
	ending     UpstreamPart
	endTokens  Tokens
	endAudio   float64
}

// initResume gives the session its resume state if the call can resume
// (Manager.Open); s.res stays nil otherwise, and never changes after.
func (s *Session) initResume() {
	o := s.mgr.opts.Resume
	if !o.Enabled {
		return
	}
	r, ok := s.dialect.(dialect.Resumable)
	if !ok {
		return
	}
	res := &resumeState{mem: r.NewMemory(o.History), on: make(map[Trigger]bool, len(o.On)), partStart: s.StartedAt}
	for _, t := range o.On {
		res.on[t] = true
	}
	s.res = res
}

// Resumable reports whether the call can resume on a new upstream session.
func (s *Session) Resumable() bool { return s.res != nil }

// Upstream is the name of the upstream serving the call now.
func (s *Session) Upstream() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upstream
}

// ResumeBuffer is how much client audio is held while the call resumes.
func (s *Session) ResumeBuffer() time.Duration { return s.mgr.opts.Resume.Buffer }

// withMemory runs f on the call's memory, if it has one.
func (s *Session) withMemory(f func(m dialect.Memory)) {
	if s.res == nil {
		return
	}
	s.res.memMu.Lock()
	defer s.res.memMu.Unlock()
	f(s.res.mem)
}

// CaptureClient reports whether a client message of type typ is to be
// captured whole for ClientCaptured (the call's memory wants it).
func (s *Session) CaptureClient(typ []byte) bool {
	return s.res != nil && s.res.mem.CaptureClient(typ)
}

// ClientCaptured hands a captured client message (unmasked, after it was
// forwarded) to the call's memory; the handler also hands it GPT-Live's
// session.start. The payload is not retained.
func (s *Session) ClientCaptured(typ, payload []byte) {
	s.withMemory(func(m dialect.Memory) { m.Client(typ, payload) })
}

// captureUpstream reports whether the memory wants an upstream message.
func (s *Session) captureUpstream(typ []byte) bool {
	return s.res != nil && s.res.mem.CaptureUpstream(typ)
}

// holdUpstream reports whether the memory wants an upstream message held.
func (s *Session) holdUpstream(typ []byte) bool { return s.res != nil && s.res.mem.Hold(typ) }

// Droppable reports whether a held client message of type typ may be
// dropped when the audio held while resuming overflows its bound.
func (s *Session) Droppable(typ []byte) bool { return s.res != nil && s.res.mem.Droppable(typ) }

// mayResume reports whether the call would resume for trigger now. A call
// refused only because it resumed max_resumes times already is reported
// once (result exhausted).
func (s *Session) mayResume(trigger Trigger) bool {
	if s.res == nil || !s.res.on[trigger] || s.ended.Load() || s.mgr.Draining() {
		return false
	}
	closing := false
	s.withMemory(func(m dialect.Memory) { closing = m.Closing() })
	if closing {
		return false // the client is ending the call
	}
	s.mu.Lock()
	if e := s.ending; e != nil && (e.boundaryPending || e.upstreamEnd != "") {
		// Ending anyway, or the upstream ended the call on purpose.
		s.mu.Unlock()
		return false
	}
	if s.res.count < s.mgr.opts.Resume.MaxResumes {
		s.mu.Unlock()
		return true
	}
	report := !s.res.exhausted
	s.res.exhausted = true
	from := s.upstream
	s.mu.Unlock()
	if report {
		s.log.Info("call not resumed: max_resumes reached", "session", s.ID, "trigger", string(trigger))
		s.resumeHooks(Resume{Trigger: trigger, Result: ResumeExhausted, From: from, Start: time.Now()})
	}
	return false
}

// Swallow is asked about each whole upstream message held before it
// reaches the client (error events, and what the memory holds). It reports
// whether the message ends the upstream session in a way the call resumes
// from: then the message is kept from the client, and its effects (the
// upstream's end, a fatal error) wait for the resume's outcome.
func (s *Session) Swallow(typ, payload []byte) bool {
	var code string
	var expired, ends bool
	s.withMemory(func(m dialect.Memory) { code, expired, ends = m.Ending(typ, payload) })
	if !ends {
		return false
	}
	trigger := TriggerExpired
	if !expired {
		if code == "" || !s.mgr.fatal[code] {
			return false
		}
		trigger = TriggerFatalEvent
	}
	if !s.mayResume(trigger) {
		return false
	}
	s.mu.Lock()
	s.res.pending = trigger
	s.mu.Unlock()
	return true
}

// pendingResume reports the trigger of an ending kept from the client, if any.
func (s *Session) pendingResume() Trigger {
	if s.res == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res.pending
}

// ResumeBegin is asked by the relay, once, when the upstream leg ended
// (cause is what the relay saw: upstream_error). It returns the trigger
// the ending counts as (the pending one, if any) and whether the call
// resumes: from then until Resumed or ResumeFailed, the upstream leg's
// failures are the relay's to handle. A refusal applies what the pending
// ending held back. A call that resumed max_resumes times already is
// reported (result exhausted) and refused.
func (s *Session) ResumeBegin(cause Trigger) (Trigger, bool) {
	trigger := cmp.Or(s.pendingResume(), cause)
	if !s.mayResume(trigger) {
		if s.res == nil {
			return trigger, false
		}
		s.mu.Lock()
		suppressed := s.res.suppressedEnd
		s.res.pending, s.res.suppressedEnd = "", ""
		s.mu.Unlock()
		if suppressed != "" {
			s.UpstreamEnded(suppressed)
		}
		return trigger, false
	}
	// The old upstream session ends here: what it used is its part.
	s.mu.Lock()
	s.res.ending = s.currentPart(time.Now(), trigger)
	s.res.endTokens, s.res.endAudio = s.tokens, s.audioSeconds
	s.mu.Unlock()
	s.resuming.Store(true)
	return trigger, true
}

// ResumePlan returns, for a resume that began, the messages that finish
// the answers the old upstream session left unfinished (the relay sends
// them to the client and reports them as upstream events) and what the new
// upstream session is given.
func (s *Session) ResumePlan() (interrupted [][]byte, replay dialect.Replay) {
	s.withMemory(func(m dialect.Memory) {
		interrupted = m.Interrupted()
		replay = m.Replay()
	})
	return interrupted, replay
}

// ResumeNotice returns the event the client gets after a resume, or nil
// when lifecycle.resume.notify is off.
func (s *Session) ResumeNotice(n dialect.ResumeNotice) []byte {
	if !s.mgr.opts.Resume.Notify {
		return nil
	}
	var out []byte
	s.withMemory(func(m dialect.Memory) { out = m.Notice(n) })
	return out
}

// Resumed records a successful resume: the call goes on on the upstream
// r.Upstream. The ended upstream session becomes one of the call's parts,
// and the new one's own counts start from zero. The relay calls it once
// the new upstream leg carries the call (and the new session's first
// event was reported through Captured).
func (s *Session) Resumed(r Resume) int {
	s.mu.Lock()
	s.res.parts = append(s.res.parts, s.res.ending)
	s.res.partTokens, s.res.partAudio, s.res.partStart = s.res.endTokens, s.res.endAudio, r.Start.Add(r.Gap)
	s.upAudio = 0
	s.res.fatalHeld = false
	s.res.count++
	r.Resumes = s.res.count
	s.upstream = r.Upstream
	s.res.pending, s.res.suppressedEnd = "", ""
	s.mu.Unlock()
	// The old upstream heard the caller start speaking; the new one did not.
	s.speaking.Store(false)
	s.resuming.Store(false)
	s.log.Info("call resumed on a new upstream session", "session", s.ID, "trigger", string(r.Trigger),
		"from", r.From, "upstream", r.Upstream, "resumes", r.Resumes, "gap_ms", r.Gap.Milliseconds(),
		"history_items", r.HistoryItems, "buffered", r.Buffered, "dropped", r.Dropped)
	s.resumeHooks(r)
	return r.Resumes
}

// ResumeFailed records a resume that began but found no upstream to take
// the call over. The effects held back while it was pending (the
// upstream's own end) apply now; the relay then ends the call as it would
// have without resuming.
func (s *Session) ResumeFailed(r Resume) {
	s.mu.Lock()
	suppressed := s.res.suppressedEnd
	s.res.pending, s.res.suppressedEnd = "", ""
	r.Resumes = s.res.count
	s.mu.Unlock()
	s.resuming.Store(false)
	s.log.Warn("call could not resume", "session", s.ID, "trigger", string(r.Trigger), "from", r.From, "err", r.Err)
	s.resumeHooks(r)
	if suppressed != "" {
		s.UpstreamEnded(suppressed)
	}
}

func (s *Session) resumeHooks(r Resume) {
	if r.From == "" {
		r.From = s.Upstream()
	}
	for _, h := range s.mgr.opts.Hooks {
		h.SessionResumed(s, r)
	}
}

// currentPart is the upstream session serving a call that can resume, as
// a part ended by trigger ("" for the last one). Called with mu held.
func (s *Session) currentPart(now time.Time, trigger Trigger) UpstreamPart {
	t := s.tokens
	t.Sub(s.res.partTokens)
	return UpstreamPart{Upstream: s.upstream, Conversation: s.conversation, Tokens: t,
		AudioSeconds: s.audioSeconds - s.res.partAudio, Duration: now.Sub(s.res.partStart), Ended: trigger}
}

// interrupt gives up the upstream leg so the call resumes for trigger,
// when it may; it reports whether it did.
func (s *Session) interrupt(trigger Trigger) bool {
	if !s.mayResume(trigger) {
		return false
	}
	s.mu.Lock()
	t, prev := s.t, s.res.pending
	if prev == "" {
		s.res.pending = trigger
	}
	s.mu.Unlock()
	if in, ok := t.(Interrupter); ok && in.Interrupt() {
		return true
	}
	s.mu.Lock()
	s.res.pending = prev
	s.mu.Unlock()
	return false
}

// partsAttr renders a call's upstream sessions for the end-of-session log
// line: "upstream/conversation in=N out=N audio_s=S", separated by "; ".
func partsAttr(parts []UpstreamPart) string {
	if len(parts) == 0 {
		return ""
	}
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s/%s in=%d out=%d audio_s=%.1f", p.Upstream, p.Conversation, p.Tokens.Input, p.Tokens.Output, p.AudioSeconds)
	}
	return b.String()
}
