package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
)

func TestCheckHeader(t *testing.T) {
	const max = 1 << 20
	cases := []struct {
		name   string
		frames []ws.Header
		masked bool
		want   error // for the last frame
	}{
		{"text", []ws.Header{{Fin: true, OpCode: ws.OpText, Masked: true, Length: 10}}, true, nil},
		{"unmasked from client", []ws.Header{{Fin: true, OpCode: ws.OpText, Length: 10}}, true, ErrMaskMismatch},
		{"masked from upstream", []ws.Header{{Fin: true, OpCode: ws.OpText, Masked: true}}, false, ErrMaskMismatch},
		{"rsv", []ws.Header{{Fin: true, OpCode: ws.OpText, Rsv: 4}}, false, ErrReservedBits},
		{"reserved opcode", []ws.Header{{Fin: true, OpCode: 0x3}}, false, ErrReservedOpCode},
		{"fragmented ping", []ws.Header{{OpCode: ws.OpPing}}, false, ErrFragmentedControl},
		{"long ping", []ws.Header{{Fin: true, OpCode: ws.OpPing, Length: 126}}, false, ErrControlTooLong},
		{"too large", []ws.Header{{Fin: true, OpCode: ws.OpBinary, Length: max + 1}}, false, ErrFrameTooLarge},
		{"continuation alone", []ws.Header{{Fin: true, OpCode: ws.OpContinuation}}, false, ErrUnexpectedContinue},
		{"fragmented ok", []ws.Header{{OpCode: ws.OpText}, {Fin: true, OpCode: ws.OpPing}, {Fin: true, OpCode: ws.OpContinuation}}, false, nil},
		{"new message mid-fragment", []ws.Header{{OpCode: ws.OpText}, {Fin: true, OpCode: ws.OpText}}, false, ErrExpectedContinue},
		{"huge length", []ws.Header{{Fin: true, OpCode: ws.OpText, Length: 1<<63 - 1}}, false, ErrFrameTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var st frameState
			var err error
			for _, h := range tc.frames {
				err = st.checkHeader(h, tc.masked, max)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzFrameHeader feeds arbitrary bytes to the header reader and validator:
// no panic, and every accepted header re-encodes to the same bytes.
func FuzzFrameHeader(f *testing.F) {
	seed := func(h ws.Header) []byte {
		var b [wsframe.MaxHeaderSize]byte
		return append([]byte(nil), b[:wsframe.PutHeader(b[:], h)]...)
	}
	f.Add(seed(ws.Header{Fin: true, OpCode: ws.OpText, Length: 5, Masked: true, Mask: [4]byte{1, 2, 3, 4}}), true)
	f.Add(seed(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1<<63 - 1}), false)
	f.Add(seed(ws.Header{Fin: false, OpCode: ws.OpText, Length: 300}), false)
	f.Add(seed(ws.Header{Fin: true, OpCode: ws.OpPing, Length: 125, Masked: true}), true)
	f.Add(append(seed(ws.Header{OpCode: ws.OpText, Length: 1}), seed(ws.Header{Fin: true, OpCode: ws.OpPing})...), false)
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, false) // 64-bit length with MSB set
	f.Add([]byte{0x81, 0x7e, 0x00}, false)                      // truncated 16-bit length
	f.Fuzz(func(t *testing.T, data []byte, masked bool) {
		r := bytes.NewReader(data)
		var st frameState
		var buf [wsframe.MaxHeaderSize]byte
		for {
			h, err := readHeader(r, buf[:])
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && err != errHeaderLengthInvalid {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if st.checkHeader(h, masked, 16<<20) != nil {
				return
			}
			var enc [wsframe.MaxHeaderSize]byte
			n := wsframe.PutHeader(enc[:], h)
			got, err := readHeader(bytes.NewReader(enc[:n]), buf[:])
			if err != nil || got != h {
				t.Fatalf("re-encode %+v -> %+v (%v)", h, got, err)
			}
			if h.Length > int64(r.Len()) {
				return
			}
			if _, err := r.Seek(h.Length, io.SeekCurrent); err != nil {
				return
			}
			_ = binary.BigEndian
		}
	})
}
