package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// Generous bounds for things the contract does not time (process start,
// HTTP round trips, a voice turn) so a loaded 2-core machine does not flake.
const (
	startTimeout = 20 * time.Second
	stepTimeout  = 10 * time.Second
	exitTimeout  = 15 * time.Second
)

// childEnv is the test's environment without anything that would change
// tether's behaviour behind the test's back, plus extra ("K=V").
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "OPENAI_API_KEY" || strings.HasPrefix(k, "TETHER_") || strings.HasPrefix(k, "E2E_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runCLI runs the binary to completion and returns its exit code and output.
func runCLI(t testing.TB, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tetherBin, args...)
	cmd.Env = childEnv(env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
	default:
		t.Fatalf("tether %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

// proc is a running tether binary.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout testkit.SyncBuffer
	stderr testkit.SyncBuffer
	exited chan struct{} // closed once the process has been waited for
	code   int           // exit code; valid once exited is closed

	// Listen and Admin are the bound addresses from the start log line.
	Listen, Admin string
	http          *http.Client
}

// startTether renders fixture with vars and runs `tether serve --config`.
// env adds "K=V" entries to the child's environment.
func startTether(t testing.TB, fixture string, vars map[string]string, env ...string) *proc {
	t.Helper()
	p := startProc(t, env, "serve", "--config", renderFixture(t, fixture, vars))
	p.waitStarted()
	return p
}

// startProc starts the binary with args. Cleanup stops it with SIGTERM and
// checks it exits 0 (SIGKILL if it does not).
func startProc(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	return startProcBin(t, tetherBin, env, args...)
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitStarted waits for the "tether started" log line and reads the bound
// addresses from it.
func (p *proc) waitStarted() {
	p.t.Helper()
	testkit.WaitFor(p.t, startTimeout, "the \"tether started\" log line", func() bool {
		if p.hasExited() {
			p.t.Fatalf("tether exited early with %d; stderr:\n%s", p.code, p.stderr.String())
		}
		for _, rec := range p.logRecords() {
			if rec["msg"] == "tether started" {
				p.Listen, _ = rec["listen"].(string)
				p.Admin, _ = rec["admin"].(string)
				return true
			}
		}
		return false
	})

	if p.Listen == "" || p.Admin == "" {
		p.t.Fatalf("start line without listen/admin addresses:\n%s", p.stderr.String())
	}
}

// logRecords parses the JSON log lines written so far.
func (p *proc) logRecords() []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(p.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (p *proc) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("tether did not exit within %v", timeout)
		return -1
	}
}

// stop sends SIGTERM and requires exit code 0.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(exitTimeout); code != 0 {
		p.t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// adminDo performs an admin request.
func (p *proc) adminDo(method, path string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, "http://"+p.Admin+path, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

// get performs an admin GET; a transport error fails the test.
func (p *proc) get(path string) (int, []byte) {
	p.t.Helper()
	return p.admin(http.MethodGet, path)
}

// del performs an admin DELETE; a transport error fails the test.
func (p *proc) del(path string) (int, []byte) {
	p.t.Helper()
	return p.admin(http.MethodDelete, path)
}

// admin performs an admin request; a transport error fails the test.
func (p *proc) admin(method, path string) (int, []byte) {
	p.t.Helper()
	code, _, body, err := p.adminDo(method, path)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, body
}

// sessions returns GET /sessions, decoded, and the raw body.
func (p *proc) sessions() ([]map[string]any, string) {
	p.t.Helper()
	code, body := p.get("/sessions")
	if code != http.StatusOK {
		p.t.Fatalf("GET /sessions: %d %s", code, body)
	}
	var rows []map[string]any
	if err := json.Unmarshal(body, &rows); err != nil {
		p.t.Fatalf("GET /sessions: %v in %q", err, body)
	}
	return rows, string(body)
}

// metric sums the samples of metric name whose labels contain every one of
// labels (each like `reason="admin"`), from /metrics; found reports whether
// any sample matched.
func (p *proc) metric(name string, labels ...string) (sum float64, found bool) {
	p.t.Helper()
	code, body := p.get("/metrics")
	if code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d", code)
	}
	return parseMetric(string(body), name, labels...)
}

// wantMetric reports an error on t unless the series of metric name that
// carry labels sum to want.
func (p *proc) wantMetric(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	if got, _ := p.metric(name, labels...); got != want {
		t.Errorf("%s{%s} = %v, want %v", name, strings.Join(labels, ","), got, want)
	}
}

func parseMetric(text, name string, labels ...string) (sum float64, found bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || line[:end] != name {
			continue
		}
		rest, set := line[end:], ""
		if rest[0] == '{' {
			close := strings.LastIndexByte(rest, '}')
			if close < 0 {
				continue
			}
			set, rest = rest[1:close], rest[close+1:]
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(set, l) {
				ok = false
			}
		}
		fields := strings.Fields(rest)
		if !ok || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// goroutineProfile returns /debug/pprof/goroutine?debug=1.
func (p *proc) goroutineProfile() string {
	p.t.Helper()
	code, body := p.get("/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK {
		p.t.Fatalf("goroutine profile: HTTP %d", code)
	}
	return string(body)
}

// goroutines reads the total from the goroutine profile.
func (p *proc) goroutines() int {
	p.t.Helper()
	first, _, _ := strings.Cut(p.goroutineProfile(), "\n")
	var n int
	if _, err := fmt.Sscanf(first, "goroutine profile: total %d", &n); err != nil {
		p.t.Fatalf("goroutine profile first line %q: %v", first, err)
	}
	return n
}

// baseline is the goroutine count of an idle tether, taken before a session.
func (p *proc) baseline() int {
	p.t.Helper()
	// Let start-up settle: take the minimum of a few samples.
	n := p.goroutines()
	for range 3 {
		time.Sleep(20 * time.Millisecond)
		n = min(n, p.goroutines())
	}
	return n
}

// assertSessionGone checks what a user sees after a teardown: no session
// listed, no active session, exactly one session counted, with reason, and
// the goroutine count back at its pre-session baseline.
func (p *proc) assertSessionGone(reason string, baseline int) {
	p.t.Helper()
	testkit.WaitFor(p.t, stepTimeout, "GET /sessions to be []", func() bool {
		rows, raw := p.sessions()
		return len(rows) == 0 && strings.TrimSpace(raw) == "[]"
	})

	testkit.WaitFor(p.t, stepTimeout, "tether_sessions_active 0", func() bool {
		v, ok := p.metric("tether_sessions_active")
		return ok && v == 0
	})

	var got float64
	testkit.WaitFor(p.t, stepTimeout, fmt.Sprintf("tether_sessions_total{reason=%q} 1", reason), func() bool {
		got, _ = p.metric("tether_sessions_total", `reason="`+reason+`"`)
		return got >= 1
	})

	if got != 1 {
		p.t.Errorf("tether_sessions_total{reason=%q} = %v, want 1", reason, got)
	}
	if all, _ := p.metric("tether_sessions_total"); all != 1 {
		code, m := p.get("/metrics")
		p.t.Errorf("tether_sessions_total over all reasons = %v, want 1 (one session, one reason); /metrics %d:\n%s",
			all, code, grepLines(string(m), "tether_sessions_total"))
	}
	var n int
	deadline := time.Now().Add(stepTimeout)
	for {
		n = p.goroutines()
		if n <= baseline+2 {
			p.t.Logf("goroutines back to %d (baseline %d)", n, baseline)
			break
		}
		if time.Now().After(deadline) {
			_, dump := p.get("/debug/pprof/goroutine?debug=1")
			p.t.Fatalf("goroutines %d, baseline %d (+2 allowed); profile:\n%s", n, baseline, dump)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
