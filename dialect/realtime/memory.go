package realtime

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/internal/jsonobj"
)

// A call's Memory (dialect.Resumable) keeps what a new upstream session
// needs to carry the call on:
//
//   - the session settings: every client session.update's session object,
//     deep-merged (objects merge member by member; scalars, arrays and null
//     replace), replayed as one session.update;
//   - a text history, in conversation order: the client's items
//     (conversation.item.create: messages stripped to their text, function
//     calls and their outputs as they are; conversation.item.delete removes
//     one), the caller's words (input audio transcription), the model's
//     (transcripts and text of its answers) and its function calls, each
//     replayed as a conversation.item.create keeping the item's id.
//
// A committed user turn keeps its place in the order until its transcript
// comes (transcription runs beside the answer and often finishes after it),
// so the history reads turn by turn rather than in arrival order.
//
// Not carried: audio (the history is text), images and other non-text
// parts and items (MCP items refer to state of the old session), the id
// the upstream gave an item the client created without one (a later
// delete of that id finds nothing to remove), and a truncation of the
// model's audio (the text is kept whole). Out-of-band answers
// (conversation "none") are not told apart: their transcripts join the
// history like any other. A session.update the upstream refused is merged
// all the same; replayed, it is refused again (its error is the replay's
// answer) and the new session keeps the upstream's defaults.

// The bounds a Memory keeps to, whatever its HistoryBounds.
const (
	// MaxHistoryItems and MaxHistoryBytes bound the history where the
	// HistoryBounds do not bound it lower. The Realtime API documents no
	// limit on a conversation's items; past the model's context window
	// (32,768 tokens for gpt-realtime, about 128 KiB of text) it drops the
	// oldest itself.
	MaxHistoryItems = 1024
	MaxHistoryBytes = 512 << 10
	// MaxSettingsBytes bounds the merged session settings (they are not
	// history and are never dropped). When a merge would pass it, the
	// settings become the latest session.update's session object alone:
	// a client that sends settings that large sends them whole. One such
	// object is kept whatever its size (the relay bounds what it captures).
	MaxSettingsBytes = 64 << 10
	// maxWaitingTurns bounds the committed user turns awaiting their
	// transcript (a session without input transcription never sends one).
	maxWaitingTurns = 16
	// maxOpenResponses bounds the responses tracked as in progress.
	maxOpenResponses = 16
)

var (
	_ dialect.Resumable = Dialect{}
	_ dialect.Memory    = (*Memory)(nil)
)

// NewMemory implements dialect.Resumable.
func (Dialect) NewMemory(b dialect.HistoryBounds) dialect.Memory { return NewMemory(b) }

// NewMemory returns an empty Memory holding at most b (and the Max* bounds).
func NewMemory(b dialect.HistoryBounds) *Memory {
	return &Memory{maxItems: bound(b.Items, MaxHistoryItems), maxBytes: bound(b.Bytes, MaxHistoryBytes)}
}

// bound is b, or max when b is zero (no bound of its own) or above it.
func bound(b, max int) int {
	if b <= 0 || b > max {
		return max
	}
	return b
}

// Memory is one Realtime call's dialect.Memory. Its methods are called by
// one goroutine at a time (the session's).
type Memory struct {
	maxItems, maxBytes int
	// settings is the merged session object (compact JSON); nil until the
	// client sent a session.update.
	settings []byte
	// beta: the upstream speaks the beta shape (learnt from session.created
	// or beta event names); it decides the assistant's text part type.
	beta bool
	// history is the conversation, oldest first.
	history []entry
	// items and bytes are the replayable entries held and their size.
	items, bytes int
	// waiting counts the turns in history awaiting their transcript.
	waiting int
	// open are the responses created and not done, oldest first.
	open []string
	// sessionID is the latest session.created's session id.
	sessionID string
	// events numbers the events tether makes for the client.
	events dialect.EventIDs
}

// entryKind is what a history entry holds.
type entryKind uint8

const (
	// kindItem is a client's item, replayed as kept (raw).
	kindItem entryKind = iota
	// kindText is a transcript or text of a message: role and text.
	kindText
	// kindCall is a function call of the model: callID, name, text (arguments).
	kindCall
	// kindTurn is a committed user turn awaiting its transcript: a place in
	// the order, nothing to replay (it counts in neither items nor bytes).
	kindTurn
)

// entry is one history entry.
type entry struct {
	kind         entryKind
	id           string
	role         string // kindText
	text         string // kindText: the text; kindCall: the arguments
	callID, name string // kindCall
	raw          []byte // kindItem
	size         int    // bytes of the encoded item (GA shape; 0 for kindTurn)
}

// replayable reports whether e is replayed (a function call needs its name,
// which the upstream may give only in response.done).
func (e *entry) replayable() bool {
	return e.kind != kindTurn && (e.kind != kindCall || e.name != "")
}

// textItem is a message item of one text part.
type textItem struct {
	ID      string     `json:"id,omitempty"`
	Type    string     `json:"type"`
	Role    string     `json:"role"`
	Content []textPart `json:"content"`
}

type textPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// callItem is a function_call item.
type callItem struct {
	ID        string `json:"id,omitempty"`
	Type      string `json:"type"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// item encodes e as a conversation item, in the beta shape if beta.
func (e *entry) item(beta bool) []byte {
	switch e.kind {
	case kindText:
		b, _ := json.Marshal(textItem{ID: e.id, Type: ItemMessage, Role: e.role,
			Content: []textPart{{Type: textPartType(e.role, beta), Text: e.text}}})
		return b
	case kindCall:
		b, _ := json.Marshal(callItem{ID: e.id, Type: ItemFunctionCall, CallID: e.callID, Name: e.name, Arguments: e.text})
		return b
	}
	return e.raw
}

// textPartType is the type of a text part of a message by role: input_text
// but for the assistant's (output_text; beta text).
func textPartType(role string, beta bool) string {
	switch {
	case role != RoleAssistant:
		return PartInputText
	case beta:
		return BetaPartText
	}
	return PartOutputText
}

// keptClient are the client events a memory reads: the settings and the
// conversation items the client adds or deletes.
var keptClient = dialect.Types{SessionUpdate, ConversationItemCreate, ConversationItemDelete}

// CaptureClient implements dialect.Memory.
func (m *Memory) CaptureClient(typ []byte) bool { return keptClient.Has(typ) }

// Client implements dialect.Memory.
func (m *Memory) Client(typ, payload []byte) {
	switch string(typ) {
	case SessionUpdate:
		var ev struct {
			Session json.RawMessage `json:"session"`
		}
		if json.Unmarshal(payload, &ev) == nil && jsonobj.IsObject(ev.Session) {
			m.mergeSettings(ev.Session)
		}
	case ConversationItemCreate:
		var ev struct {
			Item           json.RawMessage `json:"item"`
			PreviousItemID *string         `json:"previous_item_id"`
		}
		if json.Unmarshal(payload, &ev) != nil {
			return
		}
		if e, ok := clientItem(ev.Item); ok {
			after := ""
			if ev.PreviousItemID != nil {
				after = *ev.PreviousItemID
			}
			m.put(e, after)
		}
	case ConversationItemDelete:
		var ev struct {
			ItemID string `json:"item_id"`
		}
		if json.Unmarshal(payload, &ev) == nil && ev.ItemID != "" {
			if i := m.find(ev.ItemID); i >= 0 {
				m.removeAt(i)
			}
		}
	}
}

// keptUpstream are the upstream events a memory reads: the session, the
// committed input and its transcript, finished answers and their parts.
var keptUpstream = dialect.Types{SessionCreated, InputAudioCommitted, InputTranscriptionCompleted,
	OutputTranscriptDone, OutputTextDone, BetaTranscriptDone, BetaTextDone,
	FunctionCallArgumentsDone, ResponseCreated, ResponseDone}

// CaptureUpstream implements dialect.Memory.
func (m *Memory) CaptureUpstream(typ []byte) bool { return keptUpstream.Has(typ) }

// Upstream implements dialect.Memory.
func (m *Memory) Upstream(typ, payload []byte) {
	switch t := string(typ); t {
	case SessionCreated:
		m.sessionCreated(payload)
	case InputAudioCommitted:
		var ev struct {
			ItemID string `json:"item_id"`
		}
		if json.Unmarshal(payload, &ev) == nil && ev.ItemID != "" && m.find(ev.ItemID) < 0 {
			m.await(ev.ItemID)
		}
	case InputTranscriptionCompleted:
		var ev struct {
			ItemID     string `json:"item_id"`
			Transcript string `json:"transcript"`
		}
		if json.Unmarshal(payload, &ev) == nil {
			m.putText(ev.ItemID, RoleUser, ev.Transcript)
		}
	case OutputTranscriptDone, BetaTranscriptDone, OutputTextDone, BetaTextDone:
		m.beta = t == BetaTranscriptDone || t == BetaTextDone
		var ev struct {
			ItemID     string `json:"item_id"`
			Transcript string `json:"transcript"`
			Text       string `json:"text"`
		}
		if json.Unmarshal(payload, &ev) == nil {
			m.putText(ev.ItemID, RoleAssistant, ev.Transcript+ev.Text)
		}
	case FunctionCallArgumentsDone:
		var ev struct {
			ItemID    string `json:"item_id"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		}
		if json.Unmarshal(payload, &ev) == nil && ev.CallID != "" {
			m.put(entry{kind: kindCall, id: ev.ItemID, callID: ev.CallID, name: ev.Name, text: ev.Arguments}, "")
		}
	case ResponseCreated:
		var ev ResponseEvent
		if json.Unmarshal(payload, &ev) == nil && ev.Response.ID != "" {
			m.responseOpened(ev.Response.ID)
		}
	case ResponseDone:
		m.responseDone(payload)
	}
}

// sessionCreated keeps the session's id, and which shape of the protocol
// (GA or beta) the upstream speaks.
func (m *Memory) sessionCreated(payload []byte) {
	var ev struct {
		Session struct {
			ID     string `json:"id"`
			Type   string `json:"type"`
			Object string `json:"object"`
		} `json:"session"`
	}
	if json.Unmarshal(payload, &ev) != nil {
		return
	}
	if ev.Session.ID != "" {
		m.sessionID = ev.Session.ID
	}
	switch {
	case ev.Session.Type != "":
		m.beta = false
	case ev.Session.Object == ObjectSession:
		m.beta = true
	}
}

// responseOpened notes an answer in progress, forgetting the oldest when
// maxOpenResponses are.
func (m *Memory) responseOpened(id string) {
	if slices.Contains(m.open, id) {
		return
	}
	if len(m.open) == maxOpenResponses {
		m.open = slices.Delete(m.open, 0, 1)
	}
	m.open = append(m.open, id)
}

// responseDone closes a finished answer and names the function calls it made.
func (m *Memory) responseDone(payload []byte) {
	var ev struct {
		Response struct {
			ID     string `json:"id"`
			Output []struct {
				Type   string `json:"type"`
				ID     string `json:"id"`
				CallID string `json:"call_id"`
				Name   string `json:"name"`
			} `json:"output"`
		} `json:"response"`
	}
	if json.Unmarshal(payload, &ev) != nil {
		return
	}
	if i := slices.Index(m.open, ev.Response.ID); i >= 0 {
		m.open = slices.Delete(m.open, i, i+1)
	}
	for _, o := range ev.Response.Output {
		if o.Type == ItemFunctionCall && o.Name != "" {
			m.nameCall(o.ID, o.CallID, o.Name)
		}
	}
}

// mergeSettings merges a client's session object into the settings.
func (m *Memory) mergeSettings(upd json.RawMessage) {
	merged, ok := jsonobj.Merge(m.settings, upd)
	if !ok {
		return
	}
	if len(merged) > MaxSettingsBytes {
		merged, _ = jsonobj.Merge(nil, upd) // the latest alone, compacted
	}
	m.settings = merged
}

// clientItem keeps what a client's item carries into a new session: a
// message's text (an audio part's transcript becomes a text part; other
// parts go), a function call or its output as it is; without the
// server's fields (object, status). ok is false for anything else, and for
// a message with no text left.
func clientItem(raw json.RawMessage) (e entry, ok bool) {
	ms, ok := jsonobj.Members(raw)
	if !ok {
		return entry{}, false
	}
	var typ string
	kept := ms[:0]
	for _, mb := range ms {
		switch mb.Key {
		case "object", "status":
			continue
		case "type":
			_ = json.Unmarshal(mb.Val, &typ)
		case "id":
			_ = json.Unmarshal(mb.Val, &e.id)
		}
		kept = append(kept, mb)
	}
	switch typ {
	case ItemFunctionCall, ItemFunctionCallOutput:
	case ItemMessage:
		i := jsonobj.Index(kept, "content")
		if i < 0 {
			return entry{}, false
		}
		content, ok := textContent(kept[i].Val)
		if !ok {
			return entry{}, false
		}
		kept[i].Val = content
	default:
		return entry{}, false
	}
	e.kind, e.raw = kindItem, jsonobj.Encode(kept)
	e.size = len(e.raw)
	return e, true
}

// textContent keeps a message's text parts, and the transcripts of its
// audio parts as text parts; ok is false if no text is left.
func textContent(raw json.RawMessage) (json.RawMessage, bool) {
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return nil, false
	}
	var out [][]byte
	for _, p := range parts {
		var part struct {
			Type       string  `json:"type"`
			Text       *string `json:"text"`
			Transcript *string `json:"transcript"`
		}
		if json.Unmarshal(p, &part) != nil {
			continue
		}
		switch part.Type {
		case PartInputText, PartOutputText, BetaPartText:
			if part.Text != nil && *part.Text != "" {
				out = append(out, p)
			}
		case PartInputAudio, PartOutputAudio, BetaPartAudio:
			if part.Transcript != nil && *part.Transcript != "" {
				b, _ := json.Marshal(textPart{Type: audioTextType(part.Type), Text: *part.Transcript})
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		return nil, false
	}
	return append(append([]byte{'['}, bytes.Join(out, []byte{','})...), ']'), true
}

// audioTextType is the text part type that stands for an audio part.
func audioTextType(audio string) string {
	switch audio {
	case PartOutputAudio:
		return PartOutputText
	case BetaPartAudio:
		return BetaPartText
	}
	return PartInputText
}

// putText records a message's text under id: in place of the entry of
// that id (a waiting turn's place), else last. An empty text records
// nothing (and frees a waiting turn's place).
func (m *Memory) putText(id, role, text string) {
	if text == "" {
		if i := m.find(id); i >= 0 && m.history[i].kind == kindTurn {
			m.removeAt(i)
		}
		return
	}
	m.put(entry{kind: kindText, id: id, role: role, text: text}, "")
}

// put records e: in place of the entry of the same id if there is one,
// else after the entry named after (PreviousRoot: first), else last. An
// entry bigger than the byte bound alone is not kept.
func (m *Memory) put(e entry, after string) {
	if e.kind != kindItem {
		e.size = len(e.item(false))
	}
	i := m.find(e.id)
	if i >= 0 {
		m.removeAt(i)
	}
	if e.size > m.maxBytes {
		return
	}
	switch {
	case i >= 0:
	case after == PreviousRoot:
		i = 0
	case after != "":
		if i = m.find(after); i >= 0 {
			i++
		}
	}
	if i < 0 || i > len(m.history) {
		i = len(m.history)
	}
	m.history = slices.Insert(m.history, i, e)
	m.items++
	m.bytes += e.size
	m.fit()
}

// await gives a committed user turn its place until its transcript comes.
func (m *Memory) await(id string) {
	if m.waiting == maxWaitingTurns {
		m.removeAt(slices.IndexFunc(m.history, func(e entry) bool { return e.kind == kindTurn }))
	}
	m.history = append(m.history, entry{kind: kindTurn, id: id})
	m.waiting++
}

// nameCall gives a function call the name the upstream left out of its
// arguments' done event (response.done's output has it).
func (m *Memory) nameCall(id, callID, name string) {
	i := slices.IndexFunc(m.history, func(e entry) bool {
		return e.kind == kindCall && e.name == "" && (e.callID == callID || (id != "" && e.id == id))
	})
	if i < 0 {
		return
	}
	e := &m.history[i]
	e.name = name
	size := len(e.item(false))
	m.bytes += size - e.size
	e.size = size
	if size > m.maxBytes {
		m.removeAt(i)
	}
	m.fit()
}

// fit drops the oldest entries until the history is within its bounds.
func (m *Memory) fit() {
	n := 0
	for m.items > m.maxItems || m.bytes > m.maxBytes {
		m.forget(&m.history[n])
		n++
	}
	m.history = slices.Delete(m.history, 0, n)
}

// removeAt removes the entry at i.
func (m *Memory) removeAt(i int) {
	m.forget(&m.history[i])
	m.history = slices.Delete(m.history, i, i+1)
}

// forget takes e out of the counts.
func (m *Memory) forget(e *entry) {
	if e.kind == kindTurn {
		m.waiting--
		return
	}
	m.items--
	m.bytes -= e.size
}

// find returns the index of the entry with id, or -1 ("" has none).
func (m *Memory) find(id string) int {
	if id == "" {
		return -1
	}
	return slices.IndexFunc(m.history, func(e entry) bool { return e.id == id })
}

// Hold implements dialect.Memory: nothing but error events (which the
// dialect holds) needs holding.
func (m *Memory) Hold([]byte) bool { return false }

// Ending implements dialect.Memory: an error event with a code may end the
// session (the session matches the code against its fatal ones);
// session_expired is the 60-minute cap.
func (m *Memory) Ending(typ, payload []byte) (code string, expired, ends bool) {
	if !dialect.IsError(typ) {
		return "", false, false
	}
	var ev ErrorEvent
	_ = json.Unmarshal(payload, &ev)
	code = ev.Error.CodeString()
	expired = code == CodeSessionExpired
	return code, expired, expired || code != ""
}

// upstreamLost is the message of the response.done that fails an answer
// the old upstream session left unfinished.
const upstreamLost = "the upstream session ended during this response; tether resumed the call"

// failedResponse is the response.done of an answer the upstream left unfinished.
type failedResponse struct {
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	Response struct {
		Object        string `json:"object"`
		ID            string `json:"id"`
		Status        string `json:"status"`
		StatusDetails struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"status_details"`
		Output []struct{}       `json:"output"`
		Usage  *json.RawMessage `json:"usage"`
	} `json:"response"`
}

// Interrupted implements dialect.Memory: a failed response.done for each
// response in progress. The turns awaiting a transcript are let go too:
// the old session will not send it.
func (m *Memory) Interrupted() [][]byte {
	var out [][]byte
	for _, id := range m.open {
		var ev failedResponse
		ev.Type, ev.EventID = ResponseDone, m.events.Next()
		r := &ev.Response
		r.Object, r.ID, r.Status, r.Output = ObjectResponse, id, StatusFailed, []struct{}{}
		r.StatusDetails.Type = StatusFailed
		r.StatusDetails.Error.Type, r.StatusDetails.Error.Code, r.StatusDetails.Error.Message = ErrTypeTether, CodeUpstreamLost, upstreamLost
		b, _ := json.Marshal(ev)
		out = append(out, b)
	}
	m.open = m.open[:0]
	m.history = slices.DeleteFunc(m.history, func(e entry) bool { return e.kind == kindTurn })
	m.waiting = 0
	return out
}

// replayEventID is the event_id of the nth message of a replay.
func replayEventID(n int) string { return "tether_resume_" + strconv.Itoa(n) }

// sessionUpdate and itemCreate are the replay's messages.
type sessionUpdate struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Session json.RawMessage `json:"session"`
}

type itemCreate struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Item    json.RawMessage `json:"item"`
}

// Replay implements dialect.Memory: a session.update with the merged
// settings (if the client sent any), then a conversation.item.create per
// history entry, oldest first. Replay changes nothing: it may be asked
// again for another upstream.
func (m *Memory) Replay() dialect.Replay {
	var msgs [][]byte
	acks := &replayAcks{beta: m.beta}
	if m.settings != nil {
		b, _ := json.Marshal(sessionUpdate{Type: SessionUpdate, EventID: replayEventID(0), Session: m.settings})
		msgs = append(msgs, b)
		acks.settings = replayEventID(0)
	}
	for i := range m.history {
		e := &m.history[i]
		if !e.replayable() {
			continue
		}
		id := replayEventID(len(msgs))
		b, _ := json.Marshal(itemCreate{Type: ConversationItemCreate, EventID: id, Item: e.item(m.beta)})
		msgs = append(msgs, b)
		acks.items = append(acks.items, ackItem{eventID: id, id: e.id})
	}
	if len(msgs) == 0 {
		return dialect.Replay{}
	}
	acks.left = len(msgs)
	return dialect.Replay{Messages: msgs, Acks: acks, Items: len(acks.items)}
}

// replayAcks follows the answers to a replay. The upstream answers a
// session's client events in order: session.updated (or an error naming
// its event_id) for the session.update; for each item conversation.item.added
// then conversation.item.done in GA, conversation.item.created in beta (or
// an error naming its event_id). The answer to an item names the item's id;
// one replayed without an id is matched to the first such one unanswered.
type replayAcks struct {
	beta bool
	// settings is the event_id of the session.update awaiting its answer.
	settings string
	items    []ackItem
	// left counts the messages awaiting their answer.
	left int
}

// ackItem is a replayed item.
type ackItem struct {
	eventID string
	// id is the item's id (for one replayed without, the upstream's, once
	// its first answer named it).
	id       string
	answered bool
}

// Ack implements dialect.ReplayAcks.
func (a *replayAcks) Ack(typ, payload []byte) (swallow, done bool) {
	switch t := string(typ); t {
	case SessionUpdated:
		if a.settings == "" {
			return false, false
		}
		a.settings = ""
	case Error:
		var ev ErrorEvent
		if json.Unmarshal(payload, &ev) != nil || ev.Error == nil || ev.Error.EventID == "" {
			return false, false
		}
		if id := ev.Error.EventID; id == a.settings {
			a.settings = ""
		} else if i := slices.IndexFunc(a.items, func(it ackItem) bool { return !it.answered && it.eventID == id }); i >= 0 {
			a.items[i].answered = true
		} else {
			return false, false
		}
	case ItemAdded, ItemDone, BetaItemCreated:
		var ev struct {
			Item struct {
				ID string `json:"id"`
			} `json:"item"`
		}
		if json.Unmarshal(payload, &ev) != nil {
			return false, false
		}
		it := a.item(ev.Item.ID)
		if it == nil {
			return false, false
		}
		// GA answers an item with .added, then .done: only .done ends its
		// answer, so nothing of the replay reaches the client after.
		if t == ItemDone || (t == BetaItemCreated && a.beta) {
			it.answered = true
		} else {
			return true, false
		}
	default:
		return false, false
	}
	a.left--
	return true, a.left == 0
}

// item returns the unanswered replayed item an item event with id answers, or nil.
func (a *replayAcks) item(id string) *ackItem {
	if id == "" {
		return nil
	}
	if i := slices.IndexFunc(a.items, func(it ackItem) bool { return !it.answered && it.id == id }); i >= 0 {
		return &a.items[i]
	}
	i := slices.IndexFunc(a.items, func(it ackItem) bool { return !it.answered && it.id == "" })
	if i < 0 {
		return nil
	}
	a.items[i].id = id
	return &a.items[i]
}

// Closing implements dialect.Memory: a Realtime client ends a call by
// closing its socket.
func (m *Memory) Closing() bool { return false }

// Droppable implements dialect.Memory: audio appends may be dropped.
func (m *Memory) Droppable(typ []byte) bool { return string(typ) == InputAudioAppend }

// Notice implements dialect.Memory. Without n's upstream session id, the
// latest session.created's is given.
func (m *Memory) Notice(n dialect.ResumeNotice) []byte {
	if n.UpstreamSessionID == "" {
		n.UpstreamSessionID = m.sessionID
	}
	return dialect.Notice(m.events.Next(), n)
}

// Size implements dialect.Memory.
func (m *Memory) Size() (items, bytes int) { return m.items, m.bytes }
