package lifecycle

import (
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
