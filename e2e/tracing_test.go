package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// The tracing test runs a real Jaeger v2, built from the Go module by the
// tools module in tools/jaeger (see jaegerBin).

// jaegerBin returns the Jaeger binary: $TETHER_JAEGER, else tools/bin/jaeger
// as built by
//
//	cd e2e/tools/jaeger && go build -o ../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
//
// The test is skipped only when neither exists.
func jaegerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TETHER_JAEGER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TETHER_JAEGER=%s: %v", p, err)
		}
		return p
	}
	p, err := filepath.Abs(filepath.Join("tools", "bin", "jaeger"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no Jaeger binary at %s and TETHER_JAEGER is unset; build it with "+
			"`cd e2e/tools/jaeger && go build -o ../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger`", p)
	}
	return p
}

// jaeger is a running Jaeger v2 with in-memory storage.
type jaeger struct {
	OTLPGRPC string // host:port of the OTLP gRPC receiver
	OTLPHTTP string // host:port of the OTLP HTTP receiver
	Query    string // host:port of the query HTTP API
	http     *http.Client
}

// startJaeger runs bin with testdata/tracing-jaeger.yaml on free loopback
// ports and waits until its query API answers. Cleanup stops it.
func startJaeger(t *testing.T, bin string) *jaeger {
	t.Helper()
	j := &jaeger{OTLPGRPC: testkit.DeadAddr(t), OTLPHTTP: testkit.DeadAddr(t), Query: testkit.DeadAddr(t),
		http: &http.Client{Timeout: stepTimeout, Transport: &http.Transport{DisableKeepAlives: true}}}
	cfg := renderFixture(t, "tracing-jaeger.yaml", map[string]string{
		"OTLPGRPC": j.OTLPGRPC, "OTLPHTTP": j.OTLPHTTP, "QueryHTTP": j.Query, "QueryGRPC": testkit.DeadAddr(t),
	})
	var out testkit.SyncBuffer
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(exitTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("jaeger output:\n%s", out.String())
		}
	})
	testkit.WaitFor(t, startTimeout, "Jaeger's query API", func() bool {
		select {
		case <-exited:
			t.Fatalf("jaeger exited early:\n%s", out.String())
		default:
		}
		code, _, err := j.get("/api/services")
		return err == nil && code == http.StatusOK
	})

	return j
}

func (j *jaeger) get(path string) (int, []byte, error) {
	resp, err := j.http.Get("http://" + j.Query + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Jaeger's query API (v1 JSON model).
type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"` // µs since the epoch
	Duration  int64  `json:"duration"`  // µs
	Tags      []jKV  `json:"tags"`
	Logs      []jLog `json:"logs"`
	ProcessID string `json:"processID"`
}

type jKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type jLog struct {
	Timestamp int64 `json:"timestamp"`
	Fields    []jKV `json:"fields"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []jKV  `json:"tags"`
}

func kv(list []jKV) map[string]any {
	m := make(map[string]any, len(list))
	for _, e := range list {
		m[e.Key] = e.Value
	}
	return m
}

func (s jSpan) tag(k string) (any, bool) {
	v, ok := kv(s.Tags)[k]
	return v, ok
}

func (s jSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// trace polls GET /api/traces/{id} until the trace has a finished
// tether.session span (one carrying its teardown reason) and want spans in
// all; it returns the trace and the raw body.
func (j *jaeger) trace(t *testing.T, id string, want int) (jTrace, string) {
	t.Helper()
	var tr jTrace
	var raw []byte
	var last string
	testkit.WaitFor(t, 3*stepTimeout, fmt.Sprintf("trace %s with %d spans in Jaeger", id, want), func() bool {
		code, body, err := j.get("/api/traces/" + id)
		if err != nil || code != http.StatusOK {
			last = fmt.Sprintf("HTTP %d %v %s", code, err, body)
			return false
		}
		var resp struct {
			Data []jTrace `json:"data"`
		}
		if err := json.Unmarshal(body, &resp); err != nil || len(resp.Data) != 1 {
			last = fmt.Sprintf("%v: %s", err, body)
			return false
		}
		tr, raw, last = resp.Data[0], body, string(body)
		for _, s := range tr.Spans {
			if _, ok := s.tag("tether.teardown.reason"); ok && s.OperationName == "tether.session" {
				return len(tr.Spans) >= want
			}
		}
		return false
	})

	if len(tr.Spans) != want {
		t.Errorf("trace %s has %d spans, want %d: %s", id, len(tr.Spans), want, last)
	}
	return tr, string(raw)
}

// newTraceparent returns a sampled W3C traceparent and its trace and span ids.
func newTraceparent(t *testing.T) (header, traceID, spanID string) {
	t.Helper()
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	traceID, spanID = hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return "00-" + traceID + "-" + spanID + "-01", traceID, spanID
}

// tracedClient dials through tether with a traceparent and, like
// secretClient, every kind of client credential.
func tracedClient(t *testing.T, addr, traceparent string) *rtClient {
	t.Helper()
	c := dialClient(t, addr, clientOpts{
		Path: "/v1/realtime?model=gpt-realtime&api-key=" + clientQueryKey,
		Header: http.Header{"Authorization": {"Bearer " + clientAuthToken},
			"Traceparent": {traceparent}, "Tracestate": {"e2e=1"}},
		Protocols: []string{"realtime", "openai-insecure-api-key." + clientProtoKey},
	})
	c.WaitEvent("session.created", stepTimeout)
	return c
}

// traceExport is how TestTracesInJaeger's tether exports its spans to Jaeger.
type traceExport struct {
	protocol, endpoint string
	// stopFirst stops tether before reading Jaeger, well within the
	// batch processor's default 5 s delay: the spans must arrive
	// through the flush at shutdown. Otherwise tether keeps running
	// and exports every 100 ms.
	stopFirst bool
	env       []string
}

// TestTracesInJaeger runs a normal voice call and one whose upstream resets
// mid-call through tether exporting to a real Jaeger over OTLP gRPC and
// HTTP, and reads the traces back from Jaeger's query API as a user would.
func TestTracesInJaeger(t *testing.T) {
	j := startJaeger(t, jaegerBin(t))
	_, keyPart, _ := newTraceparent(t) // 32 random hex digits
	key := "sk-e2e-trace-" + keyPart
	_, upstreamURL := startMock(t, mock.Options{APIKey: key})
	// What must never reach a span: the upstream key, the client's own
	// credentials, audio (the base64 the client and the mock send).
	audio := base64.StdEncoding.EncodeToString(testAudio(200))[:64]
	secrets := []string{key, clientAuthToken, clientProtoKey, clientQueryKey, audio}

	for _, tc := range []traceExport{
		{"grpc", j.OTLPGRPC, true, nil},
		{"http", "http://" + j.OTLPHTTP, false, []string{"OTEL_BSP_SCHEDULE_DELAY=100"}},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			p := startTether(t, "tracing-tether.yaml", map[string]string{
				"UpstreamURL": upstreamURL, "DeadURL": "ws://" + testkit.DeadAddr(t) + "/v1/realtime",
				"OTLPEndpoint": tc.endpoint, "OTLPProtocol": tc.protocol,
			}, append([]string{"E2E_UPSTREAM_KEY=" + key}, tc.env...)...)
			calls := makeTracedCalls(t, p.Listen)
			if tc.stopFirst {
				p.stop()
			} else {
				checkExemplarAndLog(t, p, calls.normalID, calls.resetID)
			}
			checkTracedCalls(t, j, calls, secrets)
			if !tc.stopFirst {
				if n, ok := p.metric("tether_spans_dropped_total"); !ok || n != 0 {
					t.Errorf("tether_spans_dropped_total = %v (present %v), want 0 with Jaeger up", n, ok)
				}
			}
		})
	}
}

// tracedCalls are the trace ids of the calls makeTracedCalls made.
type tracedCalls struct {
	normalID     string // one voice turn, then the caller hangs up
	normalParent string // the span id of the normal call's traceparent
	resetID      string // one voice turn, then the upstream connection resets
	liveID       string // a GPT-Live call the caller ends with session.close
}

// makeTracedCalls makes three calls through tether at addr, each with a
// traceparent of its own, and returns their trace ids.
func makeTracedCalls(t *testing.T, addr string) tracedCalls {
	t.Helper()
	// A normal call: one voice turn, then the caller hangs up.
	tpNormal, normalID, normalParent := newTraceparent(t)
	c := tracedClient(t, addr, tpNormal)
	c.voiceTurn()
	c.SendClose(1000, "bye")
	c.WaitClose(stepTimeout)
	c.WaitEnd(stepTimeout)

	// A call whose upstream connection resets after a turn.
	tpReset, resetID, _ := newTraceparent(t)
	c2 := tracedClient(t, addr, tpReset)
	c2.voiceTurn()
	c2.fault("rst", nil)
	if ci := c2.WaitClose(stepTimeout); ci.Code != 1014 {
		t.Fatalf("client got close %d after the upstream reset, want 1014", ci.Code)
	}
	c2.WaitEnd(stepTimeout)

	// A GPT-Live call: the caller speaks, hears the echo, and ends it
	// with session.close.
	tpLive, liveID, _ := newTraceparent(t)
	lc := dialLive(t, addr, clientOpts{Header: http.Header{"Traceparent": {tpLive}}})
	lc.speak(500 * time.Millisecond)
	lc.WaitEvent(live.OutputTranscriptDelta, stepTimeout)
	lc.stopMic()
	lc.Send(map[string]any{"type": live.SessionClose})
	lc.WaitEvent(live.SessionClosed, stepTimeout)
	lc.WaitClose(stepTimeout)
	lc.WaitEnd(stepTimeout)
	return tracedCalls{normalID: normalID, normalParent: normalParent, resetID: resetID, liveID: liveID}
}

// checkTracedCalls reads the calls' traces back from Jaeger and asserts
// their spans, that none holds a secret, and that searching service tether
// finds the realtime calls.
func checkTracedCalls(t *testing.T, j *jaeger, calls tracedCalls, secrets []string) {
	t.Helper()
	// 3 spans: the session and two dial attempts (no responses on GPT-Live).
	liveTrace, rawLive := j.trace(t, calls.liveID, 3)
	checkLiveTrace(t, liveTrace)
	checkNoSecret(t, "the GPT-Live span", secrets, rawLive)

	// 4 spans each: the session, two dial attempts, one response.
	normal, rawNormal := j.trace(t, calls.normalID, 4)
	reset, rawReset := j.trace(t, calls.resetID, 4)
	checkCallTrace(t, normal, calls.normalID, "client_closed", 1000)
	checkCallTrace(t, reset, calls.resetID, "upstream_error", 1014)

	sess := spanNamed(t, normal, "tether.session")
	if got := sess.parent(); got != calls.normalParent {
		t.Errorf("session span's parent %q, want the client's traceparent span %s", got, calls.normalParent)
	}
	checkNoSecret(t, "a span", secrets, rawNormal, rawReset)

	// Jaeger lists both calls under service tether.
	code, body, err := j.get("/api/traces?service=tether&operation=tether.session&limit=100&lookback=1h")
	if err != nil || code != http.StatusOK {
		t.Fatalf("search traces: %d %v", code, err)
	}
	for _, id := range []string{calls.normalID, calls.resetID} {
		if !strings.Contains(string(body), `"traceID":"`+id+`"`) {
			t.Errorf("searching service tether does not find trace %s", id)
		}
	}
}

// checkNoSecret asserts that no secret is in the traces' bodies; where
// names their spans for the message.
func checkNoSecret(t *testing.T, where string, secrets []string, bodies ...string) {
	t.Helper()
	for _, body := range bodies {
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("a secret or audio payload is in %s: %q", where, s)
			}
		}
	}
}

// checkLiveTrace asserts what a user reads of a GPT-Live call in Jaeger.
func checkLiveTrace(t *testing.T, tr jTrace) {
	t.Helper()
	sess := spanNamed(t, tr, "tether.session")
	want := map[string]any{"tether.dialect": "live", "tether.teardown.reason": "upstream_closed",
		"tether.upstream.end_reason": "close_requested", "tether.ttfa.source": "transcript"}
	for k, v := range want {
		if got, _ := sess.tag(k); got != v {
			t.Errorf("session span %s = %v, want %v", k, got, v)
		}
	}
	if sec, _ := sess.tag("tether.usage.audio_seconds"); sec == nil || sec.(float64) <= 0 {
		t.Errorf("session span tether.usage.audio_seconds = %v, want > 0", sec)
	}
	if ttfa, _ := sess.tag("tether.time_to_first_audio_ms"); ttfa == nil || ttfa.(float64) <= 0 {
		t.Errorf("session span tether.time_to_first_audio_ms = %v, want > 0", ttfa)
	}
	if id, _ := sess.tag("gen_ai.conversation.id"); !strings.HasPrefix(fmt.Sprint(id), "live_") {
		t.Errorf("gen_ai.conversation.id = %v, want the upstream's live_ id", id)
	}
	dials := 0
	for _, s := range tr.Spans {
		if s.OperationName == "tether.upstream.dial" {
			dials++
			if s.parent() != sess.SpanID {
				t.Errorf("dial span's parent %s, want the session span", s.parent())
			}
		}
	}
	if dials != 2 {
		t.Errorf("%d dial spans, want 2 (the dead upstream, then the mock)", dials)
	}
}

func spanNamed(t *testing.T, tr jTrace, name string) jSpan {
	t.Helper()
	var out []jSpan
	for _, s := range tr.Spans {
		if s.OperationName == name {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("trace %s: %d %s spans, want 1", tr.TraceID, len(out), name)
	}
	return out[0]
}

// checkCallTrace asserts the structure and attributes of one call's trace.
func checkCallTrace(t *testing.T, tr jTrace, traceID, reason string, clientClose float64) {
	t.Helper()
	if tr.TraceID != traceID {
		t.Errorf("trace id %s, want the client's %s", tr.TraceID, traceID)
	}
	sess := spanNamed(t, tr, "tether.session")
	checkTraceResource(t, tr.Processes[sess.ProcessID])
	checkCallSessionTags(t, sess, reason, clientClose)
	checkCloseEvents(t, sess, reason, clientClose)
	checkCallDials(t, tr, sess, reason)
	checkCallResponse(t, tr, sess)
}

// checkTraceResource asserts the resource of tether's spans: service tether,
// with its version and host.
func checkTraceResource(t *testing.T, p jProcess) {
	t.Helper()
	if p.ServiceName != "tether" {
		t.Errorf("service %q, want tether", p.ServiceName)
	}
	for _, k := range []string{"service.version", "host.name"} {
		if _, ok := kv(p.Tags)[k]; !ok {
			t.Errorf("process lacks resource attribute %s: %v", k, p.Tags)
		}
	}
}

// checkCallSessionTags asserts the attributes of a realtime call's session
// span, which ended by reason with clientClose sent to the client, and its
// error status (set by an upstream error only).
func checkCallSessionTags(t *testing.T, sess jSpan, reason string, clientClose float64) {
	t.Helper()
	tags := kv(sess.Tags)
	for _, k := range []string{"tether.session.id", "tether.upstream.name", "server.address", "client.address",
		"gen_ai.provider.name", "gen_ai.request.model", "gen_ai.conversation.id", "tether.teardown.reason",
		"tether.client.close_code", "tether.bytes.client_to_upstream", "tether.bytes.upstream_to_client",
		"tether.responses", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"} {
		if _, ok := tags[k]; !ok {
			t.Errorf("%s session span lacks %s; tags %v", reason, k, tags)
		}
	}
	for k, want := range map[string]any{
		"span.kind": "server", "tether.teardown.reason": reason, "tether.client.close_code": clientClose,
		"tether.upstream.name": "primary", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-realtime",
		"tether.responses": float64(1), "server.address": "127.0.0.1",
	} {
		if tags[k] != want {
			t.Errorf("%s session span %s = %v, want %v", reason, k, tags[k], want)
		}
	}
	if conv, _ := tags["gen_ai.conversation.id"].(string); !strings.HasPrefix(conv, "sess_") {
		t.Errorf("gen_ai.conversation.id %q, want the upstream's sess_ id", conv)
	}
	for _, k := range []string{"tether.bytes.client_to_upstream", "tether.bytes.upstream_to_client", "gen_ai.usage.output_tokens"} {
		if n, _ := tags[k].(float64); n <= 0 {
			t.Errorf("%s session span %s = %v, want > 0", reason, k, tags[k])
		}
	}
	isErr := tags["error"] == true && tags["otel.status_code"] == "ERROR"
	if wantErr := reason == "upstream_error"; isErr != wantErr {
		t.Errorf("%s session span error status %v (tags error=%v otel.status_code=%v), want %v",
			reason, isErr, tags["error"], tags["otel.status_code"], wantErr)
	}
}

// checkCloseEvents asserts that the close frames are events on the session
// span, among them clientClose sent to the client.
func checkCloseEvents(t *testing.T, sess jSpan, reason string, clientClose float64) {
	t.Helper()
	var closes []string
	for _, l := range sess.Logs {
		f := kv(l.Fields)
		if ev, _ := f["event"].(string); strings.HasPrefix(ev, "tether.close_") {
			closes = append(closes, fmt.Sprintf("%s %v %v", ev, f["tether.leg"], f["tether.close.code"]))
		}
	}
	if len(closes) == 0 || !strings.Contains(strings.Join(closes, ","), fmt.Sprintf("tether.close_sent client %v", clientClose)) {
		t.Errorf("%s session events %v, want the close %v sent to the client", reason, closes, clientClose)
	}
}

// checkCallDials asserts the session span's dial children: a failed and a
// good dial attempt, in order, each within the session.
func checkCallDials(t *testing.T, tr jTrace, sess jSpan, reason string) {
	t.Helper()
	var dials []jSpan
	for _, s := range tr.Spans {
		if s.OperationName == "tether.upstream.dial" {
			dials = append(dials, s)
		}
	}
	if len(dials) != 2 {
		t.Fatalf("%s trace: %d dial spans, want 2 (dead, then primary)", reason, len(dials))
	}
	if dials[0].StartTime > dials[1].StartTime {
		dials[0], dials[1] = dials[1], dials[0]
	}
	for i, want := range []struct{ name, result string }{{"dead", "refused"}, {"primary", "ok"}} {
		d := dials[i]
		if d.parent() != sess.SpanID {
			t.Errorf("dial %d parent %s, want the session span %s", i, d.parent(), sess.SpanID)
		}
		dt := kv(d.Tags)
		if dt["tether.upstream.name"] != want.name || (want.result == "ok") != (dt["tether.dial.result"] == "ok") {
			t.Errorf("dial %d: upstream %v result %v, want %s %s", i, dt["tether.upstream.name"], dt["tether.dial.result"], want.name, want.result)
		}
		if d.StartTime < sess.StartTime || d.StartTime+d.Duration > sess.StartTime+sess.Duration {
			t.Errorf("dial %d [%d+%d] is outside its session [%d+%d]", i, d.StartTime, d.Duration, sess.StartTime, sess.Duration)
		}
	}
}

// checkCallResponse asserts the session span's response child: its id,
// status, time to first audio and usage.
func checkCallResponse(t *testing.T, tr jTrace, sess jSpan) {
	t.Helper()
	resp := spanNamed(t, tr, "tether.response")
	if resp.parent() != sess.SpanID {
		t.Errorf("response parent %s, want the session span %s", resp.parent(), sess.SpanID)
	}
	rt := kv(resp.Tags)
	if id, _ := rt["gen_ai.response.id"].(string); id == "" {
		t.Errorf("response span without gen_ai.response.id: %v", rt)
	}
	if rt["tether.response.status"] != "completed" {
		t.Errorf("response status %v, want completed", rt["tether.response.status"])
	}
	ttfa, ok := rt["tether.time_to_first_audio_ms"].(float64)
	if !ok || ttfa <= 0 || ttfa > float64(stepTimeout.Milliseconds()) {
		t.Errorf("tether.time_to_first_audio_ms = %v, want a latency in (0, %v ms)", rt["tether.time_to_first_audio_ms"], stepTimeout.Milliseconds())
	}
	if n, _ := rt["gen_ai.usage.output_tokens"].(float64); n <= 0 {
		t.Errorf("response gen_ai.usage.output_tokens = %v, want > 0", rt["gen_ai.usage.output_tokens"])
	}
}

// checkExemplarAndLog asserts that metrics and logs join the traces: the
// time-to-first-audio histogram carries the last call's trace id as an
// exemplar (one per bucket, the latest wins), and each session-end log line
// names its call's trace id.
func checkExemplarAndLog(t *testing.T, p *proc, traceIDs ...string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := p.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	last := traceIDs[len(traceIDs)-1]
	if !strings.Contains(grepLines(string(body), "tether_time_to_first_audio_seconds_bucket"), `trace_id="`+last+`"`) {
		t.Errorf("no exemplar with trace_id %s on tether_time_to_first_audio_seconds:\n%s",
			last, grepLines(string(body), "tether_time_to_first_audio_seconds"))
	}
	for _, id := range traceIDs {
		testkit.WaitFor(t, stepTimeout, "the session-end log line with trace id "+id, func() bool {
			for _, rec := range p.logRecords() {
				if rec["msg"] == "session ended" && rec["trace_id"] == id {
					return true
				}
			}
			return false
		})

	}
}
