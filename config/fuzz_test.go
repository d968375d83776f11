package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a YAML file. Load must not
// panic; it returns either a valid config, a plain error (unreadable YAML),
// or a *ValidationError whose problems all have a path and a message. The
// outcome must be the same on a second load (no map-order dependence).
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		string(DefaultsYAML()),
		"",
		"upstreams: []\n",
		"upstreams:\n  - type: generic\n    bogus: 1\n  -\n  - headers: {Host: x}\n",
		"server: {listen: ':0', paths: [/a, a], max_sessions: lots}\nlifecycle: {idle_timeout: 5x}\n",
		"server: 5\nlog: [1]\n\"\": {a.b: 1}\n",
		"lifecycle:\n  heartbeat:\n    client: {interval: 1s, timeout: 2s}\n",
		"tls: {mode: acme, acme: {on_demand: true}}\n",
		"a: &x [*x]\n",
		"server.listen: ':1'\nserver: {paths: ~}\n",
		"upstreams: [{headers: {1: 2}}, {dial_timeout: 1e400}]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		check := func(cfg *Config, err error) {
			var ve *ValidationError
			switch {
			case err == nil:
				if cfg == nil {
					t.Fatal("Load returned nil, nil")
				}
				if verr := cfg.Validate(); verr != nil {
					t.Fatalf("Load succeeded but Validate() = %v", verr)
				}
			case cfg != nil:
				t.Fatalf("Load returned a config and an error: %v", err)
			case errors.As(err, &ve):
				if len(ve.Problems) == 0 {
					t.Fatal("ValidationError without problems")
				}
				for _, p := range ve.Problems {
					if p.Path == "" || p.Message == "" {
						t.Fatalf("problem with empty path or message: %+v", p)
					}
				}
			}
		}
		check(cfg, err)
		cfg2, err2 := Load(path)
		check(cfg2, err2)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Load is not deterministic:\n%v\n---\n%v", err, err2)
		}
	})
}
