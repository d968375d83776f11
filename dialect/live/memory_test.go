package live

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/dialecttest"
	"github.com/tetherproxy/tether/internal/testkit"
)

// delta is a transcript fragment event: in (the caller's) or out (the model's).
func delta(in bool, startMS int64, text string) string {
	typ := OutputTranscriptDelta
	if in {
		typ = InputTranscriptDelta
	}
	b, _ := json.Marshal(TranscriptDelta{Type: typ, EventID: "event_x", Delta: text, StartMS: startMS, EndMS: startMS + 200})
	return string(b)
}

// feed hands m upstream events, as the session does: only if captured.
func feed(t testing.TB, m dialect.Memory, events ...string) {
	t.Helper()
	for _, ev := range events {
		if !json.Valid([]byte(ev)) {
			t.Fatalf("test event %s is not JSON", ev)
		}
		dialecttest.Upstream(m, []byte(ev))
	}
}

const startMsg = `{"type":"session.start","event_id":"evt_start_001","session":{"model":"gpt-live-1","instructions":"Help the caller.",` +
	`"audio":{"format":{"type":"audio/pcm","rate":24000},"output":{"voice":"marin"}},"delegation":{"type":"client"}}}`

// inputOf is session.input of a replayed start.
func inputOf(t testing.TB, start []byte) []json.RawMessage {
	t.Helper()
	var ev struct {
		Session struct {
			Input []json.RawMessage `json:"input"`
		} `json:"session"`
	}
	if err := json.Unmarshal(start, &ev); err != nil {
		t.Fatalf("replayed start %s: %v", start, err)
	}
	return ev.Session.Input
}

func user(text string) string {
	return `{"type":"message","role":"user","content":[{"type":"input_text","text":` + quote(text) + `}]}`
}

func assistant(text string) string {
	return `{"type":"message","role":"assistant","content":[{"type":"output_text","text":` + quote(text) + `}]}`
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestTranscriptMessages(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	m.Client([]byte(SessionStart), []byte(startMsg))
	// The recorded session (Travizm/dsh-openai-live live-session.jsonl): fragments
	// carry their leading space; an utterance after a pause starts without one.
	feed(t, m,
		`{"type":"session.started","event_id":"e","session":{"id":"live_1","model":"gpt-live-1","status":"active","input":[]}}`,
		`{"type":"session.output_audio.delta","delta":"AAAA"}`,
		delta(true, 600, "Please"), delta(true, 800, " check"), delta(true, 1000, " the"),
		delta(true, 1600, " deployment"), delta(true, 2000, " status."),
		delta(false, 4800, "Okay,"), delta(false, 5200, " checking"), delta(false, 5600, " now."),
		delta(false, 6800, "Staging"), delta(false, 7000, " is"), delta(false, 7200, " healthy."),
		delta(true, 8000, "Thanks"), delta(true, 8200, "giving"), // contiguous: one word cut in two
		delta(true, 8400, ""),
	)
	want := []string{user("Please check the deployment status."), assistant("Okay, checking now. Staging is healthy."), user("Thanksgiving")}
	r := m.Replay()
	if got := strs(inputOf(t, r.Start)); !reflect.DeepEqual(got, want) {
		t.Errorf("input\n got %q\nwant %q", got, want)
	}
	if r.Messages != nil || r.Acks != nil {
		t.Errorf("GPT-Live replays only its start: %+v", r)
	}
	checkSize(t, m, 3)
	// A new session's words make a message of their own.
	feed(t, m, `{"type":"session.started","session":{"id":"live_2"}}`, delta(true, 0, " again"))
	if got := strs(inputOf(t, m.Replay().Start)); len(got) != 4 || got[3] != user(" again") {
		t.Errorf("after session.started: %q", got)
	}
}

func strs(in []json.RawMessage) []string {
	out := make([]string, len(in))
	for i, b := range in {
		out[i] = string(b)
	}
	return out
}

// checkSize checks Size against the history's encoding.
func checkSize(t testing.TB, m *Memory, wantItems int) {
	t.Helper()
	n, b := m.Size()
	want := 0
	for _, h := range m.history {
		want += len(encodeMessage(h.role, h.text))
	}
	if n != wantItems || b != want {
		t.Errorf("Size = %d, %d, want %d, %d", n, b, wantItems, want)
	}
}

func TestReplayStart(t *testing.T) {
	orig := `[{"type":"message","role":"developer","content":[{"type":"input_text","text":"Caller is Ann."}]},` +
		`{"role":"assistant","content":[{"type":"text","text":"Hi Ann."}]}]`
	cases := []struct {
		name, start string
		deltas      []string
		want        string
	}{
		{"no input: the transcript is added last, event_id removed", startMsg, []string{delta(true, 0, "Hello")},
			`{"type":"session.start","session":{"model":"gpt-live-1","instructions":"Help the caller.",` +
				`"audio":{"format":{"type":"audio/pcm","rate":24000},"output":{"voice":"marin"}},"delegation":{"type":"client"},` +
				`"input":[` + user("Hello") + `]}}`},
		{"the original input first, as sent",
			`{"event_id":"e1","session":{"model":"gpt-live-1","input":` + orig + `,"store":true},"type":"session.start"}`,
			[]string{delta(true, 0, "Book"), delta(false, 400, "Sure.")},
			`{"session":{"model":"gpt-live-1","input":[` + orig[1:len(orig)-1] + `,` + user("Book") + `,` + assistant("Sure.") + `],"store":true},"type":"session.start"}`},
		{"nothing said: the start as it was, without event_id", startMsg, nil,
			`{"type":"session.start","session":{"model":"gpt-live-1","instructions":"Help the caller.",` +
				`"audio":{"format":{"type":"audio/pcm","rate":24000},"output":{"voice":"marin"}},"delegation":{"type":"client"}}}`},
		{"a session that is not an object is left to the service", `{"type":"session.start","session":"x"}`, []string{delta(true, 0, "Hi")},
			`{"type":"session.start","session":"x"}`},
		{"whitespace and key order kept, compacted", "{ \"type\" : \"session.start\",\n \"session\" : { \"input\" : [ ], \"model\" : \"gpt-live-1\" } }",
			[]string{delta(false, 0, "Yes")}, `{"type":"session.start","session":{"input":[` + assistant("Yes") + `],"model":"gpt-live-1"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(dialect.HistoryBounds{})
			if m.CaptureClient([]byte(SessionStart)) {
				t.Error("session.start reaches Client from the handler, not by capture")
			}
			m.Client([]byte(SessionStart), []byte(tc.start))
			feed(t, m, tc.deltas...)
			r := m.Replay()
			if string(r.Start) != tc.want {
				t.Errorf("Start\n got %s\nwant %s", r.Start, tc.want)
			}
			if string(m.Replay().Start) != tc.want {
				t.Error("a second Replay differs")
			}
		})
	}
	m := NewMemory(dialect.HistoryBounds{})
	feed(t, m, delta(true, 0, "Hi"))
	if r := m.Replay(); r.Start != nil || r.Messages != nil {
		t.Errorf("no session.start seen: %+v", r)
	}
	m.Client([]byte(SessionStart), []byte(`not json`))
	m.Client([]byte(SessionStart), []byte(startMsg))
	m.Client([]byte(SessionStart), []byte(`{"type":"session.start","session":{"model":"gpt-live-2"}}`))
	m.Client([]byte(InstructionsAppend), []byte(`{"type":"session.instructions.append","content":"x","delegation_id":null}`))
	if r := m.Replay(); !strings.Contains(string(r.Start), `"gpt-live-1"`) {
		t.Errorf("the first valid start counts (later ones would be tether's own): %s", r.Start)
	}
}

func TestInputCaps(t *testing.T) {
	origMsgs := make([]string, 10)
	for i := range origMsgs {
		origMsgs[i] = fmt.Sprintf(`{"type":"message","role":"user","content":[{"type":"input_text","text":"original %d"}]}`, i)
	}
	start := `{"type":"session.start","session":{"model":"gpt-live-1","input":[` + strings.Join(origMsgs, ",") + `]}}`
	t.Run("128 messages: the oldest transcript goes first", func(t *testing.T) {
		m := NewMemory(dialect.HistoryBounds{})
		m.Client([]byte(SessionStart), []byte(start))
		for i := range 300 {
			feed(t, m, delta(i%2 == 0, int64(i)*200, fmt.Sprintf("t%d", i)))
		}
		if n, _ := m.Size(); n != MaxInputMessages {
			t.Errorf("history %d messages, want %d", n, MaxInputMessages)
		}
		in := strs(inputOf(t, m.Replay().Start))
		if len(in) != MaxInputMessages || !reflect.DeepEqual(in[:10], origMsgs) || in[10] != user("t182") || in[127] != assistant("t299") {
			t.Errorf("input of %d: %.3q ... %q", len(in), in[:11], in[len(in)-1])
		}
	})
	t.Run("8,192 tokens (estimated): transcript first, then the original", func(t *testing.T) {
		m := NewMemory(dialect.HistoryBounds{})
		m.Client([]byte(SessionStart), []byte(start))
		word := strings.Repeat("x", 1000) // 504 tokens a message by the estimate
		for i := range 40 {
			feed(t, m, delta(i%2 == 0, int64(i)*200, word))
		}
		in := inputOf(t, m.Replay().Start)
		tokens := 0
		for _, raw := range in {
			tokens += estimateTokens(textBytes(raw))
		}
		if tokens > MaxInputTokens || tokens < MaxInputTokens-600 || len(in) != 10+16 {
			t.Errorf("input of %d messages, %d tokens; want 26 (the 10 originals, 16 of 504 tokens) under %d", len(in), tokens, MaxInputTokens)
		}
		if m.tokens > MaxInputTokens {
			t.Errorf("the history holds %d tokens", m.tokens)
		}
		bigOrig := `{"type":"session.start","session":{"model":"gpt-live-1","input":[` +
			user(strings.Repeat("a", 10000)) + `,` + user(strings.Repeat("b", 10000)) + `]}}`
		m = NewMemory(dialect.HistoryBounds{})
		m.Client([]byte(SessionStart), []byte(bigOrig))
		feed(t, m, delta(true, 0, "hi"))
		if in := strs(inputOf(t, m.Replay().Start)); len(in) != 1 || in[0] != user(strings.Repeat("b", 10000)) {
			t.Errorf("over the cap with no transcript left, the oldest original goes: %d messages", len(in))
		}
	})
}

func TestHistoryBounds(t *testing.T) {
	msg := func(text string) int { return len(encodeMessage(RoleUser, []byte(text))) }
	t.Run("items", func(t *testing.T) {
		m := NewMemory(dialect.HistoryBounds{Items: 3})
		m.Client([]byte(SessionStart), []byte(startMsg))
		for i := range 6 {
			feed(t, m, delta(i%2 == 0, int64(i)*200, fmt.Sprintf("m%d", i)))
		}
		want := []string{assistant("m3"), user("m4"), assistant("m5")}
		if got := strs(inputOf(t, m.Replay().Start)); !reflect.DeepEqual(got, want) {
			t.Errorf("input %q, want %q", got, want)
		}
		checkSize(t, m, 3)
	})
	t.Run("bytes", func(t *testing.T) {
		limit := msg("m4") + len(encodeMessage(RoleAssistant, []byte("m5")))
		m := NewMemory(dialect.HistoryBounds{Bytes: limit})
		m.Client([]byte(SessionStart), []byte(startMsg))
		for i := range 6 {
			feed(t, m, delta(i%2 == 0, int64(i)*200, fmt.Sprintf("m%d", i)))
			if _, b := m.Size(); b > limit {
				t.Fatalf("Size bytes %d past %d", b, limit)
			}
		}
		if got, want := strs(inputOf(t, m.Replay().Start)), []string{user("m4"), assistant("m5")}; !reflect.DeepEqual(got, want) {
			t.Errorf("input %q, want %q", got, want)
		}
		checkSize(t, m, 2)
	})
	t.Run("a growing message keeps its latest words", func(t *testing.T) {
		limit := msg(strings.Repeat("w", 100))
		m := NewMemory(dialect.HistoryBounds{Bytes: limit})
		feed(t, m, delta(false, 0, "before"))
		for i := range 60 {
			feed(t, m, delta(true, 200+int64(i)*200, fmt.Sprintf(" w%02d \"q\"", i))) // escaped quotes count
		}
		checkSize(t, m, 1)
		text := string(m.history[0].text)
		if _, b := m.Size(); b > limit || !strings.HasSuffix(text, `w59 "q"`) || !strings.HasPrefix(text, "w") {
			t.Errorf("kept %d bytes %q (limit %d): want the tail, from a word", b, text, limit)
		}
		feed(t, m, delta(false, 99999, strings.Repeat("z", 2*limit)))
		checkSize(t, m, 1)
		if m.history[0].role != RoleAssistant {
			t.Error("a message bigger than the bound alone keeps its tail, the older ones go")
		}
	})
	t.Run("a message over the token cap alone", func(t *testing.T) {
		m := NewMemory(dialect.HistoryBounds{})
		for i := range 400 {
			feed(t, m, delta(true, int64(i)*200, " "+strings.Repeat("é", 30))) // 61 bytes a fragment
		}
		h := m.history[0]
		if len(m.history) != 1 || h.tokens > MaxInputTokens || h.tokens < MaxInputTokens-40 || !utf8Valid(h.text) {
			t.Errorf("%d messages, %d tokens, valid %v", len(m.history), h.tokens, utf8Valid(h.text))
		}
		checkSize(t, m, 1)
	})
}

func utf8Valid(b []byte) bool {
	return json.Valid([]byte(quote(string(b)))) && strings.ToValidUTF8(string(b), "?") == string(b)
}

func TestEscapedLen(t *testing.T) {
	special := []rune{'"', '\\', '\n', '\r', '\t', '\b', '\f', 0, 1, 0x1f, 0x7f, '<', '>', '&', 'é', '€', '\u2028', '\u2029', 0xfffd, 0x1f600, ' ', 'a'}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		var sb strings.Builder
		for range rng.IntN(20) {
			sb.WriteRune(special[rng.IntN(len(special))])
		}
		s := sb.String()
		if i < len(special) {
			s = string(special[i])
		}
		if got, want := escapedLen(s), len(quote(s))-2; got != want {
			t.Fatalf("escapedLen(%q) = %d, encoding/json writes %d", s, got, want)
		}
	}
}

func TestEndingHoldNotice(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	cases := []struct {
		typ, payload  string
		code          string
		expired, ends bool
	}{
		{SessionClosed, `{"type":"session.closed","reason":"expired","usage":{"seconds":3600}}`, "", true, true},
		{SessionClosed, `{"type":"session.closed","reason":"close_requested"}`, "", false, false},
		{SessionClosed, `{"type":"session.closed","reason":"content"}`, "", false, false},
		{SessionClosed, `{"type":"session.closed","reason":"connection_lost"}`, "", false, false},
		{Error, `{"type":"error","error":{"type":"invalid_request_error","code":"credit_balance_exhausted","message":"m"}}`, "credit_balance_exhausted", false, true},
		{Error, `{"type":"error","error":{"type":"server_error","code":null,"message":"m"}}`, "", false, false},
		{UsageUpdated, `{"type":"session.usage.updated","usage":{"seconds":1}}`, "", false, false},
	}
	for _, tc := range cases {
		code, expired, ends := m.Ending([]byte(tc.typ), []byte(tc.payload))
		if code != tc.code || expired != tc.expired || ends != tc.ends {
			t.Errorf("Ending(%s) = %q, %v, %v; want %q, %v, %v", tc.payload, code, expired, ends, tc.code, tc.expired, tc.ends)
		}
	}
	if !m.Hold([]byte(SessionClosed)) || m.Hold([]byte(OutputAudioDelta)) || m.Hold([]byte(SessionStarted)) {
		t.Error("only session.closed is held")
	}
	if !m.Droppable([]byte(InputAudioAppend)) || m.Droppable([]byte(InstructionsAppend)) || m.Droppable([]byte(SessionClose)) {
		t.Error("only audio appends are droppable")
	}
	if m.Interrupted() != nil {
		t.Error("GPT-Live has no answers to finish")
	}
	for _, typ := range []string{OutputAudioDelta, UsageUpdated, SessionClosed, Error} {
		if m.CaptureUpstream([]byte(typ)) {
			t.Errorf("%s captured", typ)
		}
	}
	feed(t, m, `{"type":"session.started","session":{"id":"live_7"}}`)
	want := `{"type":"tether.session.resumed","event_id":"tether_1","resumes":1,"trigger":"expired","upstream_session_id":"live_7",` +
		`"history_items":4,"buffered_messages":20,"dropped_messages":0}`
	if got := string(m.Notice(dialect.ResumeNotice{Resumes: 1, Trigger: "expired", HistoryItems: 4, BufferedMessages: 20})); got != want {
		t.Errorf("Notice\n got %s\nwant %s", got, want)
	}
	if got := string(m.Notice(dialect.ResumeNotice{Resumes: 2, UpstreamSessionID: "live_8"})); !strings.Contains(got, `"event_id":"tether_2"`) || !strings.Contains(got, `"live_8"`) {
		t.Errorf("second Notice %s", got)
	}
}

// TestLongCall runs a two-hour call of 1,000 turns, each the caller's
// sentence and the model's answer in fragments, with a resume at the
// 60-minute mark, and checks the memory stays within its bounds and its
// retained heap small.
func TestLongCall(t *testing.T) {
	for _, b := range []dialect.HistoryBounds{{Items: 64, Bytes: 16 << 10}, {}} {
		t.Run(fmt.Sprintf("%d items %d bytes", b.Items, b.Bytes), func(t *testing.T) {
			m := NewMemory(b)
			m.Client([]byte(SessionStart), []byte(startMsg))
			feed(t, m, `{"type":"session.started","session":{"id":"live_1"}}`)
			userWords := strings.Fields("I would like to know whether the staging deployment finished and what the error rate is")
			answerWords := strings.Fields("The staging deployment finished twelve minutes ago and the error rate has stayed under a tenth of a percent since then so it looks healthy")
			var ms int64
			say := func(in bool, words []string) {
				for i, w := range words {
					if i > 0 {
						w = " " + w
					}
					feed(t, m, delta(in, ms, w))
					ms += 200
				}
				ms += 1000
			}
			maxN, maxB, startLen := 0, 0, 0
			for turn := range 1000 {
				say(true, userWords)
				say(false, answerWords)
				if turn == 500 {
					r := m.Replay()
					startLen = len(r.Start)
					if in := inputOf(t, r.Start); len(in) == 0 || len(in) > MaxInputMessages {
						t.Fatalf("replayed input of %d messages", len(in))
					}
					feed(t, m, `{"type":"session.started","session":{"id":"live_2"}}`)
				}
				n, bytes := m.Size()
				if (b.Items > 0 && n > b.Items) || (b.Bytes > 0 && bytes > b.Bytes) || n > MaxInputMessages || m.tokens > MaxInputTokens {
					t.Fatalf("turn %d: Size %d, %d (%d tokens) past %+v", turn, n, bytes, m.tokens, b)
				}
				maxN, maxB = max(maxN, n), max(maxB, bytes)
			}
			checkSize(t, m, len(m.history))
			n, bytes := m.Size()
			tokens := m.tokens
			retained := testkit.HeapHeld(&m)
			t.Logf("1,000 turns (%d fragments): Size %d messages, %d bytes, %d tokens (max %d, %d); start replayed at 60 min: %d bytes; heap held by the memory %d KiB",
				1000*(len(userWords)+len(answerWords)), n, bytes, tokens, maxN, maxB, startLen, retained>>10)
			if retained > 256<<10 {
				t.Errorf("heap held %d bytes, want at most 256 KiB", retained)
			}
		})
	}
}

// FuzzMemory feeds a Memory lines of peer events ('s' the session.start,
// 'u' upstream, then the JSON): whatever they hold, it stays within its
// bounds and session.input's, its sizes add up, and its start is JSON.
func FuzzMemory(f *testing.F) {
	f.Add("s" + startMsg + "\nu" + delta(true, 0, "Hello") + "\nu" + delta(true, 400, "there") + "\nu" + delta(false, 600, " \"hi\" \u2028"))
	f.Add("s" + `{"type":"session.start","session":{"input":[1,{"content":[{"text":"x"}]}],"input":[]}}` + "\nu" + delta(false, 0, "é"))
	f.Add("u" + `{"type":"session.started","session":{"id":"live_1"}}` + "\nu" + delta(true, 0, strings.Repeat("ab ", 100)))
	f.Fuzz(func(t *testing.T, in string) {
		m := NewMemory(dialect.HistoryBounds{Items: 5, Bytes: 300})
		dialecttest.Lines(in, func(peer byte, typ, payload []byte) {
			switch peer {
			case 's':
				m.Client([]byte(SessionStart), payload)
			case 'u':
				dialecttest.Upstream(m, payload)
				m.Ending(typ, payload)
			}
			n, b := m.Size()
			bytes, tokens := 0, 0
			for _, h := range m.history {
				bytes += len(encodeMessage(h.role, h.text))
				tokens += estimateTokens(len(h.text))
				if len(h.text) == 0 {
					t.Fatal("an empty message is kept")
				}
			}
			if n > 5 || b > 300 || b != bytes || tokens != m.tokens || m.tokens > MaxInputTokens {
				t.Fatalf("Size %d, %d, tokens %d (history %d bytes, %d tokens)", n, b, m.tokens, bytes, tokens)
			}
		})
		r := m.Replay()
		if r.Start == nil {
			return
		}
		if !json.Valid(r.Start) {
			t.Fatalf("invalid start: %s", r.Start)
		}
		var st struct {
			Session struct {
				Input []json.RawMessage `json:"input"`
			} `json:"session"`
		}
		if json.Unmarshal(r.Start, &st) == nil && len(st.Session.Input) > MaxInputMessages {
			t.Fatalf("%d input messages", len(st.Session.Input))
		}
	})
}
