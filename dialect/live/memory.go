package live

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf8"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/internal/jsonobj"
)

// A call's Memory (dialect.Resumable) keeps what a new GPT-Live session
// needs to carry the call on: the client's session.start, and the
// transcript of the call as text messages (the caller's words from
// session.input_transcript.delta, the model's from
// session.output_transcript.delta; consecutive fragments of one speaker
// make one message). A new session is started with the original
// session.start whose session.input is the original input followed by the
// transcript, within what session.input accepts.
//
// Not carried: what the client adds after the start
// (session.instructions.append, session.thinking.append,
// session.commentary.append, session.update of the Responses delegation,
// response.item.create), the input's mute state, pending delegations, and
// audio. The transcript is the service's rendering of the speech, not what
// the model heard.
//
// The token count of session.input is estimated conservatively: a message
// counts tokensPerMessage plus one token per two bytes of its text (text
// runs at about four bytes a token in English; digits, CJK and rare
// strings come closer to two).

// tokensPerMessage is the estimated rendering cost of a message, beside its text.
const tokensPerMessage = 4

// estimateTokens estimates the tokens of a message of n bytes of text.
func estimateTokens(n int) int { return (n+1)/2 + tokensPerMessage }

var (
	_ dialect.Resumable = Dialect{}
	_ dialect.Memory    = (*Memory)(nil)
)

// NewMemory implements dialect.Resumable.
func (Dialect) NewMemory(b dialect.HistoryBounds) dialect.Memory { return NewMemory(b) }

// NewMemory returns an empty Memory holding at most b (and what
// session.input accepts: MaxInputMessages, MaxInputTokens).
func NewMemory(b dialect.HistoryBounds) *Memory {
	m := &Memory{maxItems: MaxInputMessages, maxBytes: math.MaxInt}
	if b.Items > 0 && b.Items < m.maxItems {
		m.maxItems = b.Items
	}
	if b.Bytes > 0 {
		m.maxBytes = b.Bytes
	}
	return m
}

// Memory is one GPT-Live call's dialect.Memory. Its methods are called by
// one goroutine at a time (the session's).
type Memory struct {
	maxItems, maxBytes int
	// closing: the client sent session.close.
	closing bool
	// start is the members of the client's session.start, session its
	// session object's (nil before the start; session nil if not an object).
	start, session []jsonobj.Member
	// original is the start's session.input.
	original []message
	// history is the transcript, oldest first; bytes and tokens its size
	// and estimated tokens.
	history       []message
	bytes, tokens int
	// open: the last message of history may go on (the next fragment of
	// its speaker joins it); lastEnd is its last fragment's end_ms.
	open    bool
	lastEnd int64
	// sessionID is the latest session.started's session id.
	sessionID string
	// events numbers the events tether makes for the client.
	events dialect.EventIDs
}

// message is a message of session.input: an original one (raw, as the
// client sent it) or one of the transcript (role and text).
type message struct {
	raw    json.RawMessage
	role   string
	text   []byte
	size   int // bytes encoded
	tokens int // estimated
}

// inputMessage is a message of session.input as tether writes it.
type inputMessage struct {
	Type    string      `json:"type"`
	Role    string      `json:"role"`
	Content []inputPart `json:"content"`
}

type inputPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// encodeMessage encodes a transcript message.
func encodeMessage(role string, text []byte) []byte {
	typ := PartInputText
	if role == RoleAssistant {
		typ = PartOutputText
	}
	b, _ := json.Marshal(inputMessage{Type: ItemMessage, Role: role, Content: []inputPart{{Type: typ, Text: string(text)}}})
	return b
}

// envelope is the size of a transcript message of no text, by role.
var envelope = map[string]int{
	RoleUser:      len(encodeMessage(RoleUser, nil)),
	RoleAssistant: len(encodeMessage(RoleAssistant, nil)),
}

// CaptureClient implements dialect.Memory: nothing past the start is
// carried (it reaches Client from the handler, at the open), but a
// session.close says the call is ending.
func (m *Memory) CaptureClient(typ []byte) bool { return string(typ) == SessionClose }

// Closing implements dialect.Memory: the client sent session.close.
func (m *Memory) Closing() bool { return m.closing }

// Client implements dialect.Memory: it records the call's session.start.
// Only the first counts: it is the call's own (a later one would be a
// replay's, tether's).
func (m *Memory) Client(typ, payload []byte) {
	if string(typ) == SessionClose {
		m.closing = true
		return
	}
	if string(typ) != SessionStart || m.start != nil {
		return
	}
	top, ok := jsonobj.Members(payload)
	if !ok {
		return
	}
	m.start = top
	if i := jsonobj.Index(top, "session"); i >= 0 {
		m.session, _ = jsonobj.Members(top[i].Val)
	}
	if i := jsonobj.Index(m.session, "input"); i >= 0 {
		var in []json.RawMessage
		_ = json.Unmarshal(m.session[i].Val, &in)
		for _, raw := range in {
			m.original = append(m.original, message{raw: raw, size: len(raw), tokens: estimateTokens(textBytes(raw))})
		}
	}
}

// textBytes is the length of a message's text parts (of raw, if it has none).
func textBytes(raw json.RawMessage) int {
	var msg struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &msg) != nil || len(msg.Content) == 0 {
		return len(raw)
	}
	n := 0
	for _, p := range msg.Content {
		n += len(p.Text)
	}
	return n
}

// keptUpstream are the upstream events a memory reads: the words of both
// speakers, and a new session's id.
var keptUpstream = dialect.Types{InputTranscriptDelta, OutputTranscriptDelta, SessionStarted}

// CaptureUpstream implements dialect.Memory.
func (m *Memory) CaptureUpstream(typ []byte) bool { return keptUpstream.Has(typ) }

// Upstream implements dialect.Memory.
func (m *Memory) Upstream(typ, payload []byte) {
	switch t := string(typ); t {
	case SessionStarted:
		var ev SessionEvent
		if json.Unmarshal(payload, &ev) == nil && ev.Session.ID != "" {
			m.sessionID = ev.Session.ID
		}
		m.closeLast() // a new session's words start a message of their own
	case InputTranscriptDelta, OutputTranscriptDelta:
		var ev TranscriptDelta
		if json.Unmarshal(payload, &ev) != nil || ev.Delta == "" {
			return
		}
		role := RoleUser
		if t == OutputTranscriptDelta {
			role = RoleAssistant
		}
		m.add(role, &ev)
	}
}

// add adds a transcript fragment: to the last message if it is open and
// of the same speaker, else as a new message. Fragments carry their own
// leading space (" check"); one that starts an utterance after a pause
// (on the timeline) does not ("now." then "Staging"), and is given one.
func (m *Memory) add(role string, ev *TranscriptDelta) {
	grow := escapedLen(ev.Delta)
	var last *message
	if n := len(m.history); m.open && n > 0 && m.history[n-1].role == role {
		last = &m.history[n-1]
		m.bytes -= last.size
		m.tokens -= last.tokens
		if t := last.text; ev.StartMS > m.lastEnd && !isSpace(t[len(t)-1]) && !isSpace(ev.Delta[0]) {
			last.text = append(last.text, ' ')
			grow++
		}
	} else {
		m.closeLast()
		m.history = append(m.history, message{role: role, size: envelope[role]})
		last = &m.history[len(m.history)-1]
	}
	last.text = append(last.text, ev.Delta...)
	last.size += grow
	last.tokens = estimateTokens(len(last.text))
	m.bytes += last.size
	m.tokens += last.tokens
	m.open, m.lastEnd = true, ev.EndMS
	m.fit()
}

// closeLast ends the last message: the next fragment starts a new one.
func (m *Memory) closeLast() {
	if n := len(m.history); m.open && n > 0 {
		if t := m.history[n-1].text; cap(t)-len(t) > 64 {
			m.history[n-1].text = bytes.Clone(t) // give back what growing it left over
		}
	}
	m.open = false
}

// fit keeps the history within its bounds: the open message, if too big
// alone, keeps its latest words; then the oldest messages go.
func (m *Memory) fit() {
	if n := len(m.history); m.open && n > 0 {
		last := &m.history[n-1]
		if last.size > m.maxBytes || last.tokens > MaxInputTokens {
			m.bytes -= last.size
			m.tokens -= last.tokens
			if !m.trimHead(last) {
				m.history = m.history[:n-1]
				m.open = false
			} else {
				m.bytes += last.size
				m.tokens += last.tokens
			}
		}
	}
	drop := 0
	for len(m.history)-drop > m.maxItems || m.bytes > m.maxBytes || m.tokens > MaxInputTokens {
		m.bytes -= m.history[drop].size
		m.tokens -= m.history[drop].tokens
		drop++
	}
	if drop > 0 {
		n := copy(m.history, m.history[drop:])
		clear(m.history[n:])
		m.history = m.history[:n]
	}
}

// trimHead cuts the head of msg's text until it fits the bounds alone
// (at the next word's start if one is near); false if no text fits.
func (m *Memory) trimHead(msg *message) bool {
	env := envelope[msg.role]
	maxText := 2 * (MaxInputTokens - tokensPerMessage)
	escaped := msg.size - env
	text, cut := msg.text, 0
	skip := func(to int) {
		for cut < to {
			r, n := utf8.DecodeRune(text[cut:])
			escaped -= runeEscapedLen(r, n)
			cut += n
		}
	}
	for cut < len(text) && (len(text)-cut > maxText || env+escaped > m.maxBytes) {
		_, n := utf8.DecodeRune(text[cut:])
		skip(cut + n)
	}
	if cut > 0 {
		if i := bytes.IndexAny(text[cut:min(cut+32, len(text))], " \t\r\n"); i >= 0 && cut+i+1 < len(text) {
			skip(cut + i + 1)
		}
	}
	n := copy(text, text[cut:])
	msg.text = text[:n]
	msg.size = env + escaped
	msg.tokens = estimateTokens(n)
	return n > 0
}

func isSpace(b byte) bool { return b == ' ' || b == '\n' || b == '\t' || b == '\r' }

// escapedLen is the length of s encoded as a JSON string's contents by
// encoding/json (HTML characters escaped), s valid UTF-8.
func escapedLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		n += runeEscapedLen(r, size)
		i += size
	}
	return n
}

// runeEscapedLen is the encoded length of the rune r of size bytes.
func runeEscapedLen(r rune, size int) int {
	switch {
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	case r == utf8.RuneError && size == 1:
		return 6 // \ufffd
	}
	return size
}

// Hold implements dialect.Memory: session.closed is held, so that Ending
// can keep an expired session's close from the client.
func (m *Memory) Hold(typ []byte) bool { return string(typ) == SessionClosed }

// Ending implements dialect.Memory: session.closed for the duration cap
// (reason expired) ends the session; for any other reason it is the
// session's end to relay. An error event with a code may end it (the
// session matches the code against its fatal ones).
func (m *Memory) Ending(typ, payload []byte) (code string, expired, ends bool) {
	switch string(typ) {
	case SessionClosed:
		var ev ClosedEvent
		_ = json.Unmarshal(payload, &ev)
		expired = ev.Reason == ReasonExpired
		return "", expired, expired
	case Error:
		var ev ErrorEvent
		_ = json.Unmarshal(payload, &ev)
		code = ev.Error.CodeString()
		return code, false, code != ""
	}
	return "", false, false
}

// Interrupted implements dialect.Memory: GPT-Live has no answers to finish.
func (m *Memory) Interrupted() [][]byte { return nil }

// Replay implements dialect.Memory: the original session.start, without
// its event_id, whose session.input is the original input followed by the
// transcript; while that passes MaxInputMessages or MaxInputTokens, the
// oldest transcript messages go first, then the oldest original ones.
// Replay changes nothing: it may be asked again for another upstream.
func (m *Memory) Replay() dialect.Replay {
	if m.start == nil {
		return dialect.Replay{}
	}
	orig, hist := m.original, m.history
	count, tokens := len(orig)+len(hist), m.tokens
	for _, o := range orig {
		tokens += o.tokens
	}
	for count > MaxInputMessages || tokens > MaxInputTokens {
		if len(hist) > 0 {
			tokens -= hist[0].tokens
			hist = hist[1:]
		} else {
			tokens -= orig[0].tokens
			orig = orig[1:]
		}
		count--
	}
	var top []jsonobj.Member
	for _, mb := range m.start {
		switch mb.Key {
		case "event_id":
			continue
		case "session":
			if m.session != nil {
				mb.Val = m.replaySession(orig, hist)
			}
		}
		top = append(top, mb)
	}
	return dialect.Replay{Start: jsonobj.Encode(top), Items: len(orig) + len(hist)}
}

// replaySession is the start's session object with input set to orig and
// hist (added last if the client's start had none).
func (m *Memory) replaySession(orig, hist []message) []byte {
	var in bytes.Buffer
	in.WriteByte('[')
	for i, o := range orig {
		if i > 0 {
			in.WriteByte(',')
		}
		in.Write(o.raw)
	}
	for i, h := range hist {
		if i > 0 || len(orig) > 0 {
			in.WriteByte(',')
		}
		in.Write(encodeMessage(h.role, h.text))
	}
	in.WriteByte(']')
	var sess []jsonobj.Member
	set := false
	for _, mb := range m.session {
		if mb.Key == "input" {
			if set {
				continue
			}
			mb.Val, set = in.Bytes(), true
		}
		sess = append(sess, mb)
	}
	if !set && len(orig)+len(hist) > 0 {
		sess = append(sess, jsonobj.Member{Key: "input", Val: in.Bytes()})
	}
	return jsonobj.Encode(sess)
}

// Droppable implements dialect.Memory: audio appends may be dropped.
func (m *Memory) Droppable(typ []byte) bool { return string(typ) == InputAudioAppend }

// Notice implements dialect.Memory. Without n's upstream session id, the
// latest session.started's is given.
func (m *Memory) Notice(n dialect.ResumeNotice) []byte {
	if n.UpstreamSessionID == "" {
		n.UpstreamSessionID = m.sessionID
	}
	return dialect.Notice(m.events.Next(), n)
}

// Size implements dialect.Memory: the transcript's messages and bytes.
func (m *Memory) Size() (items, bytes int) { return len(m.history), m.bytes }
