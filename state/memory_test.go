package state

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryAdmission(t *testing.T) {
	m := NewMemory()
	testAdmission(t, m, func() { m.Add("alice", admissionWindow, admissionSpent) }, func() {})
}

func TestMemoryLeases(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	w := WindowStart(time.Now(), 24*time.Hour)
	admit := func(client, lease string, max int) Verdict {
		t.Helper()
		v, err := m.Admit(ctx, Request{Client: client, Lease: lease, MaxSessions: max, Window: w})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	live := func(client string) int {
		t.Helper()
		n, _, err := m.Status(ctx, client, w)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if v := admit("a", "1", 2); !v.Admitted || v.Sessions != 0 {
		t.Fatalf("first: %+v", v)
	}
	if v := admit("a", "2", 2); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("second: %+v", v)
	}
	if v := admit("a", "3", 2); v.Admitted || v.Limit != LimitSessions || v.Sessions != 2 {
		t.Fatalf("third: %+v", v)
	}
	// A lease already held is not counted against itself.
	if v := admit("a", "2", 2); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("again: %+v", v)
	}
	if v := admit("b", "1", 1); !v.Admitted || v.Sessions != 0 {
		t.Fatalf("another client: %+v", v)
	}
	if live("a") != 2 || live("b") != 1 {
		t.Fatalf("live a %d b %d", live("a"), live("b"))
	}
	m.Release("a", "1")
	m.Release("a", "1") // idempotent
	m.Release("a", "nope")
	m.Release("nobody", "1")
	if live("a") != 1 {
		t.Fatalf("live after release: %d", live("a"))
	}
	if v := admit("a", "3", 2); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("after release: %+v", v)
	}
	m.Release("a", "2")
	m.Release("a", "3")
	m.Release("b", "1")
	if len(m.leases) != 0 {
		t.Fatalf("lease sets left: %v", m.leases)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryUsage(t *testing.T) {
	m := NewMemory()
	w := WindowStart(time.Now(), time.Hour)
	m.Add("a", w, Usage{Tokens: 10, AudioSeconds: 1.5, CostUSD: 0.25})
	m.Add("a", w, Usage{Tokens: 5, CostUSD: 0.25})
	m.Add("a", w, Usage{}) // nothing
	m.Add("b", w, Usage{Tokens: 1})
	if got, want := m.Spent("a", w), (Usage{Tokens: 15, AudioSeconds: 1.5, CostUSD: 0.5}); got != want {
		t.Fatalf("spent %+v, want %+v", got, want)
	}
	n, u, err := m.Status(context.Background(), "b", w)
	if err != nil || n != 0 || u != (Usage{Tokens: 1}) {
		t.Fatalf("status %d %+v %v", n, u, err)
	}
	if got := m.Spent("c", w); !got.IsZero() {
		t.Fatalf("unknown client spent %+v", got)
	}
}

// TestMemoryWindows keeps the current and the previous window and drops
// the ones before.
func TestMemoryWindows(t *testing.T) {
	m := NewMemory()
	day := 24 * time.Hour
	w0 := WindowStart(time.Date(2025, 1, 1, 13, 0, 0, 0, time.UTC), day)
	w1, w2 := w0.Add(day), w0.Add(2*day)
	m.Add("a", w0, Usage{Tokens: 1})
	m.Add("b", w0, Usage{Tokens: 1})
	m.Add("a", w1, Usage{Tokens: 2})
	if m.Spent("a", w0).Tokens != 1 || m.Spent("b", w0).Tokens != 1 || m.Spent("a", w1).Tokens != 2 {
		t.Fatal("the previous window was dropped too early")
	}
	m.Add("a", w2, Usage{Tokens: 3})
	if m.Spent("a", w0).Tokens != 0 || m.Spent("b", w0).Tokens != 0 {
		t.Fatal("a window before the previous one is still counted")
	}
	if m.Spent("a", w1).Tokens != 2 || m.Spent("a", w2).Tokens != 3 {
		t.Fatal("the current or previous window was dropped")
	}
	if len(m.usage) != 2 {
		t.Fatalf("%d usage entries kept, want 2: %v", len(m.usage), m.usage)
	}
	// Late usage for a dropped window is not kept; for the previous one it is.
	m.Add("a", w0, Usage{Tokens: 9})
	m.Add("b", w1, Usage{Tokens: 4})
	if m.Spent("a", w0).Tokens != 0 || m.Spent("b", w1).Tokens != 4 || len(m.usage) != 3 {
		t.Fatalf("late usage: %v", m.usage)
	}
	// Admission reads the window asked for.
	v, _ := m.Admit(context.Background(), Request{Client: "a", Lease: "l", Budget: Usage{Tokens: 3}, Window: w2})
	if v.Admitted || v.Limit != LimitTokens {
		t.Fatalf("budget in the current window: %+v", v)
	}
	v, _ = m.Admit(context.Background(), Request{Client: "a", Lease: "l", Budget: Usage{Tokens: 3}, Window: w1})
	if !v.Admitted {
		t.Fatalf("budget in the previous window: %+v", v)
	}
}

// TestMemoryConcurrent admits, counts and releases from many goroutines
// (run with -race): the session bound holds at every moment and no usage is
// lost.
func TestMemoryConcurrent(t *testing.T) {
	m := NewMemory()
	w := WindowStart(time.Now(), 24*time.Hour)
	const workers, rounds, max = 8, 300, 3
	var live, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range rounds {
				lease := fmt.Sprintf("%d-%d", g, i)
				v, err := m.Admit(context.Background(), Request{Client: "c", Lease: lease, MaxSessions: max, Window: w})
				if err != nil {
					t.Error(err)
					return
				}
				if !v.Admitted {
					if v.Limit != LimitSessions || v.Sessions < max {
						t.Errorf("refused %+v", v)
					}
					continue
				}
				admitted.Add(1)
				n := live.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				m.Add("c", w, Usage{Tokens: 1, AudioSeconds: 0.5, CostUSD: 0.25})
				_ = m.Spent("c", w)
				live.Add(-1)
				m.Release("c", lease)
			}
		})
	}
	wg.Wait()
	n, u, _ := m.Status(context.Background(), "c", w)
	a := admitted.Load()
	if n != 0 || peak.Load() > max || a == 0 {
		t.Fatalf("live %d, peak %d, admitted %d", n, peak.Load(), a)
	}
	if want := (Usage{Tokens: a, AudioSeconds: float64(a) * 0.5, CostUSD: float64(a) * 0.25}); u != want {
		t.Fatalf("usage %+v, want %+v", u, want)
	}
	t.Logf("%d of %d admitted, peak %d live", a, workers*rounds, peak.Load())
}
