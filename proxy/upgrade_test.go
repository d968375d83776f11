package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// Requests the upgrader would refuse after hijacking (and after a billable
// upstream dial) are refused by tether's own checks first, with no dial.
func TestUpgraderRefusalsHappenBeforeDial(t *testing.T) {
	env := newHandlerEnv(t, HandlerOptions{}, testLifecycle(), nil)
	host := strings.TrimPrefix(env.url, "ws://")
	host = host[:strings.IndexByte(host, '/')]
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"upgrade token not first", "GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426},
		{"http/1.0", "GET /v1/realtime HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 505},
		{"malformed protocol list", "GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: realtime,,x y\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := env.dials.Load()
			c, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.req)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
			if resp.StatusCode != tc.status || env.dials.Load() != before {
				t.Fatalf("status %d (want %d), upstream dials %d (want 0)", resp.StatusCode, tc.status, env.dials.Load()-before)
			}
		})
	}
}
