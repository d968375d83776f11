package talk

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// behavior scripts the fake realtime server.
type behavior struct {
	rejectStatus int           // answer the upgrade with this HTTP status
	errorOn      string        // client event type answered with an error event
	closeOn      string        // client event type answered with close 1011
	dropOn       string        // client event type answered by dropping the TCP connection
	stallAfter   string        // client event type after which the server goes silent
	deltas       int           // audio deltas per response (default 3)
	status       string        // response.done status (default completed)
	pingEvery    time.Duration // ping the client while it streams
}

// fakeServer is a tiny GA-dialect realtime backend on one connection.
type fakeServer struct {
	b behavior

	mu       sync.Mutex
	received []map[string]any // client events in arrival order
	header   http.Header      // upgrade request headers
	protocol string           // subprotocol chosen
	pongs    int
	gotClose bool
}

func (s *fakeServer) events() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.received...)
}

// serve runs the script on conn until the client leaves.
func (s *fakeServer) serve(conn net.Conn) {
	defer conn.Close()
	if !s.upgrade(conn) {
		return
	}
	c := &fakeConn{s: s, conn: conn}
	if s.b.pingEvery > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go c.ping(s.b.pingEvery, stop)
	}
	if c.send(map[string]any{"type": "session.created", "event_id": "event_1",
		"session": map[string]any{"id": "sess_T1", "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}}) != nil {
		return
	}
	rd := &wsutil.Reader{Source: conn, State: ws.StateServerSide}
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			return
		}
		if hdr.OpCode.IsControl() {
			if !c.control(rd, hdr) {
				return
			}
			continue
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			return
		}
		var ev map[string]any
		if err := json.Unmarshal(data, &ev); err != nil {
			return
		}
		s.mu.Lock()
		s.received = append(s.received, ev)
		s.mu.Unlock()
		if !c.handle(ev) {
			return
		}
	}
}

// upgrade answers the WebSocket upgrade on conn (or refuses it with the
// script's rejectStatus) and records the request's headers and the
// subprotocol; false if conn did not become a WebSocket.
func (s *fakeServer) upgrade(conn net.Conn) bool {
	hdr := http.Header{}
	u := ws.Upgrader{
		Protocol: func(p []byte) bool { return string(p) == "realtime" },
		OnHeader: func(k, v []byte) error {
			hdr.Add(string(k), string(v))
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if s.b.rejectStatus != 0 {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(s.b.rejectStatus), ws.RejectionReason("no entry"))
			}
			return nil, nil
		},
	}
	hs, err := u.Upgrade(conn)
	s.mu.Lock()
	s.header, s.protocol = hdr, hs.Protocol
	s.mu.Unlock()
	return err == nil
}

// fakeConn is a fakeServer's side of one WebSocket.
type fakeConn struct {
	s    *fakeServer
	conn net.Conn
	wmu  sync.Mutex // serialises writes

	buffered  []byte // audio appended since the last commit
	committed []byte // audio of the last commit
	stalled   bool   // the script went silent
}

// send writes v as a text message.
func (c *fakeConn) send(v any) error {
	p, _ := json.Marshal(v)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteServerText(c.conn, p)
}

func (c *fakeConn) writeFrame(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteFrame(c.conn, f)
}

// ping pings the client every period until stop or a failed write.
func (c *fakeConn) ping(every time.Duration, stop <-chan struct{}) {
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-tk.C:
			if c.writeFrame(ws.NewPingFrame([]byte("hb"))) != nil {
				return
			}
		case <-stop:
			return
		}
	}
}

// control counts a pong or a close frame and answers the control frame of
// hdr as the protocol wants; false once the connection is done.
func (c *fakeConn) control(rd *wsutil.Reader, hdr ws.Header) bool {
	switch hdr.OpCode {
	case ws.OpPong:
		c.s.mu.Lock()
		c.s.pongs++
		c.s.mu.Unlock()
	case ws.OpClose:
		c.s.mu.Lock()
		c.s.gotClose = true
		c.s.mu.Unlock()
	}
	var reply bytes.Buffer
	herr := wsutil.ControlHandler{Src: rd, Dst: &reply, State: ws.StateServerSide}.Handle(hdr)
	c.wmu.Lock()
	_, _ = c.conn.Write(reply.Bytes())
	c.wmu.Unlock()
	return herr == nil
}

// handle answers the client event ev: with the script's failure where it
// names ev's type, nothing once stalled, else as a realtime backend would.
// False: hang up.
func (c *fakeConn) handle(ev map[string]any) bool {
	typ, _ := ev["type"].(string)
	if c.stalled {
		return true
	}
	switch typ {
	case c.s.b.errorOn:
		_ = c.send(map[string]any{"type": "error", "event_id": "event_E", "error": map[string]any{
			"type": "invalid_request_error", "code": "test_error", "message": "scripted failure"}})
		return true
	case c.s.b.closeOn:
		_ = c.writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusInternalServerError, "scripted close")))
		return false
	case c.s.b.dropOn:
		return false
	case c.s.b.stallAfter:
		c.stalled = true
		return true
	}
	switch typ {
	case "session.update":
		_ = c.send(map[string]any{"type": "session.updated", "session": ev["session"]})
	case "input_audio_buffer.append":
		b, _ := base64.StdEncoding.DecodeString(ev["audio"].(string))
		c.buffered = append(c.buffered, b...)
	case "input_audio_buffer.commit":
		c.committed, c.buffered = c.buffered, nil
		_ = c.send(map[string]any{"type": "input_audio_buffer.committed", "item_id": "item_U1"})
	case "response.create":
		c.respond()
	}
	return true
}

// respond answers response.create: the committed audio back in the
// script's number of deltas (default 3) with a transcript, then
// response.done with the script's status (default completed) and usage.
func (c *fakeConn) respond() {
	_ = c.send(map[string]any{"type": "response.created", "response": map[string]any{"id": "resp_R1", "status": "in_progress"}})
	n := c.s.b.deltas
	if n == 0 {
		n = 3
	}
	if n > 0 {
		per := len(c.committed) / n
		for i := range n {
			_ = c.send(map[string]any{"type": "response.output_audio.delta", "response_id": "resp_R1",
				"delta": base64.StdEncoding.EncodeToString(c.committed[i*per : (i+1)*per])})
		}
		_ = c.send(map[string]any{"type": "response.output_audio_transcript.delta", "response_id": "resp_R1", "delta": "Beep "})
		_ = c.send(map[string]any{"type": "response.output_audio_transcript.delta", "response_id": "resp_R1", "delta": "received."})
	}
	status := c.s.b.status
	if status == "" {
		status = "completed"
	}
	resp := map[string]any{"id": "resp_R1", "status": status,
		"usage": map[string]any{"total_tokens": 42, "input_tokens": 30, "output_tokens": 12}}
	if status == "failed" {
		resp["status_details"] = map[string]any{"type": "failed", "error": map[string]any{
			"type": "insufficient_quota", "code": "insufficient_quota", "message": "You exceeded your current quota"}}
	}
	_ = c.send(map[string]any{"type": "response.done", "response": resp})
}

// pipeRun runs a turn against s over an in-memory pipe. Call inside a
// synctest bubble: timeouts then take no real time.
func pipeRun(t *testing.T, s *fakeServer, opts Options) (*result, string, error) {
	t.Helper()
	var wg sync.WaitGroup
	defer wg.Wait()
	opts.URL = cmp.Or(opts.URL, "ws://tether.test/v1/realtime?model=gpt-realtime")
	opts.netDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != "tether.test:80" {
			return nil, fmt.Errorf("dialed %s", addr)
		}
		client, server := net.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serve(server)
		}()
		return client, nil
	}
	var out bytes.Buffer
	opts.Out = &out
	res, err := run(t.Context(), opts)
	return res, out.String(), err
}

func TestTurnWithTone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeServer{}
		h := http.Header{}
		h.Set("Authorization", "Bearer tok-123")
		res, out, err := pipeRun(t, s, Options{Headers: h})
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, out)
		}
		if res.SessionID != "sess_T1" || res.Model != "gpt-realtime" {
			t.Errorf("session = %q model %q", res.SessionID, res.Model)
		}
		if res.AudioSentBytes != bytesPerSecond {
			t.Errorf("sent %d bytes of audio, want 1 s = %d", res.AudioSentBytes, bytesPerSecond)
		}
		// The fake answers with the committed audio, split in 3 deltas.
		if res.AudioBytes != bytesPerSecond || res.AudioDeltas != 3 {
			t.Errorf("received %d bytes in %d deltas, want %d in 3", res.AudioBytes, res.AudioDeltas, bytesPerSecond)
		}
		if res.Status != "completed" || res.ResponseID != "resp_R1" {
			t.Errorf("response %q status %q", res.ResponseID, res.Status)
		}
		if res.TotalTokens != 42 || res.InputTokens != 30 || res.OutputTokens != 12 {
			t.Errorf("usage = %d/%d/%d", res.TotalTokens, res.InputTokens, res.OutputTokens)
		}
		if res.Transcript != "Beep received." {
			t.Errorf("transcript = %q", res.Transcript)
		}
		for _, want := range []string{"sess_T1", "resp_R1 completed", "first audio:", "1.00 s of audio (48000 bytes in 3 deltas)",
			"42 tokens (input 30, output 12)", "440 Hz tone", "ok:"} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
		}

		s.mu.Lock()
		defer s.mu.Unlock()
		if s.protocol != "realtime" {
			t.Errorf("subprotocol = %q, want realtime", s.protocol)
		}
		if got := s.header.Get("Authorization"); got != "Bearer tok-123" {
			t.Errorf("Authorization header = %q", got)
		}
		if !s.gotClose {
			t.Error("talk did not close the WebSocket with a close frame")
		}
		checkClientEvents(t, s.received, bytesPerSecond)
	})
}

// checkClientEvents asserts the GA turn shape: session.update (manual turns),
// appends that add up to the audio, commit, response.create.
func checkClientEvents(t *testing.T, evs []map[string]any, audioBytes int) {
	t.Helper()
	if len(evs) < 4 {
		t.Fatalf("server got %d events", len(evs))
	}
	up := evs[0]
	if up["type"] != "session.update" {
		t.Fatalf("first event %v, want session.update", up["type"])
	}
	sess := up["session"].(map[string]any)
	if sess["type"] != "realtime" {
		t.Errorf("session.type = %v, want realtime (GA shape)", sess["type"])
	}
	in := sess["audio"].(map[string]any)["input"].(map[string]any)
	if td, ok := in["turn_detection"]; !ok || td != nil {
		t.Errorf("turn_detection = %v (present %v), want null", td, ok)
	}
	if f := in["format"].(map[string]any); f["type"] != "audio/pcm" || f["rate"] != float64(24000) {
		t.Errorf("input format = %v", f)
	}
	total := 0
	for _, ev := range evs[1 : len(evs)-2] {
		if ev["type"] != "input_audio_buffer.append" {
			t.Fatalf("event %v between session.update and commit", ev["type"])
		}
		b, err := base64.StdEncoding.DecodeString(ev["audio"].(string))
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	if total != audioBytes {
		t.Errorf("appended %d bytes, want %d", total, audioBytes)
	}
	if evs[len(evs)-2]["type"] != "input_audio_buffer.commit" || evs[len(evs)-1]["type"] != "response.create" {
		t.Errorf("last events %v, %v; want commit, response.create", evs[len(evs)-2]["type"], evs[len(evs)-1]["type"])
	}
}

func TestTurnWithWAV(t *testing.T) {
	pcm := Tone(2.5)
	path := filepath.Join(t.TempDir(), "hello.wav")
	if err := os.WriteFile(path, EncodeWAV(pcm), 0o600); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		s := &fakeServer{}
		res, out, err := pipeRun(t, s, Options{WAV: path})
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, out)
		}
		if res.AudioSentBytes != len(pcm) || res.AudioBytes != len(pcm)/3*3 {
			t.Errorf("sent %d received %d, want %d", res.AudioSentBytes, res.AudioBytes, len(pcm))
		}
		if !strings.Contains(out, "2.50 s ("+fmt.Sprint(len(pcm))+" bytes, "+path+")") {
			t.Errorf("report:\n%s", out)
		}
		checkClientEvents(t, s.events(), len(pcm))
	})
}

func TestTurnAnswersPings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A server that pings while talk waits for a response that never
		// comes: talk answers every ping, and still times out.
		s := &fakeServer{b: behavior{stallAfter: "response.create", pingEvery: time.Second}}
		_, _, err := pipeRun(t, s, Options{Timeout: 5 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "timed out after 5s waiting for response.done") {
			t.Fatalf("err = %v, want a timeout", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.pongs < 3 {
			t.Errorf("server got %d pongs for ~4 pings", s.pongs)
		}
	})
}

func TestTurnFailures(t *testing.T) {
	cases := []struct {
		name string
		b    behavior
		want string
	}{
		{"rejected upgrade", behavior{rejectStatus: http.StatusServiceUnavailable}, "HTTP 503"},
		{"error event", behavior{errorOn: "response.create"}, "waiting for response.done: error event: invalid_request_error/test_error: scripted failure"},
		{"error on session.update", behavior{errorOn: "session.update"}, "error event: invalid_request_error/test_error"},
		{"close before response.done", behavior{closeOn: "response.create"}, "server closed the WebSocket (code 1011 \"scripted close\") while waiting for response.done"},
		{"drop before response.done", behavior{dropOn: "response.create"}, "connection dropped without a close frame while waiting for response.done"},
		{"no audio", behavior{deltas: -1}, "held no audio"},
		{"failed response", behavior{status: "failed", deltas: -1}, `status "failed": insufficient_quota/insufficient_quota`},
		{"cancelled response", behavior{status: "cancelled"}, `status "cancelled"`},
		{"stalled server", behavior{stallAfter: "session.update"}, "timed out after 3s waiting for response.done"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				_, out, err := pipeRun(t, &fakeServer{b: tc.b}, Options{Timeout: 3 * time.Second})
				if err == nil {
					t.Fatalf("Run succeeded; want an error containing %q\n%s", tc.want, out)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
				}
				if strings.Contains(out, "ok:") {
					t.Errorf("report of a failed turn says ok:\n%s", out)
				}
				if el := time.Since(start); el > 3*time.Second {
					t.Errorf("took %s, more than the timeout", el)
				}
			})
		})
	}
}

func TestSilentServerBeforeSessionCreated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A TCP peer that never answers the upgrade.
		client, server := net.Pipe()
		defer server.Close()
		go func() { _, _ = io.Copy(io.Discard, server) }()
		err := Run(t.Context(), Options{
			URL:     "ws://tether.test/v1/realtime",
			Timeout: 2 * time.Second,
			netDial: func(context.Context, string, string) (net.Conn, error) { return client, nil },
		})
		if err == nil || !strings.Contains(err.Error(), "timed out after 2s waiting for the WebSocket handshake") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{URL: "http://x/v1/realtime"}, "want ws://"},
		{Options{URL: "ws:///nohost"}, "want ws://"},
		{Options{URL: "ws://x/", WAV: filepath.Join(t.TempDir(), "missing.wav")}, "no such file"},
	} {
		err := Run(t.Context(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// TestOverTCP runs a turn through a real socket and the real dialer.
func TestOverTCP(t *testing.T) {
	srv := testkit.Serve(t, (&fakeServer{}).serve)
	var out bytes.Buffer
	err := Run(t.Context(), Options{
		URL:     "ws://" + srv.Addr() + "/v1/realtime?model=gpt-realtime&api-key=sk-secret",
		Timeout: 10 * time.Second,
		Out:     &out,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "sk-secret") {
		t.Errorf("report shows the api-key query value:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "api-key=REDACTED") {
		t.Errorf("report lacks the redacted URL:\n%s", out.String())
	}
}

// TestRejectionOverTCP: a refused upgrade fails at once with its status and
// body, though the server keeps the connection open.
func TestRejectionOverTCP(t *testing.T) {
	const body = `{"error":{"type":"invalid_request_error","code":"invalid_api_key"}}`
	srv := testkit.Serve(t, func(conn net.Conn) {
		defer conn.Close()
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		fmt.Fprintf(conn, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		_, _ = io.Copy(io.Discard, conn) // until talk hangs up
	})
	start := time.Now()
	err := Run(t.Context(), Options{URL: "ws://" + srv.Addr() + "/v1/realtime", Timeout: 5 * time.Second})
	if want := "handshake: HTTP 401 Unauthorized: " + body; err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %v: the body read must not wait for the connection to close", d)
	}
}

func TestParseErrorsAreNotMistakenForSuccess(t *testing.T) {
	// A closed events channel with a nil error (reader stopped cleanly)
	// must still be a failure.
	tr := &waiter{phase: "response.done"}
	if err := tr.closedErr(io.EOF); err == nil || !strings.Contains(err.Error(), "without a close frame") {
		t.Errorf("closedErr(EOF) = %v", err)
	}
	if err := tr.closedErr(errors.New("boom")); err == nil {
		t.Error("closedErr(boom) = nil")
	}
}
