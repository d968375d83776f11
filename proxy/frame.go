// Package proxy holds tether's hot path: the client upgrade, the frame relay
// between the client and upstream legs, and the event peeker. Frame
// encoding, close payloads and close codes are in internal/wsframe.
//
// The relay forwards frames without re-encoding them: client frames keep the
// client's mask (they are masked on both legs) and upstream frames are
// unmasked on both legs. Payloads stream through pooled buffers, so a
// 15 MiB append never sits whole in memory. Telemetry is not done here: the
// relay reports through the Observer interface.
package proxy

import (
	"errors"
	"io"

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
	ErrFrameTooLarge       = errors.New("frame payload over max_frame_bytes")
	errHeaderLengthInvalid = errors.New("invalid payload length")
)

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
