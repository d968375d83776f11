package charttest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/tetherproxy/tether/internal/testkit"
	"go.yaml.in/yaml/v3"
)

// rulesTestFile holds promtool unit tests of every alert (firing and not).
const rulesTestFile = "testdata/tether.rules.test.yaml"

// zeroRulesGolden is the rules with every threshold 0 and every `for` 0s,
// which e2e/dashboard_test.go loads into its Prometheus: each alert whose
// condition the e2e traffic creates must fire there.
const zeroRulesGolden = "tether.rules.zero-thresholds.yaml"

// requirePromtool returns promtool ($TETHER_PROMTOOL, else on PATH; Debian's
// prometheus package). Without it the test is skipped, unless
// TETHER_REQUIRE_PROMETHEUS is set (CI), when it fails.
func requirePromtool(t *testing.T) string {
	t.Helper()
	return testkit.Tool(t, "TETHER_PROMTOOL", "promtool", "TETHER_REQUIRE_PROMETHEUS",
		"the alert rule tests need it (apt-get install prometheus)")
}

// renderRules renders the chart with values (prometheusRule.enabled on) and
// returns the PrometheusRule and its spec as a Prometheus rule file: the
// rendered spec's text, unindented, so promtool reads exactly what the
// operator would hand Prometheus.
func renderRules(t *testing.T, values string) (*monitoringv1.PrometheusRule, string) {
	t.Helper()
	r, err := renderChart(tetherChartDir, "prometheusRule:\n  enabled: true\n"+values, "")
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	pr := one[monitoringv1.PrometheusRule](t, r)
	for _, d := range splitDocs(r.manifest) {
		if sourceOf(d) != "tether/templates/prometheusrule.yaml" {
			continue
		}
		_, spec, ok := strings.Cut(d, "\nspec:\n")
		if !ok {
			t.Fatalf("PrometheusRule without spec:\n%s", d)
		}
		var b strings.Builder
		for line := range strings.SplitSeq(strings.TrimRight(spec, "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, "  ") {
				t.Fatalf("spec line %q is not indented", line)
			}
			b.WriteString(strings.TrimPrefix(line, "  ") + "\n")
		}
		return pr, b.String()
	}
	t.Fatal("no tether/templates/prometheusrule.yaml document")
	return nil, ""
}

// promtool runs promtool with args in dir and returns its output; a failure
// fails the test.
func promtool(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// alertNames lists the alerts of a PrometheusRule in order.
func alertNames(pr *monitoringv1.PrometheusRule) []string {
	var out []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Alert)
		}
	}
	return out
}

// TestAlertRules: the rules rendered with the chart's defaults pass
// `promtool check rules` and the unit tests of testdata/tether.rules.test.yaml,
// which cover every alert both firing and not firing.
func TestAlertRules(t *testing.T) {
	bin := requirePromtool(t)
	pr, rules := renderRules(t, "")
	want := []string{"TetherSessionErrors", "TetherHeartbeatTimeouts", "TetherUpstreamCoolingDown",
		"TetherUpstreamUnavailable", "TetherSpansDropped", "TetherTimeToFirstAudioHigh", "TetherBudgetExhausted"}
	if got := alertNames(pr); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tether.rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tether.rules.test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	out := promtool(t, bin, dir, "check", "rules", "tether.rules.yaml")
	t.Logf("promtool check rules:\n%s", out)
	if !strings.Contains(out, "SUCCESS: 7 rules found") {
		t.Errorf("promtool check rules did not find the 7 rules:\n%s", out)
	}
	out = promtool(t, bin, dir, "test", "rules", "tether.rules.test.yaml")
	t.Logf("promtool test rules:\n%s", out)

	// Every alert has a case where it fires and one where it does not.
	var unit struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(tests, &unit); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range unit.Tests {
		for _, at := range tc.AlertRuleTest {
			if !slices.Contains(want, at.Alertname) {
				t.Errorf("%s tests %s, which the chart does not ship", rulesTestFile, at.Alertname)
			}
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	for _, a := range want {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: %s firing tested %v, not firing tested %v; want both", rulesTestFile, a, fires[a], quiet[a])
		}
	}
}

// TestAlertRulesZeroThresholds renders every alert with threshold 0 and
// for 0s, checks the result with promtool and keeps it as a golden file
// for the e2e test, which loads it into a Prometheus scraping real tethers.
func TestAlertRulesZeroThresholds(t *testing.T) {
	bin := requirePromtool(t)
	var values strings.Builder
	values.WriteString("  alerts:\n")
	pr, _ := renderRules(t, "")
	for _, a := range alertNames(pr) {
		values.WriteString("    " + a + ": {threshold: 0, for: 0s}\n")
	}
	_, rules := renderRules(t, values.String())
	rules = "# The chart's alert rules with every threshold 0 and every `for` 0s, as\n" +
		"# charts/test renders them (go test -update rewrites this file), for\n" +
		"# e2e/dashboard_test.go: loaded into a Prometheus scraping real tethers.\n" + rules
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, bin, dir, "check", "rules", "rules.yaml")
	golden(t, zeroRulesGolden, rules)
}
