package lifecycle

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// clockOpts sets every deadline a session has, none of them at the same
// moment as another: pings every 3 s on the client leg and every 5 s on
// the upstream leg, idle_timeout 10 s, max_duration 23 s.
var clockOpts = Options{
	ClientHeartbeat:   HeartbeatOptions{Interval: 3 * time.Second, Timeout: time.Second},
	UpstreamHeartbeat: HeartbeatOptions{Interval: 5 * time.Second, Timeout: 2 * time.Second},
	IdleTimeout:       10 * time.Second,
	MaxDuration:       23 * time.Second,
}

// runSteps runs the session in steps of 100 ms until it ends (or a minute
// passes): step(i) says, at i × 100 ms, which peers are heard from and
// whether a data frame is relayed. It returns when the session ended,
// since its start.
func runSteps(t *testing.T, s *Session, ft *fakeTransport, step func(i int) (client, upstream, frame bool)) time.Duration {
	t.Helper()
	for i := 1; !s.Ended(); i++ {
		if i > 600 {
			t.Fatal("the session did not end within a minute")
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if s.Ended() {
			break
		}
		client, upstream, frame := step(i)
		if client {
			ft.hear(Client)
		}
		if upstream {
			ft.hear(Upstream)
		}
		if frame {
			s.Frame(ClientToUpstream, 100)
		}
	}
	return s.Summary().Duration
}

// everySecond reports whether step i (of 100 ms) falls on a whole second.
func everySecond(i int) bool { return i%10 == 0 }

func TestEachDeadlineFiresAtItsTime(t *testing.T) {
	cases := []struct {
		name  string
		step  func(i int) (client, upstream, frame bool)
		end   time.Duration
		why   Reason
		pings [2]int
	}{
		{
			// Both peers answer; one data frame at 4 s: idle at 4 + 10 s.
			name: "idle_timeout",
			step: func(i int) (bool, bool, bool) { return true, true, i == 40 },
			end:  14 * time.Second, why: ReasonIdleTimeout,
			pings: [2]int{4, 2}, // client at 3, 6, 9, 12 s; upstream at 5, 10 s
		},
		{
			// Both peers answer, a data frame every second.
			name: "max_duration",
			step: func(i int) (bool, bool, bool) { return true, true, everySecond(i) },
			end:  23 * time.Second, why: ReasonMaxDuration,
			pings: [2]int{7, 4},
		},
		{
			// The client is last heard at 7.3 s: dead at 7.3 + 3 + 1 s.
			name: "client heartbeat",
			step: func(i int) (bool, bool, bool) { return i <= 73, true, everySecond(i) },
			end:  11300 * time.Millisecond, why: ReasonClientHeartbeatTimeout,
			pings: [2]int{3, 2},
		},
		{
			// The upstream is last heard at 12.2 s: dead at 12.2 + 5 + 2 s.
			name: "upstream heartbeat",
			step: func(i int) (bool, bool, bool) { return true, i <= 122, everySecond(i) },
			end:  19200 * time.Millisecond, why: ReasonUpstreamHeartbeatTimeout,
			pings: [2]int{6, 3},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewManager(clockOpts)
				s, ft, finish := open(t, m)
				got := runSteps(t, s, ft, tc.step)
				finish()
				if got != tc.end || s.Summary().Reason != tc.why {
					t.Errorf("ended after %v (%s), want %v (%s)", got, s.Summary().Reason, tc.end, tc.why)
				}
				if ft.pings != tc.pings {
					t.Errorf("pings %v, want %v", ft.pings, tc.pings)
				}
			})
		})
	}
}

// End stops the session's clock: nothing wakes after it.
func TestEndStopsTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(clockOpts)
		s, ft, finish := open(t, m)
		time.Sleep(2 * time.Second)
		ft.hear(Client)
		ft.hear(Upstream)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		s.End(ReasonAdmin)
		finish()
		if s.clock.timer == nil || s.clock.timer.Stop() {
			t.Error("the clock's timer was still armed after End")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if ft.pings != [2]int{1, 0} || s.Summary().Reason != ReasonAdmin {
			t.Errorf("after End: pings %v, reason %s; want [1 0], admin", ft.pings, s.Summary().Reason)
		}
	})
}

// slowPing is a transport whose first ping on the client leg takes 20 s
// (a stand-in for any deadline's action that takes its time).
type slowPing struct {
	*fakeTransport
	slowed atomic.Bool
}

func (f *slowPing) Ping(leg Leg) error {
	if leg == Client && f.slowed.CompareAndSwap(false, true) {
		time.Sleep(20 * time.Second)
	}
	return f.fakeTransport.Ping(leg)
}

// A deadline's action that waits delays no other deadline, its own next
// one included: each runs on a goroutine of its own.
func TestSlowDeadlineDelaysNoOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := clockOpts
		o.IdleTimeout = 11 * time.Second
		m := NewManager(o)
		release := reserve(t, m)
		s := m.Open(Info{Upstream: "u"})
		ft := &slowPing{fakeTransport: newFakeTransport()}
		s.Start(ft)
		got := runSteps(t, s, ft.fakeTransport, func(int) (bool, bool, bool) { return true, true, false })
		ft.mu.Lock()
		pings := ft.pings // the client's first ping (at 3 s) is still on its way
		ft.mu.Unlock()
		m.Finished(s, release)
		if got != 11*time.Second || s.Summary().Reason != ReasonIdleTimeout {
			t.Errorf("ended after %v (%s), want 11s (idle_timeout)", got, s.Summary().Reason)
		}
		if pings != [2]int{2, 2} {
			t.Errorf("pings %v, want 2 more on the client leg (6 s, 9 s) and 2 upstream (5 s, 10 s)", pings)
		}
		time.Sleep(20 * time.Second) // the slow ping returns
	})
}
