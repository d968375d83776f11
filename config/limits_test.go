package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/limits"
)

// An override keeps the keys it leaves out; the older
// auth.max_sessions_per_client fills limits.max_sessions.
func TestLoadLimits(t *testing.T) {
	isolateEnv(t)
	cfg, err := Load(writeYAML(t, `
auth:
  max_sessions_per_client: 3
limits:
  tokens_per_day: 1000
  window: 1h
  overrides:
    web-app: {cost_per_day: 25}
    "10.0.0.7": {max_sessions: 1, tokens_per_day: 0}
pricing:
  gpt-realtime: {input_text: 4, output_audio: 64}
state:
  backend: redis
  redis: {url: "redis://127.0.0.1:6379/2", password_env: REDIS_PASSWORD, on_error: fail_closed}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.MaxSessions != 3 || l.TokensPerDay != 1000 || l.Window != time.Hour {
		t.Errorf("limits %+v: want max_sessions 3 (from auth), tokens 1000, window 1h", l)
	}
	if got := l.For("web-app"); got.MaxSessions != 3 || got.TokensPerDay != 1000 || got.CostPerDay != 25 {
		t.Errorf("override web-app %+v: want cost 25 and the rest inherited", got)
	}
	if got := l.For("10.0.0.7"); got.MaxSessions != 1 || got.TokensPerDay != 0 {
		t.Errorf("override 10.0.0.7 %+v: want max_sessions 1 and tokens unlimited", got)
	}
	if got := l.For("someone"); got.MaxSessions != 3 || got.CostPerDay != 0 {
		t.Errorf("no override %+v: want the defaults", got)
	}
	if p := cfg.Pricing["gpt-realtime"]; p != (limits.Price{InputText: 4, OutputAudio: 64}) {
		t.Errorf("pricing %+v", p)
	}
	if r := cfg.State.Redis; cfg.State.Backend != StateBackendRedis || r.OnError != StateFailClosed ||
		r.KeyPrefix != DefaultRedisKeyPrefix || r.Timeout != DefaultRedisTimeout || r.LeaseTTL != DefaultRedisLeaseTTL {
		t.Errorf("state %+v: want redis, fail_closed and the defaults", cfg.State)
	}
}

func TestLoadLimitsProblems(t *testing.T) {
	isolateEnv(t)
	_, err := Load(writeYAML(t, `
auth:
  max_sessions_per_client: 3
limits:
  max_sessions: 4
  tokens_per_day: -1
  cost_per_day: 5
  window: 0s
  overrides:
    web-app: {window: 1h, max_session_tokens: -5, bogus: 1}
state:
  backend: redis
  redis: {url: "redis://:hunter2@redis:6379", password_file: /p, password_env: P, on_error: maybe,
    lease_ttl: 1s, flush_interval: 2s}
`))
	want := []string{
		"auth.max_sessions_per_client",
		"limits.cost_per_day",
		"limits.overrides[web-app].bogus",
		"limits.overrides[web-app].max_session_tokens",
		"limits.overrides[web-app].window",
		"limits.tokens_per_day",
		"limits.window",
		"state.redis.flush_interval",
		"state.redis.on_error",
		"state.redis.password_env",
		"state.redis.url",
	}
	got := problemPaths(t, err)
	if !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q\n%v", got, want, err)
	}
	if msg := problemAt(err, "state.redis.url"); msg != "must not hold the password: use state.redis.password_file or password_env" {
		t.Errorf("state.redis.url: %q", msg)
	}
	for _, p := range got {
		if m := problemAt(err, p); contains(m, "hunter2") {
			t.Errorf("%s: the password in the message: %q", p, m)
		}
	}
	_, err = Load(writeYAML(t, "limits: {cost_per_day: 1}\npricing: {gpt-x: {input_text: -1}}\n"))
	if got := problemPaths(t, err); !slices.Equal(got, []string{"pricing[gpt-x].input_text"}) {
		t.Errorf("pricing problems: %q\n%v", got, err)
	}
	_, err = Load(writeYAML(t, "limits: {window: 5h}\n"))
	if got := problemPaths(t, err); !slices.Equal(got, []string{"limits.window"}) {
		t.Errorf("a 5h window: %q", got)
	}
	for _, w := range []string{"1h", "6s", "48h"} {
		if _, err := Load(writeYAML(t, "limits: {window: "+w+"}\n")); err != nil {
			t.Errorf("window %s: %v", w, err)
		}
	}
	_, err = Load(writeYAML(t, "state:\n  backend: redis\n"))
	if got := problemPaths(t, err); !slices.Equal(got, []string{"state.redis.url"}) {
		t.Errorf("redis without a url: %q", got)
	}
	_, err = Load(writeYAML(t, "state:\n  backend: etcd\n"))
	if got := problemPaths(t, err); !slices.Equal(got, []string{"state.backend"}) {
		t.Errorf("unknown backend: %q", got)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// state.redis.url is checked as the Redis client parses it, so a file that
// validates also serves.
func TestLoadRedisURL(t *testing.T) {
	isolateEnv(t)
	for url, want := range map[string]string{
		"redis://127.0.0.1:6379/2":         "",
		"rediss://redis.voice.svc:6380":    "",
		"redis://127.0.0.1:99999":          `port must be a number from 1 to 65535 (got "99999")`,
		"redis://h:6379/notadb":            "is not a Redis URL: ",
		"redis://h:6379/?dial_timeout=xx":  "is not a Redis URL: ",
		"redis://h:6379/?password=hunter2": "must not hold the password (a password= parameter)",
		"redis://user:hunter2@h:6379":      "must not hold the password: use",
		"http://h:6379":                    "must be redis://host:port or rediss://host:port",
		"redis://u:hunter2@[::1":           "must be redis://host:port or rediss://host:port",
	} {
		_, err := Load(writeYAML(t, "state:\n  backend: redis\n  redis: {url: \""+url+"\"}\n"))
		got := problemAt(err, "state.redis.url")
		if want == "" && err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q (%v), want %q", url, got, err, want)
		}
		if strings.Contains(got, "hunter2") {
			t.Errorf("%s: the password in %q", url, got)
		}
	}
}

// Identities are case-sensitive: Alice's override is not alice's.
func TestLoadOverridesAreCaseSensitive(t *testing.T) {
	isolateEnv(t)
	cfg, err := Load(writeYAML(t, "limits:\n  overrides:\n    Alice: {max_sessions: 1}\n    alice: {max_sessions: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := cfg.Limits.For("Alice").MaxSessions, cfg.Limits.For("alice").MaxSessions; a != 1 || b != 2 {
		t.Errorf("Alice %d, alice %d; want 1 and 2", a, b)
	}
	t.Setenv("TETHER_LIMITS_COST_PER_DAY", "NaN")
	_, err = Load(writeYAML(t, "pricing: {m: {per_minute: 1}}\nlimits:\n  overrides:\n    a: {max_sessions: 1}\n    b: {max_sessions: 2}\n"))
	if got := problemPaths(t, err); !slices.Equal(got, []string{"limits.cost_per_day"}) {
		t.Errorf("NaN from the environment: %q, want it once", got)
	}
}
