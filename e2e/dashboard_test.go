package e2e

// The chart's Grafana dashboard against a real Prometheus: two tethers
// (pods tether-a and tether-b) scraped every second carry Realtime voice
// turns, GPT-Live calls, upstream resets, stalls, silent clients, fatal
// upstream errors, refused handshakes, a dead upstream in cool-down, spans
// dropped on the way to a dead trace collector, and a drain; then every
// PromQL expression of charts/tether/dashboards/tether.json is evaluated
// through Prometheus' HTTP API, as Grafana would send it, and must return
// data.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// dashboardFile is the chart's dashboard (templates/dashboard.yaml embeds it).
const dashboardFile = "../charts/tether/dashboards/tether.json"

// grafanaDashboard is the part of the dashboard JSON the test reads.
type grafanaDashboard struct {
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			IncludeAll bool            `json:"includeAll"`
			AllValue   string          `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID   string `json:"refId"`
		Expr    string `json:"expr"`
		Instant bool   `json:"instant"`
		Legend  string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // of a collapsed row
}

func TestPrometheusDashboard(t *testing.T) {
	promBin := requirePrometheus(t)
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash grafanaDashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}

	_, upURL := startMock(t, mock.Options{UsageInterval: 300 * time.Millisecond})
	vars := map[string]string{
		"UpstreamURL":  upURL,
		"DeadURL":      "ws://" + testkit.DeadAddr(t) + "/v1/realtime",
		"DrainTimeout": "10s",
		// Spans go to a collector that is not there, through a queue of one:
		// the first export hangs in its retries and every later span is
		// dropped (tether_spans_dropped_total{reason="queue_full"}).
		"TraceExporter": "otlp",
		"OTLPEndpoint":  "http://" + testkit.DeadAddr(t),
	}
	a := startTether(t, "prometheus.yaml", vars, "OTEL_BSP_MAX_QUEUE_SIZE=1")
	vars["TraceExporter"], vars["OTLPEndpoint"] = "none", ""
	b := startTether(t, "prometheus.yaml", vars)
	prom := startPrometheus(t, promBin, []promTarget{
		{Addr: a.Admin, Namespace: "e2e", Pod: "tether-a"},
		{Addr: b.Admin, Namespace: "e2e", Pod: "tether-b"},
	}, alertRuleFiles(t)...)
	prom.waitTargetsUp(2)
	start := time.Now()

	// One Realtime session stays open through the queries (active sessions,
	// heartbeat round trips at the end of the range).
	open := dialClient(t, a.Listen, clientOpts{})
	open.WaitEvent("session.created", stepTimeout)
	driveTraffic(t, a)
	drain(t, b)

	// A few scrapes after the last event, so every counter's last increase
	// is in Prometheus.
	time.Sleep(4 * promScrape)
	end := time.Now()

	g := newGrafanaEval(t, prom, start, end)
	g.resolveVariables(dash)
	report := g.evalPanels(dash.Panels)
	t.Logf("dashboard %s against Prometheus, %v of data, $__rate_interval=%s:\n%s",
		dashboardFile, end.Sub(start).Round(time.Second), g.builtin["__rate_interval"], report)

	checkAlertRules(t, prom)

	open.SendClose(1000, "done")
	open.WaitClose(stepTimeout)
	prom.stop()
}

// driveTraffic runs on a the calls and faults that make every panel's series
// exist with values.
func driveTraffic(t *testing.T, a *proc) {
	t.Helper()
	// Realtime voice turns, ended by the caller.
	for range 2 {
		c := dialClient(t, a.Listen, clientOpts{})
		c.WaitEvent("session.created", stepTimeout)
		c.voiceTurn()
		c.voiceTurn()
		c.SendClose(1000, "bye")
		c.WaitClose(stepTimeout)
	}

	// A GPT-Live call: the caller speaks, the answer's transcript and
	// audio come back, usage is reported, the caller ends it.
	lc := dialLive(t, a.Listen, clientOpts{})
	lc.speak(600 * time.Millisecond)
	lc.WaitEvent(live.OutputTranscriptDelta, stepTimeout)
	time.Sleep(700 * time.Millisecond) // usage every 300 ms
	lc.stopMic()
	lc.Send(map[string]any{"type": live.SessionClose})
	lc.WaitEvent(live.SessionClosed, stepTimeout)
	lc.WaitClose(stepTimeout)

	// Faults, each ending its own session.
	rt := func() *rtClient {
		c := dialClient(t, a.Listen, clientOpts{})
		c.WaitEvent("session.created", stepTimeout)
		return c
	}
	c := rt() // upstream reset after a turn
	c.voiceTurn()
	c.fault("rst", nil)
	c.WaitClose(stepTimeout)
	c = rt() // upstream stall: its heartbeat times out
	c.fault("stall", nil)
	c.WaitClose(stepTimeout)
	c = dialClient(t, a.Listen, clientOpts{NoPong: true}) // silent client
	c.WaitEvent("session.created", stepTimeout)
	c.WaitClose(stepTimeout)
	c = rt() // an upstream error event, then a fatal one (session_expired)
	c.fault("error", map[string]any{"code": "mock_error"})
	c.WaitEvent("error", stepTimeout)
	c.fault("expire", nil)
	c.WaitClose(stepTimeout)
	lr := dialLive(t, a.Listen, clientOpts{}) // GPT-Live upstream reset
	lr.streaming(t)
	lr.fault("rst", nil)
	lr.WaitClose(stepTimeout)

	// Refused handshakes: not a WebSocket, an unserved model, and a model
	// only the dead upstream serves (twice: dialed, then in cool-down).
	if a := rawRequest(t, a.Listen, "GET /v1/realtime HTTP/1.1\r\nHost: x\r\n\r\n"); a.Status != http.StatusBadRequest && a.Status != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %d", a.Status)
	}
	if ans := rawUpgrade(t, a.Listen, "/v1/realtime?model=nope", nil); ans.Status != http.StatusBadRequest {
		t.Errorf("unserved model: %d %s", ans.Status, ans.Body)
	}
	for range 2 {
		if ans := rawUpgrade(t, a.Listen, "/v1/realtime?model=gpt-dead", nil); ans.Status != http.StatusBadGateway {
			t.Errorf("model of the dead upstream: %d %s, want 502", ans.Status, ans.Body)
		}
	}

	want := map[string]string{
		`tether_sessions_total{reason="client_closed",dialect="realtime"}`: "2",
		`tether_sessions_total{reason="upstream_closed",dialect="live"}`:   "1",
		`tether_sessions_total{reason="upstream_error"}`:                   "2",
		`tether_sessions_total{reason="upstream_heartbeat_timeout"}`:       "1",
		`tether_sessions_total{reason="client_heartbeat_timeout"}`:         "1",
		`tether_sessions_total{reason="upstream_fatal_event"}`:             "1",
		`tether_handshake_rejections_total{reason="upstream_unavailable"}`: "2",
		`tether_upstream_available{upstream="dead"}`:                       "0",
		`tether_heartbeat_timeouts_total{leg="upstream"}`:                  "1",
		`tether_heartbeat_timeouts_total{leg="client"}`:                    "1",
		`tether_handshake_rejections_total{reason="model_not_allowed"}`:    "1",
		`tether_upstream_errors_total{code="session_expired"}`:             "1",
	}
	testkit.WaitFor(t, stepTimeout, "tether-a's counters", func() bool {
		for sel, v := range want {
			name, labels := splitSelector(sel)
			got, ok := a.metric(name, labels...)
			if !ok || fmt.Sprint(got) != v {
				return false
			}
		}
		return true
	})
	if n, _ := a.metric("tether_spans_dropped_total", `reason="queue_full"`); n == 0 {
		t.Error("no span was dropped on the way to the dead collector")
	}
}

// splitSelector turns `name{a="x",b="y"}` into name and its label pairs.
func splitSelector(sel string) (string, []string) {
	name, rest, ok := strings.Cut(sel, "{")
	if !ok {
		return sel, nil
	}
	return name, strings.Split(strings.TrimSuffix(rest, "}"), ",")
}

// drain opens a GPT-Live call and a Realtime session in the middle of a
// slow response (4 s) on b, sends SIGTERM, has an upgrade refused while b
// waits for the response, and waits for b to exit.
func drain(t *testing.T, b *proc) {
	t.Helper()
	lc := dialLive(t, b.Listen, clientOpts{})
	lc.streaming(t)
	busy := dialClient(t, b.Listen, clientOpts{})
	busy.WaitEvent("session.created", stepTimeout)
	busy.fault("slow", map[string]any{"delta_interval_ms": 400})
	busy.Send(map[string]any{"type": "response.create"})
	busy.WaitEvent("response.output_audio.delta", stepTimeout)
	time.Sleep(1500 * time.Millisecond) // a scrape sees both open
	b.signal(syscall.SIGTERM)
	testkit.WaitFor(t, stepTimeout, "tether-b's /readyz to say 503", func() bool {
		code, _, _, err := b.adminDo(http.MethodGet, "/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})
	if a := rawUpgrade(t, b.Listen, "/v1/realtime?model=gpt-realtime", nil); a.Status != http.StatusServiceUnavailable {
		t.Errorf("upgrade while draining: %d %s, want 503", a.Status, a.Body)
	}
	busy.WaitEvent("response.done", stepTimeout)
	busy.WaitClose(stepTimeout)
	lc.WaitClose(stepTimeout)
	if code := b.waitExit(exitTimeout); code != 0 {
		t.Errorf("tether-b exited %d after SIGTERM", code)
	}
}

// grafanaEval evaluates a dashboard's queries as Grafana would over the
// range start..end.
type grafanaEval struct {
	t          *testing.T
	prom       *promProc
	start, end time.Time
	step       time.Duration
	builtin    map[string]string // Grafana's global variables, without $
	vars       map[string]string // the dashboard's variables, resolved
}

func newGrafanaEval(t *testing.T, prom *promProc, start, end time.Time) *grafanaEval {
	// Grafana: $__interval is the range over the panel's data points,
	// never below the data source's scrape interval (set to 1 s, the
	// scrape interval here); $__rate_interval is max($__interval + scrape
	// interval, 4 * scrape interval).
	const maxDataPoints = 1000
	interval := max(promScrape, (end.Sub(start) / maxDataPoints).Round(time.Second))
	rate := max(interval+promScrape, 4*promScrape)
	rng := end.Sub(start).Round(time.Second)
	return &grafanaEval{t: t, prom: prom, start: start, end: end, step: interval,
		builtin: map[string]string{
			"__interval":      promDuration(interval),
			"__interval_ms":   fmt.Sprint(interval.Milliseconds()),
			"__rate_interval": promDuration(rate),
			"__range":         promDuration(rng),
			"__range_s":       fmt.Sprint(int(rng.Seconds())),
			"__range_ms":      fmt.Sprint(rng.Milliseconds()),
		},
		vars: map[string]string{}}
}

func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

var (
	grafanaVarRE   = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)
	labelValuesRE  = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*?)\s*,\s*)?(\w+)\s*\)\s*$`)
	regexSpecialRE = regexp.MustCompile(`[\\.+*?()|\[\]{}^$]`)
)

// substitute replaces Grafana variables in expr; an unknown one fails the test.
func (g *grafanaEval) substitute(expr string) string {
	g.t.Helper()
	return grafanaVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVarRE.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		if v, ok := g.builtin[name]; ok {
			return v
		}
		if v, ok := g.vars[name]; ok {
			return v
		}
		g.t.Errorf("query %q uses $%s, which is neither a Grafana variable nor one of the dashboard's", expr, name)
		return m
	})
}

// resolveVariables evaluates each query variable (label_values) in order
// and selects every value it returns, as "All" with each value ticked:
// in a regex matcher that is (v1|v2|...). Every variable must find values.
func (g *grafanaEval) resolveVariables(dash grafanaDashboard) {
	g.t.Helper()
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		var obj struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &obj) == nil && obj.Query != "" {
			q = obj.Query
		} else {
			var s string
			if json.Unmarshal(v.Query, &s) == nil && s != "" {
				q = s
			}
		}
		m := labelValuesRE.FindStringSubmatch(q)
		if m == nil {
			g.t.Errorf("variable %s: query %q is not label_values(...)", v.Name, q)
			continue
		}
		match, label := g.substitute(m[1]), m[2]
		vals, err := g.prom.labelValues(label, match, g.start, g.end)
		if err != nil {
			g.t.Errorf("variable %s: label_values(%s, %s): %v", v.Name, match, label, err)
			continue
		}
		if len(vals) == 0 {
			g.t.Errorf("variable %s: label_values(%s, %s) found no value", v.Name, match, label)
			continue
		}
		sort.Strings(vals)
		quoted := make([]string, len(vals))
		for i, s := range vals {
			quoted[i] = regexSpecialRE.ReplaceAllString(s, `\\$0`)
		}
		g.vars[v.Name] = "(" + strings.Join(quoted, "|") + ")"
		g.t.Logf("variable $%s = %v (label_values(%s, %s))", v.Name, vals, match, label)
	}
	if got := g.vars["pod"]; got != "(tether-a|tether-b)" {
		g.t.Errorf("$pod resolved to %q, want both tethers", got)
	}
}

// evalPanels evaluates every target of every panel: an instant query at the
// end of the range for each, and a range query for time series panels (or
// any panel not marked instant). Each must return at least one series; a
// range query must have at least one finite value. It returns the report.
func (g *grafanaEval) evalPanels(panels []grafanaPanel) string {
	g.t.Helper()
	var report strings.Builder
	fmt.Fprintf(&report, "%-4s %-42s %-4s %8s %8s %8s\n", "id", "panel", "ref", "instant", "range", "finite")
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				g.t.Errorf("panel %d %q has no query", p.ID, p.Title)
			}
			for _, tg := range p.Targets {
				g.evalTarget(&report, p, tg.RefID, tg.Expr, tg.Instant)
			}
		}
	}
	walk(panels)
	return report.String()
}

func (g *grafanaEval) evalTarget(report *strings.Builder, p grafanaPanel, ref, rawExpr string, instant bool) {
	g.t.Helper()
	expr := g.substitute(rawExpr)
	where := fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, ref)
	inst, err := g.prom.query(expr, g.end)
	if err != nil {
		g.t.Errorf("%s: instant query %s: %v", where, expr, err)
	} else if len(inst) == 0 {
		g.t.Errorf("%s: instant query returned no series: %s", where, expr)
	}
	rangeN, finite := "-", "-"
	if p.Type == "timeseries" || !instant {
		res, err := g.prom.queryRange(expr, g.start, g.end, g.step)
		switch {
		case err != nil:
			g.t.Errorf("%s: range query %s: %v", where, expr, err)
		case len(res) == 0:
			g.t.Errorf("%s: range query returned no series: %s", where, expr)
		default:
			n := 0
			for _, s := range res {
				n += s.finite()
			}
			if n == 0 {
				g.t.Errorf("%s: range query has series %v but no finite value: %s", where, seriesLabels(res), expr)
			}
			rangeN, finite = fmt.Sprint(len(res)), fmt.Sprint(n)
		}
	}
	fmt.Fprintf(report, "%-4d %-42s %-4s %8d %8s %8s  %s\n", p.ID, p.Title, ref, len(inst), rangeN, finite, seriesLabels(inst))
}

// seriesLabels lists the series' label sets, briefly.
func seriesLabels(ss []promSeries) string {
	var out []string
	for _, s := range ss {
		var kv []string
		for k, v := range s.Metric {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		out = append(out, "{"+strings.Join(kv, ",")+"}")
	}
	sort.Strings(out)
	const max = 6
	if len(out) > max {
		return strings.Join(out[:max], " ") + fmt.Sprintf(" ... (%d)", len(out))
	}
	return strings.Join(out, " ")
}
