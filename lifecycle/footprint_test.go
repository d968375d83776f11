package lifecycle

import (
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/live"
)

// An open session fits Go's 1,024-byte size class: what only a resume or
// a session's end needs is allocated apart, when needed.
func TestSessionSizeClass(t *testing.T) {
	size := unsafe.Sizeof(Session{})
	t.Logf("Session %d bytes; apart: resume state %d, end state %d", size, unsafe.Sizeof(resumeState{}), unsafe.Sizeof(endState{}))
	if size > 1024 {
		t.Errorf("Session is %d bytes, over the 1,024-byte size class", size)
	}
}

// A session that cannot resume (resume off, or a dialect that cannot carry
// a call over) holds no resume state, and every path that asks about
// resuming works without it.
func TestNoResumeStateWithoutResume(t *testing.T) {
	cases := []struct {
		name string
		o    ResumeOptions
		d    dialect.Dialect
	}{
		{"resume off", ResumeOptions{On: AllTriggers, MaxResumes: 1, Notify: true}, live.Dialect{}},
		{"a dialect that cannot resume", ResumeOptions{Enabled: true, On: AllTriggers, MaxResumes: 1, Notify: true}, dialect.None{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewManager(Options{Resume: tc.o, CloseTimeout: time.Second, FatalUpstreamErrors: []string{"fatal_code"}})
				s, _, finish := openWith(t, m, tc.d)
				if s.res != nil || s.Resumable() {
					t.Fatalf("resume state %p, Resumable %v; want none", s.res, s.Resumable())
				}
				typ := []byte("x")
				if s.CaptureClient(typ) || s.Droppable(typ) || s.Swallow(typ, []byte("end")) {
					t.Error("the call's memory was asked for, with none")
				}
				s.ClientCaptured(typ, []byte("{}"))
				s.Captured(typ, []byte("{}"))
				if in, replay := s.ResumePlan(); in != nil || replay.Start != nil || replay.Messages != nil {
					t.Errorf("resume plan %v, %+v; want none", in, replay)
				}
				if n := s.ResumeNotice(dialect.ResumeNotice{Resumes: 1}); n != nil {
					t.Errorf("resume notice %q, want none", n)
				}
				if trigger, ok := s.ResumeBegin(TriggerUpstreamError); ok || trigger != TriggerUpstreamError {
					t.Fatalf("ResumeBegin = %s, %v; want upstream_error, false", trigger, ok)
				}
				s.AudioSeconds(2)
				s.AudioSeconds(5)
				if snap := s.Snapshot(); snap.Upstream != "u" || snap.Resumes != 0 || snap.AudioSeconds != 5 {
					t.Errorf("snapshot upstream %q resumes %d audio %v; want u, 0, 5", snap.Upstream, snap.Resumes, snap.AudioSeconds)
				}
				if s.ending != nil {
					t.Error("an open session that is not ending holds an end state")
				}
				s.UpstreamEnded("expired")
				s.LegError(Upstream, errors.New("EOF"))
				finish()
				sum := s.Summary()
				if sum.Reason != ReasonUpstreamClosed || sum.UpstreamEndReason != "expired" || sum.Resumes != 0 || sum.Parts != nil ||
					sum.AudioSeconds != 5 || s.Upstream() != "u" {
					t.Errorf("summary %+v, upstream %q; want upstream_closed (expired), no resume, 5 audio seconds, u", sum, s.Upstream())
				}
				if s.res != nil {
					t.Error("resume state allocated during the session")
				}

				// A fatal error event ends a call that cannot resume at once.
				s, _, finish = openWith(t, m, tc.d)
				s.UpstreamError("server_error", "fatal_code")
				time.Sleep(time.Second) // a graceful close's close_timeout
				finish()
				if r := s.Summary().Reason; r != ReasonUpstreamFatalEvent {
					t.Errorf("after a fatal error event: reason %s, want upstream_fatal_event", r)
				}
			})
		})
	}
}

// What a started idle session holds for its liveness (its timers and their
// callbacks), with every deadline set: a heartbeat on both legs,
// idle_timeout and max_duration. Logged, not asserted: the heap moves with
// the runtime.
func TestIdleSessionHeap(t *testing.T) {
	const n = 2000
	hb := HeartbeatOptions{Interval: 15 * time.Second, Timeout: 10 * time.Second}
	m := NewManager(Options{ClientHeartbeat: hb, UpstreamHeartbeat: hb, IdleTimeout: time.Hour, MaxDuration: 2 * time.Hour})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	ft := newFakeTransport()
	sessions := make([]*Session, n)
	releases := make([]func(), n)
	base := heap()
	for i := range sessions {
		releases[i] = reserve(t, m)
		sessions[i] = m.Open(Info{Upstream: "u"})
	}
	opened := heap()
	for _, s := range sessions {
		s.Start(ft)
	}
	started := heap()
	perOpen := float64(int64(opened-base)) / n
	perStart := float64(int64(started-opened)) / n
	t.Logf("heap per idle session: %.0f bytes open, %.0f more once started (its timers), %.0f in all", perOpen, perStart, perOpen+perStart)
	for i, s := range sessions {
		s.End(ReasonAdmin)
		m.Finished(s, releases[i])
	}
}
