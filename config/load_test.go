package config

import (
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/upstreams"
)

func TestLoadNoFileIsDefault(t *testing.T) {
	isolateEnv(t)
	got, err := Load("")
	if err != nil {
		t.Fatalf("Load(\"\") = %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Load(\"\") =\n%+v\nwant Default() =\n%+v", got, Default())
	}
	if got.Upstreams != nil {
		t.Fatalf("Upstreams = %#v, want nil (automatic)", got.Upstreams)
	}
}

func TestLoadFile(t *testing.T) {
	isolateEnv(t)
	path := writeYAML(t, `
server:
  listen: ":0"
  paths: [/v1/realtime, /realtime]
  allowed_origins: ["https://app.example.com"]
admin:
  listen: "127.0.0.1:0"
  pprof: false
lifecycle:
  idle_timeout: 0          # disabled
  max_duration: 1h30m
  heartbeat:
    upstream:
      interval: 5s
      timeout: 2s
tls:
  mode: off                # unquoted: still the string "off"
log:
  level: debug
`)
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := Default()
	want.Server.Listen = ":0"
	want.Server.Paths = []string{"/v1/realtime", "/realtime"}
	want.Server.AllowedOrigins = []string{"https://app.example.com"}
	want.Admin = Admin{Listen: "127.0.0.1:0", PProf: false}
	want.Lifecycle.IdleTimeout = 0
	want.Lifecycle.MaxDuration = 90 * time.Minute
	want.Lifecycle.Heartbeat.Upstream = Heartbeat{Interval: 5 * time.Second, Timeout: 2 * time.Second}
	want.Log.Level = LogLevelDebug
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
	}
}

func TestLoadNullKeepsDefault(t *testing.T) {
	isolateEnv(t)
	// Keys with nothing after them, e.g. every child commented out.
	got, err := Load(writeYAML(t, "server:\nauth:\n  jwt:\nlog:\n  level:\nupstreams:\n"))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Load =\n%+v\nwant Default()", got)
	}
}

func TestLoadFileErrors(t *testing.T) {
	isolateEnv(t)
	t.Run("missing file", func(t *testing.T) {
		_, err := Load("/nonexistent/tether.yaml")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
	for name, content := range map[string]string{
		"syntax":           "server:\n  listen: [\n",
		"tab indent":       "server:\n\tlisten: x\n",
		"top-level list":   "- server\n",
		"duplicate key":    "log: {level: info}\nlog: {level: debug}\n",
		"top-level scalar": "hello\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := writeYAML(t, content)
			cfg, err := Load(path)
			if err == nil || cfg != nil {
				t.Fatalf("Load = %v, %v; want nil, error", cfg, err)
			}
			var ve *ValidationError
			if errors.As(err, &ve) {
				t.Fatalf("err = %v, want a plain YAML error", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "yaml") {
				t.Fatalf("err = %q, want the file name and the YAML error", err)
			}
		})
	}
}

// TestLoadEveryProblemAtOnce: decode problems of several kinds and rule
// violations are all reported together, with their paths.
func TestLoadEveryProblemAtOnce(t *testing.T) {
	isolateEnv(t)
	_, err := Load(writeYAML(t, `
server:
  max_sessions: lots               # a string where a number belongs
lifecycle:
  idle_timeout: 5x                 # not a duration
  heartbeat:
    client:
      intervall: 5s                # unknown nested key
upstreams:
  - type: openai
    dial_timeout: -1s              # rule: must be > 0
log:
  level: loud                      # rule: not an allowed value
`))
	want := []string{
		"lifecycle.heartbeat.client.intervall",
		"lifecycle.idle_timeout",
		"log.level",
		"server.max_sessions",
		"upstreams[0].dial_timeout",
	}
	if got := problemPaths(t, err); !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q\n%v", got, want, err)
	}
	for path, msg := range map[string]string{
		"server.max_sessions":                  `must be an integer, got "lots"`,
		"lifecycle.idle_timeout":               `must be a duration such as "30s" or "1m30s", got "5x"`,
		"lifecycle.heartbeat.client.intervall": "unknown key (valid keys here: interval, timeout)",
		"upstreams[0].dial_timeout":            "must be > 0 (got -1s)",
		"log.level":                            `must be one of debug, info, warn, error (got "loud")`,
	} {
		if got := problemAt(err, path); got != msg {
			t.Errorf("%s: message %q, want %q", path, got, msg)
		}
	}
	// Error() lists them one per line, sorted.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Error() has %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, want[i]+": ") {
			t.Errorf("line %d = %q, want prefix %q", i, line, want[i]+": ")
		}
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	isolateEnv(t)
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"top level", "serverr: {}\nbogus: 1\n", []string{"bogus", "serverr"}},
		{"nested", "server:\n  listen_addr: x\nauth:\n  jwt:\n    secret: s\n", []string{"auth.jwt.secret", "server.listen_addr"}},
		{"deep nested with value map", "lifecycle:\n  heartbeat:\n    both: {interval: 1s}\n", []string{"lifecycle.heartbeat.both"}},
		{"inside list entries", `
upstreams:
  - name: a
    bogus: x
  - name: b
    type: mock
    api_key: sk-123
    extra: {nested: 1}
`, []string{"upstreams[0].bogus", "upstreams[1].api_key", "upstreams[1].extra"}},
		{"next to a decode error", "lifecycle:\n  idle_timeout: 5x\n  idle: 1s\n", []string{"lifecycle.idle", "lifecycle.idle_timeout"}},
		{"empty key", "\"\": 1\n", []string{`""`}},
		{"dotted key", "\"a.b\": 1\n", []string{`"a.b"`}},
		{"null and empty values", "serverr:\nlog: {levl: }\nadmin: {}\nextra: {}\n", []string{"extra", "log.levl", "serverr"}},
		{"as written", "Server: {Listen: ':0', Bogus: 1}\n", []string{"server.Bogus"}},
		{"same key twice but for case", "log: {level: info, Level: debug}\n", []string{"log.level"}},
		{"same header twice but for case", "upstreams: [{type: mock, headers: {X-A: a, x-a: b}}]\n", []string{"upstreams[0].headers[x-a]"}},
		{"empty list entry", "upstreams:\n  - type: mock\n  -\n", []string{"upstreams[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeYAML(t, tt.yaml))
			if got := problemPaths(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("paths = %q, want %q\n%v", got, tt.want, err)
			}
		})
	}
}

func TestLoadTypeErrors(t *testing.T) {
	isolateEnv(t)
	tests := []struct {
		name, yaml, path, msg string
	}{
		{"bare number duration", "lifecycle: {idle_timeout: 30}", "lifecycle.idle_timeout", `must be a duration with a unit, such as "30s", got the bare number 30`},
		{"bool duration", "lifecycle: {max_duration: true}", "lifecycle.max_duration", `must be a duration such as "30s", got true`},
		{"fraction for integer", "server: {max_sessions: 1.5}", "server.max_sessions", "must be an integer, got 1.5"},
		{"bool for integer", "server: {max_sessions: true}", "server.max_sessions", "must be an integer, got true"},
		{"integer too large", "server: {max_frame_bytes: 1e30}", "server.max_frame_bytes", "must be an integer from"},
		{"uint64 too large", "auth: {max_sessions_per_client: 18446744073709551615}", "auth.max_sessions_per_client", "must be an integer from"},
		{"word for bool", "admin: {pprof: maybe}", "admin.pprof", `must be true or false, got "maybe"`},
		{"number for bool", "admin: {pprof: 1}", "admin.pprof", "must be true or false, got 1"},
		{"string for number", "telemetry: {traces: {sample_ratio: half}}", "telemetry.traces.sample_ratio", `must be a number, got "half"`},
		{"mapping for string", "server: {listen: {host: x}}", "server.listen", "must be a string, got a mapping"},
		{"list for string", "log: {level: [info]}", "log.level", "must be a string, got a list"},
		{"mapping for list", "server: {paths: {a: b}}", "server.paths", "must be a list of strings"},
		{"mapping in list", "server: {paths: [/a, {b: c}]}", "server.paths[1]", "must be a string, got a mapping"},
		{"scalar for section", "tls: files", "tls", `must be a mapping, got "files"`},
		{"mapping for upstreams", "upstreams: {name: x}", "upstreams", "must be a list, got a mapping"},
		{"scalar for upstream", "upstreams: [openai]", "upstreams[0]", `must be a mapping, got "openai"`},
		{"list for headers", "upstreams: [{headers: [a]}]", "upstreams[0].headers", "must be a mapping, got a list"},
		{"mapping for header value", "upstreams: [{headers: {x-a: {b: c}}}]", "upstreams[0].headers[x-a]", "must be a string, got a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeYAML(t, tt.yaml))
			if got := problemPaths(t, err); !slices.Equal(got, []string{tt.path}) {
				t.Fatalf("paths = %q, want [%q]\n%v", got, tt.path, err)
			}
			if msg := problemAt(err, tt.path); !strings.Contains(msg, tt.msg) {
				t.Fatalf("message %q does not contain %q", msg, tt.msg)
			}
		})
	}
}

// TestLoadParkAfter: server.park_after is read from the file or the
// environment, and a value that is not a positive duration is reported at
// its key path.
func TestLoadParkAfter(t *testing.T) {
	isolateEnv(t)
	c, err := Load(writeYAML(t, "server: {park_after: 250ms}"))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if c.Server.ParkAfter != 250*time.Millisecond {
		t.Errorf("park_after = %v, want 250ms", c.Server.ParkAfter)
	}
	for _, tt := range []struct{ yaml, msg string }{
		{"server: {park_after: 0s}", "must be > 0 (got 0s)"},
		{"server: {park_after: -1s}", "must be > 0 (got -1s)"},
		{"server: {park_after: soon}", `must be a duration such as "30s" or "1m30s", got "soon"`},
		{"server: {park_after: 200}", "must be a duration with a unit"},
	} {
		_, err := Load(writeYAML(t, tt.yaml))
		if got := problemPaths(t, err); !slices.Equal(got, []string{"server.park_after"}) {
			t.Errorf("%s: paths = %q, want [server.park_after]\n%v", tt.yaml, got, err)
			continue
		}
		if msg := problemAt(err, "server.park_after"); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q does not contain %q", tt.yaml, msg, tt.msg)
		}
	}
	t.Setenv("TETHER_SERVER_PARK_AFTER", "300ms")
	c, err = Load(writeYAML(t, "server: {park_after: 250ms}"))
	if err != nil {
		t.Fatalf("Load with TETHER_SERVER_PARK_AFTER = %v", err)
	}
	if c.Server.ParkAfter != 300*time.Millisecond {
		t.Errorf("park_after = %v, want the environment's 300ms", c.Server.ParkAfter)
	}
}

// TestLoadLenientScalars: YAML scalars are accepted where the type is clear.
func TestLoadLenientScalars(t *testing.T) {
	isolateEnv(t)
	got, err := Load(writeYAML(t, `
server:
  max_sessions: "42"         # quoted number
  max_frame_bytes: 1e6       # integral float
  paths: "/a, /b"            # comma-separated string for a list
auth:
  jwt:
    audience: 12345          # number for a string
admin:
  pprof: "false"
telemetry:
  traces:
    sample_ratio: 1          # integer for a float
`))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if got.Server.MaxSessions != 42 || got.Server.MaxFrameBytes != 1e6 ||
		!slices.Equal(got.Server.Paths, []string{"/a", "/b"}) || got.Auth.JWT.Audience != "12345" ||
		got.Admin.PProf || got.Telemetry.Traces.SampleRatio != 1 {
		t.Fatalf("Load = %+v", got)
	}
}

func TestLoadEnvOverrides(t *testing.T) {
	file := `
server:
  listen: "127.0.0.1:7000"
lifecycle:
  idle_timeout: 45s
`
	tests := []struct {
		name  string
		env   map[string]string
		file  string
		check func(t *testing.T, c *Config)
	}{
		{"duration over file", map[string]string{"TETHER_LIFECYCLE_IDLE_TIMEOUT": "30s"}, file, func(t *testing.T, c *Config) {
			if c.Lifecycle.IdleTimeout != 30*time.Second {
				t.Errorf("idle_timeout = %v, want 30s", c.Lifecycle.IdleTimeout)
			}
		}},
		{"string over file", map[string]string{"TETHER_SERVER_LISTEN": "0.0.0.0:8443"}, file, func(t *testing.T, c *Config) {
			if c.Server.Listen != "0.0.0.0:8443" {
				t.Errorf("listen = %q", c.Server.Listen)
			}
			if c.Lifecycle.IdleTimeout != 45*time.Second {
				t.Errorf("idle_timeout = %v, want the file's 45s", c.Lifecycle.IdleTimeout)
			}
		}},
		{"list without file", map[string]string{"TETHER_SERVER_PATHS": "/v1/realtime, /realtime,/x"}, "", func(t *testing.T, c *Config) {
			if want := []string{"/v1/realtime", "/realtime", "/x"}; !slices.Equal(c.Server.Paths, want) {
				t.Errorf("paths = %q, want %q", c.Server.Paths, want)
			}
		}},
		{"nested heartbeat keys", map[string]string{
			"TETHER_LIFECYCLE_HEARTBEAT_CLIENT_INTERVAL": "1s",
			"TETHER_LIFECYCLE_HEARTBEAT_CLIENT_TIMEOUT":  "500ms",
		}, file, func(t *testing.T, c *Config) {
			if want := (Heartbeat{Interval: time.Second, Timeout: 500 * time.Millisecond}); c.Lifecycle.Heartbeat.Client != want {
				t.Errorf("client heartbeat = %+v, want %+v", c.Lifecycle.Heartbeat.Client, want)
			}
			if c.Lifecycle.Heartbeat.Upstream.Interval != DefaultHeartbeatInterval {
				t.Errorf("upstream heartbeat changed: %+v", c.Lifecycle.Heartbeat.Upstream)
			}
		}},
		{"numbers, bools and deep keys", map[string]string{
			"TETHER_SERVER_MAX_SESSIONS":             "5",
			"TETHER_ADMIN_PPROF":                     "false",
			"TETHER_TELEMETRY_TRACES_SAMPLE_RATIO":   "0.25",
			"TETHER_AUTH_MODE":                       "jwt",
			"TETHER_AUTH_JWT_HMAC_SECRET_FILE":       "/run/secret",
			"TETHER_TLS_ACME_DOMAINS":                "a.example.com,b.example.com",
			"TETHER_LIFECYCLE_FATAL_UPSTREAM_ERRORS": "session_expired",
		}, "", func(t *testing.T, c *Config) {
			if c.Server.MaxSessions != 5 || c.Admin.PProf || c.Telemetry.Traces.SampleRatio != 0.25 ||
				c.Auth.Mode != auth.ModeJWT || c.Auth.JWT.HMACSecretFile != "/run/secret" ||
				!slices.Equal(c.TLS.ACME.Domains, []string{"a.example.com", "b.example.com"}) ||
				!slices.Equal(c.Lifecycle.FatalUpstreamErrors, []string{"session_expired"}) {
				t.Errorf("config = %+v", c)
			}
		}},
		{"empty variable ignored", map[string]string{"TETHER_SERVER_LISTEN": ""}, file, func(t *testing.T, c *Config) {
			if c.Server.Listen != "127.0.0.1:7000" {
				t.Errorf("listen = %q, want the file's", c.Server.Listen)
			}
		}},
		{"upstreams not overridable", map[string]string{"TETHER_UPSTREAMS": "mock", "TETHER_UPSTREAMS_0_TYPE": "mock"}, "", func(t *testing.T, c *Config) {
			if c.Upstreams != nil {
				t.Errorf("upstreams = %+v, want nil", c.Upstreams)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.file != "" {
				path = writeYAML(t, tt.file)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadEnvProblems(t *testing.T) {
	isolateEnv(t)
	t.Setenv("TETHER_LIFECYCLE_IDLE_TIMEOUT", "5x")
	t.Setenv("TETHER_SERVER_MAX_SESSIONS", "many")
	t.Setenv("TETHER_LOG_FORMAT", "xml")
	_, err := Load("")
	want := []string{"lifecycle.idle_timeout", "log.format", "server.max_sessions"}
	if got := problemPaths(t, err); !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q\n%v", got, want, err)
	}
}

// TestLoadEnvUnderScalar: an override below a key the file sets to a
// scalar does not hide the file's mistake.
func TestLoadEnvUnderScalar(t *testing.T) {
	isolateEnv(t)
	t.Setenv("TETHER_SERVER_LISTEN", ":1")
	for range 5 { // the outcome must not depend on map order
		_, err := Load(writeYAML(t, "server: 5\n"))
		if got := problemPaths(t, err); !slices.Equal(got, []string{"server"}) {
			t.Fatalf("paths = %q, want [server]\n%v", got, err)
		}
	}
}

func TestEnvNames(t *testing.T) {
	keys := envKeys()
	seen := map[string]string{}
	for _, k := range keys {
		name := envName(k)
		if other, dup := seen[name]; dup {
			t.Errorf("%s and %s share the variable %s", k, other, name)
		}
		seen[name] = k
	}
	for _, name := range []string{
		"TETHER_SERVER_LISTEN", "TETHER_SERVER_PATHS", "TETHER_LIFECYCLE_IDLE_TIMEOUT",
		"TETHER_LIFECYCLE_HEARTBEAT_CLIENT_INTERVAL", "TETHER_LIFECYCLE_HEARTBEAT_UPSTREAM_TIMEOUT",
		"TETHER_AUTH_JWT_HMAC_SECRET_FILE", "TETHER_TLS_ACME_ON_DEMAND", "TETHER_TELEMETRY_TRACES_SAMPLE_RATIO",
		"TETHER_LOG_LEVEL",
	} {
		if _, ok := seen[name]; !ok {
			t.Errorf("no override named %s", name)
		}
	}
	for name := range seen {
		if strings.HasPrefix(name, "TETHER_UPSTREAMS") {
			t.Errorf("unexpected override %s", name)
		}
	}
}

func TestLoadUpstreamDefaults(t *testing.T) {
	isolateEnv(t)
	openai := func(name string) upstreams.Config {
		u := DefaultUpstream(upstreams.KindOpenAI)
		u.Name = name
		return u
	}
	mock := func(name string) upstreams.Config {
		u := DefaultUpstream(upstreams.KindMock)
		u.Name = name
		return u
	}
	tests := []struct {
		name string
		yaml string
		want []upstreams.Config
	}{
		{"empty entry keys", "upstreams: [{}]", []upstreams.Config{{
			Name: "openai", Type: "openai", URL: "wss://api.openai.com/v1/realtime", LiveURL: "wss://api.openai.com/v1/live/sessions",
			APIKeyEnv: "OPENAI_API_KEY", DialTimeout: 10 * time.Second, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"mock has no url or key", "upstreams: [{type: mock}]", []upstreams.Config{{
			Name: "mock", Type: "mock", DialTimeout: 10 * time.Second, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"api_key_file suppresses the env default", "upstreams: [{api_key_file: /k}]", []upstreams.Config{{
			Name: "openai", Type: "openai", URL: DefaultOpenAIURL, LiveURL: DefaultOpenAILiveURL, APIKeyFile: "/k", DialTimeout: DefaultDialTimeout, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"explicit values kept", `upstreams: [{name: primary, url: "wss://proxy.internal/v1/realtime", api_key_env: MY_KEY, dial_timeout: 3s}]`, []upstreams.Config{{
			Name: "primary", Type: "openai", URL: "wss://proxy.internal/v1/realtime", LiveURL: "wss://proxy.internal/v1/live/sessions", APIKeyEnv: "MY_KEY", DialTimeout: 3 * time.Second, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"azure key from AZURE_OPENAI_API_KEY by default", `upstreams: [{type: azure, url: "wss://x.openai.azure.com/openai/realtime"}]`, []upstreams.Config{{
			Name: "azure", Type: "azure", URL: "wss://x.openai.azure.com/openai/realtime", DialTimeout: DefaultDialTimeout,
			LiveURL:   "wss://x.openai.azure.com" + AzureLivePath,
			APIKeyEnv: DefaultAzureAPIKeyEnv, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"azure with a token file gets no key default", `upstreams: [{type: azure, url: "wss://x.openai.azure.com/openai/realtime", token_file: /var/run/token}]`, []upstreams.Config{{
			Name: "azure", Type: "azure", URL: "wss://x.openai.azure.com/openai/realtime", DialTimeout: DefaultDialTimeout,
			LiveURL:   "wss://x.openai.azure.com" + AzureLivePath,
			TokenFile: "/var/run/token", MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
		}}},
		{"zero dial_timeout takes the default", "upstreams: [{type: mock, dial_timeout: 0s}]", []upstreams.Config{mock("mock")}},
		{"same type twice", "upstreams: [{}, {type: openai}]", []upstreams.Config{openai("openai"), openai("openai-1")}},
		{"default name taken by an explicit one", "upstreams: [{type: mock}, {name: mock, type: openai}]",
			[]upstreams.Config{mock("mock-0"), openai("mock")}},
		{"indexed name taken too", "upstreams: [{}, {}, {name: openai-1, type: mock}]",
			[]upstreams.Config{openai("openai"), openai("openai-2"), mock("openai-1")}},
		{"header names canonical", "upstreams: [{type: mock, headers: {x-api-version: \"2\", OpenAI-Beta: realtime=v1}}]", []upstreams.Config{{
			Name: "mock", Type: "mock", DialTimeout: DefaultDialTimeout, MaxFailures: DefaultMaxFailures, Cooldown: DefaultCooldown,
			Headers: map[string]string{"X-Api-Version": "2", "Openai-Beta": "realtime=v1"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeYAML(t, tt.yaml))
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			if !reflect.DeepEqual(c.Upstreams, tt.want) {
				t.Fatalf("upstreams =\n%+v\nwant\n%+v", c.Upstreams, tt.want)
			}
		})
	}
}

func TestLoadUpstreamsAbsentVersusEmpty(t *testing.T) {
	isolateEnv(t)
	c, err := Load(writeYAML(t, "log: {level: info}\n"))
	if err != nil || c.Upstreams != nil {
		t.Fatalf("absent: Load = %+v, %v; want nil upstreams", c, err)
	}
	_, err = Load(writeYAML(t, "upstreams: []\n"))
	if msg := problemAt(err, "upstreams"); msg != "empty list; remove the key to use the default upstream" {
		t.Fatalf("empty list: err = %v", err)
	}
	_, err = Load(writeYAML(t, "upstreams: [{type: generic}, {type: smtp, url: \"http://x\"}]\n"))
	want := []string{"upstreams[0].url", "upstreams[1].type", "upstreams[1].url"}
	if got := problemPaths(t, err); !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q\n%v", got, want, err)
	}
}

func TestDefaultUpstreamAndAutoUpstreams(t *testing.T) {
	if err := (&Config{Upstreams: nil}).Validate(); err == nil {
		t.Fatal("an empty Config must not validate")
	}
	for _, typ := range []upstreams.Kind{upstreams.KindOpenAI, upstreams.KindMock} {
		c := Default()
		c.Upstreams = []upstreams.Config{DefaultUpstream(typ)}
		if err := c.Validate(); err != nil {
			t.Errorf("DefaultUpstream(%q) does not validate: %v", typ, err)
		}
	}
	if u := DefaultUpstream(""); u.Type != upstreams.KindOpenAI || u.Name != string(upstreams.KindOpenAI) {
		t.Errorf("DefaultUpstream(\"\") = %+v, want openai", u)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if got := AutoUpstreams(getenv); len(got) != 1 || got[0].Type != upstreams.KindMock || got[0].Name != "mock" {
		t.Errorf("AutoUpstreams without key = %+v, want the mock", got)
	}
	env["OPENAI_API_KEY"] = "sk-test"
	got := AutoUpstreams(getenv)
	if len(got) != 1 || got[0].Type != upstreams.KindOpenAI || got[0].APIKeyEnv != "OPENAI_API_KEY" || got[0].URL != DefaultOpenAIURL {
		t.Errorf("AutoUpstreams with key = %+v, want openai", got)
	}
}
