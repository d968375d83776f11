package e2e

// The chart's alert rules in the dashboard test's Prometheus: the rules as
// the chart renders them with every threshold 0 and every `for` 0s (a
// golden file charts/test keeps in step with charts/tether/rules), so each
// alert whose condition the test's traffic creates fires over tether's
// real series: the rules' metric names and labels are the ones tether
// exports.

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// zeroRulesFile is rendered by charts/test (TestAlertRulesZeroThresholds).
const zeroRulesFile = "../charts/test/testdata/tether.rules.zero-thresholds.yaml"

// alertRuleFiles returns the rule files the test's Prometheus loads.
func alertRuleFiles(t *testing.T) []string {
	t.Helper()
	abs, err := filepath.Abs(zeroRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("the chart's rules rendered for this test: %v (cd charts/test && go test -run TestAlertRulesZeroThresholds -update)", err)
	}
	return []string{abs}
}

// wantFiring lists, per alert, the label values that tell its alerts apart
// (besides namespace and job), one entry per alert that must fire (others
// may: export_failed drops once the dead collector's retries run out).
// TetherBudgetExhausted stays inactive: this traffic has no limits, so its
// series stays at 0 (limits_test.go ends sessions with that reason).
var wantFiring = map[string][]string{
	"TetherSessionErrors":        {""},
	"TetherHeartbeatTimeouts":    {"leg=client", "leg=upstream"},
	"TetherUpstreamCoolingDown":  {"upstream=dead"},
	"TetherUpstreamUnavailable":  {""},
	"TetherSpansDropped":         {"reason=queue_full"},
	"TetherTimeToFirstAudioHigh": {"dialect=live", "dialect=realtime"},
	"TetherBudgetExhausted":      nil,
}

// checkAlertRules: every rule evaluates without error after the traffic,
// and the alerts of wantFiring fire with the scrape's namespace and job.
func checkAlertRules(t *testing.T, prom *promProc) {
	t.Helper()
	after := time.Now()
	var rules []promRule
	testkit.WaitFor(t, stepTimeout, "every alert rule evaluated after the traffic", func() bool {
		var err error
		if rules, err = prom.rules(); err != nil {
			t.Fatalf("GET /api/v1/rules: %v", err)
		}
		for _, r := range rules {
			at, err := time.Parse(time.RFC3339Nano, r.Evaluated)
			if err != nil || at.Before(after) {
				return false
			}
		}
		return len(rules) > 0
	})
	var report strings.Builder
	seen := map[string]bool{}
	for _, r := range rules {
		seen[r.Name] = true
		if r.Type != "alerting" {
			t.Errorf("rule %s is of type %s", r.Name, r.Type)
			continue
		}
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("alert %s: health %s, error %q: %s", r.Name, r.Health, r.LastError, r.Query)
		}
		want, known := wantFiring[r.Name]
		if !known {
			t.Errorf("alert %s is not in wantFiring: say whether the e2e traffic fires it", r.Name)
		}
		var got []string
		for _, a := range r.Alerts {
			if a.State != "firing" {
				t.Errorf("alert %s %v is %s, want firing (for 0s)", r.Name, a.Labels, a.State)
			}
			if a.Labels["namespace"] != "e2e" || a.Labels["job"] != "tether" {
				t.Errorf("alert %s labels %v, want namespace e2e and job tether", r.Name, a.Labels)
			}
			got = append(got, distinguishing(a.Labels))
		}
		sort.Strings(got)
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) })
		if len(missing) > 0 || (want == nil && len(got) > 0) {
			t.Errorf("alert %s fired for %q, want %q; query %s", r.Name, got, want, r.Query)
		}
		fmt.Fprintf(&report, "%-28s %-8s %-6s %s\n", r.Name, r.State, r.Health, strings.Join(got, " "))
	}
	for name := range maps.Keys(wantFiring) {
		if !seen[name] {
			t.Errorf("alert %s is not loaded from %s", name, zeroRulesFile)
		}
	}
	t.Logf("alert rules (threshold 0, for 0s) over tether's series:\n%s", report.String())
}

// distinguishing is an alert's labels less alertname, severity, namespace
// and job, as k=v joined by commas.
func distinguishing(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		switch k {
		case "alertname", "severity", "namespace", "job":
			continue
		}
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}
