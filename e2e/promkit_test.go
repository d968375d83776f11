package e2e

// A real Prometheus for the dashboard test: Debian's prometheus binary,
// started by the test on a loopback port with a temp storage directory and a
// generated config, queried through its HTTP API, stopped at the end.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// promScrape is the scrape (and rule evaluation) interval of the test's
// Prometheus.
const promScrape = time.Second

// requirePrometheus returns the prometheus binary: $TETHER_PROMETHEUS, else
// prometheus on PATH (Debian's package: apt-get install prometheus). Without
// one the test is skipped, unless TETHER_REQUIRE_PROMETHEUS is set (CI),
// when it fails.
func requirePrometheus(t *testing.T) string {
	t.Helper()
	return testkit.Tool(t, "TETHER_PROMETHEUS", "prometheus", "TETHER_REQUIRE_PROMETHEUS",
		"the dashboard test needs a real Prometheus (apt-get install prometheus)")
}

// promTarget is one tether admin listener to scrape, with the labels the
// Prometheus Operator would give a pod's metrics.
type promTarget struct {
	Addr, Namespace, Pod string
}

// promProc is a running Prometheus.
type promProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    testkit.SyncBuffer
	exited chan struct{}
	URL    string // http://127.0.0.1:PORT
	http   *http.Client
}

// promConfig is the generated prometheus.yml: every target scraped each
// promScrape on /metrics, job tether, with namespace and pod labels, and
// ruleFiles loaded.
func promConfig(targets []promTarget, ruleFiles []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n",
		promScrape, promScrape, promScrape)
	if len(ruleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range ruleFiles {
			fmt.Fprintf(&b, "  - %q\n", f)
		}
	}
	b.WriteString("scrape_configs:\n  - job_name: tether\n    metrics_path: /metrics\n    static_configs:\n")
	for _, tg := range targets {
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {namespace: %q, pod: %q}\n", tg.Addr, tg.Namespace, tg.Pod)
	}
	return b.String()
}

// startPrometheus runs bin on a free loopback port scraping targets, and
// waits until it is ready. Cleanup stops it (SIGTERM, then SIGKILL).
func startPrometheus(t *testing.T, bin string, targets []promTarget, ruleFiles ...string) *promProc {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(promConfig(targets, ruleFiles)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The port is picked free and then released; if another process takes
	// it in between, Prometheus exits at once and the next port is tried.
	for attempt := 1; ; attempt++ {
		p := &promProc{t: t, exited: make(chan struct{}),
			http: &http.Client{Timeout: stepTimeout, Transport: &http.Transport{DisableKeepAlives: true}}}
		addr := testkit.DeadAddr(t)
		p.URL = "http://" + addr
		p.cmd = exec.Command(bin,
			"--config.file="+cfg,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--storage.tsdb.retention.time=1h",
			"--web.listen-address="+addr,
			"--log.level=info",
		)
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		go func() {
			_ = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(p.stop)
		if p.waitReady() {
			t.Logf("prometheus on %s (%s)", p.URL, bin)
			return p
		}
		if attempt == 3 {
			t.Fatalf("prometheus did not start; its log:\n%s", tail(p.out.String(), 8<<10))
		}
	}
}

// waitReady polls /-/ready; false when the process exited first.
func (p *promProc) waitReady() bool {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return false
		default:
		}
		resp, err := p.http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("prometheus not ready within %v; its log:\n%s", startTimeout, tail(p.out.String(), 8<<10))
	return false
}

// stop ends Prometheus (SIGTERM; SIGKILL after exitTimeout). It is safe to
// call more than once.
func (p *promProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(exitTimeout):
		p.t.Errorf("prometheus did not exit within %v of SIGTERM", exitTimeout)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	if p.t.Failed() {
		p.t.Logf("prometheus log (last 8 KiB):\n%s", tail(p.out.String(), 8<<10))
	}
}

// api GETs path with query from the HTTP API and decodes data into out.
func (p *promProc) api(path string, query url.Values, out any) error {
	resp, err := p.http.Get(p.URL + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("HTTP %d, not JSON: %.300s", resp.StatusCode, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// promSeries is one series of a query result: its labels and its values
// (one for an instant query).
type promSeries struct {
	Metric map[string]string
	Values []float64
}

// finite counts the values that are neither NaN nor infinite.
func (s promSeries) finite() int {
	n := 0
	for _, v := range s.Values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			n++
		}
	}
	return n
}

// query evaluates expr at time at (/api/v1/query).
func (p *promProc) query(expr string, at time.Time) ([]promSeries, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	q := url.Values{"query": {expr}, "time": {promTime(at)}}
	if err := p.api("/api/v1/query", q, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]promSeries, 0, len(vec))
		for _, s := range vec {
			v, err := promValue(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, promSeries{Metric: s.Metric, Values: []float64{v}})
		}
		return out, nil
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(data.Result, &s); err != nil {
			return nil, err
		}
		v, err := promValue(s)
		return []promSeries{{Values: []float64{v}}}, err
	}
	return nil, fmt.Errorf("result type %q", data.ResultType)
}

// queryRange evaluates expr from start to end every step (/api/v1/query_range).
func (p *promProc) queryRange(expr string, start, end time.Time, step time.Duration) ([]promSeries, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	q := url.Values{"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
	if err := p.api("/api/v1/query_range", q, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("result type %q, want matrix", data.ResultType)
	}
	out := make([]promSeries, 0, len(data.Result))
	for _, s := range data.Result {
		ps := promSeries{Metric: s.Metric}
		for _, pt := range s.Values {
			v, err := promValue(pt)
			if err != nil {
				return nil, err
			}
			ps.Values = append(ps.Values, v)
		}
		out = append(out, ps)
	}
	return out, nil
}

// labelValues lists the values of label on the series matching match
// (/api/v1/label/<label>/values), as Grafana's label_values() does.
func (p *promProc) labelValues(label, match string, start, end time.Time) ([]string, error) {
	var vals []string
	q := url.Values{"start": {promTime(start)}, "end": {promTime(end)}}
	if match != "" {
		q.Set("match[]", match)
	}
	err := p.api("/api/v1/label/"+url.PathEscape(label)+"/values", q, &vals)
	return vals, err
}

// promRule is one rule as /api/v1/rules reports it.
type promRule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"`
	Alerts    []struct {
		Labels map[string]string `json:"labels"`
		State  string            `json:"state"`
	} `json:"alerts"`
	Evaluated string `json:"lastEvaluation"`
}

// rules lists every loaded rule.
func (p *promProc) rules() ([]promRule, error) {
	var data struct {
		Groups []struct {
			Name  string     `json:"name"`
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []promRule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// waitTargetsUp waits until every scrape target reports health up.
func (p *promProc) waitTargetsUp(n int) {
	p.t.Helper()
	var last string
	testkit.WaitFor(p.t, startTimeout, fmt.Sprintf("%d scrape targets up", n), func() bool {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := p.api("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
			last = err.Error()
			return false
		}
		up := 0
		var states []string
		for _, tg := range data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
			states = append(states, fmt.Sprintf("%s %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
		}
		last = strings.Join(states, "; ")
		return up == n && len(data.ActiveTargets) == n
	})
	p.t.Logf("scrape targets: %s", last)
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64)
}

// promValue decodes a [timestamp, "value"] pair's value.
func promValue(pt [2]any) (float64, error) {
	s, ok := pt[1].(string)
	if !ok {
		return 0, errors.New("sample value is not a string")
	}
	return strconv.ParseFloat(s, 64)
}
