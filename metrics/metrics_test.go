package metrics

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// relay is a lifecycle.Transport that writes every close frame but the
// ones listed in unsent.
type relay struct{ unsent [2]bool }

func (relay) Ping(lifecycle.Leg) error { return nil }
func (relay) Liveness(lifecycle.Leg) (time.Time, time.Time) {
	return time.Now(), time.Time{}
}
func (r relay) BeginClose([]byte) error { return nil }

func (r relay) Shutdown(_, _ lifecycle.CloseFrame) [2]bool {
	return [2]bool{!r.unsent[0], !r.unsent[1]}
}

// rig is a manager observed by a fresh Metrics.
type rig struct {
	t   *testing.T
	met *Metrics
	mgr *lifecycle.Manager
}

func newRig(t *testing.T, fatal ...string) *rig {
	met := New(Options{KnownErrorCodes: []string{"input_audio_buffer_commit_empty"},
		ResponseStatuses: []string{"completed", "cancelled"}, FatalUpstreamErrors: fatal})
	mgr := lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{met}, FatalUpstreamErrors: fatal})
	met.WatchRelayed(mgr)
	return &rig{t: t, met: met, mgr: mgr}
}

// open starts a session on tr; finish ends its relay's part.
func (r *rig) open(tr lifecycle.Transport) (*lifecycle.Session, func()) {
	release, err := r.mgr.Reserve()
	if err != nil {
		r.t.Fatal(err)
	}
	s := r.mgr.Open(lifecycle.Info{Upstream: "u"})
	s.Start(tr)
	return s, func() { r.mgr.Finished(s, release) }
}

func TestSessionSeries(t *testing.T) {
	r := newRig(t)
	s, finish := r.open(relay{})
	if got := testutil.ToFloat64(r.met.sessionsActive.WithLabelValues("none")); got != 1 {
		t.Fatalf("active %v during the session", got)
	}
	s.Frame(lifecycle.ClientToUpstream, 1300)
	s.Frame(lifecycle.ClientToUpstream, 1300)
	s.Frame(lifecycle.UpstreamToClient, 6400)
	s.End(lifecycle.ReasonAdmin)
	s.End(lifecycle.ReasonIdleTimeout) // only the first counts
	finish()
	if got := testutil.ToFloat64(r.met.sessionsActive.WithLabelValues("none")); got != 0 {
		t.Fatalf("active %v after the end", got)
	}
	for reason, want := range map[lifecycle.Reason]float64{lifecycle.ReasonAdmin: 1, lifecycle.ReasonIdleTimeout: 0} {
		if got := testutil.ToFloat64(r.met.sessionsTotal.WithLabelValues(string(reason), "none")); got != want {
			t.Errorf("sessions_total{%s} = %v, want %v", reason, got, want)
		}
	}
	want := `
# HELP tether_bytes_total Data frame payload bytes relayed, by direction.
# TYPE tether_bytes_total counter
tether_bytes_total{direction="client_to_upstream"} 2600
tether_bytes_total{direction="upstream_to_client"} 6400
# HELP tether_frames_total Data frames relayed, by direction.
# TYPE tether_frames_total counter
tether_frames_total{direction="client_to_upstream"} 2
tether_frames_total{direction="upstream_to_client"} 1
`
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(want), "tether_frames_total", "tether_bytes_total"); err != nil {
		t.Fatal(err)
	}
	// The rig's dialect, and the two created at 0 up front.
	if n := testutil.CollectAndCount(r.met.sessionDuration); n != 1+len(Dialects) {
		t.Fatalf("duration series %d", n)
	}
}

func TestCloseFramesCountWhatWasWritten(t *testing.T) {
	r := newRig(t)
	s, finish := r.open(relay{unsent: [2]bool{false, true}})
	s.End(lifecycle.ReasonClientHeartbeatTimeout) // 1001 to both; the upstream's is not written
	finish()
	s2, finish2 := r.open(relay{})
	s2.End(lifecycle.ReasonUpstreamError) // no close frame meant for the upstream
	finish2()
	for _, c := range []struct {
		leg    lifecycle.Leg
		result int
		want   float64
	}{{lifecycle.Client, 1, 2}, {lifecycle.Client, 0, 0}, {lifecycle.Upstream, 1, 0}, {lifecycle.Upstream, 0, 1}} {
		if got := testutil.ToFloat64(r.met.closeFramesTotal[c.leg][c.result]); got != c.want {
			t.Errorf("close frames %s result %d = %v, want %v", c.leg, c.result, got, c.want)
		}
	}
	if got := testutil.ToFloat64(r.met.heartbeatTimeouts.WithLabelValues("client")); got != 1 {
		t.Errorf("heartbeat timeouts %v", got)
	}
}

func TestAnswerSeries(t *testing.T) {
	r := newRig(t)
	s, finish := r.open(relay{})
	s.AnswerRequested()
	s.AnswerStarted("resp_1")
	s.AnswerAudio([]byte("resp_1"))
	s.AnswerDone("resp_1", "completed", lifecycle.Tokens{InputText: 120, InputAudio: 180, Cached: 64, OutputText: 25, OutputAudio: 87})
	s.End(lifecycle.ReasonClientClosed)
	finish()
	if n := testutil.CollectAndCount(r.met.timeToFirstAudio); n != 1+len(Dialects) {
		t.Fatalf("ttfa series %d", n)
	}
	for kind, want := range map[string]float64{"input_text": 120, "input_audio": 180, "cached": 64, "output_text": 25, "output_audio": 87} {
		if got := testutil.ToFloat64(r.met.tokens.WithLabelValues(kind)); got != want {
			t.Errorf("tokens %s = %v, want %v", kind, got, want)
		}
	}
	if got := testutil.ToFloat64(r.met.responsesTotal.WithLabelValues("completed")); got != 1 {
		t.Errorf("responses completed %v", got)
	}
}

func TestDialAndAvailability(t *testing.T) {
	m := New(Options{})
	m.ObserveDial("openai", "ok", 40*time.Millisecond)
	m.HandshakeRejected("origin")
	up := true
	m.WatchUpstream("openai", func() bool { return up })
	want := "\n# HELP tether_upstream_available 1 when the upstream is dialed, 0 while it sits out its cool-down after repeated failures.\n" +
		"# TYPE tether_upstream_available gauge\ntether_upstream_available{upstream=\"openai\"} %d\n"
	for _, v := range []int{1, 0} {
		up = v == 1
		exp := strings.Replace(want, "%d", string(rune('0'+v)), 1)
		if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(exp), "tether_upstream_available"); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(m.handshakeRejected.WithLabelValues("origin")); got != 1 {
		t.Errorf("rejections %v", got)
	}
	if n := testutil.CollectAndCount(m.dialSeconds); n != 1 {
		t.Errorf("dial series %d", n)
	}
	if n := testutil.CollectAndCount(m.audioSeconds); n != 1 {
		t.Errorf("audio seconds series %d, want the watched upstream's at 0", n)
	}
}

// TestHistogramsExistAtStart: each dialect's duration and time to first
// audio histograms are exported before any observation, so rate() over
// them counts a dialect's first sessions and turns.
func TestHistogramsExistAtStart(t *testing.T) {
	m := New(Options{})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			if h := s.GetHistogram(); h != nil && h.GetSampleCount() == 0 {
				for _, l := range s.GetLabel() {
					if l.GetName() == "dialect" {
						got[f.GetName()] = append(got[f.GetName()], l.GetValue())
					}
				}
			}
		}
	}
	for _, name := range []string{"tether_session_duration_seconds", "tether_time_to_first_audio_seconds"} {
		slices.Sort(got[name])
		if want := slices.Sorted(slices.Values(Dialects)); !slices.Equal(got[name], want) {
			t.Errorf("%s: empty series at start for dialects %v, want %v", name, got[name], want)
		}
	}
}

// A client label that is not UTF-8 does not fail the scrape.
func TestBudgetSpentLabelNotUTF8(t *testing.T) {
	m := New(Options{})
	m.WatchSpending(func() []limits.Spend {
		return []limits.Spend{{Client: "caf\xe9", Spent: state.Usage{Tokens: 5}}, {Client: "bob", Spent: state.Usage{Tokens: 7}}}
	})
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	n := 0
	for _, f := range fams {
		if f.GetName() == "tether_budget_spent" {
			n = len(f.GetMetric())
		}
	}
	if n != 6 {
		t.Errorf("tether_budget_spent series %d, want 6 (two clients, three kinds)", n)
	}
}

// TestHandshakeReasonsExistAtStart: every reason a handshake may be refused
// for is a series at 0 before the first refusal.
func TestHandshakeReasonsExistAtStart(t *testing.T) {
	reasons := []string{"origin", "draining", "client_closed"}
	m := New(Options{HandshakeReasons: reasons})
	if n := testutil.CollectAndCount(m.handshakeRejected); n != len(reasons) {
		t.Fatalf("%d handshake rejection series at start, want %d", n, len(reasons))
	}
	for _, r := range reasons {
		if got := testutil.ToFloat64(m.handshakeRejected.WithLabelValues(r)); got != 0 {
			t.Errorf("reason %q = %v at start, want 0", r, got)
		}
	}
}
