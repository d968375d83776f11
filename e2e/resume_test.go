package e2e

// Calls that outlive their upstream (lifecycle.resume): the upstream ends
// the session under a call whose microphone keeps streaming, and the call
// goes on on a new upstream session without the client reconnecting.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// resumeRig is tether (resume.yaml) in front of an in-test mock behind a
// tap (primary) and, optionally, a second upstream.
type resumeRig struct {
	p   *proc
	m   *mock.Server
	tap *tap
}

func newResumeRig(t *testing.T, vars map[string]string) *resumeRig {
	t.Helper()
	r := &resumeRig{}
	var url string
	r.m, url = startMock(t, mock.Options{})
	r.tap, url = startTap(t, url)
	v := map[string]string{"UpstreamURL": url, "MaxResumes": "3"}
	maps.Copy(v, vars)
	r.p = startTether(t, "resume.yaml", v)
	return r
}

// seqMic is a Realtime call whose microphone streams 20 ms appends 50
// times a second, each numbered in its first four audio bytes.
type seqMic struct {
	*rtClient
	mu      sync.Mutex
	sent    []sentAppend
	stop    chan struct{}
	micDone chan struct{}
}

type sentAppend struct {
	seq uint32
	at  time.Time
}

func callWithMic(t *testing.T, addr string) *seqMic {
	t.Helper()
	c := &seqMic{rtClient: dialClient(t, addr, clientOpts{}), stop: make(chan struct{}), micDone: make(chan struct{})}
	c.WaitEvent(realtime.SessionCreated, stepTimeout)
	c.Send(map[string]any{"type": realtime.SessionUpdate, "session": map[string]any{
		"type": "realtime", "instructions": "Answer briefly.",
		"audio": map[string]any{"input": map[string]any{"transcription": map[string]any{"model": "gpt-4o-transcribe"}}},
	}})
	c.WaitEvent(realtime.SessionUpdated, stepTimeout)
	go c.mic()
	t.Cleanup(c.stopMic)
	return c
}

func (c *seqMic) mic() {
	defer close(c.micDone)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	audio := testAudio(20)
	for seq := uint32(1); ; seq++ {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		binary.BigEndian.PutUint32(audio, seq)
		b, _ := json.Marshal(map[string]string{"type": realtime.InputAudioAppend, "audio": base64.StdEncoding.EncodeToString(audio)})
		if c.WriteOpen(ws.NewFrame(ws.OpText, true, b)) != nil {
			return
		}
		c.mu.Lock()
		c.sent = append(c.sent, sentAppend{seq, time.Now()})
		c.mu.Unlock()
	}
}

func (c *seqMic) stopMic() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.micDone
}

// sentBetween lists the sequence numbers of the appends written in [from, to).
func (c *seqMic) sentBetween(from, to time.Time) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint32
	for _, s := range c.sent {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s.seq)
		}
	}
	return out
}

// answer asks for an answer to the audio streamed so far and reads to its
// response.done; it returns when the answer's first audio came and the
// response's status. A close or error event fails the test.
func (c *seqMic) answer(t *testing.T) (firstAudio time.Time, status string) {
	t.Helper()
	c.Send(map[string]any{"type": realtime.InputAudioCommit})
	c.Send(map[string]any{"type": realtime.ResponseCreate})
	return c.readAnswer(t)
}

// answeredOpen asks for an answer after a resume: it completes and the
// client's socket never closed.
func (c *seqMic) answeredOpen(t *testing.T) {
	t.Helper()
	if _, st := c.answer(t); st != "completed" {
		t.Fatalf("the turn after the resume: status %s", st)
	}
	if ci := c.CloseReceived(); ci != nil {
		t.Fatalf("the client's socket closed: %d %q", ci.Code, ci.Reason)
	}
}

func (c *seqMic) readAnswer(t *testing.T) (firstAudio time.Time, status string) {
	t.Helper()
	resp, ok := c.untilDone(t, func(ev map[string]any) {
		if ev["type"] == realtime.OutputAudioDelta && firstAudio.IsZero() {
			firstAudio = time.Now()
		}
	})
	if !ok {
		t.Fatalf("the call closed mid-answer: %s", c.CloseState())
	}
	s, _ := resp["status"].(string)
	return firstAudio, s
}

// upstreamEvents decodes the text messages tether sent on tap connection i.
func upstreamEvents(t *testing.T, tp *tap, i int) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range tp.conn(i).frames() {
		var ev map[string]any
		if f.Op == ws.OpText && json.Unmarshal(f.Payload, &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}

// itemText is a replayed conversation.item.create's role and text.
func itemText(ev map[string]any) (role, text string) {
	it, _ := ev["item"].(map[string]any)
	role, _ = it["role"].(string)
	parts, _ := it["content"].([]any)
	for _, p := range parts {
		pm, _ := p.(map[string]any)
		if s, ok := pm["text"].(string); ok {
			text += s
		}
	}
	return role, text
}

// The provider's 60-minute cap (mock.fault expire: session_expired, then
// close 1001) after two turns: the client's socket stays open, it never
// sees the expiry, it is told of the resume, and its third turn is
// answered by a new upstream session that got the client's settings and
// the four history items before any audio.
func TestResumeRealtimeExpired(t *testing.T) {
	t.Parallel()
	r := newResumeRig(t, nil)
	c := callWithMic(t, r.p.Listen)
	var said []string
	for range 2 {
		time.Sleep(200 * time.Millisecond) // the caller speaks
		if _, st := c.answer(t); st != "completed" {
			t.Fatalf("turn answered with status %s", st)
		}
	}
	for _, ev := range c.Events() {
		switch ev["type"] {
		case realtime.InputTranscriptionCompleted:
			said = append(said, "user:"+ev["transcript"].(string))
		case realtime.OutputTranscriptDone:
			said = append(said, "assistant:"+ev["transcript"].(string))
		}
	}
	if len(said) != 4 {
		t.Fatalf("transcripts before the expiry: %q, want 4", said)
	}
	convBefore := sessionConversation(t, r.p)
	before := len(c.Events())

	expired := time.Now()
	c.fault("expire", nil)
	resumed := c.WaitEvent("tether.session.resumed", stepTimeout)
	noticeAt := time.Now()
	if resumed["trigger"] != "expired" || resumed["resumes"] != float64(1) {
		t.Errorf("notice %v, want trigger expired, resumes 1", resumed)
	}
	time.Sleep(200 * time.Millisecond) // the caller speaks on
	asked := time.Now()
	first, st := c.answer(t)
	if st != "completed" {
		t.Fatalf("third turn answered with status %s", st)
	}
	t.Logf("gap: expiry to the resume notice %v; the third answer's first audio came %v after it was asked for",
		noticeAt.Sub(expired).Round(time.Millisecond), first.Sub(asked).Round(time.Millisecond))
	for _, ev := range c.Events()[before:] {
		if ev["type"] == realtime.Error || ev["type"] == realtime.SessionCreated {
			t.Errorf("the client saw %v across the resume", ev)
		}
	}
	if ci := c.CloseReceived(); ci != nil {
		t.Fatalf("the client's socket closed: %d %q", ci.Code, ci.Reason)
	}

	// The new upstream session (tap connection 1) was given the settings
	// and the history first, then the held and live audio.
	evs := upstreamEvents(t, r.tap, 1)
	if len(evs) < 6 {
		t.Fatalf("the new upstream session got %d messages", len(evs))
	}
	su, _ := evs[0]["session"].(map[string]any)
	if evs[0]["type"] != realtime.SessionUpdate || su["instructions"] != "Answer briefly." {
		t.Errorf("first message to the new session: %v, want the client's session.update", evs[0])
	}
	var replayed []string
	for _, ev := range evs[1:5] {
		if ev["type"] != realtime.ConversationItemCreate {
			t.Fatalf("message to the new session %v, want a conversation.item.create", ev)
		}
		role, text := itemText(ev)
		replayed = append(replayed, role+":"+text)
	}
	if strings.Join(replayed, "|") != strings.Join(said, "|") {
		t.Errorf("history replayed %q, want %q", replayed, said)
	}

	if conv := sessionConversation(t, r.p); conv == "" || conv == convBefore {
		t.Errorf("GET /sessions conversation %q after the resume (before: %q)", conv, convBefore)
	}
	rows, _ := r.p.sessions()
	if len(rows) != 1 || rows[0]["resumes"] != float64(1) {
		t.Errorf("GET /sessions: %v, want one session with resumes 1", rows)
	}
	r.p.wantMetric(t, 1, "tether_resumes_total", `trigger="expired"`, `result="ok"`)
	c.stopMic()
	c.Close()
	rec := waitLogRecord(t, r.p, "session ended")
	if rec["resumes"] != float64(1) || !strings.Contains(fmt.Sprint(rec["upstream_sessions"]), convBefore) {
		t.Errorf("session ended line: resumes %v, upstream_sessions %v", rec["resumes"], rec["upstream_sessions"])
	}
}

// sessionConversation is the only open session's upstream session id.
func sessionConversation(t *testing.T, p *proc) string {
	t.Helper()
	rows, _ := p.sessions()
	if len(rows) != 1 {
		t.Fatalf("GET /sessions: %d sessions, want 1", len(rows))
	}
	s, _ := rows[0]["conversation_id"].(string)
	return s
}

// waitLogRecord waits for a JSON log record whose msg is msg.
func waitLogRecord(t *testing.T, p *proc, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	testkit.WaitFor(t, stepTimeout, "log record "+msg, func() bool {
		for _, rec := range p.logRecords() {
			if rec["msg"] == msg {
				found = rec
				return true
			}
		}
		return false
	})
	return found
}

// backupUpstream is an independent scripted Realtime upstream: it opens a
// session after delay, acknowledges settings and items, records the
// appends' sequence numbers and answers each response.create with three
// audio deltas.
type backupUpstream struct {
	srv   *testkit.Server
	delay time.Duration
	mu    sync.Mutex
	got   []map[string]any // every client event, in order (appends without audio)
	seqs  []uint32
}

func startBackup(t *testing.T, delay time.Duration) *backupUpstream {
	b := &backupUpstream{delay: delay}
	b.srv = testkit.ServeWS(t, testkit.Options{Timeout: stepTimeout}, b.serve)
	return b
}

func (b *backupUpstream) serve(c *testkit.Conn) {
	time.Sleep(b.delay)
	c.Send(map[string]any{"type": realtime.SessionCreated, "event_id": "event_b0",
		"session": map[string]any{"id": "sess_backup", "type": "realtime", "model": "gpt-realtime"}})
	n := 0
	for {
		ev, ok := c.NextEvent(stepTimeout)
		if !ok {
			return
		}
		typ, _ := ev["type"].(string)
		if typ == realtime.InputAudioAppend {
			raw, _ := base64.StdEncoding.DecodeString(ev["audio"].(string))
			if len(raw) >= 4 {
				b.mu.Lock()
				b.seqs = append(b.seqs, binary.BigEndian.Uint32(raw))
				b.mu.Unlock()
			}
			delete(ev, "audio")
		}
		b.mu.Lock()
		b.got = append(b.got, ev)
		b.mu.Unlock()
		n++
		id := fmt.Sprintf("event_b%d", n)
		switch typ {
		case realtime.SessionUpdate:
			c.Send(map[string]any{"type": realtime.SessionUpdated, "event_id": id, "session": ev["session"]})
		case realtime.ConversationItemCreate:
			it, _ := ev["item"].(map[string]any)
			c.Send(map[string]any{"type": realtime.ItemAdded, "event_id": id + "a", "item": it})
			c.Send(map[string]any{"type": realtime.ItemDone, "event_id": id + "d", "item": it})
		case realtime.InputAudioCommit:
			c.Send(map[string]any{"type": realtime.InputAudioCommitted, "event_id": id, "item_id": "item_b" + id})
		case realtime.ResponseCreate:
			resp := "resp_b" + id
			c.Send(map[string]any{"type": realtime.ResponseCreated, "event_id": id, "response": map[string]any{"id": resp, "status": "in_progress"}})
			for i := range 3 {
				c.Send(map[string]any{"type": realtime.OutputAudioDelta, "event_id": fmt.Sprint(id, "_", i), "response_id": resp,
					"delta": base64.StdEncoding.EncodeToString(testAudio(50))})
			}
			c.Send(map[string]any{"type": realtime.ResponseDone, "event_id": id + "_done", "response": map[string]any{"id": resp, "status": "completed",
				"usage": map[string]any{"total_tokens": 10, "input_tokens": 4, "output_tokens": 6}}})
		}
	}
}

func (b *backupUpstream) events() ([]map[string]any, []uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]map[string]any(nil), b.got...), append([]uint32(nil), b.seqs...)
}

// The primary resets its socket in the middle of an answer: the client
// gets a terminal response.done for it, the call resumes on the backup (an
// independent upstream, since the primary just failed), and the audio the
// caller sent while the backup took 300 ms to open its session arrives
// there, in order.
func TestResumeAfterResetMidAnswer(t *testing.T) {
	t.Parallel()
	b := startBackup(t, 300*time.Millisecond)
	r := newResumeRig(t, map[string]string{"SecondURL": b.srv.URL("/v1/realtime")})
	c := callWithMic(t, r.p.Listen)
	time.Sleep(200 * time.Millisecond)
	if _, st := c.answer(t); st != "completed" {
		t.Fatalf("first turn: status %s", st)
	}

	c.fault("slow", map[string]any{"delta_interval_ms": 200})
	time.Sleep(200 * time.Millisecond)
	c.Send(map[string]any{"type": realtime.InputAudioCommit})
	c.Send(map[string]any{"type": realtime.ResponseCreate})
	created := c.WaitEvent(realtime.ResponseCreated, stepTimeout)
	c.WaitEvent(realtime.OutputAudioDelta, stepTimeout)
	cut := time.Now()
	c.fault("rst", nil)
	done := c.WaitEvent(realtime.ResponseDone, stepTimeout)
	resp, _ := done["response"].(map[string]any)
	want, _ := created["response"].(map[string]any)
	if resp["id"] != want["id"] || (resp["status"] != "failed" && resp["status"] != "incomplete") {
		t.Fatalf("after the reset the client got response.done %v, want a terminal one for %v", resp, want["id"])
	}
	notice := c.WaitEvent("tether.session.resumed", stepTimeout)
	noticeAt := time.Now()
	if notice["trigger"] != "upstream_error" || notice["upstream_session_id"] != "sess_backup" {
		t.Errorf("notice %v, want trigger upstream_error on sess_backup", notice)
	}
	first, st := c.answer(t)
	if st != "completed" {
		t.Fatalf("the turn after the resume: status %s", st)
	}
	t.Logf("gap: reset to the resume notice %v; to the next answer's first audio %v",
		noticeAt.Sub(cut).Round(time.Millisecond), first.Sub(cut).Round(time.Millisecond))
	if ci := c.CloseReceived(); ci != nil {
		t.Fatalf("the client's socket closed: %d %q", ci.Code, ci.Reason)
	}

	evs, seqs := b.events()
	if len(evs) == 0 || evs[0]["type"] != realtime.SessionUpdate {
		t.Fatalf("the backup's first message: %v, want the session.update", evs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("the backup got appends %v..., out of order or with a hole at %d", seqs[:i+1], i)
		}
	}
	// Every append written from 100 ms after the reset (tether knows of it
	// by then) until the notice was held and reached the backup.
	gap := c.sentBetween(cut.Add(100*time.Millisecond), noticeAt)
	if len(gap) < 5 {
		t.Fatalf("only %d appends sent during the gap", len(gap))
	}
	got := map[uint32]bool{}
	for _, s := range seqs {
		got[s] = true
	}
	for _, s := range gap {
		if !got[s] {
			t.Fatalf("append %d, sent during the gap, never reached the backup (it got %d..%d)", s, seqs[0], seqs[len(seqs)-1])
		}
	}
	t.Logf("held during the gap and delivered: %d appends", len(gap))
	r.p.wantMetric(t, 1, "tether_resumes_total", `upstream="backup"`, `trigger="upstream_error"`, `result="ok"`)
}

// With max_resumes 1, the second expiry ends the call as it would without
// resuming: the client sees the expiry, and session_expired being one of
// the fatal_upstream_errors, close 1014.
func TestResumeMaxResumes(t *testing.T) {
	t.Parallel()
	r := newResumeRig(t, map[string]string{"MaxResumes": "1"})
	c := callWithMic(t, r.p.Listen)
	c.fault("expire", nil)
	c.WaitEvent("tether.session.resumed", stepTimeout)
	c.fault("expire", nil)
	ev := c.WaitEvent(realtime.Error, stepTimeout)
	if errCode(ev) != realtime.CodeSessionExpired {
		t.Errorf("error %v, want session_expired", ev)
	}
	if ci := c.WaitClose(stepTimeout); ci.Code != 1014 {
		t.Errorf("close %d %q, want 1014", ci.Code, ci.Reason)
	}
	r.p.wantMetric(t, 1, "tether_resumes_total", `trigger="expired"`, `result="exhausted"`)
}

// No upstream can take the call over: the call ends as it would have
// without resuming. The primary resets its socket and refuses every later
// session, the backup is a dead address: 1014, the contract's code for a
// lost upstream. The mock shuts down (close 1001) with nothing to take
// over: its 1001 is relayed.
func TestResumeNoUpstream(t *testing.T) {
	t.Parallel()
	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		var conns atomic.Int32
		srv := testkit.ServeWS(t, testkit.Options{Timeout: stepTimeout}, func(c *testkit.Conn) {
			if conns.Add(1) > 1 {
				return // closes before session.created: a failed dial
			}
			c.Send(map[string]any{"type": realtime.SessionCreated, "event_id": "event_1",
				"session": map[string]any{"id": "sess_once", "type": "realtime", "model": "gpt-realtime"}})
			for {
				ev, ok := c.NextEvent(stepTimeout)
				if !ok {
					return
				}
				if ev["type"] == "mock.fault" {
					c.Vanish()
					return
				}
			}
		})
		p := startTether(t, "resume.yaml", map[string]string{"UpstreamURL": srv.URL("/v1/realtime"), "MaxResumes": "3"})
		c := dialClient(t, p.Listen, clientOpts{})
		c.WaitEvent(realtime.SessionCreated, stepTimeout)
		c.fault("rst", nil)
		if ci := c.WaitClose(stepTimeout); ci.Code != 1014 {
			t.Errorf("close %d %q, want 1014", ci.Code, ci.Reason)
		}
		p.wantMetric(t, 1, "tether_resumes_total", `trigger="upstream_error"`, `result="failed"`)
	})
	for _, tc := range []struct {
		name, reason string
		code         int
		fault        func(c *seqMic)
	}{
		{"upstream_heartbeat_timeout", "upstream_heartbeat_timeout", 4002, func(c *seqMic) { c.fault("stall", nil) }},
		{"fatal_event", "upstream_fatal_event", 1014, func(c *seqMic) {
			c.fault("error", map[string]any{"code": realtime.CodeBetaAPIShapeDisabled})
		}},
	} {
		// The primary refuses every later session (the mock is closed once
		// the call is up, without closing the call's own socket: a tap
		// holds it), the backup is dead: the call ends with its reason.
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newResumeRig(t, map[string]string{"UpstreamHBInterval": "300ms", "UpstreamHBTimeout": "200ms"})
			c := callWithMic(t, r.p.Listen)
			r.tap.refuse()
			tc.fault(c)
			if ci := c.WaitClose(stepTimeout); ci.Code != tc.code {
				t.Errorf("close %d %q, want %d", ci.Code, ci.Reason, tc.code)
			}
			testkit.WaitFor(t, stepTimeout, "the session counted", func() bool {
				n, _ := r.p.metric("tether_sessions_total", `reason="`+tc.reason+`"`)
				return n == 1
			})
			r.p.wantMetric(t, 1, "tether_resumes_total", `trigger="`+tc.name+`"`, `result="failed"`)
		})
	}
	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		r := newResumeRig(t, nil)
		c := callWithMic(t, r.p.Listen)
		_ = r.m.Close()
		if ci := c.WaitClose(stepTimeout); ci.Code != 1001 {
			t.Errorf("close %d %q, want the upstream's 1001", ci.Code, ci.Reason)
		}
		r.p.wantMetric(t, 1, "tether_resumes_total", `trigger="upstream_error"`, `result="failed"`)
	})
}

// The upstream stops answering (mock.fault stall): its heartbeat times out
// and the call resumes on the backup instead of closing with 4002; an
// error event whose code is fatal resumes the call too, and the client
// never sees the error.
func TestResumeOnHeartbeatTimeoutAndFatalEvent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, trigger string
		fault         func(c *seqMic)
	}{
		{"heartbeat", "upstream_heartbeat_timeout", func(c *seqMic) { c.fault("stall", nil) }},
		{"fatal_event", "fatal_event", func(c *seqMic) {
			c.fault("error", map[string]any{"code": realtime.CodeBetaAPIShapeDisabled, "error_type": "invalid_request_error"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBackup(t, 0)
			r := newResumeRig(t, map[string]string{"SecondURL": b.srv.URL("/v1/realtime"),
				"UpstreamHBInterval": "300ms", "UpstreamHBTimeout": "200ms"})
			c := callWithMic(t, r.p.Listen)
			before := len(c.Events())
			start := time.Now()
			tc.fault(c)
			notice := c.WaitEvent("tether.session.resumed", stepTimeout)
			if notice["trigger"] != tc.trigger || notice["upstream_session_id"] != "sess_backup" {
				t.Errorf("notice %v, want trigger %s on the backup", notice, tc.trigger)
			}
			t.Logf("%s: resumed %v after the fault", tc.name, time.Since(start).Round(time.Millisecond))
			for _, ev := range c.Events()[before:] {
				if ev["type"] == realtime.Error {
					t.Errorf("the client saw %v", ev)
				}
			}
			time.Sleep(200 * time.Millisecond)
			c.answeredOpen(t)
		})
	}
}

// GPT-Live: session.closed reason expired is kept from the client, and the
// call resumes on a new session whose session.start carries the
// transcripts as input; output audio keeps flowing.
func TestResumeLiveExpired(t *testing.T) {
	t.Parallel()
	r := newResumeRig(t, nil)
	c := dialLive(t, r.p.Listen, clientOpts{})
	c.streaming(t)
	c.speak(600 * time.Millisecond)
	testkit.WaitFor(t, stepTimeout, "transcripts both ways", func() bool {
		in, out := false, false
		for _, ev := range c.Events() {
			in = in || ev["type"] == live.InputTranscriptDelta
			out = out || ev["type"] == live.OutputTranscriptDelta
		}
		return in && out
	})
	before := len(c.Events())
	expired := time.Now()
	c.fault("expire", nil)
	if n := c.WaitEvent("tether.session.resumed", stepTimeout); n["trigger"] != "expired" {
		t.Errorf("notice %v, want trigger expired", n)
	}
	var firstAfter time.Time
	testkit.WaitFor(t, stepTimeout, "output audio after the resume", func() bool {
		evs := c.Events()
		for i := len(evs) - 1; i >= before; i-- {
			if evs[i]["type"] == "tether.session.resumed" {
				for _, ev := range evs[i:] {
					if ev["type"] == live.OutputAudioDelta {
						firstAfter = time.Now()
						return true
					}
				}
				return false
			}
		}
		return false
	})
	t.Logf("gap: expiry to the first output audio after the resume, at most %v", firstAfter.Sub(expired).Round(time.Millisecond))
	for _, ev := range c.Events()[before:] {
		if ev["type"] == live.SessionClosed || ev["type"] == live.SessionStarted {
			t.Errorf("the client saw %v across the resume", ev["type"])
		}
	}
	if ci := c.CloseReceived(); ci != nil {
		t.Fatalf("the client's socket closed: %d %q", ci.Code, ci.Reason)
	}
	evs := upstreamEvents(t, r.tap, 1)
	if len(evs) == 0 || evs[0]["type"] != live.SessionStart {
		t.Fatalf("the new upstream session's first message: %v, want session.start", evs)
	}
	sess, _ := evs[0]["session"].(map[string]any)
	input, _ := sess["input"].([]any)
	roles := map[string]bool{}
	for _, m := range input {
		mm, _ := m.(map[string]any)
		role, _ := mm["role"].(string)
		roles[role] = true
	}
	if !roles["user"] || !roles["assistant"] || sess["instructions"] != "Echo the caller." {
		t.Errorf("the new session.start: instructions %v, input %v; want the client's instructions and both sides' transcripts", sess["instructions"], input)
	}
	r.p.wantMetric(t, 1, "tether_resumes_total", `upstream="primary"`, `trigger="expired"`, `result="ok"`)
}

// GPT-Live: the service ends the call on purpose (session.closed reason
// content) and then drops its socket: the drop is part of that ending,
// not a failure to resume from.
func TestResumeLiveEndedOnPurposeThenReset(t *testing.T) {
	t.Parallel()
	srv := testkit.ServeWS(t, testkit.Options{KeepFrames: true, Timeout: stepTimeout}, func(c *testkit.Conn) {
		if !upAwaitStart(c) {
			return
		}
		c.SendText(lfStarted)
		time.Sleep(300 * time.Millisecond)
		c.SendText(`{"type":"session.closed","reason":"content","usage":{"seconds":1}}`)
		c.Vanish()
	})
	p := startTether(t, "resume.yaml", map[string]string{"UpstreamURL": srv.URL("/v1/realtime"), "MaxResumes": "3"})
	c := dialLive(t, p.Listen, clientOpts{})
	if ev := c.WaitEvent(live.SessionClosed, stepTimeout); ev["reason"] != "content" {
		t.Errorf("session.closed %v, want reason content", ev)
	}
	ci := c.WaitClose(stepTimeout)
	t.Logf("closed %d %q", ci.Code, ci.Reason)
	if srv.Accepted() != 1 {
		t.Errorf("tether dialed %d upstream sessions, want 1 (no resume)", srv.Accepted())
	}
	testkit.WaitFor(t, stepTimeout, "the session counted as upstream_closed", func() bool {
		n, _ := p.metric("tether_sessions_total", `reason="upstream_closed"`)
		return n == 1
	})
}

// GPT-Live: session.closed reason content is the service ending the call
// on purpose: it is relayed and the call ends, no resume.
func TestResumeLiveContentNotResumed(t *testing.T) {
	t.Parallel()
	r := newResumeRig(t, nil)
	c := dialLive(t, r.p.Listen, clientOpts{})
	c.streaming(t)
	c.fault("content", nil)
	ev := c.WaitEvent(live.SessionClosed, stepTimeout)
	if ev["reason"] != "content" {
		t.Errorf("session.closed %v, want reason content", ev)
	}
	c.WaitClose(stepTimeout)
	if r.tap.count() != 1 {
		t.Errorf("tether dialed %d upstream sessions, want 1 (no resume)", r.tap.count())
	}
}
