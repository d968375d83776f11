package lifecycle

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// stuckRelay is a Transport whose Shutdown blocks like a relay writing a
// close frame behind a stuck frame: for hold (fake time), or until unblock
// is closed when hold is 0. Once Shutdown returns, the "relay goroutines"
// exit and report Finished, as proxy.Relay does.
type stuckRelay struct {
	m       *Manager
	s       *Session
	release func()
	hold    time.Duration
	unblock <-chan struct{}

	calls    atomic.Int32
	calledAt atomic.Int64 // fake-clock UnixNano of the (first) Shutdown call
}

func (r *stuckRelay) Ping(Leg) error { return nil }

// Liveness: the peers are always just heard from.
func (r *stuckRelay) Liveness(Leg) (heard, writing time.Time) { return time.Now(), time.Time{} }
func (r *stuckRelay) shutdownAt() time.Time                   { return time.Unix(0, r.calledAt.Load()) }
func (r *stuckRelay) BeginClose([]byte) error                 { return nil }

func (r *stuckRelay) Shutdown(_, _ CloseFrame) (sent [2]bool) {
	if r.calls.Add(1) == 1 {
		r.calledAt.Store(time.Now().UnixNano())
	}
	if r.hold > 0 {
		time.Sleep(r.hold)
	} else {
		<-r.unblock
	}
	go r.m.Finished(r.s, r.release)
	return [2]bool{true, true}
}

// openStuck opens n sessions on m whose Shutdown blocks for hold (or until
// unblock is closed); busy ones have a response in progress.
func openStuck(t *testing.T, m *Manager, n int, busy bool, hold time.Duration, unblock <-chan struct{}) []*stuckRelay {
	t.Helper()
	out := make([]*stuckRelay, n)
	for i := range out {
		release := reserve(t, m)
		s := m.Open(Info{Upstream: "u"})
		s.ReleaseOnEnd(release)
		r := &stuckRelay{m: m, s: s, release: release, hold: hold, unblock: unblock}
		s.Start(r)
		if busy {
			s.AnswerStarted("r")
		}
		out[i] = r
	}
	return out
}

// drainAsync runs m.Drain(ctx) and returns a channel that yields how long it took.
func drainAsync(m *Manager, ctx context.Context) <-chan time.Duration {
	took := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		m.Drain(ctx)
		took <- time.Since(start)
	}()
	return took
}

func checkShutdownAt(t *testing.T, what string, rs []*stuckRelay, want time.Time) {
	t.Helper()
	for i, r := range rs {
		if n := r.calls.Load(); n != 1 {
			t.Fatalf("%s %d: Shutdown called %d times, want once", what, i, n)
		}
		if got := r.shutdownAt(); !got.Equal(want) {
			t.Fatalf("%s %d: Shutdown at %v, want %v", what, i, got.Sub(want), time.Duration(0))
		}
		if r.s.Summary().Reason != ReasonShutdown {
			t.Fatalf("%s %d: reason %q", what, i, r.s.Summary().Reason)
		}
	}
}

// TestDrainClosesStuckSessionsConcurrently: 200 idle sessions whose close
// takes 1 s each (a frame stuck mid-way) are all closed at the signal, and
// Drain returns after 1 s, not 200 s.
func TestDrainClosesStuckSessionsConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 2 * time.Second})
		rs := openStuck(t, m, 200, false, time.Second, nil)
		start := time.Now()
		took := drainAsync(m, t.Context())
		if d := <-took; d != time.Second {
			t.Fatalf("Drain took %v, want 1s (every session closed at once)", d)
		}
		checkShutdownAt(t, "session", rs, start)
		if m.Len() != 0 || m.Stopping().Err() == nil {
			t.Fatalf("after Drain: %d sessions, stopping %v", m.Len(), m.Stopping().Err())
		}
	})
}

// TestDrainDeadlineCountsFromTheSignal: 160 idle sessions that take 1 s each
// to close and 40 mid-response; drain_timeout 2 s. The idle ones are closed
// at the signal; the deadline is 2 s after the signal (not after closing
// the idle ones), the busy ones are closed then, all at once, and Drain
// returns at 3 s: within drain_timeout + 2 s.
func TestDrainDeadlineCountsFromTheSignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 2 * time.Second})
		idle := openStuck(t, m, 160, false, time.Second, nil)
		busy := openStuck(t, m, 40, true, time.Second, nil)
		start := time.Now()
		took := drainAsync(m, t.Context())
		synctest.Wait()
		checkShutdownAt(t, "idle session", idle, start)
		for i, r := range busy {
			if r.calls.Load() != 0 || r.s.Snapshot().State != stateDraining {
				t.Fatalf("busy session %d: closed before the deadline (state %s)", i, r.s.Snapshot().State)
			}
		}
		time.Sleep(1999 * time.Millisecond)
		synctest.Wait()
		if m.Stopping().Err() != nil {
			t.Fatal("Stopping cancelled before the drain deadline")
		}
		if d := <-took; d != 3*time.Second {
			t.Fatalf("Drain took %v, want 3s (deadline 2 s + a 1 s close)", d)
		}
		checkShutdownAt(t, "busy session", busy, start.Add(2*time.Second))
	})
}

// TestDrainSecondSignalClosesAtOnce: a second signal (ctx) 300 ms into a
// 30 s drain closes every busy session at that moment, even while idle
// sessions are still inside their slow close, and cancels Stopping.
func TestDrainSecondSignalClosesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 30 * time.Second})
		idle := openStuck(t, m, 50, false, time.Second, nil)
		busy := openStuck(t, m, 50, true, time.Second, nil)
		force, forceNow := context.WithCancel(t.Context())
		defer forceNow()
		start := time.Now()
		took := drainAsync(m, force)
		time.Sleep(300 * time.Millisecond)
		forceNow()
		synctest.Wait()
		if m.Stopping().Err() == nil {
			t.Fatal("Stopping not cancelled by the second signal")
		}
		checkShutdownAt(t, "idle session", idle, start)
		checkShutdownAt(t, "busy session", busy, start.Add(300*time.Millisecond))
		if d := <-took; d != 1300*time.Millisecond {
			t.Fatalf("Drain took %v, want 1.3s (second signal + a 1 s close)", d)
		}
	})
}

// TestDrainCancelsHandshakesAtTheDeadline: an upgrade still dialing when the
// drain begins may finish until the deadline; at the deadline Stopping is
// cancelled (its dial gives up and it answers 503), and Drain returns as
// soon as it released its slot.
func TestDrainCancelsHandshakesAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 2 * time.Second})
		release := reserve(t, m)
		var cancelledAfter time.Duration
		start := time.Now()
		go func() { // the handler: a dial that never answers, cancelled by Stopping
			<-m.Stopping().Done()
			cancelledAfter = time.Since(start)
			time.Sleep(10 * time.Millisecond) // writing the 503
			release()
		}()
		took := drainAsync(m, t.Context())
		if d := <-took; d > 2*time.Second+50*time.Millisecond {
			t.Fatalf("Drain took %v, want the 2 s deadline plus the 503", d)
		}
		if cancelledAfter != 2*time.Second {
			t.Fatalf("dial cancelled after %v, want at the 2 s deadline", cancelledAfter)
		}
	})
}

// TestDrainSecondSignalCancelsHandshakes: with no session open, a second
// signal cancels a dial in progress at once.
func TestDrainSecondSignalCancelsHandshakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 30 * time.Second})
		release := reserve(t, m)
		go func() {
			<-m.Stopping().Done()
			release()
		}()
		force, forceNow := context.WithCancel(t.Context())
		took := drainAsync(m, force)
		time.Sleep(100 * time.Millisecond)
		forceNow()
		if d := <-took; d > 150*time.Millisecond {
			t.Fatalf("Drain took %v after a second signal at 100ms", d)
		}
	})
}

// TestDrainIsBoundedWhenEverythingHangs: sessions whose close never returns
// and a handshake that never lets go: Drain still returns closeGrace after
// the deadline (the process then exits).
func TestDrainIsBoundedWhenEverythingHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unblock := make(chan struct{})
		m := NewManager(Options{DrainTimeout: 2 * time.Second})
		openStuck(t, m, 10, false, 0, unblock)
		openStuck(t, m, 10, true, 0, unblock)
		release := reserve(t, m)
		took := drainAsync(m, t.Context())
		if d := <-took; d != 2*time.Second+closeGrace {
			t.Fatalf("Drain took %v, want drain_timeout + closeGrace (%v)", d, 2*time.Second+closeGrace)
		}
		// Let the goroutines go (goleak).
		close(unblock)
		release()
		m.Wait()
	})
}

// TestCloseAllEndsEverySessionAtOnce: 200 sessions whose close takes 1 s:
// CloseAll returns after 1 s (one round), not after several rounds of workers.
func TestCloseAllEndsEverySessionAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{})
		rs := openStuck(t, m, 200, true, time.Second, nil)
		start := time.Now()
		m.CloseAll(ReasonShutdown)
		if d := time.Since(start); d != time.Second {
			t.Fatalf("CloseAll took %v, want 1s", d)
		}
		checkShutdownAt(t, "session", rs, start)
		m.Wait()
	})
}

// TestWaitContextGivesUp: WaitContext returns false when ctx ends first and
// true once the last session finished; a session may open while it waits.
func TestWaitContextGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{})
		unblock := make(chan struct{})
		openStuck(t, m, 1, false, 0, unblock)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		go m.CloseAll(ReasonShutdown)
		if m.WaitContext(ctx) {
			t.Fatal("WaitContext reported done while a session runs")
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !m.WaitContext(t.Context()) {
				t.Error("WaitContext gave up without a deadline")
			}
		}()
		synctest.Wait()
		openStuck(t, m, 1, false, time.Millisecond, nil) // opens while someone waits
		close(unblock)
		m.CloseAll(ReasonShutdown)
		wg.Wait()
	})
}
