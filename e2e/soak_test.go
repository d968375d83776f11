package e2e

import (
	"encoding/base64"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/tetherproxy/tether/internal/testkit"
)

var (
	soakSessions = flag.Int("soak.sessions", 2000, "sessions in TestSoakFaults (env TETHER_SOAK_SESSIONS overrides)")
	soakWave     = flag.Int("soak.wave", 250, "concurrent sessions per wave in TestSoakFaults")
	soakSeed     = flag.Uint64("soak.seed", 0, "random seed of TestSoakFaults (0: from the clock; the seed is logged)")
)

// Soak timing: heartbeats and the idle limit short enough that every fault
// is detected in seconds, and ordered so each fault ends by its own reason:
// a dead leg is found (interval + timeout = 2.5 s after its last byte) well
// before idle_timeout, even on a session that was already quiet for a while.
const (
	soakHBInterval  = 1500 * time.Millisecond
	soakHBTimeout   = 1000 * time.Millisecond
	soakIdle        = 6 * time.Second
	soakMaxFrame    = 16 << 10
	soakSessionWait = 20 * time.Second // per session, fault to end
)

// soakFault is one way a session dies.
type soakFault struct {
	name   string
	reason string // the tether_sessions_total label it must be counted under
	// code is the close code the client must receive; 0: none (the
	// contract's "-"), -1: best effort (1001 or nothing).
	code int
	// mid: may be injected while audio streams both ways (else always
	// between turns).
	mid    bool
	inject func(g *goTB, c *rtClient)
}

var soakFaults = []soakFault{
	{"upstream_rst", "upstream_error", 1014, true, func(g *goTB, c *rtClient) {
		c.fault("rst", nil)
	}},
	{"upstream_close", "upstream_closed", 4321, true, func(g *goTB, c *rtClient) {
		c.fault("close", map[string]any{"code": 4321, "reason": "soak"})
	}},
	{"upstream_stall", "upstream_heartbeat_timeout", 4002, true, func(g *goTB, c *rtClient) {
		c.fault("stall", nil)
	}},
	{"upstream_fatal_error", "upstream_fatal_event", 1014, true, func(g *goTB, c *rtClient) {
		c.fault("error", map[string]any{"code": "session_expired"})
	}},
	{"client_vanish", "client_error", 0, true, func(g *goTB, c *rtClient) {
		c.Vanish() // TCP RST, no close frame
	}},
	{"client_unresponsive", "client_heartbeat_timeout", -1, true, func(g *goTB, c *rtClient) {
		c.SetAnswerPings(false)
		c.StopReading()
	}},
	{"client_half_close", "client_error", 0, true, func(g *goTB, c *rtClient) {
		if err := c.TCP().CloseWrite(); err != nil {
			g.Fatalf("CloseWrite: %v", err)
		}
	}},
	{"client_oversized_frame", "frame_too_large", 1009, true, func(g *goTB, c *rtClient) {
		big := `{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("A", soakMaxFrame+4096) + `"}`
		_ = c.Write(ws.NewTextFrame([]byte(big))) // tether may reset before it is all written
	}},
	{"client_unmasked_frame", "protocol_error", 1002, true, func(g *goTB, c *rtClient) {
		_ = c.WriteRaw(ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`)))
	}},
	{"client_reserved_opcode", "protocol_error", 1002, true, func(g *goTB, c *rtClient) {
		_ = c.Write(ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpCode(0x3), Length: 2}, Payload: []byte("{}")})
	}},
	{"idle", "idle_timeout", 4000, false, func(g *goTB, c *rtClient) {}},
}

// pickSoakFault picks the fault of the i-th session of a wave: every other
// one lands while audio streams both ways (a fault that can), the others
// are drawn from every fault, between turns.
func pickSoakFault(rng *rand.Rand, i int) (soakFault, bool) {
	if i%2 == 0 {
		var mids []soakFault
		for _, f := range soakFaults {
			if f.mid {
				mids = append(mids, f)
			}
		}
		return mids[rng.IntN(len(mids))], true
	}
	return soakFaults[rng.IntN(len(soakFaults))], false
}

// soakRun drives one session to its fault and checks what the client saw.
func soakRun(g *goTB, addr string, f soakFault, mid bool) {
	c := dialClient(g, addr, clientOpts{})
	c.WaitEvent("session.created", stepTimeout)
	var audio *ticker
	if mid {
		// Audio flows both ways when the fault hits: a 2 s answer streams
		// (100 ms deltas in real time; the fault right after the first)
		// while the client appends 20 ms of audio 50 times a second, on
		// until the session ends. 200 ms per append before the commit
		// keeps each frame under the soak's max_frame_bytes.
		c.fault("slow", map[string]any{"delta_interval_ms": 100})
		chunk := base64.StdEncoding.EncodeToString(testAudio(200))
		for range 10 {
			c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": chunk})
		}
		c.Send(map[string]any{"type": "input_audio_buffer.commit"})
		c.WaitEvent("input_audio_buffer.committed", stepTimeout)
		audio = startTicker(g, lvAppendEvery, lvAppend, rtSend(c))
		c.Send(map[string]any{"type": "response.create"})
		c.WaitEvent("response.output_audio.delta", stepTimeout)
		testkit.WaitFor(g, stepTimeout, "the client's audio to flow", func() bool { return audio.sent.Load() >= 5 })
		if f.name == "client_unresponsive" {
			audio.stop() // a silent client sends nothing: no pongs, no audio
		}
	}
	f.inject(g, c)
	switch {
	case f.name == "client_vanish":
		return
	case f.name == "client_unresponsive":
		// Not reading: tether's ping goes unanswered; read again once it
		// must have given up, and find the connection closed.
		time.Sleep(soakHBInterval + soakHBTimeout + time.Second)
		c.ResumeReading()
		c.WaitEnd(soakSessionWait)
	case f.code > 0:
		ci := c.WaitClose(soakSessionWait)
		if ci.Code != f.code {
			g.Errorf("%s: client got close %d %q, want %d", f.name, ci.Code, ci.Reason, f.code)
		}
		c.WaitEnd(soakSessionWait)
	default:
		c.WaitEnd(soakSessionWait)
	}
	got := c.CloseReceived()
	switch {
	case f.code == 0 && got != nil:
		g.Errorf("%s: client got close %d, want none (the connection is dropped)", f.name, got.Code)
	case f.code == -1 && got != nil && got.Code != 1001:
		g.Errorf("%s: client got close %d, want 1001 or none", f.name, got.Code)
	}
}

// soakCounts tallies injected faults.
type soakCounts struct {
	byFault  map[string]int
	midFault map[string]int
	byReason map[string]int
	total    int
}

func newSoakCounts() *soakCounts {
	return &soakCounts{byFault: map[string]int{}, midFault: map[string]int{}, byReason: map[string]int{}}
}

// runWave runs the sessions (fault, mid) concurrently and waits for all.
func runWave(t *testing.T, addr string, plan []soakFault, mids []bool, counts *soakCounts) {
	t.Helper()
	var wg sync.WaitGroup
	gs := make([]*goTB, len(plan))
	for i, f := range plan {
		counts.byFault[f.name]++
		counts.byReason[f.reason]++
		counts.total++
		if mids[i] {
			counts.midFault[f.name]++
		}
		gs[i] = runGo(t, &wg, func(g *goTB) { soakRun(g, addr, f, mids[i]) })
	}
	wg.Wait()
	var failed []string
	for i, g := range gs {
		if g.Failed() {
			failed = append(failed, fmt.Sprintf("%s (with audio both ways %v): %s", plan[i].name, mids[i], g.Failures()))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d sessions failed; first ones:\n%s", len(failed), len(plan),
			strings.Join(failed[:min(len(failed), 10)], "\n"))
	}
}

// TestSoakFaults: thousands of sessions in waves, each ending by a random
// fault on either leg (upstream reset, close, stall, fatal error event;
// client reset, silence, half-close, oversized frame, malformed frame,
// idle), half of them while audio streams both ways (a response streaming
// to the client, the client appending 20 ms of audio at 50/s). Afterwards
// nothing is left: no session, every session counted once under the
// reason of its fault, goroutines and heap back at their pre-soak
// baseline, no descriptor and no half-closed socket of tether's. The figures are logged. Bounded by -soak.sessions
// (default 2000, about a minute here; `make soak SOAK_SESSIONS=20000`).
func TestSoakFaults(t *testing.T) {
	n, wave, rng := soakPlan(t)
	raiseNoFile(t, uint64(4*wave+256))

	r := startSoakRig(t)
	warm := r.warmUp(t, rng, wave)
	base := r.baseline(t)

	start := time.Now()
	waves := r.runWaves(t, rng, n, wave)
	elapsed := time.Since(start)

	total, table, faults := r.checkCounted(t)
	before, socks := r.checkSocketsClosed(t)
	fds, g, heap := r.checkBackToBaseline(t, base)
	t.Logf("soak figures: %d sessions (%d warm-up) in %d waves of up to %d, %v (%.0f sessions/s)\nfaults injected:%s\nteardown reasons:%s\n"+
		"tether_sessions_total %v, tether_sessions_active 0, GET /sessions []\n"+
		"goroutines: baseline %d, after %d\nheap in use after GC: baseline %.2f MiB, after %.2f MiB (%+.1f%%)\n"+
		"file descriptors: baseline %d, after %d\ntether's TCP sockets: before stopping the mock %v; after %v (CLOSE_WAIT 0, FIN_WAIT2 0)",
		r.counts.total, warm, waves, wave, elapsed.Round(time.Millisecond), float64(r.counts.total-warm)/elapsed.Seconds(),
		faults, table, total, base.goroutines, g, base.heap/(1<<20), heap/(1<<20), 100*(heap/base.heap-1),
		base.fds, fds, before, socks)
}

// soakPlan is the soak's size (-soak.sessions, TETHER_SOAK_SESSIONS, at
// most 300 in -short), its wave size and its random source (-soak.seed, else
// from the clock); it logs them.
func soakPlan(t *testing.T) (n, wave int, rng *rand.Rand) {
	t.Helper()
	n = *soakSessions
	if v := os.Getenv("TETHER_SOAK_SESSIONS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("TETHER_SOAK_SESSIONS=%q: want a positive number", v)
		}
	}
	if testing.Short() {
		n = min(n, 300)
	}
	wave = max(*soakWave, 1)
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng = rand.New(rand.NewPCG(seed, 7))
	t.Logf("soak: %d sessions in waves of %d, seed %d (-soak.seed to replay)", n, wave, seed)
	return n, wave, rng
}

// soakRig is tether (fixture load.yaml with the soak's timing) in front of
// `tether mock-upstream` as its own process, and the tally of the faults
// injected so far.
type soakRig struct {
	m      *mockProc
	p      *proc
	ports  []int // tether's listen ports: client and admin
	idleG  int   // tether's goroutines before any session
	counts *soakCounts
}

func startSoakRig(t *testing.T) *soakRig {
	t.Helper()
	m := startMockProc(t)
	hb := fmt.Sprintf("%dms", soakHBInterval.Milliseconds())
	hbt := fmt.Sprintf("%dms", soakHBTimeout.Milliseconds())
	p := startTether(t, "load.yaml", map[string]string{
		"UpstreamURL":      m.URL,
		"MaxSessions":      "10000",
		"MaxFrameBytes":    strconv.Itoa(soakMaxFrame),
		"ClientHBInterval": hb, "ClientHBTimeout": hbt,
		"UpstreamHBInterval": hb, "UpstreamHBTimeout": hbt,
		"IdleTimeout": soakIdle.String(),
	}, heapGODEBUG)
	r := &soakRig{m: m, p: p, ports: []int{portOf(t, p.Listen), portOf(t, p.Admin)}, counts: newSoakCounts()}
	r.idleG = p.baseline()
	return r
}

// settle waits (up to stepTimeout) until tether runs no more goroutines
// than when idle: the sessions' relays have finished their close
// linger, so their buffers are free before heap or descriptors are read.
func (r *soakRig) settle() int {
	deadline := time.Now().Add(stepTimeout)
	for {
		g := r.p.goroutines()
		if g <= r.idleG+1 || time.Now().After(deadline) {
			return g
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmUp runs every fault twice (between turns and with audio both ways),
// so one-time allocations (pools, metric series, runtime structures) are in
// the baseline and what is measured is what sessions leave behind. It
// returns how many sessions it ran.
func (r *soakRig) warmUp(t *testing.T, rng *rand.Rand, wave int) int {
	t.Helper()
	var warm []soakFault
	var warmMid []bool
	for _, f := range soakFaults {
		warm = append(warm, f, f)
		warmMid = append(warmMid, false, f.mid)
	}
	// All in one wave a fifth larger than the soak's, so the high-water
	// marks of concurrency (the runtime keeps the structs of exited
	// goroutines for reuse, maps keep their size) are reached before the
	// baseline too.
	for len(warm) < wave+wave/5 {
		f, mid := pickSoakFault(rng, len(warm))
		warm = append(warm, f)
		warmMid = append(warmMid, mid)
	}
	runWave(t, r.p.Listen, warm, warmMid, r.counts)
	waitSessionsGone(t, r.p, r.counts.total)
	r.settle()
	return len(warm)
}

// soakBaseline is what tether holds after the warm-up, what it must be back
// at after the soak.
type soakBaseline struct {
	goroutines int
	heap       float64 // bytes in use after GC
	fds        int
	socks      map[string]int
}

// baseline measures tether after the warm-up and logs it.
func (r *soakRig) baseline(t *testing.T) soakBaseline {
	t.Helper()
	b := soakBaseline{goroutines: r.p.baseline(), heap: r.p.heapLow(), fds: r.p.fds()}
	b.socks = tetherSockets(t, r.ports, r.m.Port)
	t.Logf("baseline after %d warm-up sessions: goroutines %d, heap in use %.2f MiB, fds %d, sockets %v",
		r.counts.total, b.goroutines, b.heap/(1<<20), b.fds, b.socks)
	return b
}

// runWaves runs n sessions in waves of up to wave, each fault drawn from
// rng, logging tether's figures after each wave; it returns how many waves
// it ran.
func (r *soakRig) runWaves(t *testing.T, rng *rand.Rand, n, wave int) (waves int) {
	t.Helper()
	for done := 0; done < n; {
		k := min(wave, n-done)
		plan := make([]soakFault, k)
		mids := make([]bool, k)
		for i := range plan {
			plan[i], mids[i] = pickSoakFault(rng, i)
		}
		runWave(t, r.p.Listen, plan, mids, r.counts)
		done += k
		waves++
		waitSessionsGone(t, r.p, r.counts.total)
		g := r.settle()
		t.Logf("after wave %d (%d sessions): goroutines %d, heap in use after GC %.2f MiB, fds %d",
			waves, r.counts.total, g, r.p.heapLow()/(1<<20), r.p.fds())
	}
	return waves
}

// checkCounted asserts that every session ended, exactly once, under its
// fault's reason. It returns tether_sessions_total and, for the figures,
// the reasons (injected and counted) and the faults injected, one a line.
func (r *soakRig) checkCounted(t *testing.T) (total float64, reasons, faults string) {
	t.Helper()
	waitSessionsGone(t, r.p, r.counts.total)
	code, metrics := r.p.get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	if v, _ := parseMetric(string(metrics), "tether_sessions_active"); v != 0 {
		t.Errorf("tether_sessions_active = %v after the soak, want 0", v)
	}
	total, _ = parseMetric(string(metrics), "tether_sessions_total")
	if int(total) != r.counts.total {
		t.Errorf("tether_sessions_total over all reasons = %v, want %d (sessions started)", total, r.counts.total)
	}
	var table strings.Builder
	for _, reason := range slices.Sorted(maps.Keys(r.counts.byReason)) {
		got, _ := parseMetric(string(metrics), "tether_sessions_total", `reason="`+reason+`"`)
		fmt.Fprintf(&table, "\n  %-28s injected %5d  counted %5.0f", reason, r.counts.byReason[reason], got)
		if int(got) != r.counts.byReason[reason] {
			t.Errorf("tether_sessions_total{reason=%q} = %v, want %d", reason, got, r.counts.byReason[reason])
		}
	}
	var byFault strings.Builder
	for _, f := range slices.Sorted(maps.Keys(r.counts.byFault)) {
		fmt.Fprintf(&byFault, "\n  %-24s %5d (with audio both ways %d)", f, r.counts.byFault[f], r.counts.midFault[f])
	}
	return total, table.String(), byFault.String()
}

// checkSocketsClosed asserts that tether has closed every socket of its
// own: none in CLOSE_WAIT, and the only FIN_WAIT2 left are orphans (closed,
// inode 0) whose peer is a stalled mock session, which keeps its socket open
// until the mock stops; then it stops the mock. It returns tether's sockets
// before and after.
func (r *soakRig) checkSocketsClosed(t *testing.T) (before, after map[string]int) {
	t.Helper()
	r.settle()
	testkit.WaitFor(t, stepTimeout, "no tether socket in CLOSE_WAIT, and no open one in FIN_WAIT2", func() bool {
		before = tetherSockets(t, r.ports, r.m.Port)
		return before["CLOSE_WAIT"] == 0 && before["CLOSE_WAIT (orphan)"] == 0 && before["FIN_WAIT2"] == 0
	})

	if orphans, stalls := before["FIN_WAIT2 (orphan)"], r.counts.byFault["upstream_stall"]; orphans > stalls {
		t.Errorf("%d orphaned tether sockets in FIN_WAIT2, but only %d sessions had a stalled upstream", orphans, stalls)
	}
	// Stop the mock: the orphans get its FIN and go, and an upstream socket
	// tether had failed to close would now sit in CLOSE_WAIT.
	stopProc(t, r.m.proc, "mock-upstream")
	testkit.WaitFor(t, stepTimeout, "no tether socket in CLOSE_WAIT or FIN_WAIT2", func() bool {
		after = tetherSockets(t, r.ports, r.m.Port)
		for state, n := range after {
			if n > 0 && (strings.HasPrefix(state, "CLOSE_WAIT") || strings.HasPrefix(state, "FIN_WAIT2")) {
				return false
			}
		}
		return true
	})
	return before, after
}

// checkBackToBaseline asserts that tether's descriptors, goroutines and heap
// are back at the baseline and returns them.
func (r *soakRig) checkBackToBaseline(t *testing.T, base soakBaseline) (fds, goroutines int, heap float64) {
	t.Helper()
	testkit.WaitFor(t, stepTimeout, fmt.Sprintf("tether's fds back to %d", base.fds), func() bool {
		fds = r.p.fds()
		return fds <= base.fds
	})

	if goroutines = r.settle(); goroutines > base.goroutines+5 {
		_, dump := r.p.get("/debug/pprof/goroutine?debug=1")
		t.Errorf("goroutines %d after the soak, baseline %d (+5 allowed); profile:\n%s", goroutines, base.goroutines, tail(string(dump), 16<<10))
	}
	heap = r.p.heapLow()
	if heap > base.heap*1.10 {
		t.Errorf("heap in use after GC %.2f MiB, baseline %.2f MiB: +%.1f%% (10%% allowed)",
			heap/(1<<20), base.heap/(1<<20), 100*(heap/base.heap-1))
	}
	return fds, goroutines, heap
}

// waitSessionsGone waits until tether lists no session and has counted want
// ended sessions.
func waitSessionsGone(t *testing.T, p *proc, want int) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "GET /sessions to be []", func() bool {
		rows, raw := p.sessions()
		return len(rows) == 0 && strings.TrimSpace(raw) == "[]"
	})

	testkit.WaitFor(t, stepTimeout, fmt.Sprintf("tether_sessions_total to reach %d", want), func() bool {
		n, _ := p.metric("tether_sessions_total")
		return int(n) >= want
	})

}
