package lifecycle

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tetherproxy/tether/dialect"
)

// resumableDialect knows no events but keeps a memory whose Ending says an
// "end" message ends the upstream session (expired) and an "err:<code>"
// one is an error with that code.
type resumableDialect struct{ dialect.None }

func (resumableDialect) NewMemory(dialect.HistoryBounds) dialect.Memory { return &fakeMemory{} }

type fakeMemory struct{}

func (*fakeMemory) CaptureClient([]byte) bool   { return false }
func (*fakeMemory) Client(_, _ []byte)          {}
func (*fakeMemory) CaptureUpstream([]byte) bool { return false }
func (*fakeMemory) Upstream(_, _ []byte)        {}
func (*fakeMemory) Hold([]byte) bool            { return false }
func (*fakeMemory) Ending(_, payload []byte) (string, bool, bool) {
	switch p := string(payload); {
	case p == "end":
		return "", true, true
	case len(p) > 4 && p[:4] == "err:":
		return p[4:], false, true
	}
	return "", false, false
}
func (*fakeMemory) Interrupted() [][]byte              { return nil }
func (*fakeMemory) Replay() dialect.Replay             { return dialect.Replay{} }
func (*fakeMemory) Droppable([]byte) bool              { return true }
func (*fakeMemory) Notice(dialect.ResumeNotice) []byte { return []byte("{}") }
func (*fakeMemory) Size() (int, int)                   { return 0, 0 }
func (*fakeMemory) Closing() bool                      { return false }

// interruptTransport counts Interrupt calls.
type interruptTransport struct {
	*fakeTransport
	mu         sync.Mutex
	interrupts int
}

func (f *interruptTransport) Interrupt() bool {
	f.mu.Lock()
	f.interrupts++
	f.mu.Unlock()
	return true
}

// resumeHooks records SessionResumed calls.
type resumeHooks struct {
	recHooks
	mu      sync.Mutex
	resumes []Resume
}

func (h *resumeHooks) SessionResumed(_ *Session, r Resume) {
	h.mu.Lock()
	h.resumes = append(h.resumes, r)
	h.mu.Unlock()
}

func resumeManager(hooks Hooks, o ResumeOptions, fatal ...string) *Manager {
	return NewManager(Options{Resume: o, FatalUpstreamErrors: fatal, Hooks: []Hooks{hooks}})
}

func TestResumeDecisions(t *testing.T) {
	on := ResumeOptions{Enabled: true, On: AllTriggers, MaxResumes: 1}
	cases := []struct {
		name string
		o    ResumeOptions
		d    dialect.Dialect
		want bool
	}{
		{"off", ResumeOptions{On: AllTriggers, MaxResumes: 1}, resumableDialect{}, false},
		{"a dialect that cannot resume", on, dialect.None{}, false},
		{"trigger not listed", ResumeOptions{Enabled: true, On: []Trigger{TriggerExpired}, MaxResumes: 1}, resumableDialect{}, false},
		{"on", on, resumableDialect{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := resumeManager(&resumeHooks{}, tc.o)
			s, _, done := openWith(t, m, tc.d)
			defer done()
			if _, got := s.ResumeBegin(TriggerUpstreamError); got != tc.want {
				t.Fatalf("ResumeBegin(upstream_error) = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSwallowOnlyEndingsTheCallResumesFrom(t *testing.T) {
	hooks := &resumeHooks{}
	m := resumeManager(hooks, ResumeOptions{Enabled: true, On: AllTriggers, MaxResumes: 1}, "fatal_code")
	s, _, done := openWith(t, m, resumableDialect{})
	defer done()
	for _, tc := range []struct {
		payload string
		want    bool
	}{{"hello", false}, {"err:not_fatal", false}, {"err:fatal_code", true}, {"end", true}} {
		if got := s.Swallow([]byte("x"), []byte(tc.payload)); got != tc.want {
			t.Errorf("Swallow(%q) = %v, want %v", tc.payload, got, tc.want)
		}
	}
	// The one resume allowed is spent: the next ending is relayed, and the
	// refusal is reported once.
	if trigger, ok := s.ResumeBegin(TriggerUpstreamError); !ok || trigger != TriggerExpired {
		t.Fatalf("ResumeBegin = %s, %v; want the pending expired, true", trigger, ok)
	}
	s.Resumed(Resume{Trigger: TriggerExpired, Result: ResumeOK, Upstream: "u", Start: time.Now()})
	for range 2 {
		if _, ok := s.ResumeBegin(TriggerUpstreamError); ok || s.Swallow([]byte("x"), []byte("end")) {
			t.Fatal("a resume past max_resumes was allowed")
		}
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if len(hooks.resumes) != 2 || hooks.resumes[0].Result != ResumeOK || hooks.resumes[1].Result != ResumeExhausted {
		t.Fatalf("resumes reported: %+v, want ok then one exhausted", hooks.resumes)
	}
}

// A call's usage is the sum over its upstream sessions, each upstream
// session's own audio total starting from zero; the summary has both.
func TestResumedCallSumsItsUpstreamSessions(t *testing.T) {
	m := resumeManager(&resumeHooks{}, ResumeOptions{Enabled: true, On: AllTriggers, MaxResumes: 3})
	s, _, done := openWith(t, m, resumableDialect{})
	s.SessionStarted("sess_1", "")
	s.AudioSeconds(10)
	s.AnswerStarted("r1")
	s.AnswerDone("r1", "completed", Tokens{Input: 5, Output: 7})
	if _, ok := s.ResumeBegin(TriggerExpired); !ok {
		t.Fatal("ResumeBegin refused")
	}
	s.SessionStarted("sess_2", "")
	s.Resumed(Resume{Trigger: TriggerExpired, Result: ResumeOK, From: "u", Upstream: "v", Start: time.Now()})
	s.AudioSeconds(3) // the new upstream session's own total
	s.AnswerStarted("r2")
	s.AnswerDone("r2", "completed", Tokens{Input: 1, Output: 2})
	s.End(ReasonClientClosed)
	done()
	sum := s.Summary()
	if sum.AudioSeconds != 13 || sum.Tokens.Input != 6 || sum.Tokens.Output != 9 {
		t.Errorf("totals: audio %v, tokens %+v; want 13 s, 6 in, 9 out", sum.AudioSeconds, sum.Tokens)
	}
	if sum.Resumes != 1 || len(sum.Parts) != 2 {
		t.Fatalf("resumes %d, parts %+v", sum.Resumes, sum.Parts)
	}
	p0, p1 := sum.Parts[0], sum.Parts[1]
	if p0.Upstream != "u" || p0.Conversation != "sess_1" || p0.AudioSeconds != 10 || p0.Tokens.Input != 5 || p0.Ended != TriggerExpired {
		t.Errorf("first part %+v", p0)
	}
	if p1.Upstream != "v" || p1.Conversation != "sess_2" || p1.AudioSeconds != 3 || p1.Tokens.Output != 2 || p1.Ended != "" {
		t.Errorf("second part %+v", p1)
	}
	if got := s.Snapshot().Upstream; got != "v" {
		t.Errorf("GET /sessions upstream %q, want v", got)
	}
}

// An upstream heartbeat timeout on a call that may resume drops the
// upstream leg (the relay resumes) instead of ending the session.
func TestUpstreamHeartbeatTimeoutInterrupts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := HeartbeatOptions{Interval: time.Second, Timeout: time.Second}
		m := NewManager(Options{UpstreamHeartbeat: hb, Hooks: []Hooks{&resumeHooks{}},
			Resume: ResumeOptions{Enabled: true, On: AllTriggers, MaxResumes: 2}})
		release := reserve(t, m)
		s := m.Open(Info{Upstream: "u", Dialect: resumableDialect{}})
		it := &interruptTransport{fakeTransport: newFakeTransport()}
		s.Start(it)
		time.Sleep(2500 * time.Millisecond) // the upstream is silent
		it.mu.Lock()
		got := it.interrupts
		it.mu.Unlock()
		if got != 1 || s.pendingResume() != TriggerUpstreamHeartbeatTimeout || s.Ended() {
			t.Fatalf("%d interrupts, pending %q, ended %v; want one for upstream_heartbeat_timeout, the session open",
				got, s.pendingResume(), s.Ended())
		}
		// The resume happens: the heartbeat goes on on the new leg, and a
		// second silence interrupts again.
		if _, ok := s.ResumeBegin(TriggerUpstreamError); !ok {
			t.Fatal("ResumeBegin refused")
		}
		s.Resumed(Resume{Trigger: TriggerUpstreamHeartbeatTimeout, Result: ResumeOK, Upstream: "u", Start: time.Now()})
		it.hear(Upstream)
		pings := it.pingCount(Upstream)
		time.Sleep(2500 * time.Millisecond)
		it.mu.Lock()
		got = it.interrupts
		it.mu.Unlock()
		if got != 2 || it.pingCount(Upstream) <= pings {
			t.Fatalf("after the resume: %d interrupts, pings %d -> %d; want a second interrupt and pings on", got, pings, it.pingCount(Upstream))
		}
		s.End(ReasonClientClosed)
		m.Finished(s, release)
	})
}

func (f *fakeTransport) pingCount(leg Leg) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pings[leg]
}
