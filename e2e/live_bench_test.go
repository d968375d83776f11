package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// BenchmarkLiveFirstAudio measures a GPT-Live session's setup as a caller
// sees it: connect, session.start, session.started and the first output
// audio delta, straight to the mock and through tether (the binary) in
// front of the same mock. The difference of the two is what tether adds.
//
//	cd e2e && go test -run '^$' -bench BenchmarkLiveFirstAudio -benchtime 200x .
func BenchmarkLiveFirstAudio(b *testing.B) {
	_, mockURL := startMock(b, mock.Options{})
	p := startTether(b, "proxy.yaml", map[string]string{"UpstreamURL": mockURL})
	for _, target := range []struct{ name, url string }{
		{"direct", strings.TrimSuffix(mockURL, "/v1/realtime") + livePath},
		{"tether", "ws://" + p.Listen + livePath},
	} {
		b.Run(target.name, func(b *testing.B) {
			var started time.Duration
			for b.Loop() {
				t0 := time.Now()
				c := testkit.Dial(b, target.url, testkit.Options{Timeout: stepTimeout})
				c.Send(liveStart("gpt-live-1"))
				c.WaitEvent(live.SessionStarted, stepTimeout)
				started += time.Since(t0)
				c.WaitEvent(live.OutputAudioDelta, stepTimeout)
				c.SendClose(1000, "")
				c.WaitClose(stepTimeout)
				c.Close()
			}
			b.ReportMetric(float64(started.Microseconds())/float64(b.N), "us-to-started/op")
		})
	}
}
