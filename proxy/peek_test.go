package proxy

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var peekCases = []struct {
	name, in     string
	typ, respID  string
	wantResponse bool
}{
	{name: "type first", in: `{"type":"response.output_audio.delta","response_id":"resp_1","delta":"AAAA"}`, typ: "response.output_audio.delta", respID: "resp_1", wantResponse: true},
	{name: "type last", in: `{"delta":"AAAA","response_id":"resp_2","type":"response.audio.delta"}`, typ: "response.audio.delta", respID: "resp_2", wantResponse: true},
	{name: "nested type ignored", in: `{"session":{"type":"realtime"},"type":"session.created"}`, typ: "session.created"},
	{name: "nested response id ignored", in: `{"response":{"id":"resp_9","response_id":"x"},"type":"response.created"}`, typ: "response.created", wantResponse: true},
	{name: "whitespace", in: " {\n \"type\" : \"error\" , \"error\":{}}", typ: "error"},
	{name: "arrays and scalars", in: `{"a":[1,{"type":"no"},"]"],"b":true,"c":null,"n":-1.5e3,"type":"x"}`, typ: "x"},
	{name: "escaped quotes in strings", in: `{"delta":"a\"b\\","type":"t"}`, typ: "t"},
	{name: "escaped type value rejected", in: `{"type":"a\"b"}`, typ: ""},
	{name: "not an object", in: `["type","x"]`, typ: ""},
	{name: "truncated", in: `{"delta":"AAAA`, typ: ""},
	{name: "truncated after type", in: `{"type":"input_audio_buffer.append","audio":"AAA`, typ: "input_audio_buffer.append"},
	{name: "type not string", in: `{"type":5,"x":1}`, typ: ""},
	{name: "long key", in: `{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":1,"type":"ok"}`, typ: "ok"},
	{name: "empty", in: ``, typ: ""},
}

func TestPeeker(t *testing.T) {
	for _, tc := range peekCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{1, 3, 7, 1 << 20} { // fed in chunks of various sizes
				var p Peeker
				p.Reset(tc.wantResponse)
				b := []byte(tc.in)
				for i := 0; i < len(b); i += split {
					p.Feed(b[i:min(i+split, len(b))], [4]byte{}, i)
				}
				if got := string(p.Type()); got != tc.typ {
					t.Fatalf("split %d: type = %q, want %q", split, got, tc.typ)
				}
				if got := string(p.ResponseID()); got != tc.respID {
					t.Fatalf("split %d: response_id = %q, want %q", split, got, tc.respID)
				}
			}
		})
	}
}

func TestPeekerMasked(t *testing.T) {
	in := []byte(`{"audio":"` + strings.Repeat("A", 5000) + `","type":"input_audio_buffer.append"}`)
	mask := [4]byte{0x11, 0x22, 0x33, 0x44}
	masked := make([]byte, len(in))
	for i := range in {
		masked[i] = in[i] ^ mask[i&3]
	}
	var p Peeker
	p.Reset(false)
	// Chunks that do not align with the mask period.
	for off := 0; off < len(masked); off += 1001 {
		p.Feed(masked[off:min(off+1001, len(masked))], mask, off)
	}
	if got := string(p.Type()); got != "input_audio_buffer.append" {
		t.Fatalf("type = %q", got)
	}
	if testing.AllocsPerRun(100, func() {
		p.Reset(false)
		p.Feed(masked, mask, 0)
	}) != 0 {
		t.Fatal("peeking allocates")
	}
}

func TestPeekerLimit(t *testing.T) {
	in := []byte(`{"audio":"` + strings.Repeat("A", peekLimit) + `","type":"late"}`)
	var p Peeker
	p.Reset(false)
	p.Feed(in, [4]byte{}, 0)
	if !p.Done() || p.Type() != nil {
		t.Fatalf("scanner went past its limit: done=%v type=%q", p.Done(), p.Type())
	}
}

// FuzzPeeker checks the scanner against encoding/json on arbitrary input:
// it never panics, and whatever type it reports is the real top-level type.
func FuzzPeeker(f *testing.F) {
	for _, tc := range peekCases {
		f.Add([]byte(tc.in), uint32(0), uint8(0))
	}
	f.Add([]byte(`{"type":"a","type":"b"}`), uint32(0x01020304), uint8(5))
	f.Add([]byte(`{"response":{"id":"resp_1"},"type":"response.done"}`), uint32(0xdeadbeef), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, maskBits uint32, split uint8) {
		var mask [4]byte
		binary.LittleEndian.PutUint32(mask[:], maskBits)
		masked := make([]byte, len(data))
		for i := range data {
			masked[i] = data[i] ^ mask[i&3]
		}
		step := int(split) + 1
		var p Peeker
		p.Reset(true)
		for i := 0; i < len(masked); i += step {
			p.Feed(masked[i:min(i+step, len(masked))], mask, i)
		}
		typ := p.Type()
		if typ == nil {
			return
		}
		var v map[string]json.RawMessage
		if json.Unmarshal(data, &v) != nil {
			return // invalid JSON: any prefix answer is acceptable
		}
		var want string
		raw, ok := v["type"]
		if !ok || json.Unmarshal(raw, &want) != nil {
			return // duplicate keys or non-string: encoding/json keeps the last
		}
		if !utf8.Valid(typ) {
			return // encoding/json substitutes U+FFFD; the peeker keeps raw bytes
		}
		if strings.Count(string(data), `"type"`) == 1 && string(typ) != want {
			t.Fatalf("peeked type %q, json says %q", typ, want)
		}
	})
}
