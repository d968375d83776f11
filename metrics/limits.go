package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherproxy/tether/limits"
)

// stateOps are the values of tether_state_errors_total's op label.
var stateOps = []string{"admit", "flush", "refresh", "release", "status"}

// StateError counts one failed round trip to the shared state store
// (tether_state_errors_total{op}).
func (m *Metrics) StateError(op string) {
	m.stateErrors.WithLabelValues(op).Inc()
}

// WatchSpending exports tether_budget_spent{client,kind} from spending at
// scrape time: one series per client with usage in the current window
// (limits.client_metrics).
func (m *Metrics) WatchSpending(spending func() []limits.Spend) {
	m.Registry.MustRegister(spendCollector(spending))
}

var budgetSpentDesc = prometheus.NewDesc("tether_budget_spent",
	"Usage in the current limits window, by client identity and kind (tokens, audio_seconds, cost_usd), as this replica last knew the fleet's total.",
	[]string{"client", "kind"}, nil)

// spendCollector reads the enforcer's spending when scraped.
type spendCollector func() []limits.Spend

func (c spendCollector) Describe(ch chan<- *prometheus.Desc) { ch <- budgetSpentDesc }

func (c spendCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c() {
		// A label value must be UTF-8 (a token label need not be): one bad
		// label must not fail the whole scrape.
		client := strings.ToValidUTF8(s.Client, "\uFFFD")
		ch <- prometheus.MustNewConstMetric(budgetSpentDesc, prometheus.GaugeValue, float64(s.Spent.Tokens), client, "tokens")
		ch <- prometheus.MustNewConstMetric(budgetSpentDesc, prometheus.GaugeValue, s.Spent.AudioSeconds, client, "audio_seconds")
		ch <- prometheus.MustNewConstMetric(budgetSpentDesc, prometheus.GaugeValue, s.Spent.CostUSD, client, "cost_usd")
	}
}
