package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Drop reasons (the reason label of tether_spans_dropped_total).
const (
	// DropQueueFull: the batch queue was full (the exporter is behind or the collector is down).
	DropQueueFull = "queue_full"
	// DropExportFailed: the exporter gave up on a batch (after its own retries).
	DropExportFailed = "export_failed"
)

// newDroppedCounter registers tether_spans_dropped_total on r (reusing an
// existing registration) and returns its two series.
func newDroppedCounter(r prometheus.Registerer) (queueFull, exportFailed prometheus.Counter) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_spans_dropped_total",
		Help: "Finished spans never delivered to the trace collector, by reason (queue_full, export_failed).",
	}, []string{"reason"})
	if r != nil {
		if err := r.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					vec = existing
				}
			}
		}
	}
	return vec.WithLabelValues(DropQueueFull), vec.WithLabelValues(DropExportFailed)
}

// newProvider assembles the pipeline: sampler, resource, the gate in front
// of a non-blocking BatchSpanProcessor of capacity queue, and exp wrapped so
// failed exports are counted.
func newProvider(exp sdktrace.SpanExporter, o Options, res *resource.Resource, queue int, bsp ...sdktrace.BatchSpanProcessorOption) *Provider {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	queueFull, exportFailed := newDroppedCounter(o.Registerer)
	g := &gate{limit: int64(queue), dropped: queueFull}
	abort, cancel := context.WithCancel(context.Background())
	counted := &countingExporter{next: exp, gate: g, failed: exportFailed, log: log,
		abort: abort, shutDown: make(chan struct{})}
	opts := append([]sdktrace.BatchSpanProcessorOption{sdktrace.WithMaxQueueSize(queue)}, bsp...)
	g.next = sdktrace.NewBatchSpanProcessor(counted, opts...)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
		sdktrace.WithSpanProcessor(g),
	)
	return &Provider{tp: tp, hooks: NewHooks(tp), gate: g, exp: counted, abort: cancel, log: log}
}

// gate bounds the spans between span.End and the end of their export to
// limit, the batch queue's capacity, and counts the spans it turns away.
// Because every span in the queue was admitted here, the queue itself never
// overflows: this count is every queue drop, and OnEnd never blocks.
type gate struct {
	next     sdktrace.SpanProcessor // set once before use
	limit    int64
	inflight atomic.Int64 // admitted and not yet through ExportSpans
	dropped  prometheus.Counter
}

func (g *gate) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) { g.next.OnStart(ctx, s) }

func (g *gate) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if g.inflight.Add(1) > g.limit {
		g.inflight.Add(-1)
		g.dropped.Inc()
		return
	}
	g.next.OnEnd(s)
}

func (g *gate) Shutdown(ctx context.Context) error   { return g.next.Shutdown(ctx) }
func (g *gate) ForceFlush(ctx context.Context) error { return g.next.ForceFlush(ctx) }

// pending is the number of admitted spans whose export has not finished.
func (g *gate) pending() int64 { return g.inflight.Load() }

// countingExporter releases the gate's slots once a batch has been handled,
// and counts and logs the spans of batches the exporter could not deliver.
// The error is handled here, so the batch processor is told nil.
type countingExporter struct {
	next   sdktrace.SpanExporter
	gate   *gate
	failed prometheus.Counter
	log    *slog.Logger
	// abort is cancelled when Provider.Shutdown runs out of time: it cuts
	// short the export in flight, which the batch processor would otherwise
	// let run to its own timeout after Shutdown has returned. Not a request
	// context: one cancellation signal shared by every export.
	abort context.Context
	// shutDown is closed when the batch processor, having exported what it
	// could, shuts the exporter down; its goroutine is then gone.
	shutDown chan struct{}
	once     sync.Once
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.abort, cancel)()
	err := e.next.ExportSpans(ctx, spans)
	e.gate.inflight.Add(-int64(len(spans)))
	if err != nil {
		e.failed.Add(float64(len(spans)))
		e.log.Warn("telemetry: span export failed; spans dropped", "spans", len(spans), "err", err)
	}
	return nil
}

func (e *countingExporter) Shutdown(ctx context.Context) error {
	defer e.once.Do(func() { close(e.shutDown) })
	return e.next.Shutdown(ctx)
}
