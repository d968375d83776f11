package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

// hangingUpstream accepts TCP connections and never finishes the handshake:
// with upgraded false it never answers the HTTP upgrade; with upgraded true
// it answers 101 and then never sends session.created. accepted receives
// one value per connection once it is in that state.
func hangingUpstream(t *testing.T, upgraded bool) (url string, accepted <-chan struct{}) {
	t.Helper()
	acc := make(chan struct{}, 16)
	s := testkit.Serve(t, func(c net.Conn) {
		if upgraded {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := ws.Upgrade(c); err != nil {
				t.Errorf("upstream upgrade: %v", err)
			}
			_ = c.SetDeadline(time.Time{})
		}
		acc <- struct{}{}
	})
	return s.URL("/v1/realtime"), acc
}

// drainDialEnv is a handler whose only upstream hangs.
func drainDialEnv(t *testing.T, upgraded bool, drainTimeout time.Duration) (*lifecycle.Manager, string, <-chan struct{}) {
	t.Helper()
	url, accepted := hangingUpstream(t, upgraded)
	d, err := upstreams.NewDialer([]upstreams.Config{{Name: "hang", Type: upstreams.KindMock, URL: url,
		DialTimeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	mgr := lifecycle.NewManager(lifecycle.Options{DrainTimeout: drainTimeout})
	srv := httptest.NewServer(NewHandler(mgr, d, HandlerOptions{HandshakeTimeout: 10 * time.Second, Relay: testRelayOptions()}))
	t.Cleanup(srv.Close)
	return mgr, "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/realtime", accepted
}

type upgradeResult struct {
	resp *http.Response
	body string
	at   time.Time
}

func upgradeAsync(t *testing.T, url string) <-chan upgradeResult {
	out := make(chan upgradeResult, 1)
	go func() {
		resp, raw := upgrade(t, url, nil)
		out <- upgradeResult{resp, string(raw), time.Now()}
	}()
	return out
}

// await waits for the upgrade's answer; upgrade fails the test (from its
// goroutine) when none comes within 5 s, so this gives up after 6 s.
func await(t *testing.T, res <-chan upgradeResult) upgradeResult {
	t.Helper()
	return testkit.Recv(t, res, 6*time.Second, "the answer to the upgrade")
}

func check503(t *testing.T, r upgradeResult, from time.Time, within time.Duration) {
	t.Helper()
	if r.resp.StatusCode != http.StatusServiceUnavailable || r.resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade answered %d (Retry-After %q): %s; want 503 with Retry-After", r.resp.StatusCode, r.resp.Header.Get("Retry-After"), r.body)
	}
	if !strings.Contains(r.body, `"draining"`) {
		t.Errorf("answer body %s, want code draining", r.body)
	}
	if d := r.at.Sub(from); d > within {
		t.Errorf("503 came %v after, want within %v", d, within)
	}
}

// TestSecondSignalCancelsDialsWith503: an upgrade whose upstream never
// answers (before or after the HTTP upgrade) gets 503 with Retry-After
// within 100 ms of the second signal, not 502 after the dial timeout, and
// Drain returns at once.
func TestSecondSignalCancelsDialsWith503(t *testing.T) {
	for _, upgraded := range []bool{false, true} {
		name := map[bool]string{false: "no_http_answer", true: "no_first_event"}[upgraded]
		t.Run(name, func(t *testing.T) {
			mgr, url, accepted := drainDialEnv(t, upgraded, 30*time.Second)
			res := upgradeAsync(t, url)
			<-accepted
			force, forceNow := context.WithCancel(context.Background())
			defer forceNow()
			drained := make(chan struct{})
			go func() { mgr.Drain(force); close(drained) }()
			time.Sleep(50 * time.Millisecond)
			select {
			case r := <-res:
				t.Fatalf("upgrade answered %d before the second signal", r.resp.StatusCode)
			default:
			}
			at := time.Now()
			forceNow()
			check503(t, await(t, res), at, 100*time.Millisecond)
			select {
			case <-drained:
			case <-time.After(time.Second):
				t.Fatal("Drain did not return after the second signal")
			}
		})
	}
}

// TestDrainDeadlineCancelsDialsWith503: with no session open, an upgrade
// still dialing keeps Drain waiting until drain_timeout, then gets 503.
func TestDrainDeadlineCancelsDialsWith503(t *testing.T) {
	mgr, url, accepted := drainDialEnv(t, false, 300*time.Millisecond)
	res := upgradeAsync(t, url)
	<-accepted
	start := time.Now()
	drained := make(chan struct{})
	go func() { mgr.Drain(context.Background()); close(drained) }()
	r := await(t, res)
	check503(t, r, start, 300*time.Millisecond+100*time.Millisecond)
	if d := r.at.Sub(start); d < 300*time.Millisecond {
		t.Errorf("503 came %v into a 300ms drain, want at the deadline", d)
	}
	select {
	case <-drained:
	case <-time.After(time.Second):
		t.Fatal("Drain did not return after the deadline")
	}
}
