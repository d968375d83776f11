package jsonobj

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMembersKeepOrderAndValues(t *testing.T) {
	ms, ok := Members([]byte(` {"b": 1, "a": {"x": [1, 2]}, "b": "again"}`))
	if !ok || len(ms) != 3 {
		t.Fatalf("Members = %v, %v", ms, ok)
	}
	if ms[0].Key != "b" || ms[1].Key != "a" || ms[2].Key != "b" || string(ms[1].Val) != `{"x": [1, 2]}` {
		t.Errorf("members = %q", ms)
	}
	if i := Index(ms, "b"); i != 0 {
		t.Errorf(`Index("b") = %d, want the first, 0`, i)
	}
	if i := Index(ms, "c"); i != -1 {
		t.Errorf(`Index("c") = %d, want -1`, i)
	}
	if got := string(Encode(ms)); got != `{"b":1,"a":{"x":[1,2]},"b":"again"}` {
		t.Errorf("Encode = %s", got)
	}
	for _, bad := range []string{``, `[]`, `"s"`, `{"a":`, `{"a" 1}`} {
		if _, ok := Members([]byte(bad)); ok {
			t.Errorf("Members(%q) is an object", bad)
		}
	}
}

func TestMergeIsDeepForObjectsOnly(t *testing.T) {
	cur := []byte(`{"voice":"alloy","audio":{"input":{"format":"pcm16","rate":24000}},"tools":[1]}`)
	upd := []byte(`{"audio":{"input":{"rate":16000}},"tools":[],"instructions":"be brief"}`)
	got, ok := Merge(cur, upd)
	want := `{"voice":"alloy","audio":{"input":{"format":"pcm16","rate":16000}},"tools":[],"instructions":"be brief"}`
	if !ok || string(got) != want {
		t.Errorf("Merge = %s, %v\nwant %s", got, ok, want)
	}
	if got, ok := Merge(nil, []byte(` { "a" : 1 } `)); !ok || string(got) != `{"a":1}` {
		t.Errorf("Merge(nil, ...) = %s, %v", got, ok)
	}
	if _, ok := Merge(cur, []byte(`[1]`)); ok {
		t.Error("an update that is not an object merged")
	}
	if _, ok := Merge([]byte(`1`), upd); ok {
		t.Error("an update merged into what is not an object")
	}
}
