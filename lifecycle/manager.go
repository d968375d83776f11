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
	MaxSessions         int // 0 = unlimited
	// MaxSessionsPerClient bounds sessions per client identity (0 = unlimited).
	MaxSessionsPerClient int
	Logger               *slog.Logger
	Metrics              *Metrics // nil records nothing
	Hooks                []Hooks
}

// ErrFull is returned by Reserve when max_sessions sessions are open.
var ErrFull = errors.New("session limit reached")

// ErrDraining is returned by Reserve while tether drains.
var ErrDraining = errors.New("draining")

// ErrClientLimit is returned by Reserve when the client has max_sessions_per_client sessions.
var ErrClientLimit = errors.New("per-client session limit reached")

// Manager is the session registry: O(1) lookup by id, admission, drain.
type Manager struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	fatal   map[string]bool

	draining atomic.Bool
	reserved atomic.Int64 // admitted upgrades (handshake in progress or session open)

	clientsMu sync.Mutex
	clients   map[string]int // admitted upgrades per client identity; guarded by clientsMu

	mu       sync.Mutex
	sessions map[string]*Session // open sessions (not yet ended)
	idle     chan struct{}       // closed when sessions becomes empty during drain; guarded by mu

	running sync.WaitGroup // one per session until its relay goroutines have exited
}

// NewManager returns a Manager with opts.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opts: opts, log: opts.Logger, metrics: opts.Metrics,
		fatal: make(map[string]bool), sessions: make(map[string]*Session), clients: make(map[string]int)}
	for _, c := range opts.FatalUpstreamErrors {
		m.fatal[c] = true
	}
	return m
}

// Reserve admits one upgrade from client (an identity: token subject or
// remote IP; "" skips the per-client limit). The caller must call the
// returned release once the handshake failed or the session finished.
func (m *Manager) Reserve(client string) (release func(), err error) {
	if m.draining.Load() {
		return nil, ErrDraining
	}
	n := m.reserved.Add(1)
	if m.opts.MaxSessions > 0 && n > int64(m.opts.MaxSessions) {
		m.reserved.Add(-1)
		return nil, ErrFull
	}
	perClient := m.opts.MaxSessionsPerClient > 0 && client != ""
	if perClient {
		m.clientsMu.Lock()
		if m.clients[client] >= m.opts.MaxSessionsPerClient {
			m.clientsMu.Unlock()
			m.reserved.Add(-1)
			return nil, ErrClientLimit
		}
		m.clients[client]++
		m.clientsMu.Unlock()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			m.reserved.Add(-1)
			if perClient {
				m.clientsMu.Lock()
				if m.clients[client]--; m.clients[client] <= 0 {
					delete(m.clients, client)
				}
				m.clientsMu.Unlock()
			}
		})
	}, nil
}

// Open registers a new session for an admitted upgrade. The caller must
// call Start, and Finished once the relay's goroutines have exited.
func (m *Manager) Open(info Info) *Session {
	s := &Session{ID: newID(), Info: info, StartedAt: time.Now(), mgr: m, log: m.log, dialect: info.Dialect}
	if s.dialect == nil {
		s.dialect = dialect.None{}
	}
	m.running.Add(1)
	m.mu.Lock()
	m.sessions[s.ID] = s
	m.mu.Unlock()
	if m.metrics != nil {
		m.metrics.sessionsActive.Inc()
	}
	for _, h := range m.opts.Hooks {
		h.SessionStarted(s)
	}
	if m.draining.Load() {
		// Drain began during the handshake: this session closes at once.
		defer s.End(ReasonShutdown)
	}
	return s
}

// Finished tells the manager that the session's relay goroutines have
// exited; release frees its admission slot.
func (m *Manager) Finished(s *Session, release func()) {
	if !s.ended.Load() {
		s.End(ReasonClientError)
	}
	release()
	m.running.Done()
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
	if m.metrics != nil {
		m.metrics.sessionsActive.Dec()
		if c, ok := m.metrics.sessionsByReason[sum.Reason]; ok {
			c.Inc()
		} else {
			m.metrics.sessionsTotal.WithLabelValues(string(sum.Reason)).Inc()
		}
		observe(m.metrics.sessionDuration, sum.Duration.Seconds(), sum.TraceID)
	}
	for _, h := range m.opts.Hooks {
		h.SessionEnded(s, sum)
	}
	m.log.Info("session ended",
		"session", s.ID, "reason", string(sum.Reason), "upstream", s.Info.Upstream,
		"duration_ms", sum.Duration.Milliseconds(),
		"close_client", sum.CloseClient.Code, "close_upstream", sum.CloseUp.Code,
		"bytes_client_to_upstream", sum.Bytes[ClientToUpstream],
		"bytes_upstream_to_client", sum.Bytes[UpstreamToClient],
		"responses", sum.Responses,
		"input_tokens", sum.Tokens.Input, "output_tokens", sum.Tokens.Output,
		"trace_id", sum.TraceID, "span_id", sum.SpanID)
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

// Drain stops admitting sessions, closes each session with 1001 at its next
// response boundary (at once when none is in progress), and at the drain
// timeout — or when ctx is done (a second signal) — closes the rest. It
// returns once every session's goroutines have exited.
func (m *Manager) Drain(ctx context.Context) {
	m.draining.Store(true)
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
	for _, s := range list {
		s.drain()
	}
	if idle != nil {
		timer := time.NewTimer(m.opts.DrainTimeout)
		select {
		case <-idle:
		case <-timer.C:
			m.log.Info("drain timeout: closing remaining sessions", "sessions", m.Len())
		case <-ctx.Done():
			m.log.Info("closing remaining sessions at once", "sessions", m.Len())
		}
		timer.Stop()
	}
	m.CloseAll(ReasonShutdown)
	// Upgrades admitted before the drain may still be dialing: they open,
	// end at once (draining) and release their slot. Once no slot is held,
	// no session can open any more and running is final.
	for m.reserved.Load() > 0 {
		if ctx.Err() != nil {
			m.CloseAll(ReasonShutdown)
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.running.Wait()
}

// CloseAll ends every open session with reason, many at a time: ending one
// may wait up to a second for a close frame to get out, and a thousand of
// them must not take a thousand seconds.
func (m *Manager) CloseAll(reason Reason) {
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	const workers = 64
	var wg sync.WaitGroup
	next := make(chan *Session)
	for range min(workers, len(list)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				s.End(reason)
			}
		}()
	}
	for _, s := range list {
		next <- s
	}
	close(next)
	wg.Wait()
}

// Wait blocks until every session's goroutines have exited.
func (m *Manager) Wait() { m.running.Wait() }

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "tsn_" + hex.EncodeToString(b[:])
}
