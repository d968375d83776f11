package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

// liveUpstream is a scripted GPT-Live backend: script runs per connection.
type liveUpstream struct {
	srv   *testkit.Server
	conns atomic.Int64
}

func newLiveUpstream(t *testing.T, script func(t *testing.T, c *testkit.Conn)) *liveUpstream {
	u := &liveUpstream{}
	u.srv = testkit.ServeWS(t, testkit.Options{}, func(c *testkit.Conn) {
		u.conns.Add(1)
		script(t, c)
	})
	return u
}

// starts answers session.start with session.started, then runs then.
func starts(then func(t *testing.T, c *testkit.Conn)) func(t *testing.T, c *testkit.Conn) {
	return func(t *testing.T, c *testkit.Conn) {
		ev, ok := c.NextEvent(5 * time.Second)
		if !ok || ev["type"] != live.SessionStart {
			t.Errorf("upstream's first message %v, want session.start", ev)
			return
		}
		c.Send(map[string]any{"type": live.SessionStarted, "session": map[string]any{"id": "live_test1", "model": "gpt-live-1"}})
		if then != nil {
			then(t, c)
		}
	}
}

type liveEnv struct {
	url string
	mgr *lifecycle.Manager
}

func newLiveEnv(t *testing.T, lo lifecycle.Options, ups ...*liveUpstream) *liveEnv {
	t.Helper()
	var list []upstreams.Config
	for i, u := range ups {
		list = append(list, upstreams.Config{Name: string(rune('a' + i)), Type: upstreams.KindMock,
			URL: u.srv.URL("/v1/realtime"), LiveURL: u.srv.URL("/v1/live/sessions"), AllowedModels: []string{"gpt-live-1"}})
	}
	d, err := upstreams.NewDialer(list)
	if err != nil {
		t.Fatal(err)
	}
	mgr := lifecycle.NewManager(lo)
	h := NewHandler(mgr, d, HandlerOptions{HandshakeTimeout: 2 * time.Second, Relay: testRelayOptions()})
	srv := httptest.NewServer(http.HandlerFunc(h.ServeLive))
	t.Cleanup(func() {
		mgr.CloseAll(lifecycle.ReasonShutdown)
		mgr.Wait()
		srv.Close()
	})
	return &liveEnv{url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/live/sessions", mgr: mgr}
}

// started dials env, starts a gpt-live-1 session and returns the client and
// the session.
func (e *liveEnv) started(t *testing.T) (*testkit.Conn, *lifecycle.Session) {
	t.Helper()
	c := testkit.Dial(t, e.url, testkit.Options{})
	c.Send(startMsg("gpt-live-1"))
	c.WaitEvent(live.SessionStarted, 5*time.Second)
	return c, e.mgr.Get(e.mgr.Snapshots()[0].ID)
}

// closeTimeout is testLifecycle with the given close_timeout.
func closeTimeout(d time.Duration) lifecycle.Options {
	lo := testLifecycle()
	lo.CloseTimeout = d
	return lo
}

func startMsg(model string) map[string]any {
	return map[string]any{"type": live.SessionStart, "event_id": "evt_start",
		"session": map[string]any{"model": model, "instructions": "be brief"}}
}

func TestLiveClientFirstHoldsEarlyAudio(t *testing.T) {
	got := make(chan []string, 1)
	up := newLiveUpstream(t, func(t *testing.T, c *testkit.Conn) {
		ev, _ := c.NextEvent(5 * time.Second)
		if ev["type"] != live.SessionStart || ev["session"].(map[string]any)["instructions"] != "be brief" {
			t.Errorf("upstream got %v, want the client's session.start unchanged", ev)
		}
		time.Sleep(100 * time.Millisecond) // the client's audio arrives meanwhile and is held
		c.Send(map[string]any{"type": live.SessionStarted, "session": map[string]any{"id": "live_test1"}})
		var seq []string
		for range 3 {
			ev, ok := c.NextEvent(5 * time.Second)
			if !ok {
				break
			}
			seq = append(seq, ev["audio"].(string))
		}
		got <- seq
		c.Send(map[string]any{"type": live.OutputAudioDelta, "delta": "AAAA"})
		c.NextEvent(5 * time.Second)
	})
	env := newLiveEnv(t, testLifecycle(), up)
	c := testkit.Dial(t, env.url, testkit.Options{})
	time.Sleep(50 * time.Millisecond)
	if n := up.conns.Load(); n != 0 {
		t.Fatalf("upstream dialed %d times before session.start", n)
	}
	c.Send(startMsg("gpt-live-1"))
	for _, a := range []string{"AAA1", "AAA2", "AAA3"} {
		c.Send(map[string]any{"type": live.InputAudioAppend, "audio": a})
	}
	ev := c.WaitEvent(live.SessionStarted, 5*time.Second)
	if ev["session"].(map[string]any)["id"] != "live_test1" {
		t.Errorf("session.started %v", ev)
	}
	if seq := recvWithin(t, got); strings.Join(seq, ",") != "AAA1,AAA2,AAA3" {
		t.Errorf("upstream got held audio %v, want AAA1,AAA2,AAA3 in order after session.started", seq)
	}
	c.WaitEvent(live.OutputAudioDelta, 5*time.Second)
	snaps := env.mgr.Snapshots()
	if len(snaps) != 1 || snaps[0].Dialect != "live" || snaps[0].Conversation != "live_test1" {
		t.Errorf("GET /sessions rows %+v, want one live session live_test1", snaps)
	}
}

func TestLiveFailoverSameStart(t *testing.T) {
	first := newLiveUpstream(t, func(t *testing.T, c *testkit.Conn) {
		c.NextEvent(5 * time.Second)
		c.Send(map[string]any{"type": live.Error, "error": map[string]any{"type": "server_error", "code": "overloaded", "message": "busy"}})
		c.NextEvent(5 * time.Second)
	})
	var second []byte
	secondUp := newLiveUpstream(t, func(t *testing.T, c *testkit.Conn) {
		ev, _ := c.NextEvent(5 * time.Second)
		second, _ = json.Marshal(ev)
		c.Send(map[string]any{"type": live.SessionStarted, "session": map[string]any{"id": "live_two"}})
		c.NextEvent(5 * time.Second)
	})
	env := newLiveEnv(t, testLifecycle(), first, secondUp)
	c := testkit.Dial(t, env.url, testkit.Options{})
	c.Send(startMsg("gpt-live-1"))
	ev := c.WaitEvent(live.SessionStarted, 5*time.Second)
	if ev["session"].(map[string]any)["id"] != "live_two" {
		t.Errorf("session.started %v, want the second upstream's", ev)
	}
	want, _ := json.Marshal(startMsg("gpt-live-1"))
	if string(second) != string(want) {
		t.Errorf("second upstream got %s, want %s", second, want)
	}
	for _, e := range c.Events() {
		if e["type"] == live.Error {
			t.Errorf("the client saw the first upstream's refusal: %v", e)
		}
	}
}

func TestLiveRefusals(t *testing.T) {
	cases := []struct {
		name string
		send func(c *testkit.Conn)
		code string
		cc   int
	}{
		{"model not allowed", func(c *testkit.Conn) { c.Send(startMsg("gpt-realtime")) }, live.CodeModelNotAllowed, 1008},
		{"not session.start", func(c *testkit.Conn) {
			c.Send(map[string]any{"type": live.InputAudioAppend, "audio": "AAAA"})
		}, live.CodeStartRequired, 1008},
		{"no session.start in time", func(*testkit.Conn) {}, live.CodeStartTimeout, 1008},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newLiveUpstream(t, starts(nil))
			env := newLiveEnv(t, testLifecycle(), up)
			c := testkit.Dial(t, env.url, testkit.Options{})
			tc.send(c)
			ev := c.WaitEvent(live.Error, 5*time.Second)
			if e := ev["error"].(map[string]any); e["code"] != tc.code {
				t.Errorf("error %v, want code %s", e, tc.code)
			}
			if ci := c.WaitClose(5 * time.Second); ci.Code != tc.cc {
				t.Errorf("close %d, want %d", ci.Code, tc.cc)
			}
			if n := up.conns.Load(); n != 0 {
				t.Errorf("upstream dialed %d times", n)
			}
		})
	}
}

func TestLiveNoUpstreamStarts(t *testing.T) {
	up := newLiveUpstream(t, func(t *testing.T, c *testkit.Conn) {
		c.NextEvent(5 * time.Second)
		c.SendClose(1011, "nope")
	})
	env := newLiveEnv(t, testLifecycle(), up)
	c := testkit.Dial(t, env.url, testkit.Options{})
	c.Send(startMsg("gpt-live-1"))
	ev := c.WaitEvent(live.Error, 5*time.Second)
	if e := ev["error"].(map[string]any); e["code"] != live.CodeUpstreamUnavailable || e["type"] != live.ErrTypeServer ||
		e["client_event_id"] != "evt_start" {
		t.Errorf("error %v, want server_error upstream_unavailable for evt_start", e)
	}
	if ci := c.WaitClose(5 * time.Second); ci.Code != 1013 {
		t.Errorf("close %d, want 1013", ci.Code)
	}
}

// A client that closes gets its upstream session closed with session.close;
// session.closed reaches it before the close frame.
func TestLiveGracefulCloseOnClientClose(t *testing.T) {
	gotClose := make(chan bool, 1)
	up := newLiveUpstream(t, starts(func(t *testing.T, c *testkit.Conn) {
		for {
			ev, ok := c.NextEvent(5 * time.Second)
			if !ok {
				gotClose <- false
				return
			}
			if ev["type"] == live.SessionClose {
				gotClose <- true
				c.Send(map[string]any{"type": live.SessionClosed, "reason": live.ReasonCloseRequested, "usage": map[string]any{"seconds": 12.5}})
				awaitEnd(c) // the test may end first: not the script's to fail
				return
			}
		}
	}))
	env := newLiveEnv(t, closeTimeout(2*time.Second), up)
	c, s := env.started(t)
	c.SendClose(1000, "bye")
	if !recvWithin(t, gotClose) {
		t.Fatal("upstream got no session.close")
	}
	ci := c.WaitClose(5 * time.Second)
	if ci.Code != 1000 {
		t.Errorf("client close %d, want its own 1000 echoed", ci.Code)
	}
	c.WaitEvent(live.SessionClosed, time.Second)
	testkit.WaitFor(t, 5*time.Second, "the session to end", func() bool { return env.mgr.Get(s.ID) == nil })
}

// Whatever ends a session (here: admin) goes through session.close; an
// upstream that never answers it is closed after close_timeout.
func TestLiveGracefulCloseBounded(t *testing.T) {
	for _, answer := range []bool{true, false} {
		t.Run(map[bool]string{true: "answered", false: "unanswered"}[answer], func(t *testing.T) {
			closes := make(chan time.Time, 1)
			up := newLiveUpstream(t, starts(func(t *testing.T, c *testkit.Conn) {
				c.WaitEvent(live.SessionClose, 5*time.Second)
				closes <- time.Now()
				if answer {
					c.Send(map[string]any{"type": live.SessionClosed, "reason": live.ReasonCloseRequested, "usage": map[string]any{"seconds": 3}})
				}
				awaitEnd(c) // the test may end first: not the script's to fail
			}))
			env := newLiveEnv(t, closeTimeout(500*time.Millisecond), up)
			c, s := env.started(t)
			s.End(lifecycle.ReasonAdmin)
			var sent time.Time
			select {
			case sent = <-closes:
			case <-time.After(5 * time.Second):
				t.Fatal("upstream got no session.close")
			}
			ci := c.WaitClose(5 * time.Second)
			if ci.Code != 4003 {
				t.Errorf("client close %d, want 4003", ci.Code)
			}
			took := ci.At.Sub(sent)
			if answer && took > 300*time.Millisecond {
				t.Errorf("close %v after session.close although session.closed came at once", took)
			}
			if !answer && (took < 400*time.Millisecond || took > 1500*time.Millisecond) {
				t.Errorf("close %v after an unanswered session.close, want about close_timeout (500ms)", took)
			}
			testkit.WaitFor(t, 5*time.Second, "the session to end", func() bool { return env.mgr.Len() == 0 })
			sum := s.Summary()
			if answer && (sum.AudioSeconds != 3 || sum.UpstreamEndReason != live.ReasonCloseRequested) {
				t.Errorf("summary audio %v end %q, want 3 and close_requested", sum.AudioSeconds, sum.UpstreamEndReason)
			}
		})
	}
}

// An upstream session.closed (expired) is relayed and ends the session.
func TestLiveUpstreamEnds(t *testing.T) {
	up := newLiveUpstream(t, starts(func(t *testing.T, c *testkit.Conn) {
		c.WaitEvent(live.InputAudioAppend, 5*time.Second)
		c.Send(map[string]any{"type": live.UsageUpdated, "usage": map[string]any{"seconds": 5}})
		c.Send(map[string]any{"type": live.SessionClosed, "reason": live.ReasonExpired, "usage": map[string]any{"seconds": 9.5}})
		c.SendClose(1000, "")
		awaitEnd(c) // the test may end first: not the script's to fail
	}))
	env := newLiveEnv(t, testLifecycle(), up)
	c, s := env.started(t)
	c.Send(map[string]any{"type": live.InputAudioAppend, "audio": "AAAA"})
	ev := c.WaitEvent(live.SessionClosed, 5*time.Second)
	if ev["reason"] != live.ReasonExpired {
		t.Errorf("session.closed %v", ev)
	}
	if ci := c.WaitClose(5 * time.Second); ci.Code != 1000 {
		t.Errorf("client close %d, want the upstream's 1000", ci.Code)
	}
	testkit.WaitFor(t, 5*time.Second, "the session to end", func() bool { return env.mgr.Len() == 0 })
	sum := s.Summary()
	if sum.Reason != lifecycle.ReasonUpstreamClosed || sum.UpstreamEndReason != live.ReasonExpired || sum.AudioSeconds != 9.5 {
		t.Errorf("summary reason %s end %q audio %v, want upstream_closed, expired, 9.5 (the latest, not a sum)",
			sum.Reason, sum.UpstreamEndReason, sum.AudioSeconds)
	}
}

// A client that vanishes still gets its upstream session closed.
func TestLiveClientVanishes(t *testing.T) {
	gotClose := make(chan bool, 1)
	up := newLiveUpstream(t, starts(func(t *testing.T, c *testkit.Conn) {
		ev, ok := c.NextEvent(5 * time.Second)
		gotClose <- ok && ev["type"] == live.SessionClose
		c.Send(map[string]any{"type": live.SessionClosed, "reason": live.ReasonCloseRequested})
		awaitEnd(c) // the test may end first: not the script's to fail
	}))
	env := newLiveEnv(t, closeTimeout(time.Second), up)
	c, s := env.started(t)
	c.Vanish()
	if !recvWithin(t, gotClose) {
		t.Fatal("upstream got no session.close after the client vanished")
	}
	testkit.WaitFor(t, 5*time.Second, "the session to end", func() bool { return env.mgr.Len() == 0 })
	if sum := s.Summary(); sum.Reason != lifecycle.ReasonClientError || sum.CloseUp.Code != 1001 {
		t.Errorf("reason %s, upstream close %d; want client_error, 1001", sum.Reason, sum.CloseUp.Code)
	}
}

// recvWithin receives from ch, failing the test after 5 s (a scripted
// upstream that failed stops without sending).
func recvWithin[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	return testkit.Recv(t, ch, 5*time.Second, "the scripted upstream's report")
}

// awaitEnd waits (up to 5 s) for a scripted upstream's connection to end.
func awaitEnd(c *testkit.Conn) {
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
	}
}
