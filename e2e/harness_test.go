package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/upstreams/mock"
)

// Generous bounds for things the contract does not time (process start,
// HTTP round trips, a voice turn) so a loaded 2-core machine does not flake.
const (
	startTimeout = 20 * time.Second
	stepTimeout  = 10 * time.Second
	exitTimeout  = 15 * time.Second
)

// ---------------------------------------------------------------------------
// Small helpers

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// ---------------------------------------------------------------------------
// Fixtures

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

// ---------------------------------------------------------------------------
// The tether process

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
	stdout syncBuffer
	stderr syncBuffer
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
	waitUntil(p.t, startTimeout, "the \"tether started\" log line", func() bool {
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
	code, _, body, err := p.adminDo(http.MethodGet, path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

// del performs an admin DELETE; a transport error fails the test.
func (p *proc) del(path string) (int, []byte) {
	p.t.Helper()
	code, _, body, err := p.adminDo(http.MethodDelete, path)
	if err != nil {
		p.t.Fatalf("DELETE %s: %v", path, err)
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

// goroutines reads the total from /debug/pprof/goroutine?debug=1.
func (p *proc) goroutines() int {
	p.t.Helper()
	code, body := p.get("/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK {
		p.t.Fatalf("goroutine profile: HTTP %d", code)
	}
	first, _, _ := strings.Cut(string(body), "\n")
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
	waitUntil(p.t, stepTimeout, "GET /sessions to be []", func() bool {
		rows, raw := p.sessions()
		return len(rows) == 0 && strings.TrimSpace(raw) == "[]"
	})
	waitUntil(p.t, stepTimeout, "tether_sessions_active 0", func() bool {
		v, ok := p.metric("tether_sessions_active")
		return ok && v == 0
	})
	var got float64
	waitUntil(p.t, stepTimeout, fmt.Sprintf("tether_sessions_total{reason=%q} 1", reason), func() bool {
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

// ---------------------------------------------------------------------------
// Upstreams

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
// leg. A reset from either side is passed on as a reset.
type tap struct {
	t      testing.TB
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []*tapConn
}

type tapConn struct {
	down, up net.Conn // down: from tether; up: to the upstream
	toUp     stream   // what tether sent the upstream, handshake included
	toTether stream   // what the upstream sent tether, handshake included

	mu     sync.Mutex
	endErr error // why reading from tether stopped (io.EOF: tether closed)
}

// stream records one direction of a tapped connection.
type stream struct {
	mu    sync.Mutex
	buf   []byte
	marks []tapMark // arrival time of each chunk in buf
}

type tapMark struct {
	end int
	at  time.Time
}

func (s *stream) add(p []byte) {
	s.mu.Lock()
	s.buf = append(s.buf, p...)
	s.marks = append(s.marks, tapMark{len(s.buf), time.Now()})
	s.mu.Unlock()
}

func (s *stream) snapshot() ([]byte, []tapMark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf, s.marks
}

// startTap relays 127.0.0.1:0 to the upstream URL's host; it returns the tap
// and the ws:// URL to configure in tether.
func startTap(t testing.TB, upstreamURL string) (*tap, string) {
	t.Helper()
	host := strings.TrimPrefix(upstreamURL, "ws://")
	host, path, _ := strings.Cut(host, "/")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{t: t, ln: ln, target: host}
	tp.wg.Add(1)
	go tp.accept()
	t.Cleanup(tp.close)
	return tp, "ws://" + ln.Addr().String() + "/" + path
}

func (tp *tap) accept() {
	defer tp.wg.Done()
	for {
		down, err := tp.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", tp.target, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		tc := &tapConn{down: down, up: up}
		tp.mu.Lock()
		if tp.closed {
			tp.mu.Unlock()
			down.Close()
			up.Close()
			return
		}
		tp.conns = append(tp.conns, tc)
		tp.wg.Add(2)
		tp.mu.Unlock()
		go func() {
			err := tp.pipe(up, down, &tc.toUp)
			tc.mu.Lock()
			tc.endErr = err
			tc.mu.Unlock()
		}()
		go tp.pipe(down, up, &tc.toTether)
	}
}

// pipe copies src to dst, recording the bytes in rec, and returns why it stopped.
func (tp *tap) pipe(dst, src net.Conn, rec *stream) error {
	defer tp.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rec.add(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}
			dst.Close()
			src.Close()
			return err
		}
	}
}

func (tp *tap) close() {
	tp.mu.Lock()
	tp.closed = true
	conns := tp.conns
	tp.mu.Unlock()
	tp.ln.Close()
	for _, c := range conns {
		c.down.Close()
		c.up.Close()
	}
	tp.wg.Wait()
}

// count is the number of connections tether made through the tap.
func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.conns)
}

func (tp *tap) conn(i int) *tapConn {
	tp.t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if i >= len(tp.conns) {
		tp.t.Fatalf("tap: no connection #%d (have %d)", i, len(tp.conns))
	}
	return tp.conns[i]
}

// frame is one WebSocket frame seen on a leg, payload unmasked.
type frame struct {
	Op      ws.OpCode
	Fin     bool
	Masked  bool
	Length  int64
	Payload []byte // up to 64 KiB kept
	At      time.Time
}

// closeCode decodes a close frame's payload (1005 when empty).
func (f frame) closeCode() (int, string) {
	if len(f.Payload) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

// parseFrames parses the complete frames after the HTTP head in buf.
func parseFrames(buf []byte, marks []tapMark) []frame {
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if i < 0 {
		return nil
	}
	off := i + 4
	var out []frame
	for {
		r := bytes.NewReader(buf[off:])
		h, err := ws.ReadHeader(r)
		if err != nil {
			return out
		}
		hlen := len(buf[off:]) - r.Len()
		if int64(r.Len()) < h.Length {
			return out
		}
		start := off + hlen
		end := start + int(h.Length)
		keep := min(int(h.Length), 64<<10)
		p := bytes.Clone(buf[start : start+keep])
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		f := frame{Op: h.OpCode, Fin: h.Fin, Masked: h.Masked, Length: h.Length, Payload: p}
		for _, m := range marks {
			if m.end >= end {
				f.At = m.at
				break
			}
		}
		out = append(out, f)
		off = end
	}
}

// frames parses what tether sent on this upstream connection so far.
func (tc *tapConn) frames() []frame { return parseFrames(tc.toUp.snapshot()) }

// upstreamFrames parses what the upstream sent tether so far.
func (tc *tapConn) upstreamFrames() []frame { return parseFrames(tc.toTether.snapshot()) }

// describeEnd says how tether's side of the connection ended.
func (tc *tapConn) describeEnd() string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.endErr == nil {
		return "connection still open"
	}
	return fmt.Sprintf("tether's side ended without one: %v", tc.endErr)
}

// request parses tether's upgrade request on this connection.
func (tc *tapConn) request() *http.Request {
	buf, _ := tc.toUp.snapshot()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf)))
	if err != nil {
		return nil
	}
	return r
}

// waitClose waits for tether's close frame on upstream connection i.
func (tp *tap) waitClose(i int, timeout time.Duration) frame {
	tp.t.Helper()
	f, ok := tp.findClose(i, timeout)
	if !ok {
		desc := "no connection"
		if tp.count() > i {
			desc = tp.conn(i).describeEnd()
		}
		tp.t.Fatalf("no close frame from tether on the upstream leg within %v (%s)", timeout, desc)
	}
	return f
}

// findClose polls for tether's close frame on upstream connection i, or
// returns ok=false after timeout.
func (tp *tap) findClose(i int, timeout time.Duration) (frame, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if tp.count() > i {
			for _, f := range tp.conn(i).frames() {
				if f.Op == ws.OpClose {
					return f, true
				}
			}
		}
		if time.Now().After(deadline) {
			return frame{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// The realtime client

// clientOpts tune dialClient.
type clientOpts struct {
	Path      string // default /v1/realtime?model=gpt-realtime
	Header    http.Header
	Protocols []string
	NoPong    bool // do not answer pings
}

type closeInfo struct {
	Code   int
	Reason string
	At     time.Time
}

// rtClient is a realtime WebSocket client (github.com/gobwas/ws) that
// records every byte it receives. A reader goroutine parses frames, answers
// pings (unless told not to), echoes a close frame like a browser, and
// queues text events.
type rtClient struct {
	t         testing.TB
	tcp       *net.TCPConn
	conn      net.Conn // tcp, recording reads
	rd        io.Reader
	Protocol  string
	Connected time.Time

	rec       syncBuffer
	noPong    atomic.Bool
	wmu       sync.Mutex
	sentClose bool // guarded by wmu

	mu      sync.Mutex
	events  []map[string]any
	cursor  int // next event for nextEvent; owned by the test goroutine
	closeF  *closeInfo
	readErr error
	pings   int
	pongs   [][]byte
	sent    []frame       // every frame written, payload unmasked
	resume  chan struct{} // non-nil while reading is paused
	notify  chan struct{}
	quit    chan struct{}
	quitted sync.Once
	done    chan struct{}
}

// recConn records everything read from a connection.
type recConn struct {
	net.Conn
	rec *syncBuffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.Write(p[:n])
	}
	return n, err
}

// dialClient upgrades to ws://addr+path; a failed upgrade fails the test.
func dialClient(t testing.TB, addr string, o clientOpts) *rtClient {
	t.Helper()
	c, err := tryDialClient(t, addr, o)
	if err != nil {
		t.Fatalf("dial ws://%s%s: %v", addr, o.Path, err)
	}
	return c
}

func tryDialClient(t testing.TB, addr string, o clientOpts) (*rtClient, error) {
	if o.Path == "" {
		o.Path = "/v1/realtime?model=gpt-realtime"
	}
	c := &rtClient{t: t, notify: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.noPong.Store(o.NoPong)
	d := ws.Dialer{
		Timeout:   stepTimeout,
		Protocols: o.Protocols,
		WrapConn: func(nc net.Conn) net.Conn {
			c.tcp, _ = nc.(*net.TCPConn)
			return &recConn{Conn: nc, rec: &c.rec}
		},
	}
	if o.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(o.Header)
	}
	conn, br, hs, err := d.Dial(context.Background(), "ws://"+addr+o.Path)
	if err != nil {
		return nil, err
	}
	c.conn, c.rd, c.Protocol, c.Connected = conn, conn, hs.Protocol, time.Now()
	if br != nil {
		c.rd = io.MultiReader(br, conn)
	}
	go c.read()
	t.Cleanup(c.Close)
	return c, nil
}

// Close drops the connection and waits for the reader.
func (c *rtClient) Close() {
	c.quitted.Do(func() { close(c.quit) })
	c.conn.Close()
	<-c.done
}

// Vanish drops the connection with a TCP RST (no close frame).
func (c *rtClient) Vanish() {
	c.t.Helper()
	if c.tcp == nil {
		c.t.Fatal("not a TCP connection")
	}
	_ = c.tcp.SetLinger(0)
	c.Close()
}

// StopReading stops reading after the frame in progress (the socket's
// buffers then fill up); ResumeReading undoes it.
func (c *rtClient) StopReading() {
	c.mu.Lock()
	if c.resume == nil {
		c.resume = make(chan struct{})
	}
	c.mu.Unlock()
}

func (c *rtClient) ResumeReading() {
	c.mu.Lock()
	if c.resume != nil {
		close(c.resume)
		c.resume = nil
	}
	c.mu.Unlock()
}

// SetAnswerPings turns ping answers on or off.
func (c *rtClient) SetAnswerPings(on bool) { c.noPong.Store(!on) }

// Received is every byte received so far, handshake included.
func (c *rtClient) Received() []byte { return c.rec.Bytes() }

func (c *rtClient) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *rtClient) read() {
	defer close(c.done)
	defer c.signal()
	var msg []byte
	var msgOp ws.OpCode
	for {
		c.mu.Lock()
		gate := c.resume
		c.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-c.quit:
				c.conn.Close()
				return
			}
		}
		h, err := ws.ReadHeader(c.rd)
		if err == nil && h.Length > 64<<20 {
			err = fmt.Errorf("frame of %d bytes", h.Length)
		}
		var p []byte
		if err == nil {
			p = make([]byte, h.Length)
			_, err = io.ReadFull(c.rd, p)
		}
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			c.conn.Close()
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.mu.Lock()
			c.pings++
			c.mu.Unlock()
			if !c.noPong.Load() {
				_ = c.write(ws.NewPongFrame(p))
			}
		case ws.OpPong:
			c.mu.Lock()
			c.pongs = append(c.pongs, p)
			c.mu.Unlock()
			c.signal()
		case ws.OpClose:
			ci := &closeInfo{Code: 1005, At: time.Now()}
			if len(p) >= 2 {
				ci.Code = int(binary.BigEndian.Uint16(p))
				ci.Reason = string(p[2:])
			}
			c.mu.Lock()
			if c.closeF == nil {
				c.closeF = ci
			}
			c.mu.Unlock()
			c.wmu.Lock()
			echo := !c.sentClose
			c.sentClose = true
			c.wmu.Unlock()
			if echo {
				body := []byte{}
				if ci.Code != 1005 {
					body = binary.BigEndian.AppendUint16(nil, uint16(ci.Code))
				}
				_ = c.write(ws.NewCloseFrame(body))
			}
			c.signal()
			// Read on until tether closes the socket.
			_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
			if h.OpCode != ws.OpContinuation {
				msg, msgOp = msg[:0], h.OpCode
			}
			msg = append(msg, p...)
			if !h.Fin {
				continue
			}
			ev := map[string]any{}
			if msgOp == ws.OpText {
				if err := json.Unmarshal(msg, &ev); err != nil {
					ev = map[string]any{"type": "<invalid json>", "raw": string(msg)}
				}
			} else {
				ev["type"] = "<binary>"
				ev["len"] = len(msg)
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			c.signal()
		}
	}
}

// write sends f masked.
func (c *rtClient) write(f ws.Frame) error {
	c.record(f)
	return c.writeFrame(ws.MaskFrame(f))
}

// writeRaw sends f as given (masked or not).
func (c *rtClient) writeRaw(f ws.Frame) error {
	c.record(f)
	return c.writeFrame(f)
}

func (c *rtClient) record(f ws.Frame) {
	c.mu.Lock()
	c.sent = append(c.sent, frame{Op: f.Header.OpCode, Fin: f.Header.Fin, Length: int64(len(f.Payload)),
		Payload: bytes.Clone(f.Payload[:min(len(f.Payload), 64<<10)]), At: time.Now()})
	c.mu.Unlock()
}

func (c *rtClient) writeFrame(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(stepTimeout))
	return ws.WriteFrame(c.conn, f)
}

// sentFrames is every frame the client wrote, payloads unmasked.
func (c *rtClient) sentFrames() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.sent...)
}

// pongsSeen returns the payloads of the pongs received.
func (c *rtClient) pongsSeen() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.pongs...)
}

// send marshals v and sends it as a text frame; an error fails the test.
func (c *rtClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.write(ws.NewTextFrame(b)); err != nil {
		c.t.Fatalf("send %s: %v", b, err)
	}
}

// sendClose starts the closing handshake with code and reason.
func (c *rtClient) sendClose(code int, reason string) {
	c.t.Helper()
	c.wmu.Lock()
	c.sentClose = true
	c.wmu.Unlock()
	if err := c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason))); err != nil {
		c.t.Fatalf("send close: %v", err)
	}
}

// fault sends a mock.fault event.
func (c *rtClient) fault(name string, fields map[string]any) {
	c.t.Helper()
	ev := map[string]any{"type": "mock.fault", "fault": name}
	maps.Copy(ev, fields)
	c.send(ev)
}

// nextEvent returns the next text event, or ok=false once the connection
// closed with no more events. It fails the test after timeout.
func (c *rtClient) nextEvent(timeout time.Duration) (map[string]any, bool) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if c.cursor < len(c.events) {
			ev := c.events[c.cursor]
			c.cursor++
			c.mu.Unlock()
			return ev, true
		}
		closed := c.closeF != nil || c.readErr != nil
		c.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-deadline.C:
			c.t.Fatalf("no event within %v", timeout)
		}
	}
}

// waitEvent skips events up to the first of type typ. An error event (unless
// typ is "error") or the end of the connection fails the test.
func (c *rtClient) waitEvent(typ string, timeout time.Duration) map[string]any {
	c.t.Helper()
	for {
		ev, ok := c.nextEvent(timeout)
		if !ok {
			c.t.Fatalf("connection closed (%v) while waiting for %s", c.closeState(), typ)
		}
		if ev["type"] == typ {
			return ev
		}
		if ev["type"] == "error" {
			c.t.Fatalf("error event while waiting for %s: %v", typ, ev)
		}
	}
}

func (c *rtClient) closeState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeF != nil {
		return fmt.Sprintf("close %d %q", c.closeF.Code, c.closeF.Reason)
	}
	return fmt.Sprintf("read error: %v", c.readErr)
}

// waitClose waits for a close frame from tether; a connection that ends
// without one fails the test.
func (c *rtClient) waitClose(timeout time.Duration) closeInfo {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ci, err := c.closeF, c.readErr
		c.mu.Unlock()
		if ci != nil {
			return *ci
		}
		if err != nil {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-deadline.C:
			c.t.Fatalf("no close frame within %v", timeout)
		}
	}
}

// waitEnd waits until the reader stopped (close handshake done or socket gone).
func (c *rtClient) waitEnd(timeout time.Duration) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("connection still open after %v", timeout)
	}
}

// eventsSeen returns every event received so far.
func (c *rtClient) eventsSeen() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.events...)
}

// pingsSeen is the number of pings tether sent this client.
func (c *rtClient) pingsSeen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pings
}

// testAudio is ms milliseconds of loud-ish 24 kHz pcm16.
func testAudio(ms int) []byte {
	b := make([]byte, 48*ms)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// voiceTurn runs session.update -> append -> commit -> response.create ->
// audio deltas -> response.done and returns the audio bytes and deltas.
func (c *rtClient) voiceTurn() (audio, deltas int) {
	c.t.Helper()
	c.send(map[string]any{"type": "session.update", "session": map[string]any{
		"type": "realtime", "instructions": "Answer briefly.",
	}})
	c.waitEvent("session.updated", stepTimeout)
	in := testAudio(200)
	c.send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(in)})
	c.send(map[string]any{"type": "input_audio_buffer.commit"})
	c.waitEvent("input_audio_buffer.committed", stepTimeout)
	c.send(map[string]any{"type": "response.create"})
	c.waitEvent("response.created", stepTimeout)
	for {
		ev, ok := c.nextEvent(stepTimeout)
		if !ok {
			c.t.Fatalf("connection closed mid-response: %s", c.closeState())
		}
		switch ev["type"] {
		case "response.output_audio.delta":
			b, err := base64.StdEncoding.DecodeString(ev["delta"].(string))
			if err != nil {
				c.t.Fatalf("bad audio delta: %v", err)
			}
			audio += len(b)
			deltas++
		case "error":
			c.t.Fatalf("error event mid-response: %v", ev)
		case "response.done":
			resp, _ := ev["response"].(map[string]any)
			if resp["status"] != "completed" {
				c.t.Fatalf("response.done status %v, want completed", resp["status"])
			}
			if audio != len(in) {
				c.t.Fatalf("got %d audio bytes back, want the %d committed", audio, len(in))
			}
			return audio, deltas
		}
	}
}

// ---------------------------------------------------------------------------
// Raw HTTP for handshakes tether must refuse

type httpAnswer struct {
	Status int
	Header http.Header
	Body   []byte
}

// rawUpgrade sends a hand-written GET to addr+path with a valid WebSocket
// upgrade header set, modified by hdr ("" deletes a header), and reads the answer.
func rawUpgrade(t testing.TB, addr, path string, hdr map[string]string) httpAnswer {
	t.Helper()
	h := map[string]string{
		"Host":                  addr,
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version": "13",
	}
	maps.Copy(h, hdr)
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	for _, k := range []string{"Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} {
		if v := h[k]; v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		delete(h, k)
	}
	for k, v := range h {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return rawRequest(t, addr, b.String())
}

// rawRequest writes req to addr and reads one HTTP answer.
func rawRequest(t testing.TB, addr, req string) httpAnswer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, stepTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(stepTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	a := httpAnswer{Status: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		a.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return a
}

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
	c.waitEvent("session.created", stepTimeout)
	return c
}
