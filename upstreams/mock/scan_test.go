package mock

import (
	"encoding/json"
	"testing"
)

var scanCases = []struct {
	name  string
	in    string
	ok    bool
	typ   string
	audio string
}{
	{
		name:  "append",
		in:    `{"type":"input_audio_buffer.append","audio":"AAECAw=="}`,
		ok:    true,
		typ:   "input_audio_buffer.append",
		audio: "AAECAw==",
	},
	{
		name:  "type last, whitespace, nested values",
		in:    " {\n \"event_id\" : \"e\\\"1\", \"x\": {\"type\": [1, {\"a\": \"]\"}]}, \"n\": -1.5e3, \"b\": true, \"z\": null,\"audio\":\"QQ==\" , \"type\" : \"t\" } ",
		ok:    true,
		typ:   "t",
		audio: "QQ==",
	},
	{
		name: "type not a string",
		in:   `{"type":1}`,
		ok:   true,
	},
	{
		name: "duplicate: last wins",
		in:   `{"type":"a","type":"b"}`,
		ok:   true,
		typ:  "b",
	},
	{
		name: "empty object",
		in:   `{}`,
		ok:   true,
	},
	{
		name: "not an object",
		in:   `["type"]`,
	},
	{
		name: "garbage",
		in:   `not json`,
	},
	{
		name: "truncated",
		in:   `{"type":"a","audio":"AAAA`,
	},
	{
		name: "trailing data",
		in:   `{"type":"a"} x`,
	},
	{
		name: "missing colon",
		in:   `{"type" "a"}`,
	},
	{
		name: "bad literal",
		in:   `{"type":"a","x":tru}`,
	},
	{
		name: "unbalanced",
		in:   `{"x":[1,2}`,
	},
}

func TestScanEvent(t *testing.T) {
	for _, tc := range scanCases {
		sc, ok := scanEvent([]byte(tc.in))
		if ok != tc.ok || (ok && (string(sc.typ) != tc.typ || string(sc.audio) != tc.audio)) {
			t.Errorf("%s: got ok=%v type=%q audio=%q, want ok=%v type=%q audio=%q",
				tc.name, ok, sc.typ, sc.audio, tc.ok, tc.typ, tc.audio)
		}
	}
}

func TestScanEventEscapes(t *testing.T) {
	sc, ok := scanEvent([]byte(`{"type":"a\u0062"}`))
	if !ok || !sc.escaped || string(sc.typ) != `a\u0062` {
		t.Errorf("got %+v %v", sc, ok)
	}
}

func TestScanEventAllocs(t *testing.T) {
	msg := []byte(`{"type":"input_audio_buffer.append","event_id":"e1","x":{"y":[1,"z"]},"audio":"AAAA"}`)
	if n := testing.AllocsPerRun(100, func() { scanEvent(msg) }); n != 0 {
		t.Errorf("%v allocations per scan", n)
	}
}

// FuzzScanEvent checks scanEvent against encoding/json: every valid object
// is accepted, with the same type and audio strings.
func FuzzScanEvent(f *testing.F) {
	for _, tc := range scanCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		sc, ok := scanEvent(p)
		var m map[string]any
		if json.Unmarshal(p, &m) != nil || m == nil {
			return // invalid JSON may or may not be accepted
		}
		if !ok {
			t.Fatalf("valid object %q rejected", p)
		}
		if sc.oddKeys {
			return // escaped keys are left to encoding/json
		}
		for key, raw := range map[string][]byte{"type": sc.typ, "audio": sc.audio} {
			want, isStr := m[key].(string)
			has := sc.hasType
			if key == "audio" {
				has = sc.hasAudio
			}
			if has != isStr {
				t.Fatalf("%q: %s found=%v, encoding/json has %#v", p, key, has, m[key])
			}
			if !has {
				continue
			}
			var got string
			if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &got); err != nil || got != want {
				t.Fatalf("%q: %s %q, encoding/json %q", p, key, raw, want)
			}
		}
	})
}
