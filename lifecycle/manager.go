package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherproxy/tether/dialect"
)

// Hooks observe sessions (tracing, tests). Methods are called synchronously
// outside the relay's frame loop, at most a few times per response; they
// must not block.
type Hooks interface {
	// HandshakeFailed reports an upgrade refused after it was admitted
	// (no upstream reachable): status is the HTTP status sent to the client.
	HandshakeFailed(info Info, status int, reason string)
	SessionStarted(s *Session)
	ResponseStarted(s *Session, responseID string)
	FirstAudio(s *Session, responseID string, ttfa time.Duration)
	ResponseDone(s *Session, responseID, status string, usage Tokens)
	UpstreamError(s *Session, errType, code string)
	HeartbeatTimeout(s *Session, leg Leg)
	// HeartbeatRTT reports a pong's round trip on leg.
	HeartbeatRTT(s *Session, leg Leg, rtt time.Duration)
	// UsageUpdated reports usage reported outside answer boundaries: tokens
	// added, and the growth of the cumulative audio seconds (GPT-Live).
	UsageUpdated(s *Session, tokens Tokens, audioSeconds float64)
	// SessionResumed reports an attempt to carry the call over to a new
	// upstream session (lifecycle.resume), whatever its result.
	SessionResumed(s *Session, r Resume)
	SessionEnded(s *Session, sum Summary)
}

// Options configure the Manager (plain values; package config maps the YAML here).
type Options struct {
	ClientHeartbeat     HeartbeatOptions
	UpstreamHeartbeat   HeartbeatOptions
	IdleTimeout         time.Duration // 0 disables
	MaxDuration         time.Duration // 0 disables
	DrainTimeout        time.Duration
	FatalUpstreamErrors []string
	MaxSessions         int // 0 = unlimited (per-client limits: package limits)
	// CloseTimeout bounds a graceful close (dialect.Closer: GPT-Live's
	// session.close, answered by session.closed); 0 sends no close event.
	CloseTimeout time.Duration
	// Quiet is how long an answer spoken on a continuous stream must have
	// been quiet before a drain closes the session (0: at once).
	Quiet time.Duration
	// Resume carries calls over to a new upstream session (lifecycle.resume).
	Resume ResumeOptions
	Logger *slog.Logger
	Hooks  []Hooks
}

// ErrFull is returned by Reserve when max_sessions sessions are open.
var ErrFull = errors.New("session limit reached")

// ErrDraining is returned by Reserve while tether drains.
var ErrDraining = errors.New("draining")

// Manager is the session registry: O(1) lookup by id, admission, drain.
type Manager struct {
	opts  Options
	log   *slog.Logger
	fatal map[string]bool

	// relayed counts data frames and payload bytes over all sessions, by
	// Direction (atomic; read by the metrics at scrape time).
	relayedFrames [2]atomic.Int64
	relayedBytes  [2]atomic.Int64

	draining atomic.Bool
	reserved atomic.Int64 // admitted upgrades (handshake in progress or session open)

	mu       sync.Mutex
	sessions map[string]*Session // open sessions (not yet ended)
	idle     chan struct{}       // closed when sessions becomes empty during drain; guarded by mu

	// running counts sessions whose relay goroutines have not exited (Open
	// to Finished); runIdle, when non-nil, is closed when it drops to 0.
	// Not a WaitGroup: a handshake may still open a session while Drain
	// waits (or after it gave up waiting).
	runMu   sync.Mutex
	running int
	runIdle chan struct{}

	// stopping is cancelled by stop (drain deadline or second signal).
	stopping context.Context
	stop     context.CancelFunc
	// drainStarted is cancelled when Drain begins.
	drainStarted context.Context
	startDrain   context.CancelFunc
}

// NewManager returns a Manager with opts.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opts: opts, log: opts.Logger,
		fatal: make(map[string]bool), sessions: make(map[string]*Session)}
	m.stopping, m.stop = context.WithCancel(context.Background())
	m.drainStarted, m.startDrain = context.WithCancel(context.Background())
	for _, c := range opts.FatalUpstreamErrors {
		m.fatal[c] = true
	}
	return m
}

// Reserve admits one upgrade. The caller must call the returned release
// once the handshake failed or the session finished.
func (m *Manager) Reserve() (release func(), err error) {
	if m.draining.Load() {
		return nil, ErrDraining
	}
	n := m.reserved.Add(1)
	if m.opts.MaxSessions > 0 && n > int64(m.opts.MaxSessions) {
		m.reserved.Add(-1)
		return nil, ErrFull
	}
	var once sync.Once
	return func() { once.Do(func() { m.reserved.Add(-1) }) }, nil
}

// Open registers a new session for an admitted upgrade. The caller must
// call Start, and Finished once the relay's goroutines have exited.
func (m *Manager) Open(info Info) *Session {
	s := &Session{ID: newID(), Info: info, StartedAt: time.Now(), mgr: m, log: m.log, dialect: info.Dialect,
		upstream: info.Upstream}
	if s.dialect == nil {
		s.dialect = dialect.None{}
	}
	s.turns = s.dialect.Activity()
	s.initResume()
	if c, ok := s.dialect.(dialect.Closer); ok && m.opts.CloseTimeout > 0 {
		s.closeMsg = c.Close()
	}
	m.runMu.Lock()
	m.running++
	m.runMu.Unlock()
	m.mu.Lock()
	m.sessions[s.ID] = s
	m.mu.Unlock()
	for _, h := range m.opts.Hooks {
		h.SessionStarted(s)
	}
	if m.draining.Load() {
		// Drain began during the handshake: this session closes at once.
		defer s.End(ReasonShutdown)
	}
	return s
}

// Finished tells the manager that the session's relay has stopped (both
// pumps, and both sockets closed); release frees its admission slot.
func (m *Manager) Finished(s *Session, release func()) {
	if !s.ended.Load() {
		s.End(ReasonClientError)
	}
	release()
	m.runMu.Lock()
	if m.running--; m.running == 0 && m.runIdle != nil {
		close(m.runIdle)
		m.runIdle = nil
	}
	m.runMu.Unlock()
}

// ended removes s from the registry and records its end. Called once per session by End.
func (m *Manager) ended(s *Session) {
	m.mu.Lock()
	delete(m.sessions, s.ID)
	if len(m.sessions) == 0 && m.idle != nil {
		close(m.idle)
		m.idle = nil
	}
	m.mu.Unlock()
	sum := s.Summary()
	for _, h := range m.opts.Hooks {
		h.SessionEnded(s, sum)
	}
	m.log.Info("session ended",
		"session", s.ID, "reason", string(sum.Reason), "upstream", s.Upstream(),
		"duration_ms", sum.Duration.Milliseconds(),
		"close_client", sum.CloseClient.Code, "close_upstream", sum.CloseUp.Code,
		"bytes_client_to_upstream", sum.Bytes[ClientToUpstream],
		"bytes_upstream_to_client", sum.Bytes[UpstreamToClient],
		"responses", sum.Responses,
		"input_tokens", sum.Tokens.Input, "output_tokens", sum.Tokens.Output,
		"dialect", sum.Dialect, "audio_seconds", sum.AudioSeconds, "upstream_end_reason", sum.UpstreamEndReason,
		"resumes", sum.Resumes, "upstream_sessions", partsAttr(sum.Parts),
		"trace_id", sum.TraceID, "span_id", sum.SpanID)
}

// Relayed returns the data frames and payload bytes relayed in direction d
// over every session so far.
func (m *Manager) Relayed(d Direction) (frames, bytes int64) {
	return m.relayedFrames[d].Load(), m.relayedBytes[d].Load()
}

// HandshakeFailed reports a failed handshake to the hooks.
func (m *Manager) HandshakeFailed(info Info, status int, reason string) {
	for _, h := range m.opts.Hooks {
		h.HandshakeFailed(info, status, reason)
	}
}

// Get returns the open session with id, or nil. O(1).
func (m *Manager) Get(id string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[id]
}

// Len returns the number of open sessions.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

// Snapshots lists open sessions, oldest first.
func (m *Manager) Snapshots() []Snapshot {
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	out := make([]Snapshot, 0, len(list))
	for _, s := range list {
		out = append(out, s.Snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// Draining reports whether Drain has begun.
func (m *Manager) Draining() bool { return m.draining.Load() }

// Stopping is cancelled once tether waits for nothing any more: at a second
// signal or at the drain deadline. Handshakes derive their upstream dial
// from it, so a dial in progress is cut short then (its client gets 503).
func (m *Manager) Stopping() context.Context { return m.stopping }

// DrainStarted is cancelled as soon as a drain begins (handshakes that have
// not asked for anything yet stop waiting for the client).
func (m *Manager) DrainStarted() context.Context { return m.drainStarted }

// closeGrace bounds how long Drain waits, once it has closed every session,
// for their relays to exit and for cancelled handshakes to answer. A relay's
// Shutdown is bounded by its close write timeout and linger (1 s each,
// running at the same time), so this is only reached when something is
// wedged; Drain then returns anyway and the process exits.
const closeGrace = 1250 * time.Millisecond

// Drain stops admitting sessions and asks every session, all at once, to
// close with 1001 at its next response boundary (at once when none is in
// progress). At the drain timeout, counted from the call, or as soon as ctx
// is done (a second signal) it cancels Stopping, so handshakes still dialing
// give up, and closes the rest, all at once. It returns once every session's
// goroutines have exited, or closeGrace after that point, whichever is first.
func (m *Manager) Drain(ctx context.Context) {
	start := time.Now()
	deadline := time.NewTimer(m.opts.DrainTimeout)
	defer deadline.Stop()
	m.draining.Store(true)
	m.startDrain()
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	var idle chan struct{}
	if len(m.sessions) > 0 {
		idle = make(chan struct{})
		m.idle = idle
	}
	m.mu.Unlock()
	m.log.Info("draining", "sessions", len(list), "drain_timeout", m.opts.DrainTimeout.String())
	// Ending a session may wait up to a second for its close frames: one
	// goroutine each, so neither the deadline nor a second signal waits for them.
	for _, s := range list {
		go s.drain()
	}
	why := m.waitDrained(ctx, idle, deadline.C)
	switch why {
	case drainDeadline:
		m.log.Info("drain timeout: closing remaining sessions", "sessions", m.Len(), "handshakes", m.handshakes())
	case drainForced:
		m.log.Info("closing remaining sessions at once", "sessions", m.Len(), "handshakes", m.handshakes())
	}
	m.stop()
	done := m.endAll(ReasonShutdown)
	grace := make(chan struct{})
	graceTimer := time.AfterFunc(closeGrace, func() { close(grace) })
	defer graceTimer.Stop()
	select {
	case <-done:
	case <-grace:
	}
	// Handshakes whose dial was cancelled answer 503 and release their
	// slot; one that got its upstream just before opens and ends at once
	// (Open sees draining). Once no slot is held no session can open, so the
	// running count is final.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
wait:
	for m.reserved.Load() > 0 {
		select {
		case <-tick.C:
		case <-grace:
			break wait
		}
	}
	if !m.waitRunning(grace) {
		m.log.Warn("drain: sessions still closing; not waiting for them", "sessions", m.Len(),
			"handshakes", m.handshakes(), "after", time.Since(start).Round(time.Millisecond).String())
	}
}

// Why waitDrained returned.
const (
	drainIdle = iota
	drainDeadline
	drainForced
)

// waitDrained waits until every session has ended and no handshake is in
// progress, or the deadline passes, or ctx is done.
func (m *Manager) waitDrained(ctx context.Context, idle <-chan struct{}, deadline <-chan time.Time) int {
	if idle != nil {
		select {
		case <-idle:
		case <-deadline:
			return drainDeadline
		case <-ctx.Done():
			return drainForced
		}
	}
	// Upgrades admitted before the drain may still be dialing: until the
	// deadline they may finish (and their session closes at once).
	if m.reserved.Load() == 0 {
		return drainIdle
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for m.reserved.Load() > 0 {
		select {
		case <-tick.C:
		case <-deadline:
			return drainDeadline
		case <-ctx.Done():
			return drainForced
		}
	}
	return drainIdle
}

// handshakes is the number of admitted upgrades without an open session
// (mostly: dialing the upstream).
func (m *Manager) handshakes() int64 { return max(0, m.reserved.Load()-int64(m.Len())) }

// CloseAll ends every open session with reason, all at once (ending one may
// wait up to a second for its close frames to get out), and returns when
// every End has returned.
func (m *Manager) CloseAll(reason Reason) { <-m.endAll(reason) }

// endAll ends every open session with reason, one goroutine each, and
// returns a channel closed once every End has returned.
func (m *Manager) endAll(reason Reason) <-chan struct{} {
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(len(list))
	for _, s := range list {
		go func() {
			defer wg.Done()
			s.End(reason)
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// Wait blocks until every session's goroutines have exited.
func (m *Manager) Wait() { m.waitRunning(nil) }

// WaitContext is Wait, giving up when ctx is done; it reports whether every
// session's goroutines have exited.
func (m *Manager) WaitContext(ctx context.Context) bool { return m.waitRunning(ctx.Done()) }

// waitRunning waits until no session's goroutines run, or until timeout is
// closed (nil: no timeout). It reports whether none run.
func (m *Manager) waitRunning(timeout <-chan struct{}) bool {
	for {
		m.runMu.Lock()
		if m.running == 0 {
			m.runMu.Unlock()
			return true
		}
		if m.runIdle == nil {
			m.runIdle = make(chan struct{})
		}
		ch := m.runIdle
		m.runMu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			return false
		}
	}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "tsn_" + hex.EncodeToString(b[:])
}
