package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams"
	"github.com/tetherproxy/tether/upstreams/mock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Lifecycle.DrainTimeout = 2 * time.Second
	return cfg
}

// dialClient opens a realtime session with the shared test kit's client.
func dialClient(t *testing.T, url string, hdr http.Header, protocols ...string) (*testkit.Conn, ws.Handshake) {
	t.Helper()
	c := testkit.Dial(t, url, testkit.Options{Header: hdr, Protocols: protocols, Timeout: 5 * time.Second})
	return c, ws.Handshake{Protocol: c.Protocol}
}

// voiceTurn runs session.update -> append -> commit -> response.create ->
// response.done and returns the number of audio bytes received.
func voiceTurn(t *testing.T, c *testkit.Conn) int {
	t.Helper()
	c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "be brief"}})
	c.WaitEvent("session.updated", 5*time.Second)
	audio := make([]byte, 9600) // 200 ms of pcm16 at 24 kHz
	for i := range audio {
		audio[i] = byte(i)
	}
	c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(audio)})
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.WaitEvent("input_audio_buffer.committed", 5*time.Second)
	c.Send(map[string]any{"type": "response.create"})
	got := 0
	for {
		ev, ok := c.NextEvent(5 * time.Second)
		if !ok {
			t.Fatalf("closed (%s) mid-response", c.CloseState())
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
	var logs testkit.SyncBuffer
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
	created := c.WaitEvent("session.created", 5*time.Second)
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
	c.SendClose(1000, "bye")
	if code := c.WaitClose(5 * time.Second).Code; code != 1000 {
		t.Fatalf("close echo %d", code)
	}
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool { return a.mgr.Len() == 0 })
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
	var logs testkit.SyncBuffer
	a, err := start(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	hdr := http.Header{"Authorization": {"Bearer client-token"}, "Openai-Beta": {"realtime=v1"}}
	c, _ := dialClient(t, "ws://"+a.clientLn.Addr().String()+"/v1/realtime?api-key=leak&model=m1", hdr,
		"realtime", "openai-insecure-api-key.ek_client")
	var received bytes.Buffer
	ev := c.WaitEvent("session.created", 5*time.Second)
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
	c.Send(map[string]any{"type": "mock.fault", "fault": "close", "code": 4400, "reason": "bye " + key})
	code := c.WaitClose(5 * time.Second).Code
	if code != 4400 {
		t.Fatalf("close %d, want the upstream's 4400", code)
	}
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool { return a.mgr.Len() == 0 })
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
	var logs testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	done := make(chan error, 1)
	// serve starts its own listeners; learn the addresses from the start log.
	go func() { done <- serve(cfg, "", log, sigs) }()
	var clientAddr, adminAddr string
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "tether started" {
				clientAddr, adminAddr = rec["listen"].(string), rec["admin"].(string)
				return true
			}
		}
		return false
	})

	// No close echo: the session stays in its closing handshake while the
	// test looks at /readyz.
	c := testkit.Dial(t, "ws://"+clientAddr+"/v1/realtime", testkit.Options{NoCloseEcho: true, Timeout: 5 * time.Second})
	c.WaitEvent("session.created", 5*time.Second)
	sigs <- syscall.SIGTERM
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})

	if code := c.WaitClose(5 * time.Second).Code; code != 1001 {
		t.Fatalf("close %d, want 1001", code)
	}
	c.Close()
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

// TestRelayOptions: each session's relay gets server.max_frame_bytes and
// server.park_after, and a redactor that follows the upstream keys as they
// are read again.
func TestRelayOptions(t *testing.T) {
	cfg := config.Default()
	cfg.Server.MaxFrameBytes, cfg.Server.ParkAfter = 4096, 250*time.Millisecond
	key := "first-upstream-key"
	o := relayOptions(cfg, func() []string { return []string{key} })
	if o.MaxFrameBytes != 4096 || o.ParkAfter != 250*time.Millisecond {
		t.Errorf("relay options: max frame bytes %d, park after %v; want 4096, 250ms", o.MaxFrameBytes, o.ParkAfter)
	}
	key = "rotated-upstream-key"
	if got := o.Redactor.Redact("bad key rotated-upstream-key"); strings.Contains(got, key) {
		t.Errorf("redactor left the rotated key in %q", got)
	}
}

// TestSetGCPercent: serve runs with gcPercent unless GOGC is set.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "") // restored after the test
	setGCPercent()
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("with an empty GOGC: GC percent %d, want %d", got, gcPercent)
	}
	os.Unsetenv("GOGC")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("without GOGC: GC percent %d, want %d", got, gcPercent)
	}
	t.Setenv("GOGC", "100")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC=100: GC percent %d, want it left at 100", got)
	}
}
