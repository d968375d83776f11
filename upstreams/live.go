package upstreams

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// A GPT-Live dial (Request.Start set): the client spoke first, so the dial
// is the WebSocket handshake with the upstream's live_url, then the client's
// session.start, forwarded as it is, then the wait for session.started. An
// error event or a close before session.started is a failed dial, and the
// next upstream gets the same session.start.

// liveModel returns the model a GPT-Live session asks u for and whether u
// serves it: u needs a live_url, and allowed_models applies to the model
// named in session.start. default_model does not apply (tether never edits
// session.start; a start without a model is the service's error to give).
func (u *Upstream) liveModel(requested string) bool {
	if u.LiveURL == "" {
		return false
	}
	return requested == "" || len(u.AllowedModels) == 0 || slices.Contains(u.AllowedModels, requested)
}

// dialLive makes one GPT-Live attempt at u (see dialOne).
func (d *Dialer) dialLive(ctx context.Context, u *Upstream, req Request, key string) (*Conn, Attempt) {
	target := u.LiveURL
	if u.Type == KindGeneric && u.APIKeyQuery != "" {
		t, err := upstreamURL(u.LiveURL, setQuery("", u.APIKeyQuery, key))
		if err != nil {
			return nil, Attempt{Result: "error", Err: err}
		}
		target = t
	}
	conn, br, a := u.handshake(ctx, target, u.header(req.Header, key), key)
	if conn == nil {
		return nil, a
	}
	c := &Conn{Net: conn, BR: br, Upstream: u}
	if a = c.awaitStarted(ctx, req.Start, key); a.Result != "ok" {
		return nil, a
	}
	return c, a
}

// awaitStarted sends session.start and waits, until ctx is done, for
// session.started. Events before it (none are expected) are kept with it in
// c.First for the client.
func (c *Conn) awaitStarted(ctx context.Context, start []byte, key string) Attempt {
	return c.await(ctx, key, func() (string, error) {
		if err := writeMasked(c.Net, ws.OpText, start); err != nil {
			return "error", err
		}
		return c.readStarted()
	})
}

// readStarted reads upstream frames until session.started (success), an
// error event or a close (a failed dial). Pings are answered.
func (c *Conn) readStarted() (string, error) {
	var early bytes.Buffer
	for {
		var hb [wsframe.MaxHeaderSize]byte
		h, err := ws.ReadHeaderBuffer(c.BR, hb[:])
		if err != nil {
			return "closed", fmt.Errorf("read %s: %w", live.SessionStarted, err)
		}
		if h.Masked || h.Rsv != 0 || !h.Fin || h.Length > maxFirstEvent || early.Len()+int(h.Length) > maxFirstEvent {
			return "error", errors.New("upstream frame before session.started malformed or too large")
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.BR, payload); err != nil {
			return "closed", fmt.Errorf("read %s: %w", live.SessionStarted, err)
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := writeMasked(c.Net, ws.OpPong, payload); err != nil {
				return "closed", err
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason, err := wsframe.ParseClose(payload)
			if err != nil {
				return "closed", fmt.Errorf("upstream closed before %s: %w", live.SessionStarted, err)
			}
			return "closed", fmt.Errorf("upstream closed before %s: %d %s", live.SessionStarted, code, reason)
		case ws.OpText:
		default:
			return "error", fmt.Errorf("unexpected opcode %d before %s", h.OpCode, live.SessionStarted)
		}
		st, err := live.CheckStarted(payload)
		if err != nil {
			return "error", fmt.Errorf("event before %s: %w", live.SessionStarted, err)
		}
		switch {
		case st.Type == live.Error && st.Code == live.CodeInvalidAPIKey:
			return "auth", fmt.Errorf("upstream rejected the credential (%s)", st.Code)
		case st.Type == live.Error:
			c.StartError = payload
			return "error_event", fmt.Errorf("upstream error event before %s: %s %s", live.SessionStarted, st.ErrType, st.Code)
		}
		frame := make([]byte, ws.HeaderSize(h)+len(payload))
		n := wsframe.PutHeader(frame, h)
		copy(frame[n:], payload)
		early.Write(frame)
		if st.OK {
			c.First, c.FirstPayload, c.FirstType = early.Bytes(), payload, st.Type
			return "ok", nil
		}
	}
}

// writeMasked writes one final frame in the client role (masked).
func writeMasked(w io.Writer, op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload)), Masked: true}
	binary.LittleEndian.PutUint32(h.Mask[:], rand.Uint32())
	frame := make([]byte, ws.HeaderSize(h)+len(payload))
	n := wsframe.PutHeader(frame, h)
	copy(frame[n:], payload)
	ws.Cipher(frame[n:], h.Mask, 0)
	_, err := w.Write(frame)
	return err
}
