// Package prom reads Prometheus metrics in tests: part of the shared test
// kit, kept apart so that modules importing testkit need no Prometheus.
package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter gathers g and returns the counter name{label="value"}; found is
// false when no such series is registered. A failed gather fails the test.
func Counter(t testing.TB, g prometheus.Gatherer, name, label, value string) (v float64, found bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}
