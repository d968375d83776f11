// Package telemetry turns tether's session lifecycle into OpenTelemetry
// traces: one tether.session span per session with tether.upstream.dial and
// tether.response children (the design's Traces contract).
//
// It records through [lifecycle.Hooks] only; the relay loop holds no
// telemetry code. Spans go through a bounded, non-blocking batch queue: an
// unreachable collector never slows a session, and every span it costs is
// counted in tether_spans_dropped_total.
//
// [New] builds the tracer provider from plain [Options] (package config maps
// the YAML here) and the standard OTEL_* environment variables; [NewHooks]
// records on any trace.TracerProvider (tests use the SDK's in-memory exporter).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/lifecycle"
)

// Exporter and protocol names (the values of telemetry.traces.exporter and
// telemetry.traces.protocol).
const (
	ExporterNone   = "none"
	ExporterOTLP   = "otlp"
	ExporterStdout = "stdout"
	ProtocolGRPC   = "grpc"
	ProtocolHTTP   = "http"
)

// DefaultShutdownTimeout bounds Shutdown when its context has no deadline:
// a collector that is down must not hold the process's exit.
const DefaultShutdownTimeout = 5 * time.Second

// Options configure tracing. Zero values take the documented defaults.
type Options struct {
	// ServiceName is the service.name resource attribute (default "tether");
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// ServiceVersion is the service.version resource attribute.
	ServiceVersion string
	// Exporter is ExporterNone, ExporterOTLP or ExporterStdout. With
	// ExporterNone (or empty), OTEL_TRACES_EXPORTER=otlp|console turns
	// tracing on; OTEL_SDK_DISABLED=true always turns it off.
	Exporter string
	// Endpoint is the OTLP endpoint: host:port, or a URL (http:// implies
	// no TLS; for protocol http a URL without a path gets /v1/traces).
	// Empty leaves it, and the protocol, to the
	// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/PROTOCOL variables, else the
	// exporter's default (localhost:4317 for grpc, localhost:4318 for http).
	Endpoint string
	// Protocol is ProtocolGRPC (default) or ProtocolHTTP.
	Protocol string
	// Insecure disables TLS towards Endpoint. When Endpoint is empty and an
	// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variable is set, that variable's
	// scheme and OTEL_EXPORTER_OTLP_INSECURE decide instead.
	Insecure bool
	// SampleRatio is the fraction of new traces sampled, in [0, 1]; a
	// client's traceparent decides for its own trace (parent-based).
	SampleRatio float64
	// Stdout receives the stdout exporter's spans, one JSON object each
	// (default os.Stdout).
	Stdout io.Writer
	// Registerer receives tether_spans_dropped_total; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives export errors; nil discards them.
	Logger *slog.Logger
	// Getenv reads the environment (default os.Getenv); tests replace it.
	Getenv func(string) string
}

func (o *Options) defaults() {
	if o.ServiceName == "" {
		o.ServiceName = "tether"
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolGRPC
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
}

// Provider is a running trace pipeline: tracer provider, bounded queue,
// exporter. A nil *Provider (tracing off) is valid: Hooks returns nil and
// Shutdown does nothing.
type Provider struct {
	tp    *sdktrace.TracerProvider
	hooks *Hooks
	gate  *gate
	exp   *countingExporter
	abort context.CancelFunc // cuts exports short once Shutdown's time is up
	log   *slog.Logger
}

// New starts the trace pipeline described by o. It returns nil, nil when
// tracing is off. It never waits for the collector: an unreachable one only
// shows up as export errors in the log and dropped spans in the metric.
func New(ctx context.Context, o Options) (*Provider, error) {
	o.defaults()
	exporter, protocol := resolveExporter(o)
	var exp sdktrace.SpanExporter
	var err error
	switch exporter {
	case ExporterNone:
		return nil, nil
	case ExporterStdout:
		exp, err = stdouttrace.New(stdouttrace.WithWriter(o.Stdout))
	case ExporterOTLP:
		exp, err = newOTLP(ctx, o, protocol)
	default:
		return nil, fmt.Errorf("telemetry.traces.exporter: unknown exporter %q (none, otlp, stdout)", exporter)
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter %s: %w", exporter, err)
	}
	res, err := newResource(ctx, o)
	switch {
	case errors.Is(err, resource.ErrPartialResource):
		// A malformed OTEL_RESOURCE_ATTRIBUTES or an undetectable host name
		// costs those attributes, not the traces.
		o.Logger.Warn("telemetry: some resource attributes are missing", "err", err)
	case err != nil:
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	p := newProvider(exp, o, res, queueSize(o.Getenv))
	if exporter == ExporterOTLP {
		o.Logger.Info("tracing on", "exporter", exporter, "protocol", protocol,
			"endpoint", redact.URL(o.Endpoint), "sample_ratio", o.SampleRatio)
	} else {
		o.Logger.Info("tracing on", "exporter", exporter, "sample_ratio", o.SampleRatio)
	}
	return p, nil
}

// resolveExporter applies OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER and the
// OTLP protocol variables to the configured exporter and protocol.
func resolveExporter(o Options) (exporter, protocol string) {
	exporter, protocol = o.Exporter, o.Protocol
	if exporter == "" {
		exporter = ExporterNone
	}
	if strings.EqualFold(strings.TrimSpace(o.Getenv("OTEL_SDK_DISABLED")), "true") {
		return ExporterNone, protocol
	}
	if exporter == ExporterNone {
		switch strings.TrimSpace(o.Getenv("OTEL_TRACES_EXPORTER")) {
		case "otlp":
			exporter = ExporterOTLP
		case "console":
			exporter = ExporterStdout
		}
	}
	if o.Endpoint == "" {
		env := o.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if env == "" {
			env = o.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch strings.TrimSpace(env) {
		case "grpc":
			protocol = ProtocolGRPC
		case "http/protobuf":
			protocol = ProtocolHTTP
		}
	}
	return exporter, protocol
}

// newOTLP builds the OTLP exporter. The exporter reads the remaining
// OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression,
// certificates) itself; options set here win over them.
func newOTLP(ctx context.Context, o Options, protocol string) (sdktrace.SpanExporter, error) {
	envEndpoint := o.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || o.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	isURL := strings.Contains(o.Endpoint, "://")
	// A URL's scheme decides TLS (https:// is never sent in plaintext);
	// `insecure` applies to host:port endpoints only.
	insecure := o.Insecure && !isURL && (o.Endpoint != "" || !envEndpoint)
	switch protocol {
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		switch {
		case isURL:
			opts = append(opts, otlptracegrpc.WithEndpointURL(o.Endpoint))
		case o.Endpoint != "":
			opts = append(opts, otlptracegrpc.WithEndpoint(o.Endpoint))
		}
		if insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	case ProtocolHTTP:
		var opts []otlptracehttp.Option
		switch {
		case isURL:
			opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(o.Endpoint)))
		case o.Endpoint != "":
			opts = append(opts, otlptracehttp.WithEndpoint(o.Endpoint))
		}
		if insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("unknown protocol %q (grpc, http)", protocol)
}

// httpTracesURL adds the OTLP traces path to an endpoint URL that has no
// path, so "http://collector:4318" works as users expect (a URL given as is
// to the exporter is used as the full request URL).
func httpTracesURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return raw
	}
	u.Path = "/v1/traces"
	return u.String()
}

// queueSize is the batch queue's capacity: OTEL_BSP_MAX_QUEUE_SIZE, else the SDK default.
func queueSize(getenv func(string) string) int {
	if n, err := strconv.Atoi(strings.TrimSpace(getenv("OTEL_BSP_MAX_QUEUE_SIZE"))); err == nil && n > 0 {
		return n
	}
	return sdktrace.DefaultMaxQueueSize
}

// Hooks returns the lifecycle hooks that record sessions, or nil when p is nil.
func (p *Provider) Hooks() lifecycle.Hooks {
	if p == nil {
		return nil
	}
	return p.hooks
}

// Shutdown ends the pipeline: it exports the spans still queued (sessions
// must have ended first) within ctx, or DefaultShutdownTimeout when ctx has
// no deadline, and reports spans it could not send.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultShutdownTimeout)
		defer cancel()
	}
	err := p.tp.Shutdown(ctx)
	if err != nil {
		// Out of time: the batch processor's goroutine may still be in an
		// export. Cut it short; what remains fails at once, is counted, and
		// the goroutine exits.
		p.abort()
		t := time.NewTimer(abortWait)
		select {
		case <-p.exp.shutDown:
		case <-t.C:
		}
		t.Stop()
	}
	p.abort()
	if n := p.gate.pending(); n > 0 {
		p.log.Warn("telemetry: spans not exported at shutdown", "spans", n)
	}
	if err != nil {
		return fmt.Errorf("flush spans: %w", err)
	}
	return nil
}

// abortWait bounds how long Shutdown waits, after its own deadline, for the
// aborted exports to return.
const abortWait = time.Second
