package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestVoiceTurnBuiltInMock: no upstream configured and no OPENAI_API_KEY, so
// tether serves the built-in mock and a realtime client completes a turn.
func TestVoiceTurnBuiltInMock(t *testing.T) {
	t.Parallel()
	p := startTether(t, "builtin_mock.yaml", nil)
	logs := p.stderr.String()
	if !strings.Contains(logs, "built-in mock") {
		t.Fatalf("the log does not say the built-in mock is used:\n%s", logs)
	}
	base := p.baseline()

	c := dialClient(t, p.Listen, clientOpts{Protocols: []string{"realtime"}})
	if c.Protocol != "realtime" {
		t.Errorf("subprotocol %q, want realtime", c.Protocol)
	}
	created := c.WaitEvent("session.created", stepTimeout)
	sess, _ := created["session"].(map[string]any)
	if sess["model"] != "gpt-realtime" {
		t.Errorf("session.created model %v: the client's ?model= was not passed through", sess["model"])
	}
	audio, deltas := c.voiceTurn()
	if deltas == 0 || audio == 0 {
		t.Fatalf("no audio deltas")
	}

	rows, raw := p.sessions()
	if len(rows) != 1 {
		t.Fatalf("GET /sessions during the session: %s", raw)
	}
	for _, k := range []string{"id", "upstream", "client_addr", "started_at", "age_seconds", "state",
		"bytes_client_to_upstream", "bytes_upstream_to_client", "responses", "last_activity"} {
		if _, ok := rows[0][k]; !ok {
			t.Errorf("GET /sessions row lacks %q: %s", k, raw)
		}
	}
	if rows[0]["responses"] != float64(1) {
		t.Errorf("responses = %v, want 1", rows[0]["responses"])
	}
	if v, _ := p.metric("tether_sessions_active"); v != 1 {
		t.Errorf("tether_sessions_active = %v during the session, want 1", v)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := p.get(path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s, want 200", path, code, body)
		}
	}
	// The contract's metrics a voice turn must have produced.
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"tether_frames_total", []string{`direction="client_to_upstream"`}},
		{"tether_frames_total", []string{`direction="upstream_to_client"`}},
		{"tether_bytes_total", []string{`direction="client_to_upstream"`}},
		{"tether_bytes_total", []string{`direction="upstream_to_client"`}},
		{"tether_upstream_dial_seconds_count", nil},
		{"tether_time_to_first_audio_seconds_count", nil},
		{"tether_tokens_total", []string{`kind="input_audio"`}},
		{"tether_tokens_total", []string{`kind="output_audio"`}},
		{"tether_tokens_total", []string{`kind="input_text"`}},
	} {
		if v, ok := p.metric(m.name, m.labels...); !ok || v <= 0 {
			t.Errorf("%s%v = %v (present %v) after a voice turn, want > 0", m.name, m.labels, v, ok)
		}
	}

	c.SendClose(1000, "bye")
	if ci := c.WaitClose(stepTimeout); ci.Code != 1000 {
		t.Errorf("close echo %d, want 1000", ci.Code)
	}
	c.WaitEnd(stepTimeout)
	p.assertSessionGone("client_closed", base)
	if v, ok := p.metric("tether_session_duration_seconds_count"); !ok || v != 1 {
		t.Errorf("tether_session_duration_seconds_count = %v (present %v), want 1", v, ok)
	}
}

// teardownRow is a row of the teardown table provoked on an open session:
// the close code each leg must get and the reason the session ends with.
type teardownRow struct {
	name    string
	vars    map[string]string               // fixture overrides
	setup   func(t *testing.T, c *rtClient) // before the clock starts; may be nil
	provoke func(t *testing.T, c *rtClient)
	what    string // what provoke does, for failure messages
	// client is the client's close code (0: it left and gets none);
	// within, if set, bounds its arrival after provoke began.
	client   int
	within   time.Duration
	upstream int    // the upstream's close code (0: it left and gets none)
	reason   string // the session's end reason
	// check makes further checks once both legs closed; may be nil.
	check func(t *testing.T, r *rig, c *rtClient, ci closeInfo)
}

// teardownRows are the rows a client provokes with one action.
var teardownRows = []teardownRow{
	{
		name:    "client_closed",
		provoke: func(t *testing.T, c *rtClient) { c.SendClose(4100, "client done") },
		what:    "after its own close 4100 (want it echoed)",
		client:  4100, upstream: 4100, reason: "client_closed",
	},
	{
		name: "upstream_closed",
		provoke: func(t *testing.T, c *rtClient) {
			c.fault("close", map[string]any{"code": 4321, "reason": "upstream says bye"})
		},
		what:   "after the upstream closed with 4321 (want it relayed, and echoed upstream)",
		client: 4321, upstream: 4321, reason: "upstream_closed",
		check: func(t *testing.T, _ *rig, _ *rtClient, ci closeInfo) {
			if ci.Reason != "upstream says bye" {
				t.Errorf("client got close reason %q, want the upstream's \"upstream says bye\"", ci.Reason)
			}
		},
	},
	{
		name: "upstream_closed_long_reason",
		// 122 bytes on the wire; redacting the key-shaped token makes it
		// longer, so tether must cut it again without splitting a rune.
		provoke: func(t *testing.T, c *rtClient) {
			c.fault("close", map[string]any{"code": 4322, "reason": "sk-ab " + strings.Repeat("é", 58)})
		},
		what:   "after the upstream closed with 4322 and a long reason",
		client: 4322, upstream: 4322, reason: "upstream_closed",
		check: func(t *testing.T, _ *rig, _ *rtClient, ci closeInfo) {
			if len(ci.Reason) > 123 || !utf8.ValidString(ci.Reason) {
				t.Errorf("relayed close reason is %d bytes, valid UTF-8 %v: want at most 123 bytes of valid UTF-8 (%q)",
					len(ci.Reason), utf8.ValidString(ci.Reason), ci.Reason)
			}
			if strings.Contains(ci.Reason, "sk-ab ") {
				t.Errorf("key-shaped token not redacted: %q", ci.Reason)
			}
		},
	},
	{
		name:     "client_error_rst",
		provoke:  func(t *testing.T, c *rtClient) { c.Vanish() },
		what:     "after the client vanished",
		upstream: 1001, reason: "client_error",
	},
	{
		name:     "client_error_eof",
		provoke:  func(t *testing.T, c *rtClient) { c.Close() }, // TCP FIN without a close frame
		what:     "after the client's EOF",
		upstream: 1001, reason: "client_error",
	},
	{
		name:    "upstream_error",
		provoke: func(t *testing.T, c *rtClient) { c.fault("rst", nil) },
		what:    "after an upstream reset",
		client:  1014, within: time.Second, reason: "upstream_error",
	},
	{
		name:    "upstream_heartbeat_timeout",
		vars:    map[string]string{"UpstreamHBInterval": "1s", "UpstreamHBTimeout": "500ms"},
		provoke: func(t *testing.T, c *rtClient) { c.fault("stall", nil) },
		what:    "when the upstream stalled",
		// interval + timeout + 1 s
		client: 4002, within: 2500 * time.Millisecond, upstream: 1001, reason: "upstream_heartbeat_timeout",
	},
	{
		name: "upstream_fatal_event_expire",
		provoke: func(t *testing.T, c *rtClient) {
			c.fault("expire", nil)
			if code := errorCode(c.WaitEvent("error", stepTimeout)); code != "session_expired" {
				t.Errorf("relayed error event code %q, want session_expired", code)
			}
		},
		what:   "after the fatal error event",
		client: 1014, within: time.Second, upstream: 1000, reason: "upstream_fatal_event",
	},
	{
		name: "upstream_fatal_event_error",
		// A code not in fatal_upstream_errors is relayed and the session lives on.
		setup: func(t *testing.T, c *rtClient) {
			c.fault("error", map[string]any{"code": "harmless_hiccup"})
			if code := errorCode(c.WaitEvent("error", stepTimeout)); code != "harmless_hiccup" {
				t.Errorf("relayed error code %q, want harmless_hiccup", code)
			}
			c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime"}})
			c.WaitEvent("session.updated", stepTimeout)
		},
		provoke: func(t *testing.T, c *rtClient) {
			c.fault("error", map[string]any{"code": "session_expired"})
			if code := errorCode(c.WaitEvent("error", stepTimeout)); code != "session_expired" {
				t.Errorf("relayed error code %q, want session_expired", code)
			}
		},
		what:   "after the fatal error event",
		client: 1014, within: time.Second, upstream: 1000, reason: "upstream_fatal_event",
	},
	{
		name: "frame_too_large",
		vars: map[string]string{"MaxFrameBytes": "1024"},
		provoke: func(t *testing.T, c *rtClient) {
			writeFrame(t, c, ws.NewTextFrame([]byte(`{"type":"conversation.item.create","item":{"type":"message","role":"user",`+
				`"content":[{"type":"input_text","text":"`+strings.Repeat("a", 2048)+`"}]}}`)))
		},
		what:   "for a 2 KiB frame over max_frame_bytes 1024",
		client: 1009, upstream: 1000, reason: "frame_too_large",
		check: func(t *testing.T, r *rig, _ *rtClient, _ closeInfo) {
			for _, f := range r.tap.conn(0).frames() {
				if f.Length > 1024 {
					t.Errorf("a %d-byte frame reached the upstream", f.Length)
				}
			}
		},
	},
	{
		name: "frame_too_large_upstream",
		// The limit holds on the upstream leg too: audio deltas are about 6.4 KB.
		vars:    map[string]string{"MaxFrameBytes": "1024"},
		provoke: func(t *testing.T, c *rtClient) { c.Send(map[string]any{"type": "response.create"}) },
		what:    "for an upstream frame over max_frame_bytes",
		client:  1009, upstream: 1000, reason: "frame_too_large",
		check: func(t *testing.T, _ *rig, c *rtClient, _ closeInfo) {
			for _, ev := range c.Events() {
				if ev["type"] == "response.output_audio.delta" {
					t.Errorf("an oversized audio delta reached the client")
				}
			}
		},
	},
	{
		name: "protocol_error",
		// Client frames must be masked.
		provoke: func(t *testing.T, c *rtClient) {
			if err := c.WriteRaw(ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`))); err != nil {
				t.Fatal(err)
			}
		},
		what:   "for an unmasked frame",
		client: 1002, upstream: 1000, reason: "protocol_error",
	},
	{
		name: "protocol_error_rsv1",
		// RSV1 marks a compressed frame; no extension was negotiated.
		provoke: func(t *testing.T, c *rtClient) {
			f := ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`))
			f.Header.Rsv = ws.Rsv(true, false, false)
			writeFrame(t, c, f)
		},
		what:   "for a frame with RSV1 set",
		client: 1002, upstream: 1000, reason: "protocol_error",
	},
	{
		name: "protocol_error_bad_close_code",
		// 1004 is reserved and must not appear in a close frame.
		provoke: func(t *testing.T, c *rtClient) { writeFrame(t, c, ws.NewCloseFrame([]byte{0x03, 0xec})) },
		what:    "for a close frame with code 1004",
		client:  1002, upstream: 1000, reason: "protocol_error",
	},
}

// writeFrame writes f (masked); an error fails the test.
func writeFrame(t *testing.T, c *rtClient, f ws.Frame) {
	t.Helper()
	if err := c.Write(f); err != nil {
		t.Fatal(err)
	}
}

// run provokes the row on a fresh rig and checks both legs and the end.
func (row teardownRow) run(t *testing.T) {
	r := newRig(t, row.vars, mock.Options{})
	c := r.dial(t, clientOpts{})
	if row.setup != nil {
		row.setup(t, c)
	}
	sent := time.Now()
	row.provoke(t, c)
	var ci closeInfo
	if row.client != 0 {
		ci = r.expectClientClose(t, c, row.client, row.what)
		if d := ci.At.Sub(sent); row.within > 0 && d > row.within {
			t.Errorf("client closed %v %s, want within %v", d, row.what, row.within)
		}
	}
	if row.upstream != 0 {
		r.expectUpstreamClose(t, row.upstream, row.what)
	}
	if row.check != nil {
		row.check(t, r, c, ci)
	}
	r.p.assertSessionGone(row.reason, r.base)
}

// expectClientClose waits for the client's close frame and checks its code.
func (r *rig) expectClientClose(t *testing.T, c *rtClient, want int, what string) closeInfo {
	t.Helper()
	ci := c.WaitClose(stepTimeout)
	if ci.Code != want {
		t.Errorf("client got close %d %s, want %d", ci.Code, what, want)
	}
	return ci
}

// expectUpstreamClose waits for tether's close frame on the (first)
// upstream leg and checks its code.
func (r *rig) expectUpstreamClose(t *testing.T, want int, what string) {
	t.Helper()
	if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != want {
		t.Errorf("upstream got close %d %s, want %d", code, what, want)
	}
}

// TestTeardown drives every row of the design's teardown table from outside
// and checks the close codes on both legs, the reason metric, and that the
// session and its goroutines are gone afterwards. Shutdown has its own tests.
func TestTeardown(t *testing.T) {
	t.Parallel()
	for _, row := range teardownRows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			row.run(t)
		})
	}

	t.Run("client_heartbeat_timeout", teardownClientHeartbeatTimeout)
	t.Run("client_heartbeat_timeout_not_reading", teardownClientNotReading)
	t.Run("idle_timeout", teardownIdleTimeout)
	t.Run("max_duration", teardownMaxDuration)
	t.Run("admin", teardownAdmin)
}

// teardownClientHeartbeatTimeout: a client that answers no ping is closed
// 1001, and so is the upstream leg, within the heartbeat's interval and
// timeout.
func teardownClientHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	const interval, timeout = time.Second, 500 * time.Millisecond
	r := newRig(t, map[string]string{"ClientHBInterval": "1s", "ClientHBTimeout": "500ms"}, mock.Options{})
	c := r.dial(t, clientOpts{NoPong: true}) // silent from the start
	f := r.tap.waitClose(0, interval+timeout+3*time.Second)
	if code, _ := f.CloseCode(); code != 1001 {
		t.Errorf("upstream got close %d when the client stopped answering pings, want 1001", code)
	}
	if d := f.At.Sub(c.Connected); d > interval+timeout+time.Second {
		t.Errorf("upstream leg closed %v after the client went silent, want within %v", d, interval+timeout+time.Second)
	}
	if c.Pings() == 0 {
		t.Errorf("the client saw no ping")
	}
	r.expectClientClose(t, c, 1001, "after its heartbeat timed out")
	r.p.assertSessionGone("client_heartbeat_timeout", r.base)
}

// teardownClientNotReading: a client that stops reading mid-response is
// still ended by the heartbeat, with 1001 on the upstream leg.
func teardownClientNotReading(t *testing.T) {
	t.Parallel()
	// The client stops reading while a big response streams to it: tether's
	// writes to the client block, and the heartbeat must still end the
	// session in time, with a close frame on the upstream leg. The
	// interval leaves the response time to fill the socket buffers
	// (about 4 MB) before the heartbeat fires, even on a loaded machine.
	const interval, timeout = 4 * time.Second, time.Second
	r := newRig(t, map[string]string{"ClientHBInterval": "4s", "ClientHBTimeout": "1s"}, mock.Options{})
	c := r.dial(t, clientOpts{})
	_ = c.TCP().SetReadBuffer(8 << 10)
	// 6 MB of audio (about 8 MB of deltas back), in appends small enough
	// for the client's pongs to slip in between.
	chunk := base64.StdEncoding.EncodeToString(testAudio(2_000))
	for range 62 {
		c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": chunk})
	}
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.WaitEvent("input_audio_buffer.committed", stepTimeout)
	c.StopReading()
	stopped := time.Now()
	c.Send(map[string]any{"type": "response.create"})
	if f, ok := r.tap.findClose(0, interval+timeout+3*time.Second); !ok {
		t.Errorf("the upstream leg got no close frame (want 1001) when the client stopped reading: %s",
			r.tap.conn(0).describeEnd())
	} else {
		if code, _ := f.CloseCode(); code != 1001 {
			t.Errorf("upstream got close %d when the client stopped reading, want 1001", code)
		}
		if d := f.At.Sub(stopped); d > interval+timeout+time.Second {
			t.Errorf("upstream leg closed %v after the client stopped reading, want within %v", d, interval+timeout+time.Second)
		}
	}
	c.Close()
	r.p.assertSessionGone("client_heartbeat_timeout", r.base)
}

// teardownIdleTimeout: a session without a turn for idle_timeout is closed
// 4000 (client) and 1000 (upstream).
func teardownIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	// Idle means no turn: heartbeats on both legs and a microphone
	// streaming silence (appends at 50/s, no speech) do not keep the
	// session alive; the caller's last text message is its last turn.
	r := newRig(t, map[string]string{"IdleTimeout": "1s",
		"ClientHBInterval": "300ms", "ClientHBTimeout": "200ms",
		"UpstreamHBInterval": "300ms", "UpstreamHBTimeout": "200ms"}, mock.Options{})
	c := r.dial(t, clientOpts{})
	sent := time.Now() // before the last turn
	c.Send(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "hello"}}}})
	c.WaitEvent("conversation.item.added", stepTimeout)
	last := time.Now() // after the last turn
	silence, _ := json.Marshal(map[string]string{"type": "input_audio_buffer.append",
		"audio": base64.StdEncoding.EncodeToString(make([]byte, 960))})
	stopMic := c.repeat(20*time.Millisecond, silence) // until the session closes
	ci := r.expectClientClose(t, c, 4000, "when idle")
	stopMic()
	if d := ci.At.Sub(sent); d < idle {
		t.Errorf("idle close %v after the last turn, before idle_timeout %v", d, idle)
	}
	if d := ci.At.Sub(last); d > idle+time.Second {
		t.Errorf("idle close %v after the last turn, want within 1s of idle_timeout %v although silence streamed", d, idle)
	}
	r.expectUpstreamClose(t, 1000, "when idle")
	if c.Pings() == 0 {
		t.Errorf("no ping reached the client: the heartbeat did not run during the idle period")
	}
	r.p.assertSessionGone("idle_timeout", r.base)
}

// teardownMaxDuration: even a busy session is closed at max_duration, 4001
// (client) and 1000 (upstream).
func teardownMaxDuration(t *testing.T) {
	t.Parallel()
	const maxDur = 2 * time.Second
	r := newRig(t, map[string]string{"MaxDuration": "2s"}, mock.Options{})
	start := time.Now()
	c := r.dial(t, clientOpts{})
	// Stay busy: max_duration ends even an active session.
	stopBusy := c.repeat(200*time.Millisecond, []byte(`{"type":"input_audio_buffer.clear"}`))
	ci := r.expectClientClose(t, c, 4001, "at max_duration")
	stopBusy()
	if d := ci.At.Sub(start); d < maxDur {
		t.Errorf("max_duration close %v after the upgrade began, before max_duration %v", d, maxDur)
	}
	if d := ci.At.Sub(c.Connected); d > maxDur+time.Second {
		t.Errorf("max_duration close %v after connect, want about %v", d, maxDur)
	}
	r.expectUpstreamClose(t, 1000, "at max_duration")
	r.p.assertSessionGone("max_duration", r.base)
}

// teardownAdmin: DELETE /sessions/{id} closes the session 4003 (client) and
// 1000 (upstream); an unknown or already ended id is a 404.
func teardownAdmin(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, mock.Options{})
	if code, body := r.p.del("/sessions/tsn_doesnotexist"); code != http.StatusNotFound {
		t.Errorf("DELETE of an unknown session: %d %s, want 404", code, body)
	}
	c := r.dial(t, clientOpts{})
	rows, raw := r.p.sessions()
	if len(rows) != 1 {
		t.Fatalf("GET /sessions: %s", raw)
	}
	id, _ := rows[0]["id"].(string)
	if rows[0]["upstream"] != "primary" {
		t.Errorf("session upstream %v, want primary", rows[0]["upstream"])
	}
	if code, body := r.p.del("/sessions/" + id); code != http.StatusOK {
		t.Fatalf("DELETE /sessions/%s: %d %s", id, code, body)
	}
	r.expectClientClose(t, c, 4003, "after DELETE /sessions/{id}")
	r.expectUpstreamClose(t, 1000, "after DELETE /sessions/{id}")
	r.p.assertSessionGone("admin", r.base)
	if code, body := r.p.del("/sessions/" + id); code != http.StatusNotFound {
		t.Errorf("second DELETE /sessions/%s: %d %s, want 404", id, code, body)
	}
}

// errorCode is error.code of an error event.
func errorCode(ev map[string]any) string {
	e, _ := ev["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// TestShutdownDrain: SIGTERM with one idle session and one mid-response.
// readyz turns 503 at once, new upgrades get 503 with Retry-After, the idle
// session closes with 1001 at once, the busy one after its response.done,
// and the process exits 0.
func TestShutdownDrain(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"DrainTimeout": "20s"}, mock.Options{})
	idle := r.dial(t, clientOpts{})
	busy := r.dial(t, clientOpts{})
	busy.fault("slow", map[string]any{"delta_interval_ms": 200}) // the 1 s tone: 10 deltas, about 2 s
	busy.Send(map[string]any{"type": "response.create"})
	busy.WaitEvent("response.created", stepTimeout)
	busy.WaitEvent("response.output_audio.delta", stepTimeout)

	sig := time.Now()
	r.p.signal(syscall.SIGTERM)

	testkit.WaitFor(t, time.Second, "/readyz 503 within 1s of SIGTERM", func() bool {
		code, _, _, err := r.p.adminDo(http.MethodGet, "/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})

	if code, _ := r.p.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while draining, want 200", code)
	}
	a := rawUpgrade(t, r.p.Listen, "/v1/realtime", nil)
	if a.Status != http.StatusServiceUnavailable || a.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade while draining: %d Retry-After %q, want 503 with Retry-After", a.Status, a.Header.Get("Retry-After"))
	}

	ci := idle.WaitClose(stepTimeout)
	if ci.Code != 1001 {
		t.Errorf("idle session got close %d, want 1001", ci.Code)
	}
	if d := ci.At.Sub(sig); d > time.Second {
		t.Errorf("idle session closed %v after SIGTERM, want at once", d)
	}

	// The busy session finishes its response first.
	var done time.Time
	for {
		ev, ok := busy.NextEvent(stepTimeout)
		if !ok {
			t.Fatalf("busy session closed (%s) before its response.done", busy.CloseState())
		}
		if ev["type"] == "response.done" {
			done = time.Now()
			break
		}
	}
	ci = busy.WaitClose(stepTimeout)
	if ci.Code != 1001 {
		t.Errorf("busy session got close %d, want 1001", ci.Code)
	}
	if d := ci.At.Sub(done); d > time.Second {
		t.Errorf("busy session closed %v after response.done, want at the response boundary", d)
	}
	for i := range 2 {
		if code, _ := r.tap.waitClose(i, stepTimeout).CloseCode(); code != 1001 {
			t.Errorf("upstream #%d got close %d, want 1001", i, code)
		}
	}
	if code := r.p.waitExit(exitTimeout); code != 0 {
		t.Errorf("exit code %d after drain, want 0", code)
	}
	n := 0
	for _, rec := range r.p.logRecords() {
		if rec["msg"] == "session ended" {
			n++
			if rec["reason"] != "shutdown" {
				t.Errorf("session ended with reason %v, want shutdown", rec["reason"])
			}
		}
	}
	if n != 2 {
		t.Errorf("%d \"session ended\" log lines, want 2", n)
	}
}

// TestShutdownSecondSignal: a second SIGTERM closes a session mid-response at once.
func TestShutdownSecondSignal(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"DrainTimeout": "60s"}, mock.Options{})
	c := r.dial(t, clientOpts{})
	c.fault("slow", map[string]any{"delta_interval_ms": 3000}) // 30 s of response
	c.Send(map[string]any{"type": "response.create"})
	c.WaitEvent("response.created", stepTimeout)

	r.p.signal(syscall.SIGTERM)
	testkit.WaitFor(t, time.Second, "/readyz 503 within 1s of SIGTERM", func() bool {
		code, _, _, err := r.p.adminDo(http.MethodGet, "/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})

	// Still draining: the response is in progress.
	time.Sleep(200 * time.Millisecond)
	if rows, raw := r.p.sessions(); len(rows) != 1 {
		t.Fatalf("sessions while draining mid-response: %s", raw)
	}
	second := time.Now()
	r.p.signal(syscall.SIGTERM)
	ci := c.WaitClose(stepTimeout)
	if ci.Code != 1001 {
		t.Errorf("client got close %d after the second signal, want 1001", ci.Code)
	}
	if d := ci.At.Sub(second); d > time.Second {
		t.Errorf("client closed %v after the second signal, want at once", d)
	}
	for _, ev := range c.Events() {
		if ev["type"] == "response.done" {
			t.Errorf("the response finished: the second signal did not close at once")
		}
	}
	if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1001 {
		t.Errorf("upstream got close %d, want 1001", code)
	}
	if code := r.p.waitExit(exitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
