package lifecycle

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds tether's Prometheus collectors (contract names; see the README).
// A nil *Metrics records nothing, so tests can leave it out.
type Metrics struct {
	Registry *prometheus.Registry

	sessionsActive    prometheus.Gauge
	sessionsTotal     *prometheus.CounterVec
	sessionDuration   prometheus.Histogram
	frames            [2]prometheus.Counter // by Direction
	bytes             [2]prometheus.Counter // by Direction
	dialSeconds       *prometheus.HistogramVec
	handshakeRejected *prometheus.CounterVec
	heartbeatRTT      [2]prometheus.Observer // by Leg
	timeToFirstAudio  prometheus.Histogram
	tokens            *prometheus.CounterVec
	upstreamErrors    *prometheus.CounterVec
	responsesTotal    *prometheus.CounterVec
	heartbeatTimeouts *prometheus.CounterVec
	closeFramesTotal  [2][2]prometheus.Counter // by Leg, then 0 = not sent, 1 = sent
	sessionsByReason  map[Reason]prometheus.Counter
}

// NewMetrics creates the collectors on a fresh registry, with the Go runtime
// and process collectors.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{Registry: r}
	m.sessionsActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tether_sessions_active", Help: "Sessions currently open (both legs connected).",
	})
	m.sessionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_sessions_total", Help: "Sessions ended, by teardown reason.",
	}, []string{"reason"})
	m.sessionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tether_session_duration_seconds", Help: "Session length from upgrade to teardown.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	})
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_frames_total", Help: "Data frames relayed, by direction.",
	}, []string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_bytes_total", Help: "Data frame payload bytes relayed, by direction.",
	}, []string{"direction"})
	for _, d := range []Direction{ClientToUpstream, UpstreamToClient} {
		m.frames[d] = frames.WithLabelValues(d.String())
		m.bytes[d] = bytes.WithLabelValues(d.String())
	}
	m.dialSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_upstream_dial_seconds", Help: "Upstream dial time (TCP, TLS, upgrade, first event), by upstream and result.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"upstream", "result"})
	m.handshakeRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_handshake_rejections_total", Help: "Client upgrades refused before a session started, by reason.",
	}, []string{"reason"})
	rtt := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_heartbeat_rtt_seconds", Help: "Ping to pong round trip, by leg.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"leg"})
	m.heartbeatRTT[Client] = rtt.WithLabelValues("client")
	m.heartbeatRTT[Upstream] = rtt.WithLabelValues("upstream")
	m.timeToFirstAudio = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tether_time_to_first_audio_seconds", Help: "From end of the caller's turn (speech_stopped, commit or response.created) to the first audio delta of the answer.",
		Buckets: []float64{.1, .2, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10},
	})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_tokens_total", Help: "Tokens reported in response.done usage, by kind.",
	}, []string{"kind"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_upstream_errors_total", Help: "Upstream error events, by error code.",
	}, []string{"code"})
	m.responsesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_responses_total", Help: "Responses finished (response.done), by status.",
	}, []string{"status"})
	m.heartbeatTimeouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_heartbeat_timeouts_total", Help: "Heartbeat timeouts, by leg.",
	}, []string{"leg"})
	closeFrames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_close_frames_total",
		Help: "Close frames tether meant to send at teardown, by leg and result: sent, or not_sent when the leg was closed without one (its peer stopped reading or the socket failed).",
	}, []string{"leg", "result"})
	for _, leg := range []Leg{Client, Upstream} {
		m.closeFramesTotal[leg][0] = closeFrames.WithLabelValues(leg.String(), "not_sent")
		m.closeFramesTotal[leg][1] = closeFrames.WithLabelValues(leg.String(), "sent")
	}
	m.sessionsByReason = make(map[Reason]prometheus.Counter, len(AllReasons))
	for _, reason := range AllReasons {
		m.sessionsByReason[reason] = m.sessionsTotal.WithLabelValues(string(reason))
	}
	// Every series a dashboard or alert may look for exists from the start, at 0.
	for _, k := range []string{"input_text", "input_audio", "output_text", "output_audio", "cached"} {
		m.tokens.WithLabelValues(k)
	}
	for _, r := range []string{"not_websocket", "bad_handshake", "bad_version", "bad_method", "origin",
		"unauthenticated", "unauthorized", "model_not_allowed", "client_limit", "draining", "max_sessions",
		"upstream_unavailable", "upstream_rate_limited"} {
		m.handshakeRejected.WithLabelValues(r)
	}
	for _, code := range []string{"session_expired", "invalid_api_key", "beta_api_shape_disabled"} {
		m.upstreamErrors.WithLabelValues(code)
	}
	m.heartbeatTimeouts.WithLabelValues("client")
	m.heartbeatTimeouts.WithLabelValues("upstream")
	r.MustRegister(m.sessionsActive, m.sessionsTotal, m.sessionDuration, frames, bytes,
		m.dialSeconds, m.handshakeRejected, rtt, m.timeToFirstAudio, m.tokens,
		m.upstreamErrors, m.responsesTotal, m.heartbeatTimeouts, closeFrames,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// closeFrames counts a close frame tether meant to send on leg.
func (m *Metrics) closeFrames(leg Leg, sent bool) {
	i := 0
	if sent {
		i = 1
	}
	m.closeFramesTotal[leg][i].Inc()
}

// Label values read from upstream events are bounded (an upstream, or a
// client steering one, must not be able to grow the series set): a value
// outside these sets, and outside the configured fatal_upstream_errors, is
// counted as "other".
var (
	// knownErrorCodes are the Realtime error codes seen in practice
	// (shared/realtime-protocol.md 2.4 and 6.5).
	knownErrorCodes = map[string]bool{
		"session_expired": true, "invalid_api_key": true, "beta_api_shape_disabled": true,
		"input_audio_buffer_commit_empty": true, "conversation_already_has_active_response": true,
		"response_cancel_not_active": true, "invalid_value": true, "unknown_parameter": true,
		"missing_required_parameter": true, "insufficient_quota": true,
	}
	// knownResponseStatuses are the values of response.status.
	knownResponseStatuses = map[string]bool{
		"completed": true, "cancelled": true, "failed": true, "incomplete": true, "in_progress": true,
	}
)

// errorCodeLabel is the tether_upstream_errors_total code label for an
// upstream error code: "none" when missing, the code when known or in
// fatal, else "other".
func errorCodeLabel(code string, fatal map[string]bool) string {
	switch {
	case code == "":
		return "none"
	case knownErrorCodes[code] || fatal[code]:
		return code
	}
	return "other"
}

// responseStatusLabel is the tether_responses_total status label:
// "unknown" when missing, the status when known, else "other".
func responseStatusLabel(status string) string {
	switch {
	case status == "":
		return "unknown"
	case knownResponseStatuses[status]:
		return status
	}
	return "other"
}

// observe records v, with the trace id as an exemplar when there is one.
func observe(h prometheus.Observer, v float64, traceID string) {
	if eo, ok := h.(prometheus.ExemplarObserver); ok && traceID != "" {
		eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": traceID})
		return
	}
	h.Observe(v)
}

// ObserveDial records one upstream dial attempt.
func (m *Metrics) ObserveDial(upstream, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.dialSeconds.WithLabelValues(upstream, result).Observe(d.Seconds())
}

// HandshakeRejected counts a refused client upgrade.
func (m *Metrics) HandshakeRejected(reason string) {
	if m == nil {
		return
	}
	m.handshakeRejected.WithLabelValues(reason).Inc()
}
