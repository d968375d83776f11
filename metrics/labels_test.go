package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherproxy/tether/lifecycle"
)

// TestUpstreamLabelValuesAreBounded: error codes and response statuses
// chosen by the upstream cannot grow the series set; anything unknown is
// counted as "other", known and configured-fatal values keep their name.
func TestUpstreamLabelValuesAreBounded(t *testing.T) {
	r := newRig(t, "session_expired", "site_specific_fatal")
	met := r.met
	if n := testutil.CollectAndCount(met.Registry, "tether_upstream_errors_total"); n != 2 {
		t.Fatalf("pre-registered tether_upstream_errors_total series = %d, want the 2 fatal codes", n)
	}
	s, finish := r.open(relay{})
	for i := range 200 {
		s.UpstreamError("invalid_request_error", fmt.Sprintf("made_up_code_%d", i))
		s.AnswerStarted(fmt.Sprintf("resp_%d", i))
		s.AnswerDone(fmt.Sprintf("resp_%d", i), fmt.Sprintf("weird_status_%d", i), lifecycle.Tokens{})
	}
	s.UpstreamError("invalid_request_error", "input_audio_buffer_commit_empty")
	s.UpstreamError("server_error", "") // code null
	s.AnswerDone("r", "cancelled", lifecycle.Tokens{})
	s.AnswerDone("r2", "", lifecycle.Tokens{})                      // no status
	s.UpstreamError("invalid_request_error", "site_specific_fatal") // configured: its own series, and it ends the session
	finish()
	if s.Summary().Reason != lifecycle.ReasonUpstreamFatalEvent {
		t.Fatalf("reason %s, want upstream_fatal_event", s.Summary().Reason)
	}
	// the 2 fatal codes + other, input_audio_buffer_commit_empty, none.
	if n := testutil.CollectAndCount(met.Registry, "tether_upstream_errors_total"); n != 5 {
		t.Errorf("tether_upstream_errors_total has %d series, want 5", n)
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
