package mock

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// readTimeout bounds every read of the test client: everything the mock
// does is immediate unless a test paces it.
const readTimeout = 2 * time.Second

// startServer starts a Server on loopback, closed when the test ends, and
// returns its ws:// base URL.
func startServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	s := New(opts)
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, "ws://" + addr.String()
}

// openSession starts a Server with opts and opens a session on it, past
// session.created.
func openSession(t *testing.T, opts Options) (*Server, *client) {
	t.Helper()
	s, url := startServer(t, opts)
	c := dial(t, url, ws.Dialer{})
	c.expect("session.created")
	return s, c
}

// client is a minimal raw WebSocket client (gobwas/ws) that sees every
// frame, control frames included. Unlike a testkit.Conn it has no reader
// goroutine: it reads only when a test asks, in wire order, answers no ping
// or close on its own, and the benchmarks drive its socket raw.
type client struct {
	t  testing.TB
	nc net.Conn
	r  io.Reader
	hs ws.Handshake
}

type frame struct {
	op      ws.OpCode
	payload []byte
}

func dial(t testing.TB, url string, d ws.Dialer) *client {
	t.Helper()
	c, err := tryDial(url, d)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.t = t
	t.Cleanup(func() { c.nc.Close() })
	return c
}

func tryDial(url string, d ws.Dialer) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	nc, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, r: nc, hs: hs}
	if br != nil {
		c.r = br
	}
	return c, nil
}

func withHeader(h http.Header) ws.Dialer {
	return ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)}
}

// readFrame reads the next frame within timeout.
func (c *client) readFrame(timeout time.Duration) (frame, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	h, p, err := testkit.ReadFrame(c.r)
	if err != nil {
		return frame{}, err
	}
	if h.Masked || !h.Fin {
		c.t.Fatalf("server frame masked=%v fin=%v: the mock sends whole unmasked frames", h.Masked, h.Fin)
	}
	return frame{h.OpCode, p}, nil
}

func (c *client) mustFrame() frame {
	c.t.Helper()
	f, err := c.readFrame(readTimeout)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// event reads the next frame, which must be a text event with an event_id.
func (c *client) event() map[string]any {
	c.t.Helper()
	f := c.mustFrame()
	if f.op != ws.OpText {
		c.t.Fatalf("got %v frame %q, want a text event", f.op, f.payload)
	}
	var ev map[string]any
	if err := json.Unmarshal(f.payload, &ev); err != nil {
		c.t.Fatalf("event %q: %v", f.payload, err)
	}
	if id, _ := ev["event_id"].(string); !strings.HasPrefix(id, "event_") {
		c.t.Fatalf("event %q has no event_id", f.payload)
	}
	return ev
}

// expect reads the next event, which must be of type typ.
func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	ev := c.event()
	if ev["type"] != typ {
		c.t.Fatalf("got event %v, want %s", ev, typ)
	}
	return ev
}

// until reads events up to and including the first of type typ; it returns
// that one and those before it.
func (c *client) until(typ string) (map[string]any, []map[string]any) {
	c.t.Helper()
	var before []map[string]any
	for {
		ev := c.event()
		if ev["type"] == typ {
			return ev, before
		}
		before = append(before, ev)
	}
}

func (c *client) sendFrame(op ws.OpCode, fin bool, p []byte) {
	c.t.Helper()
	f := ws.MaskFrame(ws.NewFrame(op, fin, p))
	c.nc.SetWriteDeadline(time.Now().Add(readTimeout))
	if err := ws.WriteFrame(c.nc, f); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) sendText(s string) { c.t.Helper(); c.sendFrame(ws.OpText, true, []byte(s)) }

func (c *client) send(v any) {
	c.t.Helper()
	c.sendFrame(ws.OpText, true, testkit.MustJSON(c.t, v))
}

// appendAudio sends audio in appends of chunk bytes.
func (c *client) appendAudio(audio []byte, chunk int) {
	c.t.Helper()
	for off := 0; off < len(audio); off += chunk {
		end := min(off+chunk, len(audio))
		c.send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(audio[off:end])})
	}
}

// expectClose reads (skipping data frames) up to a close frame and checks
// its code and reason.
func (c *client) expectClose(code ws.StatusCode, reason string) {
	c.t.Helper()
	for {
		f := c.mustFrame()
		if f.op != ws.OpClose {
			continue
		}
		gotCode, gotReason := ws.ParseCloseFrameData(f.payload)
		if gotCode != code || gotReason != reason {
			c.t.Fatalf("close %d %q, want %d %q", gotCode, gotReason, code, reason)
		}
		return
	}
}

// expectEOF checks that the server closed the TCP connection.
func (c *client) expectEOF() {
	c.t.Helper()
	f, err := c.readFrame(readTimeout)
	if err == nil {
		c.t.Fatalf("got %v frame %q, want the connection closed", f.op, f.payload)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		c.t.Fatalf("read: %v, want EOF", err)
	}
}

// expectSilence checks that nothing arrives for d, and the connection stays open.
func (c *client) expectSilence(d time.Duration) {
	c.t.Helper()
	f, err := c.readFrame(d)
	var ne net.Error
	if err == nil {
		c.t.Fatalf("got %v frame %q, want nothing", f.op, f.payload)
	}
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("read: %v, want a timeout", err)
	}
}

// tone returns ms milliseconds of 24 kHz pcm16 sine at amplitude amp.
func tone(ms int, amp float64) []byte {
	n := 24 * ms
	p := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(p[2*i:], uint16(int16(amp*math.Sin(2*math.Pi*300*float64(i)/24000))))
	}
	return p
}

// noise returns n deterministic pseudo-random bytes.
func noise(n int) []byte {
	p := make([]byte, n)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

func str(v any) string { s, _ := v.(string); return s }

func num(t *testing.T, m any, keys ...string) int {
	t.Helper()
	v := m
	for _, k := range keys {
		o, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %v in %v", keys, m)
		}
		v = o[k]
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v is %v, want a number", keys, v)
	}
	return int(f)
}

func obj(v any, keys ...string) map[string]any {
	for _, k := range keys {
		o, _ := v.(map[string]any)
		v = o[k]
	}
	o, _ := v.(map[string]any)
	return o
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
