package main

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/metrics"
	"github.com/tetherproxy/tether/telemetry"
)

// setupTelemetry starts tracing as cfg says (plus the standard OTEL_*
// variables). It returns the lifecycle hooks that record spans — nil when
// tracing is off — and a shutdown func that flushes queued spans, to call
// once every session has ended (bounded by its context, else 5 s).
// tether_spans_dropped_total is registered on m's registry.
func setupTelemetry(cfg config.Telemetry, m *metrics.Metrics, log *slog.Logger) (lifecycle.Hooks, func(context.Context) error, error) {
	opts := telemetry.Options{
		ServiceName:    cfg.ServiceName,
		ServiceVersion: version,
		Exporter:       cfg.Traces.Exporter,
		Endpoint:       cfg.Traces.Endpoint,
		Protocol:       cfg.Traces.Protocol,
		Insecure:       cfg.Traces.Insecure,
		SampleRatio:    cfg.Traces.SampleRatio,
		Logger:         log,
	}
	if m != nil {
		opts.Registerer = m.Registry
	}
	// Errors the SDK reports outside an export (which the pipeline logs
	// itself) go to the process log instead of the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry", "err", err)
	}))
	p, err := telemetry.New(context.Background(), opts)
	if err != nil {
		return nil, nil, err
	}
	return p.Hooks(), p.Shutdown, nil
}
