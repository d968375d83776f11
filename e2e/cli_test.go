package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

func TestCLIConfigValidate(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, nil, "config", "validate", "--config", "testdata/bad.yaml")
	if code != 1 {
		t.Errorf("validate bad.yaml: exit %d, want 1", code)
	}
	out := stdout + stderr
	for _, path := range []string{
		"server.listen", "server.max_sessions", "admin.listen", "upstreams[0].type",
		"upstreams[0].dial_timeout", "lifecycle.heartbeat.client.timeout", "lifecycle.idle_timeout",
		"lifecycle.drain_timeout", "log.level", "bogus_key",
	} {
		if !strings.Contains(out, path) {
			t.Errorf("validate bad.yaml does not list %s; output:\n%s", path, out)
		}
	}

	code, stdout, stderr = runCLI(t, nil, "config", "validate", "--config", "testdata/good.yaml")
	if code != 0 {
		t.Errorf("validate good.yaml: exit %d, want 0; output:\n%s%s", code, stdout, stderr)
	}

	code, _, stderr = runCLI(t, nil, "config", "validate", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || stderr == "" {
		t.Errorf("validate of a missing file: exit %d, stderr %q; want exit 1 and a message", code, stderr)
	}
}

func TestCLIConfigDefaults(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, nil, "config", "defaults")
	if code != 0 {
		t.Fatalf("config defaults: exit %d: %s", code, stderr)
	}
	for _, key := range []string{"server:", "admin:", "auth:", "upstreams", "lifecycle:", "tls:", "telemetry:", "log:",
		"idle_timeout:", "max_duration:", "drain_timeout:", "fatal_upstream_errors:", "max_frame_bytes:", "park_after:"} {
		if !strings.Contains(stdout, key) {
			t.Errorf("config defaults lacks %q", key)
		}
	}
	if !strings.Contains(stdout, "#") {
		t.Errorf("config defaults is not commented")
	}
	file := filepath.Join(t.TempDir(), "defaults.yaml")
	if err := os.WriteFile(file, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, o, e := runCLI(t, nil, "config", "validate", "--config", file); code != 0 {
		t.Errorf("config defaults output does not validate: exit %d\n%s%s", code, o, e)
	}
}

func TestCLIVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, nil, "version")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`^tether v?\d+\.\d+\.\d+\S*\n$`).MatchString(stdout) {
		t.Errorf("version printed %q, want \"tether X.Y.Z\"", stdout)
	}
}

func TestCLIServePortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	cfg := renderFixture(t, "proxy.yaml", map[string]string{"Listen": busy})
	start := time.Now()
	code, _, stderr := runCLI(t, nil, "serve", "--config", cfg)
	if code != 1 {
		t.Errorf("serve on a busy port: exit %d, want 1", code)
	}
	if d := time.Since(start); d > stepTimeout {
		t.Errorf("serve took %v to give up", d)
	}
	// Log records are JSON; the error is the one line that is not.
	var errLines []string
	for line := range strings.SplitSeq(strings.TrimSpace(stderr), "\n") {
		if !json.Valid([]byte(line)) {
			errLines = append(errLines, line)
		}
	}
	if len(errLines) != 1 {
		t.Fatalf("want exactly one error line, got %d; stderr:\n%s", len(errLines), stderr)
	}
	if l := errLines[0]; !strings.Contains(l, busy) || !strings.Contains(l, "in use") {
		t.Errorf("error line %q does not say that %s is in use", l, busy)
	}
}

// TestCLIMockUpstream: `tether mock-upstream` accepts a realtime session on
// its own, and behind `tether serve` as a mock-type upstream.
func TestCLIMockUpstream(t *testing.T) {
	t.Parallel()
	addr := testkit.DeadAddr(t)
	m := startProc(t, nil, "mock-upstream", "--listen", addr)
	var c *rtClient
	testkit.WaitFor(t, startTimeout, "mock-upstream to accept connections", func() bool {
		if m.hasExited() {
			t.Fatalf("mock-upstream exited with %d:\n%s", m.code, m.stderr.String())
		}
		var err error
		c, err = tryDialClient(t, addr, clientOpts{Protocols: []string{"realtime"}})
		return err == nil
	})

	c.WaitEvent("session.created", stepTimeout)
	c.voiceTurn()
	c.SendClose(1000, "")
	if ci := c.WaitClose(stepTimeout); ci.Code != 1000 {
		t.Errorf("close echo %d, want 1000", ci.Code)
	}

	// Behind tether.
	p := startTether(t, "proxy.yaml", map[string]string{"UpstreamURL": "ws://" + addr + "/v1/realtime"})
	c2 := dialClient(t, p.Listen, clientOpts{})
	c2.WaitEvent("session.created", stepTimeout)
	c2.voiceTurn()
	c2.SendClose(1000, "")
	c2.WaitClose(stepTimeout)
	c2.WaitEnd(stepTimeout)
	p.stop()

	m.signal(syscall.SIGTERM)
	if code := m.waitExit(exitTimeout); code != 0 {
		t.Errorf("mock-upstream exit %d after SIGTERM, want 0", code)
	}
}

// TestCLIConfigFromEnv: the config file comes from $TETHER_CONFIG and a
// TETHER_<PATH> variable overrides a key of it.
func TestCLIConfigFromEnv(t *testing.T) {
	t.Parallel()
	_, url := startMock(t, mock.Options{})
	cfg := renderFixture(t, "proxy.yaml", map[string]string{"UpstreamURL": url, "IdleTimeout": "60s"})
	p := startProc(t, []string{"TETHER_CONFIG=" + cfg, "TETHER_LIFECYCLE_IDLE_TIMEOUT=1s"}, "serve")
	p.waitStarted()
	c := dialClient(t, p.Listen, clientOpts{})
	c.WaitEvent("session.created", stepTimeout)
	last := time.Now()
	ci := c.WaitClose(stepTimeout)
	if ci.Code != 4000 {
		t.Errorf("close %d, want 4000 from TETHER_LIFECYCLE_IDLE_TIMEOUT=1s", ci.Code)
	}
	if d := ci.At.Sub(last); d > 2*time.Second {
		t.Errorf("idle close after %v: the env override (1s) did not win over the file (60s)", d)
	}
}

// TestCLIServeStartError: a config that validates but cannot start (the
// upstream's key variable is unset) is a one-line error and exit 1.
func TestCLIServeStartError(t *testing.T) {
	t.Parallel()
	cfg := renderFixture(t, "secrets_env.yaml", map[string]string{"UpstreamURL": "ws://127.0.0.1:1/v1/realtime",
		"APIKeyEnv": "E2E_UNSET_KEY_VARIABLE"})
	code, _, stderr := runCLI(t, nil, "serve", "--config", cfg)
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	var errLines []string
	for line := range strings.SplitSeq(strings.TrimSpace(stderr), "\n") {
		if !json.Valid([]byte(line)) {
			errLines = append(errLines, line)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "E2E_UNSET_KEY_VARIABLE") {
		t.Errorf("want one error line naming E2E_UNSET_KEY_VARIABLE; stderr:\n%s", stderr)
	}
}

// TestCLIServeAutoOpenAI: with no upstream configured and OPENAI_API_KEY
// set, tether fronts OpenAI, says so, and never logs the key.
func TestCLIServeAutoOpenAI(t *testing.T) {
	t.Parallel()
	const key = "sk-e2e-auto-9f8e7d6c5b4a39281706"
	cfg := renderFixture(t, "builtin_mock.yaml", nil)
	p := startProc(t, []string{"OPENAI_API_KEY=" + key}, "serve", "--config", cfg)
	p.waitStarted()
	var ups string
	for _, rec := range p.logRecords() {
		if rec["msg"] == "tether started" {
			ups = fmt.Sprint(rec["upstreams"])
		}
	}
	if !strings.Contains(strings.ToLower(ups), "openai") || strings.Contains(ups, "mock") {
		t.Errorf("start line upstreams %q, want the openai upstream", ups)
	}
	p.stop()
	if strings.Contains(p.stderr.String(), key) {
		t.Errorf("the log contains OPENAI_API_KEY")
	}
}
