// Package wsframe is tether's one place for WebSocket frame knowledge that
// gobwas/ws leaves to the caller: the close codes tether speaks (typed and
// named), frame header encoding into a caller's buffer, close payloads, and
// UTF-8-safe truncation. The relay, the upstream dialer, the mock and the
// tools all use it. Nothing here allocates unless it appends past the
// caller's capacity.
package wsframe

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// CloseCode is the status code of a close frame (RFC 6455 7.4). The codes
// of tether's teardown table are contract (see the README): keep them.
type CloseCode uint16

// Close codes tether sends, relays or names.
const (
	NormalClosure   CloseCode = 1000
	GoingAway       CloseCode = 1001
	ProtocolError   CloseCode = 1002
	UnsupportedData CloseCode = 1003
	// NoStatusReceived stands for a close frame without a payload; it is
	// never sent on the wire.
	NoStatusReceived CloseCode = 1005
	InvalidPayload   CloseCode = 1007
	PolicyViolation  CloseCode = 1008
	MessageTooBig    CloseCode = 1009
	InternalError    CloseCode = 1011
	ServiceRestart   CloseCode = 1012
	TryAgainLater    CloseCode = 1013
	BadGateway       CloseCode = 1014
	// Unauthorized is what OpenAI closes with after a bad credential.
	Unauthorized CloseCode = 3000
	// tether's own codes (4000-4999 are private use).
	IdleTimeout     CloseCode = 4000
	MaxDuration     CloseCode = 4001
	UpstreamTimeout CloseCode = 4002
	Admin           CloseCode = 4003
	BudgetExhausted CloseCode = 4004
)

// Valid reports whether c may appear in a close frame on the wire.
func (c CloseCode) Valid() bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// MaxHeaderSize is the largest encoded frame header: 2 bytes, an 8-byte
// length and a 4-byte mask.
const MaxHeaderSize = ws.MaxHeaderSize

// MaxCloseReason is the longest reason a close frame can carry (125 - 2).
const MaxCloseReason = ws.MaxControlFramePayloadSize - 2

// ErrBadClosePayload is a close payload of one byte, with a code that may
// not be sent, or with a reason that is not UTF-8.
var ErrBadClosePayload = errors.New("malformed close frame payload")

// PutHeader encodes h into dst (at least ws.HeaderSize(h) bytes; MaxHeaderSize
// always fits) and returns the encoded length. It does not allocate.
func PutHeader(dst []byte, h ws.Header) int {
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

// PutHeaderBefore encodes h so that it ends at end in buf, the headroom
// before a payload that starts at buf[end:], and returns where the header
// starts: buf[start:] is the whole frame.
func PutHeaderBefore(buf []byte, end int, h ws.Header) (start int) {
	start = end - ws.HeaderSize(h)
	PutHeader(buf[start:end], h)
	return start
}

// ParseClose decodes a close frame payload. An empty payload is
// NoStatusReceived. A payload of one byte, an invalid code or a reason that
// is not UTF-8 gives ErrBadClosePayload. reason aliases p.
func ParseClose(p []byte) (code CloseCode, reason []byte, err error) {
	switch len(p) {
	case 0:
		return NoStatusReceived, nil, nil
	case 1:
		return 0, nil, ErrBadClosePayload
	}
	code = CloseCode(binary.BigEndian.Uint16(p))
	if !code.Valid() {
		return 0, nil, ErrBadClosePayload
	}
	reason = p[2:]
	if !utf8.Valid(reason) {
		return 0, nil, ErrBadClosePayload
	}
	return code, reason, nil
}

// AppendClose appends the payload of a close frame with code and reason
// (cut to MaxCloseReason bytes at a rune boundary) to dst. Code 0 and
// NoStatusReceived give an empty payload.
func AppendClose(dst []byte, code CloseCode, reason string) []byte {
	if code == NoStatusReceived || code == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, TruncateUTF8(reason, MaxCloseReason)...)
}

// Abbrev cuts s to at most n bytes at a rune boundary, marking a cut with
// "..." (for text shown to a person: a report, a note).
func Abbrev(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return TruncateUTF8(s, n) + "..."
}

// TruncateUTF8 cuts s to at most n bytes without splitting a rune.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
