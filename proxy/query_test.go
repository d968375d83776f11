package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tetherproxy/tether/internal/testkit/prom"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/metrics"
	"github.com/tetherproxy/tether/upstreams"
)

// TestEveryModelValueIsChecked: a query naming the model more than once (in
// any spelling of the key) is refused with 400 before any dial, whichever
// value comes first; a single Model= is checked and passed on as model=.
func TestEveryModelValueIsChecked(t *testing.T) {
	env := newHandlerEnv(t, HandlerOptions{}, lifecycle.Options{}, []string{"gpt-realtime"})
	for _, q := range []string{
		"model=gpt-realtime&model=gpt-4o",
		"model=gpt-4o&model=gpt-realtime",
		"model=gpt-realtime&model=gpt-realtime",
		"model=gpt-realtime&MODEL=gpt-4o",
		"Model=gpt-4o",
		"model=gpt-realtime&x=%zz", // malformed: some values cannot be read
	} {
		resp, body := upgrade(t, env.url+"?"+q, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: status %d, want 400: %s", q, resp.StatusCode, body)
		}
	}
	if n := env.dials.Load(); n != 0 {
		t.Fatalf("the upstream was dialed %d times for refused handshakes", n)
	}
	if got := rejections(t, env.metrics, "model_not_allowed"); got != 5 {
		t.Errorf("model_not_allowed rejections = %v, want 5", got)
	}
	resp, body := upgrade(t, env.url+"?Model=gpt-realtime", nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("?Model=gpt-realtime: %d %s", resp.StatusCode, body)
	}
	if q := env.lastReq.Load().URL.Query(); len(q) != 1 || q.Get("model") != "gpt-realtime" {
		t.Fatalf("upstream query %v, want model=gpt-realtime only", q)
	}
}

// TestClientCannotPickCredentialsOrAccount: credential query parameters in
// any case, and OpenAI-Organization / OpenAI-Project in any case, never
// reach the upstream; the upstream's configured headers and URL parameters
// win over the client's.
func TestClientCannotPickCredentialsOrAccount(t *testing.T) {
	env := newHandlerEnv(t, HandlerOptions{}, lifecycle.Options{}, nil, func(u *upstreams.Config) {
		u.URL += "?api-version=2025-04-01&deployment=prod"
		u.Headers = map[string]string{"OpenAI-Project": "proj_tether"}
	})
	q := "model=gpt-realtime&API-KEY=leak1&Api_Key=leak2&Key=leak3&TOKEN=leak4&apikey=leak5&access_token=leak6" +
		"&api-version=2020-01-01&DEPLOYMENT=cheap&foo=bar"
	hdr := http.Header{
		"openai-organization": {"org_client"},
		"OPENAI-PROJECT":      {"proj_client"},
		"OpenAI-Organization": {"org_client2"},
		"Traceparent":         {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	}
	resp, body := upgrade(t, env.url+"?"+q, hdr)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	r := env.lastReq.Load()
	if strings.Contains(r.URL.RawQuery, "leak") {
		t.Errorf("client credential parameter forwarded: %q", r.URL.RawQuery)
	}
	got := r.URL.Query()
	if v := got["api-version"]; len(v) != 1 || v[0] != "2025-04-01" {
		t.Errorf("api-version %v, want the configured 2025-04-01 only (query %q)", v, r.URL.RawQuery)
	}
	if v := got["deployment"]; len(v) != 1 || v[0] != "prod" || got.Has("DEPLOYMENT") {
		t.Errorf("deployment %v, want the configured prod only (query %q)", v, r.URL.RawQuery)
	}
	if got.Get("model") != "gpt-realtime" || got.Get("foo") != "bar" {
		t.Errorf("client parameters lost: %q", r.URL.RawQuery)
	}
	if v := r.Header.Values("OpenAI-Organization"); len(v) != 0 {
		t.Errorf("client OpenAI-Organization forwarded: %v", v)
	}
	if v := r.Header.Values("OpenAI-Project"); len(v) != 1 || v[0] != "proj_tether" {
		t.Errorf("OpenAI-Project %v, want the upstream's configured proj_tether only", v)
	}
	if r.Header.Get("Traceparent") == "" {
		t.Error("an allowed header (traceparent) was not forwarded")
	}
}

// rejections reads tether_handshake_rejections_total{reason}.
func rejections(t *testing.T, m *metrics.Metrics, reason string) float64 {
	t.Helper()
	v, _ := prom.Counter(t, m.Registry, "tether_handshake_rejections_total", "reason", reason)
	return v
}
