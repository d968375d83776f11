package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherproxy/tether/lifecycle"
)

// TestResumeSeries: every upstream's resume series exist at 0 from the
// start; a resume counts under the upstream that took the call over, a
// failed or exhausted one under the upstream whose session ended; only
// successful resumes observe their gap.
func TestResumeSeries(t *testing.T) {
	r := newRig(t)
	for _, name := range []string{"primary", "backup"} {
		r.met.WatchUpstream(name, func() bool { return true })
	}
	if n, want := testutil.CollectAndCount(r.met.resumesTotal), 2*len(lifecycle.AllTriggers)*len(resumeResults); n != want {
		t.Fatalf("tether_resumes_total has %d series at start, want %d (upstreams x triggers x results)", n, want)
	}
	if n := testutil.CollectAndCount(r.met.resumeGap); n != 2 {
		t.Fatalf("tether_resume_gap_seconds has %d series at start, want one per upstream", n)
	}

	s, finish := r.open(relay{})
	defer finish()
	r.met.SessionResumed(s, lifecycle.Resume{Trigger: lifecycle.TriggerExpired, Result: lifecycle.ResumeOK,
		From: "primary", Upstream: "primary", Gap: 400 * time.Millisecond, Resumes: 1})
	r.met.SessionResumed(s, lifecycle.Resume{Trigger: lifecycle.TriggerUpstreamError, Result: lifecycle.ResumeOK,
		From: "primary", Upstream: "backup", Gap: 2500 * time.Millisecond, Resumes: 2})
	r.met.SessionResumed(s, lifecycle.Resume{Trigger: lifecycle.TriggerUpstreamHeartbeatTimeout, Result: lifecycle.ResumeFailed,
		From: "backup", Gap: time.Hour, Err: "dial: refused"})
	r.met.SessionResumed(s, lifecycle.Resume{Trigger: lifecycle.TriggerFatalEvent, Result: lifecycle.ResumeExhausted,
		From: "backup", Resumes: 2})

	for _, c := range []struct {
		upstream string
		trigger  lifecycle.Trigger
		result   string
		want     float64
	}{
		{"primary", lifecycle.TriggerExpired, lifecycle.ResumeOK, 1},
		{"backup", lifecycle.TriggerUpstreamError, lifecycle.ResumeOK, 1},
		{"primary", lifecycle.TriggerUpstreamError, lifecycle.ResumeOK, 0},
		{"backup", lifecycle.TriggerUpstreamHeartbeatTimeout, lifecycle.ResumeFailed, 1},
		{"backup", lifecycle.TriggerFatalEvent, lifecycle.ResumeExhausted, 1},
	} {
		if got := testutil.ToFloat64(r.met.resumesTotal.WithLabelValues(c.upstream, string(c.trigger), c.result)); got != c.want {
			t.Errorf("tether_resumes_total{upstream=%q,trigger=%q,result=%q} = %v, want %v", c.upstream, c.trigger, c.result, got, c.want)
		}
	}
	if n, want := testutil.CollectAndCount(r.met.resumesTotal), 2*len(lifecycle.AllTriggers)*len(resumeResults); n != want {
		t.Errorf("tether_resumes_total has %d series, want still %d", n, want)
	}

	// The failed attempt's gap is not observed.
	want := `
# HELP tether_resume_gap_seconds From the end of an upstream session to the call going on on the next one (dials and the replay answered), for successful resumes, by the upstream that took the call over.
# TYPE tether_resume_gap_seconds histogram
tether_resume_gap_seconds_bucket{upstream="backup",le="0.05"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="0.1"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="0.25"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="0.5"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="1"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="2"} 0
tether_resume_gap_seconds_bucket{upstream="backup",le="3"} 1
tether_resume_gap_seconds_bucket{upstream="backup",le="5"} 1
tether_resume_gap_seconds_bucket{upstream="backup",le="10"} 1
tether_resume_gap_seconds_bucket{upstream="backup",le="30"} 1
tether_resume_gap_seconds_bucket{upstream="backup",le="+Inf"} 1
tether_resume_gap_seconds_sum{upstream="backup"} 2.5
tether_resume_gap_seconds_count{upstream="backup"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="0.05"} 0
tether_resume_gap_seconds_bucket{upstream="primary",le="0.1"} 0
tether_resume_gap_seconds_bucket{upstream="primary",le="0.25"} 0
tether_resume_gap_seconds_bucket{upstream="primary",le="0.5"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="1"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="2"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="3"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="5"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="10"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="30"} 1
tether_resume_gap_seconds_bucket{upstream="primary",le="+Inf"} 1
tether_resume_gap_seconds_sum{upstream="primary"} 0.4
tether_resume_gap_seconds_count{upstream="primary"} 1
`
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(want), "tether_resume_gap_seconds"); err != nil {
		t.Fatal(err)
	}
}
