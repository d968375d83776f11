package lifecycle

import (
	"sync"
	"time"
)

// deadline names one of the moments a session's clock acts at.
type deadline int

const (
	// clientBeat and upstreamBeat are each leg's next heartbeat action: a
	// ping, or a check that its peer is still heard from (heartbeat.fire).
	clientBeat deadline = iota
	upstreamBeat
	// idleCheck looks for activity and ends the session once it was idle
	// for idle_timeout (idleFired).
	idleCheck
	// maxDuration ends the session (max_duration).
	maxDuration
	numDeadlines
)

// beat is leg's heartbeat deadline.
func beat(leg Leg) deadline { return clientBeat + deadline(leg) }

// clock runs all of a session's liveness deadlines on one runtime timer,
// armed for the earliest of them. Its mutex is taken last: the owners of
// the deadlines (a heartbeat under its own lock, Start and End under
// Session.mu) set them, and no other lock is taken while it is held, so
// the deadlines' actions run under none of it.
type clock struct {
	mu sync.Mutex
	// timer calls Session.tick; nil until the first deadline is set.
	timer *time.Timer
	// due holds each deadline as a time since the session started (on the
	// monotonic clock); 0: not set (every deadline is set after the start).
	due [numDeadlines]time.Duration
}

// setDeadline makes d due at (a time since the session started; 0 clears
// it). A session that ended sets none.
func (s *Session) setDeadline(d deadline, at time.Duration) {
	c := &s.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	c.due[d] = at
	s.armClock()
}

// armClock sets the timer for the earliest deadline, or stops it when none
// is set. Called with clock.mu held.
func (s *Session) armClock() {
	c := &s.clock
	if s.ended.Load() {
		return // stopClock stopped the timer, or is about to
	}
	var next time.Duration
	for _, at := range c.due {
		if at != 0 && (next == 0 || at < next) {
			next = at
		}
	}
	switch {
	case next == 0:
		if c.timer != nil {
			c.timer.Stop()
		}
	case c.timer == nil:
		c.timer = time.AfterFunc(next-s.since(), s.tick)
	default:
		c.timer.Reset(next - s.since())
	}
}

// tick runs the deadline that is due (the earliest; of several due at the
// same moment, the first in the list above), once the timer is armed for
// the next: each action runs on a goroutine of its own, as it would with a
// timer of its own, and one that blocks (End waits for the relay's
// Shutdown) delays no other. A deadline is cleared while its action runs;
// the action sets it again if it is to come back.
func (s *Session) tick() {
	c := &s.clock
	c.mu.Lock()
	now := s.since()
	run := deadline(-1)
	for d, at := range c.due {
		if at != 0 && at <= now && (run < 0 || at < c.due[run]) {
			run = deadline(d)
		}
	}
	if run >= 0 {
		c.due[run] = 0
	}
	s.armClock()
	c.mu.Unlock()
	switch run {
	case clientBeat, upstreamBeat:
		s.hb[Leg(run-clientBeat)].fire()
	case idleCheck:
		s.idleFired()
	case maxDuration:
		s.End(ReasonMaxDuration)
	}
}

// stopClock stops the timer for good (End, once ended is set).
func (s *Session) stopClock() {
	c := &s.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}
