package bench

import (
	"testing"
	"time"
)

// all enumerates a session's sends by repeated Next calls.
func all(s Schedule, target int, phase time.Duration) []time.Duration {
	var out []time.Duration
	after := time.Duration(0)
	for {
		at, ok := s.Next(target, phase, after)
		if !ok {
			return out
		}
		out = append(out, at)
		after = at + 1
	}
}

func TestScheduleWithoutTurns(t *testing.T) {
	s := Schedule{Interval: 20 * time.Millisecond, Targets: 1, End: time.Second}
	got := all(s, 0, 5*time.Millisecond)
	if len(got) != 50 {
		t.Fatalf("%d sends in 1s at 50/s, want 50", len(got))
	}
	for i, at := range got {
		if want := 5*time.Millisecond + time.Duration(i)*20*time.Millisecond; at != want {
			t.Fatalf("send %d at %s, want %s", i, at, want)
		}
	}
}

func TestScheduleTurnsMatchBruteForce(t *testing.T) {
	for _, tc := range []struct {
		interval, slot time.Duration
		targets        int
	}{
		{20 * time.Millisecond, time.Second, 2},
		{20 * time.Millisecond, time.Second, 3},
		{30 * time.Millisecond, 100 * time.Millisecond, 3},  // ticks do not divide slots
		{250 * time.Millisecond, 100 * time.Millisecond, 2}, // slots shorter than the interval
	} {
		s := Schedule{Interval: tc.interval, Slot: tc.slot, Targets: tc.targets, End: time.Duration(tc.targets) * 3 * time.Second}
		for target := range tc.targets {
			for _, phase := range []time.Duration{0, tc.interval / 3, tc.interval - 1} {
				var want []time.Duration
				for at := phase; at < s.End; at += tc.interval {
					if int(at/tc.slot)%tc.targets == target {
						want = append(want, at)
					}
				}
				got := all(s, target, phase)
				if len(got) != len(want) {
					t.Fatalf("%+v target %d phase %s: %d sends, want %d", tc, target, phase, len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%+v target %d phase %s: send %d at %s, want %s", tc, target, phase, i, got[i], want[i])
					}
					if s.Active(got[i]) != target {
						t.Fatalf("send at %s falls in target %d's turn, not %d", got[i], s.Active(got[i]), target)
					}
				}
			}
		}
	}
}

// Open loop: a sender that falls behind gets the ticks it missed right away
// (they are due in the past), not a schedule shifted by its delay.
func TestScheduleIsOpenLoop(t *testing.T) {
	s := Schedule{Interval: 10 * time.Millisecond, Targets: 1, End: time.Second}
	first, _ := s.Next(0, 0, 0)
	// The writer was stuck for 35ms after the first send: the next sends are
	// still the ones at 10, 20 and 30ms, then 40ms.
	after := first + 1
	var got []time.Duration
	for range 4 {
		at, ok := s.Next(0, 0, after)
		if !ok {
			t.Fatal("schedule ended early")
		}
		got = append(got, at)
		after = at + 1
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sends after a stall: %v, want %v", got, want)
		}
	}
}

func TestScheduleEdges(t *testing.T) {
	if _, ok := (Schedule{Interval: 0, Targets: 1, End: time.Second}).Next(0, 0, 0); ok {
		t.Error("zero interval (idle sessions) must give no sends")
	}
	s := Schedule{Interval: time.Second, Targets: 1, End: time.Second}
	if got := all(s, 0, 0); len(got) != 1 {
		t.Errorf("End is exclusive: %v, want one send at 0", got)
	}
	if a := s.Active(time.Second); a != -1 {
		t.Errorf("Active after the end = %d, want -1", a)
	}
	turns := Schedule{Interval: time.Millisecond, Slot: time.Second, Targets: 3, End: 6 * time.Second}
	for sec, want := range []int{0, 1, 2, 0, 1, 2} {
		if a := turns.Active(time.Duration(sec)*time.Second + 500*time.Millisecond); a != want {
			t.Errorf("Active at %d.5s = %d, want %d", sec, a, want)
		}
	}
}

func TestPhaseSpread(t *testing.T) {
	const n = 500
	interval := 20 * time.Millisecond
	prev := time.Duration(-1)
	for i := range n {
		p := Phase(i, n, interval)
		if p <= prev || p >= interval {
			t.Fatalf("phase %d = %s after %s, want increasing within [0, %s)", i, p, prev, interval)
		}
		prev = p
	}
	if Phase(0, 0, interval) != 0 {
		t.Fatal("Phase with no sessions must be 0")
	}
}

func TestTurnsRoundSlotsAndDuration(t *testing.T) {
	// A slot shorter than the send interval would leave some targets
	// without sends: it is rounded up to whole intervals, and the duration
	// to whole slots.
	s := turns(2*time.Second, 2, time.Second, 5*time.Second, true)
	if s.Slot != 2*time.Second || s.End != 2*6*time.Second {
		t.Fatalf("slot %s end %s, want 2s and 12s", s.Slot, s.End)
	}
	for target := range 2 {
		if got := all(s, target, 0); len(got) != 3 {
			t.Errorf("target %d: %d sends, want 3 (one per slot of its own)", target, len(got))
		}
	}
	if s := turns(20*time.Millisecond, 3, time.Second, 20*time.Second, true); s.Slot != time.Second || s.End != 60*time.Second {
		t.Errorf("aligned turns changed: %+v", s)
	}
	if s := turns(20*time.Millisecond, 2, 0, 20*time.Second, true); s.Slot != 0 || s.End != 20*time.Second {
		t.Errorf("all at once: %+v", s)
	}
	if s := turns(20*time.Millisecond, 2, time.Second, 7*time.Second, false); s.Interval != 0 || s.End != 7*time.Second {
		t.Errorf("idle sessions: %+v", s)
	}
}
