package e2e

// Regressions of GPT-Live faults a hostile review found (since fixed): each
// test drives the binary the way the reproduction did and asserts what a
// user sees now. Scripted upstreams (testkit.ServeWS) stand in where the
// mock cannot misbehave the way the fault needs.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// lfKey is the scripted upstream's key. It is not key-shaped (no sk-
// prefix): only tether's knowing it by value can redact it.
const lfKey = "lf-canary-5b8e1d7c9a3f0e42"

// liveScripted starts a WebSocket upstream running script on each
// connection and tether in front of it (live_faults.yaml: an openai-type
// upstream with key lfKey), vars over the fixture defaults.
func liveScripted(t *testing.T, vars map[string]string, script func(c *testkit.Conn)) *proc {
	t.Helper()
	srv := testkit.ServeWS(t, testkit.Options{KeepFrames: true, Timeout: stepTimeout}, script)
	v := map[string]string{"UpstreamURL": srv.URL("/v1/realtime")}
	maps.Copy(v, vars)
	return startTether(t, "live_faults.yaml", v, fixtureDefaults["APIKeyEnv"]+"="+lfKey)
}

// upAwaitStart reads the upstream leg until the client's session.start.
func upAwaitStart(c *testkit.Conn) bool {
	for {
		f, err := c.NextFrame(stepTimeout)
		if err != nil || f.Op == ws.OpClose {
			return false
		}
		if f.Op == ws.OpText && bytes.Contains(f.Payload, []byte(live.SessionStart)) {
			return true
		}
	}
}

const lfStarted = `{"type":"session.started","event_id":"event_1","session":{"id":"live_lf","model":"gpt-live-1","status":"active"}}`

// upServe reads the upstream leg until it ends, calling on (if set) for
// each text message; it answers session.close as the service does
// (session.closed, then a close frame).
func upServe(c *testkit.Conn, on func(ev map[string]any)) {
	for {
		f, err := c.NextFrame(stepTimeout)
		if err != nil || f.Op == ws.OpClose {
			return
		}
		var ev map[string]any
		if f.Op != ws.OpText || json.Unmarshal(f.Payload, &ev) != nil {
			continue
		}
		if ev["type"] == live.SessionClose {
			c.SendText(`{"type":"session.closed","reason":"close_requested","usage":{"seconds":0}}`)
			c.SendClose(1000, "")
			upServe(c, nil) // until tether's close frame or the end
			return
		}
		if on != nil {
			on(ev)
		}
	}
}

// errCode is an error event's error.code.
func errCode(ev map[string]any) string {
	e, _ := ev["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// expectRefused waits for an error event with code and then close code cc.
func expectRefused(t *testing.T, what string, c *rtClient, code string, cc int) {
	t.Helper()
	ev := c.WaitEvent(live.Error, stepTimeout)
	if got := errCode(ev); got != code {
		t.Errorf("%s: error %v, want code %s", what, ev["error"], code)
	}
	if ci := c.WaitClose(stepTimeout); ci.Code != cc {
		t.Errorf("%s: close %d %q, want %d", what, ci.Code, ci.Reason, cc)
	}
}

// lfAppend is a session.input_audio.append carrying n bytes of silence.
func lfAppend(n int) []byte {
	b, _ := json.Marshal(map[string]string{"type": live.InputAudioAppend, "audio": base64.StdEncoding.EncodeToString(make([]byte, n))})
	return b
}

// tapEnded reports whether tether closed its side of upstream connection i.
func tapEnded(tp *tap, i int) bool {
	if tp.count() <= i {
		return false
	}
	tc := tp.conn(i)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.endErr != nil
}

// The upstream answers session.started and then stops reading (and
// answering pings) while tether writes it the client's held audio: the
// upstream heartbeat finds it out, the client gets 4002, the session goes.
func TestLiveFaultsHeldWriteStalledUpstream(t *testing.T) {
	t.Parallel()
	const interval, timeout = time.Second, 500 * time.Millisecond
	sent := make(chan struct{})
	over := make(chan struct{})
	p := liveScripted(t, map[string]string{"UpstreamHBInterval": interval.String(), "UpstreamHBTimeout": timeout.String()},
		func(c *testkit.Conn) {
			if !upAwaitStart(c) {
				return
			}
			select { // the client's audio is on its way to tether's hold
			case <-sent:
			case <-time.After(stepTimeout):
			}
			time.Sleep(200 * time.Millisecond) // tether reads it in
			c.StopReading()
			c.SendText(lfStarted)
			<-over
		})
	t.Cleanup(func() { close(over) }) // before the server's own clean-up
	base := p.baseline()
	c := dialClient(t, p.Listen, clientOpts{Path: livePath})
	c.Send(liveStart(live.ModelGPTLive1))
	f := ws.NewTextFrame(lfAppend(48000)) // 64 KB each: 17 go past the 1 MiB hold
	for range 17 {
		if err := c.Write(f); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	close(sent)
	c.WaitEvent(live.SessionStarted, stepTimeout)
	t0 := time.Now()
	ci := c.WaitClose(stepTimeout)
	took := ci.At.Sub(t0)
	t.Logf("client close %d %q %v after session.started", ci.Code, ci.Reason, took.Round(time.Millisecond))
	if ci.Code != 4002 {
		t.Errorf("client close %d %q, want 4002 (upstream_heartbeat_timeout)", ci.Code, ci.Reason)
	}
	if limit := interval + timeout + time.Second; took > limit {
		t.Errorf("client closed %v after session.started, want within %v (heartbeat %v/%v)", took, limit, interval, timeout)
	}
	p.assertSessionGone("upstream_heartbeat_timeout", base)
}

// Clients that send session.start and then a frame header claiming
// 16 MiB, while their session starts, do not make tether allocate it: a
// frame over the hold budget waits in the socket.
func TestLiveFaultsHoldMemory(t *testing.T) {
	t.Parallel()
	const n = 8
	const perClient = 4 << 20
	r := newRig(t, nil, mock.Options{StartDelay: 4 * time.Second})
	before := r.p.heapLow()
	var cs []*rtClient
	for range n {
		c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		c.Send(liveStart(live.ModelGPTLive1))
		h := ws.Header{Fin: true, OpCode: ws.OpText, Length: 16 << 20, Masked: true, Mask: [4]byte{1, 2, 3, 4}}
		if err := c.WritePartial(h, []byte(`{"type":"session.input_audio.append","audio":"`)); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	testkit.WaitFor(t, stepTimeout, "every session.start upstream", func() bool {
		for i := range n {
			if !slices.Contains(sentUpstream(r.tap, i), live.SessionStart) {
				return false
			}
		}
		return true
	})
	peak := 0.0
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		peak = max(peak, r.p.heapInuse())
	}
	for i, c := range cs {
		if evs := c.Events(); len(evs) != 0 || c.CloseReceived() != nil {
			t.Fatalf("client %d got %v (%s) before the measurement ended: it is not before session.started", i, evs, c.CloseState())
		}
	}
	grew := (peak - before) / n
	t.Logf("heap in use %.1f MB before, peak %.1f MB with %d clients each claiming a 16 MiB frame: %.2f MB per client",
		before/1e6, peak/1e6, n, grew/1e6)
	if grew > perClient {
		t.Errorf("heap in use grew %.2f MB per client, want under %d MB", grew/1e6, perClient>>20)
	}
	for _, c := range cs {
		c.Vanish()
	}
}

// Failed starts that are the client's doing put the upstream in no
// cool-down: the service refusing session.start (unknown_parameter), or
// callers hanging up while their session starts.
func TestLiveFaultsNoCooldown(t *testing.T) {
	t.Parallel()
	available := func(t *testing.T, r *rig) {
		t.Helper()
		if v, ok := r.p.metric("tether_upstream_available", `upstream="primary"`); !ok || v != 1 {
			t.Errorf(`tether_upstream_available{upstream="primary"} = %v (found %v), want 1: the upstream is in cool-down`, v, ok)
		}
	}
	goodStart := func(t *testing.T, r *rig) {
		t.Helper()
		c := dialLive(t, r.p.Listen, clientOpts{})
		rows, _ := r.p.sessions()
		if len(rows) != 1 || rows[0]["upstream"] != "primary" {
			t.Errorf("GET /sessions %v, want the good start served by primary", rows)
		}
		c.stopMic()
		c.SendClose(1000, "")
		c.WaitEnd(stepTimeout)
	}
	t.Run("refused_starts", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		for i := range 3 {
			c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
			c.SendText(`{"type":"session.start","session":{"model":"gpt-live-1","voice":"alloy"}}`) // voice belongs in audio.output
			expectRefused(t, "bad start", c, live.CodeUnknownParameter, 1008)
			if n := r.tap.count(); n != i+1 {
				t.Fatalf("%d upstream dials after %d bad starts, want one each", n, i+1)
			}
		}
		available(t, r)
		goodStart(t, r)
	})
	t.Run("hang_ups", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{StartDelay: time.Second})
		for i := range 3 {
			c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
			c.Send(liveStart(live.ModelGPTLive1))
			testkit.WaitFor(t, stepTimeout, "the caller's session.start upstream", func() bool {
				return slices.Contains(sentUpstream(r.tap, i), live.SessionStart)
			})
			c.Vanish()
			testkit.WaitFor(t, stepTimeout, "tether to give up the caller's dial", func() bool { return tapEnded(r.tap, i) })
		}
		available(t, r)
		goodStart(t, r)
	})
}

// A drain: clients that have not started are refused at once (error
// server_shutting_down, close 1001, no dial), whether they stay silent or
// send session.start after SIGTERM; a dial in progress at SIGTERM ends
// with session.close to the upstream.
func TestLiveFaultsDrain(t *testing.T) {
	t.Parallel()
	t.Run("not_started", func(t *testing.T) {
		t.Parallel()
		// handshake_timeout is 5 s (proxy.yaml), drain_timeout 20 s.
		r := newRig(t, map[string]string{"DrainTimeout": "20s"}, mock.Options{})
		exited := watchExit(r.p)
		silent := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		late := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		t0 := time.Now()
		r.p.signal(syscall.SIGTERM)
		ci := silent.WaitClose(stepTimeout)
		t.Logf("silent client: close %d %v after SIGTERM", ci.Code, ci.At.Sub(t0).Round(time.Millisecond))
		if took := ci.At.Sub(t0); ci.Code != 1001 || took > time.Second {
			t.Errorf("silent client: close %d %q %v after SIGTERM, want 1001 at once (within 1 s, not the 5 s handshake timeout)",
				ci.Code, ci.Reason, took.Round(time.Millisecond))
		}
		if ev := firstOf(silent.Events(), live.Error); errCode(ev) != live.CodeShuttingDown {
			t.Errorf("silent client: events %v, want an error %s", silent.Events(), live.CodeShuttingDown)
		}
		// The drain is under way (the silent client was closed): the other
		// sends its session.start now.
		b, _ := json.Marshal(liveStart(live.ModelGPTLive1))
		_ = late.WriteOpen(ws.NewTextFrame(b)) // tether may have closed it already
		expectRefused(t, "session.start after SIGTERM", late, live.CodeShuttingDown, 1001)
		if n := r.hs.count(); n != 0 {
			t.Errorf("the upstream was dialed %d times during the drain", n)
		}
		checkExit(t, r.p, exited, t0, 2*time.Second)
	})
	t.Run("dial_in_progress", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, map[string]string{"DrainTimeout": "5s"}, mock.Options{StartDelay: 1500 * time.Millisecond})
		exited := watchExit(r.p)
		c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		c.Send(liveStart(live.ModelGPTLive1))
		testkit.WaitFor(t, stepTimeout, "session.start upstream", func() bool {
			return slices.Contains(sentUpstream(r.tap, 0), live.SessionStart)
		})
		t0 := time.Now()
		r.p.signal(syscall.SIGTERM)
		ci := c.WaitClose(stepTimeout)
		t.Logf("client: %v, close %d %q %v after SIGTERM", eventTypes(c.Events()), ci.Code, ci.Reason, ci.At.Sub(t0).Round(time.Millisecond))
		if ci.Code != 1001 {
			t.Errorf("client close %d %q, want 1001", ci.Code, ci.Reason)
		}
		testkit.WaitFor(t, stepTimeout, "session.close sent upstream, then nothing of the client's", func() bool {
			return gotSessionClose(r.tap, 0)
		})
		checkExit(t, r.p, exited, t0, 5*time.Second)
	})
}

func firstOf(evs []map[string]any, typ string) map[string]any {
	for _, ev := range evs {
		if ev["type"] == typ {
			return ev
		}
	}
	return nil
}

func eventTypes(evs []map[string]any) []string {
	var out []string
	for _, ev := range evs {
		s, _ := ev["type"].(string)
		out = append(out, s)
	}
	return out
}

// A fragmented message whose first fragment is held before
// session.started and whose next one would cross the 1 MiB hold budget is
// relayed whole once the session runs: the relay continues it.
func TestLiveFaultsFragmentAcrossHold(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, mock.Options{StartDelay: time.Second})
	c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
	c.Send(liveStart(live.ModelGPTLive1))
	msg := lfAppend(900 << 10) // about 1.2 MB of JSON
	const cut = 600 << 10
	c.SendFrame(ws.OpText, false, msg[:cut])              // held
	c.SendFrame(ws.OpContinuation, false, msg[cut:2*cut]) // over the budget: waits in the socket
	c.WaitEvent(live.SessionStarted, stepTimeout)
	c.SendFrame(ws.OpContinuation, true, msg[2*cut:])
	var data []frame
	testkit.WaitFor(t, stepTimeout, "the whole message upstream", func() bool {
		data = data[:0]
		total := int64(0)
		fs := r.tap.conn(0).frames()
		for _, f := range fs[min(1, len(fs)):] { // after session.start
			if f.Op.IsData() {
				data = append(data, f)
				total += f.Length
			}
		}
		return total >= int64(len(msg))
	})
	total := int64(0)
	for i, f := range data {
		total += f.Length
		want := ws.OpContinuation
		if i == 0 {
			want = ws.OpText
		}
		if f.Op != want || f.Fin != (i == len(data)-1) {
			t.Errorf("upstream frame %d: op %v fin %v, want op %v fin %v", i, f.Op, f.Fin, want, i == len(data)-1)
		}
	}
	if total != int64(len(msg)) || len(data) == 0 || !bytes.HasPrefix(msg, data[0].Payload) {
		t.Errorf("upstream got %d data frames, %d bytes, want the one message of %d bytes", len(data), total, len(msg))
	}
	// The session carries on: no error, no protocol_error close.
	c.Send(map[string]any{"type": live.SessionClose})
	c.WaitEvent(live.SessionClosed, stepTimeout)
	if ci := c.WaitClose(stepTimeout); ci.Code != 1000 {
		t.Errorf("client close %d %q, want 1000", ci.Code, ci.Reason)
	}
	if ev := firstOf(c.Events(), live.Error); ev != nil {
		t.Errorf("error event: %v", ev)
	}
	r.p.assertSessionGone("upstream_closed", r.base)
}

// What tether reads of the first message it reads strictly and refuses
// before any dial; what it does not read goes to the service to judge.
func TestLiveFaultsStartEdges(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"AllowedModels": `["gpt-live-1"]`, "MaxFrameBytes": "65536"}, mock.Options{})
	refused := []struct {
		name  string
		send  func(c *rtClient)
		code  string
		close int
	}{
		{"binary_first_frame", func(c *rtClient) {
			c.SendFrame(ws.OpBinary, true, []byte(`{"type":"session.start","session":{"model":"gpt-live-1"}}`))
		}, live.CodeStartRequired, 1008},
		{"over_max_frame_bytes", func(c *rtClient) {
			c.SendText(`{"type":"session.start","session":{"model":"gpt-live-1","instructions":"` + strings.Repeat("a", 70000) + `"}}`)
		}, live.CodeStartRequired, 1009},
		{"type_other_case", func(c *rtClient) {
			c.SendText(`{"TYPE":"session.start","session":{"model":"gpt-live-1"}}`)
		}, live.CodeInvalidValue, 1008},
		{"model_twice", func(c *rtClient) {
			c.SendText(`{"type":"session.start","session":{"model":"gpt-evil","model":null}}`)
		}, live.CodeInvalidValue, 1008},
		{"truncated", func(c *rtClient) {
			c.SendText(`{"type":"session.start","session":{"model":"gpt-live-1"}`)
		}, live.CodeStartRequired, 1008},
		{"trailing_data", func(c *rtClient) {
			c.SendText(`{"type":"session.start","session":{"model":"gpt-live-1"}}{"type":"x"}`)
		}, live.CodeStartRequired, 1008},
		{"model_other_case", func(c *rtClient) {
			c.SendText(`{"type":"session.start","session":{"model":"gpt-evil","Model":"gpt-live-1"}}`)
		}, live.CodeInvalidValue, 1008},
	}
	for _, tc := range refused {
		c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		tc.send(c)
		expectRefused(t, tc.name, c, tc.code, tc.close)
	}
	if n := r.hs.count(); n != 0 {
		t.Fatalf("the upstream was dialed %d times for starts tether refuses", n)
	}
	passed := []struct{ name, start string }{
		{"float_rate", `{"type":"session.start","session":{"model":"gpt-live-1","audio":{"format":{"type":"audio/pcm","rate":24000.0}}}}`},
		{"numeric_event_id", `{"type":"session.start","event_id":7,"session":{"model":"gpt-live-1"}}`},
	}
	for i, tc := range passed {
		c := dialClient(t, r.p.Listen, clientOpts{Path: livePath})
		c.SendText(tc.start)
		ev, ok := c.NextEvent(stepTimeout)
		if !ok {
			t.Fatalf("%s: no event (%s)", tc.name, c.CloseState())
		}
		if r.tap.count() != i+1 {
			t.Fatalf("%s: %d upstream dials, want %d", tc.name, r.tap.count(), i+1)
		}
		up := r.tap.conn(i)
		if fs := up.frames(); len(fs) == 0 || string(fs[0].Payload) != tc.start {
			t.Errorf("%s: the upstream's first message is not the client's session.start as sent", tc.name)
		}
		// The client hears the service's verdict, whatever it is.
		var verdict map[string]any
		for _, f := range up.upstreamFrames() {
			if f.Op == ws.OpText && json.Unmarshal(f.Payload, &verdict) == nil {
				break
			}
		}
		t.Logf("%s: the service answered %v %s; the client got %v %s", tc.name, verdict["type"], errCode(verdict), ev["type"], errCode(ev))
		if verdict == nil || ev["type"] != verdict["type"] || errCode(ev) != errCode(verdict) {
			t.Errorf("%s: client got %v, want the service's answer %v", tc.name, ev, verdict)
		}
		c.Close()
	}
}

// How a scripted upstream answers session.start: session.started in
// fragments starts the session; session.closed before it is a failed dial,
// reported at once rather than at the dial timeout.
func TestLiveFaultsUpstreamStart(t *testing.T) {
	t.Parallel()
	t.Run("fragmented_started", func(t *testing.T) {
		t.Parallel()
		p := liveScripted(t, nil, func(c *testkit.Conn) {
			if !upAwaitStart(c) {
				return
			}
			c.SendFrame(ws.OpText, false, []byte(lfStarted[:30]))
			c.SendFrame(ws.OpContinuation, false, []byte(lfStarted[30:70]))
			c.SendFrame(ws.OpContinuation, true, []byte(lfStarted[70:]))
			upServe(c, nil)
		})
		c := dialClient(t, p.Listen, clientOpts{Path: livePath})
		c.Send(liveStart(live.ModelGPTLive1))
		ev := c.WaitEvent(live.SessionStarted, stepTimeout)
		if s, _ := ev["session"].(map[string]any); s["id"] != "live_lf" {
			t.Errorf("session.started %v", ev)
		}
		rows, _ := p.sessions()
		if len(rows) != 1 {
			t.Errorf("GET /sessions %v, want the session", rows)
		}
		c.SendClose(1000, "")
		c.WaitEnd(stepTimeout)
	})
	t.Run("closed_before_started", func(t *testing.T) {
		t.Parallel()
		const dialTimeout = 5 * time.Second
		p := liveScripted(t, map[string]string{"DialTimeout": dialTimeout.String()}, func(c *testkit.Conn) {
			if !upAwaitStart(c) {
				return
			}
			c.SendText(`{"type":"session.closed","reason":"expired","usage":{"seconds":0}}`)
			upServe(c, nil)
		})
		c := dialClient(t, p.Listen, clientOpts{Path: livePath})
		t0 := time.Now()
		c.Send(liveStart(live.ModelGPTLive1))
		expectRefused(t, "session.closed before session.started", c, live.CodeUpstreamUnavailable, 1013)
		if took := time.Since(t0); took > 1500*time.Millisecond {
			t.Errorf("refused %v after session.start, want at once (the dial timeout is %v)", took.Round(time.Millisecond), dialTimeout)
		}
		if ev := firstOf(c.Events(), live.SessionClosed); ev != nil {
			t.Errorf("the client got the failed dial's session.closed: %v", ev)
		}
	})
}

// A message the upstream sends before session.started, quoting the
// upstream's key, reaches the client with the key redacted.
func TestLiveFaultsEarlyEventRedacted(t *testing.T) {
	t.Parallel()
	p := liveScripted(t, nil, func(c *testkit.Conn) {
		if !upAwaitStart(c) {
			return
		}
		c.SendText(`{"type":"info","message":"warming up with ` + lfKey + `"}`)
		c.SendText(`{"message":"typeless, ` + lfKey + `"}`)
		c.SendText(lfStarted)
		upServe(c, nil)
	})
	c := dialClient(t, p.Listen, clientOpts{Path: livePath})
	c.Send(liveStart(live.ModelGPTLive1))
	c.WaitEvent(live.SessionStarted, stepTimeout)
	evs := c.Events()
	if len(evs) != 3 || evs[0]["type"] != live.Info || evs[2]["type"] != live.SessionStarted {
		t.Errorf("client events %v, want info, the typeless message, session.started", evs)
	}
	if msg, _ := firstOf(evs, live.Info)["message"].(string); !strings.HasPrefix(msg, "warming up with ") {
		t.Errorf("info message %q, want it passed on (redacted)", msg)
	}
	if bytes.Contains(c.Received(), []byte(lfKey)) {
		t.Errorf("the client received the upstream key: events %v", evs)
	}
	c.SendClose(1000, "")
	c.WaitEnd(stepTimeout)
}

// A turn in progress is activity however long it runs: a Realtime
// caller speaking (server VAD) past idle_timeout, and a GPT-Live client
// working on a delegation, are not idled out; once quiet they are.
func TestLiveFaultsIdleMidTurn(t *testing.T) {
	t.Parallel()
	const idle = 2 * time.Second
	const busy = 4 * time.Second // twice idle_timeout
	t.Run("realtime_speaking", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, map[string]string{"IdleTimeout": idle.String()}, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime",
			"audio": map[string]any{"input": map[string]any{"turn_detection": map[string]any{"type": "server_vad"}}}}})
		c.WaitEvent("session.updated", stepTimeout)
		appendOf := func(pcm []byte) ws.Frame {
			b, _ := json.Marshal(map[string]string{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(pcm)})
			return ws.NewTextFrame(b)
		}
		tone, silence := appendOf(testAudio(20)), appendOf(make([]byte, 960))
		stream := func(f ws.Frame, until func() bool) {
			for !until() && c.CloseReceived() == nil {
				if c.WriteOpen(f) != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t0 := time.Now()
		stream(tone, func() bool { return time.Since(t0) > busy })
		if firstOf(c.Events(), realtime.SpeechStarted) == nil {
			t.Fatalf("no %s: the mock's VAD did not hear the caller (events %v)", realtime.SpeechStarted, eventTypes(c.Events()))
		}
		if ci := c.CloseReceived(); ci != nil {
			t.Fatalf("caller cut off mid-speech: close %d %q %v after it began", ci.Code, ci.Reason, ci.At.Sub(t0).Round(time.Millisecond))
		}
		// Silence: speech_stopped ends the turn, and idle runs again.
		quiet := time.Now()
		stream(silence, func() bool { return time.Since(quiet) > idle+3*time.Second })
		ci := c.WaitClose(stepTimeout)
		stopped := firstOf(c.Events(), realtime.SpeechStopped)
		t.Logf("close %d %v after the caller went quiet", ci.Code, ci.At.Sub(quiet).Round(time.Millisecond))
		if ci.Code != 4000 || stopped == nil || ci.At.Sub(quiet) < idle || ci.At.Sub(quiet) > idle+2*time.Second {
			t.Errorf("after the speech: close %d %q %v after silence began (speech_stopped seen: %v), want 4000 idle_timeout %v-%v after",
				ci.Code, ci.Reason, ci.At.Sub(quiet).Round(time.Millisecond), stopped != nil, idle, idle+2*time.Second)
		}
	})
	t.Run("live_delegation", func(t *testing.T) {
		t.Parallel()
		p := liveScripted(t, map[string]string{"IdleTimeout": idle.String()}, func(c *testkit.Conn) {
			if !upAwaitStart(c) {
				return
			}
			c.SendText(lfStarted)
			c.SendText(`{"type":"session.delegation.created","offset_ms":100,"delegation":{"id":"item_1","type":"delegation","target":"client"}}`)
			upServe(c, func(ev map[string]any) {
				if ev["type"] == live.ThinkingAppend {
					c.SendText(`{"type":"session.thinking.appended","start_ms":0,"end_ms":0}`)
				}
			})
		})
		c := dialClient(t, p.Listen, clientOpts{Path: livePath})
		c.Send(liveStart(live.ModelGPTLive1))
		c.WaitEvent(live.DelegationCreated, stepTimeout)
		t0 := time.Now()
		think, _ := json.Marshal(map[string]string{"type": live.ThinkingAppend, "delegation_id": "item_1", "content": "looking it up"})
		var last time.Time
		for time.Since(t0) < busy && c.CloseReceived() == nil {
			if c.WriteOpen(ws.NewTextFrame(think)) != nil {
				break
			}
			last = time.Now()
			time.Sleep(500 * time.Millisecond)
		}
		if ci := c.CloseReceived(); ci != nil {
			t.Fatalf("client cut off while answering the delegation: close %d %q %v after it began", ci.Code, ci.Reason, ci.At.Sub(t0).Round(time.Millisecond))
		}
		ci := c.WaitClose(stepTimeout)
		t.Logf("close %d %v after the last thinking.append", ci.Code, ci.At.Sub(last).Round(time.Millisecond))
		if ci.Code != 4000 || ci.At.Sub(last) > idle+time.Second {
			t.Errorf("once quiet: close %d %q %v after the last append, want 4000 idle_timeout within %v",
				ci.Code, ci.Reason, ci.At.Sub(last).Round(time.Millisecond), idle+time.Second)
		}
	})
}
