package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestHandshakeRejections: upgrades tether must refuse get an HTTP answer
// before any upstream is dialed.
func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"AllowedOrigins": `["https://app.example"]`}, mock.Options{})
	good := map[string]string{"Origin": "https://app.example"}
	// Every reason the README lists is a series at 0 before any refusal, so
	// a dashboard's rate() sees the first one.
	for _, reason := range []string{"not_websocket", "bad_handshake", "bad_version", "bad_method", "origin",
		"unauthenticated", "unauthorized", "model_not_allowed", "client_limit", "budget_exhausted",
		"limits_unavailable", "draining", "max_sessions", "upstream_unavailable", "upstream_rate_limited", "client_closed"} {
		if v, found := r.p.metric("tether_handshake_rejections_total", `reason="`+reason+`"`); !found || v != 0 {
			t.Errorf(`tether_handshake_rejections_total{reason=%q} = %v (found %v) at start, want 0`, reason, v, found)
		}
	}

	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
	}{
		{"plain GET", "/v1/realtime", map[string]string{"Upgrade": "", "Connection": "", "Sec-WebSocket-Key": "",
			"Sec-WebSocket-Version": "", "Origin": "https://app.example"}, http.StatusUpgradeRequired},
		{"bad Sec-WebSocket-Version", "/v1/realtime", map[string]string{"Sec-WebSocket-Version": "8",
			"Origin": "https://app.example"}, http.StatusUpgradeRequired},
		{"wrong path", "/v1/elsewhere", good, http.StatusNotFound},
		{"disallowed Origin", "/v1/realtime", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
	}
	for _, tc := range cases {
		a := rawUpgrade(t, r.p.Listen, tc.path, tc.hdr)
		if a.Status != tc.status {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, a.Status, a.Body, tc.status)
		}
	}
	if n := r.hs.count(); n != 0 || r.tap.count() != 0 {
		t.Fatalf("the upstream saw %d upgrade(s) (%d connections) for refused handshakes", n, r.tap.count())
	}
	if v, _ := r.p.metric("tether_handshake_rejections_total"); v < 3 {
		t.Errorf("tether_handshake_rejections_total = %v, want >= 3", v)
	}
	// The allowed origin gets through.
	c := r.dial(t, clientOpts{Header: http.Header{"Origin": {"https://app.example"}}})
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	r.p.assertSessionGone("client_closed", r.base)
}

// TestHandshakeMaxSessions: beyond max_sessions an upgrade gets 503 with
// Retry-After without a dial; a freed slot admits the next client.
func TestHandshakeMaxSessions(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"MaxSessions": "1"}, mock.Options{})
	c := r.dial(t, clientOpts{})
	a := rawUpgrade(t, r.p.Listen, "/v1/realtime", nil)
	if a.Status != http.StatusServiceUnavailable || a.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade over max_sessions: %d Retry-After %q %s, want 503 with Retry-After",
			a.Status, a.Header.Get("Retry-After"), a.Body)
	}
	if n := r.hs.count(); n != 1 {
		t.Errorf("the upstream saw %d upgrades, want 1 (none for the refused client)", n)
	}
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	c.WaitEnd(stepTimeout)
	r.p.assertSessionGone("client_closed", r.base)
	c2 := r.dial(t, clientOpts{})
	c2.SendClose(1000, "")
	c2.WaitClose(stepTimeout)
}

// TestHandshakeUpstreamUnreachable: a dead upstream gives 502 with a JSON body.
func TestHandshakeUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	p := startTether(t, "proxy.yaml", map[string]string{"UpstreamURL": "ws://" + testkit.DeadAddr(t) + "/v1/realtime"})
	a := rawUpgrade(t, p.Listen, "/v1/realtime", nil)
	if a.Status != http.StatusBadGateway {
		t.Fatalf("HTTP %d %s, want 502", a.Status, a.Body)
	}
	if ct := a.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(a.Body, &body); err != nil {
		t.Errorf("502 body is not JSON: %v: %q", err, a.Body)
	}
	if rows, raw := p.sessions(); len(rows) != 0 {
		t.Errorf("a session was registered: %s", raw)
	}
	if v, _ := p.metric("tether_sessions_total"); v != 0 {
		t.Errorf("tether_sessions_total = %v after a failed dial, want 0", v)
	}
	if v, _ := p.metric("tether_handshake_rejections_total"); v != 1 {
		t.Errorf("tether_handshake_rejections_total = %v, want 1", v)
	}
}

// TestHandshakeUpstreamBlackHole: an upstream that accepts TCP and never
// answers costs the client dial_timeout, then a 502.
func TestHandshakeUpstreamBlackHole(t *testing.T) {
	t.Parallel()
	ln := testkit.Serve(t, nil) // accepts TCP, never answers
	p := startTether(t, "proxy.yaml", map[string]string{"UpstreamURL": ln.URL("/v1/realtime"),
		"DialTimeout": "1s"})
	start := time.Now()
	a := rawUpgrade(t, p.Listen, "/v1/realtime", nil)
	d := time.Since(start)
	if a.Status != http.StatusBadGateway {
		t.Errorf("HTTP %d %s, want 502", a.Status, a.Body)
	}
	if d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("answered after %v, want about dial_timeout (1s)", d)
	}
}

// TestHandshakeUpstreamRateLimited: an upstream 429 with Retry-After reaches
// the client as 429 with the same Retry-After.
func TestHandshakeUpstreamRateLimited(t *testing.T) {
	t.Parallel()
	var hits handshakeLog
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.record(r)
		w.Header().Set("Retry-After", "17")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"type":"rate_limit_exceeded"}}`))
	}))
	t.Cleanup(srv.Close)
	p := startTether(t, "proxy.yaml", map[string]string{"UpstreamURL": "ws://" + srv.Listener.Addr().String() + "/v1/realtime"})
	a := rawUpgrade(t, p.Listen, "/v1/realtime", nil)
	if a.Status != http.StatusTooManyRequests || a.Header.Get("Retry-After") != "17" {
		t.Errorf("HTTP %d Retry-After %q %s, want 429 with Retry-After 17", a.Status, a.Header.Get("Retry-After"), a.Body)
	}
	if hits.count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1", hits.count())
	}
}

// TestHandshakeFailover: the first upstream is dead, the second serves.
func TestHandshakeFailover(t *testing.T) {
	t.Parallel()
	var hs handshakeLog
	_, url := startMock(t, mock.Options{OnHandshake: hs.record})
	p := startTether(t, "failover.yaml", map[string]string{
		"UpstreamURL": "ws://" + testkit.DeadAddr(t) + "/v1/realtime",
		"SecondURL":   url,
	})
	base := p.baseline()
	c := dialClient(t, p.Listen, clientOpts{})
	c.WaitEvent("session.created", stepTimeout)
	rows, raw := p.sessions()
	if len(rows) != 1 || rows[0]["upstream"] != "backup" {
		t.Errorf("GET /sessions: %s, want one session on upstream backup", raw)
	}
	c.voiceTurn()
	if hs.count() != 1 {
		t.Errorf("the second upstream saw %d upgrades, want 1", hs.count())
	}
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	p.assertSessionGone("client_closed", base)
}
