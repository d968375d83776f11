// Package lifecycle owns every session's life: the registry, the state
// machine, heartbeats on both legs, idle and max-duration limits, teardown
// (exactly once, both legs, every timer stopped), drain, and the metrics and
// hooks recorded at each step. It never imports the relay: the relay calls it
// through Session's methods, and it acts on the relay through Transport.
package lifecycle

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
	ReasonShutdown                 Reason = "shutdown"
	ReasonPanic                    Reason = "panic"
)

// AllReasons lists every reason, for pre-creating metric series.
var AllReasons = []Reason{
	ReasonClientClosed, ReasonUpstreamClosed, ReasonClientError, ReasonUpstreamError,
	ReasonClientHeartbeatTimeout, ReasonUpstreamHeartbeatTimeout, ReasonIdleTimeout,
	ReasonMaxDuration, ReasonUpstreamFatalEvent, ReasonFrameTooLarge, ReasonProtocolError,
	ReasonAdmin, ReasonShutdown, ReasonPanic,
}

// IsError reports whether the reason is a failure (span status error).
func (r Reason) IsError() bool {
	switch r {
	case ReasonClientClosed, ReasonUpstreamClosed, ReasonIdleTimeout, ReasonMaxDuration,
		ReasonAdmin, ReasonShutdown:
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

func (d Direction) String() string {
	if d == ClientToUpstream {
		return "client_to_upstream"
	}
	return "upstream_to_client"
}

// Close status codes of the contract.
const (
	CodeNone            uint16 = 0 // send no close frame on that leg
	CodeNoStatus        uint16 = 1005
	CodeNormal          uint16 = 1000
	CodeGoingAway       uint16 = 1001
	CodeProtocolError   uint16 = 1002
	CodeMessageTooBig   uint16 = 1009
	CodeBadGateway      uint16 = 1014
	CodeIdleTimeout     uint16 = 4000
	CodeMaxDuration     uint16 = 4001
	CodeUpstreamTimeout uint16 = 4002
	CodeAdmin           uint16 = 4003
	CodeInternalError   uint16 = 1011
)

// CloseFrame is what tether sends on one leg at teardown. Code CodeNone sends
// nothing (the leg is closed at TCP level); CodeNoStatus sends an empty close.
type CloseFrame struct {
	Code   uint16
	Reason string
}

// closeCodes maps a reason to the close frames of the contract's teardown table.
// client_closed and upstream_closed are filled from the peer's frame instead.
func closeCodes(r Reason) (client, upstream CloseFrame) {
	switch r {
	case ReasonClientError:
		return CloseFrame{}, CloseFrame{Code: CodeGoingAway}
	case ReasonUpstreamError:
		return CloseFrame{Code: CodeBadGateway, Reason: "upstream connection lost"}, CloseFrame{}
	case ReasonClientHeartbeatTimeout:
		return CloseFrame{Code: CodeGoingAway, Reason: "heartbeat timeout"}, CloseFrame{Code: CodeGoingAway}
	case ReasonUpstreamHeartbeatTimeout:
		return CloseFrame{Code: CodeUpstreamTimeout, Reason: "upstream heartbeat timeout"}, CloseFrame{Code: CodeGoingAway}
	case ReasonIdleTimeout:
		return CloseFrame{Code: CodeIdleTimeout, Reason: "idle timeout"}, CloseFrame{Code: CodeNormal}
	case ReasonMaxDuration:
		return CloseFrame{Code: CodeMaxDuration, Reason: "max duration reached"}, CloseFrame{Code: CodeNormal}
	case ReasonUpstreamFatalEvent:
		return CloseFrame{Code: CodeBadGateway, Reason: "upstream fatal error"}, CloseFrame{Code: CodeNormal}
	case ReasonFrameTooLarge:
		return CloseFrame{Code: CodeMessageTooBig, Reason: "frame too large"}, CloseFrame{Code: CodeNormal}
	case ReasonProtocolError:
		return CloseFrame{Code: CodeProtocolError, Reason: "protocol error"}, CloseFrame{Code: CodeNormal}
	case ReasonAdmin:
		return CloseFrame{Code: CodeAdmin, Reason: "closed by admin"}, CloseFrame{Code: CodeNormal}
	case ReasonShutdown:
		return CloseFrame{Code: CodeGoingAway, Reason: "tether shutting down"}, CloseFrame{Code: CodeGoingAway}
	case ReasonPanic:
		return CloseFrame{Code: CodeInternalError, Reason: "internal error"}, CloseFrame{Code: CodeGoingAway}
	}
	return CloseFrame{Code: CodeNormal}, CloseFrame{Code: CodeNormal}
}
