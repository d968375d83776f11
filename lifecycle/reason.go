// Package lifecycle owns every session's life: the registry, the state
// machine, heartbeats on both legs, idle and max-duration limits, teardown
// (exactly once, both legs, every timer stopped), drain, and the metrics and
// hooks recorded at each step. It never imports the relay: the relay calls it
// through Session's methods, and it acts on the relay through Transport.
package lifecycle

import "github.com/tetherproxy/tether/internal/wsframe"

// Reason is why a session ended (the tether_sessions_total{reason} label and
// the tether.teardown.reason span attribute).
type Reason string

// Teardown reasons (contract: see the README's close-code table).
const (
	ReasonClientClosed             Reason = "client_closed"
	ReasonUpstreamClosed           Reason = "upstream_closed"
	ReasonClientError              Reason = "client_error"
	ReasonUpstreamError            Reason = "upstream_error"
	ReasonClientHeartbeatTimeout   Reason = "client_heartbeat_timeout"
	ReasonUpstreamHeartbeatTimeout Reason = "upstream_heartbeat_timeout"
	ReasonIdleTimeout              Reason = "idle_timeout"
	ReasonMaxDuration              Reason = "max_duration"
	ReasonUpstreamFatalEvent       Reason = "upstream_fatal_event"
	ReasonFrameTooLarge            Reason = "frame_too_large"
	ReasonProtocolError            Reason = "protocol_error"
	ReasonAdmin                    Reason = "admin"
	ReasonBudgetExhausted          Reason = "budget_exhausted"
	ReasonShutdown                 Reason = "shutdown"
	ReasonPanic                    Reason = "panic"
)

// AllReasons lists every reason, for pre-creating metric series.
var AllReasons = []Reason{
	ReasonClientClosed, ReasonUpstreamClosed, ReasonClientError, ReasonUpstreamError,
	ReasonClientHeartbeatTimeout, ReasonUpstreamHeartbeatTimeout, ReasonIdleTimeout,
	ReasonMaxDuration, ReasonUpstreamFatalEvent, ReasonFrameTooLarge, ReasonProtocolError,
	ReasonAdmin, ReasonBudgetExhausted, ReasonShutdown, ReasonPanic,
}

// IsError reports whether the reason is a failure (span status error).
func (r Reason) IsError() bool {
	switch r {
	case ReasonClientClosed, ReasonUpstreamClosed, ReasonIdleTimeout, ReasonMaxDuration,
		ReasonAdmin, ReasonBudgetExhausted, ReasonShutdown:
		return false
	}
	return true
}

// Leg names one side of a session.
type Leg uint8

const (
	// Client is the leg between the caller and tether.
	Client Leg = iota
	// Upstream is the leg between tether and the voice backend.
	Upstream
)

func (l Leg) String() string {
	if l == Client {
		return "client"
	}
	return "upstream"
}

// Direction is the way a frame travels.
type Direction uint8

const (
	// ClientToUpstream frames were read from the client leg.
	ClientToUpstream Direction = iota
	// UpstreamToClient frames were read from the upstream leg.
	UpstreamToClient
)

// Source is the leg a frame travelling d is read from.
func (d Direction) Source() Leg {
	if d == ClientToUpstream {
		return Client
	}
	return Upstream
}

// Dest is the leg a frame travelling d is written to.
func (d Direction) Dest() Leg {
	if d == ClientToUpstream {
		return Upstream
	}
	return Client
}

func (d Direction) String() string {
	if d == ClientToUpstream {
		return "client_to_upstream"
	}
	return "upstream_to_client"
}

// CodeNone in a CloseFrame sends no close frame on that leg: it is closed
// at TCP level. The close codes themselves are wsframe's.
const CodeNone wsframe.CloseCode = 0

// CloseFrame is what tether sends on one leg at teardown. Code CodeNone sends
// nothing; wsframe.NoStatusReceived sends an empty close.
type CloseFrame struct {
	Code   wsframe.CloseCode
	Reason string
	// Notice, if set, is a text message (a dialect's error event) written on
	// the leg just before the close frame, when the leg is at a message
	// boundary.
	Notice string
}

// legCloses is what a teardown sends on each leg.
type legCloses struct{ client, upstream CloseFrame }

// teardownCloses is the contract's teardown table: the close frames each
// reason sends. client_closed and upstream_closed are filled from the
// peer's frame instead; a reason not listed closes both legs normally.
var teardownCloses = map[Reason]legCloses{
	ReasonClientError:              {upstream: CloseFrame{Code: wsframe.GoingAway}},
	ReasonUpstreamError:            {client: CloseFrame{Code: wsframe.BadGateway, Reason: "upstream connection lost"}},
	ReasonClientHeartbeatTimeout:   {CloseFrame{Code: wsframe.GoingAway, Reason: "heartbeat timeout"}, CloseFrame{Code: wsframe.GoingAway}},
	ReasonUpstreamHeartbeatTimeout: {CloseFrame{Code: wsframe.UpstreamTimeout, Reason: "upstream heartbeat timeout"}, CloseFrame{Code: wsframe.GoingAway}},
	ReasonIdleTimeout:              {CloseFrame{Code: wsframe.IdleTimeout, Reason: "idle timeout"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonMaxDuration:              {CloseFrame{Code: wsframe.MaxDuration, Reason: "max duration reached"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonUpstreamFatalEvent:       {CloseFrame{Code: wsframe.BadGateway, Reason: "upstream fatal error"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonFrameTooLarge:            {CloseFrame{Code: wsframe.MessageTooBig, Reason: "frame too large"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonProtocolError:            {CloseFrame{Code: wsframe.ProtocolError, Reason: "protocol error"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonAdmin:                    {CloseFrame{Code: wsframe.Admin, Reason: "closed by admin"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonBudgetExhausted:          {CloseFrame{Code: wsframe.BudgetExhausted, Reason: "budget exhausted"}, CloseFrame{Code: wsframe.NormalClosure}},
	ReasonShutdown:                 {CloseFrame{Code: wsframe.GoingAway, Reason: "tether shutting down"}, CloseFrame{Code: wsframe.GoingAway}},
	ReasonPanic:                    {CloseFrame{Code: wsframe.InternalError, Reason: "internal error"}, CloseFrame{Code: wsframe.GoingAway}},
}

// closeCodes maps a reason to the close frames of the contract's teardown table.
func closeCodes(r Reason) (client, upstream CloseFrame) {
	if c, ok := teardownCloses[r]; ok {
		return c.client, c.upstream
	}
	return CloseFrame{Code: wsframe.NormalClosure}, CloseFrame{Code: wsframe.NormalClosure}
}
