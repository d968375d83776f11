package lifecycle

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// Transport is what a session needs from the relay that carries it. The
// relay (package proxy) implements it; lifecycle never imports the relay.
type Transport interface {
	// Ping sends a ping on leg at a frame boundary: now, or right after the
	// fragment in flight on that leg. It does not block.
	Ping(leg Leg) error
	// Liveness reports when leg's peer last sent bytes (any part of any
	// frame) and, while a write to leg is in progress, when it began (the
	// zero time between writes). Bytes tether wrote prove nothing about the
	// peer and never count.
	Liveness(leg Leg) (heard, writing time.Time)
	// Shutdown sends the given close frames (best effort, bounded in time),
	// then closes both legs once their peers answer or a short linger passes.
	// It reports which close frames were written (index Leg). It is called
	// exactly once per session.
	Shutdown(client, upstream CloseFrame) (sent [2]bool)
	// BeginClose writes msg upstream as a text message at a frame boundary
	// (a graceful close, dialect.Closer); from then on the client's data
	// frames are no longer forwarded, while the upstream's still are.
	BeginClose(msg []byte) error
}

// Info describes a session at start (or a handshake that failed).
type Info struct {
	Upstream     string // name of the upstream that served it
	UpstreamType string // openai, azure, generic, mock
	ClientAddr   string
	ServerAddr   string
	Model        string // from the client's ?model= query, if any
	// RequestedAt is when the client's upgrade request arrived.
	RequestedAt time.Time
	// TraceParent and TraceState are the client's W3C trace context headers.
	TraceParent, TraceState string
	// Dials are the upstream dial attempts of the handshake, in order.
	Dials []Dial
	// ClientID identifies an authenticated client (token name or JWT sub); empty without auth.
	ClientID string
	// Identity is who the limits count the session against: ClientID, else
	// the client's IP.
	Identity string
	// Dialect is the session's voice protocol; nil knows no events.
	Dialect dialect.Dialect
}

// Dial is one upstream dial attempt.
type Dial struct {
	Upstream string
	Result   string // ok, auth, rate_limited, timeout, refused, http_4xx, http_5xx, error_event, closed, error
	Status   int    // HTTP status of the upgrade answer, if any
	Start    time.Time
	Duration time.Duration
	Err      string // redacted
}

// state values shown in GET /sessions.
const (
	stateOpen       = "open"
	stateResponding = "responding"
	stateDraining   = "draining"
	stateClosing    = "closing"
)

// Session is one client connection and its upstream. Fields marked atomic are
// written on the relay's hot path; the rest are guarded by mu.
type Session struct {
	// Immutable after creation.
	ID        string
	Info      Info
	StartedAt time.Time
	mgr       *Manager
	log       *slog.Logger
	// dialect knows the session's protocol events (never nil).
	dialect dialect.Dialect
	// turns: the dialect signals turn activity, so idle means no turn
	// activity rather than no data frame.
	turns bool
	// closeMsg is the dialect's graceful close message (nil: none).
	closeMsg []byte

	// t is set once by Start (guarded by mu) before any timer runs.
	t Transport
	// release frees the session's admission slot (set by ReleaseOnEnd,
	// guarded by mu); called by end, so a client may reconnect as soon as its
	// session has ended, not only after the sockets linger out.
	release func()

	// Hot-path counters (atomic).
	bytes        [2]atomic.Int64 // by Direction
	frames       [2]atomic.Int64 // by Direction
	lastActivity atomic.Int64    // nanoseconds since StartedAt (monotonic) of the last activity (see turns)
	lastSpoken   atomic.Int64    // 1 + nanoseconds since StartedAt of the last AnswerSpoken; 0: none
	responses    atomic.Int64    // responses started (response.created)
	inResponse   atomic.Int32    // responses in progress
	ended        atomic.Bool     // set once by End; never reset
	audioPending atomic.Bool     // a response is waiting for its first audio delta
	speaking     atomic.Bool     // the caller is speaking (SpeechStarted .. SpeechEnded): a turn in progress
	resuming     atomic.Bool     // a resume is in progress (ResumeBegin .. Resumed/ResumeFailed)
	idleFrames   int64           // client frames at the last idle check (idleFired only)

	// hb are the two heartbeats (index Leg); each guards its own state.
	hb [2]heartbeat
	// clock wakes the heartbeats, the idle check and max_duration, all on
	// one timer; armed by Start, stopped by End.
	clock clock

	mu sync.Mutex
	// ending is the session's way to its end; nil until one is under way
	// (see endState).
	ending       *endState
	audioSeconds float64 // cumulative billed audio seconds (AudioSeconds)
	conversation string  // upstream session id (sess_...)
	model        string  // model reported by session.created
	tokens       Tokens
	turnStart    time.Time // trigger for time to first audio (speech_stopped / commit / response.created)
	curResponse  string    // id of the response awaiting its first audio
	respStart    time.Time // when curResponse was created
	lastTTFA     time.Duration
	traceID      string // set by a tracing hook; joins logs and traces
	spanID       string
	rateLimits   []dialect.RateLimit // the upstream's latest rate limits
	// upstream is the upstream serving the call now (Info.Upstream until a resume).
	upstream string
	// upAudio is the current upstream session's own cumulative audio
	// seconds (the call's total, audioSeconds, sums its upstream sessions).
	upAudio float64
	// res is the session's side of resuming on a new upstream session; nil
	// when the call cannot resume. Set by Open, never changed after.
	res *resumeState
}

// endState is what a session holds only once its end is under way: asked
// for at its next answer boundary (EndAtBoundary), announced by the
// upstream (UpstreamEnded), begun by a peer's close frame, or done (End).
// The first of these allocates it (Session.endingState), so an open
// session that is not ending carries none of it. Guarded by Session.mu.
type endState struct {
	// boundaryPending: the session ends at its next answer boundary
	// (EndAtBoundary), with boundaryReason and boundaryNotice.
	boundaryPending bool
	boundaryReason  Reason
	boundaryNotice  string
	drainTimer      *time.Timer // waits for a quiet moment (AnswerSpoken); stopped by End
	boundaryTimer   *time.Timer // ends a session that never reaches its boundary; stopped by End
	// upstreamEnd is the upstream's own end reason (UpstreamEnded), ""
	// until then; upstreamDone is closed then.
	upstreamEnd  string
	upstreamDone chan struct{}
	upEndTimer   *time.Timer // after UpstreamEnded: ends the session if the upstream keeps its socket open
	peerClose    *PeerClose  // the close frame that ended the session, if one did
	// Set by End.
	reason      Reason
	closeClient CloseFrame // what End sent to the client
	closeUp     CloseFrame // what End sent upstream
	closeUnsent [2]bool    // by Leg: a close frame was meant but not written
	endedAt     time.Time
	// shutdownPending: End ran before Start, so Start must call Shutdown.
	shutdownPending bool
}

// endingState returns the session's end state, allocating it the first
// time. Called with mu held.
func (s *Session) endingState() *endState {
	if s.ending == nil {
		s.ending = &endState{upstreamDone: make(chan struct{})}
	}
	return s.ending
}

// PeerClose is a close frame received from one leg.
type PeerClose struct {
	Leg    Leg
	Code   wsframe.CloseCode
	Reason string
}

// SetTrace records the session span's ids, for the end-of-session log line and exemplars.
func (s *Session) SetTrace(traceID, spanID string) {
	s.mu.Lock()
	s.traceID, s.spanID = traceID, spanID
	s.mu.Unlock()
}

// TraceID returns the id set by SetTrace, or "".
func (s *Session) TraceID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.traceID
}

// Model is the model serving the session: the one the upstream reported,
// else the one the client asked for.
func (s *Session) Model() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cmp.Or(s.model, s.Info.Model)
}

// DialectName names the session's protocol (metrics, spans, GET /sessions).
func (s *Session) DialectName() string { return s.dialect.Name() }

// Tokens is token usage (see package dialect).
type Tokens = dialect.Tokens

// now returns the time since the session started on the monotonic clock.
func (s *Session) since() time.Duration { return time.Since(s.StartedAt) }

// Start sets the session's deadlines. The relay calls it once both legs are up
// and before it reads the first frame.
func (s *Session) Start(t Transport) {
	o := &s.mgr.opts
	s.mu.Lock()
	s.t = t
	if s.ended.Load() {
		// Ended before the relay existed (drain began mid-handshake): the
		// relay still needs its close frames, exactly once.
		e := s.endingState()
		pending, c, u, reason := e.shutdownPending, e.closeClient, e.closeUp, e.reason
		e.shutdownPending = false
		s.mu.Unlock()
		if pending && s.closesGracefully(reason) {
			// The upstream session started: close it as any other (the
			// registry entry and the slot are already gone).
			go func() {
				if t.BeginClose(s.closeMsg) == nil {
					s.awaitUpstreamEnd(s.mgr.opts.CloseTimeout)
				}
				s.recordSent(t.Shutdown(c, u))
			}()
		} else if pending {
			s.recordSent(t.Shutdown(c, u))
		}
		return
	}
	defer s.mu.Unlock()
	s.hb[Client].start(s, Client, o.ClientHeartbeat)
	s.hb[Upstream].start(s, Upstream, o.UpstreamHeartbeat)
	now := s.since()
	if o.IdleTimeout > 0 {
		s.setDeadline(idleCheck, now+o.IdleTimeout)
	}
	if o.MaxDuration > 0 {
		s.setDeadline(maxDuration, now+o.MaxDuration)
	}
}

// ReleaseOnEnd makes End free the admission slot from Manager.Reserve
// (release must be idempotent; Finished calls it too).
func (s *Session) ReleaseOnEnd(release func()) {
	s.mu.Lock()
	s.release = release
	s.mu.Unlock()
}

// Frame records one relayed data frame of n payload bytes. Hot path: atomics only.
func (s *Session) Frame(d Direction, n int64) {
	s.bytes[d].Add(n)
	s.frames[d].Add(1)
	if !s.turns {
		s.touch()
	}
	s.mgr.relayedBytes[d].Add(n)
	s.mgr.relayedFrames[d].Add(1)
}

// touch records activity now.
func (s *Session) touch() { s.lastActivity.Store(int64(s.since())) }

// Pong records a pong received on leg.
func (s *Session) Pong(leg Leg) {
	if rtt, ok := s.hb[leg].pong(); ok {
		for _, h := range s.mgr.opts.Hooks {
			h.HeartbeatRTT(s, leg, rtt)
		}
	}
}

// CloseReceived ends the session because leg sent a close frame with code
// and reason (already redacted by the relay). The other leg gets the same
// code; the sender gets it echoed.
func (s *Session) CloseReceived(leg Leg, code wsframe.CloseCode, reason string) {
	cf := CloseFrame{Code: code, Reason: reason}
	s.mu.Lock()
	if !s.ended.Load() {
		if e := s.endingState(); e.peerClose == nil {
			e.peerClose = &PeerClose{Leg: leg, Code: code, Reason: reason}
		}
	}
	s.mu.Unlock()
	if leg == Client {
		s.end(ReasonClientClosed, cf, cf)
		return
	}
	s.end(ReasonUpstreamClosed, cf, cf)
}

// LegError ends the session because leg failed (read/write error or EOF).
func (s *Session) LegError(leg Leg, err error) {
	if s.ended.Load() {
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("leg failed", "session", s.ID, "leg", leg.String(), "err", err)
	}
	if leg == Client {
		s.End(ReasonClientError)
		return
	}
	if s.resuming.Load() {
		return // the old upstream leg: the relay is replacing it
	}
	fatal := false
	if s.res != nil {
		s.mu.Lock()
		fatal = s.res.fatalHeld
		s.mu.Unlock()
	}
	if fatal {
		// A fatal error event the call did not resume from.
		s.End(ReasonUpstreamFatalEvent)
		return
	}
	if s.upstreamEnded() {
		// The upstream ended the session, then dropped its socket.
		s.end(ReasonUpstreamClosed, CloseFrame{Code: wsframe.NormalClosure}, CloseFrame{})
		return
	}
	s.End(ReasonUpstreamError)
}

// upstreamEnded reports whether the upstream ended the session itself.
func (s *Session) upstreamEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ending != nil && s.ending.upstreamEnd != ""
}

// End tears the session down with reason and the contract's close codes.
// Only the first call has an effect.
func (s *Session) End(reason Reason) {
	c, u := closeCodes(reason)
	s.end(reason, c, u)
}

// Ended reports whether End has run.
func (s *Session) Ended() bool { return s.ended.Load() }

func (s *Session) end(reason Reason, client, upstream CloseFrame) {
	if !s.ended.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	e := s.endingState()
	e.reason = reason
	e.closeClient = client
	e.closeUp = upstream
	e.endedAt = time.Now()
	s.stopClock()
	if e.drainTimer != nil {
		e.drainTimer.Stop()
	}
	if e.boundaryTimer != nil {
		e.boundaryTimer.Stop()
	}
	if e.upEndTimer != nil {
		e.upEndTimer.Stop()
	}
	s.mu.Unlock()
	s.hb[Client].stop()
	s.hb[Upstream].stop()
	if reason == ReasonClientHeartbeatTimeout || reason == ReasonUpstreamHeartbeatTimeout {
		leg := Client
		if reason == ReasonUpstreamHeartbeatTimeout {
			leg = Upstream
		}
		for _, h := range s.mgr.opts.Hooks {
			h.HeartbeatTimeout(s, leg)
		}
	}
	s.mu.Lock()
	t := s.t
	e.shutdownPending = t == nil
	release := s.release
	s.mu.Unlock()
	if t != nil && s.closesGracefully(reason) {
		// The upstream answers on the upstream pump, which may be the
		// caller: wait on a goroutine of its own (the relay waits for Shutdown).
		go s.closeGracefully(t, client, upstream, release)
		return
	}
	s.finish(t, client, upstream, release)
}

// closesGracefully reports whether a session ending with reason first
// closes its upstream session with the dialect's close message: always,
// unless the upstream leg is dead or the upstream ended the session itself.
func (s *Session) closesGracefully(reason Reason) bool {
	switch reason {
	case ReasonUpstreamError, ReasonUpstreamHeartbeatTimeout, ReasonUpstreamClosed:
		return false
	}
	return s.closeMsg != nil && !s.upstreamEnded()
}

// stoppingCloseWait bounds the wait for the upstream's answer to a graceful
// close once tether waits for nothing any more (drain deadline, second signal).
const stoppingCloseWait = 500 * time.Millisecond

// closeGracefully sends the dialect's close message upstream, waits (up to
// CloseTimeout) for the upstream's answer, which the relay passes on to the
// client, then closes both legs.
func (s *Session) closeGracefully(t Transport, client, upstream CloseFrame, release func()) {
	if err := t.BeginClose(s.closeMsg); err == nil {
		s.awaitUpstreamEnd(s.mgr.opts.CloseTimeout)
	}
	s.finish(t, client, upstream, release)
}

// awaitUpstreamEnd waits until the upstream ended the session, d passed,
// or stoppingCloseWait after tether stopped waiting for anything.
func (s *Session) awaitUpstreamEnd(d time.Duration) {
	s.mu.Lock()
	done := s.endingState().upstreamDone
	s.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	stopping := s.mgr.Stopping().Done()
	for {
		select {
		case <-done:
			return
		case <-timer.C:
			s.log.Info("upstream did not confirm the close", "session", s.ID, "waited_ms", d.Milliseconds())
			return
		case <-stopping:
			stopping = nil
			timer.Reset(stoppingCloseWait)
		}
	}
}

// finish closes both legs (the given close frames), frees the admission
// slot and unregisters the session.
func (s *Session) finish(t Transport, client, upstream CloseFrame, release func()) {
	if t != nil {
		s.recordSent(t.Shutdown(client, upstream))
	}
	if release != nil {
		release()
	}
	s.mgr.ended(s)
}

// recordSent keeps, as the session's close codes, only the close frames the
// relay actually wrote: logs, spans and metrics report what the peers got.
func (s *Session) recordSent(sent [2]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.endingState()
	e.closeUnsent = [2]bool{e.closeClient.Code != CodeNone && !sent[Client], e.closeUp.Code != CodeNone && !sent[Upstream]}
	if !sent[Client] {
		e.closeClient = CloseFrame{}
	}
	if !sent[Upstream] {
		e.closeUp = CloseFrame{}
	}
}

// heartbeatTimeout ends the session because leg's liveness check failed.
func (s *Session) heartbeatTimeout(leg Leg, cause string, quiet time.Duration) {
	if s.ended.Load() {
		return
	}
	s.log.Info("heartbeat timeout", "session", s.ID, "leg", leg.String(), "cause", cause,
		"quiet_ms", quiet.Milliseconds())
	if leg == Client {
		s.End(ReasonClientHeartbeatTimeout)
		return
	}
	if s.resuming.Load() {
		return
	}
	if s.interrupt(TriggerUpstreamHeartbeatTimeout) {
		return
	}
	s.End(ReasonUpstreamHeartbeatTimeout)
}

// idleFired checks for data activity and ends the session when idle too long.
func (s *Session) idleFired() {
	if s.ended.Load() {
		return
	}
	idle := s.mgr.opts.IdleTimeout
	// A turn in progress is activity, however long it runs: a response, or
	// a caller speaking whose audio still comes (one whose audio stopped
	// without the upstream hearing the end of speech is quiet).
	if s.inResponse.Load() > 0 {
		s.touch()
	}
	if s.speaking.Load() {
		if n := s.frames[ClientToUpstream].Load(); n != s.idleFrames {
			s.idleFrames = n
			s.touch()
		}
	}
	last := time.Duration(s.lastActivity.Load())
	if s.since()-last >= idle {
		s.End(ReasonIdleTimeout)
		return
	}
	s.setDeadline(idleCheck, last+idle) // when it would have been idle that long
}

// drain closes the session at its next answer boundary (reason shutdown).
func (s *Session) drain() { s.EndAtBoundary(ReasonShutdown, "", 0) }

// EndAtBoundary ends the session with reason at its next answer boundary:
// now if no answer is in progress, else at the answer's end, or, on a
// stream without answer boundaries, once the answer has been quiet for
// Quiet; within > 0 bounds the wait (a session that never reaches a
// boundary ends within after the first call). notice, if set, is a text
// message (a dialect's event) sent to the client just before its close
// frame. The first reason asked for stays, but for shutdown (a drain),
// which a later reason replaces.
func (s *Session) EndAtBoundary(reason Reason, notice string, within time.Duration) {
	s.mu.Lock()
	// A drain's shutdown gives way to a reason of the session's own (its
	// client learns its budget is spent, not only that tether stops).
	if e := s.endingState(); !e.boundaryPending || e.boundaryReason == ReasonShutdown && reason != ReasonShutdown {
		e.boundaryPending, e.boundaryReason, e.boundaryNotice = true, reason, notice
		if within > 0 && e.boundaryTimer == nil && !s.ended.Load() {
			e.boundaryTimer = time.AfterFunc(within, s.endPending)
		}
	}
	s.mu.Unlock()
	s.atBoundary()
}

// atBoundary ends a session waiting for its answer boundary (EndAtBoundary)
// if it is at one now, or waits for the quiet it needs.
func (s *Session) atBoundary() {
	s.mu.Lock()
	busy := s.inResponse.Load() > 0
	var wait time.Duration
	if last := s.lastSpoken.Load(); last > 0 && !busy {
		wait = s.mgr.opts.Quiet - (s.since() - time.Duration(last-1))
	}
	if wait > 0 && !s.ended.Load() {
		if e := s.endingState(); e.drainTimer == nil {
			e.drainTimer = time.AfterFunc(wait, s.atBoundary)
		} else {
			e.drainTimer.Reset(wait)
		}
	}
	s.mu.Unlock()
	if !busy && wait <= 0 {
		s.endPending()
	}
}

// endPending ends the session for the reason EndAtBoundary gave.
func (s *Session) endPending() {
	s.mu.Lock()
	e := s.endingState()
	reason, notice := e.boundaryReason, e.boundaryNotice
	s.mu.Unlock()
	client, upstream := closeCodes(reason)
	client.Notice = notice
	s.end(reason, client, upstream)
}

// answerSpeaking reports whether an answer without response boundaries
// (GPT-Live) was spoken within the last Quiet (1 s when unset).
func (s *Session) answerSpeaking() bool {
	last := s.lastSpoken.Load()
	return last > 0 && s.since()-time.Duration(last-1) < cmp.Or(s.mgr.opts.Quiet, time.Second)
}

// Summary is the end-of-session record (log line, hooks).
type Summary struct {
	Reason Reason
	// CloseClient and CloseUp are the close frames written (CodeNone: none).
	CloseClient CloseFrame
	CloseUp     CloseFrame
	// CloseUnsent, by Leg: tether meant to send a close frame there but
	// closed the leg without one (its peer stopped reading, or it failed).
	CloseUnsent  [2]bool
	Duration     time.Duration
	Bytes        [2]int64
	Frames       [2]int64
	Responses    int64
	Tokens       Tokens
	Conversation string
	Model        string
	// PeerClose is the close frame that ended the session (client_closed/upstream_closed).
	PeerClose *PeerClose
	// LastTTFA is the last time to first audio measured.
	LastTTFA time.Duration
	// AudioSeconds is the upstream's cumulative billed audio (GPT-Live).
	AudioSeconds float64
	// UpstreamEndReason is why the upstream ended the session itself
	// (GPT-Live session.closed reason), "" when it did not.
	UpstreamEndReason string
	// Dialect names the session's protocol.
	Dialect string
	// Resumes counts the times the call resumed on a new upstream session;
	// Parts are its upstream sessions, in order, each with its own usage
	// (Tokens and AudioSeconds are their sums). Parts is nil for a call
	// that never resumed.
	Resumes int
	Parts   []UpstreamPart
	TraceID string
	SpanID  string
}

// Summary returns the session's figures; meaningful once it has ended.
func (s *Session) Summary() Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.ending
	if e == nil {
		e = &endState{} // not ended yet
	}
	end := e.endedAt
	if end.IsZero() {
		end = time.Now()
	}
	model := s.model
	if model == "" {
		model = s.Info.Model
	}
	var parts []UpstreamPart
	resumes := 0
	if s.res != nil && s.res.count > 0 {
		resumes = s.res.count
		parts = append(append(parts, s.res.parts...), s.currentPart(end, ""))
	}
	return Summary{
		Resumes: resumes, Parts: parts,
		Reason: e.reason, CloseClient: e.closeClient, CloseUp: e.closeUp, CloseUnsent: e.closeUnsent,
		Duration:  end.Sub(s.StartedAt),
		Bytes:     [2]int64{s.bytes[0].Load(), s.bytes[1].Load()},
		Frames:    [2]int64{s.frames[0].Load(), s.frames[1].Load()},
		Responses: s.responses.Load(), Tokens: s.tokens,
		Conversation: s.conversation, Model: model,
		PeerClose: e.peerClose, LastTTFA: s.lastTTFA, TraceID: s.traceID, SpanID: s.spanID,
		AudioSeconds: s.audioSeconds, UpstreamEndReason: e.upstreamEnd, Dialect: s.DialectName(),
	}
}

// Snapshot is one row of GET /sessions.
type Snapshot struct {
	ID                    string    `json:"id"`
	Upstream              string    `json:"upstream"`
	ClientAddr            string    `json:"client_addr"`
	StartedAt             time.Time `json:"started_at"`
	AgeSeconds            float64   `json:"age_seconds"`
	State                 string    `json:"state"`
	BytesClientToUpstream int64     `json:"bytes_client_to_upstream"`
	BytesUpstreamToClient int64     `json:"bytes_upstream_to_client"`
	Responses             int64     `json:"responses"`
	LastActivity          time.Time `json:"last_activity"`
	Conversation          string    `json:"conversation_id,omitempty"`
	Model                 string    `json:"model,omitempty"`
	Dialect               string    `json:"dialect"`
	// AudioSeconds is the upstream's cumulative billed audio (GPT-Live).
	AudioSeconds float64 `json:"audio_seconds,omitempty"`
	// RateLimits are the upstream's latest rate limits, when it reports them.
	RateLimits []dialect.RateLimit `json:"rate_limits,omitempty"`
	// Resumes counts the call's resumes on a new upstream session
	// (Upstream and Conversation are the current upstream session's).
	Resumes int `json:"resumes,omitempty"`
}

// Snapshot returns the session's current row for GET /sessions.
func (s *Session) Snapshot() Snapshot {
	state := stateOpen
	s.mu.Lock()
	switch {
	case s.ended.Load():
		state = stateClosing
	case s.ending != nil && s.ending.boundaryPending:
		state = stateDraining
	case s.inResponse.Load() > 0 || s.answerSpeaking():
		state = stateResponding
	}
	conv, model, audio := s.conversation, s.model, s.audioSeconds
	upstream, resumes := s.upstream, 0
	if s.res != nil {
		resumes = s.res.count
	}
	limits := append([]dialect.RateLimit(nil), s.rateLimits...)
	s.mu.Unlock()
	if model == "" {
		model = s.Info.Model
	}
	last := s.StartedAt.Add(time.Duration(s.lastActivity.Load()))
	return Snapshot{
		ID: s.ID, Upstream: upstream, ClientAddr: s.Info.ClientAddr, Resumes: resumes,
		StartedAt: s.StartedAt.UTC(), AgeSeconds: s.since().Seconds(), State: state,
		BytesClientToUpstream: s.bytes[ClientToUpstream].Load(),
		BytesUpstreamToClient: s.bytes[UpstreamToClient].Load(),
		Responses:             s.responses.Load(), LastActivity: last.UTC(),
		Conversation: conv, Model: model, Dialect: s.DialectName(), RateLimits: limits, AudioSeconds: audio,
	}
}
