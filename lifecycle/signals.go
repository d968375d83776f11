package lifecycle

import (
	"time"

	"github.com/tetherproxy/tether/dialect"
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
func (s *Session) Capture(typ []byte) bool { return s.dialect.Capture(typ) }

// Hold reports whether an upstream message of type typ is to be held whole
// and scrubbed before it is forwarded.
func (s *Session) Hold(typ []byte) bool { return s.dialect.Hold(typ) }

// Captured hands the whole payload of a captured upstream event, after it
// was forwarded, to the dialect. The payload must not be retained.
func (s *Session) Captured(typ, payload []byte) { s.dialect.Captured(s, typ, payload) }

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
	s.mu.Lock()
	if s.turnStart.IsZero() {
		s.turnStart = time.Now()
	}
	s.mu.Unlock()
}

// SpeechEnded implements dialect.Signals.
func (s *Session) SpeechEnded() {
	s.mu.Lock()
	s.turnStart = time.Now()
	s.mu.Unlock()
}

// AnswerStarted implements dialect.Signals.
func (s *Session) AnswerStarted(responseID string) {
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
	if s.inResponse.Add(-1) < 0 {
		s.inResponse.Store(0)
	}
	s.mu.Lock()
	s.tokens.Add(u)
	if s.curResponse == responseID {
		s.curResponse = ""
		s.audioPending.Store(false)
	}
	drain := s.drainPending && s.inResponse.Load() == 0
	s.mu.Unlock()
	for _, h := range s.mgr.opts.Hooks {
		h.ResponseDone(s, responseID, status, u)
	}
	if drain {
		s.End(ReasonShutdown)
	}
}

// UpstreamError implements dialect.Signals: a code listed in
// fatal_upstream_errors ends the session.
func (s *Session) UpstreamError(errType, code string) {
	for _, h := range s.mgr.opts.Hooks {
		h.UpstreamError(s, errType, code)
	}
	if code != "" && s.mgr.fatal[code] {
		s.log.Info("fatal upstream error event", "session", s.ID, "code", code)
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
