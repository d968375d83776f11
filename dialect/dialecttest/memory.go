package dialecttest

import (
	"encoding/json"
	"strings"

	"github.com/tetherproxy/tether/dialect"
)

// Type is the "type" of a JSON event; empty when the event has none or is
// not JSON.
func Type(payload []byte) []byte {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(payload, &ev)
	return []byte(ev.Type)
}

// Client hands m a client event as the session does: only if m captures
// its type. It reports whether m did.
func Client(m dialect.Memory, payload []byte) bool {
	return hand(m.CaptureClient, m.Client, payload)
}

// Upstream hands m an upstream event as the session does: only if m
// captures its type. It reports whether m did.
func Upstream(m dialect.Memory, payload []byte) bool {
	return hand(m.CaptureUpstream, m.Upstream, payload)
}

func hand(capture func(typ []byte) bool, take func(typ, payload []byte), payload []byte) bool {
	typ := Type(payload)
	if !capture(typ) {
		return false
	}
	take(typ, payload)
	return true
}

// Lines calls each with every non-empty line of a fuzz input, a letter
// naming the peer followed by an event: the letter, the event's type (see
// [Type]) and the event.
func Lines(in string, each func(peer byte, typ, payload []byte)) {
	for _, line := range strings.Split(in, "\n") {
		if line == "" {
			continue
		}
		payload := []byte(line[1:])
		each(line[0], Type(payload), payload)
	}
}
