package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// Isolation load: isolationSessions sessions, each appending 20 ms of audio
// every isolationPeriod with the mock in echo mode.
const (
	isolationSessions = 1000
	isolationPeriod   = 250 * time.Millisecond
	isolationDial     = 50 // concurrent dials
	// isolationAfter is how many echoes of frames sent after the panic
	// each other session must receive.
	isolationAfter = 3
)

// TestIsolationPanic: a tetherfaults build (the test-only hook of
// proxy/faults_on.go, compiled out of normal builds) panics inside one
// session's relay when that client sends {"type":"tether.test.panic"}. With
// 1,000 sessions streaming audio through the echoing mock, the panicking one
// ends (client close 1011, reason panic in /metrics, "session panic" with
// its stack in the log) and the other 999 keep streaming: each gets echoes
// of frames it sent after the panic, and none is closed.
func TestIsolationPanic(t *testing.T) {
	raiseNoFile(t, 3*isolationSessions+512)
	bin := buildFaultsBinary(t, t.TempDir())
	m := startMockProc(t)
	p := startTetherBin(t, bin, "load.yaml", map[string]string{
		"UpstreamURL": m.URL,
		"MaxSessions": "2000",
	})
	base := p.baseline()

	start := time.Now()
	ss := openEchoStreamers(t, p.Listen)
	opened := time.Since(start)

	stopStreaming := streamAudio(ss)
	defer stopStreaming()
	testkit.WaitFor(t, 30*time.Second, "every session to get echoes", func() bool {
		for _, s := range ss {
			if s.echoed.Load() < 2 {
				return false
			}
		}
		return true
	})

	// One session panics inside tether.
	victim := rand.IntN(isolationSessions)
	mark := make([]int64, len(ss))
	for i, s := range ss {
		mark[i] = s.sent.Load()
	}
	tPanic := time.Now()
	if err := ss[victim].sendText(`{"type":"tether.test.panic"}`); err != nil {
		t.Fatalf("send the panic event: %v", err)
	}
	testkit.WaitFor(t, stepTimeout, "the panicking session to be closed", func() bool {
		return ss[victim].closeCode.Load() != 0
	})

	victimClosed := time.Unix(0, ss[victim].closedAt.Load()).Sub(tPanic)
	if code := ss[victim].closeCode.Load(); code != 1011 {
		t.Errorf("panicking session: close %d, want 1011", code)
	}

	// The others stream on.
	waitOthersEchoed(t, ss, victim, mark)
	streamedFor := time.Since(tPanic)
	for i, s := range ss {
		if i != victim && s.closeCode.Load() != 0 {
			t.Errorf("session %d was closed (%d) after another session panicked", i, s.closeCode.Load())
		}
	}
	checkOnePanicked(t, p)
	var frames int64
	for _, s := range ss {
		frames += s.echoed.Load()
	}

	// Then everyone hangs up cleanly, and nothing is left behind.
	stopStreaming()
	hangUpOthers(t, ss, victim)
	waitSessionsGone(t, p, isolationSessions)
	if v, _ := p.metric("tether_sessions_total", `reason="client_closed"`); v != isolationSessions-1 {
		t.Errorf(`tether_sessions_total{reason="client_closed"} = %v, want %d`, v, isolationSessions-1)
	}
	var g int
	testkit.WaitFor(t, stepTimeout, "goroutines back at the baseline", func() bool {
		g = p.goroutines()
		return g <= base+5
	})

	t.Logf("isolation figures: %d sessions opened in %v; one panicked and was closed 1011 after %v; the other %d each got >= %d echoes "+
		"of frames sent after the panic within %v (%d echoed frames in all); goroutines %d before, %d after all closed",
		isolationSessions, opened.Round(time.Millisecond), victimClosed.Round(10*time.Microsecond), isolationSessions-1, isolationAfter,
		streamedFor.Round(time.Millisecond), frames, base, g)
}

// openEchoStreamers opens isolationSessions sessions through tether at addr,
// isolationDial at a time, and switches the mock to echo on each; cleanup
// closes them.
func openEchoStreamers(t *testing.T, addr string) []*streamer {
	t.Helper()
	ss := make([]*streamer, isolationSessions)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		errs  []string
		sem   = make(chan struct{}, isolationDial)
	)
	for i := range ss {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := dialStreamer(addr)
			if err == nil {
				err = s.sendText(`{"type":"mock.fault","fault":"echo"}`)
			}
			if err != nil {
				errMu.Lock()
				errs = append(errs, fmt.Sprintf("session %d: %v", i, err))
				errMu.Unlock()
				return
			}
			ss[i] = s
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range ss {
			if s != nil {
				s.Close()
			}
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d sessions failed to open: %s", len(errs), strings.Join(errs[:min(len(errs), 5)], "; "))
	}
	return ss
}

// streamAudio has every session append audio every isolationPeriod, the
// sessions spread over the period, until the returned stop (which waits for
// the senders; calling it again does nothing).
func streamAudio(ss []*streamer) (stop func()) {
	done := make(chan struct{})
	var senders sync.WaitGroup
	for i, s := range ss {
		senders.Add(1)
		go func() {
			defer senders.Done()
			// Spread the sessions over the period.
			select {
			case <-time.After(time.Duration(i) * isolationPeriod / isolationSessions):
			case <-done:
				return
			}
			tick := time.NewTicker(isolationPeriod)
			defer tick.Stop()
			for {
				if s.sendAppend() != nil {
					return
				}
				select {
				case <-tick.C:
				case <-done:
					return
				}
			}
		}()
	}
	return sync.OnceFunc(func() {
		close(done)
		senders.Wait()
	})
}

// waitOthersEchoed waits until every session but the victim got
// isolationAfter echoes of frames sent after its mark.
func waitOthersEchoed(t *testing.T, ss []*streamer, victim int, mark []int64) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("every other session to get %d echoes of frames sent after the panic", isolationAfter), func() bool {
		for i, s := range ss {
			if i != victim && s.echoed.Load() < mark[i]+isolationAfter {
				return false
			}
		}
		return true
	})
}

// checkOnePanicked asserts that /metrics and the log tell of one session
// ended by a panic, with its stack, and of no other session ended.
func checkOnePanicked(t *testing.T, p *proc) {
	t.Helper()
	if v, _ := p.metric("tether_sessions_total", `reason="panic"`); v != 1 {
		t.Errorf(`tether_sessions_total{reason="panic"} = %v, want 1`, v)
	}
	if v, _ := p.metric("tether_sessions_total"); v != 1 {
		t.Errorf("tether_sessions_total over all reasons = %v, want 1 (only the panicking session ended)", v)
	}
	if v, _ := p.metric("tether_sessions_active"); v != isolationSessions-1 {
		t.Errorf("tether_sessions_active = %v, want %d", v, isolationSessions-1)
	}
	var panics, stacks, panicEnds int
	for _, rec := range p.logRecords() {
		switch rec["msg"] {
		case "session panic":
			panics++
			st, _ := rec["stack"].(string)
			if strings.Contains(st, "goroutine ") && strings.Contains(st, "proxy.faultHook") {
				stacks++
			}
		case "session ended":
			if rec["reason"] == "panic" {
				panicEnds++
			}
		}
	}
	if panics != 1 || stacks != 1 || panicEnds != 1 {
		t.Errorf(`log: %d "session panic" lines (%d with a stack through proxy.faultHook), %d "session ended" with reason panic; want 1, 1, 1`,
			panics, stacks, panicEnds)
	}
}

// hangUpOthers closes every session but the victim with 1000 and waits for
// each session's reader to end.
func hangUpOthers(t *testing.T, ss []*streamer, victim int) {
	t.Helper()
	for i, s := range ss {
		if i != victim {
			_ = s.closeWith(1000)
		}
	}
	for _, s := range ss {
		select {
		case <-s.done:
		case <-time.After(stepTimeout):
			t.Fatalf("a session was not closed within %v of its close frame", stepTimeout)
		}
	}
}
