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
	errEv := func(code string) []byte {
		return fmt.Appendf(nil, `{"type":"error","error":{"type":"invalid_request_error","code":%q}}`, code)
	}
	for i := range 200 {
		s.Captured(UpstreamToClient, []byte("error"), errEv(fmt.Sprintf("made_up_code_%d", i)))
		s.Captured(UpstreamToClient, []byte("response.created"), fmt.Appendf(nil, `{"type":"response.created","response":{"id":"resp_%d"}}`, i))
		s.Captured(UpstreamToClient, []byte("response.done"),
			fmt.Appendf(nil, `{"type":"response.done","response":{"id":"resp_%d","status":"weird_status_%d"}}`, i, i))
	}
	s.Captured(UpstreamToClient, []byte("error"), errEv("input_audio_buffer_commit_empty"))
	s.Captured(UpstreamToClient, []byte("error"), []byte(`{"type":"error","error":{"type":"server_error","code":null}}`))
	s.Captured(UpstreamToClient, []byte("response.done"), []byte(`{"type":"response.done","response":{"id":"r","status":"cancelled"}}`))
	s.Captured(UpstreamToClient, []byte("response.done"), []byte(`{"type":"response.done","response":{"id":"r2"}}`))
	s.Captured(UpstreamToClient, []byte("error"), errEv("site_specific_fatal")) // configured: its own series, and it ends the session
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
