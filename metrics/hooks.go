package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherproxy/tether/lifecycle"
)

// The lifecycle hooks: each records its series, off the relay's frame loop.

// HandshakeFailed implements lifecycle.Hooks (counted by HandshakeRejected).
func (m *Metrics) HandshakeFailed(lifecycle.Info, int, string) {}

// SessionStarted implements lifecycle.Hooks.
func (m *Metrics) SessionStarted(s *lifecycle.Session) {
	m.sessionsActive.WithLabelValues(s.DialectName()).Inc()
}

// ResponseStarted implements lifecycle.Hooks.
func (m *Metrics) ResponseStarted(*lifecycle.Session, string) {}

// FirstAudio implements lifecycle.Hooks.
func (m *Metrics) FirstAudio(s *lifecycle.Session, _ string, ttfa time.Duration) {
	observe(m.timeToFirstAudio.WithLabelValues(s.DialectName()), ttfa.Seconds(), s.TraceID())
}

// ResponseDone implements lifecycle.Hooks.
func (m *Metrics) ResponseDone(_ *lifecycle.Session, _, status string, u lifecycle.Tokens) {
	m.responsesTotal.WithLabelValues(m.responseStatusLabel(status)).Inc()
	m.addTokens(u)
}

// UsageUpdated implements lifecycle.Hooks.
func (m *Metrics) UsageUpdated(s *lifecycle.Session, u lifecycle.Tokens, audioSeconds float64) {
	m.addTokens(u)
	if audioSeconds > 0 {
		m.audioSeconds.WithLabelValues(s.Upstream()).Add(audioSeconds)
	}
}

// addTokens counts usage by kind.
func (m *Metrics) addTokens(u lifecycle.Tokens) {
	m.tokens.WithLabelValues("input_text").Add(float64(u.InputText))
	m.tokens.WithLabelValues("input_audio").Add(float64(u.InputAudio))
	m.tokens.WithLabelValues("output_text").Add(float64(u.OutputText))
	m.tokens.WithLabelValues("output_audio").Add(float64(u.OutputAudio))
	m.tokens.WithLabelValues("cached").Add(float64(u.Cached))
}

// UpstreamError implements lifecycle.Hooks.
func (m *Metrics) UpstreamError(_ *lifecycle.Session, _, code string) {
	m.upstreamErrors.WithLabelValues(m.errorCodeLabel(code)).Inc()
}

// HeartbeatTimeout implements lifecycle.Hooks.
func (m *Metrics) HeartbeatTimeout(_ *lifecycle.Session, leg lifecycle.Leg) {
	m.heartbeatTimeouts.WithLabelValues(leg.String()).Inc()
}

// HeartbeatRTT implements lifecycle.Hooks.
func (m *Metrics) HeartbeatRTT(_ *lifecycle.Session, leg lifecycle.Leg, rtt time.Duration) {
	m.heartbeatRTT[leg].Observe(rtt.Seconds())
}

// SessionEnded implements lifecycle.Hooks.
func (m *Metrics) SessionEnded(_ *lifecycle.Session, sum lifecycle.Summary) {
	m.sessionsActive.WithLabelValues(sum.Dialect).Dec()
	if c, ok := m.sessionsByReason[sessionKey{sum.Dialect, sum.Reason}]; ok {
		c.Inc()
	} else {
		m.sessionsTotal.WithLabelValues(string(sum.Reason), sum.Dialect).Inc()
	}
	observe(m.sessionDuration.WithLabelValues(sum.Dialect), sum.Duration.Seconds(), sum.TraceID)
	for leg, f := range [2]lifecycle.CloseFrame{sum.CloseClient, sum.CloseUp} {
		switch {
		case sum.CloseUnsent[leg]:
			m.closeFramesTotal[leg][0].Inc()
		case f.Code != lifecycle.CodeNone:
			m.closeFramesTotal[leg][1].Inc()
		}
	}
}

// observe records v, with the trace id as an exemplar when there is one.
func observe(h prometheus.Observer, v float64, traceID string) {
	if eo, ok := h.(prometheus.ExemplarObserver); ok && traceID != "" {
		eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": traceID})
		return
	}
	h.Observe(v)
}

// SessionResumed implements lifecycle.Hooks: a resume is counted under the
// upstream that took the call over, a failed or exhausted one under the
// upstream whose session ended (no other took it).
func (m *Metrics) SessionResumed(s *lifecycle.Session, r lifecycle.Resume) {
	upstream := r.From
	if r.Result == lifecycle.ResumeOK && r.Upstream != "" {
		upstream = r.Upstream
	}
	m.resumesTotal.WithLabelValues(upstream, string(r.Trigger), r.Result).Inc()
	if r.Result == lifecycle.ResumeOK {
		observe(m.resumeGap.WithLabelValues(upstream), r.Gap.Seconds(), s.TraceID())
	}
}
