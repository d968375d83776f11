package mock

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/wsframe"
)

const (
	// headroom is reserved in front of every outgoing payload buffer for the
	// frame header, so a frame goes out in one write without a copy.
	headroom = wsframe.MaxHeaderSize
	// maxMessageBytes bounds a client message: a maximal append (15 MiB of
	// audio) in base64 plus its JSON. Beyond it the session closes with 1009.
	maxMessageBytes = 32 << 20
	// readBufSize is the initial capacity of the read buffer: a 100 ms
	// pcm16 append fits.
	readBufSize = 16 << 10
	// keepReadBuf is the largest read buffer kept between messages.
	keepReadBuf = 256 << 10
)

var (
	// errWriteClosed: a close frame was sent (or the session stalled, or a
	// write failed), so nothing more may be written.
	errWriteClosed = errors.New("mock upstream: connection closed for writing")
	// errPeerClosed: the peer's close frame was handled.
	errPeerClosed = errors.New("mock upstream: peer closed")
)

// conn is one WebSocket session. Its goroutine (the caller of run, which
// is a ServeHTTP call) owns the session and reads; at most one streamer
// goroutine (stream, per response) runs beside it and is waited for at exit.
// A GPT-Live session (live != nil) shares the plumbing (frames, control
// frames, writes, close handshake, faults) and runs its own events and
// output track (live.go); the Realtime fields below stay unused then.
type conn struct {
	srv    *Server
	nc     net.Conn
	log    *slog.Logger
	id     string // sess_... (Realtime) or live_... (GPT-Live)
	model  string
	prefix string // random part of the ids the session hands out
	// live is the GPT-Live session state; nil for Realtime sessions. Set
	// before run, owned as its fields say.
	live *liveSession

	seq        atomic.Uint64 // id counter; reader and streamer
	pace       atomic.Int64  // nanoseconds between output deltas; set by mock.fault slow
	tokensUsed atomic.Int64  // total tokens of finished responses (rate_limits.updated)
	quit       chan struct{} // closed once, by stop: the session is ending
	quitOnce   sync.Once

	// wmu serialises writes to nc (reader, streamer, Close).
	wmu     sync.Mutex
	wclosed bool // guarded by wmu; no more writes

	// mu guards the active response, shared by the reader (create, cancel)
	// and the streamer (finish).
	mu   sync.Mutex
	resp *response

	// Owned by the reader goroutine.
	rd         wsutil.Reader
	rbuf       []byte // incoming message, headroom first (echo writes it back in place)
	obuf       []byte // outgoing event being built, headroom first
	ctl        [headroom + ws.MaxControlFramePayloadSize]byte
	echo       bool // mock.fault echo
	closing    bool // we sent a close frame and wait for the peer's
	stalled    bool // mock.fault stall
	session    map[string]any
	cfg        sessionConfig
	in         []byte // uncommitted input audio
	pending    []byte // committed audio waiting for a response
	pendingMs  int
	vad        vadState
	lastItem   string        // id of the last conversation item, for previous_item_id
	convID     string        // conv_...
	responses  int           // responses started
	lastExited chan struct{} // closed when the last streamer exited; nil before the first
}

// newConn returns a Realtime session.
func newConn(s *Server, nc net.Conn, br io.Reader, r *http.Request) *conn {
	model := cmp.Or(r.URL.Query().Get("model"), "gpt-realtime")
	c := newBaseConn(s, nc, br, "sess_"+randomID(20))
	c.model = model
	c.convID = "conv_" + c.prefix
	c.pace.Store(int64(s.opts.DeltaInterval))
	c.session = newSessionObject(c.id, model, time.Now().Add(time.Hour).Unix())
	c.cfg, _ = normalizeSession(c.session)
	return c
}

// newBaseConn returns the plumbing every session has: buffers, the frame
// reader, the id.
func newBaseConn(s *Server, nc net.Conn, br io.Reader, id string) *conn {
	c := &conn{
		srv:    s,
		nc:     nc,
		id:     id,
		log:    s.log.With("session", id),
		prefix: randomID(10),
		quit:   make(chan struct{}),
		rbuf:   make([]byte, headroom, headroom+readBufSize),
		obuf:   make([]byte, headroom, headroom+4096),
	}
	c.rd = wsutil.Reader{
		Source:         br,
		State:          ws.StateServerSide,
		MaxMessageSize: maxMessageBytes,
		OnIntermediate: c.onIntermediate,
	}
	return c
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomID(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = idAlphabet[rand.IntN(len(idAlphabet))]
	}
	return string(b)
}

// appendID appends "<kind>_<prefix><counter>", unique within the session.
func (c *conn) appendID(b []byte, kind string) []byte {
	b = append(b, kind...)
	b = append(b, '_')
	b = append(b, c.prefix...)
	return strconv.AppendUint(b, c.seq.Add(1), 36)
}

func (c *conn) newID(kind string) string {
	var b [48]byte
	return string(c.appendID(b[:0], kind))
}

// stop signals the streamer and a stalled reader that the session ends.
func (c *conn) stop() {
	c.quitOnce.Do(func() { close(c.quit) })
}

// kill ends the session from Server.Close: a best-effort going-away close
// frame (unless something already ended writing), then the socket.
func (c *conn) kill() {
	c.stop()
	_ = c.nc.SetWriteDeadline(time.Now().Add(killWriteTimeout))
	_ = c.sendClose(wsframe.GoingAway, "mock upstream shutting down")
	c.nc.Close()
}

// run is the reader loop. It returns when the session is over, with the
// streamer stopped and the socket closed.
func (c *conn) run(authorized bool) {
	c.log.Debug("mock upstream: session started", "model", c.model, "remote", c.nc.RemoteAddr().String())
	why := c.loop(authorized)
	c.stop()
	c.nc.Close()
	if c.lastExited != nil {
		<-c.lastExited
	}
	if c.live != nil {
		c.live.wait()
	}
	c.log.Debug("mock upstream: session ended", "why", why)
}

func (c *conn) loop(authorized bool) string {
	switch {
	case c.live != nil:
		// The client speaks first; the credential was checked at the upgrade.
	case !authorized:
		c.sendError("", "invalid_request_error", "invalid_api_key", "Incorrect API key provided.", "")
		c.closeWith(wsframe.Unauthorized, "invalid_request_error.invalid_api_key")
	default:
		if err := c.sendEvent(c.sessionEvent(realtime.SessionCreated)); err != nil {
			return "write failed"
		}
	}
	for {
		if c.stalled {
			<-c.quit
			return "stalled until close"
		}
		hdr, err := c.rd.NextFrame()
		if err != nil {
			return c.readFailed(err)
		}
		if hdr.OpCode.IsControl() {
			if err := c.control(hdr, &c.rd); err != nil {
				return c.readFailed(err)
			}
			continue
		}
		if c.closing {
			if err := c.rd.Discard(); err != nil {
				return c.readFailed(err)
			}
			continue
		}
		msg, err := c.readMessage()
		if err != nil {
			return c.readFailed(err)
		}
		if c.live != nil {
			err = c.live.handle(hdr.OpCode, msg)
		} else if c.echo {
			err = c.send(hdr.OpCode, c.rbuf)
		} else if hdr.OpCode != ws.OpText {
			err = c.sendError("", "invalid_request_error", "invalid_value", "Binary frames are not supported; send JSON events as text frames.", "")
		} else {
			err = c.handle(msg)
		}
		if cap(c.rbuf) > headroom+keepReadBuf {
			c.rbuf = make([]byte, headroom, headroom+readBufSize)
		}
		if err != nil {
			if errors.Is(err, errRST) {
				return "mock.fault rst"
			}
			if !errors.Is(err, errWriteClosed) {
				return "write failed: " + err.Error()
			}
		}
	}
}

// readFailed ends the session after a read error, closing with 1002 or
// 1009 when the peer broke the protocol.
func (c *conn) readFailed(err error) string {
	var pe ws.ProtocolError
	switch {
	case errors.Is(err, errPeerClosed):
		return "peer closed"
	case errors.As(err, &pe):
		c.sendClose(wsframe.ProtocolError, pe.Error())
	case errors.Is(err, wsutil.ErrMessageTooLarge), errors.Is(err, wsutil.ErrFrameTooLarge):
		c.sendClose(wsframe.MessageTooBig, "message too big")
	case c.closing:
		return "close handshake done"
	}
	return "read: " + err.Error()
}

// readMessage reads the payload of the message whose first frame NextFrame
// just returned into c.rbuf after the headroom, growing the buffer as bytes
// arrive (never on the declared length).
func (c *conn) readMessage() ([]byte, error) {
	buf := c.rbuf[:headroom]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			c.rbuf = buf
			return buf[headroom:], nil
		}
		if err != nil {
			c.rbuf = buf[:headroom]
			return nil, err
		}
	}
}

// onIntermediate handles a control frame in the middle of a fragmented message.
func (c *conn) onIntermediate(h ws.Header, r io.Reader) error {
	return c.control(h, r)
}

// control handles a control frame whose payload r yields. It returns
// errPeerClosed after answering a close frame.
func (c *conn) control(h ws.Header, r io.Reader) error {
	n := int(h.Length)
	p := c.ctl[headroom : headroom+n]
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	switch h.OpCode {
	case ws.OpPing:
		if c.closing {
			return nil
		}
		err := c.send(ws.OpPong, c.ctl[:headroom+n])
		if errors.Is(err, errWriteClosed) {
			return nil
		}
		return err
	case ws.OpClose:
		if c.closing {
			return errPeerClosed // the answer to ours
		}
		if _, _, err := wsframe.ParseClose(p); err != nil {
			c.sendClose(wsframe.ProtocolError, "invalid close frame")
			return errPeerClosed
		}
		c.send(ws.OpClose, c.ctl[:headroom+n]) // echo the peer's close
		return errPeerClosed
	}
	return nil // pong
}

// send writes buf[headroom:] as one unfragmented frame, its header put in
// the headroom. It returns errWriteClosed after a close frame or a failed
// write; a close frame is the last frame it writes.
func (c *conn) send(op ws.OpCode, buf []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(buf) - headroom)}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return errWriteClosed
	}
	if op == ws.OpClose {
		c.wclosed = true
	}
	start := wsframe.PutHeaderBefore(buf, headroom, h)
	if _, err := c.nc.Write(buf[start:]); err != nil {
		c.wclosed = true
		return err
	}
	return nil
}

// sendClose sends a close frame with code and reason (cut to 123 bytes at
// a rune boundary); nothing is written after it. It may run beside the
// reader (Server.Close), so it builds the frame in a buffer of its own.
func (c *conn) sendClose(code wsframe.CloseCode, reason string) error {
	var buf [headroom + ws.MaxControlFramePayloadSize]byte
	return c.send(ws.OpClose, wsframe.AppendClose(buf[:headroom], code, reason))
}

// closeWith starts the closing handshake from our side: close frame, then
// read (discarding data) until the peer's close frame or Server.closeWait.
func (c *conn) closeWith(code wsframe.CloseCode, reason string) {
	c.sendClose(code, reason)
	c.closing = true
	_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.closeWait))
}

// stopWriting ends all writes without a close frame (mock.fault stall).
func (c *conn) stopWriting() {
	c.wmu.Lock()
	c.wclosed = true
	c.wmu.Unlock()
}

// sendEvent marshals ev and sends it as a text frame. For events of the
// reader only.
func (c *conn) sendEvent(ev any) error { return c.sendJSON(&c.obuf, ev) }

// sendJSON sends ev as a text frame, encoded into *buf after its headroom:
// each goroutine that writes keeps a buffer of its own.
func (c *conn) sendJSON(buf *[]byte, ev any) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	*buf = append((*buf)[:headroom], b...)
	return c.send(ws.OpText, *buf)
}
