package e2e

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"text/template"

	"github.com/tetherproxy/tether/upstreams/mock"
)

// fixtureDefaults fill every placeholder of the testdata/*.yaml templates;
// tests override what they exercise.
var fixtureDefaults = map[string]string{
	"Listen":             "127.0.0.1:0",
	"UpstreamURL":        "ws://127.0.0.1:1/v1/realtime",
	"SecondURL":          "ws://127.0.0.1:1/v1/realtime",
	"MaxFrameBytes":      "16777216",
	"MaxSessions":        "100",
	"AllowedOrigins":     "[]",
	"ClientHBInterval":   "15s",
	"ClientHBTimeout":    "10s",
	"UpstreamHBInterval": "15s",
	"UpstreamHBTimeout":  "10s",
	"IdleTimeout":        "60s",
	"MaxDuration":        "10m",
	"DrainTimeout":       "10s",
	"DialTimeout":        "3s",
	"APIKeyEnv":          "E2E_UPSTREAM_KEY",
	"APIKeyFile":         "",
	"AllowedModels":      "[]",
	"ParkAfter":          "1s", // tether's default; the park scenarios shorten it
}

// renderFixture fills testdata/name with vars (over fixtureDefaults) and
// writes the result to a temp file, returning its path.
func renderFixture(t testing.TB, name string, vars map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(string(raw))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	data := maps.Clone(fixtureDefaults)
	maps.Copy(data, vars)
	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startMock runs an in-test mock realtime backend and returns it with its
// ws:// URL.
func startMock(t testing.TB, opts mock.Options) (*mock.Server, string) {
	t.Helper()
	m := mock.New(opts)
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, "ws://" + addr.String() + "/v1/realtime"
}

// handshakeLog records the upgrade requests an upstream received.
type handshakeLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (h *handshakeLog) record(r *http.Request) {
	c := r.Clone(context.Background())
	h.mu.Lock()
	h.reqs = append(h.reqs, c)
	h.mu.Unlock()
}

func (h *handshakeLog) all() []*http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*http.Request(nil), h.reqs...)
}

func (h *handshakeLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// tap is a TCP relay between tether and an upstream that records every byte
// tether sends, so a test can see the frames (close codes) on the upstream

// ---------------------------------------------------------------------------
// A complete set-up: in-test mock <- tap <- tether <- client

type rig struct {
	p    *proc
	m    *mock.Server
	hs   *handshakeLog
	tap  *tap
	base int // tether's goroutines before any session
}

// newRig starts an in-test mock, a tap in front of it and tether (fixture
// proxy.yaml with vars) pointing at the tap.
func newRig(t testing.TB, vars map[string]string, mo mock.Options) *rig {
	t.Helper()
	r := &rig{hs: &handshakeLog{}}
	mo.OnHandshake = r.hs.record
	var url string
	r.m, url = startMock(t, mo)
	r.tap, url = startTap(t, url)
	v := map[string]string{"UpstreamURL": url}
	maps.Copy(v, vars)
	r.p = startTether(t, "proxy.yaml", v)
	r.base = r.p.baseline()
	return r
}

// dial opens a client session through tether and waits for session.created.
func (r *rig) dial(t testing.TB, o clientOpts) *rtClient {
	t.Helper()
	c := dialClient(t, r.p.Listen, o)
	c.WaitEvent("session.created", stepTimeout)
	return c
}
