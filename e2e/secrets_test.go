package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// Client-side credentials that must stay on the client leg.
const (
	clientAuthToken = "client-own-bearer-Zq81"
	clientProtoKey  = "ek_clientEphemeral9p3"
	clientQueryKey  = "clientQuerySecret55x"
)

// secretClient dials with every kind of client credential.
func secretClient(t *testing.T, addr string) *rtClient {
	t.Helper()
	c := dialClient(t, addr, clientOpts{
		Path:      "/v1/realtime?model=gpt-realtime&api-key=" + clientQueryKey,
		Header:    http.Header{"Authorization": {"Bearer " + clientAuthToken}},
		Protocols: []string{"realtime", "openai-insecure-api-key." + clientProtoKey},
	})
	if c.Protocol != "realtime" {
		t.Errorf("negotiated subprotocol %q, want realtime (never the key)", c.Protocol)
	}
	return c
}

// checkUpstreamHandshake asserts the upstream got Bearer key and none of the
// client's own credentials.
func checkUpstreamHandshake(t *testing.T, r *http.Request, key string) {
	t.Helper()
	if got := r.Header.Get("Authorization"); got != "Bearer "+key {
		t.Errorf("upstream Authorization %q, want the configured key", redactFor(got, key))
	}
	if vs := r.Header.Values("Authorization"); len(vs) != 1 {
		t.Errorf("upstream got %d Authorization headers, want 1", len(vs))
	}
	for name, vs := range r.Header {
		for _, v := range vs {
			for _, s := range []string{clientAuthToken, clientProtoKey, "openai-insecure-api-key"} {
				if strings.Contains(v, s) {
					t.Errorf("client credential forwarded upstream in %s: %q", name, v)
				}
			}
		}
	}
	if strings.Contains(r.URL.String(), clientQueryKey) {
		t.Errorf("client api-key query parameter forwarded upstream: %s", r.URL)
	}
	if r.URL.Query().Get("model") != "gpt-realtime" {
		t.Errorf("upstream URL %s lost the client's model", r.URL)
	}
}

func redactFor(s, key string) string { return strings.ReplaceAll(s, key, "<KEY>") }

// checkNoLeak asserts no secret is in what the client received or in tether's log.
func checkNoLeak(t *testing.T, p *proc, c *rtClient, secrets ...string) {
	t.Helper()
	got := c.Received()
	logs := p.stderr.String() + p.stdout.String()
	_, metrics := p.get("/metrics")
	_, sessions := p.get("/sessions")
	for _, s := range secrets {
		if i := bytes.Index(got, []byte(s)); i >= 0 {
			t.Errorf("the client received the secret %q: ...%q...", s, got[max(0, i-60):min(len(got), i+len(s)+20)])
		}
		for line := range strings.SplitSeq(logs, "\n") {
			if strings.Contains(line, s) {
				t.Errorf("tether's log contains the secret %q: %s", s, line)
			}
		}
		if bytes.Contains(metrics, []byte(s)) || bytes.Contains(sessions, []byte(s)) {
			t.Errorf("the secret %q is in /metrics or /sessions", s)
		}
	}
}

// TestSecretsFromEnv: the key from api_key_env is injected as a bearer
// token, client credentials are consumed, and the key never reaches the
// client or the log, even inside an upstream close reason.
func TestSecretsFromEnv(t *testing.T) {
	t.Parallel()
	// No "sk-" prefix: the key must be redacted because it is the key, not
	// because it looks like one.
	const key = "E2Eenv7d1c0a9b8e7f6a5d4c3b2a1f"
	var hs handshakeLog
	_, url := startMock(t, mock.Options{APIKey: key, OnHandshake: hs.record})
	p := startTether(t, "secrets_env.yaml", map[string]string{"UpstreamURL": url, "APIKeyEnv": "E2E_UPSTREAM_KEY"},
		"E2E_UPSTREAM_KEY="+key)
	base := p.baseline()

	c := secretClient(t, p.Listen)
	c.WaitEvent("session.created", stepTimeout) // the mock accepted the key
	if hs.count() != 1 {
		t.Fatalf("upstream saw %d upgrades, want 1", hs.count())
	}
	checkUpstreamHandshake(t, hs.all()[0], key)
	c.voiceTurn()

	c.fault("close", map[string]any{"code": 4400, "reason": "bye " + key + " done"})
	ci := c.WaitClose(stepTimeout)
	if ci.Code != 4400 {
		t.Errorf("client got close %d, want the upstream's 4400", ci.Code)
	}
	if strings.Contains(ci.Reason, key) {
		t.Errorf("close reason carries the key: %q", redactFor(ci.Reason, key))
	}
	c.WaitEnd(stepTimeout)
	p.assertSessionGone("upstream_closed", base)
	checkNoLeak(t, p, c, key, clientAuthToken, clientProtoKey, clientQueryKey)
}

// TestSecretsFromFile: the key comes from api_key_file and a rewritten file
// is used by the next dial; neither key ever reaches the client or the log.
func TestSecretsFromFile(t *testing.T) {
	t.Parallel()
	const key1 = "E2Efile1a2b3c4d5e6f708192a3b4c5"
	const key2 = "E2Efile2f0e1d2c3b4a5968778695a4"
	keyFile := filepath.Join(t.TempDir(), "openai.key")
	writeKey := func(k string) {
		t.Helper()
		tmp := keyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, keyFile); err != nil {
			t.Fatal(err)
		}
	}
	writeKey(key1)
	var hs handshakeLog
	_, url := startMock(t, mock.Options{OnHandshake: hs.record})
	p := startTether(t, "secrets_file.yaml", map[string]string{"UpstreamURL": url, "APIKeyFile": keyFile})

	session := func(n int, key string) {
		t.Helper()
		c := secretClient(t, p.Listen)
		c.WaitEvent("session.created", stepTimeout)
		if hs.count() != n {
			t.Fatalf("upstream saw %d upgrades, want %d", hs.count(), n)
		}
		checkUpstreamHandshake(t, hs.all()[n-1], key)
		c.fault("close", map[string]any{"code": 4400, "reason": "key " + key + " revoked"})
		ci := c.WaitClose(stepTimeout)
		if ci.Code != 4400 {
			t.Errorf("session %d: client got close %d, want 4400", n, ci.Code)
		}
		if strings.Contains(ci.Reason, key) {
			t.Errorf("session %d: the upstream's close reason reached the client with the key: %q", n, redactFor(ci.Reason, key))
		}
		c.WaitEnd(stepTimeout)
		testkit.WaitFor(t, stepTimeout, "no session", func() bool { rows, _ := p.sessions(); return len(rows) == 0 })
		checkNoLeak(t, p, c, key1, key2, clientAuthToken, clientProtoKey, clientQueryKey)
	}
	session(1, key1)
	writeKey(key2)
	session(2, key2)
}

// TestSecretsWrongKey: an upstream that rejects the key in-band
// (invalid_api_key, then close 3000) is a failed dial: the client gets 502,
// never a WebSocket, and the key appears nowhere.
func TestSecretsWrongKey(t *testing.T) {
	t.Parallel()
	const key = "E2Ewrong5e4d3c2b1a0f9e8d7c6b5a4"
	var hs handshakeLog
	_, url := startMock(t, mock.Options{APIKey: "the-right-key-000000", OnHandshake: hs.record})
	p := startTether(t, "secrets_env.yaml", map[string]string{"UpstreamURL": url}, "E2E_UPSTREAM_KEY="+key)
	a := rawUpgrade(t, p.Listen, "/v1/realtime", nil)
	if a.Status != http.StatusBadGateway {
		t.Errorf("upgrade with a rejected upstream key: HTTP %d %s, want 502", a.Status, a.Body)
	}
	if hs.count() != 1 {
		t.Errorf("upstream saw %d upgrades, want 1", hs.count())
	}
	if strings.Contains(string(a.Body), key) || strings.Contains(p.stderr.String(), key) {
		t.Errorf("the key leaked into the 502 body or the log")
	}
	if v, _ := p.metric("tether_sessions_total"); v != 0 {
		t.Errorf("tether_sessions_total = %v after a failed dial, want 0", v)
	}
	if v, _ := p.metric("tether_upstream_dial_seconds_count"); v < 1 {
		t.Errorf("tether_upstream_dial_seconds has no observation for the failed dial")
	}
}
