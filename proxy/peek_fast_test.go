package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// peekAll feeds data in chunks of step bytes, masked with mask (zero: the
// unmasked fast path; non-zero: the byte-by-byte path).
func peekAll(data []byte, mask [4]byte, step int, wantResp bool) *Peeker {
	in := data
	if mask != [4]byte{} {
		in = make([]byte, len(data))
		for i := range data {
			in[i] = data[i] ^ mask[i&3]
		}
	}
	p := &Peeker{}
	p.Reset(wantResp)
	for i := 0; i < len(in); i += step {
		p.Feed(in[i:min(i+step, len(in))], mask, i)
	}
	return p
}

// samePeek fails unless the unmasked (memchr) scan and the masked
// (byte-by-byte) scan agree on everything.
func samePeek(t *testing.T, data []byte, step int, wantResp bool) {
	t.Helper()
	fast := peekAll(data, [4]byte{}, step, wantResp)
	slow := peekAll(data, [4]byte{0x5a, 0xa5, 0x3c, 0xc3}, step, wantResp)
	if !bytes.Equal(fast.Type(), slow.Type()) || !bytes.Equal(fast.ResponseID(), slow.ResponseID()) ||
		fast.Done() != slow.Done() || fast.scanned != slow.scanned {
		t.Fatalf("step %d wantResp %v on %.80q:\nfast type %q id %q done %v scanned %d\nslow type %q id %q done %v scanned %d",
			step, wantResp, data, fast.Type(), fast.ResponseID(), fast.Done(), fast.scanned,
			slow.Type(), slow.ResponseID(), slow.Done(), slow.scanned)
	}
}

var fastPathInputs = []string{
	`{"delta":"` + strings.Repeat("QUJD", 400) + `","response_id":"resp_7","type":"response.output_audio.delta"}`,
	`{"type":"response.output_audio.delta","delta":"` + strings.Repeat("QUJD", 400) + `","response_id":"resp_8"}`,
	`{"audio":"a\"b\\\\c\\\"","type":"t"}`,
	`{"x":{"s":"` + strings.Repeat("z", 3000) + `\"}","t":["a\\"]},"type":"nested.ok"}`,
	`{"audio":"` + strings.Repeat("A", peekLimit-20) + `","type":"late"}`,
	`{"audio":"` + strings.Repeat("A", peekLimit-11) + `","type":"edge"}`,
	`{"audio":"` + strings.Repeat("A", peekLimit+5000) + `"}`,
	`{"audio":"unterminated`,
}

func TestPeekerFastPathMatchesByteScan(t *testing.T) {
	var inputs []string
	for _, tc := range peekCases {
		inputs = append(inputs, tc.in)
	}
	inputs = append(inputs, fastPathInputs...)
	for _, in := range inputs {
		for _, step := range []int{1, 2, 5, 64, 1000, 1 << 20} {
			samePeek(t, []byte(in), step, true)
			samePeek(t, []byte(in), step, false)
		}
	}
}

// Only response.* events carry a response_id: after another type the
// scanner stops instead of reading the audio for one.
func TestPeekerStopsAfterNonResponseType(t *testing.T) {
	in := []byte(`{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("A", 2000) + `","response_id":"resp_x"}`)
	p := &Peeker{}
	p.Reset(true)
	n := len(`{"type":"input_audio_buffer.append"`)
	p.Feed(in[:n], [4]byte{}, 0)
	if !p.Done() || string(p.Type()) != "input_audio_buffer.append" || p.ResponseID() != nil {
		t.Fatalf("after the type: done %v type %q id %q; want done with no response id", p.Done(), p.Type(), p.ResponseID())
	}
	q := &Peeker{}
	q.Reset(true)
	d := []byte(`{"type":"response.output_audio.delta","delta":"` + strings.Repeat("A", 2000) + `","response_id":"resp_y"}`)
	q.Feed(d, [4]byte{}, 0)
	if string(q.ResponseID()) != "resp_y" {
		t.Fatalf("response.* event: id %q, want resp_y (found after the audio)", q.ResponseID())
	}
}

// FuzzPeekerFastPath: the unmasked scan, which skips string contents with
// memchr, must agree with the masked scan, which steps byte by byte.
func FuzzPeekerFastPath(f *testing.F) {
	for _, s := range fastPathInputs[:4] {
		f.Add([]byte(s), uint8(7), true)
	}
	for _, tc := range peekCases {
		f.Add([]byte(tc.in), uint8(0), tc.wantResponse)
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8, wantResp bool) {
		samePeek(t, data, int(split)+1, wantResp)
	})
}

var peekBenchCases = []struct {
	name string
	in   []byte
	mask [4]byte
}{
	{"echoed_append_1350B", []byte(`{"type":"input_audio_buffer.append","event_id":"e","audio":"` + strings.Repeat("QUJD", 320) + `"}`), [4]byte{}},
	{"audio_delta_late_id_13KB", []byte(`{"type":"response.output_audio.delta","delta":"` + strings.Repeat("QUJD", 3200) + `","response_id":"resp_1"}`), [4]byte{}},
	{"masked_append_1350B", []byte(`{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("QUJD", 320) + `"}`), [4]byte{1, 2, 3, 4}},
}

func BenchmarkPeeker(b *testing.B) {
	for _, bc := range peekBenchCases {
		b.Run(bc.name, func(b *testing.B) {
			in := bc.in
			if bc.mask != [4]byte{} {
				in = make([]byte, len(bc.in))
				for i := range bc.in {
					in[i] = bc.in[i] ^ bc.mask[i&3]
				}
			}
			var p Peeker
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				p.Reset(true)
				p.Feed(in, bc.mask, 0)
			}
			if p.Type() == nil {
				b.Fatal("no type")
			}
		})
	}
}
