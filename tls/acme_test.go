package tls

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
	"go.uber.org/zap"
)

func TestAllowlist(t *testing.T) {
	a := newAllowlist([]string{"rt.example.com", "*.voice.example.com", "Upper.Example.ORG."})
	for name, want := range map[string]bool{
		"rt.example.com":          true,
		"RT.Example.com.":         true,
		"upper.example.org":       true,
		"a.voice.example.com":     true,
		"x-1.voice.example.com":   true,
		"voice.example.com":       false, // the wildcard needs one more label
		"a.b.voice.example.com":   false, // and exactly one
		"*.voice.example.com":     false,
		"example.com":             false,
		"evil.example":            false,
		"rt.example.com.evil.com": false,
		"avoice.example.com":      false,
		"":                        false,
		".voice.example.com":      false,
	} {
		if got := a.allows(name); got != want {
			t.Errorf("allows(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestOnDemandRefusesUnlistedNames: a handshake for a name outside the
// allowlist fails without any request to the CA and without anything
// written for it in storage; the HTTP-01 listener answers 404 to anything
// that is not a challenge.
func TestOnDemandRefusesUnlistedNames(t *testing.T) {
	var caRequests atomic.Int32
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caRequests.Add(1)
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer ca.Close()
	caRoot := filepath.Join(t.TempDir(), "ca.pem")
	testkit.WriteFile(t, caRoot, testkit.PEM("CERTIFICATE", ca.Certificate().Raw))

	storage := filepath.Join(t.TempDir(), "acme") // created by New
	log, logs := testLogger()
	m, err := New(testkit.Listen(t), Options{Mode: ModeACME, Logger: log, ACME: ACMEOptions{
		CAURL:      ca.URL + "/directory",
		CARootFile: caRoot,
		Domains:    []string{"*.voice.test", "rt.test"},
		StorageDir: storage,
		OnDemand:   true,
		HTTPListen: "127.0.0.1:0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 || strings.Join(cfg.NextProtos, ",") != ProtoHTTP11+","+ProtoACMETLS1 {
		t.Errorf("MinVersion %x, NextProtos %q", cfg.MinVersion, cfg.NextProtos)
	}
	srv := serveEcho(t, m)

	for _, name := range []string{"evil.example", "voice.test", "a.b.voice.test", "rt.test.evil.example"} {
		conn, err := dial(srv.Addr(), name, nil)
		if err == nil {
			_ = conn.Close()
			t.Errorf("handshake for %q succeeded", name)
		}
	}
	if n := caRequests.Load(); n != 0 {
		t.Errorf("the CA got %d requests for names outside the allowlist", n)
	}
	if !strings.Contains(logs.String(), "on-demand certificate refused") {
		t.Errorf("refusals not logged:\n%s", logs)
	}
	for _, name := range []string{"evil.example", "a.b.voice.test"} {
		if found := findFiles(t, storage, name); len(found) > 0 {
			t.Errorf("storage holds %q for refused name %s", found, name)
		}
	}

	addr := m.HTTPChallengeAddr()
	if addr == nil {
		t.Fatal("no HTTP-01 listener")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/", "/v1/realtime", "/.well-known/acme-challenge/unknown-token"} {
		resp, err := client.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "HTTP-01") {
			t.Errorf("GET %s = %d %q, want 404", path, resp.StatusCode, body)
		}
	}
	client.CloseIdleConnections()
}

// findFiles lists the files under dir whose path mentions name.
func findFiles(t *testing.T, dir, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, name) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestZapBridge: certmagic's zap logging arrives in slog with its fields.
func TestZapBridge(t *testing.T) {
	log, logs := testLogger()
	zl := newZapLogger(log.Handler()).Named("certmagic").With(zap.String("ca", "pebble"))
	zl.Debug("trying to solve challenge", zap.Strings("identifiers", []string{"a.test"}), zap.Duration("took", time.Second))
	zl.Error("could not get certificate", zap.Error(io.ErrUnexpectedEOF))
	out := logs.String()
	for _, want := range []string{
		"level=DEBUG msg=\"trying to solve challenge\"", "logger=certmagic", "ca=pebble", "identifiers=[a.test]", "took=1s",
		"level=ERROR msg=\"could not get certificate\"", "error=\"unexpected EOF\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
