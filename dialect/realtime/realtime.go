// Package realtime is the OpenAI Realtime API's event vocabulary (GA names,
// and the beta names where they differ) and its dialect: the typed events
// tether decodes, the first-event check of an upstream dial, and the
// translation of peeked events into session signals. The relay, the
// upstream dialer, the mock, `tether talk` and the bench all use these names
// and types; nothing else in tether spells a Realtime event name.
package realtime

import (
	"encoding/json"

	"github.com/tetherproxy/tether/dialect"
)

// Event types.
const (
	// Client events.
	SessionUpdate          = "session.update"
	InputAudioAppend       = "input_audio_buffer.append"
	InputAudioCommit       = "input_audio_buffer.commit"
	InputAudioClear        = "input_audio_buffer.clear"
	ConversationItemCreate = "conversation.item.create"
	ConversationItemDelete = "conversation.item.delete"
	ResponseCreate         = "response.create"
	ResponseCancel         = "response.cancel"

	// Server events.
	Error                       = dialect.ErrorType
	SessionCreated              = "session.created"
	SessionUpdated              = "session.updated"
	SpeechStarted               = "input_audio_buffer.speech_started"
	SpeechStopped               = "input_audio_buffer.speech_stopped"
	InputAudioCommitted         = "input_audio_buffer.committed"
	InputAudioTimeout           = "input_audio_buffer.timeout_triggered"
	ResponseCreated             = "response.created"
	ResponseDone                = "response.done"
	RateLimitsUpdated           = "rate_limits.updated"
	OutputAudioDelta            = "response.output_audio.delta"
	OutputAudioDone             = "response.output_audio.done"
	OutputTranscriptDelta       = "response.output_audio_transcript.delta"
	OutputTranscriptDone        = "response.output_audio_transcript.done"
	OutputTextDelta             = "response.output_text.delta"
	OutputTextDone              = "response.output_text.done"
	InputAudioCleared           = "input_audio_buffer.cleared"
	ItemAdded                   = "conversation.item.added"
	ItemDone                    = "conversation.item.done"
	ItemTruncated               = "conversation.item.truncated"
	ItemDeleted                 = "conversation.item.deleted"
	InputTranscriptionCompleted = "conversation.item.input_audio_transcription.completed"
	OutputItemAdded             = "response.output_item.added"
	OutputItemDone              = "response.output_item.done"
	ContentPartAdded            = "response.content_part.added"
	ContentPartDone             = "response.content_part.done"
	FunctionCallArgumentsDone   = "response.function_call_arguments.done"

	// Beta names of the same server events.
	BetaAudioDelta      = "response.audio.delta"
	BetaAudioDone       = "response.audio.done"
	BetaTranscriptDelta = "response.audio_transcript.delta"
	BetaTranscriptDone  = "response.audio_transcript.done"
	BetaTextDelta       = "response.text.delta"
	BetaTextDone        = "response.text.done"
	// BetaItemCreated answers an item in beta (GA sends conversation.item.added
	// and conversation.item.done; the GA SDK union still lists it).
	BetaItemCreated = "conversation.item.created"

	// MockFault is the built-in mock's fault injection event (not OpenAI's).
	MockFault = "mock.fault"
)

// Conversation items: their types, roles and content part types.
const (
	ItemMessage            = "message"
	ItemFunctionCall       = "function_call"
	ItemFunctionCallOutput = "function_call_output"

	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleSystem    = "system"

	PartInputText   = "input_text"
	PartInputAudio  = "input_audio"
	PartOutputText  = "output_text"
	PartOutputAudio = "output_audio"
	// Beta names of an assistant message's parts.
	BetaPartText  = "text"
	BetaPartAudio = "audio"

	// PreviousRoot is the previous_item_id that puts an item first.
	PreviousRoot = "root"
)

// Object names and values of session and response objects.
const (
	// ObjectSession is a session object's "object" (GA and beta; only GA
	// session objects have a "type").
	ObjectSession = "realtime.session"
	// ObjectResponse is a response object's "object".
	ObjectResponse = "realtime.response"
	// StatusFailed is the status of a response that failed.
	StatusFailed = "failed"
)

// Error codes tether acts on.
const (
	CodeInvalidAPIKey        = "invalid_api_key"
	CodeSessionExpired       = "session_expired"
	CodeBetaAPIShapeDisabled = "beta_api_shape_disabled"
	CodeCommitEmpty          = "input_audio_buffer_commit_empty"
	CodeActiveResponse       = "conversation_already_has_active_response"
	CodeCancelNotActive      = "response_cancel_not_active"
	CodeInvalidValue         = "invalid_value"
	CodeUnknownParameter     = "unknown_parameter"
	CodeMissingRequiredParam = "missing_required_parameter"
	CodeInsufficientQuota    = "insufficient_quota"
	// CodeUpstreamLost is tether's own: an answer the upstream session left
	// unfinished when it ended (the call resumed on a new one).
	CodeUpstreamLost = "upstream_lost"
)

// ErrTypeTether is the error type of the errors tether itself reports.
const ErrTypeTether = "tether_error"

// KnownErrorCodes are the error codes the Realtime API is seen to send.
var KnownErrorCodes = []string{
	CodeSessionExpired, CodeInvalidAPIKey, CodeBetaAPIShapeDisabled, CodeCommitEmpty,
	CodeActiveResponse, CodeCancelNotActive, CodeInvalidValue, CodeUnknownParameter,
	CodeMissingRequiredParam, CodeInsufficientQuota,
}

// ResponseStatuses are the values of response.status.
var ResponseStatuses = []string{"completed", "cancelled", "failed", "incomplete", "in_progress"}

// IsAudioDelta reports whether typ is an answer's audio delta (GA or beta).
func IsAudioDelta(typ string) bool { return typ == OutputAudioDelta || typ == BetaAudioDelta }

// IsTextDelta reports whether typ is a transcript or text delta of an answer (GA or beta).
func IsTextDelta(typ string) bool {
	switch typ {
	case OutputTranscriptDelta, BetaTranscriptDelta, OutputTextDelta, BetaTextDelta:
		return true
	}
	return false
}

// Session is the part of a session object tether reads.
type Session struct {
	ID    string `json:"id,omitempty"`
	Model string `json:"model,omitempty"`
}

// SessionEvent is session.created or session.updated.
type SessionEvent struct {
	Type    string  `json:"type"`
	Session Session `json:"session"`
}

// Usage is a response's token usage, as response.done reports it; every
// field is optional on the wire.
type Usage struct {
	TotalTokens        int64              `json:"total_tokens"`
	InputTokens        int64              `json:"input_tokens"`
	OutputTokens       int64              `json:"output_tokens"`
	InputTokenDetails  InputTokenDetails  `json:"input_token_details"`
	OutputTokenDetails OutputTokenDetails `json:"output_token_details"`
}

// InputTokenDetails splits a response's input tokens.
type InputTokenDetails struct {
	TextTokens          int64        `json:"text_tokens"`
	AudioTokens         int64        `json:"audio_tokens"`
	ImageTokens         int64        `json:"image_tokens"`
	CachedTokens        int64        `json:"cached_tokens"`
	CachedTokensDetails TokenDetails `json:"cached_tokens_details"`
}

// TokenDetails splits cached input tokens by kind.
type TokenDetails struct {
	TextTokens  int64 `json:"text_tokens"`
	AudioTokens int64 `json:"audio_tokens"`
	ImageTokens int64 `json:"image_tokens"`
}

// OutputTokenDetails splits a response's output tokens.
type OutputTokenDetails struct {
	TextTokens  int64 `json:"text_tokens"`
	AudioTokens int64 `json:"audio_tokens"`
}

// Tokens converts u to the session's token figures.
func (u *Usage) Tokens() dialect.Tokens {
	if u == nil {
		return dialect.Tokens{}
	}
	return dialect.Tokens{Input: u.InputTokens, Output: u.OutputTokens,
		InputText: u.InputTokenDetails.TextTokens, InputAudio: u.InputTokenDetails.AudioTokens,
		Cached: u.InputTokenDetails.CachedTokens, OutputText: u.OutputTokenDetails.TextTokens,
		OutputAudio: u.OutputTokenDetails.AudioTokens,
		CachedText:  u.InputTokenDetails.CachedTokensDetails.TextTokens, CachedAudio: u.InputTokenDetails.CachedTokensDetails.AudioTokens}
}

// Response is the part of a response object tether reads.
type Response struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Usage  *Usage `json:"usage"`
}

// ResponseEvent is response.created or response.done.
type ResponseEvent struct {
	Type     string   `json:"type"`
	Response Response `json:"response"`
}

// ErrorDetail and ErrorEvent are an error event (shared by the dialects).
type (
	ErrorDetail = dialect.ErrorDetail
	ErrorEvent  = dialect.ErrorEvent
)

// RateLimitsEvent is rate_limits.updated.
type RateLimitsEvent struct {
	Type       string              `json:"type"`
	RateLimits []dialect.RateLimit `json:"rate_limits"`
}

// CheckFirst decodes the first event of a Realtime upstream: session.created
// is success; an error event (OpenAI reports a bad key in-band) or anything
// else is a failed dial.
func CheckFirst(payload []byte) (dialect.Opening, error) {
	return dialect.CheckOpening(payload, SessionCreated)
}

// Dialect is the Realtime API's dialect.
type Dialect struct{}

var _ dialect.Dialect = Dialect{}

// Name implements dialect.Dialect.
func (Dialect) Name() string { return "realtime" }

// Activity implements dialect.Dialect: speech events and answers are the
// turn activity (a microphone streaming silence is not).
func (Dialect) Activity() bool { return true }

// ClientEvent implements dialect.Dialect: a commit or a response request
// asks for an answer.
func (Dialect) ClientEvent(s dialect.Signals, typ []byte) {
	switch string(typ) {
	case InputAudioCommit, ResponseCreate:
		s.AnswerRequested()
	case ConversationItemCreate:
		s.CallerActive()
	}
}

// UpstreamEvent implements dialect.Dialect.
func (Dialect) UpstreamEvent(s dialect.Signals, typ, responseID []byte) {
	switch string(typ) {
	case OutputAudioDelta, BetaAudioDelta:
		s.AnswerAudio(responseID)
	case SpeechStopped, InputAudioTimeout:
		s.SpeechEnded()
	case SpeechStarted:
		s.SpeechStarted()
	}
}

// captured are the rare events the session reads whole.
var captured = dialect.Types{Error, ResponseCreated, ResponseDone, SessionCreated, SessionUpdated, RateLimitsUpdated}

// Capture implements dialect.Dialect: the rare events the session reads whole.
func (Dialect) Capture(typ []byte) bool { return captured.Has(typ) }

// Hold implements dialect.Dialect: error events may quote a credential.
func (Dialect) Hold(typ []byte) bool { return dialect.IsError(typ) }

// Captured implements dialect.Dialect.
func (Dialect) Captured(s dialect.Signals, typ, payload []byte) {
	switch string(typ) {
	case SessionCreated, SessionUpdated:
		var ev SessionEvent
		if json.Unmarshal(payload, &ev) == nil {
			s.SessionStarted(ev.Session.ID, ev.Session.Model)
		}
	case ResponseCreated:
		var ev ResponseEvent
		_ = json.Unmarshal(payload, &ev)
		s.AnswerStarted(ev.Response.ID)
	case ResponseDone:
		var ev ResponseEvent
		_ = json.Unmarshal(payload, &ev)
		s.AnswerDone(ev.Response.ID, ev.Response.Status, ev.Response.Usage.Tokens())
	case Error:
		dialect.ReportError(s, payload)
	case RateLimitsUpdated:
		var ev RateLimitsEvent
		if json.Unmarshal(payload, &ev) == nil {
			s.RateLimits(ev.RateLimits)
		}
	}
}
