package mock

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// livePathSuffix ends the path of every GPT-Live primary endpoint
// (/v1/live/sessions on OpenAI, /openai/v1/live/sessions on Azure).
const livePathSuffix = "/live/sessions"

func isLivePath(path string) bool { return strings.HasSuffix(path, livePathSuffix) }

// liveAuthorized checks the credential of a GPT-Live upgrade request. A
// missing or wrong one is answered with 401 and a JSON error body (no
// WebSocket), and liveAuthorized returns false.
func (s *Server) liveAuthorized(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.APIKey == "" || s.headerAuthorized(r) {
		return true
	}
	code, msg := live.CodeInvalidAPIKey, "Incorrect API key provided."
	if r.Header.Get("Authorization") == "" && r.Header.Get("api-key") == "" {
		code, msg = live.CodeMissingAuth, "Missing bearer authentication in header."
	}
	body, _ := json.Marshal(struct {
		Error live.ErrorDetail `json:"error"`
	}{live.ErrorDetail{Type: live.ErrTypeInvalidRequest, Code: &code, Message: msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(append(body, '\n'))
	s.log.Debug("mock upstream: GPT-Live upgrade refused", "remote", r.RemoteAddr, "code", code)
	return false
}

// newLiveConn returns a GPT-Live session: it waits for session.start.
func newLiveConn(s *Server, nc net.Conn, br io.Reader) *conn {
	c := newBaseConn(s, nc, br, "live_"+randomID(24))
	c.live = &liveSession{c: c}
	return c
}

const (
	// liveDeltaMillis is the audio of one output delta.
	liveDeltaMillis = 100
	// transcriptMillis is the granularity of transcript deltas on the
	// session timeline.
	transcriptMillis = 200
	// echoDelayMillis is how much of the caller's audio the echo buffers
	// before it plays it back.
	echoDelayMillis = 200
	// maxEchoMillis bounds the audio waiting to be echoed; beyond it the
	// oldest is dropped.
	maxEchoMillis = 60_000
	// keepDecodeBuf is the largest decode buffer kept between appends.
	keepDecodeBuf = 256 << 10
)

// liveSession is the GPT-Live state of a conn. The reader (conn.run's
// goroutine) handles client events; once session.start is accepted the
// track goroutine (live_track.go) sends session.started, then the output
// audio, output transcripts and usage until the session ends. The reader
// stops the track (conn.stop, then wait) before it sends session.closed.
type liveSession struct {
	c *conn

	// Owned by the reader. res is written only before the track starts and,
	// once started is set, by session.update (the track reads it only to
	// send session.started, before it sets started).
	begun     bool // session.start accepted
	res       liveResource
	format    liveFormat
	inBytes   int64       // caller audio appended: the input timeline
	in        speechMeter // input transcripts
	muted     bool
	dec       []byte // decoded append
	items     int    // response.item.create items so far
	responses int    // delegated responses so far
	lastInput int64  // input tokens of the last delegated response
	// emitIn is inputTranscript, bound once (not per append).
	emitIn func(startMs, endMs int64, text string) error

	ticks atomic.Int64 // output deltas sent (written by the track): the session timeline

	// mu guards started and the echo buffer, shared by the reader and the
	// track. The reader holds it while it answers a message that came
	// before session.started, so the answer and session.started keep order.
	mu        sync.Mutex
	started   bool   // session.started was sent
	echo      []byte // caller audio waiting to be played back, from echoOff
	echoOff   int
	buffering bool // the echo waits for echoDelayMillis of audio

	exited chan struct{} // closed when the track returns; nil before session.start
}

// wait waits for the track to return (the caller stopped it with conn.stop).
func (l *liveSession) wait() {
	if l.exited != nil {
		<-l.exited
	}
}

// seconds is the session timeline in seconds: the usage the mock reports.
func (l *liveSession) seconds() float64 {
	return float64(l.ticks.Load()*liveDeltaMillis) / 1000
}

// inMillis is the input timeline in milliseconds.
func (l *liveSession) inMillis() int64 {
	return l.inBytes * 1000 / int64(l.format.bytesPerSecond())
}

// liveEvent is a GPT-Live client event (other than a fast-path append).
type liveEvent struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Session json.RawMessage `json:"session"`
	Audio   *string         `json:"audio"`
	Content *string         `json:"content"`
	Item    json.RawMessage `json:"item"`
	faultArgs
}

// sendError sends a GPT-Live error event; clientEventID is the refused
// event's event_id (echoed at the top level and in the error).
func (l *liveSession) sendError(clientEventID string, e *liveError) error {
	return l.c.sendEvent(live.ErrorEvent{
		Type: live.Error, EventID: l.c.newID("event"), ClientEventID: clientEventID,
		Error: &live.ErrorDetail{Type: e.typ, Code: &e.code, Message: e.msg, Param: e.param, ClientEventID: clientEventID},
	})
}

// refuse answers a refused session.start: error, then close 1008. No
// session exists.
func (l *liveSession) refuse(clientEventID string, e *liveError) error {
	l.c.log.Debug("mock upstream: session.start refused", "code", e.code, "param", e.param)
	if err := l.sendError(clientEventID, e); err != nil {
		return err
	}
	l.c.closeWith(wsframe.PolicyViolation, e.typ+"."+e.code)
	return nil
}

// handle processes one client message. An error ends the session unless it
// is errWriteClosed.
func (l *liveSession) handle(op ws.OpCode, msg []byte) error {
	if !l.begun {
		return l.start(op, msg)
	}
	if op != ws.OpText {
		return l.sendError("", invalidValue("", "Binary frames are not supported; send JSON events as text frames."))
	}
	sc, ok := scanEvent(msg)
	if !ok {
		return l.sendError("", invalidValue("", "Invalid JSON: the event must be a JSON object."))
	}
	if sc.hasType && sc.hasAudio && !sc.escaped && !sc.oddKeys && string(sc.typ) == live.InputAudioAppend {
		if ok, err := l.whenStarted(eventID(msg), live.InputAudioAppend); !ok {
			return err
		}
		return l.appendAudio(sc.audio, msg)
	}
	var ev liveEvent
	if err := json.Unmarshal(msg, &ev); err != nil {
		return l.sendError("", invalidValue("", "Invalid event: "+err.Error()))
	}
	switch {
	case ev.Type == live.MockFault:
		return l.fault(&ev)
	case ev.Type == "":
		return l.sendError(ev.EventID, missingParam("type"))
	case ev.Type == live.SessionStart:
		return l.sendError(ev.EventID, invalidRequest(live.CodeAlreadyStarted, "type",
			"session.start may be sent only once per session."))
	case !slices.Contains(live.ClientEvents, ev.Type):
		return l.sendError(ev.EventID, invalidRequest(live.CodeUnknownEventType, "type", fmt.Sprintf(
			"Invalid value: '%s'. Supported client event types are: '%s'.", ev.Type, strings.Join(live.ClientEvents, "', '"))))
	}
	if ok, err := l.whenStarted(ev.EventID, ev.Type); !ok {
		return err
	}
	switch ev.Type {
	case live.InputAudioAppend:
		if ev.Audio == nil {
			return l.sendError(ev.EventID, missingParam("audio"))
		}
		return l.appendAudio([]byte(*ev.Audio), msg)
	case live.InputAudioMute, live.InputAudioUnmute:
		l.muted = ev.Type == live.InputAudioMute
		ack := live.InputAudioUnmuted
		if l.muted {
			ack = live.InputAudioMuted
		}
		return l.c.sendEvent(liveHead{ack, l.c.newID("event"), ev.EventID})
	case live.InstructionsAppend, live.ThinkingAppend, live.CommentaryAppend:
		return l.appendContext(&ev)
	case live.SessionUpdate:
		return l.update(&ev)
	case live.ResponseItemCreate, live.ResponseCreate:
		return l.respond(&ev)
	case live.SessionClose:
		return l.end(live.ReasonCloseRequested, ev.EventID)
	}
	return nil
}

// whenStarted reports whether session.started was sent; if not, it answers
// the client's event typ with session_not_started (the event is dropped).
func (l *liveSession) whenStarted(clientEventID, typ string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return true, nil
	}
	return false, l.sendError(clientEventID, invalidRequest(live.CodeNotStarted, "",
		fmt.Sprintf("Wait for %s before sending %s.", live.SessionStarted, typ)))
}

// start handles the first message, which must be a valid session.start; it
// starts the track, which sends session.started after Options.StartDelay.
func (l *liveSession) start(op ws.OpCode, msg []byte) error {
	if op != ws.OpText {
		return l.refuse("", startRequired(""))
	}
	st, eventID, e := parseStart(msg, l.c.id)
	if e != nil {
		return l.refuse(eventID, e)
	}
	l.begun = true
	l.res, l.format = st.res, st.format
	l.c.model = st.res.Model
	l.in = newSpeechMeter(l.format)
	l.emitIn = l.inputTranscript
	l.buffering = true
	l.exited = make(chan struct{})
	l.c.log.Debug("mock upstream: GPT-Live session.start", "model", l.c.model, "format", l.res.Audio.Format.Type, "rate", l.format.rate)
	go l.track(st.eventID)
	return nil
}

// liveHead starts every server event the reader sends.
type liveHead struct {
	Type          string `json:"type"`
	EventID       string `json:"event_id"`
	ClientEventID string `json:"client_event_id,omitempty"`
}

// appendAudio adds an append's audio (base64 b64) to the input timeline,
// the echo and the input transcripts.
func (l *liveSession) appendAudio(b64, msg []byte) error {
	dec, err := base64.StdEncoding.AppendDecode(l.dec[:0], b64)
	if cap(dec) <= keepDecodeBuf {
		l.dec = dec[:0]
	}
	if err != nil {
		return l.sendError(eventID(msg), invalidRequest(live.CodeInvalidAudio, "audio", "Invalid 'audio': not valid base64."))
	}
	if sb := l.format.enc.sampleBytes(); len(dec)%sb != 0 {
		return l.sendError(eventID(msg), invalidRequest(live.CodeInvalidAudio, "audio", "PCM16 audio must contain an even number of bytes."))
	}
	l.inBytes += int64(len(dec))
	if l.muted {
		// The model hears nothing; the timeline goes on.
		return l.in.feed(nil, len(dec), l.emitIn)
	}
	// Transcripts first: the caller's words come before their echo.
	if err := l.in.feed(dec, len(dec), l.emitIn); err != nil {
		return err
	}
	l.mu.Lock()
	l.echo = append(l.echo, dec...)
	if limit := l.format.bytes(maxEchoMillis); len(l.echo)-l.echoOff > limit {
		l.echoOff = len(l.echo) - limit*3/4
	}
	l.mu.Unlock()
	return nil
}

// inputTranscript sends an input transcript fragment.
func (l *liveSession) inputTranscript(startMs, endMs int64, text string) error {
	return l.c.sendEvent(live.TranscriptDelta{Type: live.InputTranscriptDelta, EventID: l.c.newID("event"),
		Delta: text, StartMS: startMs, EndMS: endMs})
}

// appendContext acks session.instructions/thinking/commentary.append at the
// current point of the input timeline.
func (l *liveSession) appendContext(ev *liveEvent) error {
	if ev.Content == nil {
		return l.sendError(ev.EventID, missingParam("content"))
	}
	ack := map[string]string{
		live.InstructionsAppend: live.InstructionsAppended,
		live.ThinkingAppend:     live.ThinkingAppended,
		live.CommentaryAppend:   live.CommentaryAppended,
	}[ev.Type]
	start := l.inMillis() / transcriptMillis * transcriptMillis
	return l.c.sendEvent(struct {
		liveHead
		StartMS int64 `json:"start_ms"`
		EndMS   int64 `json:"end_ms"`
	}{liveHead{ack, l.c.newID("event"), ev.EventID}, start, start + transcriptMillis})
}

// liveSessionEvent is session.started or session.updated.
type liveSessionEvent struct {
	liveHead
	Session *liveResource `json:"session"`
}

// update handles session.update: only the delegation may change.
func (l *liveSession) update(ev *liveEvent) error {
	if absent(ev.Session) {
		return l.sendError(ev.EventID, missingParam("session"))
	}
	sess, e := object(ev.Session, "session")
	if e != nil {
		return l.sendError(ev.EventID, e)
	}
	for _, k := range slices.Sorted(maps.Keys(sess)) {
		switch {
		case k == "delegation":
		case slices.Contains(startSessionKeys, k):
			return l.sendError(ev.EventID, invalidRequest(live.CodeImmutableFieldUpdate, "session."+k, fmt.Sprintf(
				"Cannot update 'session.%s': only the Responses delegation settings can change after session.start.", k)))
		default:
			return l.sendError(ev.EventID, unknownParam("session."+k))
		}
	}
	d, e := updateDelegation(sess["delegation"], l.res.Delegation)
	if e != nil {
		return l.sendError(ev.EventID, e)
	}
	l.res.Delegation = d
	return l.c.sendEvent(liveSessionEvent{liveHead{live.SessionUpdated, l.c.newID("event"), ev.EventID}, &l.res})
}

// responseWords are the text of a delegated answer, one delta each.
var responseWords = []string{"The", " mock", " backend", " handled", " it."}

// respond handles response.item.create and response.create, which need
// Responses delegation. response.create answers with response.event
// messages, the last a response.completed with token usage.
func (l *liveSession) respond(ev *liveEvent) error {
	if l.res.Delegation["type"] != live.DelegationResponses {
		return l.sendError(ev.EventID, invalidRequest(live.CodeDelegationRequired, "",
			ev.Type+" requires Responses delegation."))
	}
	if ev.Type == live.ResponseItemCreate {
		if absent(ev.Item) {
			return l.sendError(ev.EventID, missingParam("item"))
		}
		if _, e := object(ev.Item, "item"); e != nil {
			return l.sendError(ev.EventID, e)
		}
		l.items++
		return nil
	}
	l.responses++
	id := l.c.newID("resp")
	var u live.ResponsesUsage
	u.InputTokens = 20 + 10*int64(l.items)
	u.InputTokensDetails.CachedTokens = min(l.lastInput, u.InputTokens)
	u.OutputTokens = int64(len(responseWords))
	l.lastInput = u.InputTokens
	type resp struct {
		ID     string               `json:"id"`
		Object string               `json:"object"`
		Status string               `json:"status"`
		Usage  *live.ResponsesUsage `json:"usage,omitempty"`
	}
	nested := []any{struct {
		Type     string `json:"type"`
		Response resp   `json:"response"`
	}{live.ResponseCreated, resp{id, "response", "in_progress", nil}}}
	for _, w := range responseWords {
		nested = append(nested, struct {
			Type         string `json:"type"`
			OutputIndex  int    `json:"output_index"`
			ContentIndex int    `json:"content_index"`
			Delta        string `json:"delta"`
		}{live.ResponseTextDelta, 0, 0, w})
	}
	nested = append(nested, struct {
		Type     string `json:"type"`
		Response resp   `json:"response"`
	}{live.ResponseCompleted, resp{id, "response", "completed", &u}})
	for i, n := range nested {
		clientEventID := ""
		if i == 0 {
			clientEventID = ev.EventID
		}
		if err := l.c.sendEvent(struct {
			liveHead
			Event any `json:"event"`
		}{liveHead{live.ResponseEvent, l.c.newID("event"), clientEventID}, n}); err != nil {
			return err
		}
	}
	return nil
}

// end stops the track, sends session.closed with reason and the final
// usage, and closes with 1000.
func (l *liveSession) end(reason, clientEventID string) error {
	l.c.stop()
	l.wait()
	err := l.c.sendEvent(struct {
		liveHead
		Reason  string        `json:"reason"`
		Session *liveResource `json:"session"`
		Usage   live.Usage    `json:"usage"`
	}{liveHead{live.SessionClosed, l.c.newID("event"), clientEventID}, reason, &l.res, live.Usage{Seconds: l.seconds()}})
	if err != nil {
		return err
	}
	l.c.closeWith(wsframe.NormalClosure, reason)
	return nil
}

// liveFaults are the mock.fault values a GPT-Live session obeys.
const liveFaults = "close, rst, stall, error, expire, content"

// fault handles mock.fault (see the package doc).
func (l *liveSession) fault(ev *liveEvent) error {
	c := l.c
	c.log.Info("mock upstream: fault", "fault", ev.Fault, "dialect", "live")
	if done, err := c.commonFault(&ev.faultArgs, live.ErrTypeInvalidRequest, func(typ, code, msg string) error {
		return l.sendError("", &liveError{typ: typ, code: code, msg: msg})
	}); done {
		return err
	}
	switch ev.Fault {
	case "expire":
		return l.end(live.ReasonExpired, "")
	case "content":
		return l.end(live.ReasonContent, "")
	}
	return l.sendError(ev.EventID, invalidValue("fault",
		fmt.Sprintf("Invalid value: '%s'. Supported faults: %s.", ev.Fault, liveFaults)))
}
