package bench

import "time"

// Schedule is the open-loop send plan of one run, as offsets from the start
// of the measurement. Each session sends at phase + j*Interval (j = 0, 1,
// ...), whatever happens to earlier sends: a send that cannot go out on time
// goes out late (and is counted late), it is never skipped or delayed for
// a reply. With several targets, time is cut into slots that take turns
// between them (slot m belongs to target m mod Targets), so every target
// sees the same machine conditions, interleaved, and a session sends only
// in its own target's slots.
type Schedule struct {
	// Interval is the time between two sends of a session (1/rate); > 0.
	Interval time.Duration
	// Slot is the length of a turn; 0 (or one target) means no turns.
	Slot time.Duration
	// Targets is the number of targets taking turns; >= 1.
	Targets int
	// End is the end of the measurement: no send at or after it.
	End time.Duration
}

// Next returns the first send of a session of target whose ticks start at
// phase, at or after offset after; ok is false when there is none before End.
func (s Schedule) Next(target int, phase, after time.Duration) (at time.Duration, ok bool) {
	if s.Interval <= 0 {
		return 0, false
	}
	t := max(after, phase)
	for {
		// The first tick at or after t.
		j := (t - phase + s.Interval - 1) / s.Interval
		tick := phase + j*s.Interval
		if tick >= s.End {
			return 0, false
		}
		if s.Slot <= 0 || s.Targets <= 1 {
			return tick, true
		}
		m := int64(tick / s.Slot)
		k := int64(s.Targets)
		if m%k == int64(target) {
			return tick, true
		}
		// Jump to the start of this target's next slot.
		m += (int64(target) - m%k + k) % k
		t = time.Duration(m) * s.Slot
	}
}

// Active returns the target whose turn it is at offset t, or -1 outside the
// measurement.
func (s Schedule) Active(t time.Duration) int {
	if t < 0 || t >= s.End {
		return -1
	}
	if s.Slot <= 0 || s.Targets <= 1 {
		return 0
	}
	return int(int64(t/s.Slot) % int64(s.Targets))
}

// Phase spreads the sessions of one target evenly over an interval, so that
// their sends do not all fall on the same instant: session i of n.
func Phase(i, n int, interval time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(int64(interval) * int64(i) / int64(n))
}
