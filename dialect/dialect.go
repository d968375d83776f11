// Package dialect is the seam between a voice protocol and the session
// lifecycle. A Dialect is the one place that knows a protocol's event names
// and shapes; it turns the events the relay peeks (and the few it captures
// whole) into Signals. Package lifecycle implements Signals and names no
// event; each protocol lives in a package of its own (dialect/realtime).
package dialect

import "encoding/json"

// Dialect turns one voice protocol's events into session signals.
type Dialect interface {
	// Name labels the dialect in metrics, spans and GET /sessions.
	Name() string
	// Activity reports whether the dialect signals turn activity (speech,
	// answers): then idle means no turn activity, else no data frame.
	Activity() bool
	// ClientEvent is called with the type of each client text message,
	// after it was forwarded. Hot path: it must not allocate.
	ClientEvent(s Signals, typ []byte)
	// UpstreamEvent is called with the type (and top-level response_id, if
	// any) of each upstream text message, after it was forwarded. Hot path
	// for audio: it must not allocate.
	UpstreamEvent(s Signals, typ, responseID []byte)
	// Capture reports whether the relay should capture an upstream message
	// of this type whole (bounded) and hand it to Captured.
	Capture(typ []byte) bool
	// Hold reports whether an upstream message of this type must be held
	// whole and scrubbed of credentials before any of it reaches the client.
	Hold(typ []byte) bool
	// Captured decodes a captured upstream event, after it was forwarded.
	// payload must not be retained.
	Captured(s Signals, typ, payload []byte)
}

// Signals is what a dialect tells the session it serves.
type Signals interface {
	// SessionStarted reports the upstream's session id and model.
	SessionStarted(conversationID, model string)
	// AnswerRequested: the caller asked for an answer (committed its audio
	// or requested a response). Time to first audio starts here unless the
	// upstream already saw the caller stop speaking.
	AnswerRequested()
	// CallerActive: the caller (or the app on its behalf) did something
	// that is part of a turn: input, context, a delegation's answer.
	CallerActive()
	// SpeechStarted: the upstream heard the caller start speaking; the turn
	// lasts until SpeechEnded, however long.
	SpeechStarted()
	// SpeechEnded: the caller stopped speaking (or, on a stream without turn
	// events, spoke last now). Time to first audio starts here.
	SpeechEnded()
	// AnswerStarted: an answer (response) is in progress from now on.
	AnswerStarted(responseID string)
	// AnswerAudio: audio of an answer was relayed. Hot path: called for
	// every audio delta; responseID aliases the relay's buffer.
	AnswerAudio(responseID []byte)
	// AnswerDone: the answer ended with status; usage is its token usage.
	AnswerDone(responseID, status string, usage Tokens)
	// AnswerSpoken: a part of an answer was spoken (a transcript fragment,
	// on a stream whose audio never stops). The first one after SpeechEnded
	// completes the time to first audio; a drain waits for a quiet moment
	// after the last one.
	AnswerSpoken()
	// TokensUsed adds token usage reported outside answer boundaries.
	TokensUsed(u Tokens)
	// AudioSeconds reports the session's cumulative billed audio seconds
	// (a total so far: the latest value wins, values are never summed).
	AudioSeconds(total float64)
	// UpstreamEnded: the upstream ended the session itself, with reason
	// (GPT-Live session.closed). The session ends when the upstream closes
	// its socket, or soon after.
	UpstreamEnded(reason string)
	// UpstreamError: the upstream sent an error event (type and code; the
	// message never leaves the dialect).
	UpstreamError(errType, code string)
	// RateLimits reports the upstream's latest rate limits.
	RateLimits(limits []RateLimit)
}

// Closer is a dialect whose sessions end with an exchange of events: Close
// is the message tether sends upstream when it ends a session whose upstream
// leg is alive; the upstream's answer is reported through UpstreamEnded.
type Closer interface {
	Close() []byte
}

// Tokens is token usage, per answer or summed over a session.
type Tokens struct {
	Input       int64 `json:"input_tokens"`
	Output      int64 `json:"output_tokens"`
	InputText   int64 `json:"input_text_tokens"`
	InputAudio  int64 `json:"input_audio_tokens"`
	OutputText  int64 `json:"output_text_tokens"`
	OutputAudio int64 `json:"output_audio_tokens"`
	Cached      int64 `json:"cached_tokens"`
	// CachedText and CachedAudio split Cached where the upstream says how
	// (part of InputText and InputAudio).
	CachedText  int64 `json:"cached_text_tokens"`
	CachedAudio int64 `json:"cached_audio_tokens"`
}

// Add adds u to t.
func (t *Tokens) Add(u Tokens) {
	t.Input += u.Input
	t.Output += u.Output
	t.InputText += u.InputText
	t.InputAudio += u.InputAudio
	t.OutputText += u.OutputText
	t.OutputAudio += u.OutputAudio
	t.Cached += u.Cached
	t.CachedText += u.CachedText
	t.CachedAudio += u.CachedAudio
}

// Sub subtracts u from t.
func (t *Tokens) Sub(u Tokens) {
	t.Input -= u.Input
	t.Output -= u.Output
	t.InputText -= u.InputText
	t.InputAudio -= u.InputAudio
	t.OutputText -= u.OutputText
	t.OutputAudio -= u.OutputAudio
	t.Cached -= u.Cached
	t.CachedText -= u.CachedText
	t.CachedAudio -= u.CachedAudio
}

// ErrorNotice is an error event tether itself sends a client, in the shape
// both dialects share: error type tether_error, with code and message.
func ErrorNotice(code, message string) string {
	b, _ := json.Marshal(ErrorEvent{Type: ErrorType, Error: &ErrorDetail{Type: "tether_error", Code: &code, Message: message}})
	return string(b)
}

// RateLimit is one of the upstream's rate limits as it last reported it.
type RateLimit struct {
	Name         string  `json:"name"`
	Limit        int64   `json:"limit"`
	Remaining    int64   `json:"remaining"`
	ResetSeconds float64 `json:"reset_seconds"`
}

// None is a dialect that knows no events: sessions relay and time out by
// frames alone.
type None struct{}

func (None) Name() string                          { return "none" }
func (None) Activity() bool                        { return false }
func (None) ClientEvent(Signals, []byte)           {}
func (None) UpstreamEvent(Signals, []byte, []byte) {}
func (None) Capture([]byte) bool                   { return false }
func (None) Hold([]byte) bool                      { return false }
func (None) Captured(Signals, []byte, []byte)      {}

// Types is a set of event types: a dialect names the events it captures,
// or its memory keeps, as one.
type Types []string

// Has reports whether typ is in ts, without allocating.
func (ts Types) Has(typ []byte) bool {
	for _, t := range ts {
		if string(typ) == t {
			return true
		}
	}
	return false
}

// ErrorType is the type of an error event in both dialects.
const ErrorType = "error"

// IsError reports whether typ is an error event's: the event a dialect holds
// whole and scrubs before the client sees it (it may quote a credential).
func IsError(typ []byte) bool { return string(typ) == ErrorType }

// ReportError decodes an error event and tells s its type and code (the
// message never leaves the dialect).
func ReportError(s Signals, payload []byte) {
	var ev ErrorEvent
	_ = json.Unmarshal(payload, &ev)
	s.UpstreamError(ev.Error.typeString(), ev.Error.CodeString())
}

func (e *ErrorDetail) typeString() string {
	if e == nil {
		return ""
	}
	return e.Type
}

// ErrorDetail is the error object of an error event, in both dialects
// (Realtime echoes the client's event as event_id, GPT-Live as
// client_event_id).
type ErrorDetail struct {
	Type          string  `json:"type"`
	Code          *string `json:"code"`
	Message       string  `json:"message,omitempty"`
	Param         string  `json:"param,omitempty"`
	EventID       string  `json:"event_id,omitempty"`
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

// Opening is the verdict on an upstream event awaited to open a session
// (Realtime's session.created, GPT-Live's session.started).
type Opening struct {
	// OK: the awaited event, the session is open.
	OK bool
	// Type is the event's type.
	Type string
	// ErrType and Code describe an error event in its place.
	ErrType, Code string
}

// CheckOpening decodes an upstream event: of type opened it opens the
// session; an error event is described.
func CheckOpening(payload []byte, opened string) (Opening, error) {
	var ev ErrorEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Opening{}, err
	}
	o := Opening{Type: ev.Type, OK: ev.Type == opened}
	if ev.Error != nil {
		o.ErrType, o.Code = ev.Error.Type, ev.Error.CodeString()
	}
	return o, nil
}
