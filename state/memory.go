package state

import (
	"context"
	"sync"
	"time"
)

// Memory is a Store that counts in this process only: every replica of a
// fleet has its own counts. It is safe for concurrent use; every method
// takes one mutex for a few map operations.
//
// Usage is kept per client for the two most recent window starts the store
// has seen (the current window and the previous one): when a later window
// starts, the ones before the previous are dropped, and usage added to a
// window older than that is ignored.
type Memory struct {
	mu      sync.Mutex
	leases  map[string]map[string]struct{}
	usage   map[windowKey]Usage
	windows windows
}

// windowKey names one client's usage in one window.
type windowKey struct {
	client string
	start  int64 // the window start, Unix nanoseconds
}

func keyOf(client string, window time.Time) windowKey {
	return windowKey{client: client, start: window.UnixNano()}
}

// windows tracks the two most recent window starts seen, so that the maps
// keyed by window can drop the windows before them without knowing how
// long a window is.
type windows struct {
	latest, prev int64
	seen         bool
}

// observe records the window start w. It reports whether w is still kept
// (not older than the previous window) and, when w opened a new window, the
// start before which entries are to be dropped (prune true).
func (ws *windows) observe(w int64) (keep bool, before int64, prune bool) {
	switch {
	case !ws.seen:
		ws.latest, ws.prev, ws.seen = w, w, true
		return true, 0, false
	case w > ws.latest:
		ws.prev, ws.latest = ws.latest, w
		return true, ws.prev, true
	default:
		return w >= ws.prev, 0, false
	}
}

// kept reports whether the window start w is not older than the previous
// window.
func (ws *windows) kept(w int64) bool { return !ws.seen || w >= ws.prev }

// NewMemory returns an empty process-local store.
func NewMemory() *Memory {
	return &Memory{leases: map[string]map[string]struct{}{}, usage: map[windowKey]Usage{}}
}

// refusal is the limit that refuses a session of a client that has live
// sessions (not counting this one) and spent usage: the budgets first, in
// the order tokens, audio seconds, cost, then the session count. A bound of
// 0 is unlimited; a client is refused once it has reached a bound.
func refusal(budget Usage, maxSessions, live int, spent Usage) Limit {
	switch {
	case budget.Tokens > 0 && spent.Tokens >= budget.Tokens:
		return LimitTokens
	case budget.AudioSeconds > 0 && spent.AudioSeconds >= budget.AudioSeconds:
		return LimitAudioSeconds
	case budget.CostUSD > 0 && spent.CostUSD >= budget.CostUSD:
		return LimitCost
	case maxSessions > 0 && live >= maxSessions:
		return LimitSessions
	}
	return LimitNone
}

// Admit checks req's budgets against the usage in req.Window, then
// req.MaxSessions against the live leases, and takes req.Lease when they
// allow it, all under one lock. A lease already held is not counted against
// itself: admitting it again only checks the limits. It never fails.
func (m *Memory) Admit(_ context.Context, req Request) (Verdict, error) {
	return m.admit(req, Usage{}), nil
}

// admit is Admit with the usage counted at least floor (field by field): a
// Redis store that lost its server checks its budgets against what it last
// heard from the fleet as well as against what this replica counted.
func (m *Memory) admit(req Request, floor Usage) Verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	spent := m.spentLocked(keyOf(req.Client, req.Window))
	spent.Tokens = max(spent.Tokens, floor.Tokens)
	spent.AudioSeconds = max(spent.AudioSeconds, floor.AudioSeconds)
	spent.CostUSD = max(spent.CostUSD, floor.CostUSD)
	held := m.leases[req.Client]
	live := len(held)
	if _, ok := held[req.Lease]; ok {
		live--
	}
	v := Verdict{Sessions: live, Spent: spent}
	if v.Limit = refusal(req.Budget, req.MaxSessions, live, spent); v.Limit != LimitNone {
		return v
	}
	m.holdLocked(req.Client, req.Lease)
	v.Admitted = true
	return v
}

// hold takes a lease without checking any limit (a Redis store mirrors the
// leases the fleet granted).
func (m *Memory) hold(client, lease string) {
	m.mu.Lock()
	m.holdLocked(client, lease)
	m.mu.Unlock()
}

func (m *Memory) holdLocked(client, lease string) {
	held := m.leases[client]
	if held == nil {
		held = map[string]struct{}{}
		m.leases[client] = held
	}
	held[lease] = struct{}{}
}

// Release gives a lease back; releasing a lease not held does nothing.
func (m *Memory) Release(client, lease string) { m.release(client, lease) }

// release is Release reporting whether the lease was held.
func (m *Memory) release(client, lease string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	held := m.leases[client]
	if _, ok := held[lease]; !ok {
		return false
	}
	delete(held, lease)
	if len(held) == 0 {
		delete(m.leases, client)
	}
	return true
}

// holds reports whether the lease is held.
func (m *Memory) holds(client, lease string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.leases[client][lease]
	return ok
}

// leaseList is every lease held, by client.
func (m *Memory) leaseList() map[string][]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]string, len(m.leases))
	for client, held := range m.leases {
		ls := make([]string, 0, len(held))
		for l := range held {
			ls = append(ls, l)
		}
		out[client] = ls
	}
	return out
}

// Add counts u for client in the window starting at window. A window that
// starts after every window seen so far drops the usage of the windows
// before the previous one.
func (m *Memory) Add(client string, window time.Time, u Usage) {
	if u.IsZero() {
		return
	}
	k := keyOf(client, window)
	m.mu.Lock()
	defer m.mu.Unlock()
	keep, before, prune := m.windows.observe(k.start)
	if prune {
		for old := range m.usage {
			if old.start < before {
				delete(m.usage, old)
			}
		}
	}
	if !keep {
		return
	}
	sum := m.usage[k]
	sum.Add(u)
	m.usage[k] = sum
}

// Spent is the client's usage in the window.
func (m *Memory) Spent(client string, window time.Time) Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spentLocked(keyOf(client, window))
}

func (m *Memory) spentLocked(k windowKey) Usage {
	if !m.windows.kept(k.start) {
		return Usage{}
	}
	return m.usage[k]
}

// Status is the client's live sessions and usage in the window; it never
// fails.
func (m *Memory) Status(_ context.Context, client string, window time.Time) (int, Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.leases[client]), m.spentLocked(keyOf(client, window)), nil
}

// Close does nothing: a Memory has no goroutine and nothing to flush. The
// store keeps working after it.
func (m *Memory) Close() error { return nil }

var _ Store = (*Memory)(nil)
