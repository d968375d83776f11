package state

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// admissionCase is one request against a client that holds two leases and
// has spent admissionSpent in admissionWindow.
type admissionCase struct {
	name   string
	max    int
	budget Usage
	other  bool // ask about the next window (nothing spent there)
	want   Limit
}

var (
	admissionWindow = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	admissionSpent  = Usage{Tokens: 100, AudioSeconds: 10, CostUSD: 1}
)

var admissionCases = []admissionCase{
	{name: "no limits", want: LimitNone},
	{name: "sessions below max", max: 3, want: LimitNone},
	{name: "sessions at max", max: 2, want: LimitSessions},
	{name: "sessions above max", max: 1, want: LimitSessions},
	{name: "tokens reached", budget: Usage{Tokens: 100}, want: LimitTokens},
	{name: "tokens below", budget: Usage{Tokens: 101}, want: LimitNone},
	{name: "audio reached", budget: Usage{AudioSeconds: 10}, want: LimitAudioSeconds},
	{name: "audio below", budget: Usage{AudioSeconds: 10.5}, want: LimitNone},
	{name: "cost reached", budget: Usage{CostUSD: 1}, want: LimitCost},
	{name: "cost exceeded", budget: Usage{CostUSD: 0.5}, want: LimitCost},
	{name: "cost below", budget: Usage{CostUSD: 1.01}, want: LimitNone},
	{name: "every budget reached: tokens first", budget: Usage{Tokens: 50, AudioSeconds: 5, CostUSD: 0.5}, want: LimitTokens},
	{name: "audio and cost reached: audio first", budget: Usage{Tokens: 1000, AudioSeconds: 5, CostUSD: 0.5}, want: LimitAudioSeconds},
	{name: "budget before sessions", max: 1, budget: Usage{CostUSD: 1}, want: LimitCost},
	{name: "budgets below, sessions at max", max: 2, budget: Usage{Tokens: 1000, AudioSeconds: 100, CostUSD: 10}, want: LimitSessions},
	{name: "other window's budget is fresh", budget: Usage{Tokens: 100, AudioSeconds: 10, CostUSD: 1}, other: true, want: LimitNone},
	{name: "other window, sessions still count", max: 2, other: true, want: LimitSessions},
}

// testAdmission runs admissionCases on s. seed counts admissionSpent and
// returns when s sees it; settle waits until s counts two live sessions
// again after a Release.
func testAdmission(t *testing.T, s Store, seed func(), settle func()) {
	t.Helper()
	ctx := context.Background()
	const client = "alice"
	seed()
	for _, l := range []string{"held-1", "held-2"} {
		if v, err := s.Admit(ctx, Request{Client: client, Lease: l, Window: admissionWindow}); err != nil || !v.Admitted {
			t.Fatalf("admit %s: %+v, %v", l, v, err)
		}
	}
	for i, c := range admissionCases {
		t.Run(c.name, func(t *testing.T) {
			window, spent := admissionWindow, admissionSpent
			if c.other {
				window, spent = admissionWindow.Add(24*time.Hour), Usage{}
			}
			lease := fmt.Sprintf("case-%d", i)
			v, err := s.Admit(ctx, Request{Client: client, Lease: lease, MaxSessions: c.max, Budget: c.budget, Window: window})
			if err != nil {
				t.Fatal(err)
			}
			if v.Admitted != (c.want == LimitNone) || v.Limit != c.want || v.Sessions != 2 || v.Spent != spent || v.Local {
				t.Errorf("verdict %+v, want limit %q, 2 sessions, spent %+v", v, c.want, spent)
			}
			if v.Admitted {
				s.Release(client, lease)
				settle()
			}
		})
	}
}
