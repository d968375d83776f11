package upstreams

import (
	"strings"
	"testing"
)

// TestConfiguredQueryWins: parameters of the configured URL cannot be
// overridden by the client's query (in any case), and a generic upstream's
// credential parameter is tether's alone.
func TestConfiguredQueryWins(t *testing.T) {
	url, sn := startMock(t, "")
	t.Setenv("TEST_QUERY_KEY", "gen-canary-key")
	d, err := NewDialer([]Config{{Name: "g", Type: KindGeneric, URL: url + "?api-version=2025-04-01&deployment=prod",
		APIKeyEnv: "TEST_QUERY_KEY", APIKeyQuery: "sig"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, d, Request{RawQuery: "api-version=1999-01-01&API-VERSION=x&Deployment=cheap&SIG=client&sig=client2&model=m&foo=bar",
		Model: "m"}); err != nil {
		t.Fatal(err)
	}
	r := sn.last(t)
	q := r.URL.Query()
	want := map[string]string{"api-version": "2025-04-01", "deployment": "prod", "sig": "gen-canary-key", "model": "m", "foo": "bar"}
	for k, v := range want {
		if got := q[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want [%s] (query %q)", k, got, v, r.URL.RawQuery)
		}
	}
	if len(q) != len(want) || strings.Contains(r.URL.RawQuery, "client") {
		t.Errorf("upstream query %q has client parameters that should have been dropped", r.URL.RawQuery)
	}
}
