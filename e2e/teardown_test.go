package e2e

import (
	"encoding/base64"
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

// TestTeardown drives every row of the design's teardown table from outside
// and checks the close codes on both legs, the reason metric, and that the
// session and its goroutines are gone afterwards. Shutdown has its own tests.
func TestTeardown(t *testing.T) {
	t.Parallel()

	t.Run("client_closed", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.SendClose(4100, "client done")
		if ci := c.WaitClose(stepTimeout); ci.Code != 4100 {
			t.Errorf("client got close %d, want its own 4100 echoed", ci.Code)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 4100 {
			t.Errorf("upstream got close %d, want the client's 4100", code)
		}
		r.p.assertSessionGone("client_closed", r.base)
	})

	t.Run("upstream_closed", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.fault("close", map[string]any{"code": 4321, "reason": "upstream says bye"})
		ci := c.WaitClose(stepTimeout)
		if ci.Code != 4321 || ci.Reason != "upstream says bye" {
			t.Errorf("client got close %d %q, want the upstream's 4321 \"upstream says bye\"", ci.Code, ci.Reason)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 4321 {
			t.Errorf("upstream got close %d, want its 4321 echoed", code)
		}
		r.p.assertSessionGone("upstream_closed", r.base)
	})

	t.Run("upstream_closed_long_reason", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		// 122 bytes on the wire; redacting the key-shaped token makes it
		// longer, so tether must cut it again without splitting a rune.
		reason := "sk-ab " + strings.Repeat("é", 58)
		c.fault("close", map[string]any{"code": 4322, "reason": reason})
		ci := c.WaitClose(stepTimeout)
		if ci.Code != 4322 {
			t.Errorf("client got close %d, want 4322", ci.Code)
		}
		if len(ci.Reason) > 123 || !utf8.ValidString(ci.Reason) {
			t.Errorf("relayed close reason is %d bytes, valid UTF-8 %v: want at most 123 bytes of valid UTF-8 (%q)",
				len(ci.Reason), utf8.ValidString(ci.Reason), ci.Reason)
		}
		if strings.Contains(ci.Reason, "sk-ab ") {
			t.Errorf("key-shaped token not redacted: %q", ci.Reason)
		}
		r.p.assertSessionGone("upstream_closed", r.base)
	})

	t.Run("client_error_rst", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.Vanish()
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1001 {
			t.Errorf("upstream got close %d after the client vanished, want 1001", code)
		}
		r.p.assertSessionGone("client_error", r.base)
	})

	t.Run("client_error_eof", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.Close() // TCP FIN without a close frame
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1001 {
			t.Errorf("upstream got close %d after the client's EOF, want 1001", code)
		}
		r.p.assertSessionGone("client_error", r.base)
	})

	t.Run("upstream_error", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		sent := time.Now()
		c.fault("rst", nil)
		ci := c.WaitClose(stepTimeout)
		if ci.Code != 1014 {
			t.Errorf("client got close %d after an upstream reset, want 1014", ci.Code)
		}
		if d := ci.At.Sub(sent); d > time.Second {
			t.Errorf("client closed %v after the upstream reset, want within 1s", d)
		}
		r.p.assertSessionGone("upstream_error", r.base)
	})

	t.Run("client_heartbeat_timeout", func(t *testing.T) {
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
		if ci := c.WaitClose(stepTimeout); ci.Code != 1001 {
			t.Errorf("client got close %d, want 1001", ci.Code)
		}
		r.p.assertSessionGone("client_heartbeat_timeout", r.base)
	})

	t.Run("client_heartbeat_timeout_not_reading", func(t *testing.T) {
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
	})

	t.Run("upstream_heartbeat_timeout", func(t *testing.T) {
		t.Parallel()
		const interval, timeout = time.Second, 500 * time.Millisecond
		r := newRig(t, map[string]string{"UpstreamHBInterval": "1s", "UpstreamHBTimeout": "500ms"}, mock.Options{})
		c := r.dial(t, clientOpts{})
		stalled := time.Now()
		c.fault("stall", nil)
		ci := c.WaitClose(interval + timeout + 3*time.Second)
		if ci.Code != 4002 {
			t.Errorf("client got close %d when the upstream stalled, want 4002", ci.Code)
		}
		if d := ci.At.Sub(stalled); d > interval+timeout+time.Second {
			t.Errorf("client closed %v after the upstream stalled, want within %v", d, interval+timeout+time.Second)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1001 {
			t.Errorf("upstream got close %d, want 1001", code)
		}
		r.p.assertSessionGone("upstream_heartbeat_timeout", r.base)
	})

	t.Run("idle_timeout", func(t *testing.T) {
		t.Parallel()
		const idle = time.Second
		// Heartbeats keep running on both legs meanwhile: pings and pongs
		// are not data frames and must not keep the session alive.
		r := newRig(t, map[string]string{"IdleTimeout": "1s",
			"ClientHBInterval": "300ms", "ClientHBTimeout": "200ms",
			"UpstreamHBInterval": "300ms", "UpstreamHBTimeout": "200ms"}, mock.Options{})
		c := r.dial(t, clientOpts{})
		sent := time.Now() // before the last data frames
		c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime"}})
		c.WaitEvent("session.updated", stepTimeout)
		last := time.Now() // after the last data frame
		ci := c.WaitClose(idle + 3*time.Second)
		if ci.Code != 4000 {
			t.Errorf("client got close %d, want 4000", ci.Code)
		}
		if d := ci.At.Sub(sent); d < idle {
			t.Errorf("idle close %v after the last data frame, before idle_timeout %v", d, idle)
		}
		if d := ci.At.Sub(last); d > idle+time.Second {
			t.Errorf("idle close %v after the last data frame, want within 1s of idle_timeout %v", d, idle)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		if c.Pings() == 0 {
			t.Errorf("no ping reached the client: the heartbeat did not run during the idle period")
		}
		r.p.assertSessionGone("idle_timeout", r.base)
	})

	t.Run("max_duration", func(t *testing.T) {
		t.Parallel()
		const maxDur = 2 * time.Second
		r := newRig(t, map[string]string{"MaxDuration": "2s"}, mock.Options{})
		start := time.Now()
		c := r.dial(t, clientOpts{})
		// Stay busy: max_duration ends even an active session.
		stop := make(chan struct{})
		busy := make(chan struct{})
		go func() {
			defer close(busy)
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if c.Write(ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`))) != nil {
						return
					}
				}
			}
		}()
		ci := c.WaitClose(maxDur + 5*time.Second)
		close(stop)
		<-busy
		if ci.Code != 4001 {
			t.Errorf("client got close %d, want 4001", ci.Code)
		}
		if d := ci.At.Sub(start); d < maxDur {
			t.Errorf("max_duration close %v after the upgrade began, before max_duration %v", d, maxDur)
		}
		if d := ci.At.Sub(c.Connected); d > maxDur+time.Second {
			t.Errorf("max_duration close %v after connect, want about %v", d, maxDur)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("max_duration", r.base)
	})

	t.Run("upstream_fatal_event_expire", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		sent := time.Now()
		c.fault("expire", nil)
		ev := c.WaitEvent("error", stepTimeout)
		if code := errorCode(ev); code != "session_expired" {
			t.Errorf("relayed error event code %q, want session_expired", code)
		}
		expectFatalTeardown(t, r, c, sent)
	})

	t.Run("upstream_fatal_event_error", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		// A code not in fatal_upstream_errors is relayed and the session lives on.
		c.fault("error", map[string]any{"code": "harmless_hiccup"})
		if code := errorCode(c.WaitEvent("error", stepTimeout)); code != "harmless_hiccup" {
			t.Errorf("relayed error code %q, want harmless_hiccup", code)
		}
		c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime"}})
		c.WaitEvent("session.updated", stepTimeout)

		sent := time.Now()
		c.fault("error", map[string]any{"code": "session_expired"})
		if code := errorCode(c.WaitEvent("error", stepTimeout)); code != "session_expired" {
			t.Errorf("relayed error code %q, want session_expired", code)
		}
		expectFatalTeardown(t, r, c, sent)
	})

	t.Run("frame_too_large", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, map[string]string{"MaxFrameBytes": "1024"}, mock.Options{})
		c := r.dial(t, clientOpts{})
		big := `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"` +
			strings.Repeat("a", 2048) + `"}]}}`
		if err := c.Write(ws.NewTextFrame([]byte(big))); err != nil {
			t.Fatal(err)
		}
		if ci := c.WaitClose(stepTimeout); ci.Code != 1009 {
			t.Errorf("client got close %d for a 2 KiB frame over max_frame_bytes 1024, want 1009", ci.Code)
		}
		f := r.tap.waitClose(0, stepTimeout)
		if code, _ := f.CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		for _, f := range r.tap.conn(0).frames() {
			if f.Length > 1024 {
				t.Errorf("a %d-byte frame reached the upstream", f.Length)
			}
		}
		r.p.assertSessionGone("frame_too_large", r.base)
	})

	t.Run("protocol_error", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		// Client frames must be masked.
		if err := c.WriteRaw(ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`))); err != nil {
			t.Fatal(err)
		}
		if ci := c.WaitClose(stepTimeout); ci.Code != 1002 {
			t.Errorf("client got close %d for an unmasked frame, want 1002", ci.Code)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("protocol_error", r.base)
	})

	t.Run("frame_too_large_upstream", func(t *testing.T) {
		t.Parallel()
		// The limit holds on the upstream leg too: audio deltas are about 6.4 KB.
		r := newRig(t, map[string]string{"MaxFrameBytes": "1024"}, mock.Options{})
		c := r.dial(t, clientOpts{})
		c.Send(map[string]any{"type": "response.create"})
		if ci := c.WaitClose(stepTimeout); ci.Code != 1009 {
			t.Errorf("client got close %d for an upstream frame over max_frame_bytes, want 1009", ci.Code)
		}
		for _, ev := range c.Events() {
			if ev["type"] == "response.output_audio.delta" {
				t.Errorf("an oversized audio delta reached the client")
			}
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("frame_too_large", r.base)
	})

	t.Run("protocol_error_rsv1", func(t *testing.T) {
		t.Parallel()
		// RSV1 marks a compressed frame; no extension was negotiated.
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		f := ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.clear"}`))
		f.Header.Rsv = ws.Rsv(true, false, false)
		if err := c.Write(f); err != nil {
			t.Fatal(err)
		}
		if ci := c.WaitClose(stepTimeout); ci.Code != 1002 {
			t.Errorf("client got close %d for a frame with RSV1 set, want 1002", ci.Code)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("protocol_error", r.base)
	})

	t.Run("protocol_error_bad_close_code", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil, mock.Options{})
		c := r.dial(t, clientOpts{})
		// 1004 is reserved and must not appear in a close frame.
		if err := c.Write(ws.NewCloseFrame([]byte{0x03, 0xec})); err != nil {
			t.Fatal(err)
		}
		if ci := c.WaitClose(stepTimeout); ci.Code != 1002 {
			t.Errorf("client got close %d for a close frame with code 1004, want 1002", ci.Code)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("protocol_error", r.base)
	})

	t.Run("admin", func(t *testing.T) {
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
		if ci := c.WaitClose(stepTimeout); ci.Code != 4003 {
			t.Errorf("client got close %d, want 4003", ci.Code)
		}
		if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
			t.Errorf("upstream got close %d, want 1000", code)
		}
		r.p.assertSessionGone("admin", r.base)
		if code, body := r.p.del("/sessions/" + id); code != http.StatusNotFound {
			t.Errorf("second DELETE /sessions/%s: %d %s, want 404", id, code, body)
		}
	})
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

// expectFatalTeardown checks the upstream_fatal_event row after the fatal
// error event was provoked at sent: the client gets 1014 within 1 s, the
// upstream 1000, and the session is gone.
func expectFatalTeardown(t *testing.T, r *rig, c *rtClient, sent time.Time) {
	t.Helper()
	ci := c.WaitClose(stepTimeout)
	if ci.Code != 1014 {
		t.Errorf("client got close %d after the fatal error event, want 1014", ci.Code)
	}
	if d := ci.At.Sub(sent); d > time.Second {
		t.Errorf("client closed %v after the fatal error event, want promptly (1s)", d)
	}
	if code, _ := r.tap.waitClose(0, stepTimeout).CloseCode(); code != 1000 {
		t.Errorf("upstream got close %d, want 1000", code)
	}
	r.p.assertSessionGone("upstream_fatal_event", r.base)
}
