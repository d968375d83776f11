// Package proxy holds tether's hot path: the client upgrade, the frame relay
// between the client and upstream legs, and the event peeker.
//
// The relay forwards frames without re-encoding them: client frames keep the
// client's mask (they are masked on both legs) and upstream frames are
// unmasked on both legs. Payloads stream through pooled buffers, so a
// 15 MiB append never sits whole in memory. Telemetry is not done here: the
// relay reports through the Observer interface.
package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Frame-level errors. They are values, so returning them does not allocate.
var (
	ErrReservedBits        = errors.New("reserved bits set without a negotiated extension")
	ErrReservedOpCode      = errors.New("reserved opcode")
	ErrFragmentedControl   = errors.New("fragmented control frame")
	ErrControlTooLong      = errors.New("control frame payload over 125 bytes")
	ErrMaskMismatch        = errors.New("frame masking does not match the peer's role")
	ErrUnexpectedContinue  = errors.New("continuation frame without a message in progress")
	ErrExpectedContinue    = errors.New("new data frame while a fragmented message is in progress")
	ErrBadClosePayload     = errors.New("malformed close frame payload")
	ErrFrameTooLarge       = errors.New("frame payload over max_frame_bytes")
	errHeaderLengthInvalid = errors.New("invalid payload length")
)

// headerBufSize is the largest encoded header (2 + 8 length + 4 mask).
const headerBufSize = ws.MaxHeaderSize

// readHeader reads one frame header from r into h using the caller's buffer
// (at least 12 bytes). It does not allocate.
func readHeader(r io.Reader, buf []byte) (ws.Header, error) {
	h, err := ws.ReadHeaderBuffer(r, buf)
	if err != nil {
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return h, errHeaderLengthInvalid
		}
		return h, err
	}
	return h, nil
}

// putHeader encodes h into dst (at least 14 bytes) and returns its length.
func putHeader(dst []byte, h ws.Header) int {
	dst[0] = h.Rsv<<4 | byte(h.OpCode)
	if h.Fin {
		dst[0] |= 0x80
	}
	var n int
	switch {
	case h.Length < 126:
		dst[1] = byte(h.Length)
		n = 2
	case h.Length <= 0xffff:
		dst[1] = 126
		binary.BigEndian.PutUint16(dst[2:4], uint16(h.Length))
		n = 4
	default:
		dst[1] = 127
		binary.BigEndian.PutUint64(dst[2:10], uint64(h.Length))
		n = 10
	}
	if h.Masked {
		dst[1] |= 0x80
		n += copy(dst[n:], h.Mask[:])
	}
	return n
}

// frameState tracks fragmentation on one direction of the relay.
type frameState struct {
	// inMessage is true between a non-final data frame and its final continuation.
	inMessage bool
	// text is true when the message in progress is a text message.
	text bool
}

// checkHeader validates h as received from a peer whose frames must be masked
// (wantMasked) and updates the fragmentation state. maxPayload bounds data
// frames. It returns a protocol error or ErrFrameTooLarge.
func (st *frameState) checkHeader(h ws.Header, wantMasked bool, maxPayload int64) error {
	if h.Rsv != 0 {
		return ErrReservedBits
	}
	if h.Masked != wantMasked {
		return ErrMaskMismatch
	}
	if h.Length < 0 {
		return errHeaderLengthInvalid
	}
	switch h.OpCode {
	case ws.OpClose, ws.OpPing, ws.OpPong:
		if !h.Fin {
			return ErrFragmentedControl
		}
		if h.Length > 125 {
			return ErrControlTooLong
		}
		return nil
	case ws.OpText, ws.OpBinary:
		if st.inMessage {
			return ErrExpectedContinue
		}
		if h.Length > maxPayload {
			return ErrFrameTooLarge
		}
		st.inMessage = !h.Fin
		st.text = h.OpCode == ws.OpText
		return nil
	case ws.OpContinuation:
		if !st.inMessage {
			return ErrUnexpectedContinue
		}
		if h.Length > maxPayload {
			return ErrFrameTooLarge
		}
		if h.Fin {
			st.inMessage = false
		}
		return nil
	default:
		return ErrReservedOpCode
	}
}

// Close status codes tether sends (see the README's close-code table).
const (
	CloseNormal          uint16 = 1000
	CloseGoingAway       uint16 = 1001
	CloseProtocolError   uint16 = 1002
	CloseNoStatus        uint16 = 1005 // never sent on the wire
	CloseInvalidPayload  uint16 = 1007
	CloseMessageTooBig   uint16 = 1009
	CloseBadGateway      uint16 = 1014
	CloseIdleTimeout     uint16 = 4000
	CloseMaxDuration     uint16 = 4001
	CloseUpstreamTimeout uint16 = 4002
	CloseAdmin           uint16 = 4003
)

// MaxCloseReason is the longest reason a close frame can carry (125 - 2).
const MaxCloseReason = 123

// validCloseCode reports whether code may appear in a close frame (RFC 6455 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// parseClose decodes a close frame payload. An empty payload means no status
// (1005). A malformed payload or an invalid code gives ErrBadClosePayload.
func parseClose(p []byte) (code uint16, reason []byte, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, nil, nil
	case len(p) == 1:
		return 0, nil, ErrBadClosePayload
	}
	code = binary.BigEndian.Uint16(p)
	if !validCloseCode(code) {
		return 0, nil, ErrBadClosePayload
	}
	reason = p[2:]
	if !utf8.Valid(reason) {
		return 0, nil, ErrBadClosePayload
	}
	return code, reason, nil
}

// appendClosePayload appends the payload of a close frame with code and
// reason (truncated to MaxCloseReason bytes on a rune boundary) to dst. Code
// CloseNoStatus gives an empty payload.
func appendClosePayload(dst []byte, code uint16, reason string) []byte {
	if code == CloseNoStatus || code == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, truncateUTF8(reason, MaxCloseReason)...)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// closeError describes why a leg closed, for logs.
type closeError struct {
	code   uint16
	reason string
}

func (e *closeError) Error() string { return fmt.Sprintf("close %d %q", e.code, e.reason) }
