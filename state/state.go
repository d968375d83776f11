// Package state keeps what tether's limits count per client identity: live
// sessions (as leases) and usage in fixed UTC windows. Memory keeps them in
// this process; Redis shares them across every replica of a fleet. Package
// limits decides what the counts mean; nothing here knows a price or a
// protocol.
//
// Nothing on the relay's hot path waits for a store: Admit is one round trip
// at the handshake, Add only queues (a Redis store flushes in batches) and
// Spent answers from what the store last learned.
package state

import (
	"context"
	"errors"
	"time"
)

// Usage is what a client spent in a window.
type Usage struct {
	Tokens       int64   `json:"tokens"`
	AudioSeconds float64 `json:"audio_seconds"`
	CostUSD      float64 `json:"cost_usd"`
}

// Add adds v to u.
func (u *Usage) Add(v Usage) {
	u.Tokens += v.Tokens
	u.AudioSeconds += v.AudioSeconds
	u.CostUSD += v.CostUSD
}

// IsZero reports whether u counts nothing.
func (u Usage) IsZero() bool { return u == Usage{} }

// Limit names the limit that refused an admission (the JSON body of a 429
// and GET /limits name it).
type Limit string

// The limits a store checks at admission.
const (
	LimitNone         Limit = ""
	LimitSessions     Limit = "max_sessions"
	LimitTokens       Limit = "tokens_per_day"
	LimitAudioSeconds Limit = "audio_seconds_per_day"
	LimitCost         Limit = "cost_per_day"
)

// Request asks to admit one session of Client.
type Request struct {
	Client string
	// Lease names the session's lease (unique across the fleet).
	Lease string
	// MaxSessions bounds the client's live sessions (0 = unlimited).
	MaxSessions int
	// Budget bounds the client's usage in Window: a field of 0 is unlimited;
	// a client whose usage has reached a bound is refused.
	Budget Usage
	// Window is the start of the usage window (UTC).
	Window time.Time
}

// Verdict is a store's answer to Admit.
type Verdict struct {
	// Admitted: the lease is taken; the caller must Release it.
	Admitted bool
	// Limit is the limit that refused the session (LimitNone when admitted).
	Limit Limit
	// Sessions is the client's live sessions before this one.
	Sessions int
	// Spent is the client's usage in the window.
	Spent Usage
	// Local: the shared store did not answer and the verdict counts only
	// this replica (fail_open).
	Local bool
}

// Store counts sessions and usage per client.
type Store interface {
	// Admit checks req's limits and, when they allow it, takes the lease,
	// atomically. An error means the store could not decide (fail_closed);
	// no lease is held then.
	Admit(ctx context.Context, req Request) (Verdict, error)
	// Release gives a lease back. It does not block.
	Release(client, lease string)
	// Add counts usage of client in the window starting at window. It does
	// not block.
	Add(client string, window time.Time, u Usage)
	// Spent is the client's usage in the window as this replica knows it:
	// the fleet's total when it last heard it, plus what it has not yet
	// sent. It does not block.
	Spent(client string, window time.Time) Usage
	// Status reads the client's live sessions and usage in the window (GET
	// /limits/{client}).
	Status(ctx context.Context, client string, window time.Time) (sessions int, spent Usage, err error)
	// Close flushes what is queued (bounded in time) and stops the store's
	// goroutines.
	Close() error
}

// ErrUnavailable is returned by a shared store that could not be reached
// and whose policy is fail_closed.
var ErrUnavailable = errors.New("state store unavailable")

// WindowStart is the start of the window of length d that holds t, in UTC:
// a 24h window starts at midnight UTC (d must be > 0).
func WindowStart(t time.Time, d time.Duration) time.Time {
	return t.UTC().Truncate(d)
}
