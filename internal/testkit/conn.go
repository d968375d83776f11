package testkit

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// DefaultTimeout bounds a dial and each write of a [Conn] unless its
// options say otherwise.
const DefaultTimeout = 10 * time.Second

// maxFrame is the largest frame a Conn accepts; keepPayload is how much of
// a frame's payload a recorded [Frame] keeps.
const (
	maxFrame    = 64 << 20
	keepPayload = 64 << 10
)

// Options tune a [Conn].
type Options struct {
	Header    http.Header // extra handshake headers (Dial)
	Protocols []string    // offered subprotocols (Dial)
	Timeout   time.Duration
	// TLS, if set, is the client configuration for a wss:// URL.
	TLS *tls.Config
	// Addr, if set, is the TCP address to dial whatever the URL's host
	// (the URL then only names the Host header and SNI).
	Addr string

	NoPong      bool // do not answer pings
	NoCloseEcho bool // do not echo a close frame
	// KeepFrames records every frame received, control frames included,
	// for [Conn.NextFrame].
	KeepFrames bool
}

// Frame is one WebSocket frame, payload unmasked (up to 64 KiB kept).
type Frame struct {
	Op      ws.OpCode
	Fin     bool
	Masked  bool
	Length  int64
	Payload []byte
	At      time.Time
}

// CloseCode decodes a close frame's payload (1005 when empty).
func (f Frame) CloseCode() (int, string) {
	if len(f.Payload) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

// CloseInfo is the first close frame a Conn received.
type CloseInfo struct {
	Code   int
	Reason string
	At     time.Time
}

// ErrTimeout is what [Conn.NextFrame] returns when nothing came in time.
var ErrTimeout = errors.New("testkit: no frame in time")

// Conn is a WebSocket test peer (github.com/gobwas/ws) that records every
// byte it receives. A reader goroutine parses frames, answers pings, echoes
// a close frame like a browser (each unless told not to) and queues the
// messages as decoded JSON events; with KeepFrames it also keeps every
// frame. The client side masks what it writes.
type Conn struct {
	t         testing.TB
	tcp       *net.TCPConn
	conn      net.Conn // recording reads when dialled
	rd        io.Reader
	client    bool // mask writes
	opts      Options
	Protocol  string    // the negotiated subprotocol
	Connected time.Time // when the handshake completed
	TLS       *tls.Conn // the TLS connection of a wss:// dial

	rec    SyncBuffer
	noPong atomic.Bool
	wmu    sync.Mutex
	// sentClose: a close frame was written; guarded by wmu.
	sentClose bool

	mu          sync.Mutex
	events      []map[string]any
	cursor      int // next event for NextEvent
	frames      []Frame
	frameCursor int // next frame for NextFrame
	closeF      *CloseInfo
	readErr     error
	pings       int
	pongs       [][]byte
	sent        []Frame       // every frame written, payload unmasked
	resume      chan struct{} // non-nil while reading is paused
	notify      chan struct{}
	quit        chan struct{}
	quitted     sync.Once
	done        chan struct{}
}

// recConn records everything read from a connection.
type recConn struct {
	net.Conn
	rec *SyncBuffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.Write(p[:n])
	}
	return n, err
}

func newConn(t testing.TB, client bool, o Options) *Conn {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	c := &Conn{t: t, client: client, opts: o, notify: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.noPong.Store(o.NoPong)
	return c
}

// Dial upgrades to url (ws:// or wss://); a failed upgrade fails the test.
// The connection is closed when the test ends.
func Dial(t testing.TB, url string, o Options) *Conn {
	t.Helper()
	c, err := TryDial(t, url, o)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// TryDial is [Dial] returning the error (a [ws.StatusError] for a refused
// upgrade).
func TryDial(t testing.TB, url string, o Options) (*Conn, error) {
	c := newConn(t, true, o)
	d := ws.Dialer{
		Timeout:   c.opts.Timeout,
		Protocols: o.Protocols,
		WrapConn: func(nc net.Conn) net.Conn {
			c.tcp, _ = nc.(*net.TCPConn)
			return &recConn{Conn: nc, rec: &c.rec}
		},
	}
	if o.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(o.Header)
	}
	if o.Addr != "" {
		d.NetDial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, o.Addr)
		}
	}
	if o.TLS != nil {
		d.TLSClient = func(conn net.Conn, _ string) net.Conn {
			c.TLS = tls.Client(conn, o.TLS)
			return c.TLS
		}
	}
	conn, br, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		return nil, err
	}
	c.Protocol = hs.Protocol
	var buffered io.Reader
	if br != nil {
		buffered = br
	}
	c.start(conn, buffered)
	return c, nil
}

// NewConn runs a Conn over nc, a connection whose handshake is done (or a
// pipe that never had one); buffered holds bytes already read from nc, if
// any. client says whether this end masks its frames.
func NewConn(t testing.TB, nc net.Conn, buffered io.Reader, client bool, o Options) *Conn {
	c := newConn(t, client, o)
	c.tcp, _ = nc.(*net.TCPConn)
	c.start(nc, buffered)
	return c
}

func (c *Conn) start(nc net.Conn, buffered io.Reader) {
	c.conn, c.rd, c.Connected = nc, nc, time.Now()
	if buffered != nil {
		c.rd = io.MultiReader(buffered, nc)
	}
	go c.read()
	c.t.Cleanup(c.Close)
}

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Close drops the connection and waits for the reader.
func (c *Conn) Close() {
	c.quitted.Do(func() { close(c.quit) })
	c.conn.Close()
	<-c.done
}

// Vanish drops the connection with a TCP RST (no close frame).
func (c *Conn) Vanish() {
	c.t.Helper()
	if c.tcp == nil {
		c.t.Fatal("not a TCP connection")
	}
	_ = c.tcp.SetLinger(0)
	c.Close()
}

// StopReading stops reading after the frame in progress (the socket's
// buffers then fill up); ResumeReading undoes it.
func (c *Conn) StopReading() {
	c.mu.Lock()
	if c.resume == nil {
		c.resume = make(chan struct{})
	}
	c.mu.Unlock()
}

// ResumeReading undoes StopReading.
func (c *Conn) ResumeReading() {
	c.mu.Lock()
	if c.resume != nil {
		close(c.resume)
		c.resume = nil
	}
	c.mu.Unlock()
}

// SetAnswerPings turns ping answers on or off.
func (c *Conn) SetAnswerPings(on bool) { c.noPong.Store(!on) }

// Received is every byte received so far, handshake included (dialled
// connections only).
func (c *Conn) Received() []byte { return c.rec.Bytes() }

func (c *Conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *Conn) read() {
	defer close(c.done)
	defer c.signal()
	var msg []byte
	var msgOp ws.OpCode
	for {
		c.mu.Lock()
		gate := c.resume
		c.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-c.quit:
				c.conn.Close()
				return
			}
		}
		h, p, err := ReadFrame(c.rd)
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			c.conn.Close()
			return
		}
		if c.opts.KeepFrames {
			c.mu.Lock()
			c.frames = append(c.frames, newFrame(h, p))
			c.mu.Unlock()
			c.signal()
		}
		switch h.OpCode {
		case ws.OpPing:
			c.mu.Lock()
			c.pings++
			c.mu.Unlock()
			if !c.noPong.Load() {
				_ = c.Write(ws.NewPongFrame(p))
			}
		case ws.OpPong:
			c.mu.Lock()
			c.pongs = append(c.pongs, p)
			c.mu.Unlock()
			c.signal()
		case ws.OpClose:
			c.closed(p)
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
			if h.OpCode != ws.OpContinuation {
				msg, msgOp = msg[:0], h.OpCode
			}
			msg = append(msg, p...)
			if h.Fin {
				c.message(msgOp, msg)
			}
		}
	}
}

// ReadFrame reads one frame from r and unmasks its payload; a frame over
// 64 MiB is an error. It is the reader of a [Conn], for a test that reads
// a raw connection itself.
func ReadFrame(r io.Reader) (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(r)
	if err == nil && h.Length > maxFrame {
		err = fmt.Errorf("frame of %d bytes", h.Length)
	}
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return h, p, nil
}

// ReadFrameWithin is [ReadFrame] on c with a read deadline d from now,
// cleared as it returns (a net.Error that is a Timeout when nothing came).
func ReadFrameWithin(c net.Conn, d time.Duration) (ws.Header, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return ReadFrame(c)
}

func newFrame(h ws.Header, p []byte) Frame {
	return Frame{Op: h.OpCode, Fin: h.Fin, Masked: h.Masked, Length: h.Length,
		Payload: bytes.Clone(p[:min(len(p), keepPayload)]), At: time.Now()}
}

// closed records the peer's close frame and echoes it.
func (c *Conn) closed(p []byte) {
	ci := &CloseInfo{Code: 1005, At: time.Now()}
	ci.Code, ci.Reason = Frame{Payload: p}.CloseCode()
	c.mu.Lock()
	if c.closeF == nil {
		c.closeF = ci
	}
	c.mu.Unlock()
	c.wmu.Lock()
	echo := !c.sentClose && !c.opts.NoCloseEcho
	c.sentClose = true
	c.wmu.Unlock()
	if echo {
		body := []byte{}
		if ci.Code != 1005 {
			body = binary.BigEndian.AppendUint16(nil, uint16(ci.Code))
		}
		_ = c.Write(ws.NewCloseFrame(body))
	}
	c.signal()
	// Read on until the peer closes the socket.
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
}

// message queues a complete message as an event: text is decoded JSON,
// binary is {"type": "<binary>", "len": n}.
func (c *Conn) message(op ws.OpCode, msg []byte) {
	ev := map[string]any{}
	if op == ws.OpText {
		if err := json.Unmarshal(msg, &ev); err != nil {
			ev = map[string]any{"type": "<invalid json>", "raw": string(msg)}
		}
	} else {
		ev["type"] = "<binary>"
		ev["len"] = len(msg)
	}
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
	c.signal()
}

// Write sends f, masked on the client side.
func (c *Conn) Write(f ws.Frame) error {
	if c.client {
		f = ws.MaskFrame(f)
	}
	return c.WriteRaw(f)
}

// WriteRaw sends f as given (masked or not).
func (c *Conn) WriteRaw(f ws.Frame) error { return c.writeFrame(f, false) }

// WriteOpen is [Conn.Write] unless this end has sent or answered a close
// frame, when it returns net.ErrClosed: audio stops there, as a browser's
// would.
func (c *Conn) WriteOpen(f ws.Frame) error {
	if c.client {
		f = ws.MaskFrame(f)
	}
	return c.writeFrame(f, true)
}

func (c *Conn) writeFrame(f ws.Frame, unlessClosing bool) error {
	p := f.Payload
	if f.Header.Masked {
		p = bytes.Clone(p)
		ws.Cipher(p, f.Header.Mask, 0)
	}
	c.mu.Lock()
	c.sent = append(c.sent, newFrame(f.Header, p))
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if unlessClosing && c.sentClose {
		return net.ErrClosed
	}
	if f.Header.OpCode == ws.OpClose {
		c.sentClose = true
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
	return ws.WriteFrame(c.conn, f)
}

// WritePartial writes header h and then part, the start of its payload
// (masked by the caller as h says), and nothing more: a frame cut short.
func (c *Conn) WritePartial(h ws.Header, part []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
	if err := ws.WriteHeader(c.conn, h); err != nil {
		return err
	}
	_, err := c.conn.Write(part)
	return err
}

// Done is closed once the reader stopped.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseReceived is the peer's close frame, or nil while none came.
func (c *Conn) CloseReceived() *CloseInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeF
}

// TCP is the underlying TCP connection, or nil.
func (c *Conn) TCP() *net.TCPConn { return c.tcp }

// SentFrames is every frame written, payloads unmasked.
func (c *Conn) SentFrames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.sent...)
}

// Pongs returns the payloads of the pongs received.
func (c *Conn) Pongs() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.pongs...)
}

// Pings is the number of pings received.
func (c *Conn) Pings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pings
}

// Events returns every event received so far.
func (c *Conn) Events() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.events...)
}

// SendFrame sends one frame; an error fails the test.
func (c *Conn) SendFrame(op ws.OpCode, fin bool, p []byte) {
	c.t.Helper()
	if err := c.Write(ws.NewFrame(op, fin, p)); err != nil {
		c.t.Fatalf("send %v frame: %v", op, err)
	}
}

// SendText sends s as one text frame; an error fails the test.
func (c *Conn) SendText(s string) {
	c.t.Helper()
	c.SendFrame(ws.OpText, true, []byte(s))
}

// Send marshals v and sends it as a text frame; an error fails the test.
func (c *Conn) Send(v any) {
	c.t.Helper()
	c.SendFrame(ws.OpText, true, MustJSON(c.t, v))
}

// MustJSON is v marshalled as JSON; an error fails the test.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SendClose starts the closing handshake with code and reason.
func (c *Conn) SendClose(code int, reason string) {
	c.t.Helper()
	c.SendFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusCode(code), reason))
}

// await runs ready under the lock until it reports done, waking on every
// frame; it fails the test with what after timeout.
func (c *Conn) await(timeout time.Duration, ready func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := ready()
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-c.notify:
		case <-c.done:
			c.signal() // done stays closed: recheck once more, then give up
			c.mu.Lock()
			ok := ready()
			c.mu.Unlock()
			return ok
		case <-deadline.C:
			return false
		}
	}
}

// NextEvent returns the next event, or ok=false once the connection closed
// with no more events. It fails the test after timeout.
func (c *Conn) NextEvent(timeout time.Duration) (ev map[string]any, ok bool) {
	c.t.Helper()
	ended := false
	got := c.await(timeout, func() bool {
		if c.cursor < len(c.events) {
			ev, ok = c.events[c.cursor], true
			c.cursor++
			return true
		}
		ended = c.closeF != nil || c.readErr != nil
		return ended
	})
	if !got && !ended {
		c.t.Fatalf("no event within %v", timeout)
	}
	return ev, ok
}

// WaitEvent skips events up to the first of type typ. An error event (unless
// typ is "error") or the end of the connection fails the test.
func (c *Conn) WaitEvent(typ string, timeout time.Duration) map[string]any {
	c.t.Helper()
	for {
		ev, ok := c.NextEvent(timeout)
		if !ok {
			c.t.Fatalf("connection closed (%v) while waiting for %s", c.CloseState(), typ)
		}
		if ev["type"] == typ {
			return ev
		}
		if ev["type"] == "error" && typ != "error" {
			c.t.Fatalf("error event while waiting for %s: %v", typ, ev)
		}
	}
}

// NextFrame returns the next frame received (KeepFrames only), or the
// error that ended the connection once every frame was returned, or
// [ErrTimeout].
func (c *Conn) NextFrame(timeout time.Duration) (f Frame, err error) {
	if !c.opts.KeepFrames {
		panic("testkit: NextFrame without Options.KeepFrames")
	}
	if !c.await(timeout, func() bool {
		if c.frameCursor < len(c.frames) {
			f = c.frames[c.frameCursor]
			c.frameCursor++
			return true
		}
		err = c.readErr
		return err != nil
	}) {
		return Frame{}, ErrTimeout
	}
	return f, err
}

// MustFrame is [Conn.NextFrame] failing the test on an error.
func (c *Conn) MustFrame(timeout time.Duration) Frame {
	c.t.Helper()
	f, err := c.NextFrame(timeout)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// CloseState describes how the connection ended, for failure messages.
func (c *Conn) CloseState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeF != nil {
		return fmt.Sprintf("close %d %q", c.closeF.Code, c.closeF.Reason)
	}
	return fmt.Sprintf("read error: %v", c.readErr)
}

// Err is the error that stopped the reader (nil while it runs).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// WaitClose waits for the peer's close frame; a connection that ends
// without one fails the test.
func (c *Conn) WaitClose(timeout time.Duration) CloseInfo {
	c.t.Helper()
	var ci *CloseInfo
	var err error
	c.await(timeout, func() bool {
		ci, err = c.closeF, c.readErr
		return ci != nil || err != nil
	})
	switch {
	case ci != nil:
		return *ci
	case err != nil:
		c.t.Fatalf("connection ended without a close frame: %v", err)
	default:
		c.t.Fatalf("no close frame within %v", timeout)
	}
	return CloseInfo{}
}

// WaitEnd waits until the reader stopped (close handshake done or socket
// gone).
func (c *Conn) WaitEnd(timeout time.Duration) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("connection still open after %v", timeout)
	}
}
