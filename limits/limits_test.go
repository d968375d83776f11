package limits

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/state"
)

// transport records what a session's teardown sent.
type transport struct {
	mu     sync.Mutex
	client lifecycle.CloseFrame
	closed bool
}

func (*transport) Ping(lifecycle.Leg) error { return nil }
func (*transport) Liveness(lifecycle.Leg) (heard, writing time.Time) {
	return time.Now(), time.Time{}
}
func (*transport) BeginClose([]byte) error { return nil }
func (t *transport) Shutdown(client, _ lifecycle.CloseFrame) [2]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.client, t.closed = client, true
	return [2]bool{true, true}
}

func (t *transport) ended() (lifecycle.CloseFrame, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.client, t.closed
}

// rig is an Enforcer on a memory store behind a manager, with a fixed clock.
type rig struct {
	e   *Enforcer
	mgr *lifecycle.Manager
	now time.Time
}

func newRig(t *testing.T, c Config) *rig {
	t.Helper()
	c.Window = 24 * time.Hour
	r := &rig{now: time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)}
	r.e = New(Options{Limits: c, Store: state.NewMemory(), Now: func() time.Time { return r.now },
		Pricing: Pricing{"gpt-realtime": {InputText: 4, OutputText: 16}}})
	r.mgr = lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{r.e}})
	return r
}

// open admits and starts a Realtime session of identity.
func (r *rig) open(t *testing.T, identity string) (*lifecycle.Session, *transport) {
	t.Helper()
	release, refused := r.e.Admit(context.Background(), identity)
	if refused != nil {
		t.Fatalf("%s refused: %+v", identity, refused)
	}
	s := r.mgr.Open(lifecycle.Info{Identity: identity, Model: "gpt-realtime", Dialect: realtime.Dialect{}})
	s.ReleaseOnEnd(release)
	tr := &transport{}
	s.Start(tr)
	t.Cleanup(func() { r.mgr.Finished(s, release) })
	return s, tr
}

func answer(s *lifecycle.Session, id string, input, output int) {
	s.Captured([]byte(realtime.ResponseCreated), []byte(`{"type":"response.created","response":{"id":"`+id+`"}}`))
	s.Captured([]byte(realtime.ResponseDone), []byte(`{"type":"response.done","response":{"id":"`+id+
		`","status":"completed","usage":{"total_tokens":`+strconv.Itoa(input+output)+`,"input_tokens":`+strconv.Itoa(input)+
		`,"output_tokens":`+strconv.Itoa(output)+`}}}`))
}

func TestAdmitSessions(t *testing.T) {
	r := newRig(t, Config{MaxSessions: 1, Overrides: map[string]Config{"bob": {MaxSessions: 2}}})
	release, refused := r.e.Admit(context.Background(), "alice")
	if refused != nil {
		t.Fatal(refused)
	}
	_, refused = r.e.Admit(context.Background(), "alice")
	if refused == nil || refused.Limit != state.LimitSessions || refused.RetryAfter != time.Second {
		t.Fatalf("second alice session: %+v, want max_sessions with 1s", refused)
	}
	for range 2 {
		if _, refused := r.e.Admit(context.Background(), "bob"); refused != nil {
			t.Fatalf("bob's override allows 2: %+v", refused)
		}
	}
	release()
	release() // idempotent
	if _, refused := r.e.Admit(context.Background(), "alice"); refused != nil {
		t.Fatalf("alice after release: %+v", refused)
	}
}

// The answer that crosses the client's budget is heard; then every call of
// that client ends at its own next boundary, with the notice and 4004, and
// a new call is refused until the window's end. Other clients carry on.
func TestBudgetEndsEveryCallOfTheClient(t *testing.T) {
	r := newRig(t, Config{TokensPerDay: 100, ClientMetrics: true, Overrides: map[string]Config{"bob": {}}})
	a1, t1 := r.open(t, "alice")
	a2, t2 := r.open(t, "alice")
	bob, tb := r.open(t, "bob")
	a2.Captured([]byte(realtime.ResponseCreated), []byte(`{"type":"response.created","response":{"id":"r2"}}`))
	answer(a1, "r1", 40, 30)
	if a1.Ended() {
		t.Fatal("ended under the budget")
	}
	answer(a1, "r3", 20, 20) // 110 >= 100
	cf, ok := t1.ended()
	if !ok || cf.Code != 4004 || !strings.Contains(cf.Notice, `"code":"budget_exhausted"`) {
		t.Fatalf("crossing call: closed %v with %+v, want 4004 after a budget_exhausted notice", ok, cf)
	}
	if a1.Summary().Reason != lifecycle.ReasonBudgetExhausted {
		t.Errorf("reason %q", a1.Summary().Reason)
	}
	if _, ok := t2.ended(); ok {
		t.Fatal("alice's other call was cut mid-answer")
	}
	a2.Captured([]byte(realtime.ResponseDone), []byte(`{"type":"response.done","response":{"id":"r2","status":"completed"}}`))
	testkit.WaitFor(t, time.Second, "alice's other call to close after its answer", func() bool {
		cf, ok := t2.ended()
		return ok && cf.Code == 4004
	})
	answer(bob, "rb", 500, 500)
	if _, ok := tb.ended(); ok {
		t.Fatal("bob's call ended by alice's budget")
	}
	_, refused := r.e.Admit(context.Background(), "alice")
	if refused == nil || refused.Limit != state.LimitTokens || refused.RetryAfter != 6*time.Hour {
		t.Fatalf("alice's next call: %+v, want tokens_per_day with 6h to midnight UTC", refused)
	}
	st, err := r.e.Status(context.Background(), "alice")
	if err != nil || st.Spent.Tokens != 110 || st.Exhausted != state.LimitTokens || st.Sessions != 0 {
		t.Errorf("status %+v %v", st, err)
	}
	// bob: 1000 tokens at $4/$16 per 1M.
	if sp := r.e.Spending(); len(sp) != 2 || sp[1].Client != "bob" || sp[1].Spent.CostUSD != 0.01 {
		t.Errorf("spending %+v", sp)
	}
	r.now = r.now.Add(6 * time.Hour)
	if _, refused := r.e.Admit(context.Background(), "alice"); refused != nil {
		t.Errorf("the next window: %+v", refused)
	}
}

func TestSessionCap(t *testing.T) {
	r := newRig(t, Config{MaxSessionTokens: 50})
	s1, t1 := r.open(t, "alice")
	s2, t2 := r.open(t, "alice")
	answer(s1, "r1", 30, 30)
	if cf, ok := t1.ended(); !ok || cf.Code != 4004 {
		t.Fatalf("over its cap: %v %+v", ok, cf)
	}
	answer(s2, "r2", 10, 10)
	if _, ok := t2.ended(); ok {
		t.Fatal("a per-session cap ended another session")
	}
}
