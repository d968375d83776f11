package lifecycle

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUpstreamLabelValuesAreBounded: error codes and response statuses
// chosen by the upstream cannot grow the series set; anything unknown is
// counted as "other", known and configured-fatal values keep their name.
func TestUpstreamLabelValuesAreBounded(t *testing.T) {
	met := NewMetrics()
	if n := testutil.CollectAndCount(met.Registry, "tether_upstream_errors_total"); n != 3 {
		t.Fatalf("pre-registered tether_upstream_errors_total series = %d, want 3", n)
	}
	m := NewManager(Options{Metrics: met, FatalUpstreamErrors: []string{"session_expired", "site_specific_fatal"}})
	s, _, finish := open(t, m)
	for i := range 200 {
		s.UpstreamError("invalid_request_error", fmt.Sprintf("made_up_code_%d", i))
		s.AnswerStarted(fmt.Sprintf("resp_%d", i))
		s.AnswerDone(fmt.Sprintf("resp_%d", i), fmt.Sprintf("weird_status_%d", i), Tokens{})
	}
	s.UpstreamError("invalid_request_error", "input_audio_buffer_commit_empty")
	s.UpstreamError("server_error", "") // code null
	s.AnswerDone("r", "cancelled", Tokens{})
	s.AnswerDone("r2", "", Tokens{})                                // no status
	s.UpstreamError("invalid_request_error", "site_specific_fatal") // configured: its own series, and it ends the session
	finish()
	if s.Summary().Reason != ReasonUpstreamFatalEvent {
		t.Fatalf("reason %s, want upstream_fatal_event", s.Summary().Reason)
	}
	// 3 pre-registered + other, input_audio_buffer_commit_empty, none, site_specific_fatal.
	if n := testutil.CollectAndCount(met.Registry, "tether_upstream_errors_total"); n != 7 {
		t.Errorf("tether_upstream_errors_total has %d series, want 7", n)
	}
	for code, want := range map[string]float64{"other": 200, "input_audio_buffer_commit_empty": 1, "none": 1,
		"site_specific_fatal": 1, "session_expired": 0} {
		if got := testutil.ToFloat64(met.upstreamErrors.WithLabelValues(code)); got != want {
			t.Errorf("tether_upstream_errors_total{code=%q} = %v, want %v", code, got, want)
		}
	}
	// other, cancelled, unknown (no status).
	if n := testutil.CollectAndCount(met.Registry, "tether_responses_total"); n != 3 {
		t.Errorf("tether_responses_total has %d series, want 3", n)
	}
	for status, want := range map[string]float64{"other": 200, "cancelled": 1, "unknown": 1} {
		if got := testutil.ToFloat64(met.responsesTotal.WithLabelValues(status)); got != want {
			t.Errorf("tether_responses_total{status=%q} = %v, want %v", status, got, want)
		}
	}
}
