package lifecycle

import (
	"sync"
	"time"
)

// HeartbeatOptions: a ping every Interval; the leg fails when no pong arrives
// within Timeout (Timeout < Interval). A zero Interval disables the heartbeat.
type HeartbeatOptions struct {
	Interval time.Duration
	Timeout  time.Duration
}

// heartbeat drives one leg's pings with a single timer and no goroutine of
// its own: the timer alternates between "time to ping" (after Interval -
// Timeout of quiet) and "pong deadline" (Timeout after the ping).
type heartbeat struct {
	mu       sync.Mutex
	s        *Session
	leg      Leg
	opts     HeartbeatOptions
	timer    *time.Timer // nil when disabled; guarded by mu
	awaiting bool        // a ping is out and its deadline timer is armed
	waiting  bool        // no pong yet for the ping that is out
	sentAt   time.Time
	progress uint64 // the leg's write progress when the ping was sent
	stopped  bool
}

func (h *heartbeat) start(s *Session, leg Leg, o HeartbeatOptions) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.s, h.leg, h.opts = s, leg, o
	if o.Interval <= 0 || o.Timeout <= 0 || h.stopped {
		return
	}
	h.timer = time.AfterFunc(o.Interval, h.fire)
}

func (h *heartbeat) fire() {
	h.mu.Lock()
	if h.stopped || h.timer == nil {
		h.mu.Unlock()
		return
	}
	if h.awaiting {
		if h.waiting {
			if p := h.s.t.WriteProgress(h.leg); p != h.progress {
				// No pong yet, but the leg took bytes of a frame in flight
				// (the ping waits behind it): alive; wait another timeout.
				h.progress = p
				h.timer.Reset(h.opts.Timeout)
				h.mu.Unlock()
				return
			}
			h.mu.Unlock()
			reason := ReasonClientHeartbeatTimeout
			if h.leg == Upstream {
				reason = ReasonUpstreamHeartbeatTimeout
			}
			h.s.End(reason)
			return
		}
		// The pong came in time: next ping one interval after the last.
		h.awaiting = false
		h.timer.Reset(h.opts.Interval - h.opts.Timeout)
		h.mu.Unlock()
		return
	}
	// Arm the deadline before sending, so a ping stuck behind a blocked
	// write still times out.
	h.awaiting = true
	h.waiting = true
	h.sentAt = time.Now()
	h.progress = h.s.t.WriteProgress(h.leg)
	h.timer.Reset(h.opts.Timeout)
	h.mu.Unlock()
	if err := h.s.t.Ping(h.leg); err != nil {
		h.s.LegError(h.leg, err)
	}
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
	h.stopped = true
	if h.timer != nil {
		h.timer.Stop()
	}
}
