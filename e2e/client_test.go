package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
)

// clientOpts tune dialClient.
type clientOpts struct {
	Path      string // default /v1/realtime?model=gpt-realtime
	Header    http.Header
	Protocols []string
	NoPong    bool // do not answer pings
}

type closeInfo = testkit.CloseInfo

// rtClient is the shared test kit's WebSocket client with the realtime
// conversation on top: it records every byte it receives, answers pings
// (unless told not to), echoes a close frame like a browser and queues
// text events.
type rtClient struct {
	*testkit.Conn
	t testing.TB
}

// dialClient upgrades to ws://addr+path; a failed upgrade fails the test.
func dialClient(t testing.TB, addr string, o clientOpts) *rtClient {
	t.Helper()
	c, err := tryDialClient(t, addr, o)
	if err != nil {
		t.Fatalf("dial ws://%s%s: %v", addr, o.Path, err)
	}
	return c
}

func tryDialClient(t testing.TB, addr string, o clientOpts) (*rtClient, error) {
	if o.Path == "" {
		o.Path = "/v1/realtime?model=gpt-realtime"
	}
	c, err := testkit.TryDial(t, "ws://"+addr+o.Path, testkit.Options{Header: o.Header, Protocols: o.Protocols,
		NoPong: o.NoPong, Timeout: stepTimeout})
	if err != nil {
		return nil, err
	}
	return &rtClient{Conn: c, t: t}, nil
}

// stream writes f, a frame masked as it goes on the wire, every period
// until stop is closed or the session is closing; it never writes once
// tether sent a close.
func (c *rtClient) stream(f ws.Frame, every time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.Done():
			return
		case <-tick.C:
		}
		if c.CloseReceived() != nil || c.WriteRaw(f) != nil {
			return
		}
	}
}

// repeat streams the text message msg every period from a goroutine of
// its own, until the session is closing or stop is called; stop waits for
// it.
func (c *rtClient) repeat(every time.Duration, msg []byte) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go c.stream(ws.MaskFrame(ws.NewTextFrame(msg)), every, quit, &wg)
	return func() {
		close(quit)
		wg.Wait()
	}
}

// fault sends a mock.fault event.
func (c *rtClient) fault(name string, fields map[string]any) {
	c.t.Helper()
	ev := map[string]any{"type": "mock.fault", "fault": name}
	maps.Copy(ev, fields)
	c.Send(ev)
}

// testAudio is ms milliseconds of loud-ish 24 kHz pcm16.
func testAudio(ms int) []byte {
	b := make([]byte, 48*ms)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// voiceTurn runs session.update -> append -> commit -> response.create ->
// audio deltas -> response.done and returns the audio bytes and deltas.
func (c *rtClient) voiceTurn() (audio, deltas int) {
	c.t.Helper()
	c.Send(map[string]any{"type": "session.update", "session": map[string]any{
		"type": "realtime", "instructions": "Answer briefly.",
	}})

	c.WaitEvent("session.updated", stepTimeout)
	in := testAudio(200)
	c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(in)})
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.WaitEvent("input_audio_buffer.committed", stepTimeout)
	c.Send(map[string]any{"type": "response.create"})
	c.WaitEvent("response.created", stepTimeout)
	resp, ok := c.untilDone(c.t, func(ev map[string]any) {
		if ev["type"] != "response.output_audio.delta" {
			return
		}
		b, err := base64.StdEncoding.DecodeString(ev["delta"].(string))
		if err != nil {
			c.t.Fatalf("bad audio delta: %v", err)
		}
		audio += len(b)
		deltas++
	})
	if !ok {
		c.t.Fatalf("connection closed mid-response: %s", c.CloseState())
	}
	if resp["status"] != "completed" {
		c.t.Fatalf("response.done status %v, want completed", resp["status"])
	}
	if audio != len(in) {
		c.t.Fatalf("got %d audio bytes back, want the %d committed", audio, len(in))
	}
	return audio, deltas
}

// untilDone reads c's events up to an answer's response.done and returns
// its response, handing each (when not nil) every event before it; an
// error event fails t. ok is false when the call closed first.
func (c *rtClient) untilDone(t testing.TB, each func(ev map[string]any)) (resp map[string]any, ok bool) {
	t.Helper()
	for {
		ev, alive := c.NextEvent(stepTimeout)
		if !alive {
			return nil, false
		}
		switch ev["type"] {
		case "error":
			t.Fatalf("error event mid-answer: %v", ev)
		case "response.done":
			resp, _ = ev["response"].(map[string]any)
			return resp, true
		}
		if each != nil {
			each(ev)
		}
	}
}

// ---------------------------------------------------------------------------
// Raw HTTP for handshakes tether must refuse

type httpAnswer struct {
	Status int
	Header http.Header
	Body   []byte
}

// rawUpgrade sends a hand-written GET to addr+path with a valid WebSocket
// upgrade header set, modified by hdr ("" deletes a header), and reads the answer.
func rawUpgrade(t testing.TB, addr, path string, hdr map[string]string) httpAnswer {
	t.Helper()
	h := map[string]string{
		"Host":                  addr,
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version": "13",
	}
	maps.Copy(h, hdr)
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	for _, k := range []string{"Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} {
		if v := h[k]; v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		delete(h, k)
	}
	for k, v := range h {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return rawRequest(t, addr, b.String())
}

// rawRequest writes req to addr and reads one HTTP answer.
func rawRequest(t testing.TB, addr, req string) httpAnswer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, stepTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(stepTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	a := httpAnswer{Status: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		a.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return a
}
