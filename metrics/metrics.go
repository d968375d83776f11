// Package metrics is tether's Prometheus instrumentation. It observes
// sessions as a lifecycle hook, beside tracing; the relay's only cost is
// the session's own atomic frame and byte counters, which the metrics read
// when scraped.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tetherproxy/tether/lifecycle"
)

// Options configure the label sets of upstream-chosen values.
type Options struct {
	// KnownErrorCodes and ResponseStatuses are the values the dialects know;
	// FatalUpstreamErrors (configured) are kept too. Anything else is "other".
	KnownErrorCodes     []string
	ResponseStatuses    []string
	FatalUpstreamErrors []string
	// HandshakeReasons are the reasons a handshake may be refused for
	// (proxy.RejectReasons); each series exists from the start (without
	// them, a reason's series appears at its first refusal).
	HandshakeReasons []string
}

// Metrics holds tether's Prometheus collectors (contract names; see the
// README) and implements lifecycle.Hooks.
type Metrics struct {
	Registry *prometheus.Registry

	sessionsActive    *prometheus.GaugeVec
	sessionsTotal     *prometheus.CounterVec
	sessionDuration   *prometheus.HistogramVec
	dialSeconds       *prometheus.HistogramVec
	handshakeRejected *prometheus.CounterVec
	heartbeatRTT      [2]prometheus.Observer // by lifecycle.Leg
	timeToFirstAudio  *prometheus.HistogramVec
	tokens            *prometheus.CounterVec
	audioSeconds      *prometheus.CounterVec
	upstreamErrors    *prometheus.CounterVec
	responsesTotal    *prometheus.CounterVec
	heartbeatTimeouts *prometheus.CounterVec
	stateErrors       *prometheus.CounterVec
	closeFramesTotal  [2][2]prometheus.Counter // by Leg, then 0 = not sent, 1 = sent
	resumesTotal      *prometheus.CounterVec
	resumeGap         *prometheus.HistogramVec
	sessionsByReason  map[sessionKey]prometheus.Counter

	// Label sets (read-only after New).
	errorCodes map[string]bool
	statuses   map[string]bool
}

var _ lifecycle.Hooks = (*Metrics)(nil)

// sessionKey is one tether_sessions_total series.
type sessionKey struct {
	dialect string
	reason  lifecycle.Reason
}

// Dialects are the values of the dialect label, created at 0 up front.
var Dialects = []string{"realtime", "live"}

// resumeResults are the values of tether_resumes_total's result label.
var resumeResults = []string{lifecycle.ResumeOK, lifecycle.ResumeFailed, lifecycle.ResumeExhausted}

// New creates the collectors on a fresh registry, with the Go runtime and
// process collectors.
func New(o Options) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), errorCodes: set(o.KnownErrorCodes, o.FatalUpstreamErrors), statuses: set(o.ResponseStatuses)}
	m.Registry.MustRegister(m.sessionCollectors()...)
	m.Registry.MustRegister(m.upstreamCollectors()...)
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.startAtZero(o)
	return m
}

// sessionCollectors creates the series of sessions, handshakes, heartbeats
// and teardown.
func (m *Metrics) sessionCollectors() []prometheus.Collector {
	m.sessionsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tether_sessions_active", Help: "Sessions currently open (both legs connected), by dialect.",
	}, []string{"dialect"})
	m.sessionsTotal = counterVec("tether_sessions_total", "Sessions ended, by teardown reason and dialect.", "reason", "dialect")
	m.sessionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_session_duration_seconds", Help: "Session length from upgrade to teardown, by dialect.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	}, []string{"dialect"})
	m.handshakeRejected = counterVec("tether_handshake_rejections_total", "Client upgrades refused before a session started, by reason.", "reason")
	rtt := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_heartbeat_rtt_seconds", Help: "Ping to pong round trip, by leg.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"leg"})
	m.heartbeatRTT[lifecycle.Client] = rtt.WithLabelValues("client")
	m.heartbeatRTT[lifecycle.Upstream] = rtt.WithLabelValues("upstream")
	m.heartbeatTimeouts = counterVec("tether_heartbeat_timeouts_total", "Heartbeat timeouts, by leg.", "leg")
	closeFrames := counterVec("tether_close_frames_total",
		"Close frames tether meant to send at teardown, by leg and result: sent, or not_sent when the leg was closed without one (its peer stopped reading or the socket failed).",
		"leg", "result")
	for _, leg := range []lifecycle.Leg{lifecycle.Client, lifecycle.Upstream} {
		m.closeFramesTotal[leg][0] = closeFrames.WithLabelValues(leg.String(), "not_sent")
		m.closeFramesTotal[leg][1] = closeFrames.WithLabelValues(leg.String(), "sent")
	}
	m.stateErrors = counterVec("tether_state_errors_total", "Round trips to the shared state store (Redis) that failed, by operation.", "op")
	return []prometheus.Collector{m.sessionsActive, m.sessionsTotal, m.sessionDuration, m.handshakeRejected,
		rtt, m.heartbeatTimeouts, closeFrames, m.stateErrors}
}

// upstreamCollectors creates the series of what the upstreams did: dials,
// answers, usage, errors and resumes.
func (m *Metrics) upstreamCollectors() []prometheus.Collector {
	m.dialSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_upstream_dial_seconds", Help: "Upstream dial time (TCP, TLS, upgrade, first event), by upstream and result.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"upstream", "result"})
	m.timeToFirstAudio = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_time_to_first_audio_seconds", Help: "From the end of the caller's turn (Realtime: speech_stopped, commit or response.created; GPT-Live: the caller's last transcript fragment) to the answer's first audio (GPT-Live: its first transcript fragment), by dialect.",
		Buckets: []float64{.1, .2, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10},
	}, []string{"dialect"})
	m.tokens = counterVec("tether_tokens_total", "Tokens reported in usage (Realtime response.done; GPT-Live delegated responses), by kind.", "kind")
	m.audioSeconds = counterVec("tether_audio_seconds_total", "Billed session audio seconds the upstream reported (GPT-Live usage, cumulative per session: each report adds its growth), by upstream.", "upstream")
	m.upstreamErrors = counterVec("tether_upstream_errors_total", "Upstream error events, by error code.", "code")
	m.responsesTotal = counterVec("tether_responses_total", "Responses finished (response.done), by status.", "status")
	m.resumesTotal = counterVec("tether_resumes_total",
		"Attempts to carry a call over to a new upstream session (lifecycle.resume), by upstream (the one that took the call over; for failed and exhausted, the one whose session ended), trigger and result.",
		"upstream", "trigger", "result")
	m.resumeGap = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_resume_gap_seconds", Help: "From the end of an upstream session to the call going on on the next one (dials and the replay answered), for successful resumes, by the upstream that took the call over.",
		// A dial (with its first event) takes most of the gap; 2 s is the
		// default lifecycle.resume.buffer, past which client audio was dropped.
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 30},
	}, []string{"upstream"})
	return []prometheus.Collector{m.dialSeconds, m.timeToFirstAudio, m.tokens, m.audioSeconds,
		m.upstreamErrors, m.responsesTotal, m.resumesTotal, m.resumeGap}
}

// startAtZero creates every series a dashboard or alert may look for, so
// that it exists from the start, at 0. Series by upstream are created by
// WatchUpstream.
func (m *Metrics) startAtZero(o Options) {
	m.sessionsByReason = make(map[sessionKey]prometheus.Counter, len(Dialects)*len(lifecycle.AllReasons))
	for _, d := range Dialects {
		for _, reason := range lifecycle.AllReasons {
			m.sessionsByReason[sessionKey{d, reason}] = m.sessionsTotal.WithLabelValues(string(reason), d)
		}
		m.sessionsActive.WithLabelValues(d)
		// Histograms too: a series born with its first observations in it
		// hides them from rate() (a dialect's first turns or sessions).
		m.sessionDuration.WithLabelValues(d)
		m.timeToFirstAudio.WithLabelValues(d)
	}
	for _, k := range []string{"input_text", "input_audio", "output_text", "output_audio", "cached"} {
		m.tokens.WithLabelValues(k)
	}
	for _, r := range o.HandshakeReasons {
		m.handshakeRejected.WithLabelValues(r)
	}
	for _, code := range o.FatalUpstreamErrors {
		m.upstreamErrors.WithLabelValues(code)
	}
	m.heartbeatTimeouts.WithLabelValues("client")
	m.heartbeatTimeouts.WithLabelValues("upstream")
	for _, op := range stateOps {
		m.stateErrors.WithLabelValues(op)
	}
}

// counterVec is the counter family name, explained by help, by labels.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// set returns the union of lists as a set.
func set(lists ...[]string) map[string]bool {
	out := make(map[string]bool)
	for _, l := range lists {
		for _, v := range l {
			out[v] = true
		}
	}
	return out
}

// Label values read from upstream events are bounded (an upstream, or a
// client steering one, must not be able to grow the series set).

// boundedLabel is the label value for v: missing when v is empty, v when
// known, else "other".
func boundedLabel(v, missing string, known map[string]bool) string {
	switch {
	case v == "":
		return missing
	case known[v]:
		return v
	}
	return "other"
}

// errorCodeLabel is the tether_upstream_errors_total code label: "none"
// when missing, the code when known or configured fatal, else "other".
func (m *Metrics) errorCodeLabel(code string) string { return boundedLabel(code, "none", m.errorCodes) }

// responseStatusLabel is the tether_responses_total status label:
// "unknown" when missing, the status when known, else "other".
func (m *Metrics) responseStatusLabel(status string) string {
	return boundedLabel(status, "unknown", m.statuses)
}

// ObserveDial records one upstream dial attempt.
func (m *Metrics) ObserveDial(upstream, result string, d time.Duration) {
	m.dialSeconds.WithLabelValues(upstream, result).Observe(d.Seconds())
}

// HandshakeRejected counts a refused client upgrade.
func (m *Metrics) HandshakeRejected(reason string) {
	m.handshakeRejected.WithLabelValues(reason).Inc()
}

// WatchRelayed exports the manager's frame and byte totals as
// tether_frames_total and tether_bytes_total (read at scrape time: the
// relay only adds to atomics).
func (m *Metrics) WatchRelayed(mgr *lifecycle.Manager) {
	for _, d := range []lifecycle.Direction{lifecycle.ClientToUpstream, lifecycle.UpstreamToClient} {
		m.Registry.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "tether_frames_total", Help: "Data frames relayed, by direction.",
				ConstLabels: prometheus.Labels{"direction": d.String()},
			}, func() float64 { f, _ := mgr.Relayed(d); return float64(f) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "tether_bytes_total", Help: "Data frame payload bytes relayed, by direction.",
				ConstLabels: prometheus.Labels{"direction": d.String()},
			}, func() float64 { _, b := mgr.Relayed(d); return float64(b) }))
	}
}

// WatchUpstream exports tether_upstream_available{upstream} from available,
// and creates the upstream's tether_audio_seconds_total,
// tether_resumes_total (every trigger and result) and
// tether_resume_gap_seconds series at 0 (so rate() sees their first
// increase).
func (m *Metrics) WatchUpstream(name string, available func() bool) {
	m.audioSeconds.WithLabelValues(name)
	for _, t := range lifecycle.AllTriggers {
		for _, result := range resumeResults {
			m.resumesTotal.WithLabelValues(name, string(t), result)
		}
	}
	m.resumeGap.WithLabelValues(name)
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_upstream_available", Help: "1 when the upstream is dialed, 0 while it sits out its cool-down after repeated failures.",
		ConstLabels: prometheus.Labels{"upstream": name},
	}, func() float64 {
		if available() {
			return 1
		}
		return 0
	}))
}
