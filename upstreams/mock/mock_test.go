package mock

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/tetherproxy/tether/internal/testkit"
	"go.uber.org/goleak"
)

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// turn collects the events of one response up to response.done.
type turn struct {
	types      []string // event types in order, deltas included
	audio      []byte   // decoded audio deltas
	transcript string   // concatenated transcript deltas
	deltas     int
	events     map[string]map[string]any // last event of each type
}

func readTurn(t *testing.T, c *client) turn {
	t.Helper()
	tr := turn{events: map[string]map[string]any{}}
	var respID string
	for {
		ev := c.event()
		typ := str(ev["type"])
		tr.types = append(tr.types, typ)
		tr.events[typ] = ev
		switch typ {
		case "response.created":
			respID = str(obj(ev, "response")["id"])
		case "response.output_audio.delta":
			if respID == "" { // response.created was read before
				respID = str(ev["response_id"])
			}
			if ev["response_id"] != respID {
				t.Fatalf("delta of %v during %s", ev["response_id"], respID)
			}
			b, err := base64.StdEncoding.DecodeString(str(ev["delta"]))
			if err != nil {
				t.Fatalf("delta: %v", err)
			}
			tr.audio = append(tr.audio, b...)
			tr.deltas++
		case "response.output_audio_transcript.delta":
			tr.transcript += str(ev["delta"])
		case "response.done":
			if id := str(obj(ev, "response")["id"]); respID != "" && id != respID {
				t.Fatalf("response.done of %s, created %s", id, respID)
			}
			return tr
		}
	}
}

// skeleton is types without the deltas.
func (tr turn) skeleton() []string {
	return slices.DeleteFunc(slices.Clone(tr.types), func(s string) bool { return strings.HasSuffix(s, ".delta") })
}

var turnSkeleton = []string{
	"response.created", "rate_limits.updated", "response.output_item.added", "conversation.item.added",
	"response.content_part.added", "response.output_audio.done", "response.output_audio_transcript.done",
	"response.content_part.done", "response.output_item.done", "conversation.item.done", "response.done",
}

func TestManualTurn(t *testing.T) {
	_, url := startServer(t, Options{})
	c := dial(t, url+"/v1/realtime?model=gpt-test", ws.Dialer{Protocols: []string{"realtime"}})
	if c.hs.Protocol != "realtime" {
		t.Errorf("subprotocol %q, want realtime", c.hs.Protocol)
	}

	sess := obj(c.expect("session.created"), "session")
	if id := str(sess["id"]); !strings.HasPrefix(id, "sess_") || len(id) < 10 {
		t.Errorf("session id %q", id)
	}
	if sess["model"] != "gpt-test" || sess["type"] != "realtime" || sess["object"] != "realtime.session" {
		t.Errorf("session %v", sess)
	}
	if exp := num(t, sess, "expires_at"); int64(exp) < time.Now().Add(59*time.Minute).Unix() {
		t.Errorf("expires_at %d is not an hour ahead", exp)
	}
	if f := obj(sess, "audio", "input", "format"); f["type"] != "audio/pcm" || f["rate"] != 24000.0 {
		t.Errorf("input format %v", f)
	}
	if td, ok := obj(sess, "audio", "input")["turn_detection"]; !ok || td != nil {
		t.Errorf("turn_detection %v, want null (manual turns)", td)
	}

	c.send(map[string]any{"type": "session.update", "session": map[string]any{
		"type": "realtime", "instructions": "Be brief.", "audio": map[string]any{"output": map[string]any{"voice": "marin"}},
	}})
	upd := obj(c.expect("session.updated"), "session")
	if upd["instructions"] != "Be brief." || obj(upd, "audio", "output")["voice"] != "marin" {
		t.Errorf("session.updated %v", upd)
	}
	if upd["id"] != sess["id"] || obj(upd, "audio", "output", "format")["type"] != "audio/pcm" {
		t.Errorf("session.updated lost what it did not change: %v", upd)
	}

	audio := noise(9600) // 200 ms
	c.appendAudio(audio, 2400)
	c.send(map[string]any{"type": "input_audio_buffer.commit", "event_id": "c_1"})
	committed := c.expect("input_audio_buffer.committed")
	userItem := str(committed["item_id"])
	added := c.expect("conversation.item.added")
	if it := obj(added, "item"); it["id"] != userItem || it["role"] != "user" || strings.Contains(toJSON(it), "\"audio\"") {
		t.Errorf("user item %v", it)
	}
	c.expect("conversation.item.done")

	c.send(map[string]any{"type": "response.create"})
	tr := readTurn(t, c)
	if !slices.Equal(tr.skeleton(), turnSkeleton) {
		t.Errorf("events %v\nwant (deltas aside) %v", tr.types, turnSkeleton)
	}
	if first, last := slices.Index(tr.types, "response.output_audio.delta"), slices.Index(tr.types, "response.output_audio.done"); first < slices.Index(tr.types, "response.content_part.added") || first > last {
		t.Errorf("deltas out of place: %v", tr.types)
	}
	if !bytes.Equal(tr.audio, audio) {
		t.Errorf("deltas carry %d bytes, want the %d committed bytes back", len(tr.audio), len(audio))
	}
	if tr.deltas != 2 {
		t.Errorf("%d deltas, want 2 of DeltaBytes", tr.deltas)
	}
	if want := str(tr.events["response.output_audio_transcript.done"]["transcript"]); tr.transcript != want || want == "" {
		t.Errorf("transcript deltas %q, done %q", tr.transcript, want)
	}
	if prev := tr.events["conversation.item.added"]["previous_item_id"]; prev != userItem {
		t.Errorf("assistant item previous_item_id %v, want %s", prev, userItem)
	}
	if rl := tr.events["rate_limits.updated"]["rate_limits"].([]any); len(rl) != 2 {
		t.Errorf("rate_limits %v", rl)
	}
	resp := obj(tr.events["response.done"], "response")
	if resp["status"] != "completed" || resp["status_details"] != nil {
		t.Errorf("response.done %v", resp)
	}
	words := len(strings.Fields(tr.transcript))
	checkUsage(t, resp, 12, 2, 0, words, 4)

	// A response with nothing committed synthesises one second of tone; the
	// instructions now count as cached.
	c.send(map[string]any{"type": "response.create"})
	tr = readTurn(t, c)
	if !bytes.Equal(tr.audio, tones()[formatPCM]) {
		t.Errorf("uncommitted response carries %d bytes, want the 1 s tone", len(tr.audio))
	}
	checkUsage(t, obj(tr.events["response.done"], "response"), 12, 0, 12, len(strings.Fields(tr.transcript)), 20)
}

func checkUsage(t *testing.T, resp map[string]any, inText, inAudio, cached, outText, outAudio int) {
	t.Helper()
	u := obj(resp, "usage")
	got := []int{
		num(t, u, "input_token_details", "text_tokens"), num(t, u, "input_token_details", "audio_tokens"),
		num(t, u, "input_token_details", "cached_tokens"), num(t, u, "output_token_details", "text_tokens"),
		num(t, u, "output_token_details", "audio_tokens"),
	}
	want := []int{inText, inAudio, cached, outText, outAudio}
	if !slices.Equal(got, want) {
		t.Errorf("usage details %v, want %v (in text, in audio, cached, out text, out audio)", got, want)
	}
	in, out := num(t, u, "input_tokens"), num(t, u, "output_tokens")
	if in != inText+inAudio || out != outText+outAudio || num(t, u, "total_tokens") != in+out {
		t.Errorf("usage totals %v", u)
	}
}

func TestCommitEmptyAndClear(t *testing.T) {
	_, c := openSession(t, Options{})

	c.appendAudio(noise(2400), 2400) // 50 ms
	c.send(map[string]any{"type": "input_audio_buffer.commit", "event_id": "c_17"})
	e := obj(c.expect("error"), "error")
	if e["type"] != "invalid_request_error" || e["code"] != "input_audio_buffer_commit_empty" || e["event_id"] != "c_17" {
		t.Errorf("error %v", e)
	}
	if !strings.Contains(str(e["message"]), "50.00ms") {
		t.Errorf("message %q does not say how much audio was buffered", e["message"])
	}

	c.send(map[string]any{"type": "input_audio_buffer.clear"})
	c.expect("input_audio_buffer.cleared")
	c.appendAudio(noise(2400), 2400)
	c.send(map[string]any{"type": "input_audio_buffer.commit"})
	if e := obj(c.expect("error"), "error"); e["code"] != "input_audio_buffer_commit_empty" || e["event_id"] != nil {
		t.Errorf("after clear: %v", e)
	}

	c.appendAudio(noise(2400), 2400) // now exactly 100 ms
	c.send(map[string]any{"type": "input_audio_buffer.commit"})
	c.expect("input_audio_buffer.committed")
}

func TestResponseAlreadyActive(t *testing.T) {
	_, c := openSession(t, Options{DeltaInterval: 10 * time.Millisecond})

	c.send(map[string]any{"type": "response.create"})
	c.expect("response.created")
	c.send(map[string]any{"type": "response.create", "event_id": "r_2"})
	ev, _ := c.until("error")
	if e := obj(ev, "error"); e["code"] != "conversation_already_has_active_response" || e["event_id"] != "r_2" {
		t.Errorf("error %v", e)
	}
	done, _ := c.until("response.done")
	if obj(done, "response")["status"] != "completed" {
		t.Errorf("first response %v", done)
	}
	c.send(map[string]any{"type": "response.create"})
	c.expect("response.created")
}

func TestCancel(t *testing.T) {
	_, c := openSession(t, Options{DeltaInterval: time.Second})

	c.send(map[string]any{"type": "response.cancel", "event_id": "x_1"})
	if e := obj(c.expect("error"), "error"); e["code"] != "response_cancel_not_active" || e["event_id"] != "x_1" {
		t.Errorf("error %v", e)
	}

	c.send(map[string]any{"type": "response.create"})
	c.until("response.output_audio.delta")
	start := time.Now()
	c.send(map[string]any{"type": "response.cancel"})
	tr := readTurn(t, c)
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("response.done %v after cancel: the pacing wait did not stop", d)
	}
	if tr.deltas != 0 {
		t.Errorf("%d deltas after cancel", tr.deltas)
	}
	resp := obj(tr.events["response.done"], "response")
	if resp["status"] != "cancelled" || obj(resp, "status_details")["type"] != "cancelled" || obj(resp, "status_details")["reason"] != "client_cancelled" {
		t.Errorf("response.done %v", resp)
	}
	if it := obj(tr.events["response.output_item.done"], "item"); it["status"] != "incomplete" {
		t.Errorf("output item %v", it)
	}
	if out := num(t, resp, "usage", "output_token_details", "audio_tokens"); out != 2 {
		t.Errorf("output audio tokens %d, want 2 (the one 100 ms delta sent)", out)
	}

	// Not active any more: a new response starts, a cancel is an error again
	// once it is done.
	c.send(map[string]any{"type": "response.create"})
	c.expect("response.created")
	c.send(map[string]any{"type": "response.cancel"})
	readTurn(t, c)
	c.send(map[string]any{"type": "response.cancel"})
	if e := obj(c.expect("error"), "error"); e["code"] != "response_cancel_not_active" {
		t.Errorf("error %v", e)
	}
}

func TestInvalidEvents(t *testing.T) {
	_, c := openSession(t, Options{})

	for _, tc := range []struct {
		name  string
		send  func()
		param any
		code  string
	}{
		{
			name:  "unknown type",
			send:  func() { c.send(map[string]any{"type": "bogus.event", "event_id": "e_1"}) },
			param: "type",
			code:  "invalid_value",
		},
		{
			name:  "not JSON",
			send:  func() { c.sendText("not json") },
			param: nil,
			code:  "invalid_value",
		},
		{
			name:  "truncated JSON",
			send:  func() { c.sendText(`{"type":"session.update","session":{`) },
			param: nil,
			code:  "invalid_value",
		},
		{
			name:  "bad base64",
			send:  func() { c.sendText(`{"type":"input_audio_buffer.append","audio":"!!!!"}`) },
			param: "audio",
			code:  "invalid_value",
		},
		{
			name:  "append without audio",
			send:  func() { c.sendText(`{"type":"input_audio_buffer.append"}`) },
			param: "audio",
			code:  "missing_required_parameter",
		},
		{
			name:  "binary frame",
			send:  func() { c.sendFrame(ws.OpBinary, true, []byte{1, 2, 3}) },
			param: nil,
			code:  "invalid_value",
		},
		{
			name: "bad turn detection",
			send: func() {
				c.send(map[string]any{"type": "session.update", "session": map[string]any{
					"audio": map[string]any{"input": map[string]any{"turn_detection": map[string]any{"type": "magic"}}},
				}})
			},
			param: "session.audio.input.turn_detection.type",
			code:  "invalid_value",
		},
	} {
		tc.send()
		e := obj(c.expect("error"), "error")
		if e["type"] != "invalid_request_error" || e["code"] != tc.code || e["param"] != tc.param {
			t.Errorf("%s: error %v", tc.name, e)
		}
	}

	// The session goes on, with its old config.
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"instructions": "x"}})
	s := obj(c.expect("session.updated"), "session")
	if td := obj(s, "audio", "input")["turn_detection"]; td != nil || s["instructions"] != "x" {
		t.Errorf("session %v", s)
	}
	// An escaped type still works (slow path).
	c.sendText(`{"type":"input_audio_buffer.cle\u0061r"}`)
	c.expect("input_audio_buffer.cleared")
}

func TestPingAndClientClose(t *testing.T) {
	_, c := openSession(t, Options{})

	for _, p := range []string{"hello", ""} {
		c.sendFrame(ws.OpPing, true, []byte(p))
		if f := c.mustFrame(); f.op != ws.OpPong || string(f.payload) != p {
			t.Errorf("got %v %q, want pong %q", f.op, f.payload, p)
		}
	}
	c.sendFrame(ws.OpPong, true, []byte("unsolicited"))
	c.sendFrame(ws.OpClose, true, ws.NewCloseFrameBody(4100, "bye"))
	c.expectClose(4100, "bye")
	c.expectEOF()
}

func TestProtocolErrorCloses1002(t *testing.T) {
	_, c := openSession(t, Options{})
	// Unmasked client frame.
	if err := ws.WriteFrame(c.nc, ws.NewTextFrame([]byte(`{"type":"x"}`))); err != nil {
		t.Fatal(err)
	}
	f := c.mustFrame()
	if code, _ := ws.ParseCloseFrameData(f.payload); f.op != ws.OpClose || code != ws.StatusProtocolError {
		t.Errorf("got %v %q, want close 1002", f.op, f.payload)
	}
	c.expectEOF()
}

func TestFaultClose(t *testing.T) {
	s, url := startServer(t, Options{})
	for _, tc := range []struct {
		fault  map[string]any
		code   ws.StatusCode
		reason string
	}{
		{
			fault:  map[string]any{"type": "mock.fault", "fault": "close", "code": 4321, "reason": "custom reason"},
			code:   4321,
			reason: "custom reason",
		},
		{
			fault:  map[string]any{"type": "mock.fault", "fault": "close"},
			code:   1000,
			reason: "",
		},
		{
			// Cut to the 123 bytes a close frame allows, at a rune boundary.
			fault:  map[string]any{"type": "mock.fault", "fault": "close", "code": "4002", "reason": strings.Repeat("é", 100)},
			code:   4002,
			reason: strings.Repeat("é", 61),
		},
	} {
		c := dial(t, url, ws.Dialer{})
		c.expect("session.created")
		c.send(tc.fault)
		c.expectClose(tc.code, tc.reason)
		c.sendFrame(ws.OpClose, true, ws.NewCloseFrameBody(tc.code, ""))
		c.expectEOF()
	}
	testkit.WaitFor(t, readTimeout, "sessions to end", func() bool { return s.ActiveSessions() == 0 })
}

func TestFaultCloseWithoutEcho(t *testing.T) {
	s := New(Options{})
	s.closeWait = 100 * time.Millisecond
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "ws://" + addr.String()
	c := dial(t, url, ws.Dialer{})
	c.expect("session.created")
	c.send(map[string]any{"type": "mock.fault", "fault": "close", "code": 4000})
	c.expectClose(4000, "")
	// The peer never answers: the mock gives up after closeWait.
	start := time.Now()
	testkit.WaitFor(t, readTimeout, "session to end", func() bool { return s.ActiveSessions() == 0 })
	if d := time.Since(start); d > s.closeWait+500*time.Millisecond {
		t.Errorf("session lingered %v", d)
	}
}

func TestFaultRST(t *testing.T) {
	s, c := openSession(t, Options{})
	c.send(map[string]any{"type": "mock.fault", "fault": "rst"})
	f, err := c.readFrame(readTimeout)
	if err == nil {
		t.Fatalf("got %v frame %q, want a reset", f.op, f.payload)
	}
	if !isReset(err) {
		t.Errorf("read: %v, want ECONNRESET", err)
	}
	testkit.WaitFor(t, readTimeout, "session to end", func() bool { return s.ActiveSessions() == 0 })
}

func TestFaultRSTOverTLS(t *testing.T) {
	s := New(Options{})
	ts := httptest.NewTLSServer(s)
	defer ts.Close()
	defer s.Close()
	d := ws.Dialer{TLSConfig: ts.Client().Transport.(*http.Transport).TLSClientConfig}
	c := dial(t, "wss"+strings.TrimPrefix(ts.URL, "https"), d)
	c.expect("session.created")
	c.send(map[string]any{"type": "mock.fault", "fault": "rst"})
	if f, err := c.readFrame(readTimeout); !isReset(err) {
		t.Errorf("read: %v %v %q, want ECONNRESET", err, f.op, f.payload)
	}
}

func TestFaultStall(t *testing.T) {
	s, c := openSession(t, Options{DeltaInterval: 20 * time.Millisecond})
	c.send(map[string]any{"type": "response.create"})
	c.until("response.output_audio.delta")
	c.send(map[string]any{"type": "mock.fault", "fault": "stall"})
	// Frames already on the wire may still arrive; then nothing.
	deadline := time.Now().Add(readTimeout)
	for {
		f, err := c.readFrame(150 * time.Millisecond)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read: %v, want a timeout", err)
			}
			break
		}
		if f.op != ws.OpText || time.Now().After(deadline) {
			t.Fatalf("still writing after stall: %v %q", f.op, f.payload)
		}
	}
	c.sendFrame(ws.OpPing, true, []byte("anyone?"))
	c.send(map[string]any{"type": "input_audio_buffer.clear"})
	c.expectSilence(200 * time.Millisecond)
	if n := s.ActiveSessions(); n != 1 {
		t.Errorf("ActiveSessions %d, want the stalled session kept", n)
	}

	s.Close()
	c.expectEOF() // no close frame: the session is stalled
	if n := s.ActiveSessions(); n != 0 {
		t.Errorf("ActiveSessions %d after Close", n)
	}
}

func TestFaultError(t *testing.T) {
	_, c := openSession(t, Options{})

	c.send(map[string]any{"type": "mock.fault", "fault": "error", "code": "rate_limit_exceeded"})
	if e := obj(c.expect("error"), "error"); e["type"] != "invalid_request_error" || e["code"] != "rate_limit_exceeded" {
		t.Errorf("error %v", e)
	}
	c.sendFrame(ws.OpPing, true, nil)
	if f := c.mustFrame(); f.op != ws.OpPong {
		t.Errorf("session did not go on: %v", f.op)
	}

	c.send(map[string]any{"type": "mock.fault", "fault": "error", "code": "boom", "error_type": "server_error", "close_code": 4500})
	if e := obj(c.expect("error"), "error"); e["type"] != "server_error" || e["code"] != "boom" {
		t.Errorf("error %v", e)
	}
	c.expectClose(4500, "server_error.boom")
}

func TestFaultExpire(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "mock.fault", "fault": "expire"})
	const msg = "Your session hit the maximum duration of 60 minutes."
	if e := obj(c.expect("error"), "error"); e["code"] != "session_expired" || e["type"] != "invalid_request_error" || e["message"] != msg {
		t.Errorf("error %v", e)
	}
	c.expectClose(ws.StatusGoingAway, msg)
}

func TestFaultEcho(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "mock.fault", "fault": "echo"})

	big := `{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(noise(150000)) + `"}`
	for _, msg := range []string{
		`{"type":"input_audio_buffer.commit"}`,
		"not json at all",
		`{"type":"mock.fault","fault":"close","code":4001}`,
		big,
		"",
	} {
		c.sendText(msg)
		f := c.mustFrame()
		if f.op != ws.OpText || string(f.payload) != msg {
			t.Errorf("echo of %.40q: %v %.40q", msg, f.op, f.payload)
		}
	}

	// A fragmented message with a ping in between: pong first, then the
	// whole message echoed as one frame.
	c.sendFrame(ws.OpText, false, []byte(`{"a":`))
	c.sendFrame(ws.OpPing, true, []byte("mid"))
	c.sendFrame(ws.OpContinuation, true, []byte(`1}`))
	if f := c.mustFrame(); f.op != ws.OpPong || string(f.payload) != "mid" {
		t.Errorf("got %v %q, want pong mid", f.op, f.payload)
	}
	if f := c.mustFrame(); f.op != ws.OpText || string(f.payload) != `{"a":1}` {
		t.Errorf("got %v %q, want the reassembled message", f.op, f.payload)
	}
}

func TestFaultSlow(t *testing.T) {
	_, url := startServer(t, Options{DeltaBytes: 9600}) // the 1 s tone in 5 deltas
	c := dial(t, url, ws.Dialer{})
	c.expect("session.created")
	c.send(map[string]any{"type": "mock.fault", "fault": "slow", "delta_interval_ms": 40})
	c.send(map[string]any{"type": "response.create"})
	c.until("response.output_audio.delta")
	start := time.Now()
	tr := readTurn(t, c)
	if tr.deltas != 4 {
		t.Fatalf("%d more deltas, want 4", tr.deltas)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("4 paced deltas took %v, want >= 4 x 40 ms", d)
	}
}

func TestUnknownFault(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "mock.fault", "fault": "explode", "event_id": "f_1"})
	if e := obj(c.expect("error"), "error"); e["code"] != "invalid_value" || e["param"] != "fault" || e["event_id"] != "f_1" {
		t.Errorf("error %v", e)
	}
}

func TestAPIKey(t *testing.T) {
	const key = "sk-good"
	_, url := startServer(t, Options{APIKey: key})
	accepted := []struct {
		name string
		url  string
		d    ws.Dialer
	}{
		{
			name: "bearer",
			url:  url,
			d:    withHeader(http.Header{"Authorization": {"Bearer " + key}}),
		},
		{
			name: "api-key header",
			url:  url,
			d:    withHeader(http.Header{"Api-Key": {key}}),
		},
		{
			name: "api-key query",
			url:  url + "/?api-key=" + key,
			d:    ws.Dialer{},
		},
		{
			name: "subprotocol",
			url:  url,
			d:    ws.Dialer{Protocols: []string{"realtime", insecureKeyPrefix + key}},
		},
	}
	for _, tc := range accepted {
		c := dial(t, tc.url, tc.d)
		if ev := c.event(); ev["type"] != "session.created" {
			t.Errorf("%s: got %v, want session.created", tc.name, ev)
		}
		if tc.name == "subprotocol" && c.hs.Protocol != "realtime" {
			t.Errorf("%s: answered subprotocol %q, want realtime", tc.name, c.hs.Protocol)
		}
	}

	rejected := []struct {
		name string
		d    ws.Dialer
	}{
		{
			name: "wrong bearer",
			d:    withHeader(http.Header{"Authorization": {"Bearer sk-bad"}}),
		},
		{
			name: "wrong subprotocol",
			d:    ws.Dialer{Protocols: []string{"realtime", insecureKeyPrefix + "sk-bad"}},
		},
		{
			name: "none",
			d:    ws.Dialer{},
		},
	}
	for _, tc := range rejected {
		c := dial(t, url, tc.d)
		ev := c.event()
		e := obj(ev, "error")
		if ev["type"] != "error" || e["type"] != "invalid_request_error" || e["code"] != "invalid_api_key" {
			t.Errorf("%s: got %v, want invalid_api_key", tc.name, ev)
		}
		if strings.Contains(toJSON(ev), "sk-bad") {
			t.Errorf("%s: the error repeats the key: %v", tc.name, ev)
		}
		c.expectClose(3000, "invalid_request_error.invalid_api_key")
		c.sendFrame(ws.OpClose, true, ws.NewCloseFrameBody(3000, ""))
		c.expectEOF()
	}
}

func TestSubprotocol(t *testing.T) {
	_, url := startServer(t, Options{})
	for _, tc := range []struct {
		offered []string
		want    string
	}{
		{
			offered: []string{"realtime"},
			want:    "realtime",
		},
		{
			offered: []string{insecureKeyPrefix + "sk-x", "realtime"},
			want:    "realtime",
		},
		{
			offered: []string{insecureKeyPrefix + "sk-x"},
			want:    "",
		},
		{
			offered: nil,
			want:    "",
		},
	} {
		deflate := httphead.Option{Name: []byte("permessage-deflate")}
		c := dial(t, url, ws.Dialer{Protocols: tc.offered, Extensions: []httphead.Option{deflate}})
		if c.hs.Protocol != tc.want {
			t.Errorf("offered %v: answered %q, want %q", tc.offered, c.hs.Protocol, tc.want)
		}
		if len(c.hs.Extensions) != 0 {
			t.Errorf("negotiated extensions %v, want none", c.hs.Extensions)
		}
		c.expect("session.created")
	}
}

func TestOnHandshakeAndServeHTTP(t *testing.T) {
	var mu sync.Mutex
	var seen []*http.Request
	s := New(Options{OnHandshake: func(r *http.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
	}})
	ts := httptest.NewServer(s) // ServeHTTP behind a server the mock does not own
	defer ts.Close()
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/realtime?model=m1"
	c := dial(t, url, withHeader(http.Header{"X-Injected": {"yes"}}))
	c.expect("session.created")

	mu.Lock()
	if len(seen) != 1 || seen[0].Header.Get("X-Injected") != "yes" || seen[0].URL.Path != "/v1/realtime" || seen[0].URL.Query().Get("model") != "m1" {
		t.Errorf("OnHandshake saw %v", seen)
	}
	mu.Unlock()

	// Close ends sessions served through ServeHTTP too, with 1001.
	s.Close()
	c.expectClose(ws.StatusGoingAway, "mock upstream shutting down")
	if n := s.ActiveSessions(); n != 0 {
		t.Errorf("ActiveSessions %d after Close", n)
	}
	resp, err := http.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Close: HTTP %d, want 503", resp.StatusCode)
	}
}

func TestCloseWithOpenSessions(t *testing.T) {
	s := New(Options{DeltaInterval: 50 * time.Millisecond})
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + addr.String()

	idle := dial(t, url, ws.Dialer{})
	idle.expect("session.created")
	streaming := dial(t, url, ws.Dialer{})
	streaming.expect("session.created")
	streaming.send(map[string]any{"type": "response.create"})
	streaming.until("response.output_audio.delta")
	stalled := dial(t, url, ws.Dialer{})
	stalled.expect("session.created")
	stalled.send(map[string]any{"type": "mock.fault", "fault": "stall"})
	// A client that writes and never reads: the echoes fill the socket
	// buffers, and the session blocks in a write.
	notReading := dial(t, url, ws.Dialer{})
	notReading.send(map[string]any{"type": "mock.fault", "fault": "echo"})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		f := ws.MaskFrame(ws.NewTextFrame(bytes.Repeat([]byte("x"), 64<<10)))
		for ws.WriteFrame(notReading.nc, f) == nil {
		}
	}()
	testkit.WaitFor(t, readTimeout, "4 sessions", func() bool { return s.ActiveSessions() == 4 })
	time.Sleep(50 * time.Millisecond) // let the buffers fill

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if n := s.ActiveSessions(); n != 0 {
		t.Errorf("ActiveSessions %d after Close", n)
	}
	idle.expectClose(ws.StatusGoingAway, "mock upstream shutting down")
	streaming.expectClose(ws.StatusGoingAway, "mock upstream shutting down")
	stalled.expectEOF()
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Start("127.0.0.1:0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if _, err := tryDial(url, ws.Dialer{}); err == nil {
		t.Errorf("dial after Close succeeded")
	}
	for _, c := range []*client{idle, streaming, stalled, notReading} {
		c.nc.Close()
	}
	<-writerDone
	goleak.VerifyNone(t)
}

func TestServeReturnsNilAfterClose(t *testing.T) {
	s := New(Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	c := dial(t, "ws://"+ln.Addr().String(), ws.Dialer{})
	c.expect("session.created")
	s.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v, want nil", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Serve did not return after Close")
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln2); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
}

func TestServerVAD(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "audio": map[string]any{
		"input": map[string]any{
			"turn_detection": map[string]any{"type": "server_vad", "silence_duration_ms": 200},
			"transcription":  map[string]any{"model": "gpt-4o-transcribe"},
		},
	}}})
	td := obj(c.expect("session.updated"), "session", "audio", "input", "turn_detection")
	if td["type"] != "server_vad" || td["silence_duration_ms"] != 200.0 || td["prefix_padding_ms"] != 300.0 || td["create_response"] != true {
		t.Errorf("turn_detection %v", td)
	}

	var stream []byte
	stream = append(stream, make([]byte, 48000)...) // 1 s of silence
	stream = append(stream, tone(300, 8000)...)     // speech
	stream = append(stream, make([]byte, 14400)...) // 300 ms of silence
	c.appendAudio(stream[:48000], 4800)
	c.sendFrame(ws.OpPing, true, []byte("sync"))
	if f := c.mustFrame(); f.op != ws.OpPong {
		t.Fatalf("silence produced %v %q", f.op, f.payload)
	}
	c.appendAudio(stream[48000:], 959) // about 20 ms, odd: samples straddle appends

	started := c.expect("input_audio_buffer.speech_started")
	if ms := num(t, started, "audio_start_ms"); ms != 700 {
		t.Errorf("audio_start_ms %d, want 1000 - 300 prefix padding", ms)
	}
	stopped := c.expect("input_audio_buffer.speech_stopped")
	if ms := num(t, stopped, "audio_end_ms"); ms != 1500 {
		t.Errorf("audio_end_ms %d, want 1000 + 300 + 200 silence", ms)
	}
	item := str(started["item_id"])
	if stopped["item_id"] != item || c.expect("input_audio_buffer.committed")["item_id"] != item {
		t.Errorf("item ids differ: %v %v", started, stopped)
	}
	c.expect("conversation.item.added")
	c.expect("conversation.item.done")
	if tr := c.expect("conversation.item.input_audio_transcription.completed"); tr["item_id"] != item {
		t.Errorf("transcription %v", tr)
	}
	tr := readTurn(t, c)
	if want := stream[700*48 : 1500*48]; !bytes.Equal(tr.audio, want) {
		t.Errorf("response echoes %d bytes, want the %d committed (prefix padding through silence)", len(tr.audio), len(want))
	}
	checkUsage(t, obj(tr.events["response.done"], "response"), 10, 8, 0, len(strings.Fields(tr.transcript)), 16)
}

func TestServerVADBargeIn(t *testing.T) {
	_, c := openSession(t, Options{DeltaInterval: 50 * time.Millisecond})
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{
		"input": map[string]any{"turn_detection": map[string]any{"type": "server_vad"}},
	}}})
	c.expect("session.updated")
	c.appendAudio(append(tone(500, 8000), make([]byte, 24000)...), 4800)
	c.until("response.output_audio.delta")
	c.appendAudio(tone(100, 8000), 4800)
	done, before := c.until("response.done")
	if !slices.ContainsFunc(before, func(ev map[string]any) bool { return ev["type"] == "input_audio_buffer.speech_started" }) {
		t.Errorf("no speech_started before response.done: %v", before)
	}
	if sd := obj(done, "response", "status_details"); sd["type"] != "cancelled" || sd["reason"] != "turn_detected" {
		t.Errorf("response.done %v", done)
	}
}

func TestServerVADMuLaw(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{
		"input":  map[string]any{"format": map[string]any{"type": "audio/pcmu"}, "turn_detection": map[string]any{"type": "server_vad", "create_response": false}},
		"output": map[string]any{"format": map[string]any{"type": "audio/pcmu"}},
	}}})
	c.expect("session.updated")
	var stream []byte
	for i := range 2400 { // 300 ms
		stream = append(stream, linearToUlaw(int16(8000*sinTable(i))))
	}
	stream = append(stream, bytes.Repeat([]byte{0xff}, 4800)...) // 600 ms of mu-law silence
	c.appendAudio(stream, 160)
	c.expect("input_audio_buffer.speech_started")
	c.expect("input_audio_buffer.speech_stopped")
	c.expect("input_audio_buffer.committed")
	c.expect("conversation.item.added")
	c.expect("conversation.item.done")
	c.sendFrame(ws.OpPing, true, nil)
	if f := c.mustFrame(); f.op != ws.OpPong {
		t.Errorf("create_response false still produced %v %q", f.op, f.payload)
	}
}

func sinTable(i int) float64 {
	return []float64{0, 0.7, 1, 0.7, 0, -0.7, -1, -0.7}[i%8]
}

func TestSessionUpdateMergesAndValidates(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "session.update", "session": map[string]any{
		"id": "sess_hijack", "audio": map[string]any{"input": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 16000}}},
	}})
	if e := obj(c.expect("error"), "error"); e["param"] != "session.audio.input.format.rate" {
		t.Errorf("error %v", e)
	}
	c.send(map[string]any{"type": "session.update", "session": map[string]any{
		"id": "sess_hijack", "audio": map[string]any{"input": map[string]any{"turn_detection": map[string]any{"type": "semantic_vad"}}},
	}})
	s := obj(c.expect("session.updated"), "session")
	if s["id"] == "sess_hijack" {
		t.Errorf("session.update changed the id")
	}
	if td := obj(s, "audio", "input", "turn_detection"); td["type"] != "semantic_vad" || td["eagerness"] != "auto" {
		t.Errorf("turn_detection %v", td)
	}
	if f := obj(s, "audio", "input", "format"); f["type"] != "audio/pcm" {
		t.Errorf("format %v", f)
	}
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}})
	if td, ok := obj(c.expect("session.updated"), "session", "audio", "input")["turn_detection"]; !ok || td != nil {
		t.Errorf("turn_detection %v, want null again", td)
	}
}

func TestConversationItemEvents(t *testing.T) {
	_, c := openSession(t, Options{})
	c.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{
		"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "Hi"}},
	}})
	added := c.expect("conversation.item.added")
	id := str(obj(added, "item")["id"])
	if !strings.HasPrefix(id, "item_") || added["previous_item_id"] != nil {
		t.Errorf("added %v", added)
	}
	c.expect("conversation.item.done")
	c.send(map[string]any{"type": "conversation.item.truncate", "item_id": id, "content_index": 0, "audio_end_ms": 1500})
	if ev := c.expect("conversation.item.truncated"); ev["item_id"] != id || ev["audio_end_ms"] != 1500.0 {
		t.Errorf("truncated %v", ev)
	}
	c.send(map[string]any{"type": "conversation.item.delete", "item_id": id})
	if ev := c.expect("conversation.item.deleted"); ev["item_id"] != id {
		t.Errorf("deleted %v", ev)
	}
	for _, typ := range []string{"conversation.item.truncate", "conversation.item.delete"} {
		c.send(map[string]any{"type": typ, "event_id": "evt_" + typ})
		if e := obj(c.expect("error"), "error"); e["code"] != "missing_required_parameter" || e["param"] != "item_id" || e["event_id"] != "evt_"+typ {
			t.Errorf("%s without item_id: %v", typ, e)
		}
	}
}

func TestEventIDsUnique(t *testing.T) {
	_, url := startServer(t, Options{})
	c := dial(t, url, ws.Dialer{})
	seen := map[string]bool{str(c.expect("session.created")["event_id"]): true}
	c.send(map[string]any{"type": "response.create"})
	for {
		ev := c.event()
		id := str(ev["event_id"])
		if seen[id] {
			t.Fatalf("event_id %s twice", id)
		}
		seen[id] = true
		if ev["type"] == "response.done" {
			break
		}
	}
}

func TestMessageTooBig(t *testing.T) {
	_, c := openSession(t, Options{})
	// Only the header: the mock must refuse on the declared length.
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: maxMessageBytes + 1, Masked: true}
	if err := ws.WriteHeader(c.nc, h); err != nil {
		t.Fatal(err)
	}
	c.expectClose(ws.StatusMessageTooBig, "message too big")
}
