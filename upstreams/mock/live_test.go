package mock

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
)

// liveTimeout bounds each wait of the GPT-Live tests.
const liveTimeout = 2 * time.Second

// fastLive runs the output track ten times faster than real time.
var fastLive = Options{LiveDeltaInterval: 10 * time.Millisecond}

// startLiveServer starts a Server and returns its GPT-Live URL.
func startLiveServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	s, base := startServer(t, opts)
	return s, base + "/v1/live/sessions"
}

// startLive dials url, sends session.start with session (model gpt-live-1
// when nil) and event_id evt_start, and returns the connection and
// session.started.
func startLive(t *testing.T, url string, session map[string]any) (*testkit.Conn, map[string]any) {
	t.Helper()
	if session == nil {
		session = map[string]any{"model": live.ModelGPTLive1}
	}
	c := testkit.Dial(t, url, testkit.Options{})
	c.Send(map[string]any{"type": live.SessionStart, "event_id": "evt_start", "session": session})
	return c, c.WaitEvent(live.SessionStarted, liveTimeout)
}

// nextEvent returns the next event; the end of the connection fails the test.
func nextEvent(t *testing.T, c *testkit.Conn) map[string]any {
	t.Helper()
	ev, ok := c.NextEvent(liveTimeout)
	if !ok {
		t.Fatalf("connection ended (%s)", c.CloseState())
	}
	return ev
}

// waitError skips events up to the next error event and returns its error object.
func waitError(t *testing.T, c *testkit.Conn) map[string]any {
	t.Helper()
	return obj(c.WaitEvent(live.Error, liveTimeout), "error")
}

func decodeDelta(t *testing.T, ev map[string]any) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(str(ev["delta"]))
	if err != nil {
		t.Fatalf("%s: %v", ev["type"], err)
	}
	return b
}

func silent(p []byte, s byte) bool {
	return bytes.Count(p, []byte{s}) == len(p)
}

func appendEv(audio []byte) map[string]any {
	return map[string]any{"type": live.InputAudioAppend, "audio": base64.StdEncoding.EncodeToString(audio)}
}

func TestLiveClientSpeaksFirst(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	c := testkit.Dial(t, url, testkit.Options{KeepFrames: true})
	if c.Protocol != "" {
		t.Errorf("subprotocol %q, want none", c.Protocol)
	}
	// Whatever the mock sent on connect would come before the pong.
	c.SendFrame(ws.OpPing, true, []byte("first?"))
	if f := c.MustFrame(liveTimeout); f.Op != ws.OpPong || string(f.Payload) != "first?" {
		t.Fatalf("first frame %v %q, want the pong: the mock must wait for session.start", f.Op, f.Payload)
	}
	if evs := c.Events(); len(evs) != 0 {
		t.Fatalf("events before session.start: %v", evs)
	}

	c.Send(map[string]any{"type": "session.start", "event_id": "evt_start_001", "session": map[string]any{
		"model":        "gpt-live-1",
		"instructions": "Help the caller plan a restaurant reservation.",
		"audio":        map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 24000}, "output": map[string]any{"voice": "cedar"}},
		"delegation":   map[string]any{"type": "client"},
	}})
	ev := nextEvent(t, c)
	if ev["type"] != live.SessionStarted {
		t.Fatalf("first event %v, want session.started", ev)
	}
	if ev["client_event_id"] != "evt_start_001" || !strings.HasPrefix(str(ev["event_id"]), "event_") {
		t.Errorf("ids of %v", ev)
	}
	sess := obj(ev, "session")
	if id := str(sess["id"]); !strings.HasPrefix(id, "live_") || len(id) < 20 {
		t.Errorf("session id %q", id)
	}
	if exp := int64(num(t, sess, "expires_at")); exp < time.Now().Add(59*time.Minute).Unix() || exp > time.Now().Add(61*time.Minute).Unix() {
		t.Errorf("expires_at %d is not an hour ahead", exp)
	}
	if sess["model"] != "gpt-live-1" || sess["status"] != "active" || sess["instructions"] != "Help the caller plan a restaurant reservation." {
		t.Errorf("session %v", sess)
	}
	if f := obj(sess, "audio", "format"); f["type"] != "audio/pcm" || f["rate"] != 24000.0 {
		t.Errorf("format %v", f)
	}
	if v := obj(sess, "audio", "output")["voice"]; v != "cedar" {
		t.Errorf("voice %v", v)
	}
	if d := obj(sess, "delegation"); d["type"] != "client" {
		t.Errorf("delegation %v", d)
	}
	if in, ok := sess["input"].([]any); !ok || len(in) != 0 {
		t.Errorf("input %v, want []", sess["input"])
	}
	for _, k := range []string{"type", "turn_detection", "object", "output_modalities"} {
		if _, ok := sess[k]; ok {
			t.Errorf("session has the Realtime member %q", k)
		}
	}
}

func TestLiveStartDefaults(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	for _, tc := range []struct {
		name    string
		session map[string]any
		format  string
		rate    float64
		delta   int  // raw bytes per 100 ms delta
		silence byte // the silent sample byte
	}{
		{"only the model", map[string]any{"model": "gpt-live-1"}, "audio/pcm", 24000, 4800, 0},
		{"pcm 16 kHz", map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 16000}}}, "audio/pcm", 16000, 3200, 0},
		{"mu-law", map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcmu"}}}, "audio/pcmu", 8000, 800, 0xff},
		{"a-law", map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcma", "rate": 8000}}}, "audio/pcma", 8000, 800, 0xd5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ev := startLive(t, url, tc.session)
			sess := obj(ev, "session")
			if f := obj(sess, "audio", "format"); f["type"] != tc.format || f["rate"] != tc.rate {
				t.Errorf("format %v", f)
			}
			if v := obj(sess, "audio", "output")["voice"]; v != live.DefaultVoice {
				t.Errorf("voice %v, want the default", v)
			}
			if d := obj(sess, "delegation"); d["type"] != "client" || sess["instructions"] != "" {
				t.Errorf("delegation %v, instructions %q", d, sess["instructions"])
			}
			d := decodeDelta(t, c.WaitEvent(live.OutputAudioDelta, liveTimeout))
			if len(d) != tc.delta || !silent(d, tc.silence) {
				t.Errorf("delta of %d bytes (silent %v), want %d silent bytes", len(d), silent(d, tc.silence), tc.delta)
			}
		})
	}
}

func TestLiveStartErrors(t *testing.T) {
	s, url := startLiveServer(t, fastLive)
	start := func(session any) string {
		b, _ := json.Marshal(map[string]any{"type": "session.start", "event_id": "evt_invalid_001", "session": session})
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		msg     string
		binary  bool
		code    string
		param   string
		message string
		eventID string
	}{
		{name: "unknown session field", msg: start(map[string]any{"model": "gpt-live-1", "voice": "marin"}),
			code: "unknown_parameter", param: "session.voice", message: "Unknown parameter: 'session.voice'.", eventID: "evt_invalid_001"},
		{name: "Realtime session type", msg: start(map[string]any{"type": "realtime", "model": "gpt-live-1"}),
			code: "unknown_parameter", param: "session.type", eventID: "evt_invalid_001"},
		{name: "Realtime turn detection", msg: start(map[string]any{"model": "gpt-live-1", "audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}),
			code: "unknown_parameter", param: "session.audio.input", eventID: "evt_invalid_001"},
		{name: "unknown format field", msg: start(map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcm", "channels": 1}}}),
			code: "unknown_parameter", param: "session.audio.format.channels", eventID: "evt_invalid_001"},
		{name: "unknown responses setting", msg: start(map[string]any{"model": "gpt-live-1", "delegation": map[string]any{"type": "responses", "responses": map[string]any{"temperature": 1}}}),
			code: "unknown_parameter", param: "session.delegation.responses.temperature", eventID: "evt_invalid_001"},
		{name: "unknown top-level field", msg: `{"type":"session.start","tools":[],"session":{"model":"gpt-live-1"}}`,
			code: "unknown_parameter", param: "tools"},
		{name: "no model", msg: start(map[string]any{"instructions": "hi"}),
			code: "missing_required_parameter", param: "session.model", message: "Missing required parameter: 'session.model'.", eventID: "evt_invalid_001"},
		{name: "model not a string", msg: start(map[string]any{"model": 1}),
			code: "invalid_type", param: "session.model", eventID: "evt_invalid_001"},
		{name: "no session", msg: `{"type":"session.start"}`, code: "missing_required_parameter", param: "session"},
		{name: "wav format", msg: start(map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/wav"}}}),
			code: "invalid_value", param: "session.audio.format.type", eventID: "evt_invalid_001"},
		{name: "pcm at 44.1 kHz", msg: start(map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 44100}}}),
			code: "invalid_value", param: "session.audio.format.rate", eventID: "evt_invalid_001"},
		{name: "mu-law at 16 kHz", msg: start(map[string]any{"model": "gpt-live-1", "audio": map[string]any{"format": map[string]any{"type": "audio/pcmu", "rate": 16000}}}),
			code: "invalid_value", param: "session.audio.format.rate", eventID: "evt_invalid_001"},
		{name: "delegation type", msg: start(map[string]any{"model": "gpt-live-1", "delegation": map[string]any{"type": "server"}}),
			code: "invalid_value", param: "session.delegation.type", eventID: "evt_invalid_001"},
		{name: "another event first", msg: `{"type":"session.update","event_id":"e1","session":{}}`, code: live.CodeStartRequired},
		{name: "audio first", msg: `{"type":"session.input_audio.append","audio":"AAAA"}`, code: live.CodeStartRequired},
		{name: "not JSON", msg: `hello`, code: live.CodeStartRequired},
		{name: "binary frame", msg: "\x00\x01", binary: true, code: live.CodeStartRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkit.Dial(t, url, testkit.Options{})
			if tc.binary {
				c.SendFrame(ws.OpBinary, true, []byte(tc.msg))
			} else {
				c.SendText(tc.msg)
			}
			ev := nextEvent(t, c)
			e := obj(ev, "error")
			if ev["type"] != "error" || e["type"] != "invalid_request_error" || e["code"] != tc.code || str(e["param"]) != tc.param {
				t.Errorf("got %v, want error %s param %q", ev, tc.code, tc.param)
			}
			if tc.message != "" && e["message"] != tc.message {
				t.Errorf("message %q, want %q", e["message"], tc.message)
			}
			if str(e["client_event_id"]) != tc.eventID || str(ev["client_event_id"]) != tc.eventID {
				t.Errorf("client_event_id %v / %v, want %q", ev["client_event_id"], e["client_event_id"], tc.eventID)
			}
			if ci := c.WaitClose(liveTimeout); ci.Code != 1008 || ci.Reason != "invalid_request_error."+tc.code {
				t.Errorf("close %d %q, want 1008", ci.Code, ci.Reason)
			}
			c.WaitEnd(liveTimeout)
			for _, ev := range c.Events() {
				if ev["type"] != "error" {
					t.Errorf("event %v after a refused start: no session may exist", ev["type"])
				}
			}
		})
	}
	testkit.WaitFor(t, liveTimeout, "sessions to end", func() bool { return s.ActiveSessions() == 0 })
}

func TestLiveBeforeStarted(t *testing.T) {
	_, url := startLiveServer(t, Options{StartDelay: 200 * time.Millisecond, LiveDeltaInterval: 10 * time.Millisecond})
	c := testkit.Dial(t, url, testkit.Options{})
	c.Send(map[string]any{"type": "session.start", "session": map[string]any{"model": "gpt-live-1"}})
	sent := time.Now()
	c.Send(appendEv(make([]byte, 4800)))
	c.Send(map[string]any{"type": "session.input_audio.mute", "event_id": "m_1"})
	for _, want := range []string{"", "m_1"} {
		ev := nextEvent(t, c)
		if e := obj(ev, "error"); ev["type"] != "error" || e["code"] != live.CodeNotStarted || str(e["client_event_id"]) != want {
			t.Fatalf("got %v, want session_not_started for %q", ev, want)
		}
	}
	if ev := nextEvent(t, c); ev["type"] != live.SessionStarted {
		t.Fatalf("got %v, want session.started", ev)
	} else if d := time.Since(sent); d < 150*time.Millisecond {
		t.Errorf("session.started after %v, want StartDelay", d)
	}
	// The early mute was dropped, not applied late.
	c.Send(map[string]any{"type": "session.start", "event_id": "again", "session": map[string]any{"model": "gpt-live-1"}})
	if e := waitError(t, c); e["code"] != live.CodeAlreadyStarted || e["client_event_id"] != "again" {
		t.Errorf("second start: %v", e)
	}
	for _, ev := range c.Events() {
		if ev["type"] == live.InputAudioMuted {
			t.Errorf("the mute sent before session.started was applied")
		}
	}
}

func TestLiveAudioCadence(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time pacing")
	}
	_, url := startLiveServer(t, Options{}) // the default: real time
	c, _ := startLive(t, url, nil)
	first := decodeDelta(t, c.WaitEvent(live.OutputAudioDelta, liveTimeout))
	t0 := time.Now()
	deltas := 0
	for time.Since(t0) < 500*time.Millisecond { // the track never stops: this ends
		ev := nextEvent(t, c)
		if ev["type"] != live.OutputAudioDelta {
			continue
		}
		if _, ok := ev["event_id"]; ok {
			t.Fatalf("output delta with an event_id: %v", ev)
		}
		if d := decodeDelta(t, ev); len(d) != 4800 || !silent(d, 0) {
			t.Fatalf("delta of %d bytes, silent %v: want 100 ms of silence", len(d), silent(d, 0))
		}
		deltas++
	}
	if len(first) != 4800 || deltas < 3 || deltas > 7 {
		t.Errorf("%d deltas in 500 ms (first %d bytes), want about 5: one 100 ms delta per 100 ms", deltas, len(first))
	}
}

// liveTrace is what a GPT-Live client saw.
type liveTrace struct {
	events  []map[string]any
	audio   []byte // the output track
	audible int    // index in events of the first delta that is not silent; -1 if none
}

// collect reads events until stop reports true (checked after each), for
// at most liveTimeout: the track never stops on its own.
func collect(t *testing.T, c *testkit.Conn, stop func(tr *liveTrace, ev map[string]any) bool) *liveTrace {
	t.Helper()
	tr := &liveTrace{audible: -1}
	deadline := time.Now().Add(liveTimeout)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v and %d events (audible from event %d)", liveTimeout, len(tr.events), tr.audible)
		}
		ev := nextEvent(t, c)
		if ev["type"] == live.Error {
			t.Fatalf("error event: %v", ev)
		}
		tr.events = append(tr.events, ev)
		if ev["type"] == live.OutputAudioDelta {
			d := decodeDelta(t, ev)
			if tr.audible < 0 && !silent(d, 0) {
				tr.audible = len(tr.events) - 1
			}
			tr.audio = append(tr.audio, d...)
		}
		if stop(tr, ev) {
			return tr
		}
	}
}

func (tr *liveTrace) of(typ string) (evs []map[string]any, at []int) {
	for i, ev := range tr.events {
		if ev["type"] == typ {
			evs, at = append(evs, ev), append(at, i)
		}
	}
	return evs, at
}

func checkTimeline(t *testing.T, evs []map[string]any) {
	t.Helper()
	for _, ev := range evs {
		start, end := num(t, ev, "start_ms"), num(t, ev, "end_ms")
		if start%200 != 0 || end != start+200 || str(ev["delta"]) == "" || !strings.HasPrefix(str(ev["event_id"]), "event_") {
			t.Errorf("transcript delta %v: want 200 ms steps and text", ev)
		}
	}
}

func TestLiveEchoAndTranscripts(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	c, _ := startLive(t, url, nil)
	// Silence first: the track stays silent and nothing is transcribed.
	c.Send(appendEv(make([]byte, 19200)))
	pre := collect(t, c, func(tr *liveTrace, ev map[string]any) bool { return len(tr.audio) >= 10*4800 })
	if pre.audible >= 0 {
		t.Fatalf("audible output before the caller spoke")
	}
	if evs, _ := pre.of(live.InputTranscriptDelta); len(evs) > 0 {
		t.Fatalf("input transcript of silence: %v", evs)
	}

	speech := tone(400, 8000)
	c.Send(appendEv(speech))
	c.Send(appendEv(make([]byte, 48000))) // then a second of silence
	ended := -1                           // delta count when the echo went quiet again
	tr := collect(t, c, func(tr *liveTrace, ev map[string]any) bool {
		if ev["type"] != live.OutputAudioDelta || tr.audible < 0 {
			return false
		}
		if ended < 0 && silent(decodeDelta(t, ev), 0) {
			ended = len(tr.audio)
		}
		return ended >= 0 && len(tr.audio) >= ended+5*4800
	})

	in, inAt := tr.of(live.InputTranscriptDelta)
	out, outAt := tr.of(live.OutputTranscriptDelta)
	if len(in) != 2 || str(in[0]["delta"]) != "hello" || str(in[1]["delta"]) != " this" {
		t.Fatalf("input transcript %v, want hello, this: two 200 ms windows of speech", in)
	}
	if num(t, in[0], "start_ms") != 400 || num(t, in[1], "end_ms") != 800 {
		t.Errorf("input transcript at %v: the speech came after 400 ms of silence", in)
	}
	checkTimeline(t, in)
	if !bytes.Contains(tr.audio, speech) {
		t.Errorf("the output track does not carry the caller's audio back")
	}
	if len(out) < 2 || len(out) > 3 {
		t.Fatalf("%d output transcript deltas, want 2 or 3 (the echoed 400 ms)", len(out))
	}
	checkTimeline(t, out)
	if outAt[0] < tr.audible || outAt[0] < inAt[1] {
		t.Errorf("output transcript at event %d, audible audio at %d, input transcript at %v: want input, then echo, then its transcript", outAt[0], tr.audible, inAt)
	}
	if str(out[0]["delta"]) != "hello" {
		t.Errorf("output transcript %v", out)
	}
}

func TestLiveOddAudio(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	c, _ := startLive(t, url, nil)
	c.Send(map[string]any{"type": live.InputAudioAppend, "event_id": "odd", "audio": base64.StdEncoding.EncodeToString([]byte{1, 2, 3})})
	if e := waitError(t, c); e["code"] != live.CodeInvalidAudio || e["client_event_id"] != "odd" || e["message"] != "PCM16 audio must contain an even number of bytes." {
		t.Errorf("odd append: %v", e)
	}
	c.SendText(`{"type":"session.input_audio.append","audio":"!!"}`)
	if e := waitError(t, c); e["code"] != live.CodeInvalidAudio {
		t.Errorf("bad base64: %v", e)
	}
	c.Send(map[string]any{"type": live.InputAudioMute})
	c.WaitEvent(live.InputAudioMuted, liveTimeout) // the session goes on
}

func TestLiveUsage(t *testing.T) {
	_, url := startLiveServer(t, Options{LiveDeltaInterval: 10 * time.Millisecond, UsageInterval: 40 * time.Millisecond})
	c, _ := startLive(t, url, nil)
	var seen []float64
	for len(seen) < 3 {
		ev := c.WaitEvent(live.UsageUpdated, liveTimeout)
		seen = append(seen, obj(ev, "usage")["seconds"].(float64))
		if !strings.HasPrefix(str(ev["event_id"]), "event_") {
			t.Errorf("usage event %v", ev)
		}
	}
	if !slices.IsSorted(seen) || seen[2] <= seen[0] || seen[0] <= 0 {
		t.Errorf("usage seconds %v: want cumulative totals that grow", seen)
	}
	c.Send(map[string]any{"type": live.SessionClose})
	closed := c.WaitEvent(live.SessionClosed, liveTimeout)
	if got := obj(closed, "usage")["seconds"].(float64); got < seen[2] {
		t.Errorf("session.closed usage %v below the last update %v", got, seen[2])
	}
}

func TestLiveClose(t *testing.T) {
	s, url := startLiveServer(t, fastLive)
	c, started := startLive(t, url, nil)
	c.WaitEvent(live.OutputAudioDelta, liveTimeout)
	c.Send(map[string]any{"type": live.SessionClose, "event_id": "evt_close_001"})
	closed := c.WaitEvent(live.SessionClosed, liveTimeout)
	sess := obj(closed, "session")
	if closed["reason"] != live.ReasonCloseRequested || closed["client_event_id"] != "evt_close_001" ||
		sess["id"] != obj(started, "session")["id"] || sess["status"] != "active" {
		t.Errorf("session.closed %v", closed)
	}
	if sec := obj(closed, "usage")["seconds"].(float64); sec < 0.1 {
		t.Errorf("usage %v after a delta was sent", sec)
	}
	if ci := c.WaitClose(liveTimeout); ci.Code != 1000 {
		t.Errorf("close %d %q, want 1000", ci.Code, ci.Reason)
	}
	c.WaitEnd(liveTimeout)
	evs := c.Events()
	if last := evs[len(evs)-1]; last["type"] != live.SessionClosed {
		t.Errorf("%v after session.closed", last["type"])
	}
	testkit.WaitFor(t, liveTimeout, "the session to end", func() bool { return s.ActiveSessions() == 0 })

	// A peer that goes away without session.close: the session just ends.
	for _, vanish := range []bool{false, true} {
		c, _ := startLive(t, url, nil)
		c.WaitEvent(live.OutputAudioDelta, liveTimeout)
		if vanish {
			c.Vanish()
		} else {
			c.SendClose(1001, "bye")
			if ci := c.WaitClose(liveTimeout); ci.Code != 1001 {
				t.Errorf("close echo %d", ci.Code)
			}
		}
		testkit.WaitFor(t, liveTimeout, "the session to end", func() bool { return s.ActiveSessions() == 0 })
	}
}

func TestLiveAcks(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	c, _ := startLive(t, url, nil)
	c.Send(appendEv(make([]byte, 19200))) // 400 ms of the input timeline

	c.Send(map[string]any{"type": live.InputAudioMute, "event_id": "m"})
	if ev := c.WaitEvent(live.InputAudioMuted, liveTimeout); ev["client_event_id"] != "m" {
		t.Errorf("muted %v", ev)
	}
	c.Send(appendEv(tone(400, 8000))) // muted: not heard
	c.Send(map[string]any{"type": live.InputAudioUnmute})
	c.WaitEvent(live.InputAudioUnmuted, liveTimeout)
	for _, ev := range c.Events() {
		if ev["type"] == live.InputTranscriptDelta {
			t.Errorf("muted audio was transcribed: %v", ev)
		}
	}

	for typ, ack := range map[string]string{
		live.InstructionsAppend: live.InstructionsAppended,
		live.ThinkingAppend:     live.ThinkingAppended,
		live.CommentaryAppend:   live.CommentaryAppended,
	} {
		c.Send(map[string]any{"type": typ, "event_id": "a", "content": "The table is booked.", "delegation_id": nil})
		ev := c.WaitEvent(ack, liveTimeout)
		if ev["client_event_id"] != "a" || num(t, ev, "start_ms") != 800 || num(t, ev, "end_ms") != 1000 {
			t.Errorf("%s: %v, want the point 800 ms into the input timeline", ack, ev)
		}
	}

	for _, tc := range []struct {
		name    string
		ev      map[string]any
		code    string
		param   string
		message string
	}{
		{"append without content", map[string]any{"type": live.InstructionsAppend, "delegation_id": nil}, "missing_required_parameter", "content", ""},
		{"delegation type change", map[string]any{"type": live.SessionUpdate, "session": map[string]any{"delegation": map[string]any{"type": "responses"}}},
			live.CodeImmutableFieldUpdate, "session.delegation.type", ""},
		{"instructions update", map[string]any{"type": live.SessionUpdate, "session": map[string]any{"instructions": "x"}},
			live.CodeImmutableFieldUpdate, "session.instructions", ""},
		{"unknown update", map[string]any{"type": live.SessionUpdate, "session": map[string]any{"turn_detection": nil}},
			live.CodeUnknownParameter, "session.turn_detection", ""},
		{"item in client mode", map[string]any{"type": live.ResponseItemCreate, "item": map[string]any{"type": "message"}},
			live.CodeDelegationRequired, "", "response.item.create requires Responses delegation."},
		{"response in client mode", map[string]any{"type": live.ResponseCreate},
			live.CodeDelegationRequired, "", "response.create requires Responses delegation."},
		{"Realtime event", map[string]any{"type": "input_audio_buffer.commit"},
			live.CodeUnknownEventType, "type", ""},
		{"no type", map[string]any{"audio": ""}, "missing_required_parameter", "type", ""},
		{"unknown fault", map[string]any{"type": live.MockFault, "fault": "explode"}, "invalid_value", "fault", ""},
	} {
		tc.ev["event_id"] = "bad_1"
		c.Send(tc.ev)
		e := waitError(t, c)
		if e["type"] != "invalid_request_error" || e["code"] != tc.code || str(e["param"]) != tc.param || e["client_event_id"] != "bad_1" {
			t.Errorf("%s: error %v, want %s param %q", tc.name, e, tc.code, tc.param)
		}
		if tc.message != "" && e["message"] != tc.message {
			t.Errorf("%s: message %q", tc.name, e["message"])
		}
		if tc.code == live.CodeUnknownEventType {
			for _, typ := range live.ClientEvents {
				if !strings.Contains(str(e["message"]), "'"+typ+"'") {
					t.Errorf("unknown type error %q does not list %s", e["message"], typ)
				}
			}
		}
	}

	// The client delegation may be "updated" to itself.
	c.Send(map[string]any{"type": live.SessionUpdate, "event_id": "u", "session": map[string]any{"delegation": map[string]any{"type": "client"}}})
	if ev := c.WaitEvent(live.SessionUpdated, liveTimeout); ev["client_event_id"] != "u" || obj(ev, "session", "delegation")["type"] != "client" {
		t.Errorf("session.updated %v", ev)
	}
}

func TestLiveResponsesDelegation(t *testing.T) {
	_, url := startLiveServer(t, fastLive)
	c, started := startLive(t, url, map[string]any{"model": "gpt-live-1",
		"delegation": map[string]any{"type": "responses", "responses": map[string]any{"model": "gpt-5.5"}}})
	if d := obj(started, "session", "delegation"); d["type"] != "responses" || obj(d, "responses")["model"] != "gpt-5.5" {
		t.Errorf("delegation %v", d)
	}

	c.Send(map[string]any{"type": live.SessionUpdate, "session": map[string]any{"delegation": map[string]any{"responses": map[string]any{"instructions": "Be terse."}}}})
	r := obj(c.WaitEvent(live.SessionUpdated, liveTimeout), "session", "delegation", "responses")
	if r["model"] != "gpt-5.5" || r["instructions"] != "Be terse." {
		t.Errorf("updated responses settings %v, want both", r)
	}
	c.Send(map[string]any{"type": live.SessionUpdate, "session": map[string]any{"delegation": map[string]any{"responses": map[string]any{"voice": "x"}}}})
	if e := waitError(t, c); e["code"] != live.CodeUnknownParameter || e["param"] != "session.delegation.responses.voice" {
		t.Errorf("unknown setting: %v", e)
	}

	c.Send(map[string]any{"type": live.ResponseItemCreate, "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "Book it."}}}})
	for i, wantCached := range []float64{0, 30} {
		c.Send(map[string]any{"type": live.ResponseCreate, "event_id": "r"})
		var nested []string
		var done map[string]any
		for done == nil {
			ev := c.WaitEvent(live.ResponseEvent, liveTimeout)
			inner := obj(ev, "event")
			nested = append(nested, str(inner["type"]))
			if inner["type"] == live.ResponseCompleted {
				done = inner
			}
		}
		if len(nested) < 3 || nested[0] != "response.created" || !slices.Contains(nested, "response.output_text.delta") {
			t.Errorf("response %d: nested events %v", i, nested)
		}
		u := obj(done, "response", "usage")
		if u["input_tokens"] != 30.0 || u["output_tokens"] != 5.0 || obj(u, "input_tokens_details")["cached_tokens"] != wantCached {
			t.Errorf("response %d: usage %v", i, u)
		}
		if !strings.HasPrefix(str(obj(done, "response")["id"]), "resp_") {
			t.Errorf("response id %v", obj(done, "response")["id"])
		}
	}
}

func TestLiveFaults(t *testing.T) {
	s, url := startLiveServer(t, fastLive)
	for _, tc := range []struct {
		fault  map[string]any
		reason string // session.closed reason expected, if any
		code   int    // close code expected
		why    string // close reason expected
	}{
		{fault: map[string]any{"fault": "expire"}, reason: live.ReasonExpired, code: 1000, why: live.ReasonExpired},
		{fault: map[string]any{"fault": "content"}, reason: live.ReasonContent, code: 1000, why: live.ReasonContent},
		{fault: map[string]any{"fault": "close", "code": 4321, "reason": "custom"}, code: 4321, why: "custom"},
		{fault: map[string]any{"fault": "close"}, code: 1000},
		{fault: map[string]any{"fault": "error", "code": "boom", "error_type": "server_error", "close_code": 1011}, code: 1011, why: "server_error.boom"},
	} {
		c, _ := startLive(t, url, nil)
		c.WaitEvent(live.OutputAudioDelta, liveTimeout)
		tc.fault["type"] = live.MockFault
		c.Send(tc.fault)
		if tc.reason != "" {
			closed := c.WaitEvent(live.SessionClosed, liveTimeout)
			if closed["reason"] != tc.reason || obj(closed, "session")["status"] != "active" || obj(closed, "usage")["seconds"].(float64) <= 0 {
				t.Errorf("%v: session.closed %v", tc.fault, closed)
			}
		}
		if tc.fault["fault"] == "error" {
			if e := waitError(t, c); e["code"] != "boom" || e["type"] != "server_error" {
				t.Errorf("%v: error %v", tc.fault, e)
			}
		}
		if ci := c.WaitClose(liveTimeout); ci.Code != tc.code || ci.Reason != tc.why {
			t.Errorf("%v: close %d %q, want %d %q", tc.fault, ci.Code, ci.Reason, tc.code, tc.why)
		}
		c.WaitEnd(liveTimeout)
	}
	testkit.WaitFor(t, liveTimeout, "sessions to end", func() bool { return s.ActiveSessions() == 0 })

	// error without close_code: the session goes on.
	c, _ := startLive(t, url, nil)
	c.Send(map[string]any{"type": live.MockFault, "fault": "error", "code": live.CodeCreditExhausted})
	if e := waitError(t, c); e["code"] != live.CodeCreditExhausted || e["type"] != "invalid_request_error" {
		t.Errorf("error %v", e)
	}
	c.WaitEvent(live.OutputAudioDelta, liveTimeout)

	// rst: no close frame, a reset.
	c.Send(map[string]any{"type": live.MockFault, "fault": "rst"})
	c.WaitEnd(liveTimeout)
	if c.CloseReceived() != nil || !isReset(c.Err()) {
		t.Errorf("after rst: close %v, err %v; want ECONNRESET", c.CloseReceived(), c.Err())
	}
	testkit.WaitFor(t, liveTimeout, "sessions to end", func() bool { return s.ActiveSessions() == 0 })
}

func TestLiveFaultStall(t *testing.T) {
	s, url := startLiveServer(t, fastLive)
	c, _ := startLive(t, url, nil)
	c.WaitEvent(live.OutputAudioDelta, liveTimeout)
	c.Send(map[string]any{"type": live.MockFault, "fault": "stall"})
	// Deltas already on the wire may still come; then nothing.
	quiet := func() bool {
		n := len(c.Events())
		time.Sleep(100 * time.Millisecond) // ten deltas' worth at this pace
		return len(c.Events()) == n
	}
	testkit.WaitFor(t, liveTimeout, "the track to stop", quiet)
	c.SendFrame(ws.OpPing, true, []byte("anyone?"))
	c.Send(map[string]any{"type": live.SessionClose})
	if !quiet() || len(c.Pongs()) != 0 {
		t.Errorf("a stalled session answered: %d pongs", len(c.Pongs()))
	}
	if n := s.ActiveSessions(); n != 1 {
		t.Errorf("ActiveSessions %d, want the stalled session kept", n)
	}
	s.Close()
	c.WaitEnd(liveTimeout)
	if ci := c.CloseReceived(); ci != nil {
		t.Errorf("close frame %v from a stalled session", ci)
	}
}

func TestLiveAuth(t *testing.T) {
	const key = "sk-live-good"
	_, base := startServer(t, Options{APIKey: key, LiveDeltaInterval: 10 * time.Millisecond})
	url := base + "/v1/live/sessions"
	for _, h := range []http.Header{{"Authorization": {"Bearer " + key}}, {"Api-Key": {key}}} {
		c := testkit.Dial(t, url, testkit.Options{Header: h})
		c.Send(map[string]any{"type": live.SessionStart, "session": map[string]any{"model": "gpt-live-1"}})
		c.WaitEvent(live.SessionStarted, liveTimeout)
	}
	for _, tc := range []struct {
		h    http.Header
		code string
	}{
		{http.Header{}, live.CodeMissingAuth},
		{http.Header{"Authorization": {"Bearer sk-bad"}}, live.CodeInvalidAPIKey},
		{http.Header{"Sec-Websocket-Protocol": {insecureKeyPrefix + key}}, live.CodeMissingAuth},
	} {
		var status ws.StatusError
		if _, err := testkit.TryDial(t, url, testkit.Options{Header: tc.h}); !errors.As(err, &status) || status != 401 {
			t.Errorf("%v: dial err %v, want a 401", tc.h, err)
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http"+strings.TrimPrefix(url, "ws"), nil)
		req.Header = tc.h.Clone()
		for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error map[string]any }
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			json.Unmarshal(body, &e) != nil || e.Error["code"] != tc.code || e.Error["type"] != "invalid_request_error" {
			t.Errorf("%v: HTTP %d %s %s, want 401 with a JSON %s error", tc.h, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.code)
		}
		if strings.Contains(string(body), "sk-bad") {
			t.Errorf("the 401 body repeats the key: %s", body)
		}
	}
}

func TestLiveRouting(t *testing.T) {
	_, base := startServer(t, fastLive)
	for path, isLive := range map[string]bool{
		"/v1/live/sessions":                 true,
		"/openai/v1/live/sessions":          true,
		"/v1/realtime?model=gpt-realtime":   false,
		"/":                                 false,
		"/v1/live/sessions/live_abc/attach": false,
	} {
		c := testkit.Dial(t, base+path, testkit.Options{})
		if isLive {
			c.Send(map[string]any{"type": live.SessionStart, "session": map[string]any{"model": "gpt-live-1"}})
			if ev := nextEvent(t, c); ev["type"] != live.SessionStarted {
				t.Errorf("%s: first event %v, want session.started", path, ev["type"])
			}
		} else if ev := nextEvent(t, c); ev["type"] != "session.created" {
			t.Errorf("%s: first event %v, want Realtime's session.created", path, ev["type"])
		}
	}
}
