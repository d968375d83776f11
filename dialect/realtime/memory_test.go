package realtime

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/dialecttest"
	"github.com/tetherproxy/tether/internal/testkit"
)

// typeOf is the type of a JSON event.
func typeOf(t testing.TB, payload string) string {
	t.Helper()
	var ev struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		t.Fatalf("test event %s: %v", payload, err)
	}
	return ev.Type
}

// fromClient hands m a client event, as the session does; m must capture it.
func fromClient(t testing.TB, m dialect.Memory, payload string) {
	t.Helper()
	if !dialecttest.Client(m, []byte(payload)) {
		t.Fatalf("client %s is not captured", typeOf(t, payload))
	}
}

// fromUpstream hands m an upstream event, as the session does; m must
// capture it.
func fromUpstream(t testing.TB, m dialect.Memory, payload string) {
	t.Helper()
	if !dialecttest.Upstream(m, []byte(payload)) {
		t.Fatalf("upstream %s is not captured", typeOf(t, payload))
	}
}

func strs(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

func sessionUpdateOf(session string) string {
	return `{"type":"session.update","session":` + session + `}`
}

func TestSettingsMerge(t *testing.T) {
	cases := []struct {
		name    string
		updates []string // session objects, or whole payloads when starting with {"type"
		want    string   // the merged settings ("" for none)
	}{
		{"one update is kept as sent, compacted",
			[]string{"{\n  \"type\": \"realtime\",\n  \"instructions\": \"Be brief.\"\n}"},
			`{"type":"realtime","instructions":"Be brief."}`},
		{"objects merge recursively, scalars replace",
			[]string{`{"type":"realtime","instructions":"A","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"voice":"marin"}}}`,
				`{"type":"realtime","audio":{"output":{"voice":"cedar","speed":1.1}},"instructions":"B"}`},
			`{"type":"realtime","instructions":"B","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"voice":"cedar","speed":1.1}}}`},
		{"arrays replace",
			[]string{`{"tools":[{"type":"function","name":"a"},{"type":"function","name":"b"}],"output_modalities":["audio"]}`,
				`{"tools":[{"type":"function","name":"c"}]}`},
			`{"tools":[{"type":"function","name":"c"}],"output_modalities":["audio"]}`},
		{"null replaces an object, an object replaces null",
			[]string{`{"audio":{"input":{"turn_detection":{"type":"server_vad","threshold":0.5}}}}`,
				`{"audio":{"input":{"turn_detection":null}}}`},
			`{"audio":{"input":{"turn_detection":null}}}`},
		{"an object replaces null and scalars",
			[]string{`{"audio":{"input":{"turn_detection":null}},"tracing":"auto"}`,
				`{"audio":{"input":{"turn_detection":{"type":"semantic_vad"}}},"tracing":{"workflow_name":"w"}}`},
			`{"audio":{"input":{"turn_detection":{"type":"semantic_vad"}}},"tracing":{"workflow_name":"w"}}`},
		{"numbers keep their text",
			[]string{`{"temperature":0.80,"max_output_tokens":4096}`, `{"max_output_tokens":"inf"}`},
			`{"temperature":0.80,"max_output_tokens":"inf"}`},
		{"what is not a session object changes nothing",
			[]string{`{"instructions":"A"}`,
				`{"type":"session.update","session":"B"}`, `{"type":"session.update","session":[1]}`,
				`{"type":"session.update"}`, `{"type":"session.update","session":null}`, `{"type":"session.update","session":{`},
			`{"instructions":"A"}`},
		{"nothing sent", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(dialect.HistoryBounds{})
			for _, u := range tc.updates {
				if strings.HasPrefix(u, `{"type"`) && !strings.HasPrefix(u, `{"type":"realtime"`) {
					m.Client([]byte(SessionUpdate), []byte(u))
					continue
				}
				fromClient(t, m, sessionUpdateOf(u))
			}
			if string(m.settings) != tc.want {
				t.Errorf("merged\n got %s\nwant %s", m.settings, tc.want)
			}
			r := m.Replay()
			if tc.want == "" {
				if r.Messages != nil || r.Acks != nil {
					t.Errorf("nothing to replay, got %+v", r)
				}
				return
			}
			if want := `{"type":"session.update","event_id":"tether_resume_0","session":` + tc.want + `}`; len(r.Messages) != 1 || string(r.Messages[0]) != want {
				t.Errorf("replay %q, want [%s]", strs(r.Messages), want)
			}
			if n, b := m.Size(); n != 0 || b != 0 {
				t.Errorf("settings are not history: Size = %d, %d", n, b)
			}
		})
	}
}

func TestSettingsBound(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{Items: 1, Bytes: 1})
	big := strings.Repeat("x", 40<<10)
	fromClient(t, m, sessionUpdateOf(`{"type":"realtime","instructions":"`+big+`"}`))
	tools := `[{"type":"function","name":"f","description":"` + strings.Repeat("y", 30<<10) + `"}]`
	fromClient(t, m, sessionUpdateOf(`{"type":"realtime","tools":`+tools+`}`))
	if want := `{"type":"realtime","tools":` + tools + `}`; string(m.settings) != want {
		t.Fatalf("past %d bytes the settings are the latest update alone: got %d bytes", MaxSettingsBytes, len(m.settings))
	}
	fromClient(t, m, sessionUpdateOf(`{"instructions":"short"}`))
	if want := `{"type":"realtime","tools":` + tools + `,"instructions":"short"}`; string(m.settings) != want {
		t.Errorf("a small update merges again: got %.80s...", m.settings)
	}
	huge := `{"type":"realtime","instructions":"` + strings.Repeat("z", MaxSettingsBytes) + `"}`
	fromClient(t, m, sessionUpdateOf(huge))
	if string(m.settings) != huge {
		t.Errorf("an update over the bound alone is kept whole: got %d bytes", len(m.settings))
	}
}

func TestClientItems(t *testing.T) {
	cases := []struct {
		name, item string
		want       string // the item kept ("" for none)
	}{
		{"user text", `{"type":"message","role":"user","content":[{"type":"input_text","text":"Hi"}]}`,
			`{"type":"message","role":"user","content":[{"type":"input_text","text":"Hi"}]}`},
		{"id kept, server fields dropped",
			`{"id":"item_a","object":"realtime.item","type":"message","status":"completed","role":"system","content":[{"type":"input_text","text":"Speak French."}]}`,
			`{"id":"item_a","type":"message","role":"system","content":[{"type":"input_text","text":"Speak French."}]}`},
		{"user audio becomes its transcript",
			`{"type":"message","role":"user","content":[{"type":"input_audio","audio":"AAAAAAAA","transcript":"book a table"}]}`,
			`{"type":"message","role":"user","content":[{"type":"input_text","text":"book a table"}]}`},
		{"audio without transcript: nothing left",
			`{"id":"item_b","type":"message","role":"user","content":[{"type":"input_audio","audio":"AAAAAAAA"}]}`, ""},
		{"assistant audio (GA) becomes output_text",
			`{"type":"message","role":"assistant","content":[{"type":"output_audio","audio":"AAAA","transcript":"Sure."}]}`,
			`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Sure."}]}`},
		{"assistant audio (beta) becomes text",
			`{"type":"message","role":"assistant","content":[{"type":"audio","audio":"AAAA","transcript":"Sure."}]}`,
			`{"type":"message","role":"assistant","content":[{"type":"text","text":"Sure."}]}`},
		{"mixed parts keep the text ones in order",
			`{"type":"message","role":"user","content":[{"type":"input_text","text":"Look:"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"},{"type":"input_audio","audio":"AAAA","transcript":"what is it?"},{"type":"input_text","text":""}]}`,
			`{"type":"message","role":"user","content":[{"type":"input_text","text":"Look:"},{"type":"input_text","text":"what is it?"}]}`},
		{"function call as it is",
			`{"id":"item_c","type":"function_call","status":"completed","call_id":"call_1","name":"lookup","arguments":"{\"q\":1}"}`,
			`{"id":"item_c","type":"function_call","call_id":"call_1","name":"lookup","arguments":"{\"q\":1}"}`},
		{"function call output as it is",
			`{"type":"function_call_output","call_id":"call_1","output":"{\"ok\":true}"}`,
			`{"type":"function_call_output","call_id":"call_1","output":"{\"ok\":true}"}`},
		{"an image alone: nothing left",
			`{"type":"message","role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]}`, ""},
		{"a message without content", `{"type":"message","role":"user"}`, ""},
		{"content not an array", `{"type":"message","role":"user","content":"hi"}`, ""},
		{"other item types are not kept", `{"type":"mcp_approval_response","approval_request_id":"a","approve":true}`, ""},
		{"not an object", `"hello"`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(dialect.HistoryBounds{})
			fromClient(t, m, `{"type":"conversation.item.create","event_id":"c1","item":`+tc.item+`}`)
			r := m.Replay()
			if tc.want == "" {
				if len(r.Messages) != 0 {
					t.Errorf("kept %q", strs(r.Messages))
				}
				if n, b := m.Size(); n != 0 || b != 0 {
					t.Errorf("Size = %d, %d, want 0, 0", n, b)
				}
				return
			}
			want := `{"type":"conversation.item.create","event_id":"tether_resume_0","item":` + tc.want + `}`
			if len(r.Messages) != 1 || string(r.Messages[0]) != want {
				t.Errorf("replay\n got %q\nwant [%s]", strs(r.Messages), want)
			}
			if n, b := m.Size(); n != 1 || b != len(tc.want) {
				t.Errorf("Size = %d, %d, want 1, %d", n, b, len(tc.want))
			}
		})
	}
}

// replayedIDs is the item ids (or texts, for items without one) of a replay's items.
func replayedIDs(t testing.TB, msgs [][]byte) []string {
	t.Helper()
	var ids []string
	for _, b := range msgs {
		var ev struct {
			Type string `json:"type"`
			Item struct {
				ID      string `json:"id"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"item"`
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("replayed %s: %v", b, err)
		}
		if ev.Type != ConversationItemCreate {
			continue
		}
		id := ev.Item.ID
		if id == "" && len(ev.Item.Content) > 0 {
			id = ev.Item.Content[0].Text
		}
		ids = append(ids, id)
	}
	return ids
}

func userItem(id, text string) string {
	return `{"type":"conversation.item.create","item":{"id":"` + id + `","type":"message","role":"user","content":[{"type":"input_text","text":"` + text + `"}]}}`
}

func TestItemOrderAndDeletion(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	for _, id := range []string{"a", "b", "c"} {
		fromClient(t, m, userItem(id, "text "+id))
	}
	fromClient(t, m, `{"type":"conversation.item.delete","item_id":"b"}`)
	fromClient(t, m, `{"type":"conversation.item.delete","item_id":"nope"}`)
	fromClient(t, m, `{"type":"conversation.item.create","previous_item_id":"root","item":{"id":"first","type":"message","role":"system","content":[{"type":"input_text","text":"s"}]}}`)
	fromClient(t, m, `{"type":"conversation.item.create","previous_item_id":"a","item":{"id":"after_a","type":"message","role":"user","content":[{"type":"input_text","text":"x"}]}}`)
	fromClient(t, m, `{"type":"conversation.item.create","previous_item_id":"unknown","item":{"id":"last","type":"message","role":"user","content":[{"type":"input_text","text":"y"}]}}`)
	fromClient(t, m, userItem("a", "text a, again")) // same id: in its place
	got := replayedIDs(t, m.Replay().Messages)
	if want := []string{"first", "a", "after_a", "c", "last"}; !reflect.DeepEqual(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
	n, b := m.Size()
	want := 0
	for _, e := range m.history {
		want += len(e.item(false))
	}
	if n != 5 || b != want {
		t.Errorf("Size = %d, %d, want 5, %d", n, b, want)
	}
	fromClient(t, m, `{"type":"conversation.item.delete","item_id":"first"}`)
	if n2, b2 := m.Size(); n2 != 4 || b2 >= b {
		t.Errorf("after a delete Size = %d, %d (was %d, %d)", n2, b2, n, b)
	}
}

// gaTurn is one server-VAD turn of a GA session, transcripts as named.
func gaTurn(n int, user, assistant string) []string {
	u, a, r := fmt.Sprintf("item_U%d", n), fmt.Sprintf("item_M%d", n), fmt.Sprintf("resp_%d", n)
	return []string{
		`{"type":"input_audio_buffer.committed","event_id":"e1","previous_item_id":null,"item_id":"` + u + `"}`,
		`{"type":"response.created","event_id":"e2","response":{"object":"realtime.response","id":"` + r + `","status":"in_progress","output":[],"usage":null}}`,
		`{"type":"response.output_audio_transcript.done","event_id":"e3","response_id":"` + r + `","item_id":"` + a + `","output_index":0,"content_index":0,"transcript":"` + assistant + `"}`,
		`{"type":"conversation.item.input_audio_transcription.completed","event_id":"e4","item_id":"` + u + `","content_index":0,"transcript":"` + user + `","usage":{"type":"duration","seconds":1.2}}`,
		`{"type":"response.done","event_id":"e5","response":{"object":"realtime.response","id":"` + r + `","status":"completed","output":[{"id":"` + a + `","type":"message","role":"assistant","content":[{"type":"output_audio","transcript":"` + assistant + `"}]}]}}`,
	}
}

func TestUpstreamHistoryGA(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	fromUpstream(t, m, `{"type":"session.created","event_id":"e0","session":{"id":"sess_1","object":"realtime.session","type":"realtime","model":"gpt-realtime"}}`)
	fromClient(t, m, sessionUpdateOf(`{"type":"realtime","instructions":"Be brief."}`))
	for _, ev := range gaTurn(1, "What time is it?", "It is noon.") {
		fromUpstream(t, m, ev)
	}
	// A function call: arguments done (no name in the indexed SDK types),
	// then response.done names it; the client answers it.
	fromUpstream(t, m, `{"type":"response.created","response":{"id":"resp_2","status":"in_progress"}}`)
	fromUpstream(t, m, `{"type":"response.function_call_arguments.done","response_id":"resp_2","item_id":"item_F1","output_index":0,"call_id":"call_1","arguments":"{\"city\":\"Paris\"}"}`)
	fromUpstream(t, m, `{"type":"response.done","response":{"id":"resp_2","status":"completed","output":[{"id":"item_F1","type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Paris\"}"}]}}`)
	fromClient(t, m, `{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"sunny"}}`)
	fromUpstream(t, m, `{"type":"response.output_text.done","response_id":"resp_3","item_id":"item_M3","output_index":0,"content_index":0,"text":"Sunny in Paris."}`)
	want := []string{
		`{"type":"session.update","event_id":"tether_resume_0","session":{"type":"realtime","instructions":"Be brief."}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_1","item":{"id":"item_U1","type":"message","role":"user","content":[{"type":"input_text","text":"What time is it?"}]}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_2","item":{"id":"item_M1","type":"message","role":"assistant","content":[{"type":"output_text","text":"It is noon."}]}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_3","item":{"id":"item_F1","type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Paris\"}"}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_4","item":{"type":"function_call_output","call_id":"call_1","output":"sunny"}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_5","item":{"id":"item_M3","type":"message","role":"assistant","content":[{"type":"output_text","text":"Sunny in Paris."}]}}`,
	}
	r := m.Replay()
	if got := strs(r.Messages); !reflect.DeepEqual(got, want) {
		t.Errorf("replay\n got %q\nwant %q", got, want)
	}
	if again := strs(m.Replay().Messages); !reflect.DeepEqual(again, want) {
		t.Errorf("a second Replay differs: %q", again)
	}
	if n, _ := m.Size(); n != 5 {
		t.Errorf("Size items %d, want 5", n)
	}
	if in := m.Interrupted(); in != nil {
		t.Errorf("every response is done, yet Interrupted = %q", strs(in))
	}
}

func TestUpstreamHistoryBeta(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	fromUpstream(t, m, `{"type":"session.created","event_id":"e0","session":{"id":"sess_1","object":"realtime.session","model":"gpt-4o-realtime-preview","modalities":["text","audio"]}}`)
	fromUpstream(t, m, `{"type":"conversation.item.input_audio_transcription.completed","item_id":"item_U1","content_index":0,"transcript":"Hello"}`)
	fromUpstream(t, m, `{"type":"response.audio_transcript.done","response_id":"r1","item_id":"item_M1","output_index":0,"content_index":0,"transcript":"Hi there"}`)
	fromUpstream(t, m, `{"type":"response.text.done","response_id":"r2","item_id":"item_M2","output_index":0,"content_index":0,"text":"Typed"}`)
	// A call the upstream never named (its response never finished) is not replayed.
	fromUpstream(t, m, `{"type":"response.function_call_arguments.done","response_id":"r3","item_id":"item_F1","call_id":"call_9","arguments":"{}"}`)
	want := []string{
		`{"type":"conversation.item.create","event_id":"tether_resume_0","item":{"id":"item_U1","type":"message","role":"user","content":[{"type":"input_text","text":"Hello"}]}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_1","item":{"id":"item_M1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi there"}]}}`,
		`{"type":"conversation.item.create","event_id":"tether_resume_2","item":{"id":"item_M2","type":"message","role":"assistant","content":[{"type":"text","text":"Typed"}]}}`,
	}
	if got := strs(m.Replay().Messages); !reflect.DeepEqual(got, want) {
		t.Errorf("replay\n got %q\nwant %q", got, want)
	}
}

func TestShapeFromEventNames(t *testing.T) {
	cases := []struct {
		name   string
		events []string
		part   string
	}{
		{"no session.created, GA names", []string{`{"type":"response.output_audio_transcript.done","item_id":"m","transcript":"x"}`}, PartOutputText},
		{"no session.created, beta names", []string{`{"type":"response.audio_transcript.done","item_id":"m","transcript":"x"}`}, BetaPartText},
		{"GA session.created", []string{`{"type":"session.created","session":{"object":"realtime.session","type":"realtime"}}`,
			`{"type":"conversation.item.input_audio_transcription.completed","item_id":"u","transcript":"x"}`,
			`{"type":"response.output_text.done","item_id":"m","text":"x"}`}, PartOutputText},
		{"beta session.created", []string{`{"type":"session.created","session":{"object":"realtime.session"}}`,
			`{"type":"conversation.item.input_audio_transcription.completed","item_id":"m","transcript":"x"}`}, BetaPartText},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(dialect.HistoryBounds{})
			for _, ev := range tc.events {
				fromUpstream(t, m, ev)
			}
			fromClient(t, m, userItem("probe", "p"))
			m.put(entry{kind: kindText, id: "a", role: RoleAssistant, text: "t"}, "")
			msgs := m.Replay().Messages
			if want := `"content":[{"type":"` + tc.part + `","text":"t"}]`; !strings.Contains(string(msgs[len(msgs)-1]), want) {
				t.Errorf("assistant item %s, want %s", msgs[len(msgs)-1], want)
			}
		})
	}
}

func TestHistoryBounds(t *testing.T) {
	item := func(i int) string { return userItem(fmt.Sprintf("i%02d", i), strings.Repeat("w", 10)) }
	one := len(`{"id":"i00","type":"message","role":"user","content":[{"type":"input_text","text":"wwwwwwwwww"}]}`)
	cases := []struct {
		name     string
		bounds   dialect.HistoryBounds
		add      int
		oversize bool // then add an entry bigger than Bytes
		wantIDs  []string
	}{
		{"items", dialect.HistoryBounds{Items: 3}, 5, false, []string{"i02", "i03", "i04"}},
		{"bytes", dialect.HistoryBounds{Bytes: 2*one + one/2}, 5, false, []string{"i03", "i04"}},
		{"bytes exactly", dialect.HistoryBounds{Bytes: 2 * one}, 5, false, []string{"i03", "i04"}},
		{"both, items first", dialect.HistoryBounds{Items: 2, Bytes: 10 * one}, 4, false, []string{"i02", "i03"}},
		{"an entry bigger than Bytes alone is not kept", dialect.HistoryBounds{Bytes: 3 * one}, 2, true, []string{"i00", "i01"}},
		{"zero: the dialect's bounds", dialect.HistoryBounds{}, 5, false, []string{"i00", "i01", "i02", "i03", "i04"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(tc.bounds)
			for i := range tc.add {
				fromClient(t, m, item(i))
				if n, b := m.Size(); (tc.bounds.Items > 0 && n > tc.bounds.Items) || (tc.bounds.Bytes > 0 && b > tc.bounds.Bytes) {
					t.Fatalf("Size %d, %d past %+v", n, b, tc.bounds)
				}
			}
			if tc.oversize {
				fromUpstream(t, m, `{"type":"response.output_audio_transcript.done","item_id":"big","transcript":"`+strings.Repeat("b", 3*one)+`"}`)
			}
			if got := replayedIDs(t, m.Replay().Messages); !reflect.DeepEqual(got, tc.wantIDs) {
				t.Errorf("kept %q, want %q", got, tc.wantIDs)
			}
			if n, b := m.Size(); n != len(tc.wantIDs) || b != n*one {
				t.Errorf("Size = %d, %d, want %d, %d", n, b, len(tc.wantIDs), len(tc.wantIDs)*one)
			}
		})
	}
	m := NewMemory(dialect.HistoryBounds{Items: 1 << 20, Bytes: 1 << 30})
	if m.maxItems != MaxHistoryItems || m.maxBytes != MaxHistoryBytes {
		t.Errorf("bounds past the dialect's: %d, %d, want %d, %d", m.maxItems, m.maxBytes, MaxHistoryItems, MaxHistoryBytes)
	}
}

func TestTurnsKeepTheirPlace(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	fromUpstream(t, m, `{"type":"input_audio_buffer.committed","item_id":"u1"}`)
	fromUpstream(t, m, `{"type":"response.output_audio_transcript.done","item_id":"m1","transcript":"answer"}`)
	fromUpstream(t, m, `{"type":"input_audio_buffer.committed","item_id":"u2"}`) // silence: an empty transcript
	fromUpstream(t, m, `{"type":"conversation.item.input_audio_transcription.completed","item_id":"u2","transcript":""}`)
	fromUpstream(t, m, `{"type":"conversation.item.input_audio_transcription.completed","item_id":"u1","transcript":"question"}`)
	if got := replayedIDs(t, m.Replay().Messages); !reflect.DeepEqual(got, []string{"u1", "m1"}) {
		t.Errorf("order %q, want the question before its answer", got)
	}
	if n, _ := m.Size(); n != 2 || m.waiting != 0 || len(m.history) != 2 {
		t.Errorf("items %d, waiting %d, history %d; want 2, 0, 2", n, m.waiting, len(m.history))
	}
	// A session without transcription: the waiting turns stay bounded.
	for i := range 3 * maxWaitingTurns {
		fromUpstream(t, m, fmt.Sprintf(`{"type":"input_audio_buffer.committed","item_id":"w%d"}`, i))
	}
	if m.waiting != maxWaitingTurns || len(m.history) != 2+maxWaitingTurns {
		t.Errorf("waiting %d, history %d; want %d, %d", m.waiting, len(m.history), maxWaitingTurns, 2+maxWaitingTurns)
	}
	fromUpstream(t, m, fmt.Sprintf(`{"type":"conversation.item.input_audio_transcription.completed","item_id":"w%d","transcript":"late"}`, 3*maxWaitingTurns-1))
	if got := replayedIDs(t, m.Replay().Messages); !reflect.DeepEqual(got, []string{"u1", "m1", fmt.Sprintf("w%d", 3*maxWaitingTurns-1)}) {
		t.Errorf("replay %q", got)
	}
	m.Interrupted() // the old session will send no transcript
	if m.waiting != 0 || len(m.history) != 3 {
		t.Errorf("after Interrupted: waiting %d, history %d", m.waiting, len(m.history))
	}
}

// ackStep is one upstream event of a replay's answer and the verdict on it.
type ackStep struct {
	event         string
	swallow, done bool
}

// replayOf builds a Memory that replays settings (if any) and items.
func replayOf(t testing.TB, beta bool, settings string, items ...string) dialect.Replay {
	t.Helper()
	m := NewMemory(dialect.HistoryBounds{})
	m.beta = beta
	if settings != "" {
		fromClient(t, m, sessionUpdateOf(settings))
	}
	for _, it := range items {
		fromClient(t, m, `{"type":"conversation.item.create","item":`+it+`}`)
	}
	return m.Replay()
}

const (
	itemX     = `{"id":"x","type":"message","role":"user","content":[{"type":"input_text","text":"x"}]}`
	itemY     = `{"id":"y","type":"message","role":"user","content":[{"type":"input_text","text":"y"}]}`
	itemNoID  = `{"type":"message","role":"user","content":[{"type":"input_text","text":"z"}]}`
	settingsA = `{"type":"realtime","instructions":"A"}`
)

func added(id string) string {
	return `{"type":"conversation.item.added","event_id":"e","previous_item_id":null,"item":{"id":"` + id + `","object":"realtime.item","type":"message","status":"completed","role":"user","content":[]}}`
}
func doneItem(id string) string { return strings.Replace(added(id), "item.added", "item.done", 1) }
func created(id string) string  { return strings.Replace(added(id), "item.added", "item.created", 1) }
func errorFor(eventID string) string {
	return `{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"invalid_value","message":"bad","param":null,"event_id":"` + eventID + `"}}`
}

const (
	sessionUpdated = `{"type":"session.updated","event_id":"e","session":{"id":"sess_2","object":"realtime.session","type":"realtime"}}`
	rateLimits     = `{"type":"rate_limits.updated","event_id":"e","rate_limits":[]}`
	otherError     = `{"type":"error","event_id":"e","error":{"type":"server_error","code":null,"message":"oops","event_id":null}}`
)

func TestReplayAcks(t *testing.T) {
	cases := []struct {
		name     string
		beta     bool
		settings string
		items    []string
		steps    []ackStep
	}{
		{"GA: settings and two items", false, settingsA, []string{itemX, itemY}, []ackStep{
			{rateLimits, false, false},
			{sessionUpdated, true, false},
			{sessionUpdated, false, false}, // answered already: not the replay's
			{added("x"), true, false},
			{doneItem("x"), true, false},
			{added("y"), true, false},
			{`{"type":"input_audio_buffer.speech_started","item_id":"u9"}`, false, false},
			{doneItem("y"), true, true},
		}},
		{"GA: the legacy created event is swallowed, not an answer", false, "", []string{itemX}, []ackStep{
			{added("x"), true, false},
			{created("x"), true, false},
			{doneItem("x"), true, true},
		}},
		{"GA: items answered out of order", false, "", []string{itemX, itemY}, []ackStep{
			{added("y"), true, false}, {doneItem("y"), true, false},
			{added("x"), true, false}, {doneItem("x"), true, true},
		}},
		{"beta: session.updated, then created per item", true, settingsA, []string{itemX, itemY}, []ackStep{
			{sessionUpdated, true, false},
			{created("x"), true, false},
			{created("y"), true, true},
		}},
		{"errors naming replayed event ids answer them", false, settingsA, []string{itemX, itemY}, []ackStep{
			{errorFor("tether_resume_0"), true, false},
			{otherError, false, false},
			{errorFor("c_17"), false, false}, // the client's own event: not the replay's
			{added("x"), true, false},
			{errorFor("tether_resume_2"), true, false},
			{errorFor("tether_resume_2"), false, false}, // answered already
			{doneItem("x"), true, true},
		}},
		{"an item without id takes the upstream's", false, "", []string{itemNoID, itemX}, []ackStep{
			{added("x"), true, false},
			{added("item_srv1"), true, false},
			{doneItem("item_srv1"), true, false},
			{added("item_stranger"), false, false},
			{doneItem("x"), true, true},
		}},
		{"item events of other items pass", false, "", []string{itemX}, []ackStep{
			{added("item_U7"), false, false},
			{doneItem("item_U7"), false, false},
			{`{"type":"conversation.item.added","item":"broken"}`, false, false},
			{added("x"), true, false},
			{doneItem("x"), true, true},
		}},
		{"settings only", false, settingsA, nil, []ackStep{{added("x"), false, false}, {sessionUpdated, true, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := replayOf(t, tc.beta, tc.settings, tc.items...)
			if r.Acks == nil {
				t.Fatal("no Acks")
			}
			for i, s := range tc.steps {
				sw, done := r.Acks.Ack([]byte(typeOf(t, s.event)), []byte(s.event))
				if sw != s.swallow || done != s.done {
					t.Errorf("step %d %.60s: swallow %v done %v, want %v %v", i, s.event, sw, done, s.swallow, s.done)
				}
			}
		})
	}
	if r := replayOf(t, false, ""); r.Messages != nil || r.Acks != nil || r.Start != nil {
		t.Errorf("an empty memory replays %+v", r)
	}
}

func TestInterrupted(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	for _, id := range []string{"resp_1", "resp_2", "resp_3"} {
		fromUpstream(t, m, `{"type":"response.created","response":{"object":"realtime.response","id":"`+id+`","status":"in_progress"}}`)
	}
	fromUpstream(t, m, `{"type":"response.created","response":{"id":"resp_3"}}`) // seen twice, finished once
	fromUpstream(t, m, `{"type":"response.done","response":{"id":"resp_2","status":"cancelled"}}`)
	got := strs(m.Interrupted())
	failed := func(eventID, id string) string {
		return `{"type":"response.done","event_id":"` + eventID + `","response":{"object":"realtime.response","id":"` + id +
			`","status":"failed","status_details":{"type":"failed","error":{"type":"tether_error","code":"upstream_lost",` +
			`"message":"the upstream session ended during this response; tether resumed the call"}},"output":[],"usage":null}}`
	}
	want := []string{failed("tether_1", "resp_1"), failed("tether_2", "resp_3")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Interrupted\n got %q\nwant %q", got, want)
	}
	if again := m.Interrupted(); again != nil {
		t.Errorf("Interrupted forgets what it finished; again %q", strs(again))
	}
	// The session hears each as the upstream's own response.done.
	var d Dialect
	rec := &dialecttest.Recorder{}
	for _, ev := range got {
		d.Captured(rec, []byte(ResponseDone), []byte(ev))
	}
	if want := []string{"done resp_1 failed", "done resp_3 failed"}; !reflect.DeepEqual(rec.Got, want) {
		t.Errorf("signals %q, want %q", rec.Got, want)
	}
	// Bounded: a flood of responses never done.
	for i := range 3 * maxOpenResponses {
		fromUpstream(t, m, fmt.Sprintf(`{"type":"response.created","response":{"id":"r%d"}}`, i))
	}
	if n := len(m.Interrupted()); n != maxOpenResponses {
		t.Errorf("%d responses finished, want the latest %d", n, maxOpenResponses)
	}
}

func TestEnding(t *testing.T) {
	cases := []struct {
		typ, payload   string
		code           string
		expired, ascap bool
	}{
		{Error, `{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"Your session hit the maximum duration of 60 minutes."}}`, "session_expired", true, true},
		{Error, `{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key"}}`, "invalid_api_key", false, true},
		{Error, `{"type":"error","error":{"type":"invalid_request_error","code":"input_audio_buffer_commit_empty"}}`, "input_audio_buffer_commit_empty", false, true},
		{Error, `{"type":"error","error":{"type":"server_error","code":null,"message":"m"}}`, "", false, false},
		{Error, `not json`, "", false, false},
		{ResponseDone, `{"type":"response.done","response":{"status":"failed"}}`, "", false, false},
	}
	m := NewMemory(dialect.HistoryBounds{})
	for _, tc := range cases {
		code, expired, ends := m.Ending([]byte(tc.typ), []byte(tc.payload))
		if code != tc.code || expired != tc.expired || ends != tc.ascap {
			t.Errorf("Ending(%.70s) = %q, %v, %v; want %q, %v, %v", tc.payload, code, expired, ends, tc.code, tc.expired, tc.ascap)
		}
	}
}

func TestNoticeDroppableHold(t *testing.T) {
	m := NewMemory(dialect.HistoryBounds{})
	n := dialect.ResumeNotice{Resumes: 2, Trigger: "expired", UpstreamSessionID: "sess_9", HistoryItems: 12, BufferedMessages: 40, DroppedMessages: 3}
	want := `{"type":"tether.session.resumed","event_id":"tether_1","resumes":2,"trigger":"expired","upstream_session_id":"sess_9",` +
		`"history_items":12,"buffered_messages":40,"dropped_messages":3}`
	if got := string(m.Notice(n)); got != want {
		t.Errorf("Notice\n got %s\nwant %s", got, want)
	}
	fromUpstream(t, m, `{"type":"session.created","session":{"id":"sess_10","object":"realtime.session","type":"realtime"}}`)
	var ev map[string]any
	_ = json.Unmarshal(m.Notice(dialect.ResumeNotice{Resumes: 3}), &ev)
	if ev["event_id"] != "tether_2" || ev["upstream_session_id"] != "sess_10" {
		t.Errorf("second notice %v: want a new event id, and the latest session's id when none is given", ev)
	}
	if !m.Droppable([]byte(InputAudioAppend)) || m.Droppable([]byte(InputAudioCommit)) || m.Droppable([]byte(ConversationItemCreate)) {
		t.Error("only audio appends are droppable")
	}
	for _, typ := range []string{Error, ResponseDone, SessionCreated, OutputAudioDelta} {
		if m.Hold([]byte(typ)) {
			t.Errorf("%s held", typ)
		}
	}
	for _, typ := range []string{InputAudioAppend, ResponseCreate, InputAudioCommit} {
		if m.CaptureClient([]byte(typ)) {
			t.Errorf("client %s captured", typ)
		}
	}
	for _, typ := range []string{OutputAudioDelta, BetaAudioDelta, OutputTranscriptDelta, RateLimitsUpdated, ItemAdded} {
		if m.CaptureUpstream([]byte(typ)) {
			t.Errorf("upstream %s captured", typ)
		}
	}
}

// TestLongCall runs a two-hour call of 1,000 turns (the caller's words,
// the model's answer, a function call every fifth turn) with a resume at
// the 60-minute cap, and checks the memory stays within its bounds and
// its retained heap small.
func TestLongCall(t *testing.T) {
	for _, b := range []dialect.HistoryBounds{{Items: 200, Bytes: 64 << 10}, {}} {
		t.Run(fmt.Sprintf("%d items %d bytes", b.Items, b.Bytes), func(t *testing.T) {
			maxItems, maxBytes := bound(b.Items, MaxHistoryItems), bound(b.Bytes, MaxHistoryBytes)
			m := NewMemory(b)
			fromUpstream(t, m, `{"type":"session.created","session":{"id":"sess_1","object":"realtime.session","type":"realtime"}}`)
			fromClient(t, m, sessionUpdateOf(`{"type":"realtime","instructions":"`+strings.Repeat("Be helpful. ", 200)+`","audio":{"output":{"voice":"marin"}}}`))
			user := strings.Repeat("I would like to know about the weather ", 3)                    // ~120 B
			answer := strings.Repeat("The forecast says it will be sunny with a light breeze. ", 6) // ~340 B
			args := `{\"city\":\"Paris\",\"days\":3,\"units\":\"metric\"}`
			output := strings.Repeat("day: sunny, 21C; ", 25) // ~425 B
			replayed, offered, maxN, maxB := 0, 0, 0, 0
			for turn := range 1000 {
				for _, ev := range gaTurn(turn, fmt.Sprintf("%s(turn %d)", user, turn), answer) {
					fromUpstream(t, m, ev)
				}
				offered += 2
				if turn%5 == 0 {
					offered += 2
					r := fmt.Sprintf("resp_f%d", turn)
					fromUpstream(t, m, `{"type":"response.created","response":{"id":"`+r+`"}}`)
					fromUpstream(t, m, fmt.Sprintf(`{"type":"response.function_call_arguments.done","response_id":"%s","item_id":"item_F%d","call_id":"call_%d","arguments":"%s"}`, r, turn, turn, args))
					fromUpstream(t, m, fmt.Sprintf(`{"type":"response.done","response":{"id":"%s","status":"completed","output":[{"id":"item_F%d","type":"function_call","call_id":"call_%d","name":"forecast","arguments":"%s"}]}}`, r, turn, turn, args))
					fromClient(t, m, fmt.Sprintf(`{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_%d","output":"%s"}}`, turn, output))
				}
				if turn == 500 { // the 60-minute cap, mid-answer
					fromUpstream(t, m, `{"type":"response.created","response":{"id":"resp_cut"}}`)
					if len(m.Interrupted()) != 1 {
						t.Fatal("the cut answer is not finished")
					}
					r := m.Replay()
					replayed = len(r.Messages)
					acked := false
					for _, msg := range r.Messages[1:] {
						var ev itemCreate
						_ = json.Unmarshal(msg, &ev)
						var it struct {
							ID string `json:"id"`
						}
						_ = json.Unmarshal(ev.Item, &it)
						if it.ID == "" {
							it.ID = "srv_" + ev.EventID
						}
						r.Acks.Ack([]byte(ItemAdded), []byte(added(it.ID)))
						_, acked = r.Acks.Ack([]byte(ItemDone), []byte(doneItem(it.ID)))
					}
					if _, done := r.Acks.Ack([]byte(SessionUpdated), []byte(sessionUpdated)); !done || acked {
						t.Errorf("the replay of %d messages is not answered exactly at its last answer", replayed)
					}
				}
				n, bytes := m.Size()
				if n > maxItems || bytes > maxBytes {
					t.Fatalf("turn %d: Size %d, %d past %d, %d", turn, n, bytes, maxItems, maxBytes)
				}
				maxN, maxB = max(maxN, n), max(maxB, bytes)
			}
			n, bytes := m.Size()
			settings := len(m.settings)
			retained := testkit.HeapHeld(&m)
			t.Logf("1,000 turns (%d history entries offered): Size %d items, %d bytes (max %d, %d); settings %d bytes; replay at 60 min: %d messages; heap held by the memory %d KiB",
				offered, n, bytes, maxN, maxB, settings, replayed, retained>>10)
			if limit := int64(3*maxBytes + 256<<10); retained > limit {
				t.Errorf("heap held %d bytes, want at most %d", retained, limit)
			}
		})
	}
}

// FuzzMemory feeds a Memory lines of peer events ('c' client, 'u'
// upstream, 'a' an answer to the replay so far, then the JSON): whatever
// they hold, it stays within its bounds, its sizes add up, and what it
// makes is JSON.
func FuzzMemory(f *testing.F) {
	seeds := []string{
		"c" + sessionUpdateOf(settingsA) + "\nc" + userItem("a", "x") + "\nc" + `{"type":"conversation.item.delete","item_id":"a"}`,
		"u" + strings.Join(gaTurn(1, "q", "a"), "\nu") + "\na" + added("item_U1") + "\na" + doneItem("item_U1"),
		"c" + `{"type":"conversation.item.create","previous_item_id":"root","item":` + itemNoID + `}` + "\na" + errorFor("tether_resume_0"),
		"u" + `{"type":"response.function_call_arguments.done","item_id":"f","call_id":"c","arguments":"{}"}` +
			"\nu" + `{"type":"response.done","response":{"id":"r","output":[{"type":"function_call","call_id":"c","name":"n"}]}}`,
		"c" + `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_audio","transcript":"\u2028<&>"}]}}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		m := NewMemory(dialect.HistoryBounds{Items: 4, Bytes: 600})
		acks := m.Replay().Acks
		dialecttest.Lines(in, func(peer byte, typ, payload []byte) {
			switch peer {
			case 'c':
				dialecttest.Client(m, payload)
			case 'u':
				dialecttest.Upstream(m, payload)
				m.Ending(typ, payload)
			case 'a':
				if acks == nil {
					acks = m.Replay().Acks
				}
				if acks != nil {
					acks.Ack(typ, payload)
				}
			}
			n, b := m.Size()
			items, bytes, waiting := 0, 0, 0
			for _, e := range m.history {
				if e.kind == kindTurn {
					waiting++
					continue
				}
				items++
				bytes += e.size
				if e.size != len(e.item(false)) {
					t.Fatalf("entry %q: size %d, encoded %d", e.id, e.size, len(e.item(false)))
				}
			}
			if n != items || b != bytes || waiting != m.waiting || n > 4 || b > 600 || m.waiting > maxWaitingTurns {
				t.Fatalf("Size %d, %d (history %d, %d; waiting %d/%d)", n, b, items, bytes, m.waiting, waiting)
			}
		})
		r := m.Replay()
		for _, msg := range append(r.Messages, m.Interrupted()...) {
			if !json.Valid(msg) {
				t.Fatalf("invalid JSON made: %s", msg)
			}
		}
	})
}
