package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestClientListenerClosesIdleConnections: a keep-alive connection that sent
// a non-upgrade request and then sits idle, and one that never finishes its
// request headers, are both closed after server.handshake_timeout, while an
// upgraded session outlives it.
func TestClientListenerClosesIdleConnections(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	const timeout = 400 * time.Millisecond
	cfg := testConfig(t)
	cfg.Server.HandshakeTimeout = timeout
	a, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	addr := a.clientLn.Addr().String()

	// A session opened now must still work after several handshake timeouts.
	c, _ := dialClient(t, "ws://"+addr+"/v1/realtime?model=gpt-realtime", nil)
	defer c.Close()
	c.WaitEvent("session.created", 5*time.Second)

	// closedWithin reports how long tether took to close conn (read EOF).
	closedWithin := func(conn net.Conn, r io.Reader, what string) {
		t.Helper()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(timeout + 2*time.Second))
		if n, err := io.Copy(io.Discard, r); err != nil {
			t.Errorf("%s: still open after %v (read %d bytes, %v)", what, time.Since(start), n, err)
			return
		}
		if d := time.Since(start); d > timeout+time.Second {
			t.Errorf("%s: closed after %v, want within handshake_timeout (%v) + 1s", what, d, timeout)
		}
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: tether\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatalf("tether answered %d with Connection: close; the test needs a keep-alive connection", resp.StatusCode)
	}
	closedWithin(idle, br, "idle keep-alive connection")

	partial, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	_, _ = io.WriteString(partial, "GET /v1/realtime HTTP/1.1\r\nHost: tether\r\n") // never finished
	closedWithin(partial, partial, "unfinished request headers")

	// The session, older than several handshake timeouts, still relays.
	c.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "still here"}})
	c.WaitEvent("session.updated", 5*time.Second)
}
