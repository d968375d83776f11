package wsframe

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// headerCases are shared by the round-trip test and the allocation check.
var headerCases = []struct {
	name string
	h    ws.Header
}{
	{"empty text", ws.Header{Fin: true, OpCode: ws.OpText}},
	{"125 binary", ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125}},
	{"126 masked fragment", ws.Header{OpCode: ws.OpText, Length: 126, Masked: true, Mask: [4]byte{1, 2, 3, 4}}},
	{"65535 continuation", ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 65535}},
	{"65536 masked", ws.Header{Fin: true, OpCode: ws.OpText, Length: 65536, Masked: true, Mask: [4]byte{9, 8, 7, 6}}},
	{"max length", ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1<<63 - 1}},
	{"ping masked", ws.Header{Fin: true, OpCode: ws.OpPing, Length: 8, Masked: true, Mask: [4]byte{0xff, 0, 0xff, 0}}},
	{"close", ws.Header{Fin: true, OpCode: ws.OpClose, Length: 2}},
	{"rsv bits", ws.Header{Fin: true, OpCode: ws.OpText, Rsv: 4, Length: 3}},
}

// PutHeader writes the bytes gobwas/ws writes, and gobwas/ws reads them back.
func TestPutHeaderMatchesGobwas(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			var buf [MaxHeaderSize]byte
			n := PutHeader(buf[:], tc.h)
			var want bytes.Buffer
			if err := ws.WriteHeader(&want, tc.h); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], want.Bytes()) {
				t.Fatalf("PutHeader = % x, gobwas/ws writes % x", buf[:n], want.Bytes())
			}
			if n != ws.HeaderSize(tc.h) {
				t.Fatalf("length %d, ws.HeaderSize %d", n, ws.HeaderSize(tc.h))
			}
			got, err := ws.ReadHeader(bytes.NewReader(buf[:n]))
			if err != nil || got != tc.h {
				t.Fatalf("read back %+v (%v), want %+v", got, err, tc.h)
			}
		})
	}
}

func TestPutHeaderBefore(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, MaxHeaderSize+3)
			copy(buf[MaxHeaderSize:], "abc")
			start := PutHeaderBefore(buf, MaxHeaderSize, tc.h)
			var want bytes.Buffer
			_ = ws.WriteHeader(&want, tc.h)
			want.WriteString("abc")
			if !bytes.Equal(buf[start:], want.Bytes()) {
				t.Fatalf("frame = % x, want % x", buf[start:], want.Bytes())
			}
		})
	}
}

func TestHelpersDoNotAllocate(t *testing.T) {
	var hb [MaxHeaderSize]byte
	var cb [125]byte
	reason := strings.Repeat("é", 100)
	allocs := testing.AllocsPerRun(100, func() {
		for _, tc := range headerCases {
			PutHeader(hb[:], tc.h)
		}
		p := AppendClose(cb[:0], GoingAway, reason)
		if _, _, err := ParseClose(p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func TestCloseCodeValid(t *testing.T) {
	for _, tc := range []struct {
		code CloseCode
		want bool
	}{
		{0, false}, {999, false},
		{NormalClosure, true}, {GoingAway, true}, {ProtocolError, true}, {UnsupportedData, true},
		{1004, false}, {NoStatusReceived, false}, {1006, false},
		{InvalidPayload, true}, {PolicyViolation, true}, {MessageTooBig, true}, {InternalError, true},
		{TryAgainLater, true}, {BadGateway, true}, {1015, false}, {2999, false},
		{Unauthorized, true}, {IdleTimeout, true}, {MaxDuration, true}, {UpstreamTimeout, true},
		{Admin, true}, {4999, true}, {5000, false},
	} {
		if got := tc.code.Valid(); got != tc.want {
			t.Errorf("CloseCode(%d).Valid() = %v, want %v", tc.code, got, tc.want)
		}
	}
}

// The teardown table's codes are contract: their numbers never change.
func TestContractCodes(t *testing.T) {
	for code, want := range map[CloseCode]uint16{
		NormalClosure: 1000, GoingAway: 1001, ProtocolError: 1002, MessageTooBig: 1009,
		InternalError: 1011, BadGateway: 1014, IdleTimeout: 4000, MaxDuration: 4001,
		UpstreamTimeout: 4002, Admin: 4003, BudgetExhausted: 4004,
	} {
		if uint16(code) != want {
			t.Errorf("code %d, want %d", code, want)
		}
	}
}

func TestParseClose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		code   CloseCode
		reason string
		err    bool
	}{
		{"empty is no status", nil, NoStatusReceived, "", false},
		{"one byte", []byte{3}, 0, "", true},
		{"code and reason", append([]byte{0x03, 0xe8}, "bye"...), NormalClosure, "bye", false},
		{"1005 may not be sent", []byte{0x03, 0xed}, 0, "", true},
		{"OpenAI auth failure", []byte{0x0b, 0xb8}, Unauthorized, "", false},
		{"private code", []byte{0x10, 0xe1}, 4321, "", false},
		{"5000 invalid", []byte{0x13, 0x88}, 0, "", true},
		{"invalid UTF-8", append([]byte{0x03, 0xe8}, 0xff), 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClose(tc.in)
			if (err != nil) != tc.err || code != tc.code || string(reason) != tc.reason {
				t.Fatalf("ParseClose(% x) = %d %q %v", tc.in, code, reason, err)
			}
		})
	}
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	for _, tc := range []struct {
		name   string
		code   CloseCode
		reason string
		want   []byte // nil: compare with gobwas/ws
	}{
		{"no status is empty", NoStatusReceived, "ignored", []byte{}},
		{"zero is empty", 0, "ignored", []byte{}},
		{"code only", NormalClosure, "", nil},
		{"code and reason", UpstreamTimeout, "upstream heartbeat timeout", nil},
		{"long reason cut at a rune", IdleTimeout, long, append([]byte{0x0f, 0xa0}, strings.Repeat("é", 61)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendClose([]byte{}, tc.code, tc.reason)
			want := tc.want
			if want == nil {
				want = ws.NewCloseFrameBody(ws.StatusCode(tc.code), tc.reason)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendClose = % x, want % x", got, want)
			}
			if len(got) > ws.MaxControlFramePayloadSize {
				t.Fatalf("payload %d bytes", len(got))
			}
			if len(got) > 0 {
				if code, _, err := ParseClose(got); err != nil || code != tc.code {
					t.Fatalf("ParseClose = %d %v", code, err)
				}
			}
		})
	}
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "abc", 5, "abc"},
		{"exact", "abc", 3, "abc"},
		{"ascii cut", "abcdef", 4, "abcd"},
		{"two-byte runes", strings.Repeat("é", 10), 5, "éé"},
		{"four-byte rune", "a😀b", 4, "a"},
		{"cut at zero", "é", 1, ""},
		{"zero", "abc", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TruncateUTF8(tc.in, tc.n)
			if got != tc.want || !utf8.ValidString(got) {
				t.Fatalf("TruncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

// FuzzParseClose: close payloads come from peers. No panic; an accepted
// payload has a valid code and a UTF-8 reason, and encodes back to itself.
func FuzzParseClose(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3})
	f.Add(append([]byte{0x03, 0xe8}, "bye"...))
	f.Add([]byte{0x03, 0xed})
	f.Add(append([]byte{0x0f, 0xa0}, 0xc3))
	f.Fuzz(func(t *testing.T, p []byte) {
		code, reason, err := ParseClose(p)
		if err != nil || len(p) == 0 {
			return
		}
		if !code.Valid() || !utf8.Valid(reason) {
			t.Fatalf("accepted %d %q", code, reason)
		}
		if len(reason) <= MaxCloseReason {
			if again := AppendClose(nil, code, string(reason)); !bytes.Equal(again, p) {
				t.Fatalf("re-encoded % x, want % x", again, p)
			}
		}
	})
}

// Abbrev marks a cut, never splits a rune, and leaves a short string be.
func TestAbbrev(t *testing.T) {
	for in, want := range map[string]string{
		"abc":                   "abc",
		"abcde":                 "abcde",
		"abcdef":                "abcde...",
		strings.Repeat("é", 10): "éé...",
	} {
		if got := Abbrev(in, 5); got != want {
			t.Errorf("Abbrev(%q, 5) = %q, want %q", in, got, want)
		}
	}
}
