// Package limits holds each client identity to its limits: concurrent
// sessions and spend per window (tokens, billed audio seconds, USD from the
// pricing key) for the whole fleet, and per-session caps. Admission is
// checked at the handshake, before any upstream is dialed; usage is counted
// as the dialects report it, and a spent budget ends the session at its
// next answer boundary (reason budget_exhausted). The counts live in a
// state.Store: this replica's, or a fleet's on Redis.
package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/state"
)

// Options configure an Enforcer.
type Options struct {
	Limits  Config
	Pricing Pricing
	// Store counts sessions and usage (state.NewMemory for one replica).
	Store  state.Store
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// CheckInterval, when > 0, is how often the clients with calls on this
	// replica have their spend read from the store (Status), so a budget
	// spent on other replicas ends their calls here too, whether or not
	// they spend anything themselves. Stop ends it.
	CheckInterval time.Duration
}

// Enforcer admits sessions and ends those whose budget is spent. It is a
// lifecycle.Hooks: install it last, so the other hooks see an answer before
// the session it spent ends.
type Enforcer struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	sessions map[*lifecycle.Session]*tally
	byClient map[string]map[*lifecycle.Session]bool
	seen     map[string]time.Time // identity -> window of its last usage (client_metrics)
	unpriced map[string]bool      // models without a price, warned about once

	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the check loop exits (nil without one)
}

// tally is one session's usage and limits.
type tally struct {
	identity string
	limits   Config
	used     state.Usage
}

var _ lifecycle.Hooks = (*Enforcer)(nil)

// New returns an Enforcer.
func New(opts Options) *Enforcer {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Enforcer{opts: opts, log: opts.Logger, now: opts.Now,
		sessions: make(map[*lifecycle.Session]*tally), byClient: make(map[string]map[*lifecycle.Session]bool),
		seen: make(map[string]time.Time), unpriced: make(map[string]bool), stop: make(chan struct{})}
	if opts.CheckInterval > 0 {
		e.done = make(chan struct{})
		go e.checkLoop()
	}
	return e
}

// Stop ends the check loop (CheckInterval) and waits for it.
func (e *Enforcer) Stop() {
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	if e.done != nil {
		<-e.done
	}
}

// checkLoop reads, every CheckInterval, the spend of each client with calls
// here and ends them when another replica spent the client's budget.
func (e *Enforcer) checkLoop() {
	defer close(e.done)
	tick := time.NewTicker(e.opts.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		e.mu.Lock()
		ids := make([]string, 0, len(e.byClient))
		for id := range e.byClient {
			ids = append(ids, id)
		}
		e.mu.Unlock()
		for _, id := range ids {
			lim := e.opts.Limits.For(id)
			if lim.TokensPerDay == 0 && lim.AudioSecondsPerDay == 0 && lim.CostPerDay == 0 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			start, _ := e.window(e.now())
			_, spent, err := e.opts.Store.Status(ctx, id, start)
			cancel()
			if err != nil {
				continue // the store counts and reports its own failures
			}
			if hit := budgetHit(lim, spent); hit != state.LimitNone {
				e.exhaust(e.clientSessions(id), string(hit), nil)
			}
		}
	}
}

// Refusal is an admission the limits refused.
type Refusal struct {
	// Limit names the limit reached (state.LimitSessions, or a budget).
	Limit state.Limit
	// RetryAfter is when trying again may succeed: the window's end for a
	// budget.
	RetryAfter time.Duration
	// Unavailable: the shared store could not be reached and its policy is
	// fail_closed (HTTP 503).
	Unavailable bool
}

// Message is the refusal's text for the client.
func (r *Refusal) Message() string {
	switch {
	case r.Unavailable:
		return "limits store unavailable"
	case r.Limit == state.LimitSessions:
		return "too many sessions for this client"
	}
	return exhaustedMessage(string(r.Limit))
}

// exhaustedMessage tells a client which of its limits is spent (a 429's
// body, the error event before 4004).
func exhaustedMessage(limit string) string { return "budget exhausted: " + limit + " reached" }

// window returns the start and end of the usage window holding t.
func (e *Enforcer) window(t time.Time) (start, end time.Time) {
	start = state.WindowStart(t, e.opts.Limits.Window)
	return start, start.Add(e.opts.Limits.Window)
}

// Admit admits one session of identity: release gives its slot back (call
// it once the handshake failed or the session ended). A refused admission
// holds nothing.
func (e *Enforcer) Admit(ctx context.Context, identity string) (release func(), refused *Refusal) {
	lim := e.opts.Limits.For(identity)
	now := e.now()
	start, end := e.window(now)
	if hit := budgetHit(lim, e.opts.Store.Spent(identity, start)); hit != state.LimitNone {
		// This replica's own count reaches the budget (with Redis, part of
		// it may not be flushed yet): refused without a round trip.
		return nil, &Refusal{Limit: hit, RetryAfter: end.Sub(now)}
	}
	lease := newLease()
	v, err := e.opts.Store.Admit(ctx, state.Request{Client: identity, Lease: lease, MaxSessions: lim.MaxSessions,
		Budget: state.Usage{Tokens: lim.TokensPerDay, AudioSeconds: lim.AudioSecondsPerDay, CostUSD: lim.CostPerDay},
		Window: start})
	switch {
	case err != nil:
		return nil, &Refusal{Unavailable: true, RetryAfter: time.Second}
	case !v.Admitted && v.Limit == state.LimitSessions:
		return nil, &Refusal{Limit: v.Limit, RetryAfter: time.Second}
	case !v.Admitted:
		return nil, &Refusal{Limit: v.Limit, RetryAfter: end.Sub(now)}
	}
	var once sync.Once
	return func() { once.Do(func() { e.opts.Store.Release(identity, lease) }) }, nil
}

// newLease names one session's lease, unique across the fleet.
func newLease() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SessionStarted implements lifecycle.Hooks.
func (e *Enforcer) SessionStarted(s *lifecycle.Session) {
	id := s.Info.Identity
	e.mu.Lock()
	e.sessions[s] = &tally{identity: id, limits: e.opts.Limits.For(id)}
	if e.byClient[id] == nil {
		e.byClient[id] = make(map[*lifecycle.Session]bool)
	}
	e.byClient[id][s] = true
	e.mu.Unlock()
}

// SessionEnded implements lifecycle.Hooks.
func (e *Enforcer) SessionEnded(s *lifecycle.Session, _ lifecycle.Summary) {
	e.mu.Lock()
	if t, ok := e.sessions[s]; ok {
		delete(e.sessions, s)
		if delete(e.byClient[t.identity], s); len(e.byClient[t.identity]) == 0 {
			delete(e.byClient, t.identity)
		}
	}
	e.mu.Unlock()
}

// ResponseDone implements lifecycle.Hooks: an answer's usage is counted.
func (e *Enforcer) ResponseDone(s *lifecycle.Session, _, _ string, usage lifecycle.Tokens) {
	e.charge(s, usage, 0)
}

// UsageUpdated implements lifecycle.Hooks: usage outside answer boundaries
// (GPT-Live audio seconds, delegated responses' tokens) is counted.
func (e *Enforcer) UsageUpdated(s *lifecycle.Session, tokens lifecycle.Tokens, audioSeconds float64) {
	e.charge(s, tokens, audioSeconds)
}

// charge counts usage of s and ends the sessions whose budget it spent.
func (e *Enforcer) charge(s *lifecycle.Session, t lifecycle.Tokens, audioSeconds float64) {
	u := state.Usage{Tokens: t.Input + t.Output, AudioSeconds: audioSeconds, CostUSD: e.cost(s.Model(), t, audioSeconds)}
	if u.IsZero() {
		return
	}
	now := e.now()
	start, _ := e.window(now)
	e.mu.Lock()
	tl, ok := e.sessions[s]
	if !ok {
		e.mu.Unlock()
		return
	}
	tl.used.Add(u)
	id, lim, used := tl.identity, tl.limits, tl.used
	if e.opts.Limits.ClientMetrics {
		e.seen[id] = start
	}
	e.mu.Unlock()
	e.opts.Store.Add(id, start, u)

	if capHit := sessionCap(lim, used); capHit != "" {
		e.exhaust([]*lifecycle.Session{s}, capHit, s)
	}
	if hit := budgetHit(lim, e.opts.Store.Spent(id, start)); hit != "" {
		e.exhaust(e.clientSessions(id), string(hit), s)
	}
}

// clientSessions lists identity's sessions on this replica.
func (e *Enforcer) clientSessions(identity string) []*lifecycle.Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	all := make([]*lifecycle.Session, 0, len(e.byClient[identity]))
	for s := range e.byClient[identity] {
		all = append(all, s)
	}
	return all
}

// cost prices usage of model; a model without a price costs nothing (and
// is reported once, when a cost limit is set).
func (e *Enforcer) cost(model string, t lifecycle.Tokens, audioSeconds float64) float64 {
	p, ok := e.opts.Pricing.Lookup(model)
	if ok {
		return p.Cost(t, audioSeconds)
	}
	e.mu.Lock()
	warn := !e.unpriced[model] && e.anyCostLimit()
	e.unpriced[model] = true
	e.mu.Unlock()
	if warn {
		e.log.Warn("no price for model: its usage counts no cost", "model", model)
	}
	return 0
}

// anyCostLimit reports whether some client has a cost limit.
func (e *Enforcer) anyCostLimit() bool {
	if e.opts.Limits.CostPerDay > 0 {
		return true
	}
	for _, o := range e.opts.Limits.Overrides {
		if o.CostPerDay > 0 {
			return true
		}
	}
	return false
}

// sessionCap names the per-session cap used has reached, or "".
func sessionCap(lim Config, used state.Usage) string {
	switch {
	case lim.MaxSessionTokens > 0 && used.Tokens >= lim.MaxSessionTokens:
		return "max_session_tokens"
	case lim.MaxSessionAudioSeconds > 0 && used.AudioSeconds >= lim.MaxSessionAudioSeconds:
		return "max_session_audio_seconds"
	}
	return ""
}

// budgetHit names the window budget spent has reached, or LimitNone.
func budgetHit(lim Config, spent state.Usage) state.Limit {
	switch {
	case lim.TokensPerDay > 0 && spent.Tokens >= lim.TokensPerDay:
		return state.LimitTokens
	case lim.AudioSecondsPerDay > 0 && spent.AudioSeconds >= lim.AudioSecondsPerDay:
		return state.LimitAudioSeconds
	case lim.CostPerDay > 0 && spent.CostUSD >= lim.CostPerDay:
		return state.LimitCost
	}
	return state.LimitNone
}

// exhaust ends sessions at their next answer boundary, telling each client
// which limit it reached. self (the session whose usage was counted, on its
// own relay goroutine; nil from the check loop) is asked at once, so no
// answer it starts next slips in; the others each on a goroutine of their
// own: a session at its boundary closes its legs in the call, and the
// caller must not wait for other sessions' peers.
func (e *Enforcer) exhaust(sessions []*lifecycle.Session, limit string, self *lifecycle.Session) {
	notice := dialect.ErrorNotice("budget_exhausted", exhaustedMessage(limit))
	for _, s := range sessions {
		switch {
		case s.Ended():
		case s == self:
			s.EndAtBoundary(lifecycle.ReasonBudgetExhausted, notice, e.opts.Limits.BoundaryTimeout)
		default:
			go s.EndAtBoundary(lifecycle.ReasonBudgetExhausted, notice, e.opts.Limits.BoundaryTimeout)
		}
	}
}

// Status is a client's live sessions and spend (GET /limits/{client}).
type Status struct {
	Client string `json:"client"`
	// Sessions is the client's live sessions: fleet-wide with Redis.
	Sessions int `json:"sessions"`
	// LocalSessions are those on this replica.
	LocalSessions int         `json:"local_sessions"`
	WindowStart   time.Time   `json:"window_start"`
	WindowEnd     time.Time   `json:"window_end"`
	Spent         state.Usage `json:"spent"`
	Limits        Config      `json:"limits"`
	// Exhausted names the budget spent, if one is.
	Exhausted state.Limit `json:"exhausted,omitempty"`
}

// Status reads identity's sessions and spend.
func (e *Enforcer) Status(ctx context.Context, identity string) (Status, error) {
	lim := e.opts.Limits.For(identity)
	lim.Overrides = nil
	start, end := e.window(e.now())
	n, spent, err := e.opts.Store.Status(ctx, identity, start)
	if err != nil {
		return Status{}, err
	}
	// What this replica spent and has not flushed yet counts too.
	known := e.opts.Store.Spent(identity, start)
	spent.Tokens = max(spent.Tokens, known.Tokens)
	spent.AudioSeconds = max(spent.AudioSeconds, known.AudioSeconds)
	spent.CostUSD = max(spent.CostUSD, known.CostUSD)
	e.mu.Lock()
	local := len(e.byClient[identity])
	e.mu.Unlock()
	spent.CostUSD = math.Round(spent.CostUSD*1e9) / 1e9 // the store's resolution: a nano-dollar
	return Status{Client: identity, Sessions: n, LocalSessions: local, WindowStart: start, WindowEnd: end,
		Spent: spent, Limits: lim, Exhausted: budgetHit(lim, spent)}, nil
}

// Spend is one client's usage in the current window, as this replica knows it.
type Spend struct {
	Client string
	Spent  state.Usage
}

// Spending lists the clients with usage in the current window
// (tether_budget_spent, when limits.client_metrics is on).
func (e *Enforcer) Spending() []Spend {
	start, _ := e.window(e.now())
	e.mu.Lock()
	ids := make([]string, 0, len(e.seen))
	for id, w := range e.seen {
		if w.Equal(start) {
			ids = append(ids, id)
		} else {
			delete(e.seen, id)
		}
	}
	e.mu.Unlock()
	sort.Strings(ids)
	out := make([]Spend, 0, len(ids))
	for _, id := range ids {
		out = append(out, Spend{Client: id, Spent: e.opts.Store.Spent(id, start)})
	}
	return out
}

// ClientMetrics reports whether per-client spend is exported.
func (e *Enforcer) ClientMetrics() bool { return e.opts.Limits.ClientMetrics }

// The hooks the Enforcer does not need.

// HandshakeFailed implements lifecycle.Hooks.
func (*Enforcer) HandshakeFailed(lifecycle.Info, int, string) {}

// ResponseStarted implements lifecycle.Hooks.
func (*Enforcer) ResponseStarted(*lifecycle.Session, string) {}

// FirstAudio implements lifecycle.Hooks.
func (*Enforcer) FirstAudio(*lifecycle.Session, string, time.Duration) {}

// UpstreamError implements lifecycle.Hooks.
func (*Enforcer) UpstreamError(*lifecycle.Session, string, string) {}

// HeartbeatTimeout implements lifecycle.Hooks.
func (*Enforcer) HeartbeatTimeout(*lifecycle.Session, lifecycle.Leg) {}

// HeartbeatRTT implements lifecycle.Hooks.
func (*Enforcer) HeartbeatRTT(*lifecycle.Session, lifecycle.Leg, time.Duration) {}

// SessionResumed implements lifecycle.Hooks: usage is counted as it comes, whichever upstream session it comes from.
func (*Enforcer) SessionResumed(*lifecycle.Session, lifecycle.Resume) {}
