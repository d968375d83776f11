package telemetry

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tetherproxy/tether/lifecycle"
)

// Span names (contract).
const (
	SpanSession  = "tether.session"
	SpanDial     = "tether.upstream.dial"
	SpanResponse = "tether.response"
)

// Span event names.
const (
	EventHeartbeatTimeout = "tether.heartbeat_timeout"
	EventUpstreamError    = "tether.upstream_error"
	EventCloseSent        = "tether.close_sent"
	EventCloseReceived    = "tether.close_received"
	EventFirstAudio       = "tether.first_audio"
	// EventResume marks an attempt to carry the call over to a new upstream
	// session, at the moment the old one ended.
	EventResume = "tether.resume"
)

// Attribute keys (contract names; OpenTelemetry semantic conventions where one exists).
const (
	AttrSessionID       = attribute.Key("tether.session.id")
	AttrUpstreamName    = attribute.Key("tether.upstream.name")
	AttrUpstreamType    = attribute.Key("tether.upstream.type")
	AttrServerAddress   = attribute.Key("server.address")
	AttrServerPort      = attribute.Key("server.port")
	AttrClientAddress   = attribute.Key("client.address")
	AttrClientPort      = attribute.Key("client.port")
	AttrProviderName    = attribute.Key("gen_ai.provider.name")
	AttrRequestModel    = attribute.Key("gen_ai.request.model")
	AttrResponseModel   = attribute.Key("gen_ai.response.model")
	AttrConversationID  = attribute.Key("gen_ai.conversation.id")
	AttrTeardownReason  = attribute.Key("tether.teardown.reason")
	AttrClientCloseCode = attribute.Key("tether.client.close_code")
	AttrUpstreamClose   = attribute.Key("tether.upstream.close_code")
	AttrBytesToUpstream = attribute.Key("tether.bytes.client_to_upstream")
	AttrBytesToClient   = attribute.Key("tether.bytes.upstream_to_client")
	AttrResponses       = attribute.Key("tether.responses")
	AttrInputTokens     = attribute.Key("gen_ai.usage.input_tokens")
	AttrOutputTokens    = attribute.Key("gen_ai.usage.output_tokens")
	AttrHTTPStatus      = attribute.Key("http.response.status_code")
	AttrErrorType       = attribute.Key("error.type")
	AttrErrorCode       = attribute.Key("error.code")
	AttrDialResult      = attribute.Key("tether.dial.result")
	AttrResponseID      = attribute.Key("gen_ai.response.id")
	AttrResponseStatus  = attribute.Key("tether.response.status")
	AttrTTFA            = attribute.Key("tether.time_to_first_audio_ms")
	AttrTTFASource      = attribute.Key("tether.ttfa.source")
	AttrDialect         = attribute.Key("tether.dialect")
	AttrAudioSeconds    = attribute.Key("tether.usage.audio_seconds")
	AttrUpstreamEnd     = attribute.Key("tether.upstream.end_reason")
	AttrTimeToCreatedMS = attribute.Key("tether.time_to_response_created_ms")
	AttrLeg             = attribute.Key("tether.leg")
	AttrCloseCode       = attribute.Key("tether.close.code")

	// The tether.resume event's attributes.
	AttrResumeTrigger      = attribute.Key("tether.resume.trigger")
	AttrResumeResult       = attribute.Key("tether.resume.result")
	AttrResumeFrom         = attribute.Key("tether.resume.from")
	AttrResumeUpstream     = attribute.Key("tether.resume.upstream")
	AttrResumeCount        = attribute.Key("tether.resume.count")
	AttrResumeGapMS        = attribute.Key("tether.resume.gap_ms")
	AttrResumeHistoryItems = attribute.Key("tether.resume.history_items")
	AttrResumeBuffered     = attribute.Key("tether.resume.buffered")
	AttrResumeDropped      = attribute.Key("tether.resume.dropped")
	AttrResumeError        = attribute.Key("tether.resume.error")
	// AttrResumes (session span) counts the call's successful resumes;
	// AttrUsageParts holds its upstream sessions with their own usage, as
	// one JSON array (see partsJSON for why).
	AttrResumes    = attribute.Key("tether.resumes")
	AttrUsageParts = attribute.Key("tether.usage.parts")
)

// ResponseInterrupted is tether.response.status for a response the session
// ended before its response.done.
const ResponseInterrupted = "interrupted"

// ProviderName maps an upstream type to gen_ai.provider.name.
func ProviderName(upstreamType string) string {
	switch upstreamType {
	case "openai", "mock":
		return "openai"
	case "azure":
		return "azure.ai.openai"
	}
	return upstreamType
}

// Hooks records sessions as spans; it implements [lifecycle.Hooks]. Every
// method is cheap and never blocks: spans end into a bounded, non-blocking
// queue, and the only locks are per session (plus a sync.Map lookup).
type Hooks struct {
	tracer trace.Tracer
	prop   propagation.TraceContext

	// sessions maps *lifecycle.Session to *sessionSpans for sampled
	// sessions, from SessionStarted until SessionEnded.
	sessions sync.Map
}

var _ lifecycle.Hooks = (*Hooks)(nil)

// sessionSpans are the open spans of one sampled session.
type sessionSpans struct {
	span trace.Span // tether.session; immutable

	mu        sync.Mutex
	responses map[string]*responseSpan // open tether.response spans by response id
	ended     bool                     // set by SessionEnded; later hooks do nothing
}

type responseSpan struct {
	span    trace.Span
	created time.Time // response.created
}

// NewHooks returns hooks recording on tp.
func NewHooks(tp trace.TracerProvider) *Hooks {
	return &Hooks{tracer: tp.Tracer("github.com/tetherproxy/tether/telemetry")}
}

// parent returns the client's W3C trace context as a parent context.
func (h *Hooks) parent(info lifecycle.Info) context.Context {
	ctx := context.Background()
	if info.TraceParent == "" {
		return ctx
	}
	carrier := propagation.MapCarrier{"traceparent": info.TraceParent}
	if info.TraceState != "" {
		carrier["tracestate"] = info.TraceState
	}
	return h.prop.Extract(ctx, carrier)
}

// startSession starts a tether.session span at the upgrade request and its
// tether.upstream.dial children, or returns a non-recording span.
func (h *Hooks) startSession(info lifecycle.Info, fallback time.Time, attrs []attribute.KeyValue) trace.Span {
	start := info.RequestedAt
	if start.IsZero() {
		start = fallback
	}
	attrs = appendAddr(attrs, AttrClientAddress, AttrClientPort, info.ClientAddr)
	attrs = appendAddr(attrs, AttrServerAddress, AttrServerPort, info.ServerAddr)
	if info.Upstream != "" {
		attrs = append(attrs, AttrUpstreamName.String(info.Upstream))
	}
	if info.UpstreamType != "" {
		attrs = append(attrs, AttrUpstreamType.String(info.UpstreamType),
			AttrProviderName.String(ProviderName(info.UpstreamType)))
	}
	if info.Model != "" {
		attrs = append(attrs, AttrRequestModel.String(info.Model))
	}
	ctx, span := h.tracer.Start(h.parent(info), SpanSession,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	if !span.IsRecording() {
		return span
	}
	h.dialSpans(ctx, info.Dials, start)
	return span
}

// dialSpans records a tether.upstream.dial child of ctx's span per dial, at
// the dial's own times (from fallback when it has none): the handshake's
// dials and those of each resume. A dial's error text stays out of the span;
// its result names what failed.
func (h *Hooks) dialSpans(ctx context.Context, dials []lifecycle.Dial, fallback time.Time) {
	for _, d := range dials {
		ds := d.Start
		if ds.IsZero() {
			ds = fallback
		}
		da := []attribute.KeyValue{AttrUpstreamName.String(d.Upstream), AttrDialResult.String(d.Result)}
		if d.Status != 0 {
			da = append(da, AttrHTTPStatus.Int(d.Status))
		}
		_, c := h.tracer.Start(ctx, SpanDial, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithTimestamp(ds), trace.WithAttributes(da...))
		if d.Result != "ok" {
			c.SetAttributes(AttrErrorType.String(d.Result))
			c.SetStatus(codes.Error, d.Result)
		}
		c.End(trace.WithTimestamp(ds.Add(d.Duration)))
	}
}

// appendAddr appends host and port of a host:port address (the whole
// string as the address when it has no port).
func appendAddr(attrs []attribute.KeyValue, addrKey, portKey attribute.Key, hostport string) []attribute.KeyValue {
	if hostport == "" {
		return attrs
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return append(attrs, addrKey.String(hostport))
	}
	attrs = append(attrs, addrKey.String(host))
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, portKey.Int(p))
	}
	return attrs
}

// HandshakeFailed records a tether.session span with error status for an
// upgrade that found no upstream; status is the HTTP status sent to the client.
func (h *Hooks) HandshakeFailed(info lifecycle.Info, status int, reason string) {
	span := h.startSession(info, time.Now(), []attribute.KeyValue{
		AttrHTTPStatus.Int(status), AttrTeardownReason.String(reason), AttrErrorType.String(reason),
	})
	span.SetStatus(codes.Error, reason)
	span.End()
}

// SessionStarted starts the session span (at the upgrade request) with its
// dial children and tells the session its trace ids (log line, exemplars).
func (h *Hooks) SessionStarted(s *lifecycle.Session) {
	span := h.startSession(s.Info, s.StartedAt, []attribute.KeyValue{AttrSessionID.String(s.ID)})
	if !span.IsRecording() {
		return
	}
	sc := span.SpanContext()
	if sc.IsSampled() {
		s.SetTrace(sc.TraceID().String(), sc.SpanID().String())
	}
	h.sessions.Store(s, &sessionSpans{span: span, responses: make(map[string]*responseSpan)})
}

func (h *Hooks) lookup(s *lifecycle.Session) *sessionSpans {
	v, ok := h.sessions.Load(s)
	if !ok {
		return nil
	}
	return v.(*sessionSpans)
}

// ResponseStarted starts a tether.response child (response.created).
func (h *Hooks) ResponseStarted(s *lifecycle.Session, responseID string) {
	ss := h.lookup(s)
	if ss == nil {
		return
	}
	now := time.Now()
	_, span := h.tracer.Start(trace.ContextWithSpan(context.Background(), ss.span), SpanResponse,
		trace.WithTimestamp(now), trace.WithAttributes(AttrResponseID.String(responseID)))
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		span.End()
		return
	}
	old := ss.responses[responseID]
	ss.responses[responseID] = &responseSpan{span: span, created: now}
	ss.mu.Unlock()
	if old != nil { // the same id created twice: keep the newer
		old.span.SetAttributes(AttrResponseStatus.String(ResponseInterrupted))
		old.span.End()
	}
}

// FirstAudio records the response's time to first audio (from the end of the
// caller's turn to the first audio delta) and marks the moment with an event.
func (h *Hooks) FirstAudio(s *lifecycle.Session, responseID string, ttfa time.Duration) {
	ss := h.lookup(s)
	if ss == nil {
		return
	}
	now := time.Now()
	if responseID == "" {
		// A stream without responses (GPT-Live): measured from transcripts,
		// the latest on the session span.
		ss.span.SetAttributes(AttrTTFA.Float64(ms(ttfa)), AttrTTFASource.String("transcript"))
		ss.span.AddEvent(EventFirstAudio, trace.WithTimestamp(now),
			trace.WithAttributes(AttrTTFA.Float64(ms(ttfa)), AttrTTFASource.String("transcript")))
		return
	}
	ss.mu.Lock()
	r := ss.responses[responseID]
	ss.mu.Unlock()
	if r == nil {
		return
	}
	// The turn ended at now-ttfa; response.created came at r.created.
	toCreated := max(r.created.Sub(now.Add(-ttfa)), 0)
	r.span.SetAttributes(AttrTTFA.Float64(ms(ttfa)), AttrTimeToCreatedMS.Float64(ms(toCreated)))
	r.span.AddEvent(EventFirstAudio, trace.WithTimestamp(now))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ResponseDone ends the response's span (response.done) with status and usage.
func (h *Hooks) ResponseDone(s *lifecycle.Session, responseID, status string, usage lifecycle.Tokens) {
	ss := h.lookup(s)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	r := ss.responses[responseID]
	delete(ss.responses, responseID)
	ss.mu.Unlock()
	if r == nil {
		return
	}
	r.span.SetAttributes(AttrResponseStatus.String(status),
		AttrInputTokens.Int64(usage.Input), AttrOutputTokens.Int64(usage.Output))
	if status == "failed" {
		r.span.SetStatus(codes.Error, "response failed")
	}
	r.span.End()
}

// UpstreamError adds an event for an upstream `error` event: type and code
// only, never the message.
func (h *Hooks) UpstreamError(s *lifecycle.Session, errType, code string) {
	if ss := h.lookup(s); ss != nil {
		ss.span.AddEvent(EventUpstreamError, trace.WithAttributes(
			AttrErrorType.String(errType), AttrErrorCode.String(code)))
	}
}

// UsageUpdated implements lifecycle.Hooks (the totals go on the session
// span at its end).
func (h *Hooks) UsageUpdated(*lifecycle.Session, lifecycle.Tokens, float64) {}

// HeartbeatRTT implements lifecycle.Hooks (round trips are metrics, not spans).
func (h *Hooks) HeartbeatRTT(*lifecycle.Session, lifecycle.Leg, time.Duration) {}

// HeartbeatTimeout adds an event naming the leg found dead.
func (h *Hooks) HeartbeatTimeout(s *lifecycle.Session, leg lifecycle.Leg) {
	if ss := h.lookup(s); ss != nil {
		ss.span.AddEvent(EventHeartbeatTimeout, trace.WithAttributes(AttrLeg.String(leg.String())))
	}
}

// SessionEnded ends the session span with the teardown figures, the close
// frames as events, and the spans of responses still open.
func (h *Hooks) SessionEnded(s *lifecycle.Session, sum lifecycle.Summary) {
	v, ok := h.sessions.LoadAndDelete(s)
	if !ok {
		return
	}
	ss := v.(*sessionSpans)
	end := s.StartedAt.Add(sum.Duration)
	ss.mu.Lock()
	ss.ended = true
	open := ss.responses
	ss.responses = nil
	ss.mu.Unlock()
	for _, r := range open {
		r.span.SetAttributes(AttrResponseStatus.String(ResponseInterrupted))
		if sum.Reason.IsError() {
			r.span.SetStatus(codes.Error, "session ended before response.done: "+string(sum.Reason))
		}
		r.span.End(trace.WithTimestamp(end))
	}

	span := ss.span
	attrs := []attribute.KeyValue{
		AttrTeardownReason.String(string(sum.Reason)),
		AttrBytesToUpstream.Int64(sum.Bytes[lifecycle.ClientToUpstream]),
		AttrBytesToClient.Int64(sum.Bytes[lifecycle.UpstreamToClient]),
		AttrResponses.Int64(sum.Responses),
		AttrInputTokens.Int64(sum.Tokens.Input),
		AttrOutputTokens.Int64(sum.Tokens.Output),
		AttrDialect.String(sum.Dialect),
	}
	if sum.AudioSeconds > 0 {
		attrs = append(attrs, AttrAudioSeconds.Float64(sum.AudioSeconds))
	}
	if sum.UpstreamEndReason != "" {
		attrs = append(attrs, AttrUpstreamEnd.String(sum.UpstreamEndReason))
	}
	if sum.Resumes > 0 {
		attrs = append(attrs, AttrResumes.Int(sum.Resumes))
		if parts := partsJSON(sum.Parts); parts != "" {
			attrs = append(attrs, AttrUsageParts.String(parts))
		}
	}
	if sum.CloseClient.Code != lifecycle.CodeNone {
		attrs = append(attrs, AttrClientCloseCode.Int(int(sum.CloseClient.Code)))
	}
	if sum.CloseUp.Code != lifecycle.CodeNone {
		attrs = append(attrs, AttrUpstreamClose.Int(int(sum.CloseUp.Code)))
	}
	if sum.Conversation != "" {
		attrs = append(attrs, AttrConversationID.String(sum.Conversation))
	}
	if s.Info.Model == "" && sum.Model != "" {
		attrs = append(attrs, AttrRequestModel.String(sum.Model))
	}
	if sum.Model != "" && sum.Model != s.Info.Model {
		attrs = append(attrs, AttrResponseModel.String(sum.Model))
	}
	if sum.Reason.IsError() {
		attrs = append(attrs, AttrErrorType.String(string(sum.Reason)))
		span.SetStatus(codes.Error, string(sum.Reason))
	}
	span.SetAttributes(attrs...)
	if pc := sum.PeerClose; pc != nil {
		span.AddEvent(EventCloseReceived, trace.WithTimestamp(end), trace.WithAttributes(
			AttrLeg.String(pc.Leg.String()), AttrCloseCode.Int(int(pc.Code))))
	}
	if sum.CloseClient.Code != lifecycle.CodeNone {
		span.AddEvent(EventCloseSent, trace.WithTimestamp(end), trace.WithAttributes(
			AttrLeg.String(lifecycle.Client.String()), AttrCloseCode.Int(int(sum.CloseClient.Code))))
	}
	if sum.CloseUp.Code != lifecycle.CodeNone {
		span.AddEvent(EventCloseSent, trace.WithTimestamp(end), trace.WithAttributes(
			AttrLeg.String(lifecycle.Upstream.String()), AttrCloseCode.Int(int(sum.CloseUp.Code))))
	}
	span.End(trace.WithTimestamp(end))
}

// SessionResumed records an attempt to carry the call over: a tether.resume
// event on the session span, at the moment the old upstream session ended,
// and the attempt's dials as tether.upstream.dial children.
func (h *Hooks) SessionResumed(s *lifecycle.Session, r lifecycle.Resume) {
	ss := h.lookup(s)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	ended := ss.ended
	ss.mu.Unlock()
	if ended {
		return
	}
	at := r.Start
	if at.IsZero() {
		at = time.Now()
	}
	h.dialSpans(trace.ContextWithSpan(context.Background(), ss.span), r.Dials, at)
	attrs := []attribute.KeyValue{
		AttrResumeTrigger.String(string(r.Trigger)),
		AttrResumeResult.String(r.Result),
		AttrResumeFrom.String(r.From),
		AttrResumeCount.Int(r.Resumes),
		AttrResumeHistoryItems.Int(r.HistoryItems),
		AttrResumeBuffered.Int(r.Buffered),
		AttrResumeDropped.Int(r.Dropped),
	}
	if r.Upstream != "" {
		attrs = append(attrs, AttrResumeUpstream.String(r.Upstream))
	}
	if r.Result == lifecycle.ResumeOK {
		attrs = append(attrs, AttrResumeGapMS.Float64(ms(r.Gap)))
	}
	if r.Err != "" {
		attrs = append(attrs, AttrResumeError.String(r.Err)) // redacted by the relay
	}
	ss.span.AddEvent(EventResume, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
}

// spanPart is one upstream session of a call in tether.usage.parts: the
// usage figures the session span itself carries, per part.
type spanPart struct {
	Upstream     string  `json:"upstream"`
	Conversation string  `json:"conversation_id,omitempty"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	AudioSeconds float64 `json:"audio_seconds,omitempty"`
	DurationMS   float64 `json:"duration_ms"`
	Ended        string  `json:"ended,omitempty"`
}

// partsJSON renders a call's upstream sessions as one JSON array, "" for
// none. One attribute rather than indexed ones (tether.usage.parts.0....):
// the Jaeger UI renders a JSON-valued attribute as formatted JSON, one
// object per part, where indexed keys would add fields x parts rows to the
// span's attribute table; the span's attribute count does not grow with
// max_resumes (the SDK keeps 128 by default); and the call's totals stay
// searchable in gen_ai.usage.*.
func partsJSON(parts []lifecycle.UpstreamPart) string {
	if len(parts) == 0 {
		return ""
	}
	out := make([]spanPart, len(parts))
	for i, p := range parts {
		out[i] = spanPart{Upstream: p.Upstream, Conversation: p.Conversation,
			InputTokens: p.Tokens.Input, OutputTokens: p.Tokens.Output, AudioSeconds: p.AudioSeconds,
			DurationMS: ms(p.Duration), Ended: string(p.Ended)}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return ""
	}
	return string(b)
}
