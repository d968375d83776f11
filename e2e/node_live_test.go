package e2e

import (
	"net"
	"strings"
	"testing"
)

// TestNodeLiveClient drives tether with the official `openai` npm package's
// GPT-Live client (LiveWS from openai/resources/live/ws, openai 7.x under the
// npm alias openai-live, unmodified) under Node, over plain ws:// to the
// default `tether serve` (no upstreams key, no OPENAI_API_KEY: the built-in
// mock). The tests in node/live.test.mjs make a call (session.start,
// session.started, real-time audio both ways, session.close, session.closed,
// close 1000) and see close 1014 when the upstream resets mid-call. Then
// tether's admin endpoints must show both sessions ended, with their
// reasons, and the audio seconds the upstream reported.
//
// It needs node (>= 20) and npm (see requireNode); without them it is
// skipped, unless TETHER_REQUIRE_NODE is set (CI), when it fails.
func TestNodeLiveClient(t *testing.T) {
	t.Parallel()
	node := requireNode(t)

	p := startTether(t, "node_live.yaml", nil)
	_, port, err := net.SplitHostPort(p.Listen)
	if err != nil {
		t.Fatalf("listen address %q: %v", p.Listen, err)
	}

	logOnFailure(t, p)
	runNodeTests(t, node, "live.test.mjs", 2, "TETHER_PORT="+port)

	// What tether saw: the call ended by the upstream's session.closed (it
	// closes the socket after it), the second by the upstream's reset;
	// nothing left open.
	waitEnded(t, p, 2)
	for reason, want := range map[string]float64{"upstream_closed": 1, "upstream_error": 1} {
		if got, _ := p.metric("tether_sessions_total", `dialect="live"`, `reason="`+reason+`"`); got != want {
			_, m := p.get("/metrics")
			t.Errorf("tether_sessions_total{dialect=\"live\",reason=%q} = %v, want %v; /metrics:\n%s",
				reason, got, want, grepLines(string(m), "tether_sessions_total"))
		}
	}
	if rows, raw := p.sessions(); len(rows) != 0 || strings.TrimSpace(raw) != "[]" {
		t.Errorf("GET /sessions after the calls = %s, want []", raw)
	}
	if v, ok := p.metric("tether_sessions_active"); !ok || v != 0 {
		t.Errorf("tether_sessions_active = %v (found %v), want 0", v, ok)
	}
	if got, ok := p.metric("tether_audio_seconds_total"); !ok || got <= 0 {
		_, m := p.get("/metrics")
		t.Errorf("tether_audio_seconds_total = %v (found %v), want > 0; /metrics:\n%s",
			got, ok, grepLines(string(m), "tether_audio_seconds_total"))
	}

	// The session-end log lines name the close codes tether wrote to the
	// client: the upstream's 1000 relayed, and 1014 for the lost upstream.
	ends := map[string]map[string]any{}
	for _, rec := range p.logRecords() {
		if rec["msg"] == "session ended" {
			r, _ := rec["reason"].(string)
			ends[r] = rec
		}
	}
	for reason, code := range map[string]float64{"upstream_closed": 1000, "upstream_error": 1014} {
		rec, ok := ends[reason]
		switch {
		case !ok:
			t.Errorf("no \"session ended\" log line with reason %s", reason)
		case rec["dialect"] != "live":
			t.Errorf("session ended (%s): dialect %v, want live", reason, rec["dialect"])
		case rec["close_client"] != code:
			t.Errorf("session ended (%s): close_client %v, want %v", reason, rec["close_client"], code)
		}
	}
	if rec := ends["upstream_closed"]; rec != nil {
		if s, _ := rec["audio_seconds"].(float64); s <= 0 {
			t.Errorf("session ended (upstream_closed): audio_seconds %v, want > 0 (session.closed usage)", rec["audio_seconds"])
		}
	}
}
