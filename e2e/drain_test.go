package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/upstreams/mock"
)

// Drain timing: the contract's windows are asserted as given (readyz and
// idle sessions within 1 s, exit within drain_timeout + 2 s); the mock's
// tone is 1 s of audio in 10 deltas, so a delta interval of 300 ms makes a
// response last 2.7 s.
const (
	drainSessions  = 200
	drainAtOnce    = time.Second
	drainToneDelta = 10 // deltas in a response to response.create without audio
)

// drainRig is tether with drainSessions open sessions, half of them in the
// middle of a slowly streamed response.
type drainRig struct {
	p          *proc
	exited     <-chan time.Time // when the process exited
	idle, busy []*rtClient
	timeout    time.Duration // lifecycle.drain_timeout
}

// startDrainRig opens the sessions and starts the busy half's responses,
// paced by delta; it returns once every busy session has its first audio
// delta and tether lists it as responding.
func startDrainRig(t *testing.T, drainTimeout, delta time.Duration) *drainRig {
	t.Helper()
	raiseNoFile(t, 4*drainSessions+256)
	_, url := startMock(t, mock.Options{})
	r := &drainRig{timeout: drainTimeout}
	r.p = startTether(t, "load.yaml", map[string]string{
		"UpstreamURL":  url,
		"MaxSessions":  "1000",
		"DrainTimeout": drainTimeout.String(),
	})
	for i := range drainSessions {
		c := dialClient(t, r.p.Listen, clientOpts{})
		c.WaitEvent("session.created", stepTimeout)
		if i%2 == 0 {
			r.idle = append(r.idle, c)
		} else {
			r.busy = append(r.busy, c)
		}
	}
	for _, c := range r.busy {
		c.fault("slow", map[string]any{"delta_interval_ms": delta.Milliseconds()})
		c.Send(map[string]any{"type": "response.create"})
	}
	for _, c := range r.busy {
		c.WaitEvent("response.output_audio.delta", stepTimeout)
	}
	rows, _ := r.p.sessions()
	states := map[string]int{}
	for _, row := range rows {
		states[fmt.Sprint(row["state"])]++
	}
	if len(rows) != drainSessions || states["responding"] != len(r.busy) {
		t.Fatalf("before SIGTERM: %d sessions by state %v, want %d with %d responding", len(rows), states, drainSessions, len(r.busy))
	}
	return r
}

// sigterm sends SIGTERM and returns when it was sent.
func (r *drainRig) sigterm(t *testing.T) time.Time {
	t.Helper()
	return sigterm(r.p, &r.exited)
}

// sigterm sends p SIGTERM, watching for its exit in *exited from the first
// signal on, and returns when the signal was sent.
func sigterm(p *proc, exited *<-chan time.Time) time.Time {
	if *exited == nil {
		*exited = watchExit(p)
	}
	at := time.Now()
	p.signal(syscall.SIGTERM)
	return at
}

// checkNotReady asserts /readyz turns 503 within 1 s of t0 and a new
// upgrade is refused with 503 and Retry-After. It returns how long readyz took.
func (r *drainRig) checkNotReady(t *testing.T, t0 time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	for {
		code, _, _, err := r.p.adminDo(http.MethodGet, "/readyz")
		if err == nil && code == http.StatusServiceUnavailable {
			took = time.Since(t0)
			break
		}
		if time.Since(t0) > drainAtOnce {
			t.Fatalf("/readyz still %d (%v) %v after SIGTERM, want 503 within %v", code, err, time.Since(t0), drainAtOnce)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a := rawUpgrade(t, r.p.Listen, "/v1/realtime?model=gpt-realtime", nil)
	if a.Status != http.StatusServiceUnavailable || a.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade while draining: %d Retry-After %q %s, want 503 with Retry-After", a.Status, a.Header.Get("Retry-After"), a.Body)
	}
	return took
}

// checkIdleClosed asserts every idle session got 1001 within 1 s of t0 and
// returns the latest.
func (r *drainRig) checkIdleClosed(t *testing.T, t0 time.Time) time.Duration {
	t.Helper()
	var latest time.Duration
	for i, c := range r.idle {
		ci := c.WaitClose(stepTimeout)
		d := ci.At.Sub(t0)
		latest = max(latest, d)
		if ci.Code != 1001 {
			t.Errorf("idle session %d: close %d %q, want 1001", i, ci.Code, ci.Reason)
		}
		if d > drainAtOnce {
			t.Errorf("idle session %d: closed %v after SIGTERM, want at once (within %v)", i, d, drainAtOnce)
		}
	}
	return latest
}

// serverFrames is what tether sent a client, in order: every frame after the
// 101 answer, and each text frame's event type.
type serverFrame struct {
	frame
	Type   string // text frames: the event's type; "<invalid>" if not JSON
	Status string // response.done: response.status
}

func serverFrames(c *rtClient) []serverFrame {
	var out []serverFrame
	for _, f := range parseFrames(c.Received(), nil) {
		sf := serverFrame{frame: f}
		if f.Op == ws.OpText {
			var ev struct {
				Type     string `json:"type"`
				Response struct {
					Status string `json:"status"`
				} `json:"response"`
			}
			if int64(len(f.Payload)) != f.Length || json.Unmarshal(f.Payload, &ev) != nil {
				sf.Type = "<invalid>"
			} else {
				sf.Type, sf.Status = ev.Type, ev.Response.Status
			}
		}
		out = append(out, sf)
	}
	return out
}

// describe summarises frames for a failure message.
func describe(fs []serverFrame) string {
	var b strings.Builder
	for _, f := range fs {
		switch {
		case f.Op == ws.OpClose:
			code, _ := f.CloseCode()
			fmt.Fprintf(&b, " close(%d)", code)
		case f.Type != "":
			b.WriteString(" " + f.Type)
		default:
			fmt.Fprintf(&b, " op%d", f.Op)
		}
	}
	return b.String()
}

// checkBusyFinished asserts a busy session received its whole response
// (every delta, response.done completed) and then 1001, with nothing after.
func checkBusyFinished(t *testing.T, i int, c *rtClient) {
	t.Helper()
	fs := serverFrames(c)
	deltas, done := 0, -1
	for j, f := range fs {
		if f.Type == "<invalid>" {
			t.Errorf("busy session %d: frame %d is not a whole JSON event (cut mid-frame?)", i, j)
		}
		if f.Type == "response.output_audio.delta" {
			deltas++
		}
		if f.Type == "response.done" {
			done = j
		}
	}
	n := len(fs)
	if n < 2 || fs[n-1].Op != ws.OpClose || done != n-2 {
		t.Errorf("busy session %d: want its response.done and then close 1001 as the last frames, got:%s", i, describe(fs[max(0, n-6):]))
		return
	}
	if code, _ := fs[n-1].CloseCode(); code != 1001 {
		t.Errorf("busy session %d: close %d after response.done, want 1001", i, code)
	}
	if fs[done].Status != "completed" || deltas != drainToneDelta {
		t.Errorf("busy session %d: response.done %q after %d audio deltas, want completed after all %d", i, fs[done].Status, deltas, drainToneDelta)
	}
}

// checkBusyCut asserts a busy session still streaming when it was closed got
// whole frames only, no response.done, and 1001 last.
func checkBusyCut(t *testing.T, i int, c *rtClient) {
	t.Helper()
	fs := serverFrames(c)
	n := len(fs)
	for j, f := range fs {
		if f.Type == "<invalid>" {
			t.Errorf("busy session %d: frame %d is not a whole JSON event (cut mid-frame?)", i, j)
		}
		if f.Type == "response.done" {
			t.Errorf("busy session %d: response.done arrived, but the response should outlast the drain", i)
		}
	}
	if n == 0 || fs[n-1].Op != ws.OpClose {
		t.Errorf("busy session %d: last frames%s, want close 1001 last", i, describe(fs[max(0, n-6):]))
		return
	}
	if code, _ := fs[n-1].CloseCode(); code != 1001 {
		t.Errorf("busy session %d: close %d, want 1001", i, code)
	}
}

// checkLogs asserts the end-of-session log lines: every session ended once,
// with reason shutdown.
func (r *drainRig) checkLogs(t *testing.T) {
	t.Helper()
	reasons := map[string]int{}
	for _, rec := range r.p.logRecords() {
		if rec["msg"] == "session ended" {
			reasons[fmt.Sprint(rec["reason"])]++
		}
	}
	if reasons["shutdown"] != drainSessions || len(reasons) != 1 {
		t.Errorf("session ended log lines by reason %v, want %d shutdown", reasons, drainSessions)
	}
}

// TestDrainTurnAware: 200 open sessions, half in the middle of a response
// that streams for 2.7 s; SIGTERM. /readyz is 503 within 1 s, a new upgrade
// gets 503 with Retry-After, the idle half are closed with 1001 within 1 s,
// each busy session receives its whole response and response.done and then
// 1001 (nothing cut short), and tether exits 0 within drain_timeout + 2 s.
func TestDrainTurnAware(t *testing.T) {
	drainOnce(t, 10*time.Second, 300*time.Millisecond, "mid-response", "got response.done then 1001",
		func(t *testing.T, i int, c *rtClient, _ time.Duration) { checkBusyFinished(t, i, c) })
}

// TestDrainDeadline: responses outlast drain_timeout (9 s against 3 s): the
// idle half close at once, the rest with 1001 at the deadline (whole frames,
// no response.done), and tether exits 0 within drain_timeout + 2 s.
func TestDrainDeadline(t *testing.T) {
	const drainTimeout = 3 * time.Second
	drainOnce(t, drainTimeout, time.Second, "with 9 s responses", "closed 1001",
		func(t *testing.T, i int, c *rtClient, d time.Duration) {
			if d < drainTimeout-100*time.Millisecond || d > drainTimeout+time.Second {
				t.Errorf("busy session %d: closed %v after SIGTERM, want at drain_timeout (%v)", i, d, drainTimeout)
			}
			checkBusyCut(t, i, c)
		})
}

// drainOnce sends one SIGTERM to a drain rig (drainTimeout, responses paced
// by delta) and checks /readyz, the idle half, each busy session in turn
// (checkBusy, given how long after the signal its close came), the exit
// within drain_timeout + 2 s and the log lines. It logs the figures; busyAre
// and busyDid describe the busy half and its end.
func drainOnce(t *testing.T, drainTimeout, delta time.Duration, busyAre, busyDid string,
	checkBusy func(t *testing.T, i int, c *rtClient, d time.Duration)) {
	t.Helper()
	r := startDrainRig(t, drainTimeout, delta)
	t0 := r.sigterm(t)
	ready := r.checkNotReady(t, t0)
	idle := r.checkIdleClosed(t, t0)
	var first, last time.Duration = time.Hour, 0
	for i, c := range r.busy {
		ci := c.WaitClose(r.timeout + 2*time.Second)
		d := ci.At.Sub(t0)
		first, last = min(first, d), max(last, d)
		c.WaitEnd(stepTimeout)
		checkBusy(t, i, c, d)
	}
	exit := checkExit(t, r.p, r.exited, t0, r.timeout+2*time.Second)
	r.checkLogs(t)
	t.Logf("drain figures (%d sessions, %d %s, drain_timeout %v): /readyz 503 after %v; idle sessions closed 1001 within %v; "+
		"busy sessions %s between %v and %v; exit 0 after %v",
		drainSessions, len(r.busy), busyAre, r.timeout, ready.Round(time.Millisecond), idle.Round(time.Millisecond),
		busyDid, first.Round(time.Millisecond), last.Round(time.Millisecond), exit.Round(time.Millisecond))
}

// TestDrainSecondSignal: SIGTERM starts a drain (10 s); a second SIGTERM
// closes every remaining session with 1001 at once and tether exits 0, long
// before drain_timeout.
func TestDrainSecondSignal(t *testing.T) {
	r := startDrainRig(t, 10*time.Second, time.Second)
	t0 := r.sigterm(t)
	r.checkNotReady(t, t0)
	r.checkIdleClosed(t, t0)
	// The first drain holds the busy half (their responses run 9 s).
	time.Sleep(500 * time.Millisecond)
	rows, raw := r.p.sessions()
	for _, row := range rows {
		if row["state"] != "draining" {
			t.Errorf("session %v in state %v during the drain, want draining", row["id"], row["state"])
		}
	}
	if len(rows) != len(r.busy) {
		t.Fatalf("%d sessions open 500 ms into the drain, want the %d busy ones: %s", len(rows), len(r.busy), tail(raw, 2048))
	}
	t1 := r.sigterm(t)
	var last time.Duration
	for i, c := range r.busy {
		ci := c.WaitClose(stepTimeout)
		d := ci.At.Sub(t1)
		last = max(last, d)
		if ci.Code != 1001 || d > drainAtOnce {
			t.Errorf("busy session %d: close %d %v after the second SIGTERM, want 1001 at once (within %v)", i, ci.Code, d, drainAtOnce)
		}
		c.WaitEnd(stepTimeout)
		checkBusyCut(t, i, c)
	}
	// Well before drain_timeout: within 3 s of the second signal.
	const exitWithin = 3 * time.Second
	exit := checkExit(t, r.p, r.exited, t1, exitWithin)
	r.checkLogs(t)
	if !strings.Contains(r.p.stderr.String(), "second signal") {
		t.Errorf("the log does not mention the second signal")
	}
	t.Logf("second signal figures: second SIGTERM %v after the first; busy sessions closed 1001 within %v of it; exit 0 %v after it (drain_timeout %v)",
		t1.Sub(t0).Round(time.Millisecond), last.Round(time.Millisecond), exit.Round(time.Millisecond), r.timeout)
}

// watchExit reports when the process exits.
func watchExit(p *proc) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		<-p.exited
		ch <- time.Now()
	}()
	return ch
}

// checkExit asserts the process exits 0 within limit of from, and returns
// when it exited (relative to from).
func checkExit(t *testing.T, p *proc, exited <-chan time.Time, from time.Time, limit time.Duration) time.Duration {
	t.Helper()
	select {
	case at := <-exited:
		d := at.Sub(from)
		if p.code != 0 {
			t.Errorf("exit code %d, want 0", p.code)
		}
		if d > limit {
			t.Errorf("exited %v after the signal, want within %v", d, limit)
		}
		return d
	case <-time.After(time.Until(from.Add(limit)) + exitTimeout):
		t.Fatalf("tether still running %v after the signal (limit %v)", time.Since(from), limit)
		return 0
	}
}
