//go:build tetherfaults

package proxy

import "github.com/tetherproxy/tether/lifecycle"

// FaultPanicEvent is the client event type that makes a tetherfaults build
// panic inside that session's relay, to prove one session's bug cannot take
// down the others. Normal builds do not contain this code.
const FaultPanicEvent = "tether.test.panic"

func faultHook(d lifecycle.Direction, typ []byte) {
	if d == lifecycle.ClientToUpstream && string(typ) == FaultPanicEvent {
		panic("injected fault: " + FaultPanicEvent)
	}
}
