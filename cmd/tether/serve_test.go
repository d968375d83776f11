package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/upstreams"
	"github.com/tetherproxy/tether/upstreams/mock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects log output safely across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Lifecycle.DrainTimeout = 2 * time.Second
	return cfg
}

// wsClient is a minimal realtime client for tests.
type wsClient struct {
	t    *testing.T
	conn net.Conn
}

func dialClient(t *testing.T, url string, hdr http.Header, protocols ...string) (*wsClient, ws.Handshake) {
	t.Helper()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(hdr), Protocols: protocols, Timeout: 5 * time.Second}
	conn, br, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if br != nil {
		conn = &prefixConn{Conn: conn, r: io.MultiReader(br, conn)}
	}
	return &wsClient{t: t, conn: conn}, hs
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *wsClient) send(v any) {
	b, _ := json.Marshal(v)
	if err := wsutil.WriteClientText(c.conn, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// event reads the next server event (answering pings), or returns the close code.
func (c *wsClient) event() (map[string]any, uint16) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		h, err := ws.ReadHeader(c.conn)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.conn, p); err != nil {
			c.t.Fatalf("read payload: %v", err)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewPongFrame(p)))
		case ws.OpClose:
			if len(p) < 2 {
				return nil, 1005
			}
			return nil, binary.BigEndian.Uint16(p)
		case ws.OpText:
			var ev map[string]any
			if err := json.Unmarshal(p, &ev); err != nil {
				c.t.Fatalf("bad event %q: %v", p, err)
			}
			return ev, 0
		}
	}
}

func (c *wsClient) waitFor(typ string) map[string]any {
	c.t.Helper()
	for {
		ev, code := c.event()
		if code != 0 {
			c.t.Fatalf("closed with %d while waiting for %s", code, typ)
		}
		if ev["type"] == typ {
			return ev
		}
		if ev["type"] == "error" {
			c.t.Fatalf("error event while waiting for %s: %v", typ, ev)
		}
	}
}

// voiceTurn runs session.update -> append -> commit -> response.create ->
// response.done and returns the number of audio bytes received.
func voiceTurn(t *testing.T, c *wsClient) int {
	t.Helper()
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "be brief"}})
	c.waitFor("session.updated")
	audio := make([]byte, 9600) // 200 ms of pcm16 at 24 kHz
	for i := range audio {
		audio[i] = byte(i)
	}
	c.send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(audio)})
	c.send(map[string]any{"type": "input_audio_buffer.commit"})
	c.waitFor("input_audio_buffer.committed")
	c.send(map[string]any{"type": "response.create"})
	got := 0
	for {
		ev, code := c.event()
		if code != 0 {
			t.Fatalf("closed with %d mid-response", code)
		}
		switch ev["type"] {
		case "response.output_audio.delta":
			b, _ := base64.StdEncoding.DecodeString(ev["delta"].(string))
			got += len(b)
		case "response.done":
			return got
		case "error":
			t.Fatalf("error event: %v", ev)
		}
	}
}

func TestServeWithBuiltInMock(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := start(testConfig(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if !strings.Contains(logs.String(), "built-in mock upstream") {
		t.Fatalf("log does not say the mock is used:\n%s", logs.String())
	}
	url := "ws://" + a.clientLn.Addr().String() + "/v1/realtime?model=gpt-realtime"
	c, hs := dialClient(t, url, nil, "realtime", "openai-insecure-api-key.ek_browsersecret")
	if hs.Protocol != "realtime" {
		t.Fatalf("subprotocol %q, want realtime", hs.Protocol)
	}
	created := c.waitFor("session.created")
	if created["session"].(map[string]any)["model"] != "gpt-realtime" {
		t.Fatalf("model not passed through: %v", created)
	}
	if n := voiceTurn(t, c); n != 9600 {
		t.Fatalf("got %d audio bytes back, want 9600", n)
	}
	admin := "http://" + a.adminLn.Addr().String()
	var rows []map[string]any
	getJSON(t, admin+"/sessions", &rows)
	if len(rows) != 1 || rows[0]["responses"].(float64) != 1 {
		t.Fatalf("sessions = %v", rows)
	}
	_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(1000, "bye"))
	if _, code := c.event(); code != 1000 {
		t.Fatalf("close echo %d", code)
	}
	c.conn.Close()
	waitFor(t, func() bool { return a.mgr.Len() == 0 })
	if strings.Contains(logs.String(), "ek_browsersecret") {
		t.Fatal("client credential reached the log")
	}
}

func TestServeInjectsKeyAndStripsClientCredentials(t *testing.T) {
	const key = "sk-test-e2e-0123456789"
	var seen http.Header
	var mu sync.Mutex
	m := mock.New(mock.Options{APIKey: key, OnHandshake: func(r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
	}})
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Setenv("TETHER_TEST_KEY", key)
	cfg := testConfig(t)
	cfg.Upstreams = []upstreams.Config{{Name: "primary", Type: "openai", URL: "ws://" + addr.String() + "/v1/realtime",
		APIKeyEnv: "TETHER_TEST_KEY", DialTimeout: 2 * time.Second}}
	var logs syncBuffer
	a, err := start(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	hdr := http.Header{"Authorization": {"Bearer client-token"}, "Openai-Beta": {"realtime=v1"}}
	c, _ := dialClient(t, "ws://"+a.clientLn.Addr().String()+"/v1/realtime?api-key=leak&model=m1", hdr,
		"realtime", "openai-insecure-api-key.ek_client")
	var received bytes.Buffer
	ev := c.waitFor("session.created")
	b, _ := json.Marshal(ev)
	received.Write(b)
	mu.Lock()
	got := seen
	mu.Unlock()
	if got.Get("Authorization") != "Bearer "+key {
		t.Fatalf("upstream Authorization = %q", got.Get("Authorization"))
	}
	if p := got.Get("Sec-WebSocket-Protocol"); strings.Contains(p, "ek_client") {
		t.Fatalf("client credential forwarded in subprotocols: %q", p)
	}
	if got.Get("OpenAI-Beta") != "realtime=v1" {
		t.Fatalf("OpenAI-Beta not forwarded: %v", got)
	}
	c.send(map[string]any{"type": "mock.fault", "fault": "close", "code": 4400, "reason": "bye " + key})
	_, code := c.event()
	if code != 4400 {
		t.Fatalf("close %d, want the upstream's 4400", code)
	}
	c.conn.Close()
	waitFor(t, func() bool { return a.mgr.Len() == 0 })
	if strings.Contains(logs.String(), key) || strings.Contains(received.String(), key) {
		t.Fatal("API key leaked to the log or the client")
	}
}

func TestServeDialFailureAnswers502BeforeUpgrade(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t)
	cfg.Upstreams = []upstreams.Config{{Name: "dead", Type: "generic", URL: "ws://" + dead + "/", DialTimeout: time.Second}}
	a, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	_, _, _, err = ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws://"+a.clientLn.Addr().String()+"/v1/realtime")
	var se ws.StatusError
	if !errorsAs(err, &se) || int(se) != http.StatusBadGateway {
		t.Fatalf("dial error %v, want HTTP 502", err)
	}
}

func TestServeDrainsOnSignal(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	cfg := testConfig(t)
	sigs := make(chan os.Signal, 2)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	done := make(chan error, 1)
	// serve starts its own listeners; learn the addresses from the start log.
	go func() { done <- serve(cfg, "", log, sigs) }()
	var clientAddr, adminAddr string
	waitFor(t, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "tether started" {
				clientAddr, adminAddr = rec["listen"].(string), rec["admin"].(string)
				return true
			}
		}
		return false
	})
	c, _ := dialClient(t, "ws://"+clientAddr+"/v1/realtime", nil)
	c.waitFor("session.created")
	sigs <- syscall.SIGTERM
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if _, code := c.event(); code != 1001 {
		t.Fatalf("close %d, want 1001", code)
	}
	c.conn.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after drain")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

func TestStartFailureReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("OPENAI_API_KEY", "")
	cfg := testConfig(t)
	cfg.Admin.Listen = busy.Addr().String() // the client listener and the mock start first
	a, err := start(cfg, slog.New(slog.DiscardHandler))
	if a != nil || err == nil || !strings.Contains(err.Error(), "admin.listen") || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("start = %v, %v; want a clear admin.listen error", a, err)
	}
	// goleak in TestMain proves the mock and listeners were closed.
}
