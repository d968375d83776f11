package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// nodeTimeout bounds the whole `node --test` run (two short sessions).
const nodeTimeout = 90 * time.Second

// TestNodeOpenAIClient drives tether with the official `openai` npm
// package's realtime WebSocket client (openai/realtime/ws, unmodified) under
// Node: the tests in node/realtime.test.mjs complete a voice turn and see
// close 1014 when the upstream resets mid-response. The client always dials
// wss:// (it rewrites the base URL's scheme), so tether serves TLS from files
// signed by a throwaway CA that Node trusts through NODE_EXTRA_CA_CERTS.
//
// It needs node (>= 20) and npm (see requireNode); without them it is
// skipped, unless TETHER_REQUIRE_NODE is set (CI), when it fails.
func TestNodeOpenAIClient(t *testing.T) {
	t.Parallel()
	node := requireNode(t)

	ca := testkit.NewCA(t)
	certFile, keyFile, _ := ca.IssueFiles(t, "127.0.0.1", "localhost")
	p := startTether(t, "node_tls.yaml", map[string]string{"CertFile": certFile, "KeyFile": keyFile})
	waitLog(t, p, stepTimeout, "tls certificate loaded")
	logOnFailure(t, p)

	if !runNodeTests(t, node, "realtime.test.mjs", 2, "TETHER_BASE_URL=https://"+p.Listen+"/v1", "NODE_EXTRA_CA_CERTS="+ca.File) {
		t.FailNow()
	}

	// What tether saw: the voice turn ended by the client's close, the
	// second session by the upstream's reset; nothing left open.
	waitEnded(t, p, 2)
	for reason, want := range map[string]float64{"client_closed": 1, "upstream_error": 1} {
		if got, _ := p.metric("tether_sessions_total", `reason="`+reason+`"`); got != want {
			t.Errorf("tether_sessions_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if rows, raw := p.sessions(); len(rows) != 0 {
		t.Errorf("GET /sessions after the node tests: %s", raw)
	}
	if got, _ := p.metric("tether_responses_total", `status="completed"`); got != 1 {
		t.Errorf("tether_responses_total{status=\"completed\"} = %v, want 1 (the voice turn)", got)
	}
}

// nodeModuleFiles are files the node tests import, under e2e/node/node_modules:
// the openai 6.x Realtime client, the openai 7.x GPT-Live client (npm
// alias openai-live) and the OpenAI Agents SDK's realtime package, all
// pinned in e2e/node/package.json.
var nodeModuleFiles = []string{
	"openai/realtime/ws.js",
	"openai-live/resources/live/ws.js",
	"@openai/agents-realtime/dist/index.mjs",
}

// requireNode returns the node binary with e2e/node/node_modules installed.
// It skips (fails with TETHER_REQUIRE_NODE set, as in CI) when node >= 20 or
// npm is missing. When node_modules lacks a client the tests import (a fresh
// clone, or one installed before a dependency was added) it runs `npm ci` in
// e2e/node once for all the node tests; a failing install fails the test.
func requireNode(t *testing.T) string {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		testkit.Missing(t, "TETHER_REQUIRE_NODE", format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed: the official openai client tests need Node >= 20 and npm")
		return ""
	}
	v, err := exec.Command(node, "--version").Output()
	if err != nil {
		missing("node --version: %v", err)
		return ""
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(v)), "v"), ".")
	if n, err := strconv.Atoi(major); err != nil || n < 20 {
		missing("node %s is too old: the openai client tests need Node >= 20", strings.TrimSpace(string(v)))
		return ""
	}
	if nodeModulesMissing() != "" {
		if _, err := exec.LookPath("npm"); err != nil {
			missing("npm is not installed: the openai client tests install their packages with `npm ci` in e2e/node")
			return ""
		}
	}
	npmOnce.Do(func() { npmErr = npmCI() })
	if npmErr != nil {
		t.Fatalf("installing e2e/node's packages: %v", npmErr)
	}
	return node
}

var (
	npmOnce sync.Once
	npmErr  error
)

// nodeModulesMissing returns the first of nodeModuleFiles not installed, or "".
func nodeModulesMissing() string {
	for _, f := range nodeModuleFiles {
		if _, err := os.Stat(filepath.Join("node", "node_modules", filepath.FromSlash(f))); err != nil {
			return f
		}
	}
	return ""
}

// npmCI runs `npm ci` in e2e/node when a client is missing (from
// package-lock.json, exactly the pinned versions), then checks the clients
// are there.
func npmCI() error {
	f := nodeModulesMissing()
	if f == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = "node"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("node_modules/%s is missing and `npm ci` in e2e/node failed: %v\n%s", f, err, out)
	}
	if f := nodeModulesMissing(); f != "" {
		return fmt.Errorf("node_modules/%s is still missing after `npm ci` in e2e/node:\n%s", f, out)
	}
	return nil
}

// logOnFailure logs tether's log at the end of t if t failed.
func logOnFailure(t *testing.T, p *proc) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tether's log:\n%s", p.stderr.String())
		}
	})
}

// waitEnded waits for the n sessions a test made to be counted as ended
// (tether_sessions_total over all reasons), and fails t if more were.
func waitEnded(t *testing.T, p *proc, n int) {
	t.Helper()
	testkit.WaitFor(t, stepTimeout, fmt.Sprintf("%d sessions to be counted", n), func() bool {
		got, _ := p.metric("tether_sessions_total")
		return got >= float64(n)
	})
	p.wantMetric(t, float64(n), "tether_sessions_total")
}

// runNodeTests runs `node --test script` in e2e/node with env (beside the
// child environment, without OpenAI's own variables), bounded by
// nodeTimeout, and reports whether it passed with want passing tests.
func runNodeTests(t *testing.T, node, script string, want int, env ...string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", script)
	cmd.Dir = "node"
	cmd.Env = append(append(childEnv(), "OPENAI_BASE_URL=", "OPENAI_API_KEY="), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("node --test %s (%v):\n%s", script, time.Since(start).Round(time.Millisecond), out.String())
	switch {
	case err != nil:
		t.Errorf("node --test %s failed: %v", script, err)
	case !strings.Contains(out.String(), fmt.Sprintf("pass %d", want)):
		t.Errorf("node --test %s did not report %d passing tests", script, want)
	default:
		return true
	}
	return false
}
