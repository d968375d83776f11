package mock

import "bytes"

// scanned is what scanEvent found at the top level of a client event.
type scanned struct {
	typ      []byte // raw contents of the "type" string, without quotes
	audio    []byte // raw contents of the "audio" string, without quotes
	hasType  bool
	hasAudio bool
	escaped  bool // typ or audio contains a backslash escape: decode them with encoding/json
	oddKeys  bool // a key contains an escape, so it was not recognised: use encoding/json
}

// maxScanDepth bounds the nesting scanEvent skips over, like encoding/json.
const maxScanDepth = 10000

// scanEvent reads the members "type" and "audio" of the JSON object p
// without decoding anything else, so the hot event (input_audio_buffer.append,
// mostly one long base64 string) costs one pass and no allocation. The last
// of duplicate members wins, as with encoding/json. Keys written with escapes
// are not recognised. It checks the top-level structure and skips nested
// values by bracket matching: every valid JSON object is accepted, and
// some invalid ones are too (events other than appends are decoded with
// encoding/json afterwards, which rejects them).
func scanEvent(p []byte) (sc scanned, ok bool) {
	i := skipWS(p, 0)
	if i >= len(p) || p[i] != '{' {
		return sc, false
	}
	i = skipWS(p, i+1)
	if i < len(p) && p[i] == '}' {
		return sc, skipWS(p, i+1) == len(p)
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return sc, false
		}
		ks, ke, kesc, next, ok := scanString(p, i)
		if !ok {
			return sc, false
		}
		key := p[ks:ke]
		sc.oddKeys = sc.oddKeys || kesc
		i = skipWS(p, next)
		if i >= len(p) || p[i] != ':' {
			return sc, false
		}
		i = skipWS(p, i+1)
		if i >= len(p) {
			return sc, false
		}
		isType := !kesc && string(key) == "type"
		isAudio := !kesc && string(key) == "audio"
		switch {
		case (isType || isAudio) && p[i] == '"':
			vs, ve, vesc, next, ok := scanString(p, i)
			if !ok {
				return sc, false
			}
			if isType {
				sc.typ, sc.hasType = p[vs:ve], true
			} else {
				sc.audio, sc.hasAudio = p[vs:ve], true
			}
			sc.escaped = sc.escaped || vesc
			i = next
		default:
			if isType {
				sc.typ, sc.hasType = nil, false
			} else if isAudio {
				sc.audio, sc.hasAudio = nil, false
			}
			if i, ok = skipValue(p, i); !ok {
				return sc, false
			}
		}
		i = skipWS(p, i)
		if i >= len(p) {
			return sc, false
		}
		switch p[i] {
		case ',':
			i = skipWS(p, i+1)
		case '}':
			return sc, skipWS(p, i+1) == len(p)
		default:
			return sc, false
		}
	}
}

func skipWS(p []byte, i int) int {
	for i < len(p) {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString scans the string whose opening quote is p[i]. It returns the
// bounds of its raw contents, whether they contain escapes, and the index
// after the closing quote.
func scanString(p []byte, i int) (start, end int, escaped bool, next int, ok bool) {
	start = i + 1
	j := start
	for {
		q := bytes.IndexByte(p[j:], '"')
		if q < 0 {
			return 0, 0, false, 0, false
		}
		q += j
		b := bytes.IndexByte(p[j:q], '\\')
		if b < 0 {
			return start, q, escaped, q + 1, true
		}
		// Skip the escape and whatever it escapes (possibly a quote), then
		// look for the closing quote again.
		escaped = true
		j += b + 2
		if j > len(p) {
			return 0, 0, false, 0, false
		}
	}
}

// skipValue skips the JSON value starting at p[i] and returns the index after
// it. Objects and arrays are skipped by bracket matching.
func skipValue(p []byte, i int) (int, bool) {
	switch c := p[i]; {
	case c == '"':
		_, _, _, next, ok := scanString(p, i)
		return next, ok
	case c == '{' || c == '[':
		var stack [64]byte // closing brackets; deeper nesting spills to the heap
		want := append(stack[:0], closer(c))
		i++
		for i < len(p) {
			switch c := p[i]; c {
			case '"':
				_, _, _, next, ok := scanString(p, i)
				if !ok {
					return 0, false
				}
				i = next
				continue
			case '{', '[':
				if len(want) >= maxScanDepth {
					return 0, false
				}
				want = append(want, closer(c))
			case '}', ']':
				if want[len(want)-1] != c {
					return 0, false
				}
				want = want[:len(want)-1]
				if len(want) == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	case c == 't':
		return skipLiteral(p, i, "true")
	case c == 'f':
		return skipLiteral(p, i, "false")
	case c == 'n':
		return skipLiteral(p, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		j := i + 1
		for j < len(p) {
			c := p[j]
			if (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
				j++
				continue
			}
			break
		}
		return j, true
	default:
		return 0, false
	}
}

func closer(open byte) byte {
	if open == '{' {
		return '}'
	}
	return ']'
}

func skipLiteral(p []byte, i int, lit string) (int, bool) {
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}
