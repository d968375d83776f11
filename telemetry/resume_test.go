package telemetry

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tetherproxy/tether/lifecycle"
)

// TestResumeSpans: each resume attempt is a tether.resume event on the
// session span, at the moment the old upstream session ended, with its
// dials as tether.upstream.dial children; the session span of a call that
// resumed counts its resumes and carries each upstream session's usage.
func TestResumeSpans(t *testing.T) {
	r := newRig(t, sdktrace.AlwaysSample())
	inf := info("")
	s, finish := r.open(inf)
	t1 := inf.RequestedAt.Add(time.Hour)
	t2 := t1.Add(20 * time.Minute)
	r.h.SessionResumed(s, lifecycle.Resume{
		Trigger: lifecycle.TriggerExpired, Result: lifecycle.ResumeOK, From: "primary", Upstream: "backup",
		Dials: []lifecycle.Dial{
			{Upstream: "primary", Result: "rate_limited", Status: 429, Start: t1.Add(time.Millisecond), Duration: 30 * time.Millisecond,
				Err: "429 for key " + secret},
			{Upstream: "backup", Result: "ok", Status: 101, Start: t1.Add(40 * time.Millisecond), Duration: 300 * time.Millisecond},
		},
		Start: t1, Gap: 750 * time.Millisecond, Resumes: 1, HistoryItems: 12, Buffered: 40, Dropped: 3,
	})
	r.h.SessionResumed(s, lifecycle.Resume{
		Trigger: lifecycle.TriggerUpstreamError, Result: lifecycle.ResumeFailed, From: "backup",
		Dials: []lifecycle.Dial{{Upstream: "backup", Result: "refused", Start: t2, Duration: time.Millisecond}},
		Start: t2, Resumes: 1, Buffered: 5, Err: "dial backup: connection refused",
	})
	// The core fills Resumes and Parts in the summary it ends the session
	// with; here the test does, and ends the span itself.
	sum := s.Summary()
	sum.Reason = lifecycle.ReasonUpstreamError
	sum.Resumes = 1
	sum.Tokens = lifecycle.Tokens{Input: 300, Output: 120}
	sum.Parts = []lifecycle.UpstreamPart{
		{Upstream: "primary", Conversation: "sess_A", Tokens: lifecycle.Tokens{Input: 200, Output: 100},
			Duration: time.Hour, Ended: lifecycle.TriggerExpired},
		{Upstream: "backup", Conversation: "sess_B", Tokens: lifecycle.Tokens{Input: 100, Output: 20},
			AudioSeconds: 1.5, Duration: 20 * time.Minute, Ended: lifecycle.TriggerUpstreamError},
	}
	r.h.SessionEnded(s, sum)
	finish() // ends the session: the span is already done

	spans := r.spans()
	sess := one(t, spans, SpanSession)
	checkResumeEvents(t, sess, t1, t2)
	checkResumeDials(t, spans, sess, t1)
	want(t, sess, map[attribute.Key]any{AttrResumes: 1, AttrInputTokens: 300, AttrOutputTokens: 120})
	checkUsageParts(t, sess)
	assertNoSecret(t, spans)
}

// checkResumeEvents asserts TestResumeSpans' two tether.resume events on the
// session span: at t1 and t2, when the upstream sessions ended, with each
// attempt's attributes (the failed one without upstream and gap, the good
// one without error).
func checkResumeEvents(t *testing.T, sess sdktrace.ReadOnlySpan, t1, t2 time.Time) {
	t.Helper()
	var evs []map[attribute.Key]attribute.Value
	var at []time.Time
	for _, e := range sess.Events() {
		if e.Name == EventResume {
			evs = append(evs, attrs(e.Attributes))
			at = append(at, e.Time)
		}
	}
	if len(evs) != 2 {
		t.Fatalf("%d %s events, want 2", len(evs), EventResume)
	}
	if !at[0].Equal(t1) || !at[1].Equal(t2) {
		t.Errorf("%s events at %v, want when the upstream sessions ended (%v, %v)", EventResume, at, t1, t2)
	}
	for i, w := range []map[attribute.Key]any{
		{AttrResumeTrigger: "expired", AttrResumeResult: "ok", AttrResumeFrom: "primary", AttrResumeUpstream: "backup",
			AttrResumeCount: 1, AttrResumeGapMS: 750, AttrResumeHistoryItems: 12, AttrResumeBuffered: 40, AttrResumeDropped: 3},
		{AttrResumeTrigger: "upstream_error", AttrResumeResult: "failed", AttrResumeFrom: "backup",
			AttrResumeCount: 1, AttrResumeHistoryItems: 0, AttrResumeBuffered: 5, AttrResumeDropped: 0,
			AttrResumeError: "dial backup: connection refused"},
	} {
		for k, v := range w {
			if g, ok := evs[i][k]; !ok || fmt.Sprint(g.AsInterface()) != fmt.Sprint(v) {
				t.Errorf("event %d: %s = %v (present %v), want %v", i, k, g.AsInterface(), ok, v)
			}
		}
	}
	for _, k := range []attribute.Key{AttrResumeUpstream, AttrResumeGapMS} {
		if _, ok := evs[1][k]; ok {
			t.Errorf("failed resume event has %s", k)
		}
	}
	if _, ok := evs[0][AttrResumeError]; ok {
		t.Errorf("successful resume event has %s", AttrResumeError)
	}
}

// checkResumeDials asserts the dial spans: the handshake's 2, then the
// resumes' 3, all children of the session span, the first resume dial
// (rate-limited, from t1) at its own times and with an error status.
func checkResumeDials(t *testing.T, spans []sdktrace.ReadOnlySpan, sess sdktrace.ReadOnlySpan, t1 time.Time) {
	t.Helper()
	dials := byName(spans, SpanDial)
	if len(dials) != 5 {
		t.Fatalf("%d dial spans, want 5", len(dials))
	}
	for i, d := range dials[2:] {
		if d.Parent().SpanID() != sess.SpanContext().SpanID() {
			t.Errorf("resume dial %d parent %s, want the session span", i, d.Parent().SpanID())
		}
	}
	if d := dials[2]; !d.StartTime().Equal(t1.Add(time.Millisecond)) || d.EndTime().Sub(d.StartTime()) != 30*time.Millisecond ||
		d.Status().Code != codes.Error {
		t.Errorf("rate-limited resume dial %v+%v status %v, want its own times and an error", d.StartTime(), d.EndTime().Sub(d.StartTime()), d.Status())
	}
	want(t, dials[2], map[attribute.Key]any{AttrUpstreamName: "primary", AttrDialResult: "rate_limited", AttrHTTPStatus: 429})
	want(t, dials[3], map[attribute.Key]any{AttrUpstreamName: "backup", AttrDialResult: "ok"})
	want(t, dials[4], map[attribute.Key]any{AttrUpstreamName: "backup", AttrDialResult: "refused"})
}

// checkUsageParts asserts the session span's usage of each upstream session
// of TestResumeSpans' call.
func checkUsageParts(t *testing.T, sess sdktrace.ReadOnlySpan) {
	t.Helper()
	var parts []map[string]any
	if err := json.Unmarshal([]byte(attrs(sess.Attributes())[AttrUsageParts].AsString()), &parts); err != nil {
		t.Fatalf("%s: %v", AttrUsageParts, err)
	}
	wantParts := []map[string]any{
		{"upstream": "primary", "conversation_id": "sess_A", "input_tokens": 200.0, "output_tokens": 100.0,
			"duration_ms": 3.6e6, "ended": "expired"},
		{"upstream": "backup", "conversation_id": "sess_B", "input_tokens": 100.0, "output_tokens": 20.0,
			"audio_seconds": 1.5, "duration_ms": 1.2e6, "ended": "upstream_error"},
	}
	if !reflect.DeepEqual(parts, wantParts) {
		t.Errorf("%s = %v, want %v", AttrUsageParts, parts, wantParts)
	}
}

// A call that never resumed has neither resume attribute.
func TestNoResumeAttributes(t *testing.T) {
	r := newRig(t, sdktrace.AlwaysSample())
	s, finish := r.open(info(""))
	s.CloseReceived(lifecycle.Client, 1000, "")
	finish()
	a := attrs(one(t, r.spans(), SpanSession).Attributes())
	for _, k := range []attribute.Key{AttrResumes, AttrUsageParts} {
		if _, ok := a[k]; ok {
			t.Errorf("session that never resumed has %s", k)
		}
	}
}
