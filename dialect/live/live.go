// Package live is OpenAI GPT-Live's event vocabulary (wss://…/v1/live/sessions)
// and its dialect: the typed events tether decodes, the client-first
// handshake (session.start, then session.started), the graceful close
// (session.close, then session.closed) and the translation of peeked events
// into session signals. The proxy, the upstream dialer, the mock, `tether
// talk` and the tests use these names and types; nothing else in tether
// spells a GPT-Live event name. Event types tether does not know pass
// through untouched.
package live

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tetherproxy/tether/dialect"
)

// Event types.
const (
	// Client events.
	SessionStart       = "session.start"
	SessionUpdate      = "session.update"
	InputAudioAppend   = "session.input_audio.append"
	InputAudioMute     = "session.input_audio.mute"
	InputAudioUnmute   = "session.input_audio.unmute"
	InstructionsAppend = "session.instructions.append"
	ThinkingAppend     = "session.thinking.append"
	CommentaryAppend   = "session.commentary.append"
	ResponseItemCreate = "response.item.create"
	ResponseCreate     = "response.create"
	SessionClose       = "session.close"
	// MockFault is the built-in mock's fault injection event (not OpenAI's).
	MockFault = "mock.fault"

	// Server events.
	SessionStarted        = "session.started"
	SessionUpdated        = "session.updated"
	InputAudioMuted       = "session.input_audio.muted"
	InputAudioUnmuted     = "session.input_audio.unmuted"
	InstructionsAppended  = "session.instructions.appended"
	ThinkingAppended      = "session.thinking.appended"
	CommentaryAppended    = "session.commentary.appended"
	OutputAudioDelta      = "session.output_audio.delta"
	InputTranscriptDelta  = "session.input_transcript.delta"
	OutputTranscriptDelta = "session.output_transcript.delta"
	DelegationCreated     = "session.delegation.created"
	ResponseEvent         = "response.event"
	UsageUpdated          = "session.usage.updated"
	SessionClosed         = "session.closed"
	Error                 = "error"
	Info                  = "info"
)

// ClientEvents are the client event types the service accepts (it lists
// them in the error it sends for any other type).
var ClientEvents = []string{
	SessionStart, SessionUpdate, InputAudioAppend, InputAudioMute, InputAudioUnmute,
	InstructionsAppend, ThinkingAppend, CommentaryAppend, ResponseItemCreate, ResponseCreate, SessionClose,
}

// session.closed reasons.
const (
	ReasonCloseRequested = "close_requested"
	ReasonExpired        = "expired"
	ReasonContent        = "content"
	ReasonRemoteHangup   = "remote_hangup"
	ReasonConnectionLost = "connection_lost"
)

// Error types and codes tether sends or acts on.
const (
	ErrTypeInvalidRequest = "invalid_request_error"
	ErrTypeServer         = "server_error"

	CodeUnknownParameter     = "unknown_parameter"
	CodeImmutableFieldUpdate = "immutable_field_update"
	CodeInvalidAudio         = "invalid_audio"
	CodeCreditExhausted      = "credit_balance_exhausted"
	CodeModelNotFound        = "model_not_found"
	CodeInvalidAPIKey        = "invalid_api_key"
	// Codes of tether's own (client-visible failures of the handshake).
	CodeModelNotAllowed     = "model_not_allowed"
	CodeUpstreamUnavailable = "upstream_unavailable"
	CodeStartRequired       = "session_start_required"
	CodeStartTimeout        = "session_start_timeout"
	CodeShuttingDown        = "server_shutting_down"
	// Codes the built-in mock sends (validation and sequencing errors in
	// the service's style; the service's own codes for these cases are
	// unconfirmed).
	CodeMissingParameter   = "missing_required_parameter"
	CodeInvalidValue       = "invalid_value"
	CodeInvalidType        = "invalid_type"
	CodeUnknownEventType   = "unknown_event_type"
	CodeNotStarted         = "session_not_started"
	CodeAlreadyStarted     = "session_already_started"
	CodeDelegationRequired = "responses_delegation_required"
	CodeMissingAuth        = "missing_authorization"
)

// Values of the session resource.
const (
	// ModelGPTLive1 is the first GPT-Live model.
	ModelGPTLive1 = "gpt-live-1"
	// DefaultVoice is session.audio.output.voice when session.start names none.
	DefaultVoice = "marin"
	// StatusActive is the session resource's status (also in session.closed).
	StatusActive = "active"
	// Delegation types (session.delegation.type).
	DelegationClient    = "client"
	DelegationResponses = "responses"
)

// Audio formats of session.start.session.audio.format.type.
const (
	FormatPCM  = "audio/pcm"
	FormatPCMU = "audio/pcmu"
	FormatPCMA = "audio/pcma"
)

// AudioFormat is session.audio.format.
type AudioFormat struct {
	Type string `json:"type"`
	Rate int    `json:"rate,omitempty"`
}

// BytesPerSecond is the raw audio rate of f (PCM16 24 kHz when unset).
func (f *AudioFormat) BytesPerSecond() int {
	if f == nil || f.Type == "" {
		return 48000
	}
	switch f.Type {
	case FormatPCMU, FormatPCMA:
		return 8000
	}
	if f.Rate > 0 {
		return 2 * f.Rate
	}
	return 48000
}

// Start is the part of a session.start event tether reads. tether never
// rewrites session.start: the client's bytes go upstream as they are.
type Start struct {
	EventID string
	// Model is session.model ("" when the client named none: the service's
	// error to give, not tether's).
	Model string
	// Format is session.audio.format (nil: the default, PCM16 24 kHz).
	Format *AudioFormat
}

// ErrNotStart is returned by ParseStart for a first message of another type.
var ErrNotStart = errors.New("the first message must be " + SessionStart)

// ParseStart decodes the client's first message, which must be session.start.
func ParseStart(payload []byte) (Start, error) {
	var ev struct {
		Type    string `json:"type"`
		EventID string `json:"event_id"`
		Session *struct {
			Model json.RawMessage `json:"model"`
			Audio *struct {
				Format *AudioFormat `json:"format"`
			} `json:"audio"`
		} `json:"session"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Start{}, fmt.Errorf("first message: %w", err)
	}
	if ev.Type != SessionStart {
		return Start{}, ErrNotStart
	}
	st := Start{EventID: ev.EventID}
	if ev.Session != nil {
		if len(ev.Session.Model) > 0 && ev.Session.Model[0] == '"' {
			_ = json.Unmarshal(ev.Session.Model, &st.Model)
		}
		if ev.Session.Audio != nil {
			st.Format = ev.Session.Audio.Format
		}
	}
	return st, nil
}

// Session is the part of the session resource tether reads.
type Session struct {
	ID        string `json:"id,omitempty"`
	Model     string `json:"model,omitempty"`
	ExpiresAt int64  `json:"expires_at,omitempty"`
	Status    string `json:"status,omitempty"`
}

// SessionEvent is session.started or session.updated.
type SessionEvent struct {
	Type          string  `json:"type"`
	EventID       string  `json:"event_id,omitempty"`
	ClientEventID string  `json:"client_event_id,omitempty"`
	Session       Session `json:"session"`
}

// Usage is cumulative: totals for the session so far, never increments.
type Usage struct {
	Seconds float64 `json:"seconds"`
}

// UsageEvent is session.usage.updated.
type UsageEvent struct {
	Type          string `json:"type"`
	EventID       string `json:"event_id,omitempty"`
	Usage         Usage  `json:"usage"`
	ContextWindow *struct {
		UsageRatio float64 `json:"usage_ratio"`
	} `json:"context_window,omitempty"`
}

// ClosedEvent is session.closed.
type ClosedEvent struct {
	Type          string   `json:"type"`
	EventID       string   `json:"event_id,omitempty"`
	ClientEventID string   `json:"client_event_id,omitempty"`
	Reason        string   `json:"reason"`
	Session       *Session `json:"session,omitempty"`
	Usage         *Usage   `json:"usage,omitempty"`
}

// TranscriptDelta is session.input_transcript.delta or
// session.output_transcript.delta: a fragment of speech on the session's
// timeline (milliseconds).
type TranscriptDelta struct {
	Type    string `json:"type"`
	EventID string `json:"event_id,omitempty"`
	Delta   string `json:"delta"`
	StartMS int64  `json:"start_ms"`
	EndMS   int64  `json:"end_ms"`
}

// AudioDelta is session.output_audio.delta (no event_id on the primary socket).
type AudioDelta struct {
	Type  string `json:"type"`
	Delta string `json:"delta"`
}

// Delegation is session.delegation.created's delegation.
type Delegation struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Target     string `json:"target"`
	ResponseID string `json:"response_id,omitempty"`
}

// DelegationEvent is session.delegation.created.
type DelegationEvent struct {
	Type       string     `json:"type"`
	Delegation Delegation `json:"delegation"`
	OffsetMS   int64      `json:"offset_ms"`
}

// ResponsesUsage is the token usage of a delegated Responses answer.
type ResponsesUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	OutputTokens       int64 `json:"output_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
}

// NestedEvent is response.event: a Responses streaming event of a
// delegated answer; only response.completed carries usage.
type NestedEvent struct {
	Type         string `json:"type"`
	DelegationID string `json:"delegation_id,omitempty"`
	Event        struct {
		Type     string `json:"type"`
		Response *struct {
			ID    string          `json:"id"`
			Usage *ResponsesUsage `json:"usage"`
		} `json:"response"`
	} `json:"event"`
}

// Nested Responses event types (inside response.event). ResponseCompleted
// is the one that carries usage.
const (
	ResponseCreated   = "response.created"
	ResponseTextDelta = "response.output_text.delta"
	ResponseCompleted = "response.completed"
)

// ErrorDetail is the error object of an error event.
type ErrorDetail struct {
	Type          string  `json:"type"`
	Code          *string `json:"code"`
	Message       string  `json:"message"`
	Param         string  `json:"param,omitempty"`
	ClientEventID string  `json:"client_event_id,omitempty"`
}

// CodeString returns the code, or "" when there is none.
func (e *ErrorDetail) CodeString() string {
	if e == nil || e.Code == nil {
		return ""
	}
	return *e.Code
}

// ErrorEvent is an error event.
type ErrorEvent struct {
	Type          string       `json:"type"`
	EventID       string       `json:"event_id,omitempty"`
	ClientEventID string       `json:"client_event_id,omitempty"`
	Error         *ErrorDetail `json:"error"`
}

// NewError encodes an error event of tether's own, for the client.
func NewError(errType, code, message, clientEventID string) []byte {
	b, _ := json.Marshal(ErrorEvent{Type: Error, Error: &ErrorDetail{
		Type: errType, Code: &code, Message: message, ClientEventID: clientEventID}})
	return b
}

// CloseMessage is the session.close event tether sends when it ends a session.
var CloseMessage = []byte(`{"type":"` + SessionClose + `"}`)

// Started is the verdict on an upstream's answer to session.start.
type Started struct {
	// OK: session.started, the session runs.
	OK bool
	// Type is the event's type.
	Type string
	// ErrType and Code describe an error event in place of session.started.
	ErrType, Code string
}

// CheckStarted decodes an upstream event received while waiting for
// session.started: session.started is success, an error event a failed
// start; any other type is neither (the caller keeps waiting).
func CheckStarted(payload []byte) (Started, error) {
	var ev struct {
		Type  string       `json:"type"`
		Error *ErrorDetail `json:"error"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Started{}, err
	}
	st := Started{Type: ev.Type, OK: ev.Type == SessionStarted}
	if ev.Error != nil {
		st.ErrType, st.Code = ev.Error.Type, ev.Error.CodeString()
	}
	return st, nil
}

// Dialect is GPT-Live's dialect.
type Dialect struct{}

var (
	_ dialect.Dialect = Dialect{}
	_ dialect.Closer  = Dialect{}
)

// Name implements dialect.Dialect.
func (Dialect) Name() string { return "live" }

// Activity implements dialect.Dialect: transcripts tell a turn from the
// audio track that never stops.
func (Dialect) Activity() bool { return true }

// ClientEvent implements dialect.Dialect.
func (Dialect) ClientEvent(dialect.Signals, []byte) {}

// UpstreamEvent implements dialect.Dialect: transcripts are the turn
// activity of a stream whose audio never stops.
func (Dialect) UpstreamEvent(s dialect.Signals, typ, _ []byte) {
	switch string(typ) {
	case InputTranscriptDelta:
		s.SpeechEnded() // time to first answer runs from the caller's last words
	case OutputTranscriptDelta:
		s.AnswerSpoken()
	}
}

// Capture implements dialect.Dialect.
func (Dialect) Capture(typ []byte) bool {
	switch string(typ) {
	case SessionStarted, UsageUpdated, SessionClosed, Error, DelegationCreated, ResponseEvent:
		return true
	}
	return false
}

// Hold implements dialect.Dialect: error events may quote a credential.
func (Dialect) Hold(typ []byte) bool { return string(typ) == Error }

// Captured implements dialect.Dialect.
func (Dialect) Captured(s dialect.Signals, typ, payload []byte) {
	switch string(typ) {
	case SessionStarted:
		var ev SessionEvent
		if json.Unmarshal(payload, &ev) == nil {
			s.SessionStarted(ev.Session.ID, ev.Session.Model)
		}
	case UsageUpdated:
		var ev UsageEvent
		if json.Unmarshal(payload, &ev) == nil {
			s.AudioSeconds(ev.Usage.Seconds)
		}
	case SessionClosed:
		var ev ClosedEvent
		_ = json.Unmarshal(payload, &ev)
		if ev.Usage != nil {
			s.AudioSeconds(ev.Usage.Seconds)
		}
		s.UpstreamEnded(ev.Reason)
	case Error:
		var ev ErrorEvent
		_ = json.Unmarshal(payload, &ev)
		if ev.Error != nil {
			s.UpstreamError(ev.Error.Type, ev.Error.CodeString())
		} else {
			s.UpstreamError("", "")
		}
	case DelegationCreated:
		s.CallerActive() // the model works on the caller's request: a turn is in progress
	case ResponseEvent:
		if !bytes.Contains(payload, []byte(ResponseCompleted)) {
			return // a streaming delta of a delegated answer: nothing to count
		}
		var ev NestedEvent
		if json.Unmarshal(payload, &ev) == nil && ev.Event.Type == ResponseCompleted &&
			ev.Event.Response != nil && ev.Event.Response.Usage != nil {
			u := ev.Event.Response.Usage
			s.TokensUsed(dialect.Tokens{Input: u.InputTokens, Output: u.OutputTokens,
				InputText: u.InputTokens, OutputText: u.OutputTokens, Cached: u.InputTokensDetails.CachedTokens})
		}
	}
}

// Close implements dialect.Closer: a GPT-Live session ends with
// session.close, answered by session.closed (final usage).
func (Dialect) Close() []byte { return CloseMessage }
