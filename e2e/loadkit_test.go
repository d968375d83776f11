package e2e

// Helpers for the load tests (soak, drain, isolation, memory): a second
// binary built with -tags tetherfaults, `tether mock-upstream` as its own
// process, tether's heap after GC, its sockets and file descriptors, a
// testing.TB for the harness's client in goroutines, and a lean streaming
// client for thousands of frames.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/tetherproxy/tether/internal/testkit"
)

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit and requires at
// least need descriptors. The child processes inherit it (an explicit
// Setrlimit also stops os/exec from restoring the original soft limit).
func raiseNoFile(t testing.TB, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
	}
	if lim.Cur < need {
		t.Fatalf("RLIMIT_NOFILE is %d, this test needs %d: raise the hard limit (ulimit -Hn)", lim.Cur, need)
	}
}

// buildFaultsBinary builds tether with -tags tetherfaults (the test-only
// panic hook, proxy/faults_on.go) into dir.
func buildFaultsBinary(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "tether-faults")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-tags", "tetherfaults", "-o", bin, "./cmd/tether")
	build.Dir = ".."
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build -tags tetherfaults ./cmd/tether: %v\n%s", err, out)
	}
	return bin
}

// startTetherBin is startTether for another binary (the tetherfaults build).
func startTetherBin(t testing.TB, bin, fixture string, vars map[string]string) *proc {
	t.Helper()
	p := startProcBin(t, bin, nil, "serve", "--config", renderFixture(t, fixture, vars))
	p.waitStarted()
	return p
}

// startProcBin is the harness's startProc with the binary as a parameter:
// cleanup stops it with SIGTERM and requires exit 0 (SIGKILL if it hangs).
func startProcBin(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{}),
		http: &http.Client{Timeout: stepTimeout, Transport: &http.Transport{DisableKeepAlives: true}}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = childEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			if t.Failed() {
				_ = p.cmd.Process.Kill()
			} else {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			}
			select {
			case <-p.exited:
				if !t.Failed() && p.code != 0 {
					t.Errorf("%s exited with %d after SIGTERM; stderr:\n%s", bin, p.code, p.stderr.String())
				}
			case <-time.After(exitTimeout):
				t.Errorf("%s did not exit within %v of SIGTERM", bin, exitTimeout)
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("%s %s stderr (last 8 KiB):\n%s", bin, strings.Join(args, " "), tail(p.stderr.String(), 8<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// mockProc is `tether mock-upstream` running as its own process, so the
// load of thousands of upstream sessions stays out of tether's figures and
// out of the (race-instrumented) test process.
type mockProc struct {
	*proc
	URL  string // ws://127.0.0.1:PORT/v1/realtime
	Port int
}

// startMockProc runs `tether mock-upstream --listen 127.0.0.1:0` and reads
// its address from the start log line.
func startMockProc(t testing.TB) *mockProc {
	t.Helper()
	p := startProc(t, nil, "mock-upstream", "--listen", "127.0.0.1:0", "--log-level", "info")
	m := &mockProc{proc: p}
	testkit.WaitFor(t, startTimeout, "the mock upstream's start log line", func() bool {
		if p.hasExited() {
			t.Fatalf("mock-upstream exited with %d:\n%s", p.code, p.stderr.String())
		}
		for line := range strings.SplitSeq(p.stderr.String(), "\n") {
			if !strings.Contains(line, "mock upstream listening") {
				continue
			}
			_, url, ok := strings.Cut(line, "url=")
			if !ok {
				continue
			}
			m.URL = strings.Fields(url)[0]
			return true
		}
		return false
	})

	hostport := strings.TrimPrefix(m.URL, "ws://")
	hostport, _, _ = strings.Cut(hostport, "/")
	m.Port = portOf(t, hostport)
	return m
}

// portOf returns the port of a host:port address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stopProc sends SIGTERM and requires exit 0 within exitTimeout.
func stopProc(t testing.TB, p *proc, what string) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.code != 0 {
			t.Fatalf("%s exited with %d after SIGTERM", what, p.code)
		}
	case <-time.After(exitTimeout):
		t.Fatalf("%s did not exit within %v of SIGTERM", what, exitTimeout)
	}
}

// ---------------------------------------------------------------------------
// Heap, goroutines, file descriptors, sockets

// heapGODEBUG turns off tether's heap profiling sampler for tests that
// measure its heap: the sampler's records only grow, and each measurement
// (a heap profile request, to force a GC) writes them all out, so with it on
// the measurement's own garbage would creep up sample after sample
// (about 1 KiB each here). It changes nothing else in tether.
const heapGODEBUG = "GODEBUG=memprofilerate=0"

// heapInuse forces garbage collections in tether (GET
// /debug/pprof/heap?gc=1 runs runtime.GC before profiling; twice, so
// sync.Pool's victim cache is emptied too) and returns
// go_memstats_heap_inuse_bytes from /metrics. debug=1 asks for the text
// profile: the default gzipped one leaves about 1 MiB of compressor garbage
// behind, which would blur the figure.
func (p *proc) heapInuse() float64 {
	p.t.Helper()
	for range 2 {
		if code, _ := p.get("/debug/pprof/heap?gc=1&debug=1"); code != http.StatusOK {
			p.t.Fatalf("GET /debug/pprof/heap?gc=1&debug=1: HTTP %d", code)
		}
	}
	v, ok := p.metric("go_memstats_heap_inuse_bytes")
	if !ok {
		p.t.Fatal("/metrics has no go_memstats_heap_inuse_bytes")
	}
	return v
}

// heapLow is the lowest of seven heapInuse samples. Heap in use counts
// whole spans, including those each P holds in its cache for the next
// allocations (refilled by the very requests that measure), so single
// samples scatter by a couple of hundred KiB; the lowest is the steadiest.
func (p *proc) heapLow() float64 {
	p.t.Helper()
	low := p.heapInuse()
	for range 6 {
		low = min(low, p.heapInuse())
	}
	return low
}

// fds is the number of tether's open file descriptors.
func (p *proc) fds() int {
	p.t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("read tether's fds: %v", err)
	}
	return len(ents)
}

// socketInodes is the set of socket inodes tether holds open.
func (p *proc) socketInodes() map[string]bool {
	p.t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		p.t.Fatalf("read tether's fds: %v", err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			out[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	return out
}

// tcpSocket is one row of /proc/net/tcp or /proc/net/tcp6.
type tcpSocket struct {
	Local, Remote int    // ports
	State         string // hex state code: 01 ESTABLISHED ... 05 FIN_WAIT2, 08 CLOSE_WAIT, 0A LISTEN
	Inode         string // "0" once the owning process closed it (orphan)
}

var tcpStateNames = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
	"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}

// readTCP parses /proc/net/tcp and /proc/net/tcp6.
func readTCP(t testing.TB) []tcpSocket {
	t.Helper()
	var out []tcpSocket
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f == "/proc/net/tcp6" {
				continue
			}
			t.Fatalf("read %s: %v", f, err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if i == 0 || len(fs) < 10 {
				continue
			}
			lp, err1 := hexPort(fs[1])
			rp, err2 := hexPort(fs[2])
			if err1 != nil || err2 != nil {
				continue
			}
			out = append(out, tcpSocket{Local: lp, Remote: rp, State: fs[3], Inode: fs[9]})
		}
	}
	return out
}

func hexPort(addr string) (int, error) {
	_, h, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, fmt.Errorf("no port in %q", addr)
	}
	n, err := strconv.ParseUint(h, 16, 16)
	return int(n), err
}

// tetherSockets counts tether's side of its TCP connections by state name:
// sockets on its listen ports (client and admin), and sockets toward the
// upstream's port (tether dialed them). Listening sockets are left out.
// A socket tether has closed but the kernel still runs (inode 0) is
// counted as "STATE (orphan)"; TIME_WAIT is always such.
func tetherSockets(t testing.TB, listenPorts []int, upstreamPort int) map[string]int {
	t.Helper()
	own := map[int]bool{}
	for _, p := range listenPorts {
		own[p] = true
	}
	out := map[string]int{}
	for _, s := range readTCP(t) {
		if s.State == "0A" {
			continue
		}
		if own[s.Local] || (s.Remote == upstreamPort && s.Local != upstreamPort) {
			name := tcpStateNames[s.State]
			if name == "" {
				name = s.State
			}
			if s.Inode == "0" && s.State != "06" {
				name += " (orphan)" // tether closed it; the kernel finishes it
			}
			out[name]++
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The harness's realtime client in goroutines

// goTB lets a goroutine use the harness's testing.TB-based helpers
// (dialClient, rtClient): Fatal records the failure and ends only that
// goroutine (runtime.Goexit), Cleanup runs when the goroutine's function
// returns. The parent test reports the failures.
type goTB struct {
	testing.TB // the parent test: Helper, Logf, Name, TempDir

	mu       sync.Mutex
	failures []string
	cleanups []func()
}

func (g *goTB) fail(msg string) {
	g.mu.Lock()
	g.failures = append(g.failures, msg)
	g.mu.Unlock()
}

func (g *goTB) Error(args ...any)                 { g.fail(fmt.Sprint(args...)) }
func (g *goTB) Errorf(format string, args ...any) { g.fail(fmt.Sprintf(format, args...)) }
func (g *goTB) Fail()                             { g.fail("failed") }
func (g *goTB) FailNow()                          { g.fail("failed"); runtime.Goexit() }
func (g *goTB) Fatal(args ...any)                 { g.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (g *goTB) Fatalf(format string, args ...any) {
	g.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (g *goTB) Failed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.failures) > 0
}
func (g *goTB) Cleanup(f func()) {
	g.mu.Lock()
	g.cleanups = append(g.cleanups, f)
	g.mu.Unlock()
}

// Failures returns what failed, joined.
func (g *goTB) Failures() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.failures, "; ")
}

// runGo runs fn(g) in a new goroutine; wg.Done is called once fn returned
// (or called Fatal) and the cleanups ran.
func runGo(parent testing.TB, wg *sync.WaitGroup, fn func(g *goTB)) *goTB {
	g := &goTB{TB: parent}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			g.mu.Lock()
			cs := g.cleanups
			g.cleanups = nil
			g.mu.Unlock()
			for i := len(cs) - 1; i >= 0; i-- {
				cs[i]()
			}
		}()
		fn(g)
	}()
	return g
}

// ---------------------------------------------------------------------------
// A lean streaming client

// streamer is a minimal realtime client for sessions that carry thousands
// of frames: it keeps no copy of what it receives, answers pings, echoes a
// close, and tracks the highest sequence number echoed back (event_id
// "s<N>" in the frames it sent) while the mock upstream is in echo mode.
type streamer struct {
	conn net.Conn
	rd   io.Reader

	wmu       sync.Mutex // serialises writes
	sentClose bool       // guarded by wmu

	created  chan struct{} // closed at session.created
	progress chan struct{} // signalled (cap 1) at each echo
	done     chan struct{} // closed when the reader exits

	sent      atomic.Int64 // highest sequence number sent
	echoed    atomic.Int64 // highest sequence number echoed back
	texts     atomic.Int64 // text frames received
	closeCode atomic.Int32 // close code received; 0 = none yet
	closedAt  atomic.Int64 // unix nanoseconds of the close frame

	mu      sync.Mutex
	readErr error // why the reader stopped
}

// dialStreamer opens a session through tether and waits for session.created.
func dialStreamer(addr string) (*streamer, error) {
	d := ws.Dialer{Timeout: stepTimeout}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, "ws://"+addr+"/v1/realtime?model=gpt-realtime")
	if err != nil {
		return nil, err
	}
	s := &streamer{conn: conn, rd: conn, created: make(chan struct{}),
		progress: make(chan struct{}, 1), done: make(chan struct{})}
	if br != nil {
		s.rd = io.MultiReader(br, conn)
	}
	go s.read()
	select {
	case <-s.created:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("session ended before session.created: %v", s.err())
	case <-time.After(stepTimeout):
		conn.Close()
		<-s.done
		return nil, errors.New("no session.created")
	}
}

func (s *streamer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readErr
}

var echoMarker = []byte(`"event_id":"s`)

func (s *streamer) read() {
	defer close(s.done)
	buf := make([]byte, 0, 16<<10)
	for {
		h, err := ws.ReadHeader(s.rd)
		if err == nil && h.Length > 1<<20 {
			err = fmt.Errorf("unexpected %d-byte frame", h.Length)
		}
		if err == nil {
			buf = buf[:h.Length]
			_, err = io.ReadFull(s.rd, buf)
		}
		if err != nil {
			s.mu.Lock()
			s.readErr = err
			s.mu.Unlock()
			s.conn.Close()
			return
		}
		if h.Masked {
			ws.Cipher(buf, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = s.write(ws.NewPongFrame(bytes.Clone(buf)))
		case ws.OpClose:
			code := 1005
			if len(buf) >= 2 {
				code = int(binary.BigEndian.Uint16(buf))
			}
			if s.closeCode.CompareAndSwap(0, int32(code)) {
				s.closedAt.Store(time.Now().UnixNano())
			}
			s.wmu.Lock()
			echo := !s.sentClose
			s.sentClose = true
			s.wmu.Unlock()
			if echo {
				_ = s.writeFrame(ws.MaskFrameInPlace(ws.NewCloseFrame(bytes.Clone(buf[:min(len(buf), 2)]))))
			}
			_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		case ws.OpText:
			s.texts.Add(1)
			if i := bytes.Index(buf, echoMarker); i >= 0 {
				rest := buf[i+len(echoMarker):]
				if j := bytes.IndexByte(rest, '"'); j > 0 {
					if n, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil && n > s.echoed.Load() {
						s.echoed.Store(n)
						select {
						case s.progress <- struct{}{}:
						default:
						}
					}
				}
			} else if s.texts.Load() == 1 && bytes.Contains(buf, []byte(`"session.created"`)) {
				close(s.created)
			}
		}
	}
}

// write sends f masked (it masks the payload in place).
func (s *streamer) write(f ws.Frame) error {
	return s.writeFrame(ws.MaskFrameInPlace(f))
}

func (s *streamer) writeFrame(f ws.Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.sentClose && f.Header.OpCode != ws.OpClose {
		return net.ErrClosed
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(stepTimeout))
	return ws.WriteFrame(s.conn, f)
}

// sendText sends a text frame (payload is copied).
func (s *streamer) sendText(payload string) error {
	return s.write(ws.NewTextFrame([]byte(payload)))
}

// appendAudio is 20 ms of 24 kHz pcm16 (960 bytes), base64: one frame of a
// 50 frames/s audio stream.
var appendAudio = base64.StdEncoding.EncodeToString(testAudio(20))

// sendAppend sends input_audio_buffer.append with event_id s<next seq>.
func (s *streamer) sendAppend() error {
	n := s.sent.Load() + 1
	err := s.sendText(`{"type":"input_audio_buffer.append","event_id":"s` + strconv.FormatInt(n, 10) +
		`","audio":"` + appendAudio + `"}`)
	if err == nil {
		s.sent.Store(n)
	}
	return err
}

// closeWith starts the closing handshake.
func (s *streamer) closeWith(code int) error {
	s.wmu.Lock()
	s.sentClose = true
	s.wmu.Unlock()
	return s.writeFrame(ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), ""))))
}

// Close drops the connection and waits for the reader.
func (s *streamer) Close() {
	s.conn.Close()
	<-s.done
}
