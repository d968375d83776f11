package e2e

// Budgets and fleet-wide limits against the binary: two tether processes
// share a real redis-server (started here on a loopback port); every call
// streams microphone audio while the limits act on it.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// redisServer is a redis-server this test started on a loopback port, which
// it may stop and start again on the same port.
type redisServer struct {
	t    testing.TB
	bin  string
	port string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	bin := testkit.Tool(t, "TETHER_REDIS", "redis-server", "TETHER_REQUIRE_REDIS",
		"the fleet tests share one Redis between two tether processes")
	_, port, _ := net.SplitHostPort(testkit.DeadAddr(t))
	r := &redisServer{t: t, bin: bin, port: port}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + r.port }

// start runs redis-server without persistence and waits for its PONG.
func (r *redisServer) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	testkit.WaitFor(r.t, startTimeout, "redis-server to answer PING", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+r.port, 200*time.Millisecond)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte("PING\r\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "+PONG")
	})
}

// stop stops redis-server (SIGTERM, then SIGKILL) and waits for it.
func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

// Tokens of the clients; the label after each is its identity.
const (
	aliceToken = "tok-alice-7f3a"
	bobToken   = "tok-bob-91c2"
)

// limitsVars are limits.yaml's placeholders: a tokens file for alice and
// bob, the upstream, a key prefix of the test's own, then vars.
func limitsVars(t testing.TB, upstreamURL string, vars map[string]string) map[string]string {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(aliceToken+" alice\n"+bobToken+" bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := map[string]string{"TokensFile": tokens, "UpstreamURL": upstreamURL, "MaxSessions": "0",
		"TokensPerDay": "0", "AudioPerDay": "0", "SessionAudio": "0", "Window": "24h", "BoundaryTimeout": "30s", "Backend": "memory", "RedisURL": "",
		"KeyPrefix": "e2e:" + strings.ReplaceAll(t.Name(), "/", "_") + ":", "LeaseTTL": "1s", "OnError": "fail_open"}
	for k, val := range vars {
		v[k] = val
	}
	return v
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// rtCall is a Realtime call whose microphone streams 20 ms of audio 50 times
// a second until the call ends.
type rtCall struct {
	*rtClient
	stop, done chan struct{}
}

// callRealtime opens a Realtime call through addr as the client of token,
// waits for session.created and opens the microphone.
func callRealtime(t testing.TB, addr, token string) *rtCall {
	t.Helper()
	c, err := tryCallRealtime(t, addr, token)
	if err != nil {
		t.Fatalf("call as %s: %v", token, err)
	}
	return c
}

func tryCallRealtime(t testing.TB, addr, token string) (*rtCall, error) {
	cl, err := tryDialClient(t, addr, clientOpts{Header: bearer(token)})
	if err != nil {
		return nil, err
	}
	cl.WaitEvent("session.created", stepTimeout)
	c := &rtCall{rtClient: cl, stop: make(chan struct{}), done: make(chan struct{})}
	go c.mic()
	t.Cleanup(c.hangUp)
	return c, nil
}

func (c *rtCall) mic() {
	defer close(c.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	b, _ := json.Marshal(map[string]string{"type": "input_audio_buffer.append",
		"audio": base64.StdEncoding.EncodeToString(testAudio(20))})
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		if c.WriteOpen(ws.NewFrame(ws.OpText, true, b)) != nil {
			return
		}
	}
}

// hangUp stops the microphone and closes the socket.
func (c *rtCall) hangUp() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.Close()
}

// turn commits the audio streamed so far, asks for an answer and reads to
// its response.done: it returns the answer's total tokens, or ok=false when
// the call closed first.
func (c *rtCall) turn() (tokens int, ok bool) {
	c.t.Helper()
	time.Sleep(150 * time.Millisecond) // the caller speaks
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.Send(map[string]any{"type": "response.create"})
	resp, alive := c.untilDone(c.t, nil)
	if !alive {
		return 0, false
	}
	if resp["status"] != "completed" {
		c.t.Fatalf("response.done status %v, want completed", resp["status"])
	}
	u, _ := resp["usage"].(map[string]any)
	total, _ := u["total_tokens"].(float64)
	return int(total), true
}

// budgetClose waits up to within for tether to close c (what) and requires
// 4004, the budget's close code; it returns the close frame.
func budgetClose(t testing.TB, c *testkit.Conn, within time.Duration, what string) *closeInfo {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(within):
		t.Fatalf("%s still open after %v: %s", what, within, c.CloseState())
	}
	cl := c.CloseReceived()
	if cl == nil || cl.Code != 4004 {
		t.Fatalf("%s: close %+v, want 4004", what, cl)
	}
	return cl
}

// refusal is a refused upgrade's answer.
type refusal struct {
	status int
	retry  int
	code   string
	limit  string
}

// tryUpgrade makes one Realtime upgrade as token's client; a 101 is closed
// at once.
func tryUpgrade(t testing.TB, addr, token string) refusal {
	t.Helper()
	a := rawUpgrade(t, addr, "/v1/realtime?model=gpt-realtime", map[string]string{"Authorization": "Bearer " + token})
	r := refusal{status: a.Status}
	r.retry, _ = strconv.Atoi(a.Header.Get("Retry-After"))
	var body struct {
		Error struct {
			Code  string `json:"code"`
			Limit string `json:"limit"`
		} `json:"error"`
	}
	_ = json.Unmarshal(a.Body, &body)
	r.code, r.limit = body.Error.Code, body.Error.Limit
	return r
}

// limitsOf reads GET /limits/{client}.
func limitsOf(t testing.TB, p *proc, client string) (sessions, local int, tokens float64) {
	t.Helper()
	status, body := p.get("/limits/" + client)
	if status != http.StatusOK {
		t.Fatalf("GET /limits/%s: %d %s", client, status, body)
	}
	var st struct {
		Sessions      int `json:"sessions"`
		LocalSessions int `json:"local_sessions"`
		Spent         struct {
			Tokens float64 `json:"tokens"`
		} `json:"spent"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /limits/%s: %v: %s", client, err, body)
	}
	return st.Sessions, st.LocalSessions, st.Spent.Tokens
}

// newFleet starts Redis and a mock whose upgrades are counted, and returns
// limits.yaml's vars (over vars) for tether replicas sharing both.
func newFleet(t *testing.T, vars map[string]string) (*redisServer, *handshakeLog, map[string]string) {
	t.Helper()
	rd := startRedis(t)
	hs := &handshakeLog{}
	_, murl := startMock(t, mock.Options{OnHandshake: hs.record})
	v := map[string]string{"Backend": "redis", "RedisURL": rd.url()}
	for k, val := range vars {
		v[k] = val
	}
	return rd, hs, limitsVars(t, murl, v)
}

// max_sessions holds across two replicas; a replica killed with SIGKILL
// frees its slots within the lease TTL.
func TestFleetSessionLimit(t *testing.T) {
	_, hs, vars := newFleet(t, map[string]string{"MaxSessions": "2", "LeaseTTL": "1s"})
	a := startTether(t, "limits.yaml", vars)
	b := startTether(t, "limits.yaml", vars)

	onA := callRealtime(t, a.Listen, aliceToken)
	onB := callRealtime(t, b.Listen, aliceToken)
	dials := hs.count()
	for name, p := range map[string]*proc{"a": a, "b": b} {
		r := tryUpgrade(t, p.Listen, aliceToken)
		if r.status != http.StatusTooManyRequests || r.code != "client_limit" || r.limit != "max_sessions" || r.retry < 1 {
			t.Errorf("third alice call on replica %s: %+v, want 429 client_limit naming max_sessions with Retry-After", name, r)
		}
	}
	if n := hs.count(); n != dials {
		t.Errorf("refused upgrades dialed the upstream %d times", n-dials)
	}
	// bob is another client; both of alice's calls still carry turns.
	bob := callRealtime(t, b.Listen, bobToken)
	for _, c := range []*rtCall{onA, onB, bob} {
		if _, ok := c.turn(); !ok {
			t.Fatalf("a call closed mid-turn: %s", c.CloseState())
		}
	}
	if n, local, _ := limitsOf(t, a, "alice"); n != 2 || local != 1 {
		t.Errorf("GET /limits/alice on a: sessions %d local %d, want 2 and 1", n, local)
	}

	// Replica b dies without a word: its lease outlives it by at most the TTL.
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	b.waitExit(exitTimeout)
	var third *rtCall
	testkit.WaitFor(t, 5*time.Second, "a slot for alice once b's lease expired", func() bool {
		c, err := tryCallRealtime(t, a.Listen, aliceToken)
		third = c
		return err == nil
	})
	if d := time.Since(killed); d > 1500*time.Millisecond {
		t.Errorf("the dead replica's slot came free %v after SIGKILL, want within the 1s lease TTL (+ a retry)", d)
	}
	if _, ok := third.turn(); !ok {
		t.Fatalf("the new call did not answer: %s", third.CloseState())
	}
	if _, ok := onA.turn(); !ok {
		t.Fatalf("the call on the live replica broke: %s", onA.CloseState())
	}
}

// A tokens budget shared by two replicas: the turn that crosses it
// completes, then the session ends with an error event and 4004; the next
// handshake on either replica gets 429 until the window resets.
func TestBudgetEndsAtAnswerBoundary(t *testing.T) {
	const budget, window = 120, 6 * time.Second
	_, hs, vars := newFleet(t, map[string]string{"TokensPerDay": strconv.Itoa(budget), "Window": window.String()})
	a := startTether(t, "limits.yaml", vars)
	b := startTether(t, "limits.yaml", vars)
	// Start at the beginning of a window, so the turns and the refusals
	// below fall in one.
	time.Sleep(time.Until(time.Now().Truncate(window).Add(window + 50*time.Millisecond)))
	windowEnd := time.Now().Truncate(window).Add(window)

	c := callRealtime(t, a.Listen, aliceToken)
	onB := callRealtime(t, b.Listen, aliceToken) // streams, asks nothing, spends nothing
	spent, turns := 0, 0
	for spent < budget {
		n, ok := c.turn()
		if !ok {
			t.Fatalf("closed after %d tokens (budget %d), before the turn that crosses it: %s", spent, budget, c.CloseState())
		}
		spent += n
		turns++
	}
	crossed := time.Now()
	ev, ok := c.NextEvent(stepTimeout)
	if !ok || ev["type"] != "error" {
		t.Fatalf("after the crossing turn: %v (%s), want an error event", ev, c.CloseState())
	}
	if e, _ := ev["error"].(map[string]any); e["code"] != "budget_exhausted" {
		t.Errorf("error event %v, want code budget_exhausted", ev)
	}
	if d := budgetClose(t, c.Conn, 2*time.Second, "the call whose turn crossed the budget").At.Sub(crossed); d > time.Second {
		t.Errorf("closed %v after the crossing response.done, want at once", d)
	}
	t.Logf("%d turns, %d tokens for a budget of %d", turns, spent, budget)
	// alice's call on b spends nothing itself: b reads her spend every
	// flush_interval (100ms) and ends it too.
	cl := budgetClose(t, onB.Conn, 2*time.Second, "alice's call on replica b")
	t.Logf("replica b closed alice's idle call %v after the crossing turn", cl.At.Sub(crossed))

	// Replica b learns of the spend from Redis once a's batch is flushed
	// (flush_interval 100ms).
	var r refusal
	testkit.WaitFor(t, 2*time.Second, "replica b to refuse alice", func() bool {
		r = tryUpgrade(t, b.Listen, aliceToken)
		return r.status == http.StatusTooManyRequests
	})
	t.Logf("replica b refused alice %v after her budget was spent on a", time.Since(crossed))
	dials := hs.count()
	if r.code != "budget_exhausted" || r.limit != "tokens_per_day" {
		t.Errorf("replica b: %+v, want budget_exhausted naming tokens_per_day", r)
	}
	if left := time.Until(windowEnd).Seconds(); r.retry < 1 || float64(r.retry) > math.Ceil(left)+1 {
		t.Errorf("Retry-After %d, want the %.1f s to the window's end", r.retry, left)
	}
	if r := tryUpgrade(t, a.Listen, aliceToken); r.status != http.StatusTooManyRequests {
		t.Errorf("replica a: %+v, want 429", r)
	}
	if n := hs.count(); n != dials {
		t.Errorf("refused upgrades dialed the upstream %d times", n-dials)
	}
	// bob's override lifts the tokens budget.
	bob := callRealtime(t, a.Listen, bobToken)
	if _, ok := bob.turn(); !ok {
		t.Fatalf("bob's call: %s", bob.CloseState())
	}
	if v, _ := a.metric("tether_sessions_total", `reason="budget_exhausted"`); v != 1 {
		t.Errorf(`tether_sessions_total{reason="budget_exhausted"} = %v, want 1`, v)
	}
	if v, _ := a.metric("tether_budget_spent", `client="alice"`, `kind="tokens"`); v < budget {
		t.Errorf("tether_budget_spent alice tokens = %v, want >= %d", v, budget)
	}
	// The next window admits alice again.
	time.Sleep(time.Until(windowEnd))
	testkit.WaitFor(t, 2*time.Second, "alice admitted in the next window", func() bool {
		return tryUpgrade(t, b.Listen, aliceToken).status == http.StatusSwitchingProtocols
	})
}

// Redis stops: fail_open keeps admitting by this replica's counts,
// fail_closed answers 503; Redis back, the counts converge.
func TestRedisOutage(t *testing.T) {
	rd, hs, vars := newFleet(t, map[string]string{"MaxSessions": "1", "LeaseTTL": "1s"})
	open := startTether(t, "limits.yaml", vars)
	vars["OnError"] = "fail_closed"
	closed := startTether(t, "limits.yaml", vars)

	rd.stop()
	c := callRealtime(t, open.Listen, aliceToken)
	tokens, ok := c.turn()
	if !ok {
		t.Fatalf("fail_open call during the outage: %s", c.CloseState())
	}
	if r := tryUpgrade(t, open.Listen, aliceToken); r.status != http.StatusTooManyRequests || r.limit != "max_sessions" {
		t.Errorf("second alice call on the fail_open replica during the outage: %+v, want 429 (local limit)", r)
	}
	dials := hs.count()
	start := time.Now()
	if r := tryUpgrade(t, closed.Listen, aliceToken); r.status != http.StatusServiceUnavailable || r.retry < 1 {
		t.Errorf("fail_closed replica during the outage: %+v, want 503 with Retry-After", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("fail_closed answered after %v: the store's 200ms timeout should bound it", d)
	}
	if n := hs.count(); n != dials {
		t.Errorf("the 503 dialed the upstream")
	}
	for _, p := range []*proc{open, closed} {
		if v, _ := p.metric("tether_state_errors_total", `op="admit"`); v < 1 {
			t.Errorf("tether_state_errors_total{op=admit} = %v on a replica that could not reach Redis", v)
		}
	}

	rd.start()
	// The fail_open replica's lease and usage reach Redis: the other
	// replica sees alice's session and tokens.
	testkit.WaitFor(t, 5*time.Second, "the counts to converge after Redis came back", func() bool {
		n, _, spent := limitsOf(t, closed, "alice")
		return n == 1 && spent == float64(tokens)
	})
	if r := tryUpgrade(t, closed.Listen, aliceToken); r.status != http.StatusTooManyRequests || r.limit != "max_sessions" {
		t.Errorf("alice on the fail_closed replica once Redis is back: %+v, want 429 (her call on the other replica counts)", r)
	}
	if _, ok := c.turn(); !ok {
		t.Fatalf("the call that lived through the outage: %s", c.CloseState())
	}
}

// A GPT-Live call over its audio budget is closed gracefully: session.close
// upstream, session.closed relayed, then the error event and 4004.
func TestLiveBudgetClosesGracefully(t *testing.T) {
	for _, tc := range []struct{ name, key, limit string }{
		{"session cap", "SessionAudio", ""},
		{"day budget", "AudioPerDay", "audio_seconds_per_day"},
	} {
		t.Run(tc.name, func(t *testing.T) { testLiveBudget(t, tc.key, tc.limit) })
	}
}

// testLiveBudget runs a GPT-Live call over a 3 s budget set by key; with a
// day budget (limit), the client's next handshake is refused naming it.
func testLiveBudget(t *testing.T, key, limit string) {
	// The mock's track runs 10x real time: a usage report every 100 ms
	// carries a second more.
	_, murl := startMock(t, mock.Options{LiveDeltaInterval: 10 * time.Millisecond, UsageInterval: 100 * time.Millisecond})
	tp, turl := startTap(t, murl)
	p := startTether(t, "limits.yaml", limitsVars(t, turl, map[string]string{key: "3"}))
	c := dialLive(t, p.Listen, clientOpts{Header: bearer(aliceToken)})
	var seen []string
	closedReason := ""
	for {
		ev, ok := c.NextEvent(stepTimeout)
		if !ok {
			break
		}
		typ, _ := ev["type"].(string)
		if typ == live.OutputAudioDelta || typ == live.UsageUpdated || strings.HasPrefix(typ, "session.output") {
			continue
		}
		seen = append(seen, typ)
		if typ == live.SessionClosed {
			closedReason, _ = ev["reason"].(string)
		}
		if typ == "error" {
			if e, _ := ev["error"].(map[string]any); e["code"] != "budget_exhausted" {
				t.Errorf("error event %v, want budget_exhausted", ev)
			}
		}
	}
	if cl := c.CloseReceived(); cl == nil || cl.Code != 4004 {
		t.Fatalf("close %+v, want 4004 (events %v)", cl, seen)
	}
	if n := len(seen); n < 2 || seen[n-2] != live.SessionClosed || seen[n-1] != "error" {
		t.Errorf("last events %v, want session.closed then the error event", seen)
	}
	if closedReason == "" {
		t.Error("session.closed without a reason")
	}
	if !gotSessionClose(tp, 0) {
		t.Errorf("tether did not send session.close upstream (sent %v)", sentUpstream(tp, 0))
	}
	if sec := c.sentAppends(); sec < 10 {
		t.Errorf("the microphone sent %d appends: the call should have streamed audio", sec)
	}
	if v, _ := p.metric("tether_sessions_total", `reason="budget_exhausted"`, `dialect="live"`); v != 1 {
		t.Errorf(`tether_sessions_total{reason="budget_exhausted",dialect="live"} = %v, want 1`, v)
	}
	if limit != "" {
		a := rawUpgrade(t, p.Listen, livePath, map[string]string{"Authorization": "Bearer " + aliceToken})
		if a.Status != http.StatusTooManyRequests || !strings.Contains(string(a.Body), `"limit":"`+limit+`"`) {
			t.Errorf("the next GPT-Live handshake: %d %s, want 429 naming %s", a.Status, a.Body, limit)
		}
	}
}

// A GPT-Live caller who never pauses keeps the answer from going quiet:
// the spent call ends at limits.boundary_timeout, not at max_duration.
func TestLiveBudgetCallerNeverPauses(t *testing.T) {
	_, murl := startMock(t, mock.Options{LiveDeltaInterval: 10 * time.Millisecond, UsageInterval: 100 * time.Millisecond})
	p := startTether(t, "limits.yaml", limitsVars(t, murl, map[string]string{"SessionAudio": "3", "BoundaryTimeout": "1s"}))
	c := dialLive(t, p.Listen, clientOpts{Header: bearer(aliceToken)})
	c.mu.Lock()
	c.tone = true // the caller talks and talks; the mock's echo never stops
	c.mu.Unlock()
	start := time.Now()
	budgetClose(t, c.Conn, 6*time.Second, "a call over its 3 s audio cap")
	// The cap is spent after about 300 ms of the mock's 10x timeline.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed %v after the call began, want within about 1 s of the cap (boundary_timeout 1s)", d)
	}
}

// overlapUpstream is a Realtime upstream that answers every response.create
// at once with response.created and 300 ms later with a response.done of
// 20 tokens, so out-of-band responses created every 200 ms always overlap.
func overlapUpstream(t *testing.T) string {
	t.Helper()
	srv := testkit.Serve(t, func(nc net.Conn) {
		defer nc.Close()
		if _, err := ws.Upgrade(nc); err != nil {
			return
		}
		var mu sync.Mutex
		send := func(v any) {
			b, _ := json.Marshal(v)
			mu.Lock()
			_ = wsutil.WriteServerText(nc, b)
			mu.Unlock()
		}
		send(map[string]any{"type": "session.created", "session": map[string]any{"id": "sess_overlap", "model": "gpt-realtime"}})
		for n := 1; ; {
			msg, op, err := wsutil.ReadClientData(nc)
			if err != nil || op == ws.OpClose {
				return
			}
			var ev struct{ Type string }
			if json.Unmarshal(msg, &ev) != nil || ev.Type != "response.create" {
				continue
			}
			id := "resp_" + strconv.Itoa(n)
			n++
			send(map[string]any{"type": "response.created", "response": map[string]any{"id": id, "status": "in_progress"}})
			time.AfterFunc(300*time.Millisecond, func() {
				send(map[string]any{"type": "response.done", "response": map[string]any{"id": id, "status": "completed",
					"usage": map[string]any{"total_tokens": 20, "input_tokens": 10, "output_tokens": 10}}})
			})
		}
	})
	return "ws://" + srv.Addr() + "/v1/realtime"
}

// Responses that always overlap keep a Realtime call from any answer
// boundary: once its budget is spent it ends at limits.boundary_timeout.
func TestBudgetOverlappingResponses(t *testing.T) {
	p := startTether(t, "limits.yaml", limitsVars(t, overlapUpstream(t), map[string]string{"TokensPerDay": "100",
		"BoundaryTimeout": "1s"}))
	c := dialClient(t, p.Listen, clientOpts{Header: bearer(aliceToken)})
	c.WaitEvent("session.created", stepTimeout)
	create, _ := json.Marshal(map[string]any{"type": "response.create", "response": map[string]any{"conversation": "none"}})
	stop := c.repeat(200*time.Millisecond, create)
	defer stop()
	budgetClose(t, c.Conn, 6*time.Second, "a call with overlapping answers")
	// 100 tokens are spent by the fifth answer (about 1.3 s in); a second
	// more of answers is 5 more at most.
	if _, _, spent := limitsOf(t, p, "alice"); spent > 220 {
		t.Errorf("spent %v tokens of a 100-token budget: the bound did not hold", spent)
	}
}

// The replica that ended a call for its budget refuses the client's next
// handshake at once, before its own usage reached Redis.
func TestBudgetRefusedAtOnceOnTheSameReplica(t *testing.T) {
	_, _, vars := newFleet(t, map[string]string{"TokensPerDay": "120"})
	a := startTether(t, "limits.yaml", vars)
	c := callRealtime(t, a.Listen, aliceToken)
	for spent := 0; spent < 120; {
		n, ok := c.turn()
		if !ok {
			t.Fatalf("closed after %d tokens: %s", spent, c.CloseState())
		}
		spent += n
	}
	budgetClose(t, c.Conn, 2*time.Second, "the call whose turn crossed the budget")
	if r := tryUpgrade(t, a.Listen, aliceToken); r.status != http.StatusTooManyRequests || r.limit != "tokens_per_day" {
		t.Errorf("reconnect on the same replica right after the 4004: %+v, want 429 naming tokens_per_day", r)
	}
}

// sentAppends is how many audio messages the microphone wrote.
func (c *liveCall) sentAppends() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

// BenchmarkAdmission measures a Realtime handshake (upgrade to
// session.created) through tether as a client with limits: the state kept
// in tether's memory, and in a Redis shared with another replica (one round
// trip per admission). The difference is what the shared store adds.
//
//	cd e2e && go test -run '^$' -bench BenchmarkAdmission -benchtime 300x .
func BenchmarkAdmission(b *testing.B) {
	rd := startRedis(b)
	_, murl := startMock(b, mock.Options{})
	for _, backend := range []string{"memory", "redis"} {
		p := startTether(b, "limits.yaml", limitsVars(b, murl, map[string]string{"Backend": backend,
			"RedisURL": rd.url(), "MaxSessions": "5", "TokensPerDay": "1000000000"}))
		b.Run(backend, func(b *testing.B) {
			var setup time.Duration
			for b.Loop() {
				t0 := time.Now()
				c := dialClient(b, p.Listen, clientOpts{Header: bearer(aliceToken)})
				c.WaitEvent("session.created", stepTimeout)
				setup += time.Since(t0)
				c.SendClose(1000, "")
				c.WaitClose(stepTimeout)
				c.Close()
			}
			b.ReportMetric(float64(setup.Microseconds())/float64(b.N), "us-to-created/op")
		})
	}
}
