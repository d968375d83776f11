package e2e

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestParkedResume: a call with resume on whose client goes quiet (its
// leg parks) while the upstream stalls (heartbeat) or expires: the call
// resumes, and a turn after a further quiet spell is answered.
func TestParkedResume(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"stall", "expire"} {
		t.Run(fault, func(t *testing.T) {
			b := startBackup(t, 0)
			r := newResumeRig(t, parkVars(map[string]string{"SecondURL": b.srv.URL("/v1/realtime"),
				"UpstreamHBInterval": "1s", "UpstreamHBTimeout": "500ms"}))
			c := callWithMic(t, r.p.Listen)
			c.stopMic()
			// The upstream pump of a call that may resume does not park.
			awaitParked(t, r.p, 1, 1)
			start := time.Now()
			c.fault(fault, nil)
			c.WaitEvent("tether.session.resumed", stepTimeout)
			t.Logf("resumed %v after the fault", time.Since(start).Round(time.Millisecond))
			awaitParked(t, r.p, 1, 1)
			c.Send(map[string]any{"type": realtime.InputAudioAppend, "audio": base64.StdEncoding.EncodeToString(testAudio(300))})
			c.answeredOpen(t)
		})
	}
}

// TestParkedLive: a GPT-Live call's client goes quiet (its leg parks; the
// upstream's output track sends a delta every 100 ms for the whole
// session, so the upstream leg never does); speaking again gets audio
// back, and then an upstream stall on the quiet call gets the client 4002
// within the heartbeat bound.
func TestParkedLive(t *testing.T) {
	t.Parallel()
	r := newRig(t, parkVars(lvVars("")), mock.Options{})
	c := dialLive(t, r.p.Listen, clientOpts{})
	c.streaming(t)
	c.stopMic()
	awaitParked(t, r.p, 1, 1)
	before := c.audioDeltas()
	c2 := &liveCall{rtClient: c.rtClient, stop: make(chan struct{}), micDone: make(chan struct{})}
	go c2.mic()
	c2.speak(time.Second)
	time.Sleep(500 * time.Millisecond)
	c2.stopMic()
	if c.audioDeltas() <= before {
		t.Fatalf("no audio after the quiet spell (%d deltas before, %d after)", before, c.audioDeltas())
	}
	awaitParked(t, r.p, 1, 1)
	c.fault("stall", nil)
	stall := time.Now()
	expectClientClose(t, c.rtClient, stall, 4002)
	checkEnd(t, r.p, "upstream_heartbeat_timeout", r.base, stall)
}
