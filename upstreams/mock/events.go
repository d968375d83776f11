package mock

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// errRST: the session was dropped by mock.fault rst.
var errRST = errors.New("mock upstream: connection reset by fault")

// head starts every server event.
type head struct {
	Type    string `json:"type"`
	EventID string `json:"event_id"`
}

func (c *conn) head(typ string) head { return head{Type: typ, EventID: c.newID("event")} }

type errorBody struct {
	Type    string  `json:"type"`
	Code    *string `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	EventID *string `json:"event_id"`
}

type errorEvent struct {
	head
	Error errorBody `json:"error"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// sendError sends an error event; clientEventID is the client's event_id,
// copied into error.event_id.
func (c *conn) sendError(clientEventID, typ, code, msg, param string) error {
	return c.sendEvent(errorEvent{c.head("error"), errorBody{
		Type: typ, Code: nullable(code), Message: msg, Param: nullable(param), EventID: nullable(clientEventID),
	}})
}

func (c *conn) sessionEvent(typ string) any {
	return struct {
		head
		Session map[string]any `json:"session"`
	}{c.head(typ), c.session}
}

// clientEvent is every client event but append, decoded with encoding/json.
type clientEvent struct {
	Type       string          `json:"type"`
	EventID    string          `json:"event_id"`
	Session    json.RawMessage `json:"session"`
	Response   json.RawMessage `json:"response"`
	ResponseID string          `json:"response_id"`
	Item       json.RawMessage `json:"item"`
	ItemID     string          `json:"item_id"`
	// conversation.item.truncate
	ContentIndex int `json:"content_index"`
	AudioEndMs   int `json:"audio_end_ms"`
	faultArgs
}

// faultArgs are the members of a mock.fault event (both dialects).
type faultArgs struct {
	Fault           string          `json:"fault"`
	Code            json.RawMessage `json:"code"` // close: number; error: string
	Reason          string          `json:"reason"`
	ErrorType       string          `json:"error_type"`
	Message         string          `json:"message"`
	CloseCode       int             `json:"close_code"`
	DeltaIntervalMs *float64        `json:"delta_interval_ms"`
}

// handle processes one client text message. An error ends the session unless
// it is errWriteClosed (the session is closing; keep reading for the close).
func (c *conn) handle(msg []byte) error {
	sc, ok := scanEvent(msg)
	if !ok {
		return c.sendError("", "invalid_request_error", "invalid_value", "Invalid JSON: the event must be a JSON object.", "")
	}
	if sc.hasType && sc.hasAudio && !sc.escaped && !sc.oddKeys && string(sc.typ) == realtime.InputAudioAppend {
		return c.appendBase64(sc.audio, msg)
	}
	var ev clientEvent
	if err := json.Unmarshal(msg, &ev); err != nil {
		return c.sendError("", "invalid_request_error", "invalid_value", "Invalid event: "+err.Error(), "")
	}
	switch ev.Type {
	case realtime.InputAudioAppend:
		var a struct {
			Audio *string `json:"audio"`
		}
		if json.Unmarshal(msg, &a) != nil || a.Audio == nil {
			return c.sendError(ev.EventID, "invalid_request_error", "missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
		}
		return c.appendBase64([]byte(*a.Audio), msg)
	case realtime.InputAudioCommit:
		return c.commit(ev.EventID)
	case realtime.InputAudioClear:
		c.in = c.in[:0]
		c.vad = vadState{totalMs: c.vad.totalMs}
		return c.sendEvent(c.head(realtime.InputAudioCleared))
	case realtime.SessionUpdate:
		return c.sessionUpdate(&ev)
	case realtime.ResponseCreate:
		return c.responseCreate(&ev)
	case realtime.ResponseCancel:
		return c.responseCancel(&ev)
	case realtime.ConversationItemCreate:
		return c.itemCreate(&ev)
	case itemTruncate, itemDelete:
		return c.itemEdit(&ev)
	case realtime.MockFault:
		return c.fault(&ev)
	case "":
		return c.sendError(ev.EventID, "invalid_request_error", "invalid_value", "Missing or invalid 'type'.", "type")
	default:
		return c.sendError(ev.EventID, "invalid_request_error", "invalid_value",
			fmt.Sprintf("Invalid value: '%s'. The mock upstream does not support this event type.", ev.Type), "type")
	}
}

// The client events that edit an item named by item_id.
const (
	itemTruncate = "conversation.item.truncate"
	itemDelete   = "conversation.item.delete"
)

// itemEdit answers conversation.item.truncate and conversation.item.delete
// (the mock keeps no items to edit: it confirms).
func (c *conn) itemEdit(ev *clientEvent) error {
	if ev.ItemID == "" {
		return c.sendError(ev.EventID, "invalid_request_error", "missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
	}
	type itemIDEvent struct {
		head
		ItemID string `json:"item_id"`
	}
	if ev.Type == itemDelete {
		return c.sendEvent(itemIDEvent{c.head(realtime.ItemDeleted), ev.ItemID})
	}
	return c.sendEvent(struct {
		itemIDEvent
		ContentIndex int `json:"content_index"`
		AudioEndMs   int `json:"audio_end_ms"`
	}{itemIDEvent{c.head(realtime.ItemTruncated), ev.ItemID}, ev.ContentIndex, ev.AudioEndMs})
}

// eventID digs the client's event_id out of msg (for errors on the append path).
func eventID(msg []byte) string {
	var e struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(msg, &e)
	return e.EventID
}

// appendBase64 decodes an append's audio into the input buffer, and runs VAD.
func (c *conn) appendBase64(b64, msg []byte) error {
	start := len(c.in)
	in, err := base64.StdEncoding.AppendDecode(c.in, b64)
	if err != nil {
		c.in = c.in[:start]
		return c.sendError(eventID(msg), "invalid_request_error", "invalid_value", "Invalid 'audio': not valid base64.", "audio")
	}
	c.in = in
	if !c.cfg.vad {
		c.in = boundAudio(c.in, maxInputBytes)
		return nil
	}
	return c.detect(start)
}

// detect runs VAD over c.in[start:]. Before speech it keeps only the last
// prefix_padding_ms of audio; at speech end it commits and (by default)
// starts a response.
func (c *conn) detect(start int) error {
	f := c.cfg.inFormat
	sb := f.sampleBytes()
	perWindow := f.bytesPerSecond() * vadWindowMillis / 1000 / sb
	prefixBytes := f.bytesPerSecond() * c.cfg.prefixMs / 1000
	from := 0 // audio before from is dropped
	i := start - c.vad.rest
	for i+sb <= len(c.in) {
		n := min(perWindow-c.vad.winSamples, (len(c.in)-i)/sb)
		c.vad.feed(n, f.sumSquares(c.in[i:i+n*sb]))
		i += n * sb
		if c.vad.winSamples < perWindow {
			break
		}
		switch c.vad.endWindow(c.cfg.silenceMs) {
		case vadStarted:
			from = max(from, i-perWindow*sb-prefixBytes)
			c.vad.itemID = c.newID("item")
			startMs := max(c.vad.totalMs-vadWindowMillis-int64(c.cfg.prefixMs), 0)
			if err := c.sendEvent(struct {
				head
				AudioStartMs int64  `json:"audio_start_ms"`
				ItemID       string `json:"item_id"`
			}{c.head(realtime.SpeechStarted), startMs, c.vad.itemID}); err != nil {
				return err
			}
			if c.cfg.interrupt {
				c.cancelResponse("turn_detected", "")
			}
		case vadStopped:
			if err := c.sendEvent(struct {
				head
				AudioEndMs int64  `json:"audio_end_ms"`
				ItemID     string `json:"item_id"`
			}{c.head(realtime.SpeechStopped), c.vad.totalMs, c.vad.itemID}); err != nil {
				return err
			}
			if err := c.commitAudio(c.in[from:i], c.vad.itemID); err != nil {
				return err
			}
			from = i
			c.vad.itemID = ""
			if c.cfg.autoResponse {
				if err := c.startResponse("", c.cfg.instructions, nil, true); err != nil {
					return err
				}
			}
		}
	}
	if !c.vad.inSpeech {
		from = max(from, len(c.in)-prefixBytes)
	}
	// Keep a partial sample for the next append.
	from = min(from, i)
	c.vad.rest = len(c.in) - i
	if from > 0 {
		c.in = c.in[:copy(c.in, c.in[from:])]
	}
	c.in = boundAudio(c.in, maxInputBytes)
	return nil
}

// commit handles input_audio_buffer.commit.
func (c *conn) commit(clientEventID string) error {
	f := c.cfg.inFormat
	if len(c.in) < f.bytesPerSecond()*commitMinMillis/1000 {
		return c.sendError(clientEventID, "invalid_request_error", "input_audio_buffer_commit_empty",
			fmt.Sprintf("Error committing input audio buffer: buffer too small. Expected at least %dms of audio, but buffer only has %.2fms of audio.",
				commitMinMillis, float64(len(c.in))*1000/float64(f.bytesPerSecond())), "")
	}
	itemID := c.vad.itemID
	if itemID == "" {
		itemID = c.newID("item")
	}
	err := c.commitAudio(c.in, itemID)
	c.in = c.in[:0]
	c.vad = vadState{totalMs: c.vad.totalMs}
	return err
}

// commitAudio moves audio (copied) to the committed audio the next response
// echoes and announces the user item.
func (c *conn) commitAudio(audio []byte, itemID string) error {
	c.pending = boundAudio(append(c.pending, audio...), maxInputBytes)
	ms := c.cfg.inFormat.millis(len(audio))
	c.pendingMs = c.cfg.inFormat.millis(len(c.pending))
	prev := c.lastItem
	c.lastItem = itemID
	if err := c.sendEvent(struct {
		head
		PreviousItemID *string `json:"previous_item_id"`
		ItemID         string  `json:"item_id"`
	}{c.head(realtime.InputAudioCommitted), nullable(prev), itemID}); err != nil {
		return err
	}
	it := item{ID: itemID, Object: "realtime.item", Type: "message", Status: "completed", Role: "user",
		Content: []content{{Type: "input_audio"}}}
	for _, typ := range []string{realtime.ItemAdded, realtime.ItemDone} {
		if err := c.sendEvent(itemEvent{c.head(typ), nullable(prev), it}); err != nil {
			return err
		}
	}
	if !c.cfg.transcribe {
		return nil
	}
	return c.sendEvent(struct {
		head
		ItemID       string         `json:"item_id"`
		ContentIndex int            `json:"content_index"`
		Transcript   string         `json:"transcript"`
		Usage        map[string]any `json:"usage"`
	}{c.head(realtime.InputTranscriptionCompleted), itemID, 0,
		fmt.Sprintf("(%d ms of audio)", ms), map[string]any{"type": "duration", "seconds": float64(ms) / 1000}})
}

type item struct {
	ID      string    `json:"id"`
	Object  string    `json:"object"`
	Type    string    `json:"type"`
	Status  string    `json:"status"`
	Role    string    `json:"role"`
	Content []content `json:"content"`
}

type content struct {
	Type       string  `json:"type"`
	Transcript *string `json:"transcript"`
}

type itemEvent struct {
	head
	PreviousItemID *string `json:"previous_item_id"`
	Item           any     `json:"item"`
}

// sessionUpdate handles session.update: merge, validate, answer session.updated.
func (c *conn) sessionUpdate(ev *clientEvent) error {
	var upd map[string]any
	if len(ev.Session) == 0 || json.Unmarshal(ev.Session, &upd) != nil || upd == nil {
		return c.sendError(ev.EventID, "invalid_request_error", "invalid_value", "Invalid 'session': expected an object.", "session")
	}
	s := mergeSession(c.session, upd)
	cfg, perr := normalizeSession(s)
	if perr != nil {
		return c.sendError(ev.EventID, "invalid_request_error", "invalid_value", perr.msg, perr.param)
	}
	if cfg.vad && !c.cfg.vad {
		c.vad = vadState{totalMs: c.vad.totalMs}
	}
	c.session, c.cfg = s, cfg
	return c.sendEvent(c.sessionEvent(realtime.SessionUpdated))
}

// itemCreate handles conversation.item.create.
func (c *conn) itemCreate(ev *clientEvent) error {
	var it map[string]any
	if len(ev.Item) == 0 || json.Unmarshal(ev.Item, &it) != nil || it == nil {
		return c.sendError(ev.EventID, "invalid_request_error", "invalid_value", "Invalid 'item': expected an object.", "item")
	}
	id, _ := it["id"].(string)
	if id == "" {
		id = c.newID("item")
		it["id"] = id
	}
	it["object"] = "realtime.item"
	if _, ok := it["status"]; !ok {
		it["status"] = "completed"
	}
	prev := c.lastItem
	c.lastItem = id
	for _, typ := range []string{realtime.ItemAdded, realtime.ItemDone} {
		if err := c.sendEvent(itemEvent{c.head(typ), nullable(prev), it}); err != nil {
			return err
		}
	}
	return nil
}

// fault handles mock.fault.
func (c *conn) fault(ev *clientEvent) error {
	c.log.Info("mock upstream: fault", "fault", ev.Fault)
	if done, err := c.commonFault(&ev.faultArgs, "invalid_request_error", func(typ, code, msg string) error {
		return c.sendError("", typ, code, msg, "")
	}); done {
		return err
	}
	switch ev.Fault {
	case "expire":
		const msg = "Your session hit the maximum duration of 60 minutes."
		if err := c.sendError("", "invalid_request_error", "session_expired", msg, ""); err != nil {
			return err
		}
		c.closeWith(wsframe.GoingAway, msg)
		return nil
	case "echo":
		c.echo = true
		return nil
	case "slow":
		ms := 100.0
		if ev.DeltaIntervalMs != nil {
			ms = max(*ev.DeltaIntervalMs, 0)
		}
		c.pace.Store(int64(ms * float64(time.Millisecond)))
		return nil
	}
	return c.sendError(ev.EventID, "invalid_request_error", "invalid_value",
		fmt.Sprintf("Invalid value: '%s'. Supported faults: close, rst, stall, error, expire, echo, slow.", ev.Fault), "fault")
}

// commonFault obeys the faults of both dialects: close, rst, stall, and
// error, which sends an error event (of type defaultType unless f names
// one) with sendError, then closes with f.CloseCode if set. done is false
// for any other fault.
func (c *conn) commonFault(f *faultArgs, defaultType string, sendError func(typ, code, msg string) error) (done bool, err error) {
	switch f.Fault {
	case "close":
		c.closeFault(f.Code, f.Reason)
		return true, nil
	case "rst":
		return true, c.reset()
	case "stall":
		c.stall()
		return true, nil
	case "error":
		code := cmp.Or(jsonString(f.Code), "mock_error")
		typ := cmp.Or(f.ErrorType, defaultType)
		if err := sendError(typ, code, cmp.Or(f.Message, "Mock fault: "+code)); err != nil {
			return true, err
		}
		if f.CloseCode != 0 {
			c.closeWith(wsframe.CloseCode(f.CloseCode), typ+"."+code)
		}
		return true, nil
	}
	return false, nil
}

// reset drops the TCP connection with an RST and no close frame (mock.fault
// rst); it returns errRST, which ends the session.
func (c *conn) reset() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wclosed = true
	nc := c.nc
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS
		nc = tc.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close sends RST
	}
	nc.Close() // the raw connection: TLS would send close_notify first
	return errRST
}

// stall stops all writes and, from the next frame on, all reads (mock.fault
// stall): the socket stays open until the session is killed.
func (c *conn) stall() {
	c.stopWriting()
	c.stalled = true
}

// closeFault starts the close of mock.fault close: code (default 1000) and reason.
func (c *conn) closeFault(rawCode json.RawMessage, reason string) {
	code := wsframe.NormalClosure
	if n, ok := jsonInt(rawCode); ok && n > 0 {
		code = wsframe.CloseCode(n)
	}
	c.closeWith(code, reason)
}

// jsonInt reads a JSON number, or a string holding one.
func jsonInt(raw json.RawMessage) (int, bool) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n, true
	}
	if n, err := strconv.Atoi(jsonString(raw)); err == nil {
		return n, true
	}
	return 0, false
}

// jsonString reads a JSON string, or the text of any other scalar.
func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return string(raw)
}
