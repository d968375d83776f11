package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// testTimeout is the stores' round-trip bound in these tests: short, with
// room for -race on a busy machine.
const testTimeout = 250 * time.Millisecond

// testStore is a Redis store with its OnError counts and log.
type testStore struct {
	*Redis
	errs *errorCounter
	log  *testkit.SyncBuffer
}

// newTestRedis makes a store on url, closed when the test ends; mod, if
// set, changes the options first.
func newTestRedis(t *testing.T, url string, mod func(*RedisOptions)) *testStore {
	t.Helper()
	ts := &testStore{errs: &errorCounter{}, log: &testkit.SyncBuffer{}}
	o := RedisOptions{
		URL:           url,
		KeyPrefix:     "t:",
		Timeout:       testTimeout,
		LeaseTTL:      5 * time.Second,
		FlushInterval: 50 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnError:       ts.errs.add,
	}
	if mod != nil {
		mod(&o)
	}
	s, err := NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if strings.Contains(ts.log.String(), testPassword) {
			t.Errorf("the log shows the password:\n%s", ts.log)
		}
	})
	ts.Redis = s
	return ts
}

func admit(t *testing.T, s Store, req Request) Verdict {
	t.Helper()
	v, err := s.Admit(context.Background(), req)
	if err != nil {
		t.Fatalf("admit %+v: %v", req, err)
	}
	return v
}

func status(t *testing.T, s Store, client string, w time.Time) (int, Usage) {
	t.Helper()
	n, u, err := s.Status(context.Background(), client, w)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return n, u
}

// statusIs reports whether s's Status is n sessions and usage u.
func statusIs(s Store, client string, w time.Time, n int, u Usage) bool {
	gotN, gotU, err := s.Status(context.Background(), client, w)
	return err == nil && gotN == n && gotU == u
}

func today() time.Time { return WindowStart(time.Now(), 24*time.Hour) }

func TestRedisAdmission(t *testing.T) {
	srv := startRedis(t)
	s := newTestRedis(t, srv.url(), nil)
	testAdmission(t, s,
		func() {
			s.Add("alice", admissionWindow, admissionSpent)
			testkit.WaitFor(t, 2*time.Second, "the usage flushed", func() bool {
				return statusIs(s, "alice", admissionWindow, 0, admissionSpent)
			})
		},
		func() {
			testkit.WaitFor(t, 2*time.Second, "the release sent", func() bool {
				return statusIs(s, "alice", admissionWindow, 2, admissionSpent)
			})
		})
}

// TestRedisSessionsAcrossReplicas bounds a client's sessions across two
// replicas sharing one server.
func TestRedisSessionsAcrossReplicas(t *testing.T) {
	srv := startRedis(t)
	a := newTestRedis(t, srv.url(), nil)
	b := newTestRedis(t, srv.url(), nil)
	w := today()
	req := func(lease string) Request { return Request{Client: "alice", Lease: lease, MaxSessions: 2, Window: w} }
	if v := admit(t, a, req("a1")); !v.Admitted || v.Sessions != 0 || v.Local {
		t.Fatalf("a1: %+v", v)
	}
	if v := admit(t, b, req("b1")); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("b1: %+v", v)
	}
	for _, s := range []*testStore{a, b} {
		if v := admit(t, s, req("third")); v.Admitted || v.Limit != LimitSessions || v.Sessions != 2 || v.Local {
			t.Fatalf("third: %+v", v)
		}
	}
	// Another client is not counted with alice.
	if v := admit(t, b, Request{Client: "bob", Lease: "x", MaxSessions: 1, Window: w}); !v.Admitted || v.Sessions != 0 {
		t.Fatalf("bob: %+v", v)
	}
	if n, _ := status(t, b, "alice", w); n != 2 {
		t.Fatalf("status: %d sessions", n)
	}
	// A release frees the session fleet-wide at once (far sooner than the
	// 5 s lease TTL).
	start := time.Now()
	a.Release("alice", "a1")
	a.Release("alice", "a1") // idempotent
	testkit.WaitFor(t, time.Second, "a1 released in Redis", func() bool { return statusIs(b, "alice", w, 1, Usage{}) })
	t.Logf("release seen after %v", time.Since(start))
	if v := admit(t, b, req("b2")); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("after release: %+v", v)
	}
	// Admitting a lease again does not count it twice.
	if v := admit(t, b, req("b2")); !v.Admitted || v.Sessions != 1 {
		t.Fatalf("again: %+v", v)
	}
	if a.errs.get(opAdmit)+b.errs.get(opAdmit) != 0 {
		t.Fatal("OnError called")
	}
}

// TestRedisConcurrentReplicas admits from many goroutines of two replicas:
// the bound holds at every moment.
func TestRedisConcurrentReplicas(t *testing.T) {
	srv := startRedis(t)
	stores := []*testStore{newTestRedis(t, srv.url(), nil), newTestRedis(t, srv.url(), nil)}
	w := today()
	const perStore, rounds, max = 4, 40, 3
	var live, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for si, s := range stores {
		for g := range perStore {
			wg.Go(func() {
				for i := range rounds {
					lease := fmt.Sprintf("%d-%d-%d", si, g, i)
					v, err := s.Admit(context.Background(), Request{Client: "c", Lease: lease, MaxSessions: max, Window: w})
					if err != nil || v.Local {
						t.Errorf("admit: %+v %v", v, err)
						return
					}
					if !v.Admitted {
						continue
					}
					admitted.Add(1)
					n := live.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					s.Add("c", w, Usage{Tokens: 1})
					live.Add(-1)
					s.Release("c", lease)
				}
			})
		}
	}
	wg.Wait()
	n := admitted.Load()
	if peak.Load() > max || n == 0 {
		t.Fatalf("peak %d, admitted %d", peak.Load(), n)
	}
	testkit.WaitFor(t, 3*time.Second, "every release and usage sent", func() bool {
		return statusIs(stores[0], "c", w, 0, Usage{Tokens: n})
	})
	t.Logf("%d of %d admitted", n, 2*perStore*rounds)
}

// TestRedisKilledReplicaLosesLeases: a replica that stops without Close
// (SIGKILL) frees its sessions within the lease TTL, while a live
// replica's leases are refreshed.
func TestRedisKilledReplicaLosesLeases(t *testing.T) {
	srv := startRedis(t)
	const ttl = 600 * time.Millisecond
	short := func(o *RedisOptions) { o.LeaseTTL = ttl }
	a := newTestRedis(t, srv.url(), short)
	b := newTestRedis(t, srv.url(), short)
	w := today()
	for _, l := range []string{"a1", "a2"} {
		if v := admit(t, a, Request{Client: "alice", Lease: l, Window: w}); !v.Admitted {
			t.Fatalf("%s: %+v", l, v)
		}
	}
	if v := admit(t, b, Request{Client: "alice", Lease: "b1", Window: w}); !v.Admitted {
		t.Fatalf("b1: %+v", v)
	}
	// Outlive one TTL with every lease refreshed.
	time.Sleep(ttl + ttl/3)
	if n, _ := status(t, b, "alice", w); n != 3 {
		t.Fatalf("after a TTL with refreshes: %d sessions, want 3", n)
	}
	a.kill()
	killed := time.Now()
	testkit.WaitFor(t, 3*time.Second, "the killed replica's leases expired", func() bool { return statusIs(b, "alice", w, 1, Usage{}) })
	took := time.Since(killed)
	t.Logf("leases gone %v after the kill (TTL %v)", took, ttl)
	if took > ttl+400*time.Millisecond {
		t.Errorf("leases outlived the TTL: %v", took)
	}
	// b's lease is refreshed: it stays over another TTL.
	deadline := time.Now().Add(ttl)
	for time.Now().Before(deadline) {
		if n, _ := status(t, b, "alice", w); n != 1 {
			t.Fatalf("b's lease: %d sessions", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := a.Admit(context.Background(), Request{Client: "alice", Lease: "x", Window: w}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("admit on a killed store: %v", err)
	}
}

// TestRedisUsageAcrossReplicas: usage added on one replica is visible to
// the other after a flush, in Spent and in Admit's budget checks.
func TestRedisUsageAcrossReplicas(t *testing.T) {
	srv := startRedis(t)
	a := newTestRedis(t, srv.url(), nil)
	b := newTestRedis(t, srv.url(), nil)
	w := today()
	u := Usage{Tokens: 120, AudioSeconds: 1.5, CostUSD: 0.25}
	a.Add("alice", w, u)
	if got := a.Spent("alice", w); got != u {
		t.Fatalf("a's Spent right after Add: %+v", got)
	}
	if got := b.Spent("alice", w); !got.IsZero() {
		t.Fatalf("b's Spent before hearing of it: %+v", got)
	}
	testkit.WaitFor(t, 2*time.Second, "a's usage flushed", func() bool { return statusIs(b, "alice", w, 0, u) })
	if got := b.Spent("alice", w); got != u {
		t.Fatalf("b's Spent after Status: %+v", got)
	}
	c := newTestRedis(t, srv.url(), nil) // has heard nothing yet
	v := admit(t, c, Request{Client: "alice", Lease: "c1", Budget: Usage{Tokens: 120}, Window: w})
	if v.Admitted || v.Limit != LimitTokens || v.Spent != u {
		t.Fatalf("c's admission: %+v", v)
	}
	if got := c.Spent("alice", w); got != u {
		t.Fatalf("c's Spent after Admit: %+v", got)
	}
	// Both replicas add; the totals add up, and each one's Spent is the
	// fleet's total plus its own unsent usage.
	a.Add("alice", w, Usage{Tokens: 10, CostUSD: 0.5})
	c.Add("alice", w, Usage{Tokens: 1, AudioSeconds: 0.25})
	total := Usage{Tokens: 131, AudioSeconds: 1.75, CostUSD: 0.75}
	testkit.WaitFor(t, 2*time.Second, "both flushed", func() bool { return statusIs(b, "alice", w, 0, total) })
	if got := b.Spent("alice", w); got != total {
		t.Fatalf("b's Spent %+v, want %+v", got, total)
	}
	v = admit(t, b, Request{Client: "alice", Lease: "b1", Budget: Usage{Tokens: 1000, CostUSD: 0.75}, Window: w})
	if v.Admitted || v.Limit != LimitCost {
		t.Fatalf("cost budget: %+v", v)
	}
	// Another window counts apart.
	if v := admit(t, b, Request{Client: "alice", Lease: "b1", Budget: Usage{CostUSD: 0.75}, Window: w.Add(-24 * time.Hour)}); !v.Admitted || !v.Spent.IsZero() {
		t.Fatalf("yesterday: %+v", v)
	}
}

// TestRedisKeyLayout reads the keys as Redis holds them.
func TestRedisKeyLayout(t *testing.T) {
	srv := startRedis(t)
	s := newTestRedis(t, srv.url(), func(o *RedisOptions) { o.KeyPrefix = "tether:"; o.Window = time.Hour; o.LeaseTTL = 2 * time.Second })
	w := WindowStart(time.Now(), time.Hour)
	admit(t, s, Request{Client: "alice", Lease: "l1", Window: w})
	s.Add("alice", w, Usage{Tokens: 7, AudioSeconds: 2.0004, CostUSD: 0.0000000016})
	usageKey := "tether:usage:alice:" + strconv.FormatInt(w.Unix(), 10)
	testkit.WaitFor(t, 2*time.Second, "the usage key", func() bool {
		n, err := srv.do("EXISTS", usageKey)
		return err == nil && n == int64(1)
	})
	rc := srv.client()
	ctx := context.Background()
	h, err := rc.HGetAll(ctx, usageKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if h["tokens"] != "7" || h["audio_ms"] != "2000" || h["cost_nano"] != "2" || h["v"] != "1" || h["born"] == "" || h[s.seqField] != "1" {
		t.Fatalf("usage hash %v", h)
	}
	ttl, _ := rc.PTTL(ctx, usageKey).Result()
	if want := 3 * time.Hour; ttl > want || ttl < want-time.Minute {
		t.Fatalf("usage key expires in %v, want 2*Window+1h", ttl)
	}
	now, _ := rc.Time(ctx).Result()
	z, err := rc.ZRangeWithScores(ctx, "tether:sessions:alice", 0, -1).Result()
	if err != nil || len(z) != 1 || z[0].Member != "l1" {
		t.Fatalf("sessions %v %v", z, err)
	}
	if exp := time.UnixMilli(int64(z[0].Score)); exp.Before(now) || exp.After(now.Add(2*time.Second)) {
		t.Fatalf("lease expiry %v, server time %v", exp, now)
	}
	if ttl, _ := rc.PTTL(ctx, "tether:sessions:alice").Result(); ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("sessions key expires in %v", ttl)
	}
	// The sub-unit remainders stay queued for the next batch.
	if got := s.Spent("alice", w); got.Tokens != 7 || got.AudioSeconds < 2.0003 || got.CostUSD < 1.5e-9 {
		t.Fatalf("Spent %+v", got)
	}
}

// TestRedisLostReplyNotCountedTwice: a flush that reached Redis but whose
// reply was lost is sent again and counted once.
func TestRedisLostReplyNotCountedTwice(t *testing.T) {
	srv := startRedis(t)
	p := newProxy(t, srv.addr)
	s := newTestRedis(t, p.url(), nil)
	w := today()
	key := "t:usage:alice:" + strconv.FormatInt(w.Unix(), 10)
	acked := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 0
	}
	// A first batch, so that the flush has a connection open.
	s.Add("alice", w, Usage{Tokens: 2})
	testkit.WaitFor(t, 2*time.Second, "the first batch acknowledged", acked)
	p.drop.Store(true)
	s.Add("alice", w, Usage{Tokens: 38, AudioSeconds: 4, CostUSD: 0.04})
	u := Usage{Tokens: 40, AudioSeconds: 4, CostUSD: 0.04}
	testkit.WaitFor(t, 2*time.Second, "the batch counted in Redis", func() bool {
		v, err := srv.do("HGET", key, "tokens")
		return err == nil && v == "40"
	})
	testkit.WaitFor(t, 2*time.Second, "the flush failing", func() bool { return s.errs.get(opFlush) > 0 })
	if got := s.Spent("alice", w); got != u {
		t.Fatalf("Spent while the reply is lost: %+v", got)
	}
	p.drop.Store(false)
	testkit.WaitFor(t, 3*time.Second, "the batch acknowledged", acked)
	if got := s.Spent("alice", w); got != u {
		t.Fatalf("Spent after the retry: %+v", got)
	}
	if _, got := status(t, s, "alice", w); got != u {
		t.Fatalf("Redis counted %+v, want %+v", got, u)
	}
}

// TestRedisFailOpen: with Redis gone, Admit answers at once by this
// replica's counts, OnError counts each failure and one warning is logged.
func TestRedisFailOpen(t *testing.T) {
	srv := startRedis(t)
	s := newTestRedis(t, srv.url(), nil)
	w := today()
	req := func(lease string, budget Usage) Request {
		return Request{Client: "alice", Lease: lease, MaxSessions: 2, Budget: budget, Window: w}
	}
	if v := admit(t, s, req("l1", Usage{})); !v.Admitted || v.Local {
		t.Fatalf("l1: %+v", v)
	}
	// Another replica's usage, which s learns of.
	other := newTestRedis(t, srv.url(), nil)
	other.Add("alice", w, Usage{Tokens: 30})
	testkit.WaitFor(t, 2*time.Second, "the other replica's usage", func() bool { return statusIs(s, "alice", w, 1, Usage{Tokens: 30}) })
	srv.kill()
	timed := func(lease string, budget Usage) Verdict {
		t.Helper()
		start := time.Now()
		v := admit(t, s, req(lease, budget))
		if d := time.Since(start); d > testTimeout+300*time.Millisecond {
			t.Fatalf("admit took %v with Redis down (timeout %v)", d, testTimeout)
		}
		return v
	}
	if v := timed("l2", Usage{}); !v.Admitted || !v.Local || v.Sessions != 1 {
		t.Fatalf("l2 (local): %+v", v)
	}
	if v := timed("l3", Usage{}); v.Admitted || !v.Local || v.Limit != LimitSessions || v.Sessions != 2 {
		t.Fatalf("l3 (local): %+v", v)
	}
	// The budgets count what this replica last heard from the fleet.
	if v := timed("l3", Usage{Tokens: 30}); v.Admitted || !v.Local || v.Limit != LimitTokens || v.Spent.Tokens != 30 {
		t.Fatalf("l3 (the fleet's usage as last heard): %+v", v)
	}
	s.Release("alice", "l2")
	s.Add("alice", w, Usage{Tokens: 50})
	if got := s.Spent("alice", w); got.Tokens != 80 {
		t.Fatalf("Spent with Redis down: %+v", got)
	}
	if v := timed("l4", Usage{Tokens: 80}); v.Admitted || !v.Local || v.Limit != LimitTokens || v.Spent.Tokens != 80 {
		t.Fatalf("l4 (local budget): %+v", v)
	}
	if v := timed("l4", Usage{Tokens: 81}); !v.Admitted || !v.Local || v.Sessions != 1 {
		t.Fatalf("l4 (local, under budget): %+v", v)
	}
	if _, _, err := s.Status(context.Background(), "alice", w); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("status with Redis down: %v", err)
	}
	if n := s.errs.get(opAdmit); n != 5 {
		t.Fatalf("OnError(admit) called %d times, want 5", n)
	}
	if s.errs.get(opStatus) != 1 {
		t.Fatalf("OnError(status) called %d times", s.errs.get(opStatus))
	}
	testkit.WaitFor(t, 2*time.Second, "a failed flush and release", func() bool {
		return s.errs.get(opFlush) > 0 && s.errs.get(opRelease) > 0
	})
	if n := logLines(s.log, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, s.log)
	}
	if !strings.Contains(s.log.String(), "op=") || !strings.Contains(s.log.String(), "policy=fail_open") {
		t.Fatalf("warning: %s", s.log)
	}
}

// TestRedisFailClosed: with Redis gone or hanging, Admit refuses with
// ErrUnavailable within the timeout.
func TestRedisFailClosed(t *testing.T) {
	srv := startRedis(t)
	p := newProxy(t, srv.addr)
	s := newTestRedis(t, p.url(), func(o *RedisOptions) { o.FailClosed = true })
	w := today()
	if v := admit(t, s, Request{Client: "alice", Lease: "l1", MaxSessions: 5, Window: w}); !v.Admitted || v.Local {
		t.Fatalf("l1: %+v", v)
	}
	try := func(what, lease string) time.Duration {
		t.Helper()
		start := time.Now()
		v, err := s.Admit(context.Background(), Request{Client: "alice", Lease: lease, MaxSessions: 5, Window: w})
		d := time.Since(start)
		if !errors.Is(err, ErrUnavailable) || v.Admitted {
			t.Fatalf("%s: %+v, %v; want ErrUnavailable", what, v, err)
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Fatalf("the error shows the password: %v", err)
		}
		if d > testTimeout+300*time.Millisecond {
			t.Fatalf("%s: admit took %v (timeout %v)", what, d, testTimeout)
		}
		t.Logf("%s: refused after %v: %v", what, d, err)
		return d
	}
	// A server that takes the request and never answers.
	p.drop.Store(true)
	if d := try("hanging", "l2"); d < testTimeout*3/4 {
		t.Fatalf("refused after %v, before the timeout", d)
	}
	start := time.Now()
	if _, _, err := s.Status(context.Background(), "alice", w); !errors.Is(err, ErrUnavailable) || time.Since(start) > testTimeout+300*time.Millisecond {
		t.Fatalf("status on a hanging server: %v after %v", err, time.Since(start))
	}
	// A server gone.
	srv.kill()
	p.drop.Store(false)
	try("down", "l3")
	if s.errs.get(opAdmit) != 2 || s.errs.get(opStatus) != 1 {
		t.Fatalf("OnError admit %d status %d", s.errs.get(opAdmit), s.errs.get(opStatus))
	}
	if !strings.Contains(s.log.String(), "policy=fail_closed") || logLines(s.log, "level=WARN") != 1 {
		t.Fatalf("log: %s", s.log)
	}
}

// TestRedisRestartConverges: usage added and leases taken while Redis was
// down reach it when it is back, counted once.
func TestRedisRestartConverges(t *testing.T) {
	srv := startRedis(t)
	short := func(o *RedisOptions) { o.LeaseTTL = 900 * time.Millisecond }
	a := newTestRedis(t, srv.url(), short)
	b := newTestRedis(t, srv.url(), short)
	w := today()
	req := func(lease string) Request { return Request{Client: "alice", Lease: lease, MaxSessions: 10, Window: w} }
	admit(t, a, req("a1"))
	admit(t, b, req("b1"))
	a.Add("alice", w, Usage{Tokens: 100, AudioSeconds: 2, CostUSD: 0.5})
	testkit.WaitFor(t, 2*time.Second, "the first usage flushed", func() bool {
		return statusIs(a, "alice", w, 2, Usage{Tokens: 100, AudioSeconds: 2, CostUSD: 0.5})
	})
	if _, err := srv.do("SAVE"); err != nil {
		t.Fatal(err)
	}
	srv.kill()

	// The outage: a lease taken locally, one released, usage on both.
	if v := admit(t, a, req("a2")); !v.Admitted || !v.Local {
		t.Fatalf("a2: %+v", v)
	}
	b.Release("alice", "b1")
	a.Add("alice", w, Usage{Tokens: 5})
	b.Add("alice", w, Usage{Tokens: 20, AudioSeconds: 1, CostUSD: 0.25})
	testkit.WaitFor(t, 2*time.Second, "flushes failing", func() bool {
		return a.errs.get(opFlush) > 0 && b.errs.get(opFlush) > 0 && a.errs.get(opRefresh) > 0
	})

	srv.restart()
	back := time.Now()
	total := Usage{Tokens: 125, AudioSeconds: 3, CostUSD: 0.75}
	rc := srv.client()
	testkit.WaitFor(t, 5*time.Second, "the counts converged", func() bool {
		// b1, released in the outage, expires; a2, taken in it, is added.
		leases, err := rc.ZRange(context.Background(), "t:sessions:alice", 0, -1).Result()
		return statusIs(b, "alice", w, 2, total) && err == nil && strings.Join(leases, ",") == "a1,a2"
	})
	t.Logf("converged %v after the restart", time.Since(back))
	// Nothing is sent twice: the totals hold over more flushes.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n, u := status(t, a, "alice", w); n != 2 || u != total {
			t.Fatalf("status %d %+v, want 2 %+v", n, u, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range []*testStore{a, b} {
		if got := s.Spent("alice", w); got != total {
			t.Fatalf("Spent %+v, want %+v", got, total)
		}
	}
	if v := admit(t, b, Request{Client: "alice", Lease: "b2", MaxSessions: 2, Window: w}); v.Admitted || v.Limit != LimitSessions || v.Local {
		t.Fatalf("b2 after the restart: %+v", v)
	}
	if !strings.Contains(a.log.String(), "answering again") {
		t.Errorf("no recovery in the log: %s", a.log)
	}
}

// TestRedisRestartWithoutData: a server that lost its data gets the live
// leases back and counts usage from what was queued since.
func TestRedisRestartWithoutData(t *testing.T) {
	srv := startRedis(t)
	s := newTestRedis(t, srv.url(), func(o *RedisOptions) { o.LeaseTTL = 600 * time.Millisecond })
	w := today()
	admit(t, s, Request{Client: "alice", Lease: "l1", Window: w})
	admit(t, s, Request{Client: "alice", Lease: "l2", Window: w})
	s.Add("alice", w, Usage{Tokens: 10})
	testkit.WaitFor(t, 2*time.Second, "flushed", func() bool { return statusIs(s, "alice", w, 2, Usage{Tokens: 10}) })
	srv.restart() // no SAVE: everything is lost
	s.Add("alice", w, Usage{Tokens: 3})
	testkit.WaitFor(t, 5*time.Second, "leases and new usage back", func() bool { return statusIs(s, "alice", w, 2, Usage{Tokens: 3}) })
	if got := s.Spent("alice", w); got.Tokens != 3 {
		t.Fatalf("Spent %+v, want the server's new total", got)
	}
}

// TestRedisCloseFlushesAndReleases: Close sends what is queued and frees
// the replica's leases.
func TestRedisCloseFlushesAndReleases(t *testing.T) {
	srv := startRedis(t)
	a := newTestRedis(t, srv.url(), func(o *RedisOptions) { o.FlushInterval = time.Hour })
	b := newTestRedis(t, srv.url(), nil)
	w := today()
	admit(t, a, Request{Client: "alice", Lease: "l1", Window: w})
	admit(t, a, Request{Client: "bob", Lease: "l2", Window: w})
	a.Add("alice", w, Usage{Tokens: 7, CostUSD: 0.5})
	if n, u := status(t, b, "alice", w); n != 1 || !u.IsZero() {
		t.Fatalf("before Close: %d %+v", n, u)
	}
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*testTimeout {
		t.Fatalf("Close took %v", d)
	}
	if n, u := status(t, b, "alice", w); n != 0 || u != (Usage{Tokens: 7, CostUSD: 0.5}) {
		t.Fatalf("after Close: %d %+v", n, u)
	}
	if n, _ := status(t, b, "bob", w); n != 0 {
		t.Fatalf("bob after Close: %d", n)
	}
	if err := a.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := a.Admit(context.Background(), Request{Client: "alice", Lease: "x", Window: w}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("admit after Close: %v", err)
	}
	a.Add("alice", w, Usage{Tokens: 1}) // counts locally only; must not panic
	a.Release("alice", "x")
}

// TestRedisCallerContext: a caller that gives up gets its context's error,
// not a Redis failure.
func TestRedisCallerContext(t *testing.T) {
	srv := startRedis(t)
	s := newTestRedis(t, srv.url(), func(o *RedisOptions) { o.FailClosed = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Admit(ctx, Request{Client: "alice", Lease: "l1", Window: today()})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("admit with a cancelled context: %v", err)
	}
	if s.errs.get(opAdmit) != 0 {
		t.Fatal("OnError called for the caller's cancellation")
	}
}

func TestNewRedisOptions(t *testing.T) {
	for _, bad := range []string{"", "http://localhost:6379", "redis://localhost:6379/x/y", "redis://user:" + testPassword + "@[::1"} {
		s, err := NewRedis(RedisOptions{URL: bad})
		if err == nil {
			s.Close()
			t.Fatalf("NewRedis(%q) did not fail", bad)
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	if _, err := NewRedis(RedisOptions{URL: "redis://localhost", Timeout: -1}); err == nil {
		t.Fatal("a negative timeout was accepted")
	}
	// Nothing needs to listen at construction.
	s, err := NewRedis(RedisOptions{URL: "redis://" + testkit.DeadAddr(t), Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Password overrides the URL's.
	srv := startRedis(t)
	good := newTestRedis(t, "redis://:wrong@"+srv.addr, func(o *RedisOptions) { o.Password = testPassword; o.FailClosed = true })
	if v := admit(t, good, Request{Client: "a", Lease: "l", Window: today()}); !v.Admitted {
		t.Fatalf("with the Password option: %+v", v)
	}
	wrong := newTestRedis(t, "redis://:"+testPassword+"@"+srv.addr, func(o *RedisOptions) { o.Password = "wrong"; o.FailClosed = true })
	if _, err := wrong.Admit(context.Background(), Request{Client: "a", Lease: "l2", Window: today()}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with a wrong Password option: %v", err)
	}
}
