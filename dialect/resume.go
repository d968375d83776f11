package dialect

import (
	"encoding/json"
	"strconv"
)

// Resuming a call on a new upstream session (lifecycle.resume). A dialect
// that can carry a call over implements Resumable; each call then keeps a
// Memory: the settings the client gave its upstream session and a bounded
// text history, fed with small captured events off the hot path. When the
// upstream ends the session (its cap, a reset, a dead leg, a fatal event)
// the relay dials again and gives the new upstream session the Memory's
// Replay, without the client reconnecting.

// Resumable is a dialect whose calls can resume on a new upstream session.
type Resumable interface {
	// NewMemory returns an empty Memory for one call, holding at most b.
	NewMemory(b HistoryBounds) Memory
}

// HistoryBounds bound a Memory's conversation history: the oldest entries
// go first once either bound is passed. Zero means no bound of its own
// (the dialect's protocol limits still apply).
type HistoryBounds struct {
	// Items is the most history entries kept (messages, function calls).
	Items int
	// Bytes is the most history text kept, in bytes of the encoded entries.
	Bytes int
}

// Memory is what one call keeps so it can resume. CaptureClient,
// CaptureUpstream, Hold and Droppable depend on the type alone (the relay
// asks them for every message, from both pumps at once, so they must be
// safe for concurrent use); the other methods are called by one goroutine
// at a time (the session serializes them). Payloads are unmasked and must
// not be retained (copy what is kept).
type Memory interface {
	// CaptureClient reports whether a client message of this type is to be
	// captured whole and handed to Client (session settings, items).
	CaptureClient(typ []byte) bool
	// Client records a captured client message, after it was forwarded.
	Client(typ, payload []byte)
	// CaptureUpstream reports whether an upstream message of this type is
	// to be captured whole and handed to Upstream (transcripts, answers).
	CaptureUpstream(typ []byte) bool
	// Upstream records a captured upstream message, after it was forwarded.
	Upstream(typ, payload []byte)
	// Hold reports whether an upstream message of this type is to be held
	// whole before the client sees any of it, so that Ending can keep it
	// from the client (GPT-Live session.closed; error events are always held).
	Hold(typ []byte) bool
	// Ending decodes a held upstream message and reports whether it ends the
	// upstream session: expired is the provider's duration cap (Realtime
	// error session_expired, GPT-Live session.closed reason expired); code
	// is an error event's code ("" for none), which the session matches
	// against its fatal codes. A session.closed for any other reason
	// (content, close_requested) is not an ending a resume may undo:
	// ends is false and the message is relayed.
	Ending(typ, payload []byte) (code string, expired, ends bool)
	// Interrupted returns the messages that finish, for the client, the
	// answers the old upstream session left unfinished (Realtime: a
	// response.done with status failed per response in progress), and
	// forgets those answers. Each message is also reported to the session
	// as if the upstream had sent it.
	Interrupted() [][]byte
	// Replay is what the next upstream session is given.
	Replay() Replay
	// Droppable reports whether a client message of this type may be
	// dropped from the audio held while resuming, when it overflows
	// (audio appends); anything else is kept.
	Droppable(typ []byte) bool
	// Notice returns the event tether sends the client once the call has
	// resumed (lifecycle.resume.notify).
	Notice(n ResumeNotice) []byte
	// Size reports the history held: entries and bytes.
	Size() (items, bytes int)
	// Closing reports whether the client asked to end the call (GPT-Live
	// session.close): an upstream ending after that is not resumed from.
	Closing() bool
}

// Replay is what a new upstream session is given to continue a call.
type Replay struct {
	// Start, when set, is the opening message the new session is dialed
	// with in place of the client's own (GPT-Live: session.start whose
	// input holds the history).
	Start []byte
	// Messages go to the new upstream session, in order, once it opened
	// (Realtime: session.update, then the history as conversation.item.create).
	Messages [][]byte
	// Acks, when Messages is not empty, tells which upstream events answer
	// the replay: those are kept from the client.
	Acks ReplayAcks
	// Items is how many history entries the replay carries.
	Items int
}

// ReplayAcks follows the upstream's answers to a replay.
type ReplayAcks interface {
	// Ack is called with each upstream event read while the replay is
	// answered: swallow keeps it from the client; done means every replayed
	// message has been answered (the relay then resumes relaying).
	Ack(typ, payload []byte) (swallow, done bool)
}

// ResumeNotice describes a resume for the client's notice.
type ResumeNotice struct {
	// Resumes is how many times the call has resumed, this one included.
	Resumes int `json:"resumes"`
	// Trigger is why the old upstream session ended (expired,
	// upstream_error, upstream_heartbeat_timeout, fatal_event).
	Trigger string `json:"trigger"`
	// UpstreamSessionID is the new upstream session's id, if known.
	UpstreamSessionID string `json:"upstream_session_id"`
	// HistoryItems is how many history entries were replayed.
	HistoryItems int `json:"history_items"`
	// BufferedMessages and DroppedMessages count the client messages held
	// while resuming, sent on and dropped.
	BufferedMessages int `json:"buffered_messages"`
	DroppedMessages  int `json:"dropped_messages"`
}

// NoticeType is the type of the event a resumed call's client receives.
const NoticeType = "tether.session.resumed"

// EventIDs numbers the events tether makes for a call's client, in both
// dialects: tether_1, tether_2, ..., unique in the call. The zero value
// starts at tether_1.
type EventIDs struct{ n int }

// Next is a new event_id.
func (e *EventIDs) Next() string {
	e.n++
	return "tether_" + strconv.Itoa(e.n)
}

// Notice encodes the tether.session.resumed event, the same in both dialects.
func Notice(eventID string, n ResumeNotice) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		EventID string `json:"event_id"`
		ResumeNotice
	}{NoticeType, eventID, n})
	return b
}
