package e2e

// GPT-Live sessions against the binary: every teardown row with audio
// streaming both ways (the caller's microphone at 50 messages a second, the
// mock's continuous output track at 10), the client-first handshake's
// refusals before any dial, and failover with the same session.start.

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

const livePath = "/v1/live/sessions"

// liveCall is a GPT-Live client with its microphone open: 20 ms of audio
// (tone or silence) 50 times a second until the call ends or stopMic.
type liveCall struct {
	*rtClient
	mu      sync.Mutex
	tone    bool
	stop    chan struct{}
	micDone chan struct{}
	sent    int // appends written
}

// dialLive opens a GPT-Live session through tether (session.start, then
// session.started) and opens the microphone.
func dialLive(t testing.TB, addr string, o clientOpts) *liveCall {
	t.Helper()
	o.Path = livePath
	c := &liveCall{rtClient: dialClient(t, addr, o), stop: make(chan struct{}), micDone: make(chan struct{})}
	c.Send(liveStart("gpt-live-1"))
	c.WaitEvent(live.SessionStarted, stepTimeout)
	go c.mic()
	t.Cleanup(c.stopMic)
	return c
}

func liveStart(model string) map[string]any {
	return map[string]any{"type": live.SessionStart, "event_id": "evt_start",
		"session": map[string]any{"model": model, "instructions": "Echo the caller."}}
}

// mic streams until stopMic or a failed write (the call ended).
func (c *liveCall) mic() {
	defer close(c.micDone)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	silence := base64.StdEncoding.EncodeToString(make([]byte, 960))
	tone := base64.StdEncoding.EncodeToString(testAudio(20))
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		audio := silence
		if c.tone {
			audio = tone
		}
		c.mu.Unlock()
		b, _ := json.Marshal(map[string]string{"type": live.InputAudioAppend, "audio": audio})
		if c.WriteOpen(ws.NewFrame(ws.OpText, true, b)) != nil {
			return
		}
		c.mu.Lock()
		c.sent++
		c.mu.Unlock()
	}
}

// speak streams a tone for d, then silence again.
func (c *liveCall) speak(d time.Duration) {
	c.mu.Lock()
	c.tone = true
	c.mu.Unlock()
	time.Sleep(d)
	c.mu.Lock()
	c.tone = false
	c.mu.Unlock()
}

func (c *liveCall) stopMic() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.micDone
}

// audioDeltas counts the output audio deltas received so far.
func (c *liveCall) audioDeltas() int {
	n := 0
	for _, ev := range c.Events() {
		if ev["type"] == live.OutputAudioDelta {
			n++
		}
	}
	return n
}

// streaming waits until audio has flowed both ways for a while: the
// faults below hit a call that is never quiet.
func (c *liveCall) streaming(t testing.TB) {
	t.Helper()
	testkit.WaitFor(t, stepTimeout, "audio both ways", func() bool {
		c.mu.Lock()
		sent := c.sent
		c.mu.Unlock()
		return sent >= 10 && c.audioDeltas() >= 3
	})
}

// sentUpstream lists the types of the text messages tether sent on
// upstream connection i, in order.
func sentUpstream(tp *tap, i int) []string {
	var out []string
	if tp.count() <= i {
		return nil
	}
	for _, f := range tp.conn(i).frames() {
		if f.Op != ws.OpText {
			continue
		}
		var ev struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(f.Payload, &ev) == nil {
			out = append(out, ev.Type)
		}
	}
	return out
}

// gotSessionClose reports whether tether sent session.close upstream, then
// nothing of the client's.
func gotSessionClose(tp *tap, i int) bool {
	types := sentUpstream(tp, i)
	for j, typ := range types {
		if typ == live.SessionClose {
			return j == len(types)-1
		}
	}
	return false
}

type liveRow struct {
	name   string
	vars   map[string]string
	mo     mock.Options
	act    func(t *testing.T, r *rig, c *liveCall) time.Time // does the deed, returns when
	reason string
	client int  // close code the client gets (0: none expected)
	up     int  // close code the upstream gets from tether (0: none)
	close  bool // tether sends session.close first
	within time.Duration
}

// liveHeartbeats are short heartbeats on both legs, for the rows that end
// by one.
var liveHeartbeats = map[string]string{"ClientHBInterval": "500ms", "ClientHBTimeout": "300ms",
	"UpstreamHBInterval": "500ms", "UpstreamHBTimeout": "300ms"}

// liveTeardownRows are the teardown table's rows on a GPT-Live call.
var liveTeardownRows = []liveRow{
	{name: "client_closed", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.stopMic()
		c.SendClose(1000, "bye")
		return time.Now()
	}, reason: "client_closed", client: 1000, up: 1000, close: true, within: 2 * time.Second},
	{name: "client_session_close", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.stopMic()
		c.Send(map[string]any{"type": live.SessionClose})
		return time.Now()
	}, reason: "upstream_closed", client: 1000, close: true, within: 2 * time.Second}, // the client's own session.close
	{name: "upstream_expired", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.fault("expire", nil)
		return time.Now()
	}, reason: "upstream_closed", client: 1000, within: 2 * time.Second},
	{name: "client_error", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.stopMic()
		c.Vanish()
		return time.Now()
	}, reason: "client_error", up: 1001, close: true, within: 3 * time.Second},
	{name: "upstream_error", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.fault("rst", nil)
		return time.Now()
	}, reason: "upstream_error", client: 1014, within: 2 * time.Second},
	{name: "client_heartbeat_timeout", vars: liveHeartbeats, act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.stopMic()
		c.SetAnswerPings(false)
		c.StopReading()
		return time.Now()
	}, reason: "client_heartbeat_timeout", up: 1001, close: true, within: 3 * time.Second},
	{name: "upstream_heartbeat_timeout", vars: liveHeartbeats, act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.fault("stall", nil)
		return time.Now()
	}, reason: "upstream_heartbeat_timeout", client: 4002, up: 1001, within: 2 * time.Second},
	{name: "idle_timeout", vars: map[string]string{"IdleTimeout": "1500ms"}, act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		// Silence streams both ways: no transcript, no turn.
		return time.Now()
	}, reason: "idle_timeout", client: 4000, up: 1000, close: true, within: 2500 * time.Millisecond},
	{name: "max_duration", vars: map[string]string{"MaxDuration": "2s"}, act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.speak(300 * time.Millisecond) // talking does not extend it
		return time.Now()
	}, reason: "max_duration", client: 4001, up: 1000, close: true, within: 3 * time.Second},
	{name: "frame_too_large", vars: map[string]string{"MaxFrameBytes": "65536"}, act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		big := `{"type":"session.input_audio.append","audio":"` + strings.Repeat("A", 70000) + `"}`
		_ = c.WriteOpen(ws.NewFrame(ws.OpText, true, []byte(big)))
		return time.Now()
	}, reason: "frame_too_large", client: 1009, up: 1000, close: true, within: 2 * time.Second},
	{name: "protocol_error", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		c.stopMic()
		_ = c.WriteRaw(ws.NewFrame(ws.OpText, true, []byte(`{"type":"x"}`))) // unmasked from a client
		return time.Now()
	}, reason: "protocol_error", client: 1002, up: 1000, close: true, within: 2 * time.Second},
	{name: "admin", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		rows, _ := r.p.sessions()
		if len(rows) != 1 || rows[0]["dialect"] != "live" {
			t.Fatalf("GET /sessions %v, want one live session", rows)
		}
		at := time.Now()
		if code, _ := r.p.del("/sessions/" + rows[0]["id"].(string)); code != http.StatusNoContent && code != http.StatusOK {
			t.Fatalf("DELETE: %d", code)
		}
		return at
	}, reason: "admin", client: 4003, up: 1000, close: true, within: 2 * time.Second},
	{name: "shutdown", act: func(t *testing.T, r *rig, c *liveCall) time.Time {
		r.p.signal(syscall.SIGTERM)
		return time.Now()
	}, reason: "shutdown", client: 1001, up: 1001, close: true, within: 3 * time.Second},
}

// TestLiveTeardown provokes every row of the teardown table on a GPT-Live
// call with audio streaming both ways.
func TestLiveTeardown(t *testing.T) {
	for _, row := range liveTeardownRows {
		t.Run(row.name, row.run)
	}
}

// run provokes the row on a fresh rig, in parallel with the other rows, once
// audio flows both ways, and checks both legs, the session.close sent
// upstream and the end.
func (row liveRow) run(t *testing.T) {
	t.Parallel()
	vars := map[string]string{}
	maps.Copy(vars, row.vars)
	r := newRig(t, vars, row.mo)
	c := dialLive(t, r.p.Listen, clientOpts{})
	c.speak(400 * time.Millisecond)
	c.streaming(t)
	at := row.act(t, r, c)
	var ci closeInfo
	if row.client != 0 {
		ci = c.WaitClose(row.within + stepTimeout)
		if ci.Code != row.client {
			t.Errorf("client got close %d (%s), want %d", ci.Code, ci.Reason, row.client)
		}
		took := ci.At.Sub(at)
		t.Logf("%s: client close %d %v after the trigger", row.name, ci.Code, took.Round(time.Millisecond))
		if took > row.within {
			t.Errorf("client close %v after the trigger, want within %v", took, row.within)
		}
	}
	if row.up != 0 {
		f := r.tap.waitClose(0, row.within+stepTimeout)
		if code, _ := f.CloseCode(); code != row.up {
			t.Errorf("upstream got close %d, want %d", code, row.up)
		}
	}
	if row.close != gotSessionClose(r.tap, 0) {
		t.Errorf("session.close sent upstream last: %v, want %v (tether sent %v)", !row.close, row.close, lastOf(sentUpstream(r.tap, 0), 5))
	}
	if row.name == "shutdown" {
		if code := r.p.waitExit(stepTimeout); code != 0 {
			t.Errorf("tether exited %d after SIGTERM", code)
		}
		return
	}
	r.p.assertSessionGone(row.reason, r.base)
	if v, _ := r.p.metric("tether_sessions_total", `dialect="live"`); v != 1 {
		t.Errorf(`tether_sessions_total{dialect="live"} = %v, want 1`, v)
	}
}

func lastOf(s []string, n int) []string { return s[max(0, len(s)-n):] }

// A whole call: echo with transcripts, usage, session.close answered by
// session.closed with the final usage, and what the user then sees in
// /metrics and the session-end log line.
func TestLiveCall(t *testing.T) {
	r := newRig(t, nil, mock.Options{UsageInterval: 300 * time.Millisecond})
	c := dialLive(t, r.p.Listen, clientOpts{})
	c.speak(600 * time.Millisecond)
	c.WaitEvent(live.OutputTranscriptDelta, stepTimeout)
	time.Sleep(700 * time.Millisecond)
	c.stopMic()
	c.Send(map[string]any{"type": live.SessionClose})
	ev := c.WaitEvent(live.SessionClosed, stepTimeout)
	if ev["reason"] != live.ReasonCloseRequested {
		t.Errorf("session.closed %v", ev)
	}
	final := ev["usage"].(map[string]any)["seconds"].(float64)
	if ci := c.WaitClose(stepTimeout); ci.Code != 1000 {
		t.Errorf("close %d, want 1000", ci.Code)
	}
	r.p.assertSessionGone("upstream_closed", r.base)
	got, _ := r.p.metric("tether_audio_seconds_total")
	if got != final {
		t.Errorf("tether_audio_seconds_total %v, want the final usage %v (cumulative, never summed)", got, final)
	}
	if n, _ := r.p.metric("tether_time_to_first_audio_seconds_count", `dialect="live"`); n < 1 {
		t.Errorf("no time to first answer measured from transcripts")
	}
	var line map[string]any
	testkit.WaitFor(t, stepTimeout, "the session-end log line", func() bool {
		for _, rec := range r.p.logRecords() {
			if rec["msg"] == "session ended" {
				line = rec
				return true
			}
		}
		return false
	})
	if line["dialect"] != "live" || line["audio_seconds"] != final || line["upstream_end_reason"] != live.ReasonCloseRequested {
		t.Errorf("session ended line: dialect %v audio_seconds %v upstream_end_reason %v", line["dialect"], line["audio_seconds"], line["upstream_end_reason"])
	}
}

// Refusals of the first message come as GPT-Live error events, before any
// upstream is dialed.
func TestLiveRefusedBeforeDial(t *testing.T) {
	r := newRig(t, map[string]string{"AllowedModels": `["gpt-live-1"]`}, mock.Options{})
	cases := []struct {
		name  string
		first map[string]any
		code  string
		close int
	}{
		{"model_not_allowed", liveStart("gpt-realtime"), live.CodeModelNotAllowed, 1008},
		{"not_session_start", map[string]any{"type": live.InputAudioAppend, "audio": "AAAA"}, live.CodeStartRequired, 1008},
	}
	for _, tc := range cases {
		c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		c.Send(tc.first)
		ev := c.WaitEvent(live.Error, stepTimeout)
		if e := ev["error"].(map[string]any); e["code"] != tc.code {
			t.Errorf("%s: error %v, want code %s", tc.name, e, tc.code)
		}
		if ci := c.WaitClose(stepTimeout); ci.Code != tc.close {
			t.Errorf("%s: close %d, want %d", tc.name, ci.Code, tc.close)
		}
	}
	if n := r.hs.count(); n != 0 {
		t.Errorf("the upstream was dialed %d times", n)
	}
	if v, _ := r.p.metric("tether_handshake_rejections_total", `reason="model_not_allowed"`); v != 1 {
		t.Errorf(`tether_handshake_rejections_total{reason="model_not_allowed"} = %v, want 1`, v)
	}
}

// The first upstream refuses session.start in-band; the second gets the
// same session.start, byte for byte, and serves the call.
func TestLiveFailoverSameStart(t *testing.T) {
	var refused []byte
	var mu sync.Mutex
	first := testkit.ServeWS(t, testkit.Options{KeepFrames: true}, func(c *testkit.Conn) {
		f, err := c.NextFrame(stepTimeout)
		if err != nil {
			return
		}
		mu.Lock()
		refused = f.Payload
		mu.Unlock()
		c.Send(map[string]any{"type": live.Error, "error": map[string]any{"type": "server_error", "code": "overloaded", "message": "try later"}})
		_, _ = c.NextFrame(stepTimeout)
	})
	m, secondURL := startMock(t, mock.Options{})
	second, secondURL := startTap(t, secondURL)
	p := startTether(t, "failover.yaml", map[string]string{"UpstreamURL": first.URL("/v1/realtime"), "SecondURL": secondURL})
	c := dialLive(t, p.Listen, clientOpts{})
	c.streaming(t)
	mu.Lock()
	defer mu.Unlock()
	if refused == nil {
		t.Fatal("the first upstream got nothing")
	}
	frames := second.conn(0).frames()
	if len(frames) == 0 || string(frames[0].Payload) != string(refused) {
		t.Errorf("second upstream's first message %q, want the session.start the first got: %q", frames[0].Payload, refused)
	}
	for _, ev := range c.Events() {
		if ev["type"] == live.Error {
			t.Errorf("the client saw the refusal: %v", ev)
		}
	}
	_ = m
}
