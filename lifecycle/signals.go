package lifecycle

import (
	"cmp"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// The relay reports peeked and captured events here; the session's dialect
// turns them into the signals below (Session implements dialect.Signals).

var _ dialect.Signals = (*Session)(nil)

// Event hands a text message whose type the relay peeked, after it was
// forwarded, to the dialect. responseID is the top-level response_id, if
// any. Hot path for audio: no allocation.
func (s *Session) Event(d Direction, typ, responseID []byte) {
	if d == ClientToUpstream {
		s.dialect.ClientEvent(s, typ)
		return
	}
	s.dialect.UpstreamEvent(s, typ, responseID)
}

// Capture reports whether an upstream message of type typ is to be captured
// whole for Captured.
func (s *Session) Capture(typ []byte) bool {
	return s.dialect.Capture(typ) || s.captureUpstream(typ)
}

// Hold reports whether an upstream message of type typ is to be held whole
// and scrubbed before it is forwarded.
func (s *Session) Hold(typ []byte) bool { return s.dialect.Hold(typ) || s.holdUpstream(typ) }

// Captured hands the whole payload of a captured upstream event, after it
// was forwarded, to the dialect. The payload must not be retained.
func (s *Session) Captured(typ, payload []byte) {
	if s.dialect.Capture(typ) {
		s.dialect.Captured(s, typ, payload)
	}
	if s.captureUpstream(typ) {
		s.withMemory(func(m dialect.Memory) { m.Upstream(typ, payload) })
	}
}

// SessionStarted implements dialect.Signals.
func (s *Session) SessionStarted(conversationID, model string) {
	s.mu.Lock()
	if conversationID != "" {
		s.conversation = conversationID
	}
	if model != "" {
		s.model = model
	}
	s.mu.Unlock()
}

// AnswerRequested implements dialect.Signals.
func (s *Session) AnswerRequested() {
	s.touch()
	s.mu.Lock()
	if s.turnStart.IsZero() {
		s.turnStart = time.Now()
	}
	s.mu.Unlock()
}

// CallerActive implements dialect.Signals.
func (s *Session) CallerActive() { s.touch() }

// SpeechStarted implements dialect.Signals: until SpeechEnded the caller's
// turn is in progress, and idle does not count it as quiet.
func (s *Session) SpeechStarted() {
	s.touch()
	s.speaking.Store(true)
}

// SpeechEnded implements dialect.Signals.
func (s *Session) SpeechEnded() {
	s.touch()
	s.speaking.Store(false)
	s.mu.Lock()
	s.turnStart = time.Now()
	s.mu.Unlock()
}

// AnswerStarted implements dialect.Signals.
func (s *Session) AnswerStarted(responseID string) {
	s.touch()
	s.responses.Add(1)
	s.inResponse.Add(1)
	s.mu.Lock()
	s.curResponse = responseID
	s.respStart = time.Now()
	s.mu.Unlock()
	s.audioPending.Store(true)
	for _, h := range s.mgr.opts.Hooks {
		h.ResponseStarted(s, responseID)
	}
}

// AnswerAudio implements dialect.Signals: the first audio of the pending
// answer completes its time to first audio. Hot path: one atomic load
// unless an answer awaits its first audio.
func (s *Session) AnswerAudio(responseID []byte) {
	s.touch()
	if !s.audioPending.Load() {
		return
	}
	s.mu.Lock()
	if s.curResponse == "" || (len(responseID) > 0 && string(responseID) != s.curResponse) {
		s.mu.Unlock()
		return
	}
	ttfa := time.Since(s.respStart)
	if !s.turnStart.IsZero() {
		ttfa = time.Since(s.turnStart)
	}
	s.lastTTFA = ttfa
	id := s.curResponse
	s.curResponse = ""
	s.turnStart = time.Time{}
	s.audioPending.Store(false)
	s.mu.Unlock()
	for _, h := range s.mgr.opts.Hooks {
		h.FirstAudio(s, id, ttfa)
	}
}

// AnswerDone implements dialect.Signals; a drain waiting for this boundary
// ends the session.
func (s *Session) AnswerDone(responseID, status string, u Tokens) {
	s.touch()
	if s.inResponse.Add(-1) < 0 {
		s.inResponse.Store(0)
	}
	s.mu.Lock()
	s.tokens.Add(u)
	if s.curResponse == responseID {
		s.curResponse = ""
		s.audioPending.Store(false)
	}
	boundary := s.ending != nil && s.ending.boundaryPending && s.inResponse.Load() == 0
	s.mu.Unlock()
	for _, h := range s.mgr.opts.Hooks {
		h.ResponseDone(s, responseID, status, u)
	}
	if boundary {
		s.endPending()
	}
}

// AnswerSpoken implements dialect.Signals: the first part of an answer
// after the caller spoke completes the time to first audio (measured from
// transcripts); a drain waits for Quiet after the last part.
func (s *Session) AnswerSpoken() {
	s.touch()
	s.lastSpoken.Store(int64(s.since()) + 1)
	s.mu.Lock()
	if s.turnStart.IsZero() {
		s.mu.Unlock()
		return
	}
	ttfa := time.Since(s.turnStart)
	s.turnStart = time.Time{}
	s.lastTTFA = ttfa
	s.mu.Unlock()
	for _, h := range s.mgr.opts.Hooks {
		h.FirstAudio(s, "", ttfa)
	}
}

// TokensUsed implements dialect.Signals.
func (s *Session) TokensUsed(u Tokens) {
	s.mu.Lock()
	s.tokens.Add(u)
	s.mu.Unlock()
	for _, h := range s.mgr.opts.Hooks {
		h.UsageUpdated(s, u, 0)
	}
}

// AudioSeconds implements dialect.Signals: the latest total is kept; the
// hooks get its growth.
func (s *Session) AudioSeconds(total float64) {
	s.mu.Lock()
	// total is the current upstream session's; a call that resumed sums
	// its upstream sessions.
	grown := total - s.upAudio
	if grown > 0 {
		s.upAudio = total
		s.audioSeconds += grown
	}
	s.mu.Unlock()
	if grown <= 0 {
		return
	}
	for _, h := range s.mgr.opts.Hooks {
		h.UsageUpdated(s, Tokens{}, grown)
	}
}

// UpstreamEnded implements dialect.Signals: the upstream ended the session
// (its end message was relayed). The session ends when the upstream closes
// its socket, or CloseTimeout later with 1000 on both legs.
func (s *Session) UpstreamEnded(reason string) {
	s.mu.Lock()
	if s.res != nil && (s.res.pending != "" || s.resuming.Load()) {
		// Kept from the client: the call resumes (ResumeFailed applies it if not).
		s.res.suppressedEnd = cmp.Or(reason, "unknown")
		s.mu.Unlock()
		return
	}
	e := s.endingState()
	if e.upstreamEnd != "" {
		s.mu.Unlock()
		return
	}
	e.upstreamEnd = cmp.Or(reason, "unknown")
	close(e.upstreamDone)
	if !s.ended.Load() {
		e.upEndTimer = time.AfterFunc(cmp.Or(s.mgr.opts.CloseTimeout, time.Second), func() {
			normal := CloseFrame{Code: wsframe.NormalClosure}
			s.end(ReasonUpstreamClosed, normal, normal)
		})
	}
	s.mu.Unlock()
	s.log.Info("upstream ended the session", "session", s.ID, "end_reason", e.upstreamEnd)
}

// UpstreamError implements dialect.Signals: a code listed in
// fatal_upstream_errors ends the session.
func (s *Session) UpstreamError(errType, code string) {
	for _, h := range s.mgr.opts.Hooks {
		h.UpstreamError(s, errType, code)
	}
	if code != "" && s.mgr.fatal[code] {
		s.log.Info("fatal upstream error event", "session", s.ID, "code", code)
		if s.resuming.Load() {
			return
		}
		if p := s.pendingResume(); p != "" && s.interrupt(p) {
			s.mu.Lock()
			s.res.fatalHeld = true // kept from the client: the call resumes
			s.mu.Unlock()
			return
		}
		s.End(ReasonUpstreamFatalEvent)
	}
}

// RateLimits implements dialect.Signals: the latest limits are kept for
// GET /sessions.
func (s *Session) RateLimits(limits []dialect.RateLimit) {
	s.mu.Lock()
	s.rateLimits = append(s.rateLimits[:0], limits...)
	s.mu.Unlock()
}
