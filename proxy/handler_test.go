package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/metrics"
	"github.com/tetherproxy/tether/state"
	"github.com/tetherproxy/tether/upstreams"
	"github.com/tetherproxy/tether/upstreams/mock"
)

const (
	canaryKey   = "sk-canary-upstream-key-0001"
	canaryToken = "canary-client-token-0002"
)

type handlerEnv struct {
	url     string // ws://.../v1/realtime
	dials   *atomic.Int64
	lastReq *atomic.Pointer[http.Request] // the upstream's last upgrade request
	mgr     *lifecycle.Manager
	metrics *metrics.Metrics
	handler http.Handler
}

// newHandlerEnv serves a Handler in front of a mock upstream; tweak, if
// given, adjusts the upstream's configuration.
func newHandlerEnv(t *testing.T, opts HandlerOptions, lo lifecycle.Options, allowed []string, tweak ...func(*upstreams.Config)) *handlerEnv {
	t.Helper()
	dials := &atomic.Int64{}
	lastReq := &atomic.Pointer[http.Request]{}
	m := mock.New(mock.Options{APIKey: canaryKey, OnHandshake: func(r *http.Request) {
		lastReq.Store(r.Clone(context.Background()))
		dials.Add(1)
	}})
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HANDLER_TEST_KEY", canaryKey)
	up := upstreams.Config{Name: "mock", Type: upstreams.KindOpenAI,
		URL: "ws://" + addr.String() + "/v1/realtime", APIKeyEnv: "HANDLER_TEST_KEY", AllowedModels: allowed}
	for _, f := range tweak {
		f(&up)
	}
	d, err := upstreams.NewDialer([]upstreams.Config{up})
	if err != nil {
		t.Fatal(err)
	}
	met := metrics.New(metrics.Options{})
	lo.Hooks = append(lo.Hooks, met)
	mgr := lifecycle.NewManager(lo)
	opts.Rejections = met
	opts.Relay = testRelayOptions()
	opts.Relay.Redactor = NewRedactor(canaryKey, canaryToken)
	handler := NewHandler(mgr, d, opts)
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		mgr.CloseAll(lifecycle.ReasonShutdown)
		mgr.Wait()
		srv.Close()
		m.Close()
	})
	return &handlerEnv{url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/realtime", dials: dials, lastReq: lastReq,
		mgr: mgr, metrics: met, handler: handler}
}

// upgrade sends a WebSocket upgrade with extra headers and returns the raw response.
func upgrade(t *testing.T, url string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http"+strings.TrimPrefix(url, "ws"), nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for k, v := range hdr {
		req.Header[k] = v
	}
	conn, err := net.Dial("tcp", req.URL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = req.Write(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	_ = resp.Header.Write(&raw)
	raw.WriteString("\r\n")
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Read the first frame (session.created) too.
		h, err := ws.ReadHeader(br)
		if err == nil {
			p := make([]byte, h.Length)
			io.ReadFull(br, p)
			raw.Write(p)
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		raw.Write(b)
	}
	return resp, raw.Bytes()
}

func TestHandshakeRejectionsNeverDial(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte(canaryToken+" web-app\n"), 0o600)
	tok, err := auth.NewTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	lim := limits.New(limits.Options{Limits: limits.Config{MaxSessions: 1, Window: 24 * time.Hour}, Store: state.NewMemory()})
	env := newHandlerEnv(t, HandlerOptions{Auth: tok, AllowedOrigins: []string{"https://app.example"}, Limits: lim},
		lifecycle.Options{Hooks: []lifecycle.Hooks{lim}}, []string{"gpt-realtime"})
	good := http.Header{"Origin": {"https://app.example"}, "Sec-Websocket-Protocol": {"realtime, openai-insecure-api-key." + canaryToken}}
	cases := []struct {
		name   string
		url    string
		hdr    http.Header
		status int
	}{
		{"no token", env.url, http.Header{"Origin": {"https://app.example"}}, 401},
		{"wrong token", env.url, http.Header{"Origin": {"https://app.example"}, "Authorization": {"Bearer nope"}}, 401},
		{"foreign origin", env.url, http.Header{"Origin": {"https://evil.example"}, "Authorization": {"Bearer " + canaryToken}}, 403},
		{"missing origin", env.url, http.Header{"Authorization": {"Bearer " + canaryToken}}, 403},
		{"model not allowed", env.url + "?model=gpt-4o", good, 400},
		{"bad version", env.url, http.Header{"Sec-Websocket-Version": {"8"}}, 426},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := upgrade(t, tc.url, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if !json.Valid(bytes.TrimSpace(body[bytes.Index(body, []byte("\r\n\r\n"))+4:])) {
				t.Fatalf("body is not JSON: %s", body)
			}
			if bytes.Contains(body, []byte(canaryToken)) || bytes.Contains(body, []byte(canaryKey)) {
				t.Fatal("secret in the rejection")
			}
		})
	}
	if n := env.dials.Load(); n != 0 {
		t.Fatalf("upstream dialed %d times by rejected handshakes", n)
	}
	// A browser-style client with a valid token completes the handshake;
	// a second session for the same client is over max_sessions_per_client.
	resp, raw := upgrade(t, env.url+"?model=gpt-realtime", good)
	_ = raw
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "realtime" {
		t.Fatalf("valid client: %d %v", resp.StatusCode, resp.Header)
	}
	if bytes.Contains(raw, []byte(canaryToken)) || bytes.Contains(raw, []byte(canaryKey)) {
		t.Fatal("secret in the 101 response or first event")
	}
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool { return env.mgr.Len() == 0 }) // that client hung up
	// Keep one session open, then ask for another with the same token.
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://app.example"}}),
		Protocols: []string{"realtime", "tether-token." + canaryToken}}
	conn, _, _, err := d.Dial(context.Background(), env.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testkit.WaitFor(t, 5*time.Second, "the condition", func() bool { return env.mgr.Len() == 1 })
	before := env.dials.Load()
	resp, _ = upgrade(t, env.url, good)
	if resp.StatusCode != 429 || env.dials.Load() != before {
		t.Fatalf("second session for the same client: %d (dials %d -> %d)", resp.StatusCode, before, env.dials.Load())
	}
}

func TestUpstreamErrorMessagesAreScrubbed(t *testing.T) {
	env := newHandlerEnv(t, HandlerOptions{}, lifecycle.Options{}, nil)
	conn, br, _, err := ws.Dial(context.Background(), env.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	ev := `{"type":"mock.fault","fault":"error","code":"invalid_value","message":"bad key ` + canaryKey + `"}`
	ws.WriteFrame(conn, ws.MaskFrame(ws.NewTextFrame([]byte(ev))))
	var all bytes.Buffer
	for i := 0; i < 5; i++ {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		f, err := ws.ReadFrame(r)
		if err != nil {
			break
		}
		all.Write(f.Payload)
		if bytes.Contains(f.Payload, []byte(`"error"`)) {
			break
		}
	}
	if !bytes.Contains(all.Bytes(), []byte(`"error"`)) {
		t.Skipf("mock did not echo a message in its error event: %s", all.String())
	}
	if bytes.Contains(all.Bytes(), []byte(canaryKey)) || !bytes.Contains(all.Bytes(), []byte("[redacted]")) {
		t.Fatalf("upstream error not scrubbed: %s", all.String())
	}
}

// TestSlowHandshakesDoNotDelayOthers holds 1,000 half-sent upgrade requests
// open and checks that a normal client's handshake is not slowed by more than
// 100 ms, and that the slow ones are cut at the handshake timeout.
func TestSlowHandshakesDoNotDelayOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 4096 && lim.Max >= 4096 {
		lim.Cur = 4096
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	env := newHandlerEnv(t, HandlerOptions{}, lifecycle.Options{}, nil)
	// Serve the real handler behind a server with a short header timeout, as cmd/tether does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: env.handler, ReadHeaderTimeout: 1500 * time.Millisecond}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	handshake := func() time.Duration {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	median := func() time.Duration {
		var d []time.Duration
		for range 7 {
			d = append(d, handshake())
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	base := median()
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for range 1000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("slow conn %d: %v", len(slow), err)
		}
		io.WriteString(c, "GET /v1/realtime HTTP/1.1\r\nHost: x\r\n") // never finished
		slow = append(slow, c)
	}
	loaded := median()
	t.Logf("handshake median: %v idle, %v with 1,000 slow handshakes open", base, loaded)
	if loaded-base > 100*time.Millisecond {
		t.Fatalf("slow handshakes delayed a normal client by %v", loaded-base)
	}
	// The slow ones are closed once the header timeout passes.
	_ = slow[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := slow[0].Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("half-sent handshake still open after the header timeout")
			}
			break
		}
	}
}
