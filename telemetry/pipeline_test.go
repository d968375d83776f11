package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tetherproxy/tether/internal/testkit/prom"
	"github.com/tetherproxy/tether/lifecycle"
)

// blockingExporter holds every export until release is closed, like a
// collector that accepted the connection and never answers.
type blockingExporter struct {
	release  chan struct{}
	mu       sync.Mutex
	exported int
}

func (e *blockingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	e.exported += len(spans)
	e.mu.Unlock()
	return nil
}

func (e *blockingExporter) Shutdown(context.Context) error { return nil }

// failingExporter rejects every batch, like an unreachable collector once
// the exporter's retries are spent.
type failingExporter struct{}

func (failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("connection refused")
}
func (failingExporter) Shutdown(context.Context) error { return nil }

// dropped reads tether_spans_dropped_total{reason} from reg.
func dropped(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	v, ok := prom.Counter(t, reg, "tether_spans_dropped_total", "reason", reason)
	if !ok {
		t.Fatalf("tether_spans_dropped_total{reason=%q} not registered", reason)
	}
	return v
}

// endSpans ends n root spans on p's tracer and returns how long it took.
func endSpans(p *Provider, n int) time.Duration {
	tr := p.tp.Tracer("test")
	start := time.Now()
	for range n {
		_, s := tr.Start(context.Background(), "x")
		s.End()
	}
	return time.Since(start)
}

func TestFullQueueDropsAndCountsWithoutBlocking(t *testing.T) {
	reg := prometheus.NewRegistry()
	exp := &blockingExporter{release: make(chan struct{})}
	const queue, n = 4, 1000
	p := newProvider(exp, Options{SampleRatio: 1, Registerer: reg}, resource.Empty(), queue,
		sdktrace.WithMaxExportBatchSize(1), sdktrace.WithBatchTimeout(time.Millisecond))
	// The collector hangs: ending spans must still return at once.
	if d := endSpans(p, n); d > time.Second {
		t.Errorf("ending %d spans with a hung exporter took %v", n, d)
	}
	if got := dropped(t, reg, DropQueueFull); got != n-queue {
		t.Errorf("queue_full drops %v, want %d (all but the queue's %d)", got, n-queue, queue)
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	if exp.exported != queue {
		t.Errorf("exported %d spans, want the %d queued ones", exp.exported, queue)
	}
	if got := dropped(t, reg, DropExportFailed); got != 0 {
		t.Errorf("export_failed %v, want 0", got)
	}
}

func TestFailedExportsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newProvider(failingExporter{}, Options{SampleRatio: 1, Registerer: reg}, resource.Empty(), 64)
	endSpans(p, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := dropped(t, reg, DropExportFailed); got != 10 {
		t.Errorf("export_failed %v, want 10", got)
	}
	if got := dropped(t, reg, DropQueueFull); got != 0 {
		t.Errorf("queue_full %v, want 0", got)
	}
}

func TestShutdownIsBoundedWhenTheCollectorHangs(t *testing.T) {
	exp := &blockingExporter{release: make(chan struct{})}
	p := newProvider(exp, Options{SampleRatio: 1}, resource.Empty(), 8)
	endSpans(p, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with a 200ms context", d)
	}
	if err == nil {
		t.Error("Shutdown reported success although the spans could not be sent")
	}
	close(exp.release) // let the processor's goroutine finish (goleak)
}

func TestSampleRatio(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ratio       float64
		traceparent string
		want        int // session spans
	}{
		{"ratio 0 drops new traces", 0, "", 0},
		{"ratio 0 keeps a sampled parent's trace", 0, traceparent("01"), 1},
		{"ratio 1 honours an unsampled parent", 1, traceparent("00"), 0},
		{"ratio 1 samples new traces", 1, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			p := newProvider(exp, Options{SampleRatio: tc.ratio}, resource.Empty(), 64)
			mgr := lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{p.Hooks()}})
			release, _ := mgr.Reserve()
			inf := info(tc.traceparent)
			inf.Dials = nil
			s := mgr.Open(inf)
			s.CloseReceived(lifecycle.Client, 1000, "")
			mgr.Finished(s, release)
			if err := p.tp.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := len(exp.GetSpans()); got != tc.want {
				t.Errorf("%d spans exported, want %d", got, tc.want)
			}
			if err := p.Shutdown(context.Background()); err != nil { // resets exp
				t.Fatal(err)
			}
		})
	}
}

func TestStdoutExporterAndResource(t *testing.T) {
	var out bytes.Buffer
	env := map[string]string{"POD_NAME": "voice-7d9f", "POD_NAMESPACE": "calls", "K8S_NODE_NAME": "node-3"}
	reg := prometheus.NewRegistry()
	p, err := New(context.Background(), Options{
		ServiceName: "tether-test", ServiceVersion: "1.2.3", Exporter: ExporterStdout, SampleRatio: 1,
		Stdout: &out, Registerer: reg, Getenv: func(k string) string { return env[k] },
	})
	if err != nil || p == nil {
		t.Fatalf("New: %v, %v", p, err)
	}
	mgr := lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{p.Hooks()}})
	release, _ := mgr.Reserve()
	s := mgr.Open(info(""))
	s.CloseReceived(lifecycle.Client, 1000, "")
	mgr.Finished(s, release)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var session map[string]any
	dec := json.NewDecoder(&out)
	for dec.More() {
		var span map[string]any
		if err := dec.Decode(&span); err != nil {
			t.Fatalf("stdout exporter output: %v", err)
		}
		if span["Name"] == SpanSession {
			session = span
		}
	}
	if session == nil {
		t.Fatalf("no %s span on stdout:\n%s", SpanSession, out.String())
	}
	res, _ := json.Marshal(session["Resource"])
	for _, w := range []string{`"service.name","Value":{"Type":"STRING","Value":"tether-test"`,
		`"service.version","Value":{"Type":"STRING","Value":"1.2.3"`,
		`"k8s.pod.name","Value":{"Type":"STRING","Value":"voice-7d9f"`,
		`"k8s.namespace.name","Value":{"Type":"STRING","Value":"calls"`,
		`"k8s.node.name","Value":{"Type":"STRING","Value":"node-3"`,
		`"host.name"`} {
		if !strings.Contains(string(res), w) {
			t.Errorf("resource lacks %s: %s", w, res)
		}
	}
	if got := dropped(t, reg, DropQueueFull) + dropped(t, reg, DropExportFailed); got != 0 {
		t.Errorf("dropped %v spans, want 0", got)
	}
}

func TestResourceFromOTELEnv(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "voice-edge")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
	res, err := newResource(context.Background(), Options{ServiceName: "tether", Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	got := attrs(res.Attributes())
	if v := got["service.name"].AsString(); v != "voice-edge" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's voice-edge", v)
	}
	if v := got["deployment.environment.name"].AsString(); v != "staging" {
		t.Errorf("deployment.environment.name %q, want staging from OTEL_RESOURCE_ATTRIBUTES", v)
	}
}

func TestMalformedResourceEnvKeepsTracing(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign")
	var out bytes.Buffer
	p, err := New(context.Background(), Options{Exporter: ExporterStdout, SampleRatio: 1, Stdout: &out})
	if err != nil || p == nil {
		t.Fatalf("New with a malformed OTEL_RESOURCE_ATTRIBUTES: %v, %v; want tracing on", p, err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestResolveExporter(t *testing.T) {
	for _, tc := range []struct {
		name            string
		o               Options
		env             map[string]string
		exporter, proto string
	}{
		{"config none", Options{Exporter: "none", Protocol: "grpc"}, nil, "none", "grpc"},
		{"empty is none", Options{Protocol: "grpc"}, nil, "none", "grpc"},
		{"config otlp http", Options{Exporter: "otlp", Protocol: "http"}, nil, "otlp", "http"},
		{"OTEL_TRACES_EXPORTER turns none on", Options{Exporter: "none", Protocol: "grpc"},
			map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "otlp", "grpc"},
		{"console is stdout", Options{Exporter: "none"}, map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "stdout", ""},
		{"config wins over OTEL_TRACES_EXPORTER", Options{Exporter: "stdout"},
			map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "stdout", ""},
		{"OTEL_SDK_DISABLED", Options{Exporter: "otlp", Protocol: "grpc"},
			map[string]string{"OTEL_SDK_DISABLED": "true"}, "none", "grpc"},
		{"env protocol goes with env endpoint", Options{Exporter: "otlp", Protocol: "grpc"},
			map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp", "http"},
		{"traces protocol wins", Options{Exporter: "otlp", Protocol: "grpc"},
			map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "otlp", "grpc"},
		{"config endpoint keeps config protocol", Options{Exporter: "otlp", Protocol: "grpc", Endpoint: "c:4317"},
			map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp", "grpc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Getenv = func(k string) string { return tc.env[k] }
			e, p := resolveExporter(tc.o)
			if e != tc.exporter || p != tc.proto {
				t.Errorf("resolveExporter = %s/%s, want %s/%s", e, p, tc.exporter, tc.proto)
			}
		})
	}
}

func TestNewOffReturnsNil(t *testing.T) {
	p, err := New(context.Background(), Options{Exporter: ExporterNone})
	if p != nil || err != nil {
		t.Fatalf("New(none) = %v, %v; want nil, nil", p, err)
	}
	if p.Hooks() != nil {
		t.Error("a nil Provider's Hooks is not a nil interface")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	if _, err := New(context.Background(), Options{Exporter: "zipkin"}); err == nil {
		t.Error("unknown exporter accepted")
	}
}

// An OTLP exporter towards a collector that is down: New does not wait for
// it, sessions are recorded at full speed, and Shutdown gives up in time.
func TestOTLPUnreachableCollector(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(proto, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			start := time.Now()
			p, err := New(context.Background(), Options{Exporter: ExporterOTLP, Protocol: proto, Endpoint: dead,
				Insecure: true, SampleRatio: 1, Registerer: reg, Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatal(err)
			}
			mgr := lifecycle.NewManager(lifecycle.Options{Hooks: []lifecycle.Hooks{p.Hooks()}})
			for range 50 {
				release, _ := mgr.Reserve()
				s := mgr.Open(info(""))
				turn(s, "resp_1", 0)
				s.CloseReceived(lifecycle.Client, 1000, "")
				mgr.Finished(s, release)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("50 sessions with the collector down took %v", d)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start = time.Now()
			err = p.Shutdown(ctx)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Shutdown took %v with a 500ms context", d)
			}
			if err == nil && dropped(t, reg, DropExportFailed) == 0 {
				t.Error("spans to a dead collector neither failed nor were counted")
			}
		})
	}
}

func TestEndpointHelpers(t *testing.T) {
	for in, want := range map[string]string{
		"http://jaeger:4318":           "http://jaeger:4318/v1/traces",
		"http://jaeger:4318/":          "http://jaeger:4318/v1/traces",
		"https://otel.example/custom":  "https://otel.example/custom",
		"http://jaeger:4318/v1/traces": "http://jaeger:4318/v1/traces",
	} {
		if got := httpTracesURL(in); got != want {
			t.Errorf("httpTracesURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// An https:// endpoint is dialed with TLS even though insecure defaults to true:
// the collector's auth header must never travel in plaintext.
func TestHTTPSEndpointIsNeverPlaintext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 5)
		n, _ := io.ReadFull(c, b)
		got <- b[:n]
	}()
	for _, proto := range []string{ProtocolHTTP} {
		exp, err := newOTLP(context.Background(), Options{Endpoint: "https://" + ln.Addr().String(), Insecure: true,
			Getenv: func(string) string { return "" }}, proto)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = exp.ExportSpans(ctx, tracetest.SpanStubs{{Name: "x"}}.Snapshots())
		cancel()
		_ = exp.Shutdown(context.Background())
		select {
		case b := <-got:
			if len(b) > 0 && b[0] != 0x16 { // a TLS handshake record starts with 0x16
				t.Fatalf("%s: first bytes %q are not a TLS handshake", proto, b)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("exporter never connected")
		}
	}
}
