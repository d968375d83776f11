package lifecycle

import (
	"sync"
	"time"
)

// HeartbeatOptions: a ping every Interval; the leg is dead when its peer
// sent nothing at all (no pong, ping, data frame or part of one) for
// Interval + Timeout, or when a write to it made no progress for Timeout.
// A zero Interval disables the heartbeat.
type HeartbeatOptions struct {
	Interval time.Duration
	Timeout  time.Duration
}

// Liveness causes, for the log line of a heartbeat timeout.
const (
	causeSilent       = "peer_silent"   // nothing received for interval + timeout
	causeWriteStalled = "write_stalled" // a write made no progress for timeout
)

// heartbeat drives one leg's pings and liveness checks with no timer or
// goroutine of its own: the session's clock wakes it (deadline beat(leg))
// at the next ping, at the moment the peer's silence would reach
// Interval + Timeout, and, while a write is blocked, when that write would
// reach Timeout. Its deadline is set only under mu (the clock's lock
// comes after it).
type heartbeat struct {
	mu       sync.Mutex
	s        *Session
	leg      Leg
	opts     HeartbeatOptions
	nextPing time.Time
	waiting  bool // no pong yet for the ping that is out (for the RTT)
	sentAt   time.Time
	stopped  bool
}

func (h *heartbeat) start(s *Session, leg Leg, o HeartbeatOptions) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.s, h.leg, h.opts = s, leg, o
	if o.Interval <= 0 || o.Timeout <= 0 || h.stopped {
		return
	}
	h.nextPing = time.Now().Add(o.Interval)
	h.wakeAt(h.nextPing)
}

// wakeAt sets the heartbeat's deadline on the session's clock. Called with mu held.
func (h *heartbeat) wakeAt(t time.Time) { h.s.setDeadline(beat(h.leg), t.Sub(h.s.StartedAt)) }

// fire runs when the heartbeat's deadline is due (Session.tick).
func (h *heartbeat) fire() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	now := time.Now()
	heard, writing := h.s.t.Liveness(h.leg)
	silentLimit := heard.Add(h.opts.Interval + h.opts.Timeout)
	cause := ""
	switch {
	case !now.Before(silentLimit):
		cause = causeSilent
	case !writing.IsZero() && now.Sub(writing) >= h.opts.Timeout:
		cause = causeWriteStalled
	}
	if cause != "" {
		h.mu.Unlock()
		h.s.heartbeatTimeout(h.leg, cause, now.Sub(heard))
		h.rearm() // the session goes on when its upstream leg is being replaced
		return
	}
	ping := !now.Before(h.nextPing)
	if ping {
		h.nextPing = now.Add(h.opts.Interval)
		h.waiting = true
		h.sentAt = now
	}
	next := h.nextPing
	if silentLimit.Before(next) {
		next = silentLimit
	}
	if !writing.IsZero() {
		// While a write is blocked, look at its progress four times per
		// timeout (a slow reader's window opens in bursts).
		w := writing.Add(h.opts.Timeout)
		if poll := now.Add(h.opts.Timeout / 4); poll.Before(w) {
			w = poll
		}
		if w.Before(next) {
			next = w
		}
	}
	h.wakeAt(now.Add(max(next.Sub(now), time.Millisecond)))
	h.mu.Unlock()
	if ping {
		if err := h.s.t.Ping(h.leg); err != nil {
			h.s.LegError(h.leg, err)
		}
	}
}

// rearm starts the next round after a timeout that did not end the session.
func (h *heartbeat) rearm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.s.ended.Load() {
		return
	}
	h.nextPing = time.Now().Add(h.opts.Interval)
	h.waiting = false
	h.wakeAt(h.nextPing)
}

// pong records a pong; it returns the round trip of the outstanding ping.
func (h *heartbeat) pong() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.waiting {
		return 0, false
	}
	h.waiting = false
	return time.Since(h.sentAt), true
}

func (h *heartbeat) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true // the clock, stopped by End, wakes it no more
}
