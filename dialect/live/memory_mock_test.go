package live_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestReplayStartAgainstMock starts a new session on the built-in mock
// with a replayed session.start: the mock's strict check of session.start
// accepts it, and session.started shows the input tether gave it.
func TestReplayStartAgainstMock(t *testing.T) {
	s := mock.New(mock.Options{})
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("mock: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	m := live.NewMemory(dialect.HistoryBounds{})
	m.Client([]byte(live.SessionStart), []byte(`{"type":"session.start","event_id":"evt_1","session":{"model":"gpt-live-1",`+
		`"audio":{"format":{"type":"audio/pcm","rate":24000}},"store":false,`+
		`"input":[{"type":"message","role":"developer","content":[{"type":"input_text","text":"The caller is Ann."}]}]}}`))
	say := func(typ string, startMS int64, text string) {
		b, _ := json.Marshal(live.TranscriptDelta{Type: typ, Delta: text, StartMS: startMS, EndMS: startMS + 200})
		m.Upstream([]byte(typ), b)
	}
	say(live.InputTranscriptDelta, 0, "Book a table")
	say(live.InputTranscriptDelta, 200, " for two.")
	say(live.OutputTranscriptDelta, 600, "Done, \"7 pm\".")
	for i := range 200 { // past 128 messages
		say([]string{live.InputTranscriptDelta, live.OutputTranscriptDelta}[i%2], 1000+int64(i)*200, strings.Repeat("x", 40))
	}
	r := m.Replay()

	c := testkit.Dial(t, "ws://"+addr.String()+"/v1/live/sessions", testkit.Options{Header: map[string][]string{"Authorization": {"Bearer sk-test"}}})
	t.Cleanup(c.Close)
	c.SendText(string(r.Start))
	started := c.WaitEvent(live.SessionStarted, 2*time.Second) // an error event fails the test
	var sent struct {
		Session struct {
			Input []any `json:"input"`
		} `json:"session"`
	}
	if err := json.Unmarshal(r.Start, &sent); err != nil {
		t.Fatal(err)
	}
	got := started["session"].(map[string]any)["input"]
	if !reflect.DeepEqual(got, any(sent.Session.Input)) || len(sent.Session.Input) != live.MaxInputMessages {
		t.Errorf("session.started input of %d messages, sent %d (want %d)", len(got.([]any)), len(sent.Session.Input), live.MaxInputMessages)
	}
	if first := sent.Session.Input[0].(map[string]any); first["role"] != live.RoleDeveloper {
		t.Errorf("the original input comes first: %v", first)
	}
}
