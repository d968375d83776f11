package telemetry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/lifecycle"
)

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	// secret stands for every credential and payload that must stay out of spans.
	secret = "sk-proj-SECRETzz91"
)

// rig is a lifecycle manager whose sessions are recorded by Hooks into an
// in-memory span recorder.
type rig struct {
	t   *testing.T
	sr  *tracetest.SpanRecorder
	tp  *sdktrace.TracerProvider
	h   *Hooks
	mgr *lifecycle.Manager
}

func newRig(t *testing.T, sampler sdktrace.Sampler) *rig {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	h := NewHooks(tp)
	mgr := lifecycle.NewManager(lifecycle.Options{
		Hooks:               []lifecycle.Hooks{h},
		FatalUpstreamErrors: []string{"session_expired"},
	})
	return &rig{t: t, sr: sr, tp: tp, h: h, mgr: mgr}
}

// info is a session's start record: a client trace context, a failed dial
// and a good one, and secrets where a careless recorder might pick them up.
func info(traceparent string) lifecycle.Info {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return lifecycle.Info{
		Upstream: "primary", UpstreamType: "openai",
		ClientAddr: "10.0.0.7:51234", ServerAddr: "127.0.0.1:8080",
		Model: "gpt-realtime", RequestedAt: t0,
		TraceParent: traceparent, TraceState: "vendor=abc",
		Dials: []lifecycle.Dial{
			{Upstream: "backup", Result: "refused", Start: t0.Add(time.Millisecond), Duration: 3 * time.Millisecond,
				Err: "dial tcp: refused api-key=" + secret},
			{Upstream: "primary", Result: "ok", Status: 101, Start: t0.Add(5 * time.Millisecond), Duration: 40 * time.Millisecond},
		},
	}
}

func traceparent(flags string) string {
	return "00-" + clientTraceID + "-" + clientSpanID + "-" + flags
}

// open starts a session and returns it with its finisher.
func (r *rig) open(inf lifecycle.Info) (*lifecycle.Session, func()) {
	r.t.Helper()
	release, err := r.mgr.Reserve()
	if err != nil {
		r.t.Fatal(err)
	}
	if inf.Dialect == nil {
		inf.Dialect = realtime.Dialect{}
	}
	s := r.mgr.Open(inf)
	return s, func() { r.mgr.Finished(s, release) }
}

// up feeds a captured upstream event.
func up(s *lifecycle.Session, typ, payload string) {
	s.Captured([]byte(typ), []byte(payload))
}

// turn runs one voice turn: commit, response.created, first audio delta,
// response.done with usage.
func turn(s *lifecycle.Session, id string, wait time.Duration) {
	s.Event(lifecycle.ClientToUpstream, []byte("input_audio_buffer.commit"), nil)
	time.Sleep(wait)
	up(s, "response.created", `{"type":"response.created","response":{"id":"`+id+`","status":"in_progress"}}`)
	s.Event(lifecycle.UpstreamToClient, []byte("response.output_audio.delta"), []byte(id))
	up(s, "response.done", `{"type":"response.done","response":{"id":"`+id+`","status":"completed",`+
		`"usage":{"input_tokens":120,"output_tokens":80,"input_token_details":{"audio_tokens":100,"text_tokens":20},`+
		`"output_token_details":{"audio_tokens":70,"text_tokens":10}}}}`)
}

func (r *rig) spans() []sdktrace.ReadOnlySpan { return r.sr.Ended() }

func byName(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	got := byName(spans, name)
	if len(got) != 1 {
		t.Fatalf("%d %s spans, want 1 (all: %v)", len(got), name, names(spans))
	}
	return got[0]
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// want checks that span s carries each attribute with the given value
// (string, int or int64, compared as emitted).
func want(t *testing.T, s sdktrace.ReadOnlySpan, kv map[attribute.Key]any) {
	t.Helper()
	got := attrs(s.Attributes())
	for k, v := range kv {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: no attribute %s", s.Name(), k)
			continue
		}
		if fmt.Sprint(g.AsInterface()) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v", s.Name(), k, g.AsInterface(), v)
		}
	}
}

func TestVoiceSessionSpans(t *testing.T) {
	r := newRig(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	s, finish := r.open(info(traceparent("01")))
	up(s, "session.created", `{"type":"session.created","session":{"id":"sess_ABC","model":"gpt-realtime-2025-08-28"}}`)
	s.Frame(lifecycle.ClientToUpstream, 1000)
	s.Frame(lifecycle.UpstreamToClient, 3000)
	turn(s, "resp_1", 20*time.Millisecond)
	up(s, "error", `{"type":"error","error":{"type":"invalid_request_error","code":"input_audio_buffer_commit_empty","message":"`+secret+`"}}`)
	s.CloseReceived(lifecycle.Client, 1000, "bye "+secret)
	finish()

	spans := r.spans()
	if len(spans) != 4 {
		t.Fatalf("spans %v, want session, 2 dials, 1 response", names(spans))
	}
	sess := one(t, spans, SpanSession)
	checkVoiceSessionSpan(t, s, sess)
	checkVoiceSessionEvents(t, sess)
	checkVoiceDials(t, s, spans, sess.SpanContext().SpanID())
	checkVoiceResponse(t, spans, sess.SpanContext().SpanID())
	assertNoSecret(t, spans)
}

// checkVoiceSessionSpan asserts the session span of TestVoiceSessionSpans'
// call s: a server span in the client's trace from the upgrade request on,
// with the call's attributes, and its ids where logs and exemplars take them.
func checkVoiceSessionSpan(t *testing.T, s *lifecycle.Session, sess sdktrace.ReadOnlySpan) {
	t.Helper()
	sc := sess.SpanContext()
	if sc.TraceID().String() != clientTraceID || sess.Parent().SpanID().String() != clientSpanID || !sess.Parent().IsRemote() {
		t.Errorf("session span trace %s parent %s, want the client's traceparent %s/%s",
			sc.TraceID(), sess.Parent().SpanID(), clientTraceID, clientSpanID)
	}
	if sc.TraceState().Get("vendor") != "abc" {
		t.Errorf("tracestate %q, want the client's vendor=abc", sc.TraceState().String())
	}
	if sess.SpanKind() != trace.SpanKindServer {
		t.Errorf("session span kind %v, want server", sess.SpanKind())
	}
	if !sess.StartTime().Equal(s.Info.RequestedAt) {
		t.Errorf("session span starts %v, want the upgrade request %v", sess.StartTime(), s.Info.RequestedAt)
	}
	if sess.Status().Code == codes.Error {
		t.Errorf("client_closed session has error status %v", sess.Status())
	}
	want(t, sess, map[attribute.Key]any{
		AttrSessionID: s.ID, AttrUpstreamName: "primary", AttrProviderName: "openai",
		AttrServerAddress: "127.0.0.1", AttrServerPort: 8080,
		AttrClientAddress: "10.0.0.7", AttrClientPort: 51234,
		AttrRequestModel: "gpt-realtime", AttrResponseModel: "gpt-realtime-2025-08-28",
		AttrConversationID: "sess_ABC", AttrTeardownReason: "client_closed",
		AttrClientCloseCode: 1000, AttrUpstreamClose: 1000,
		AttrBytesToUpstream: 1000, AttrBytesToClient: 3000, AttrResponses: 1,
		AttrInputTokens: 120, AttrOutputTokens: 80,
	})
	if got := s.TraceID(); got != clientTraceID {
		t.Errorf("session trace id for logs and exemplars %q, want %s", got, clientTraceID)
	}
	if sum := s.Summary(); sum.SpanID != sc.SpanID().String() {
		t.Errorf("summary span id %q, want the session span's %s", sum.SpanID, sc.SpanID())
	}
}

// checkVoiceSessionEvents asserts the session span's events: the upstream
// error (type and code only) and the close frames.
func checkVoiceSessionEvents(t *testing.T, sess sdktrace.ReadOnlySpan) {
	t.Helper()
	var evs []string
	for _, e := range sess.Events() {
		a := attrs(e.Attributes)
		evs = append(evs, fmt.Sprintf("%s %s %s %s %v", e.Name, a[AttrErrorType].AsString(), a[AttrErrorCode].AsString(),
			a[AttrLeg].AsString(), a[AttrCloseCode].AsInt64()))
	}
	wantEvs := []string{
		EventUpstreamError + " invalid_request_error input_audio_buffer_commit_empty  0",
		EventCloseReceived + "   client 1000",
		EventCloseSent + "   client 1000",
		EventCloseSent + "   upstream 1000",
	}
	if strings.Join(evs, "\n") != strings.Join(wantEvs, "\n") {
		t.Errorf("session events:\n%s\nwant:\n%s", strings.Join(evs, "\n"), strings.Join(wantEvs, "\n"))
	}
}

// checkVoiceDials asserts one dial span per attempt of s, a child of the
// session span, at the attempt's own times.
func checkVoiceDials(t *testing.T, s *lifecycle.Session, spans []sdktrace.ReadOnlySpan, session trace.SpanID) {
	t.Helper()
	dials := byName(spans, SpanDial)
	if len(dials) != 2 {
		t.Fatalf("%d dial spans, want 2", len(dials))
	}
	for i, d := range dials {
		rec := s.Info.Dials[i]
		if d.Parent().SpanID() != session {
			t.Errorf("dial %d parent %s, want the session span", i, d.Parent().SpanID())
		}
		if !d.StartTime().Equal(rec.Start) || d.EndTime().Sub(d.StartTime()) != rec.Duration {
			t.Errorf("dial %d spans %v+%v, want %v+%v", i, d.StartTime(), d.EndTime().Sub(d.StartTime()), rec.Start, rec.Duration)
		}
		want(t, d, map[attribute.Key]any{AttrUpstreamName: rec.Upstream, AttrDialResult: rec.Result})
	}
	if dials[0].Status().Code != codes.Error {
		t.Errorf("refused dial status %v, want error", dials[0].Status())
	}
	want(t, dials[1], map[attribute.Key]any{AttrHTTPStatus: 101})
}

// checkVoiceResponse asserts the response span, a child of the session
// span: id, status, usage, time to first audio from the commit.
func checkVoiceResponse(t *testing.T, spans []sdktrace.ReadOnlySpan, session trace.SpanID) {
	t.Helper()
	resp := one(t, spans, SpanResponse)
	if resp.Parent().SpanID() != session {
		t.Errorf("response parent %s, want the session span", resp.Parent().SpanID())
	}
	want(t, resp, map[attribute.Key]any{AttrResponseID: "resp_1", AttrResponseStatus: "completed",
		AttrInputTokens: 120, AttrOutputTokens: 80})
	ttfa, ok := attrs(resp.Attributes())[AttrTTFA]
	if !ok || ttfa.AsFloat64() < 20 {
		t.Errorf("%s = %v (present %v), want at least the 20 ms between commit and response", AttrTTFA, ttfa.AsFloat64(), ok)
	}
	if created := attrs(resp.Attributes())[AttrTimeToCreatedMS].AsFloat64(); created < 20 || created > ttfa.AsFloat64() {
		t.Errorf("%s = %v, want between 20 and the TTFA %v", AttrTimeToCreatedMS, created, ttfa.AsFloat64())
	}
	if len(resp.Events()) != 1 || resp.Events()[0].Name != EventFirstAudio {
		t.Errorf("response events %v, want one %s", resp.Events(), EventFirstAudio)
	}
}

// assertNoSecret fails if any name, attribute or event of spans holds secret.
func assertNoSecret(t *testing.T, spans []sdktrace.ReadOnlySpan) {
	t.Helper()
	for _, s := range spans {
		all := fmt.Sprint(s.Name(), s.Attributes(), s.Status(), s.SpanContext().TraceState().String())
		for _, e := range s.Events() {
			all += fmt.Sprint(e.Name, e.Attributes)
		}
		if strings.Contains(all, secret) {
			t.Errorf("span %s holds a secret: %s", s.Name(), all)
		}
	}
}

func TestUpstreamResetMidResponse(t *testing.T) {
	r := newRig(t, sdktrace.AlwaysSample())
	s, finish := r.open(info(""))
	turn(s, "resp_1", 0)
	up(s, "response.created", `{"type":"response.created","response":{"id":"resp_2"}}`)
	s.LegError(lifecycle.Upstream, fmt.Errorf("read: connection reset by peer"))
	finish()

	spans := r.spans()
	sess := one(t, spans, SpanSession)
	if sess.Parent().IsValid() {
		t.Errorf("session without traceparent has parent %s, want a root span", sess.Parent().SpanID())
	}
	if sess.Status().Code != codes.Error || sess.Status().Description != "upstream_error" {
		t.Errorf("status %v, want error upstream_error", sess.Status())
	}
	want(t, sess, map[attribute.Key]any{AttrTeardownReason: "upstream_error", AttrClientCloseCode: 1014,
		AttrErrorType: "upstream_error", AttrResponses: 2})
	if _, ok := attrs(sess.Attributes())[AttrUpstreamClose]; ok {
		t.Errorf("%s set, but no close frame went upstream after a reset", AttrUpstreamClose)
	}
	var got []string
	for _, e := range sess.Events() {
		got = append(got, e.Name+" "+attrs(e.Attributes)[AttrLeg].AsString())
	}
	if strings.Join(got, ",") != EventCloseSent+" client" {
		t.Errorf("session events %v, want only the close sent to the client", got)
	}
	resps := byName(spans, SpanResponse)
	if len(resps) != 2 {
		t.Fatalf("%d response spans, want 2", len(resps))
	}
	for _, rs := range resps {
		a := attrs(rs.Attributes())
		switch a[AttrResponseID].AsString() {
		case "resp_1":
			if a[AttrResponseStatus].AsString() != "completed" || rs.Status().Code == codes.Error {
				t.Errorf("finished response: status %v / %v", a[AttrResponseStatus], rs.Status())
			}
		case "resp_2":
			if a[AttrResponseStatus].AsString() != ResponseInterrupted || rs.Status().Code != codes.Error {
				t.Errorf("cut response: status %v / %v, want %s and error", a[AttrResponseStatus], rs.Status(), ResponseInterrupted)
			}
			if !rs.EndTime().Equal(sess.EndTime()) {
				t.Errorf("cut response ends %v, want with the session %v", rs.EndTime(), sess.EndTime())
			}
			if _, ok := a[AttrTTFA]; ok {
				t.Errorf("cut response without audio has %s", AttrTTFA)
			}
		}
	}
}

func TestHeartbeatTimeoutAndFatalErrorEvents(t *testing.T) {
	r := newRig(t, sdktrace.AlwaysSample())
	s, finish := r.open(info(""))
	s.End(lifecycle.ReasonUpstreamHeartbeatTimeout)
	finish()
	s2, finish2 := r.open(info(""))
	up(s2, "error", `{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"expired"}}`)
	finish2()

	for _, sp := range byName(r.spans(), SpanSession) {
		a := attrs(sp.Attributes())
		var evs []string
		for _, e := range sp.Events() {
			ea := attrs(e.Attributes)
			evs = append(evs, strings.TrimSpace(e.Name+" "+ea[AttrLeg].AsString()+" "+ea[AttrErrorCode].AsString()))
		}
		switch a[AttrTeardownReason].AsString() {
		case "upstream_heartbeat_timeout":
			want(t, sp, map[attribute.Key]any{AttrClientCloseCode: 4002, AttrUpstreamClose: 1001})
			if len(evs) == 0 || evs[0] != EventHeartbeatTimeout+" upstream" {
				t.Errorf("heartbeat timeout events %v, want %s upstream first", evs, EventHeartbeatTimeout)
			}
		case "upstream_fatal_event":
			want(t, sp, map[attribute.Key]any{AttrClientCloseCode: 1014, AttrUpstreamClose: 1000})
			if len(evs) == 0 || evs[0] != EventUpstreamError+"  session_expired" {
				t.Errorf("fatal error events %v, want the upstream error first", evs)
			}
		default:
			t.Errorf("unexpected session reason %v", a[AttrTeardownReason])
		}
		if sp.Status().Code != codes.Error {
			t.Errorf("%v: status %v, want error", a[AttrTeardownReason], sp.Status())
		}
	}
	if n := len(byName(r.spans(), SpanSession)); n != 2 {
		t.Errorf("%d session spans, want 2", n)
	}
}

func TestHandshakeFailureSpan(t *testing.T) {
	r := newRig(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	inf := info(traceparent("01"))
	inf.Upstream, inf.UpstreamType = "", ""
	inf.Dials = inf.Dials[:1]
	r.mgr.HandshakeFailed(inf, 502, "upstream_unavailable")

	spans := r.spans()
	sess := one(t, spans, SpanSession)
	if sess.Status().Code != codes.Error {
		t.Errorf("failed handshake status %v, want error", sess.Status())
	}
	if sess.SpanContext().TraceID().String() != clientTraceID {
		t.Errorf("failed handshake trace %s, want the client's", sess.SpanContext().TraceID())
	}
	want(t, sess, map[attribute.Key]any{AttrHTTPStatus: 502, AttrTeardownReason: "upstream_unavailable",
		AttrErrorType: "upstream_unavailable", AttrClientAddress: "10.0.0.7"})
	d := one(t, spans, SpanDial)
	if d.Parent().SpanID() != sess.SpanContext().SpanID() {
		t.Error("dial span is not a child of the failed session span")
	}
	want(t, d, map[attribute.Key]any{AttrDialResult: "refused", AttrUpstreamName: "backup"})
	assertNoSecret(t, spans)
}

func TestUnsampledParentRecordsNothing(t *testing.T) {
	r := newRig(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	s, finish := r.open(info(traceparent("00")))
	turn(s, "resp_1", 0)
	s.CloseReceived(lifecycle.Client, 1000, "")
	finish()
	if spans := r.spans(); len(spans) != 0 {
		t.Errorf("client said not sampled, got spans %v", names(spans))
	}
	if s.TraceID() != "" {
		t.Errorf("unsampled session set trace id %q for exemplars", s.TraceID())
	}
}

func TestProviderName(t *testing.T) {
	for typ, want := range map[string]string{"openai": "openai", "mock": "openai", "azure": "azure.ai.openai", "generic": "generic"} {
		if got := ProviderName(typ); got != want {
			t.Errorf("ProviderName(%q) = %q, want %q", typ, got, want)
		}
	}
}

// BenchmarkSessionHooks measures what tracing adds to one session with one
// voice turn (all hooks, spans recorded and dropped by a no-op processor).
func BenchmarkSessionHooks(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(b.Context()) }()
	h := NewHooks(tp)
	mgr := lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{h}})
	inf := info(traceparent("01"))
	b.ReportAllocs()
	for b.Loop() {
		release, _ := mgr.Reserve()
		s := mgr.Open(inf)
		turn(s, "resp_1", 0)
		s.CloseReceived(lifecycle.Client, 1000, "")
		mgr.Finished(s, release)
	}
}
