//go:build tetherfaults

package proxy

import (
	"testing"

	"github.com/tetherproxy/tether/lifecycle"
)

func TestInjectedPanicEndsOnlyThatSession(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	other := newHarness(t, testLifecycle(), testRelayOptions())
	h.client.text(`{"type":"` + FaultPanicEvent + `"}`)
	if c, _ := h.client.expectClose(t); c != 1011 {
		t.Fatalf("client close %d, want 1011", c)
	}
	if sum := h.wait(t); sum.Reason != lifecycle.ReasonPanic {
		t.Fatalf("reason %s", sum.Reason)
	}
	other.client.text(`{"type":"input_audio_buffer.append","audio":"AAAA"}`)
	<-other.upstream.raw
	if other.sess.Ended() {
		t.Fatal("a panic in one session ended another")
	}
	other.sess.End(lifecycle.ReasonAdmin)
	other.wait(t)
}
