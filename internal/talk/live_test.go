package talk

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// fastChunks streams the appends ten times faster than real time, matching
// fastMock's output track.
const fastChunks = 5 * time.Millisecond

var fastMock = mock.Options{APIKey: "sk-test", StartDelay: 20 * time.Millisecond,
	LiveDeltaInterval: 10 * time.Millisecond, UsageInterval: 50 * time.Millisecond}

func startMock(t *testing.T, opts mock.Options) string {
	t.Helper()
	srv := mock.New(opts)
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return "ws://" + addr.String() + "/v1/live/sessions"
}

func bearer(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}}
}

// TestLiveAgainstMockUpstream runs a GPT-Live session against the built-in
// mock, which echoes the caller's audio with transcripts.
func TestLiveAgainstMockUpstream(t *testing.T) {
	var authz atomic.Value // string; set on the mock's handshake goroutine
	opts := fastMock
	opts.OnHandshake = func(r *http.Request) { authz.Store(r.Header.Get("Authorization")) }
	url := startMock(t, opts)

	wav := filepath.Join(t.TempDir(), "hello.wav")
	if err := os.WriteFile(wav, EncodeWAV(Tone(0.6)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"", wav} {
		var out bytes.Buffer
		res, err := runLive(t.Context(), LiveOptions{
			Options: Options{URL: url, WAV: file, Headers: bearer("sk-test"), Timeout: 10 * time.Second, Out: &out},
			Model:   "gpt-live-test", chunkInterval: fastChunks,
		})
		if err != nil {
			t.Fatalf("RunLive(%q): %v\n%s", file, err, out.String())
		}
		if got, _ := authz.Load().(string); got != "Bearer sk-test" {
			t.Errorf("mock saw Authorization %q", got)
		}
		if !strings.HasPrefix(res.SessionID, "live_") || res.Model != "gpt-live-test" || res.ClosedReason != live.ReasonCloseRequested {
			t.Errorf("session %q model %q closed %q", res.SessionID, res.Model, res.ClosedReason)
		}
		// The mock echoes the tone: transcripts both ways, audible audio.
		if res.InputTranscript == "" || res.OutputTranscript == "" || res.AudibleBytes == 0 || res.AudioDeltas == 0 {
			t.Errorf("heard %q, said %q, %d audible bytes in %d deltas", res.InputTranscript, res.OutputTranscript, res.AudibleBytes, res.AudioDeltas)
		}
		if res.TimeToFirstAnswer <= 0 || res.UsageSeconds <= 0 {
			t.Errorf("time to first answer %v, usage %v s", res.TimeToFirstAnswer, res.UsageSeconds)
		}
		if res.AudibleBytes > res.AudioBytes || res.AudioBytes != res.AudioDeltas*4800 {
			t.Errorf("%d audible of %d bytes in %d deltas", res.AudibleBytes, res.AudioBytes, res.AudioDeltas)
		}
		for _, want := range []string{"session:     " + res.SessionID, "answer:", "received:", "usage:", "closed:      close_requested", "ok:"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		}
		if file != "" && !strings.Contains(out.String(), "0.60 s (28800 bytes, "+file+")") {
			t.Errorf("report does not name the WAV:\n%s", out.String())
		}
	}
}

func TestLiveWrongKey(t *testing.T) {
	url := startMock(t, fastMock)
	start := time.Now()
	err := RunLive(t.Context(), LiveOptions{Options: Options{URL: url, Headers: bearer("sk-wrong"), Timeout: 5 * time.Second}})
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), live.CodeInvalidAPIKey) {
		t.Errorf("err = %v, want the 401 and its code", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %v: the body read must not wait for the connection to close", d)
	}
}

// fakeLive is a scripted GPT-Live server: after session.start (answered
// with session.started unless noStart) it runs then.
func fakeLive(t *testing.T, noStart bool, then func(c *testkit.Conn)) string {
	t.Helper()
	srv := testkit.ServeWS(t, testkit.Options{}, func(c *testkit.Conn) {
		if _, ok := c.NextEvent(5 * time.Second); !ok {
			return
		}
		if !noStart {
			c.Send(map[string]any{"type": live.SessionStarted, "event_id": "event_1",
				"session": map[string]any{"id": "live_fake", "model": "gpt-live-1", "status": "active"}})
		}
		then(c)
	})
	return srv.URL("/v1/live/sessions")
}

func TestLiveFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		noStart bool
		then    func(c *testkit.Conn)
		timeout time.Duration
		want    string
	}{
		{
			name: "close before session.closed",
			then: func(c *testkit.Conn) {
				c.WaitEvent(live.InputAudioAppend, 5*time.Second)
				c.SendClose(1011, "boom")
				c.WaitEnd(5 * time.Second)
			},
			want: `server closed the WebSocket (code 1011 "boom") while waiting for the answer`,
		},
		{
			name: "error event",
			then: func(c *testkit.Conn) {
				c.WaitEvent(live.InputAudioAppend, 5*time.Second)
				c.Send(map[string]any{"type": "error", "error": map[string]any{"type": "invalid_request_error", "code": "credit_balance_exhausted", "message": "No credit."}})
				c.WaitEnd(5 * time.Second)
			},
			want: "error event: invalid_request_error/credit_balance_exhausted: No credit.",
		},
		{
			name: "session.closed unasked",
			then: func(c *testkit.Conn) {
				c.WaitEvent(live.InputAudioAppend, 5*time.Second)
				c.Send(map[string]any{"type": live.SessionClosed, "reason": "expired", "usage": map[string]any{"seconds": 3}})
				c.WaitEnd(5 * time.Second)
			},
			want: `the server ended the session (session.closed, reason "expired") while waiting for the answer`,
		},
		{
			name:    "no session.started",
			noStart: true,
			then:    func(c *testkit.Conn) { c.WaitEnd(5 * time.Second) },
			timeout: 300 * time.Millisecond,
			want:    "timed out after 300ms waiting for session.started",
		},
		{
			name: "no session.closed",
			then: func(c *testkit.Conn) {
				for range ToneDuration*1000/50 + 1 { // the tone's 50 ms appends, and some silence
					c.WaitEvent(live.InputAudioAppend, 5*time.Second)
				}
				c.Send(map[string]any{"type": live.OutputTranscriptDelta, "delta": "Hi", "start_ms": 0, "end_ms": 200})
				c.Send(map[string]any{"type": live.OutputAudioDelta, "delta": "ABAQIA=="}) // audible samples
				c.WaitEnd(5 * time.Second)
			},
			timeout: 500 * time.Millisecond,
			want:    "timed out after 500ms waiting for session.closed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := fakeLive(t, tc.noStart, tc.then)
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			var out bytes.Buffer
			err := RunLive(t.Context(), LiveOptions{Options: Options{URL: url, Timeout: timeout, Out: &out}, chunkInterval: fastChunks})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q\n%s", err, tc.want, out.String())
			}
			if strings.Contains(out.String(), "ok:") {
				t.Errorf("a failed session reported ok:\n%s", out.String())
			}
		})
	}
}

func TestLiveAudioLongerThanTimeout(t *testing.T) {
	err := RunLive(t.Context(), LiveOptions{Options: Options{URL: "ws://127.0.0.1:1/v1/live/sessions", Timeout: 500 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "raise --timeout") {
		t.Errorf("err = %v, want the audio-longer-than-timeout error before dialing", err)
	}
}
