package mock

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/realtime"
)

// response is one response, streamed by its own goroutine.
type response struct {
	id, itemID   string
	prevItemID   string
	convID       string
	audio        []byte // what the deltas carry; owned by the response (or a shared tone, read-only)
	audioFormat  audioFormat
	inputMs      int // committed user audio answered
	outAudio     map[string]any
	textTokens   int
	cachedTokens int
	metadata     json.RawMessage
	words        []string // transcript, one delta each
	rateLimits   []dialect.RateLimit

	cancel    chan struct{} // closed by cancelResponse
	cancelled bool          // guarded by conn.mu
	reason    string        // guarded by conn.mu
	exited    chan struct{} // closed when the streamer returns
}

type statusDetails struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

type responseObj struct {
	Object           string          `json:"object"`
	ID               string          `json:"id"`
	Status           string          `json:"status"`
	StatusDetails    *statusDetails  `json:"status_details"`
	Output           []item          `json:"output"`
	ConversationID   string          `json:"conversation_id"`
	OutputModalities []string        `json:"output_modalities"`
	MaxOutputTokens  string          `json:"max_output_tokens"`
	Audio            map[string]any  `json:"audio"`
	Usage            *realtime.Usage `json:"usage"`
	Metadata         json.RawMessage `json:"metadata"`
}

const (
	rateLimitRequests = 5000
	rateLimitTokens   = 400000
)

// responseCreate handles response.create.
func (c *conn) responseCreate(ev *clientEvent) error {
	var p struct {
		Instructions *string         `json:"instructions"`
		Metadata     json.RawMessage `json:"metadata"`
	}
	if len(ev.Response) > 0 && string(ev.Response) != "null" {
		if err := json.Unmarshal(ev.Response, &p); err != nil {
			return c.sendError(ev.EventID, "invalid_request_error", "invalid_value", "Invalid 'response': expected an object.", "response")
		}
	}
	instructions := c.cfg.instructions
	if p.Instructions != nil {
		instructions = *p.Instructions
	}
	return c.startResponse(ev.EventID, instructions, p.Metadata, false)
}

// startResponse starts streaming a response unless one is active (then it
// answers conversation_already_has_active_response, or nothing when auto,
// as after server VAD).
func (c *conn) startResponse(clientEventID, instructions string, metadata json.RawMessage, auto bool) error {
	c.mu.Lock()
	if active := c.resp; active != nil {
		c.mu.Unlock()
		if auto {
			return nil
		}
		return c.sendError(clientEventID, "invalid_request_error", "conversation_already_has_active_response",
			fmt.Sprintf("Conversation already has an active response in progress: %s. Wait until the response is finished before creating a new one.", active.id), "")
	}
	r := &response{
		id:         c.newID("resp"),
		itemID:     c.newID("item"),
		prevItemID: c.lastItem,
		convID:     c.convID,
		outAudio: map[string]any{"output": map[string]any{
			"format": path(c.session, "audio", "output", "format"),
			"voice":  c.cfg.voice,
		}},
		textTokens: 10 + len(instructions)/4,
		metadata:   metadata,
		cancel:     make(chan struct{}),
		exited:     make(chan struct{}),
	}
	if c.responses > 0 {
		r.cachedTokens = r.textTokens
	}
	var transcript string
	if len(c.pending) > 0 {
		r.audio, r.audioFormat, r.inputMs = c.pending, c.cfg.inFormat, c.pendingMs
		c.pending, c.pendingMs = nil, 0
		transcript = fmt.Sprintf("You said %d milliseconds of audio, and here it is back.", r.inputMs)
	} else {
		r.audio, r.audioFormat = tones()[c.cfg.outFormat], c.cfg.outFormat
		transcript = "Hello from the mock upstream. Here is a short tone."
	}
	r.words = strings.Fields(transcript)
	for i := 1; i < len(r.words); i++ {
		r.words[i] = " " + r.words[i]
	}
	r.rateLimits = []dialect.RateLimit{
		{Name: "requests", Limit: rateLimitRequests, Remaining: max(rateLimitRequests-int64(c.responses)-1, 0), ResetSeconds: 0.01},
		{Name: "tokens", Limit: rateLimitTokens, Remaining: max(rateLimitTokens-c.tokensUsed.Load(), 0), ResetSeconds: 0.18},
	}
	c.responses++
	c.lastItem = r.itemID
	c.resp = r
	c.mu.Unlock()

	// The previous streamer has already given up c.resp; let it finish its
	// last writes so at most one streamer runs and events stay in order.
	if prev := c.lastExited; prev != nil {
		<-prev
	}
	c.lastExited = r.exited
	go c.stream(r)
	return nil
}

// responseCancel handles response.cancel.
func (c *conn) responseCancel(ev *clientEvent) error {
	if c.cancelResponse("client_cancelled", ev.ResponseID) {
		return nil
	}
	return c.sendError(ev.EventID, "invalid_request_error", "response_cancel_not_active",
		"Cancellation failed: no active response found", "")
}

// cancelResponse asks the active response (the one with id, if given) to
// stop; its streamer then sends response.done cancelled.
func (c *conn) cancelResponse(reason, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.resp
	if r == nil || r.cancelled || (id != "" && id != r.id) {
		return false
	}
	r.cancelled, r.reason = true, reason
	close(r.cancel)
	return true
}

// stream sends the events of r. It stops early on cancel (still finishing
// with response.done), and at once when the session ends or a write fails.
func (c *conn) stream(r *response) {
	defer close(r.exited)
	defer func() {
		c.mu.Lock()
		if c.resp == r {
			c.resp = nil
		}
		c.mu.Unlock()
	}()
	st := c.newStreamer(r)
	defer st.stopTimer()
	if st.begin() != nil {
		return
	}
	sent, words, ok := st.deltas()
	if !ok {
		return
	}
	st.finish(sent, words)
}

// streamer writes one response's events, reusing one buffer for all.
type streamer struct {
	c     *conn
	r     *response
	buf   []byte
	timer *time.Timer // paces deltas; nil until the first pause
	resp  responseObj
	it    item
	ids   partIDs
}

func (c *conn) newStreamer(r *response) *streamer {
	return &streamer{c: c, r: r,
		buf: make([]byte, headroom, headroom+base64.StdEncoding.EncodedLen(c.srv.opts.DeltaBytes)+512),
		resp: responseObj{
			Object: "realtime.response", ID: r.id, Status: "in_progress", Output: []item{},
			ConversationID: r.convID, OutputModalities: []string{"audio"}, MaxOutputTokens: "inf",
			Audio: r.outAudio, Metadata: r.metadata,
		},
		it:  item{ID: r.itemID, Object: "realtime.item", Type: "message", Status: "in_progress", Role: "assistant", Content: []content{}},
		ids: partIDs{ResponseID: r.id, ItemID: r.itemID},
	}
}

func (st *streamer) stopTimer() {
	if st.timer != nil {
		st.timer.Stop()
	}
}

// emit sends ev as JSON.
func (st *streamer) emit(ev any) error { return st.c.sendJSON(&st.buf, ev) }

// outputItemEvent is response.output_item.added / .done.
type outputItemEvent struct {
	head
	ResponseID  string `json:"response_id"`
	OutputIndex int    `json:"output_index"`
	Item        item   `json:"item"`
}

// responseEvent is response.created / response.done.
type responseEvent struct {
	head
	Response responseObj `json:"response"`
}

// begin sends the events that open a response, up to its first content part.
func (st *streamer) begin() error {
	c, r := st.c, st.r
	empty := ""
	for _, ev := range []any{
		responseEvent{c.head(realtime.ResponseCreated), st.resp},
		struct {
			head
			RateLimits []dialect.RateLimit `json:"rate_limits"`
		}{c.head(realtime.RateLimitsUpdated), r.rateLimits},
		outputItemEvent{c.head(realtime.OutputItemAdded), r.id, 0, st.it},
		itemEvent{c.head(realtime.ItemAdded), nullable(r.prevItemID), st.it},
		partEvent{c.head(realtime.ContentPartAdded), st.ids, content{Type: "output_audio", Transcript: &empty}},
	} {
		if err := st.emit(ev); err != nil {
			return err
		}
	}
	return nil
}

// pause waits out the pace between deltas; it reports false when the
// connection is quitting, and cancelled when the response was cancelled.
func (st *streamer) pause(first bool) (cancelled, ok bool) {
	c, r := st.c, st.r
	if d := time.Duration(c.pace.Load()); d > 0 && !first {
		if st.timer == nil {
			st.timer = time.NewTimer(d)
		} else {
			st.timer.Reset(d)
		}
		select {
		case <-st.timer.C:
		case <-r.cancel:
			return true, true
		case <-c.quit:
			return false, false
		}
	}
	select {
	case <-r.cancel:
		return true, true
	case <-c.quit:
		return false, false
	default:
		return false, true
	}
}

// deltas sends the audio in DeltaBytes chunks with the transcript words
// spread among them, until the end or a cancel. It returns the audio bytes
// and words sent; ok is false when the connection went away.
func (st *streamer) deltas() (sent, words int, ok bool) {
	c, r := st.c, st.r
	deltaBytes := c.srv.opts.DeltaBytes
	deltaHead := `","response_id":"` + r.id + `","item_id":"` + r.itemID + `","output_index":0,"content_index":0,"delta":`
	n := (len(r.audio) + deltaBytes - 1) / deltaBytes
	for i := 0; i < n; i++ {
		cancelled, alive := st.pause(i == 0)
		if !alive {
			return sent, words, false
		}
		if cancelled {
			break
		}
		end := min(sent+deltaBytes, len(r.audio))
		buf := append(st.buf[:headroom], `{"type":"`+realtime.OutputAudioDelta+`","event_id":"`...)
		buf = c.appendID(buf, "event")
		buf = append(buf, deltaHead...)
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, r.audio[sent:end])
		st.buf = append(buf, `"}`...)
		if c.send(ws.OpText, st.buf) != nil {
			return sent, words, false
		}
		sent = end
		for due := (i + 1) * len(r.words) / n; words < due; words++ {
			buf := append(st.buf[:headroom], `{"type":"`+realtime.OutputTranscriptDelta+`","event_id":"`...)
			buf = c.appendID(buf, "event")
			buf = append(buf, deltaHead...)
			buf = appendJSONString(buf, r.words[words])
			st.buf = append(buf, '}')
			if c.send(ws.OpText, st.buf) != nil {
				return sent, words, false
			}
		}
	}
	return sent, words, true
}

// finish sends the events that close the response: the rest of the
// transcript (unless cancelled), the done events and response.done with usage.
func (st *streamer) finish(sent, words int) {
	c, r := st.c, st.r
	// From here the response is no longer active.
	c.mu.Lock()
	cancelled, reason := r.cancelled, r.reason
	if c.resp == r {
		c.resp = nil
	}
	c.mu.Unlock()
	if !cancelled {
		for ; words < len(r.words); words++ {
			if st.emit(struct {
				head
				partIDs
				Delta string `json:"delta"`
			}{c.head(realtime.OutputTranscriptDelta), st.ids, r.words[words]}) != nil {
				return
			}
		}
	}
	transcript := strings.Join(r.words[:words], "")
	part := content{Type: "output_audio", Transcript: &transcript}
	st.it.Status, st.it.Content = "completed", []content{part}
	st.resp.Status, st.resp.Output = "completed", []item{st.it}
	if cancelled {
		st.it.Status = "incomplete"
		st.resp.Status, st.resp.StatusDetails, st.resp.Output = "cancelled", &statusDetails{"cancelled", reason}, []item{st.it}
	}
	for _, ev := range []any{
		struct {
			head
			partIDs
		}{c.head(realtime.OutputAudioDone), st.ids},
		struct {
			head
			partIDs
			Transcript string `json:"transcript"`
		}{c.head(realtime.OutputTranscriptDone), st.ids, transcript},
		partEvent{c.head(realtime.ContentPartDone), st.ids, part},
		outputItemEvent{c.head(realtime.OutputItemDone), r.id, 0, st.it},
		itemEvent{c.head(realtime.ItemDone), nullable(r.prevItemID), st.it},
	} {
		if st.emit(ev) != nil {
			return
		}
	}
	u := r.usage(sent, words)
	st.resp.Usage = &u
	c.tokensUsed.Add(u.TotalTokens)
	_ = st.emit(responseEvent{c.head(realtime.ResponseDone), st.resp})
}

// usage derives token counts from audio lengths (see the package doc).
func (r *response) usage(sentBytes, words int) realtime.Usage {
	ceilDiv := func(a, b int) int64 { return int64((a + b - 1) / b) }
	in := realtime.InputTokenDetails{
		TextTokens:   int64(r.textTokens),
		AudioTokens:  ceilDiv(r.inputMs, 100),
		CachedTokens: int64(r.cachedTokens),
	}
	in.CachedTokensDetails.TextTokens = int64(r.cachedTokens)
	out := realtime.OutputTokenDetails{TextTokens: int64(words), AudioTokens: ceilDiv(r.audioFormat.millis(sentBytes), 50)}
	u := realtime.Usage{
		InputTokens:        in.TextTokens + in.AudioTokens,
		OutputTokens:       out.TextTokens + out.AudioTokens,
		InputTokenDetails:  in,
		OutputTokenDetails: out,
	}
	u.TotalTokens = u.InputTokens + u.OutputTokens
	return u
}

// partIDs locate a content part.
type partIDs struct {
	ResponseID   string `json:"response_id"`
	ItemID       string `json:"item_id"`
	OutputIndex  int    `json:"output_index"`
	ContentIndex int    `json:"content_index"`
}

type partEvent struct {
	head
	partIDs
	Part content `json:"part"`
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '"' || ch == '\\':
			b = append(b, '\\', ch)
		case ch < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xf])
		default:
			b = append(b, ch)
		}
	}
	return append(b, '"')
}
