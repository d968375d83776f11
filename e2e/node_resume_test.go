package e2e

import (
	"strings"
	"testing"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestNodeResume drives calls that resume (lifecycle.resume) with official
// clients, unmodified, under Node: node/resume.test.mjs makes one call with
// the openai package's OpenAIRealtimeWS and one with the OpenAI Agents
// SDK's RealtimeSession over its OpenAIRealtimeWebSocket transport
// (@openai/agents-realtime). In each, the upstream expires the session
// twice, once between turns and once mid-answer, and the client must keep
// working: it gets tether.session.resumed without an error, the cut answer
// ends with response.done status failed, its socket stays open, the turns
// after each resume complete, and the Agents SDK's history gets no
// duplicates from the replay.
//
// Then tether must have dialed three upstream sessions per call and given
// each new one the call's settings and history.
//
// It needs node (>= 20) and npm (see requireNode); without them it is
// skipped, unless TETHER_REQUIRE_NODE is set (CI), when it fails.
func TestNodeResume(t *testing.T) {
	t.Parallel()
	node := requireNode(t)

	ca := testkit.NewCA(t)
	certFile, keyFile, _ := ca.IssueFiles(t, "127.0.0.1", "localhost")
	_, url := startMock(t, mock.Options{})
	tp, url := startTap(t, url)
	p := startTether(t, "node_resume.yaml", map[string]string{"CertFile": certFile, "KeyFile": keyFile, "UpstreamURL": url})
	waitLog(t, p, stepTimeout, "tls certificate loaded")
	logOnFailure(t, p)

	if !runNodeTests(t, node, "resume.test.mjs", 2, "TETHER_BASE_URL=https://"+p.Listen+"/v1", "NODE_EXTRA_CA_CERTS="+ca.File) {
		t.FailNow()
	}

	// Both calls ended by their client, each after two resumes on a new
	// upstream session.
	waitEnded(t, p, 2)
	if got, _ := p.metric("tether_sessions_total", `reason="client_closed"`); got != 2 {
		t.Errorf("tether_sessions_total{reason=\"client_closed\"} = %v, want 2", got)
	}
	p.wantMetric(t, 4, "tether_resumes_total", `trigger="expired"`, `result="ok"`)
	if n := tp.count(); n != 6 {
		t.Fatalf("tether dialed %d upstream sessions, want 6 (three per call)", n)
	}

	// The tests run one after the other: upstream sessions 0-2 are the
	// openai client's call, 3-5 the Agents SDK's. Each resumed session was
	// first given the call's settings (the Agents SDK sends two
	// session.updates: its whole config, then tracing alone; the
	// instructions must survive the second), then the history: every user
	// message of the call reached it once, the earlier ones replayed, then
	// those of the turns it served.
	for i, wantUsers := range map[int][]string{
		4: {"Hello?", "Are you still there?", "Tell me a long story."},
		5: {"Hello?", "Are you still there?", "Tell me a long story.", "Where were we?"},
	} {
		evs := upstreamEvents(t, tp, i)
		if len(evs) == 0 || evs[0]["type"] != realtime.SessionUpdate {
			t.Errorf("upstream session %d: first message %v, want session.update", i, evs)
			continue
		}
		if su, _ := evs[0]["session"].(map[string]any); su["instructions"] != "Answer briefly." {
			t.Errorf("upstream session %d: replayed session.update %v, want the agent's instructions", i, evs[0])
		}
		var users []string
		for _, ev := range evs[1:] {
			if ev["type"] != realtime.ConversationItemCreate {
				continue
			}
			if role, text := itemText(ev); role == "user" {
				users = append(users, text)
			}
		}
		if strings.Join(users, "|") != strings.Join(wantUsers, "|") {
			t.Errorf("upstream session %d: replayed user messages %q, want %q", i, users, wantUsers)
		}
	}
	for _, i := range []int{1, 2} {
		evs := upstreamEvents(t, tp, i)
		if len(evs) == 0 {
			t.Errorf("upstream session %d: tether sent nothing", i)
			continue
		}
		su, _ := evs[0]["session"].(map[string]any)
		if evs[0]["type"] != realtime.SessionUpdate || su["instructions"] != "Answer briefly." {
			t.Errorf("upstream session %d: first message %v, want the client's session.update", i, evs[0])
		}
	}
	if rows, raw := p.sessions(); len(rows) != 0 {
		t.Errorf("GET /sessions after the node tests: %s", raw)
	}
}
