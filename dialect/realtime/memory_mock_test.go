package realtime_test

import (
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/dialecttest"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

const mockTimeout = 2 * time.Second

// dialMock opens a Realtime session on a fresh built-in mock upstream and
// hands its session.created to m.
func dialMock(t *testing.T, m dialect.Memory) *testkit.Conn {
	t.Helper()
	s := mock.New(mock.Options{})
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("mock: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c := testkit.Dial(t, "ws://"+addr.String()+"/v1/realtime?model=gpt-realtime", testkit.Options{})
	t.Cleanup(c.Close)
	upstream(t, m, c.WaitEvent(realtime.SessionCreated, mockTimeout))
	return c
}

func encode(t *testing.T, ev map[string]any) (typ string, payload []byte) {
	t.Helper()
	typ, _ = ev["type"].(string)
	return typ, testkit.MustJSON(t, ev)
}

func upstream(t *testing.T, m dialect.Memory, ev map[string]any) {
	t.Helper()
	_, b := encode(t, ev)
	dialecttest.Upstream(m, b)
}

func client(m dialect.Memory, payload string) { dialecttest.Client(m, []byte(payload)) }

// TestReplayAgainstMock replays a call's memory to the built-in mock and
// follows its actual answers: every one is swallowed, the last ends the
// replay, and the next event the client sees is its own answer.
func TestReplayAgainstMock(t *testing.T) {
	cases := []struct {
		name     string
		settings string
		first    string // the answer to the session.update
	}{
		{"settings accepted", `{"type":"session.update","session":{"type":"realtime","instructions":"Be brief.",` +
			`"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"voice":"marin"}}}}`, realtime.SessionUpdated},
		{"settings refused (an error names the replayed session.update)",
			`{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/flac"}}}}}`, realtime.Error},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := realtime.NewMemory(dialect.HistoryBounds{Items: 50, Bytes: 32 << 10})
			dialMock(t, m) // the call's first upstream session: GA
			client(m, tc.settings)
			client(m, `{"type":"conversation.item.create","item":{"id":"item_a","type":"message","role":"user","content":[{"type":"input_text","text":"Hi"}]}}`)
			client(m, `{"type":"conversation.item.create","item":{"type":"message","role":"system","content":[{"type":"input_text","text":"No id."}]}}`)
			m.Upstream([]byte(realtime.OutputTranscriptDone), []byte(`{"type":"response.output_audio_transcript.done","item_id":"item_M1","transcript":"Hello!"}`))
			client(m, `{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"42"}}`)

			r := m.Replay()
			c := dialMock(t, m) // the new upstream session
			for _, msg := range r.Messages {
				c.SendText(string(msg))
			}
			answers, done := 0, false
			for !done {
				ev, ok := c.NextEvent(mockTimeout)
				if !ok {
					t.Fatalf("the mock closed after %d answers", answers)
				}
				typ, b := encode(t, ev)
				if answers == 0 && typ != tc.first {
					t.Errorf("first answer %s, want %s", b, tc.first)
				}
				var swallow bool
				swallow, done = r.Acks.Ack([]byte(typ), b)
				if !swallow {
					t.Fatalf("answer %d not swallowed: %s", answers, b)
				}
				answers++
			}
			if want := 1 + 2*(len(r.Messages)-1); answers != want {
				t.Errorf("%d answers, want %d (session.updated or an error, then added and done per item)", answers, want)
			}
			c.SendText(`{"type":"input_audio_buffer.clear","event_id":"probe"}`)
			if ev, _ := c.NextEvent(mockTimeout); ev["type"] != realtime.InputAudioCleared {
				t.Errorf("after the replay the client sees %v, want its own answer", ev)
			}
		})
	}
}
