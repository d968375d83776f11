// Package jsonobj keeps a JSON object as its members in order, each value
// raw: how a dialect's memory holds what a client set, so that a replay
// sends it back as it came, with only what tether changed changed.
package jsonobj

import (
	"bytes"
	"encoding/json"
)

// Member is one member of a JSON object, its value raw.
type Member struct {
	Key string
	Val json.RawMessage
}

// IsObject reports whether the JSON value b is an object.
func IsObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// Members returns the members of the JSON object b in order (values
// copied); ok is false if b is not an object. b is JSON that was checked
// before: what follows its closing brace, or a missing one, is not.
func Members(b []byte) (ms []Member, ok bool) {
	if !IsObject(b) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := t.(string)
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, false
		}
		ms = append(ms, Member{key, v})
	}
	return ms, true
}

// Index is the index of the first member named key, or -1.
func Index(ms []Member, key string) int {
	for i, m := range ms {
		if m.Key == key {
			return i
		}
	}
	return -1
}

// Encode encodes members as a compact JSON object.
func Encode(ms []Member) []byte {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(m.Key)
		buf.Write(k)
		buf.WriteByte(':')
		_ = json.Compact(&buf, m.Val)
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// Merge merges the JSON object upd into cur (nil: none): a member of both
// that is an object in both merges, recursively; any other value of upd
// replaces cur's or is added after cur's members. ok is false if upd (or
// cur) is not an object.
func Merge(cur, upd []byte) ([]byte, bool) {
	var cm []Member
	if cur != nil {
		var ok bool
		if cm, ok = Members(cur); !ok {
			return nil, false
		}
	}
	um, ok := Members(upd)
	if !ok {
		return nil, false
	}
	for _, u := range um {
		switch i := Index(cm, u.Key); {
		case i < 0:
			cm = append(cm, u)
		case IsObject(cm[i].Val) && IsObject(u.Val):
			cm[i].Val, _ = Merge(cm[i].Val, u.Val)
		default:
			cm[i].Val = u.Val
		}
	}
	return Encode(cm), true
}
