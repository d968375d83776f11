package upstreams

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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
	conn, br, a := u.handshake(ctx, target, u.liveHeader(req.Header, key), key)
	if conn == nil {
		return nil, a
	}
	c := &Conn{Net: conn, BR: br, Upstream: u}
	var refusal []byte
	a = c.await(ctx, key, func() (string, error) {
		if err := WriteMasked(c.Net, ws.OpText, req.Start); err != nil {
			return "error", err
		}
		result, refused, err := c.readStarted()
		refusal = refused
		return result, err
	})
	if a.Result != "ok" {
		a.Refusal, a.ClientFault = refusal, refusal != nil
		return nil, a
	}
	return c, a
}

// liveHeader is the handshake header of a GPT-Live dial: as for Realtime,
// without the Realtime beta marker (GPT-Live takes none).
func (u *Upstream) liveHeader(client http.Header, key string) http.Header {
	h := u.header(client, key)
	if _, own := u.Headers["Openai-Beta"]; !own {
		h.Del("OpenAI-Beta")
	}
	return h
}

// readStarted reads upstream messages until session.started (success), an
// error event, session.closed or a close (a failed dial). Pings are
// answered; messages may come in fragments. Messages before
// session.started (none are expected) are kept in c.Early for the client. An invalid_request_error refusing the start is returned as
// refusal: the client's error, not the upstream's.
func (c *Conn) readStarted() (result string, refusal []byte, err error) {
	early := 0 // bytes of the messages before session.started
	var msg []byte
	var op ws.OpCode
	for {
		var hb [wsframe.MaxHeaderSize]byte
		h, err := ws.ReadHeaderBuffer(c.BR, hb[:])
		if err != nil {
			return "closed", nil, fmt.Errorf("read %s: %w", live.SessionStarted, err)
		}
		if h.Masked || h.Rsv != 0 || h.Length > maxFirstEvent || early+len(msg)+int(h.Length) > maxFirstEvent {
			return "error", nil, errors.New("upstream frame before session.started malformed or too large")
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.BR, payload); err != nil {
			return "closed", nil, fmt.Errorf("read %s: %w", live.SessionStarted, err)
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := WriteMasked(c.Net, ws.OpPong, payload); err != nil {
				return "closed", nil, err
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason, err := wsframe.ParseClose(payload)
			if err != nil {
				return "closed", nil, fmt.Errorf("upstream closed before %s: %w", live.SessionStarted, err)
			}
			return "closed", nil, fmt.Errorf("upstream closed before %s: %d %s", live.SessionStarted, code, reason)
		case ws.OpText, ws.OpBinary:
			if msg != nil {
				return "error", nil, errors.New("upstream started a message inside another before session.started")
			}
			op = h.OpCode
		case ws.OpContinuation:
			if msg == nil {
				return "error", nil, errors.New("upstream continuation without a message before session.started")
			}
		default:
			return "error", nil, fmt.Errorf("unexpected opcode %d before %s", h.OpCode, live.SessionStarted)
		}
		msg = append(msg[:len(msg):len(msg)], payload...)
		if !h.Fin {
			continue
		}
		whole := msg
		msg = nil
		if op != ws.OpText {
			return "error", nil, fmt.Errorf("binary message before %s", live.SessionStarted)
		}
		st, err := live.CheckStarted(whole)
		if err != nil {
			return "error", nil, fmt.Errorf("event before %s: %w", live.SessionStarted, err)
		}
		switch {
		case st.Type == live.Error && st.Code == live.CodeInvalidAPIKey:
			return "auth", nil, fmt.Errorf("upstream rejected the credential (%s)", st.Code)
		case st.Type == live.Error && st.ErrType == live.ErrTypeInvalidRequest:
			return "error_event", whole, fmt.Errorf("upstream refused the session.start: %s %s", st.ErrType, st.Code)
		case st.Type == live.Error:
			return "error_event", nil, fmt.Errorf("upstream error event before %s: %s %s", live.SessionStarted, st.ErrType, st.Code)
		case st.Type == live.SessionClosed:
			return "closed", nil, fmt.Errorf("upstream sent %s before %s", live.SessionClosed, live.SessionStarted)
		}
		if !st.OK {
			early += len(whole)
			c.Early = append(c.Early, whole)
			continue
		}
		frame := make([]byte, wsframe.MaxHeaderSize+len(whole))
		n := wsframe.PutHeader(frame, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(whole))})
		n += copy(frame[n:], whole)
		c.First, c.FirstPayload, c.FirstType = frame[:n], whole, st.Type
		return "ok", nil, nil
	}
}

// WriteMasked writes one final frame in the client role (masked).
func WriteMasked(w io.Writer, op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload)), Masked: true}
	binary.LittleEndian.PutUint32(h.Mask[:], rand.Uint32())
	frame := make([]byte, ws.HeaderSize(h)+len(payload))
	n := wsframe.PutHeader(frame, h)
	copy(frame[n:], payload)
	ws.Cipher(frame[n:], h.Mask, 0)
	_, err := w.Write(frame)
	return err
}
