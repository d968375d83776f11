package proxy

import "bytes"

// Event peeking: a streaming scanner that finds the top-level "type" and
// "response_id" string fields of a JSON text message while its bytes flow
// through the relay. It never decodes values it does not need (audio stays
// base64 and is skipped byte by byte), never allocates, and stops after a
// bounded number of bytes. Key order is not assumed.

// peekLimit bounds how many bytes of a message the scanner reads before giving up.
const peekLimit = 64 << 10

// maxPeekValue bounds the captured length of "type" and "response_id" values.
const maxPeekValue = 64

type peekState uint8

const (
	psStart      peekState = iota // before the opening '{'
	psKeyOrEnd                    // inside the top-level object, expecting a key or '}'
	psKey                         // inside a top-level key string
	psKeyEscape                   // after '\' in a top-level key
	psColon                       // after a top-level key, expecting ':'
	psValue                       // expecting a top-level value
	psStrValue                    // inside a top-level string value
	psStrEscape                   // after '\' in a top-level string value
	psNested                      // inside a nested object/array/other value
	psNestedStr                   // inside a string within a nested value
	psNestedEsc                   // after '\' in such a string
	psScalar                      // inside a top-level number/true/false/null
	psAfterValue                  // after a top-level value, expecting ',' or '}'
	psDone                        // finished or gave up
)

// Peeker is the per-direction scanner state. The zero value is ready after Reset.
type Peeker struct {
	state    peekState
	depth    int32
	scanned  int32
	key      [16]byte
	keyLen   uint8
	keyOver  bool      // key longer than the buffer: cannot be one we want
	field    peekField // the value being captured, if any
	typ      peekValue
	respID   peekValue
	wantResp bool
}

// peekField names the value a string being scanned is captured into.
type peekField uint8

const (
	fieldNone peekField = iota
	fieldType
	fieldResponseID
)

// peekValue is a captured string value, up to maxPeekValue bytes; ok once
// its closing quote was read.
type peekValue struct {
	b  [maxPeekValue]byte
	n  uint8
	ok bool
}

// add appends c, or reports false when the value is longer than is kept.
func (v *peekValue) add(c byte) bool {
	if int(v.n) == maxPeekValue {
		return false
	}
	v.b[v.n] = c
	v.n++
	return true
}

// get returns the value, or nil when none was read whole.
func (v *peekValue) get() []byte {
	if !v.ok {
		return nil
	}
	return v.b[:v.n]
}

// capturing returns the value the current string goes into, or nil.
func (p *Peeker) capturing() *peekValue {
	switch p.field {
	case fieldType:
		return &p.typ
	case fieldResponseID:
		return &p.respID
	}
	return nil
}

// Reset prepares the peeker for a new message. wantResponseID asks it to keep
// scanning for "response_id" after "type" has been found, when the type is a
// response.* event (the only events that carry one).
func (p *Peeker) Reset(wantResponseID bool) {
	*p = Peeker{wantResp: wantResponseID}
}

// Done reports whether more bytes cannot change the result.
func (p *Peeker) Done() bool { return p.state == psDone }

// SetDone stops peeking until the next Reset (a message joined in its middle).
func (p *Peeker) SetDone() { p.state = psDone }

// Type returns the "type" value found so far (nil if none). The slice aliases
// the peeker and is valid until the next Reset.
func (p *Peeker) Type() []byte { return p.typ.get() }

// SetType records a type found by other means (a full decode of a message
// the scan could not read); one longer than the peeker keeps is dropped.
func (p *Peeker) SetType(typ string) {
	if len(typ) > maxPeekValue {
		return
	}
	p.typ.n = uint8(copy(p.typ.b[:], typ))
	p.typ.ok = true
}

// ResponseID returns the top-level "response_id" value found so far, or nil.
// After a "type" that is not response.*, the scan stops without looking for it.
func (p *Peeker) ResponseID() []byte { return p.respID.get() }

// Feed scans the next bytes of the message. mask/maskOff unmask client bytes
// on the fly (pass a zero mask for unmasked frames); the input is not modified.
func (p *Peeker) Feed(b []byte, mask [4]byte, maskOff int) {
	if p.state == psDone {
		return
	}
	masked := mask != [4]byte{}
	for i := 0; i < len(b); i++ {
		if !masked && p.field == fieldNone && (p.state == psStrValue || p.state == psNestedStr) {
			// Inside a string nobody captures (base64 audio): jump to its
			// next quote or backslash at memchr speed. Skipped bytes change
			// no state, so the result is the byte-by-byte one.
			skip := plainRun(b[i:])
			if int(p.scanned)+skip > peekLimit {
				p.scanned = peekLimit
				p.state = psDone
				return
			}
			p.scanned += int32(skip)
			if i += skip; i == len(b) {
				return
			}
		}
		if p.scanned >= peekLimit {
			p.state = psDone
			return
		}
		p.scanned++
		c := b[i]
		if masked {
			c ^= mask[(maskOff+i)&3]
		}
		p.step(c)
		if p.state == psDone {
			return
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// plainRun returns the length of the prefix of b (inside a JSON string)
// that holds no quote and no backslash.
func plainRun(b []byte) int {
	n := len(b)
	if q := bytes.IndexByte(b, '"'); q >= 0 {
		n = q
	}
	if e := bytes.IndexByte(b[:n], '\\'); e >= 0 {
		n = e
	}
	return n
}

// responsePrefix starts the types of the events that carry a response_id.
const responsePrefix = "response."

// expect reports whether c is want; it passes over white space, and ends
// the scan at anything else.
func (p *Peeker) expect(c, want byte) bool {
	if c != want && !isSpace(c) {
		p.state = psDone
	}
	return c == want
}

func (p *Peeker) step(c byte) {
	switch p.state {
	case psStart:
		if p.expect(c, '{') {
			p.state = psKeyOrEnd
		}
	case psKeyOrEnd:
		switch {
		case isSpace(c) || c == ',':
		case c == '"':
			p.state = psKey
			p.keyLen = 0
			p.keyOver = false
		default: // '}' or garbage
			p.state = psDone
		}
	case psKey:
		switch c {
		case '\\':
			p.keyOver = true // escaped keys are never ones we want
			p.state = psKeyEscape
		case '"':
			p.state = psColon
		default:
			if int(p.keyLen) < len(p.key) {
				p.key[p.keyLen] = c
				p.keyLen++
			} else {
				p.keyOver = true
			}
		}
	case psKeyEscape:
		p.state = psKey
	case psColon:
		if !p.expect(c, ':') {
			return
		}
		p.field = fieldNone
		if !p.keyOver {
			switch string(p.key[:p.keyLen]) {
			case "type":
				if !p.typ.ok {
					p.field = fieldType
				}
			case "response_id":
				if p.wantResp && !p.respID.ok {
					p.field = fieldResponseID
				}
			}
		}
		p.state = psValue
	case psValue:
		switch {
		case isSpace(c):
		case c == '"':
			p.state = psStrValue
			if v := p.capturing(); v != nil {
				v.n = 0
			}
		case c == '{' || c == '[':
			p.depth = 1
			p.state = psNested
		default:
			p.state = psScalar
		}
	case psStrValue:
		switch c {
		case '\\':
			p.field = fieldNone // escaped values are not event names or ids
			p.state = psStrEscape
		case '"':
			if v := p.capturing(); v != nil {
				v.ok = true
			}
			p.field = fieldNone
			p.state = psAfterValue
			if p.typ.ok && (!p.wantResp || p.respID.ok || !bytes.HasPrefix(p.Type(), []byte(responsePrefix))) {
				p.state = psDone
			}
		default:
			if v := p.capturing(); v != nil && !v.add(c) {
				p.field = fieldNone // too long to be an event name or id
			}
		}
	case psStrEscape:
		p.state = psStrValue
	case psNested:
		switch c {
		case '"':
			p.state = psNestedStr
		case '{', '[':
			p.depth++
		case '}', ']':
			p.depth--
			if p.depth == 0 {
				p.state = psAfterValue
			}
		}
	case psNestedStr:
		switch c {
		case '\\':
			p.state = psNestedEsc
		case '"':
			p.state = psNested
		}
	case psNestedEsc:
		p.state = psNestedStr
	case psScalar:
		switch {
		case c == ',':
			p.state = psKeyOrEnd
		case c == '}':
			p.state = psDone
		case isSpace(c):
			p.state = psAfterValue
		}
	case psAfterValue:
		switch {
		case isSpace(c):
		case c == ',':
			p.state = psKeyOrEnd
		default:
			p.state = psDone
		}
	}
}
