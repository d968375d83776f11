package metrics

import (
	"fmt"
	"strconv"
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
` +
		oneObservation("tether_resume_gap_seconds", `upstream="backup"`, gapBuckets, 2.5) +
		oneObservation("tether_resume_gap_seconds", `upstream="primary"`, gapBuckets, 0.4)
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(want), "tether_resume_gap_seconds"); err != nil {
		t.Fatal(err)
	}
}

// gapBuckets are tether_resume_gap_seconds's bucket bounds.
var gapBuckets = []float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 30}

// oneObservation is the text exposition of the series labels of histogram
// name that holds the one observation v.
func oneObservation(name, labels string, buckets []float64, v float64) string {
	var b strings.Builder
	bucket := func(le string, in bool) {
		n := 0
		if in {
			n = 1
		}
		fmt.Fprintf(&b, "%s_bucket{%s,le=%q} %d\n", name, labels, le, n)
	}
	for _, le := range buckets {
		bucket(strconv.FormatFloat(le, 'g', -1, 64), v <= le)
	}
	bucket("+Inf", true)
	fmt.Fprintf(&b, "%s_sum{%s} %s\n%s_count{%s} 1\n", name, labels, strconv.FormatFloat(v, 'g', -1, 64), name, labels)
	return b.String()
}
