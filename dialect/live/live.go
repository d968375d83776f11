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
	"strings"

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
	Error                 = dialect.ErrorType
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

// Messages of session.start's session.input: text-only history, one text
// part each (openai-python types/live/initial_item.py: developer and user
// parts input_text; assistant parts output_text, or text).
const (
	ItemMessage    = "message"
	RoleDeveloper  = "developer"
	RoleUser       = "user"
	RoleAssistant  = "assistant"
	PartInputText  = "input_text"
	PartOutputText = "output_text"
)

// Limits of session.start's session.input.
const (
	MaxInputMessages = 128
	// MaxInputTokens is the most rendered tokens of all its messages.
	MaxInputTokens = 8192
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

// Errors of ParseStart. tether refuses what it cannot read unambiguously:
// an upstream might read a duplicated or differently cased key otherwise
// than tether does, and the model is what allowed_models checks.
var (
	// ErrNotStart: the first message is not a JSON object of type session.start.
	ErrNotStart = errors.New("the first message must be " + SessionStart)
	// ErrAmbiguousStart: a key tether reads (type, session, session.model)
	// appears twice, or in another case.
	ErrAmbiguousStart = errors.New(SessionStart + " names type, session or session.model more than once (or in another case)")
	// ErrModelType: session.model is neither a string nor null.
	ErrModelType = errors.New("session.model must be a string")
)

// ParseStart reads the client's first message, which must be session.start.
// Only type, event_id, session.model and session.audio.format are read;
// anything else is the service's to judge.
func ParseStart(payload []byte) (Start, error) {
	if !json.Valid(payload) { // a cut or padded message is no session.start, nor a start to replay
		return Start{}, ErrNotStart
	}
	var st Start
	typ, err := scanObject(payload, func(key string, raw json.RawMessage) error {
		switch key {
		case "event_id":
			_ = json.Unmarshal(raw, &st.EventID) // not a string: the service's to refuse
		case "session":
			return parseStartSession(raw, &st)
		}
		return nil
	}, "type", "session")
	if err != nil {
		return Start{}, err
	}
	if typ != SessionStart {
		return Start{}, ErrNotStart
	}
	return st, nil
}

// parseStartSession reads session.model and session.audio.format.
func parseStartSession(raw json.RawMessage, st *Start) error {
	if len(raw) == 0 || raw[0] != '{' {
		return nil // not an object: the service's to refuse
	}
	_, err := scanObject(raw, func(key string, v json.RawMessage) error {
		switch key {
		case "model":
			if string(v) == "null" {
				return nil
			}
			if json.Unmarshal(v, &st.Model) != nil {
				return ErrModelType
			}
		case "audio":
			var a struct {
				Format *struct {
					Type string  `json:"type"`
					Rate float64 `json:"rate"`
				} `json:"format"`
			}
			if json.Unmarshal(v, &a) == nil && a.Format != nil {
				st.Format = &AudioFormat{Type: a.Format.Type, Rate: int(a.Format.Rate)}
			}
		}
		return nil
	}, "model")
	return err
}

// scanObject walks the JSON object b, calling each for every key and raw
// value, and returns the value of its "type" key if it is a string. A key
// in unique may appear once, in exactly that case (ErrAmbiguousStart).
func scanObject(b []byte, each func(key string, v json.RawMessage) error, unique ...string) (typ string, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", ErrNotStart
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", ErrNotStart
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", ErrNotStart
		}
		for _, u := range unique {
			if strings.EqualFold(key, u) {
				if key != u || seen[u] {
					return "", ErrAmbiguousStart
				}
				seen[u] = true
			}
		}
		if key == "type" {
			_ = json.Unmarshal(v, &typ)
		}
		if err := each(key, v); err != nil {
			return "", err
		}
	}
	return typ, nil
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

// ErrorDetail and ErrorEvent are an error event (shared by the dialects).
type (
	ErrorDetail = dialect.ErrorDetail
	ErrorEvent  = dialect.ErrorEvent
)

// NewError encodes an error event of tether's own, for the client.
func NewError(errType, code, message, clientEventID string) []byte {
	b, _ := json.Marshal(ErrorEvent{Type: Error, Error: &ErrorDetail{
		Type: errType, Code: &code, Message: message, ClientEventID: clientEventID}})
	return b
}

// CloseMessage is the session.close event tether sends when it ends a session.
var CloseMessage = []byte(`{"type":"` + SessionClose + `"}`)

// CheckStarted decodes an upstream event received while waiting for
// session.started: session.started is success, an error event a failed
// start; any other type is neither (the caller keeps waiting).
func CheckStarted(payload []byte) (dialect.Opening, error) {
	return dialect.CheckOpening(payload, SessionStarted)
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

// ClientEvent implements dialect.Dialect: context the app adds (a
// delegation's answer, instructions) is part of a turn.
func (Dialect) ClientEvent(s dialect.Signals, typ []byte) {
	switch string(typ) {
	case InstructionsAppend, ThinkingAppend, CommentaryAppend, ResponseItemCreate, ResponseCreate:
		s.CallerActive()
	}
}

// UpstreamEvent implements dialect.Dialect: transcripts are the turn
// activity of a stream whose audio never stops.
func (Dialect) UpstreamEvent(s dialect.Signals, typ, _ []byte) {
	switch string(typ) {
	case InputTranscriptDelta:
		s.SpeechEnded() // time to first answer runs from the caller's last words
	case OutputTranscriptDelta:
		s.AnswerSpoken()
	case InstructionsAppended, ThinkingAppended, CommentaryAppended:
		s.CallerActive()
	}
}

// captured are the events the session reads whole.
var captured = dialect.Types{SessionStarted, UsageUpdated, SessionClosed, Error, DelegationCreated, ResponseEvent}

// Capture implements dialect.Dialect.
func (Dialect) Capture(typ []byte) bool { return captured.Has(typ) }

// Hold implements dialect.Dialect: error events may quote a credential.
func (Dialect) Hold(typ []byte) bool { return dialect.IsError(typ) }

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
		dialect.ReportError(s, payload)
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
				InputText: u.InputTokens, OutputText: u.OutputTokens, Cached: u.InputTokensDetails.CachedTokens,
				CachedText: u.InputTokensDetails.CachedTokens})
		}
	}
}

// Close implements dialect.Closer: a GPT-Live session ends with
// session.close, answered by session.closed (final usage).
func (Dialect) Close() []byte { return CloseMessage }
