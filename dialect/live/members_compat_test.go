package live

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tetherproxy/tether/internal/jsonobj"
)

// oldObjectMembers is the memory's parser before internal/jsonobj: the
// members as scanObject walks them (partial on an error, ok false).
func oldObjectMembers(b []byte) ([]jsonobj.Member, bool) {
	var ms []jsonobj.Member
	_, err := scanObject(b, func(key string, v json.RawMessage) error {
		ms = append(ms, jsonobj.Member{Key: key, Val: v})
		return nil
	})
	return ms, err == nil
}

var memberCases = []string{
	``, ` `, `null`, `"x"`, `[]`, `[{"a":1}]`, `1`, `{`, `}`, `{}`, ` {} `, "\t\r\n{}",
	`{"a":1}`, `{"a":1,"a":2}`, `{"a":1} trailing`, `{"a":1}{"b":2}`, `{"a":1`, `{"a":}`,
	`{"a" 1}`, `{"a":1 "b":2}`, `{"a":1,}`, `{,"a":1}`, `{1:2}`, `{"a":[1,{"b":"c"}]}`,
	`{ "a" : { "b" : [ 1 , 2 ] } , "c" : "d" }`, "\ufeff{}", `{"\u00e9":"\ud800"}`,
	`{"type":"session.start","session":{"input":[],"input":[1]},"session":"x"}`,
	"{\"a\":\"\xff\"}", `{"a":1e400}`, `{"a":tru}`, `{]`,
}

// TestMembersMatchScanObject: jsonobj.Members reads every object (and
// refuses every non-object) as live's scanObject did, wherever the memory
// relies on the result (the members when ok; ok itself).
func TestMembersMatchScanObject(t *testing.T) {
	for _, in := range memberCases {
		checkMembersMatch(t, []byte(in))
	}
}

func checkMembersMatch(t *testing.T, b []byte) {
	t.Helper()
	om, ook := oldObjectMembers(b)
	nm, nok := jsonobj.Members(b)
	if ook != nok || (ook && !reflect.DeepEqual(om, nm)) {
		t.Errorf("%q: scanObject %v %q, jsonobj %v %q", b, ook, om, nok, nm)
	}
}

func FuzzMembersMatchScanObject(f *testing.F) {
	for _, in := range memberCases {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) { checkMembersMatch(t, []byte(in)) })
}
