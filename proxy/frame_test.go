package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/gobwas/ws"
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

func TestPutHeaderRoundTrip(t *testing.T) {
	for _, h := range []ws.Header{
		{Fin: true, OpCode: ws.OpText, Length: 0},
		{Fin: true, OpCode: ws.OpBinary, Length: 125},
		{Fin: false, OpCode: ws.OpText, Length: 126, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{Fin: true, OpCode: ws.OpContinuation, Length: 65535},
		{Fin: true, OpCode: ws.OpText, Length: 65536, Masked: true, Mask: [4]byte{9, 9, 9, 9}},
		{Fin: true, OpCode: ws.OpBinary, Length: 1<<63 - 1},
	} {
		var buf [headerBufSize]byte
		n := putHeader(buf[:], h)
		if n != ws.HeaderSize(h) {
			t.Fatalf("size %d, want %d", n, ws.HeaderSize(h))
		}
		var rb [headerBufSize]byte
		got, err := readHeader(bytes.NewReader(buf[:n]), rb[:])
		if err != nil || got != h {
			t.Fatalf("round trip %+v -> %+v (%v)", h, got, err)
		}
	}
}

func TestParseClose(t *testing.T) {
	for _, tc := range []struct {
		in     []byte
		code   uint16
		reason string
		err    bool
	}{
		{nil, CloseNoStatus, "", false},
		{[]byte{3}, 0, "", true},
		{append([]byte{0x03, 0xe8}, "bye"...), 1000, "bye", false},
		{[]byte{0x03, 0xed}, 0, "", true},               // 1005 may not be sent
		{[]byte{0x0b, 0xb8}, 3000, "", false},           // 3000 from OpenAI auth failures
		{append([]byte{0x03, 0xe8}, 0xff), 0, "", true}, // invalid UTF-8
	} {
		code, reason, err := parseClose(tc.in)
		if (err != nil) != tc.err || code != tc.code || string(reason) != tc.reason {
			t.Fatalf("parseClose(%v) = %d %q %v", tc.in, code, reason, err)
		}
	}
}

func TestAppendClosePayloadTruncates(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes
	p := appendClosePayload(nil, 4000, long)
	if len(p) > 125 {
		t.Fatalf("close payload %d bytes", len(p))
	}
	if _, r, err := parseClose(p); err != nil || len(r) > MaxCloseReason {
		t.Fatalf("truncated reason invalid: %v", err)
	}
}

func TestRedactor(t *testing.T) {
	r := NewRedactor("sk-proj-SECRETSECRET", "topsecret-token")
	for in, want := range map[string]string{
		"Incorrect API key provided: sk-proj-SECRETSECRET.": "Incorrect API key provided: [redacted].",
		"bad key sk-abc123 here":                            "bad key sk-[redacted] here",
		"Bearer ek_12345":                                   "Bearer [redacted]",
		"token topsecret-token leaked":                      "token [redacted] leaked",
		"task-force is fine":                                "task-force is fine",
		"wss://x/?api-key=abc&x=1":                          "wss://x/?api-key=[redacted]&x=1",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzFrameHeader feeds arbitrary bytes to the header reader and validator:
// no panic, and every accepted header re-encodes to the same bytes.
func FuzzFrameHeader(f *testing.F) {
	seed := func(h ws.Header) []byte {
		var b [headerBufSize]byte
		return append([]byte(nil), b[:putHeader(b[:], h)]...)
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
		var buf [headerBufSize]byte
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
			var enc [headerBufSize]byte
			n := putHeader(enc[:], h)
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
