package config

import (
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/lifecycle"
	tethertls "github.com/tetherproxy/tether/tls"
	"github.com/tetherproxy/tether/upstreams"
)

// validConfig is a complete, valid configuration with explicit upstreams.
func validConfig() *Config {
	c := Default()
	c.Upstreams = []upstreams.Config{
		DefaultUpstream(upstreams.KindOpenAI),
		{Name: "local", Type: upstreams.KindGeneric, URL: "ws://127.0.0.1:8000/v1/realtime", DialTimeout: time.Second},
		DefaultUpstream(upstreams.KindMock),
	}
	return c
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // exact problem paths, sorted; nil = valid
		msg    string   // substring of the first problem's message
	}{
		{name: "default config", mutate: func(c *Config) {}},
		{name: "default config with auto upstreams", mutate: func(c *Config) { c.Upstreams = nil }},

		// server
		{name: "listen empty", mutate: func(c *Config) { c.Server.Listen = "" }, want: []string{"server.listen"}, msg: "host:port"},
		{name: "listen without port", mutate: func(c *Config) { c.Server.Listen = "localhost" }, want: []string{"server.listen"}},
		{name: "listen port too big", mutate: func(c *Config) { c.Server.Listen = "127.0.0.1:65536" }, want: []string{"server.listen"}, msg: "0 to 65535"},
		{name: "listen port named", mutate: func(c *Config) { c.Server.Listen = "127.0.0.1:http" }, want: []string{"server.listen"}},
		{name: "listen port negative", mutate: func(c *Config) { c.Server.Listen = "127.0.0.1:-1" }, want: []string{"server.listen"}},
		{name: "listen port 0 ok", mutate: func(c *Config) { c.Server.Listen = "127.0.0.1:0"; c.Admin.Listen = "127.0.0.1:0" }},
		{name: "listen empty host ok", mutate: func(c *Config) { c.Server.Listen = ":8080" }},
		{name: "listen ipv6 ok", mutate: func(c *Config) { c.Server.Listen = "[::1]:65535" }},
		{name: "paths empty", mutate: func(c *Config) { c.Server.Paths, c.Server.LivePaths = nil, nil }, want: []string{"server.paths"}, msg: "at least one"},
		{name: "live paths only ok", mutate: func(c *Config) { c.Server.Paths = nil }},
		{name: "path in both lists", mutate: func(c *Config) { c.Server.LivePaths = []string{"/v1/realtime"} }, want: []string{"server.live_paths[0]"}, msg: "duplicate of server.paths[0]"},
		{name: "live path without slash", mutate: func(c *Config) { c.Server.LivePaths = []string{"live"} }, want: []string{"server.live_paths[0]"}, msg: `start with "/"`},
		{name: "live url with query", mutate: func(c *Config) {
			c.Upstreams = []upstreams.Config{DefaultUpstream(upstreams.KindOpenAI)}
			c.Upstreams[0].LiveURL = "wss://x/v1/live/sessions?model=m"
		}, want: []string{"upstreams[0].live_url"}, msg: "no query"},
		{name: "live close timeout negative", mutate: func(c *Config) { c.Lifecycle.Live.CloseTimeout = -time.Second }, want: []string{"lifecycle.live.close_timeout"}},
		{name: "path without slash", mutate: func(c *Config) { c.Server.Paths = []string{"/ok", "v1/realtime"} }, want: []string{"server.paths[1]"}, msg: `start with "/"`},
		{name: "path with query", mutate: func(c *Config) { c.Server.Paths = []string{"/v1?model=x"} }, want: []string{"server.paths[0]"}},
		{name: "path duplicate", mutate: func(c *Config) { c.Server.Paths = []string{"/a", "/b", "/a"} }, want: []string{"server.paths[2]"}, msg: "duplicate of server.paths[0]"},
		{name: "handshake_timeout zero", mutate: func(c *Config) { c.Server.HandshakeTimeout = 0 }, want: []string{"server.handshake_timeout"}, msg: "> 0"},
		{name: "handshake_timeout negative", mutate: func(c *Config) { c.Server.HandshakeTimeout = -time.Second }, want: []string{"server.handshake_timeout"}},
		{name: "park_after zero", mutate: func(c *Config) { c.Server.ParkAfter = 0 }, want: []string{"server.park_after"}, msg: "> 0"},
		{name: "park_after negative", mutate: func(c *Config) { c.Server.ParkAfter = -time.Second }, want: []string{"server.park_after"}, msg: "must be > 0 (got -1s)"},
		{name: "park_after short ok", mutate: func(c *Config) { c.Server.ParkAfter = time.Millisecond }},
		{name: "max_sessions zero", mutate: func(c *Config) { c.Server.MaxSessions = 0 }, want: []string{"server.max_sessions"}, msg: ">= 1"},
		{name: "max_sessions one ok", mutate: func(c *Config) { c.Server.MaxSessions = 1 }},
		{name: "max_frame_bytes zero", mutate: func(c *Config) { c.Server.MaxFrameBytes = 0 }, want: []string{"server.max_frame_bytes"}},
		{name: "max_frame_bytes over 1GiB", mutate: func(c *Config) { c.Server.MaxFrameBytes = 1<<30 + 1 }, want: []string{"server.max_frame_bytes"}, msg: "between 1 and 1073741824"},
		{name: "max_frame_bytes bounds ok", mutate: func(c *Config) { c.Server.MaxFrameBytes = 1 << 30 }},
		{name: "max_frame_bytes one ok", mutate: func(c *Config) { c.Server.MaxFrameBytes = 1 }},

		// admin
		{name: "admin listen bad", mutate: func(c *Config) { c.Admin.Listen = "9090" }, want: []string{"admin.listen"}},
		{name: "admin listen same as server", mutate: func(c *Config) { c.Admin.Listen = c.Server.Listen }, want: []string{"admin.listen"}, msg: "must differ"},

		// auth
		{name: "auth mode unknown", mutate: func(c *Config) { c.Auth.Mode = "basic" }, want: []string{"auth.mode"}, msg: `must be one of none, token, jwt (got "basic")`},
		{name: "auth token without file", mutate: func(c *Config) { c.Auth.Mode = auth.ModeToken }, want: []string{"auth.tokens_file"}},
		{name: "auth token ok", mutate: func(c *Config) { c.Auth.Mode = auth.ModeToken; c.Auth.TokensFile = "/etc/tether/tokens" }},
		{name: "auth jwt without secret", mutate: func(c *Config) { c.Auth.Mode = auth.ModeJWT }, want: []string{"auth.jwt.hmac_secret_file"}},
		{name: "auth jwt ok", mutate: func(c *Config) { c.Auth.Mode = auth.ModeJWT; c.Auth.JWT.HMACSecretFile = "/s" }},
		{name: "auth per-client negative", mutate: func(c *Config) { c.Auth.MaxSessionsPerClient = -1 }, want: []string{"auth.max_sessions_per_client"}},

		// upstreams
		{name: "upstreams empty list", mutate: func(c *Config) { c.Upstreams = []upstreams.Config{} }, want: []string{"upstreams"}, msg: "empty list; remove the key to use the default upstream"},
		{name: "upstream type unknown", mutate: func(c *Config) { c.Upstreams[1].Type = "grpc" }, want: []string{"upstreams[1].type"}, msg: "openai, azure, generic, mock"},
		{name: "upstream names duplicate", mutate: func(c *Config) { c.Upstreams[2].Name = "openai" }, want: []string{"upstreams[2].name"}, msg: "also upstreams[0]"},
		{name: "upstream name empty", mutate: func(c *Config) { c.Upstreams[0].Name = "" }, want: []string{"upstreams[0].name"}},
		{name: "generic without url", mutate: func(c *Config) { c.Upstreams[1].URL = "" }, want: []string{"upstreams[1].url"}, msg: "required"},
		{name: "azure without url", mutate: func(c *Config) {
			c.Upstreams[1].Type, c.Upstreams[1].URL, c.Upstreams[1].APIKeyEnv = upstreams.KindAzure, "", "AZURE_KEY"
		}, want: []string{"upstreams[1].url"}},
		{name: "azure without credential", mutate: func(c *Config) { c.Upstreams[1].Type = upstreams.KindAzure }, want: []string{"upstreams[1].api_key_env"}},
		{name: "azure token file and key", mutate: func(c *Config) {
			c.Upstreams[1].Type, c.Upstreams[1].APIKeyEnv, c.Upstreams[1].TokenFile = upstreams.KindAzure, "K", "/t"
		}, want: []string{"upstreams[1].token_file"}},
		{name: "token file on generic", mutate: func(c *Config) { c.Upstreams[1].TokenFile = "/t" }, want: []string{"upstreams[1].token_file"}},
		{name: "key header and query", mutate: func(c *Config) { c.Upstreams[1].APIKeyHeader, c.Upstreams[1].APIKeyQuery = "x-key", "key" }, want: []string{"upstreams[1].api_key_query"}},
		{name: "key header on openai", mutate: func(c *Config) { c.Upstreams[0].APIKeyHeader = "x-key" }, want: []string{"upstreams[0].api_key_header"}},
		{name: "default model not allowed", mutate: func(c *Config) {
			c.Upstreams[0].AllowedModels, c.Upstreams[0].DefaultModel = []string{"a"}, "b"
		}, want: []string{"upstreams[0].default_model"}},
		{name: "unreadable ca root", mutate: func(c *Config) { c.Upstreams[0].CARootFile = "/nonexistent/ca.pem" }, want: []string{"upstreams[0].ca_root_file"}},
		{name: "negative max failures", mutate: func(c *Config) { c.Upstreams[0].MaxFailures = -1 }, want: []string{"upstreams[0].max_failures"}},
		{name: "bad subprotocol", mutate: func(c *Config) { c.Upstreams[1].Subprotocols = []string{"a b"} }, want: []string{"upstreams[1].subprotocols[0]"}},
		{name: "mock without url ok", mutate: func(c *Config) { c.Upstreams[2].URL = "" }},
		{name: "mock with url ok", mutate: func(c *Config) { c.Upstreams[2].URL = "ws://127.0.0.1:9000/" }},
		{name: "url http scheme", mutate: func(c *Config) { c.Upstreams[0].URL = "https://api.openai.com/v1/realtime" }, want: []string{"upstreams[0].url"}, msg: "ws or wss"},
		{name: "url without host", mutate: func(c *Config) { c.Upstreams[1].URL = "ws:///path" }, want: []string{"upstreams[1].url"}, msg: "host"},
		{name: "url unparsable", mutate: func(c *Config) { c.Upstreams[1].URL = "ws://a b:%zz" }, want: []string{"upstreams[1].url"}},
		{name: "url relative", mutate: func(c *Config) { c.Upstreams[2].URL = "127.0.0.1:9000" }, want: []string{"upstreams[2].url"}},
		{name: "both key sources", mutate: func(c *Config) { c.Upstreams[0].APIKeyFile = "/k" }, want: []string{"upstreams[0].api_key_file"}, msg: "not both"},
		{name: "key file only ok", mutate: func(c *Config) { c.Upstreams[0].APIKeyEnv = ""; c.Upstreams[0].APIKeyFile = "/k" }},
		{name: "headers forbidden", mutate: func(c *Config) {
			c.Upstreams[1].Headers = map[string]string{
				"Host": "x", "connection": "close", "UPGRADE": "h2c", "Sec-WebSocket-Protocol": "p",
				"sec-websocket-extensions": "permessage-deflate", "X-Allowed": "ok", "Authorization": "Bearer t",
			}
		}, want: []string{
			"upstreams[1].headers[Host]", "upstreams[1].headers[Sec-WebSocket-Protocol]", "upstreams[1].headers[UPGRADE]",
			"upstreams[1].headers[connection]", "upstreams[1].headers[sec-websocket-extensions]",
		}, msg: "tether sets this header itself"},
		{name: "header name invalid", mutate: func(c *Config) { c.Upstreams[1].Headers = map[string]string{"X Bad": "v"} }, want: []string{"upstreams[1].headers[X Bad]"}, msg: "header name"},
		{name: "header value with newline", mutate: func(c *Config) { c.Upstreams[1].Headers = map[string]string{"X-A": "a\r\nX-B: b"} }, want: []string{"upstreams[1].headers[X-A]"}, msg: "CR, LF"},
		{name: "dial_timeout zero", mutate: func(c *Config) { c.Upstreams[1].DialTimeout = 0 }, want: []string{"upstreams[1].dial_timeout"}, msg: "must be > 0"},

		// lifecycle
		{name: "client interval zero", mutate: func(c *Config) { c.Lifecycle.Heartbeat.Client.Interval = 0 }, want: []string{"lifecycle.heartbeat.client.interval"}},
		{name: "client timeout zero", mutate: func(c *Config) { c.Lifecycle.Heartbeat.Client.Timeout = 0 }, want: []string{"lifecycle.heartbeat.client.timeout"}},
		{name: "client timeout equals interval", mutate: func(c *Config) { c.Lifecycle.Heartbeat.Client.Timeout = c.Lifecycle.Heartbeat.Client.Interval }, want: []string{"lifecycle.heartbeat.client.timeout"}, msg: "less than interval"},
		{name: "upstream interval negative", mutate: func(c *Config) { c.Lifecycle.Heartbeat.Upstream.Interval = -time.Second }, want: []string{"lifecycle.heartbeat.upstream.interval"}},
		{name: "upstream timeout over interval", mutate: func(c *Config) { c.Lifecycle.Heartbeat.Upstream.Timeout = time.Minute }, want: []string{"lifecycle.heartbeat.upstream.timeout"}, msg: "less than interval (15s), got 1m0s"},
		{name: "short heartbeat ok", mutate: func(c *Config) {
			c.Lifecycle.Heartbeat.Upstream = Heartbeat{Interval: time.Second, Timeout: 999 * time.Millisecond}
		}},
		{name: "idle_timeout negative", mutate: func(c *Config) { c.Lifecycle.IdleTimeout = -1 }, want: []string{"lifecycle.idle_timeout"}, msg: ">= 0"},
		{name: "max_duration negative", mutate: func(c *Config) { c.Lifecycle.MaxDuration = -time.Hour }, want: []string{"lifecycle.max_duration"}},
		{name: "drain_timeout negative", mutate: func(c *Config) { c.Lifecycle.DrainTimeout = -time.Second }, want: []string{"lifecycle.drain_timeout"}},
		{name: "zero disables limits ok", mutate: func(c *Config) {
			c.Lifecycle.IdleTimeout, c.Lifecycle.MaxDuration, c.Lifecycle.DrainTimeout = 0, 0, 0
		}},
		{name: "fatal error code empty", mutate: func(c *Config) { c.Lifecycle.FatalUpstreamErrors = []string{"x", " "} }, want: []string{"lifecycle.fatal_upstream_errors[1]"}},
		{name: "no fatal error codes ok", mutate: func(c *Config) { c.Lifecycle.FatalUpstreamErrors = nil }},

		// lifecycle.resume
		{name: "resume enabled ok", mutate: func(c *Config) { c.Lifecycle.Resume.Enabled = true }},
		{name: "resume one trigger ok", mutate: func(c *Config) {
			c.Lifecycle.Resume.Enabled, c.Lifecycle.Resume.On = true, []lifecycle.Trigger{lifecycle.TriggerExpired}
		}},
		{name: "resume unknown trigger", mutate: func(c *Config) {
			c.Lifecycle.Resume.On = []lifecycle.Trigger{"expired", "session_expired"}
		}, want: []string{"lifecycle.resume.on[1]"},
			msg: `must be one of expired, upstream_error, upstream_heartbeat_timeout, fatal_event (got "session_expired")`},
		{name: "resume trigger twice", mutate: func(c *Config) {
			c.Lifecycle.Resume.On = []lifecycle.Trigger{"fatal_event", "expired", "fatal_event"}
		}, want: []string{"lifecycle.resume.on[2]"}, msg: `duplicate of lifecycle.resume.on[0] ("fatal_event")`},
		{name: "resume enabled without triggers", mutate: func(c *Config) {
			c.Lifecycle.Resume.Enabled, c.Lifecycle.Resume.On = true, nil
		}, want: []string{"lifecycle.resume.on"}, msg: "at least one trigger"},
		{name: "resume off without triggers ok", mutate: func(c *Config) { c.Lifecycle.Resume.On = []lifecycle.Trigger{} }},
		{name: "resume enabled zero max", mutate: func(c *Config) {
			c.Lifecycle.Resume.Enabled, c.Lifecycle.Resume.MaxResumes = true, 0
		}, want: []string{"lifecycle.resume.max_resumes"}, msg: ">= 1 when lifecycle.resume.enabled is true (got 0)"},
		{name: "resume off zero max ok", mutate: func(c *Config) { c.Lifecycle.Resume.MaxResumes = 0 }},
		{name: "resume off negative max", mutate: func(c *Config) { c.Lifecycle.Resume.MaxResumes = -1 }, want: []string{"lifecycle.resume.max_resumes"}, msg: ">= 0"},
		{name: "resume history zero", mutate: func(c *Config) { c.Lifecycle.Resume.History = ResumeHistory{} },
			want: []string{"lifecycle.resume.history.bytes", "lifecycle.resume.history.items"}, msg: ">= 1 (got 0)"},
		{name: "resume history negative", mutate: func(c *Config) { c.Lifecycle.Resume.History.Items = -5 },
			want: []string{"lifecycle.resume.history.items"}},
		{name: "resume buffer negative", mutate: func(c *Config) { c.Lifecycle.Resume.Buffer = -time.Second },
			want: []string{"lifecycle.resume.buffer"}, msg: "between 0 and 30s (got -1s)"},
		{name: "resume buffer over 30s", mutate: func(c *Config) { c.Lifecycle.Resume.Buffer = 30*time.Second + time.Millisecond },
			want: []string{"lifecycle.resume.buffer"}},
		{name: "resume buffer bounds ok", mutate: func(c *Config) { c.Lifecycle.Resume.Buffer = 30 * time.Second }},
		{name: "resume buffer zero ok", mutate: func(c *Config) { c.Lifecycle.Resume.Buffer = 0 }},
		{name: "resume every problem", mutate: func(c *Config) {
			c.Lifecycle.Resume = Resume{Enabled: true, On: []lifecycle.Trigger{"expired", "expired", "reset"},
				History: ResumeHistory{Items: 1, Bytes: 0}, Buffer: time.Minute}
		}, want: []string{"lifecycle.resume.buffer", "lifecycle.resume.history.bytes", "lifecycle.resume.max_resumes",
			"lifecycle.resume.on[1]", "lifecycle.resume.on[2]"}},

		// tls
		{name: "tls mode unknown", mutate: func(c *Config) { c.TLS.Mode = "on" }, want: []string{"tls.mode"}, msg: "off, files, acme"},
		{name: "tls files without files", mutate: func(c *Config) { c.TLS.Mode = tethertls.ModeFiles }, want: []string{"tls.cert_file", "tls.key_file"}},
		{name: "tls files ok", mutate: func(c *Config) { c.TLS.Mode = tethertls.ModeFiles; c.TLS.CertFile = "c.pem"; c.TLS.KeyFile = "k.pem" }},
		{name: "tls acme empty", mutate: func(c *Config) { c.TLS.Mode = tethertls.ModeACME }, want: []string{"tls.acme.domains", "tls.acme.storage_dir"}, msg: "at least one domain"},
		{name: "tls acme on_demand without domains", mutate: func(c *Config) {
			c.TLS.Mode = tethertls.ModeACME
			c.TLS.ACME.OnDemand = true
			c.TLS.ACME.StorageDir = "/var/lib/tether"
		}, want: []string{"tls.acme.domains"}, msg: "on_demand"},
		{name: "tls acme ok", mutate: func(c *Config) {
			c.TLS.Mode = tethertls.ModeACME
			c.TLS.ACME = TLSACME{Domains: []string{"rt.example.com"}, StorageDir: "/var/lib/tether", OnDemand: true, CAURL: "https://localhost:14000/dir"}
		}},
		{name: "tls acme bad domain and ca_url", mutate: func(c *Config) {
			c.TLS.Mode = tethertls.ModeACME
			c.TLS.ACME = TLSACME{Domains: []string{"https://rt.example.com"}, StorageDir: "/d", CAURL: "ftp://ca"}
		}, want: []string{"tls.acme.ca_url", "tls.acme.domains[0]"}},

		// telemetry
		{name: "exporter unknown", mutate: func(c *Config) { c.Telemetry.Traces.Exporter = "jaeger" }, want: []string{"telemetry.traces.exporter"}, msg: "none, otlp, stdout"},
		{name: "protocol unknown", mutate: func(c *Config) { c.Telemetry.Traces.Protocol = "udp" }, want: []string{"telemetry.traces.protocol"}},
		{name: "sample_ratio negative", mutate: func(c *Config) { c.Telemetry.Traces.SampleRatio = -0.1 }, want: []string{"telemetry.traces.sample_ratio"}},
		{name: "sample_ratio over one", mutate: func(c *Config) { c.Telemetry.Traces.SampleRatio = 1.5 }, want: []string{"telemetry.traces.sample_ratio"}},
		{name: "sample_ratio NaN", mutate: func(c *Config) { c.Telemetry.Traces.SampleRatio = math.NaN() }, want: []string{"telemetry.traces.sample_ratio"}},
		{name: "sample_ratio zero ok", mutate: func(c *Config) { c.Telemetry.Traces.SampleRatio = 0 }},
		{name: "otlp without endpoint ok", mutate: func(c *Config) {
			c.Telemetry.Traces.Exporter = ExporterOTLP
			c.Telemetry.Traces.Protocol = ProtocolHTTP
		}},
		{name: "service_name empty", mutate: func(c *Config) { c.Telemetry.ServiceName = "" }, want: []string{"telemetry.service_name"}},

		// log
		{name: "log level unknown", mutate: func(c *Config) { c.Log.Level = "trace" }, want: []string{"log.level"}, msg: "debug, info, warn, error"},
		{name: "log level upper-case", mutate: func(c *Config) { c.Log.Level = "INFO" }, want: []string{"log.level"}},
		{name: "log format unknown", mutate: func(c *Config) { c.Log.Format = "xml" }, want: []string{"log.format"}},
		{name: "log text debug ok", mutate: func(c *Config) { c.Log = Log{Level: LogLevelDebug, Format: LogFormatText} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want problems at %v", tt.want)
			}
			if got := problemPaths(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("problem paths = %q, want %q\n%v", got, tt.want, err)
			}
			if msg := err.(*ValidationError).Problems[0].Message; !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q does not contain %q", msg, tt.msg)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	c.Server.MaxSessions = 0
	c.Auth.Mode = "ldap"
	c.Upstreams[1].DialTimeout = 0
	c.Lifecycle.Heartbeat.Client.Timeout = time.Hour
	c.Log.Format = "xml"
	want := []string{
		"auth.mode",
		"lifecycle.heartbeat.client.timeout",
		"log.format",
		"server.max_sessions",
		"upstreams[1].dial_timeout",
	}
	if got := problemPaths(t, c.Validate()); !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q", got, want)
	}
}

func TestValidateChangesNothing(t *testing.T) {
	build := func() *Config {
		c := validConfig()
		c.Upstreams = append(c.Upstreams, upstreams.Config{Type: "", Headers: map[string]string{"x-lower": "v", "Host": "h"}})
		c.Server.Paths = []string{"/b", "a", "/b"}
		c.Auth.Mode = ""
		c.TLS.Mode = tethertls.ModeACME
		return c
	}
	c := build()
	if err := c.Validate(); err == nil {
		t.Fatal("Validate() = nil, want problems")
	}
	if want := build(); !reflect.DeepEqual(c, want) {
		t.Fatalf("Validate modified the config:\n got %+v\nwant %+v", c, want)
	}
}

func TestValidationErrorFormat(t *testing.T) {
	e := &ValidationError{Problems: []Problem{
		{Path: "upstreams[10].url", Message: "m3"},
		{Path: "log.level", Message: "m1"},
		{Path: "upstreams[2].url", Message: "m2"},
		{Path: "auth.mode", Message: "m0"},
	}}
	want := "auth.mode: m0\nlog.level: m1\nupstreams[2].url: m2\nupstreams[10].url: m3"
	if got := e.Error(); got != want {
		t.Fatalf("Error() =\n%s\nwant\n%s", got, want)
	}
	if e.Problems[0].Path != "upstreams[10].url" {
		t.Error("Error() reordered the caller's Problems")
	}
}

func TestNaturalCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"a", "a", 0},
		{"a", "b", -1},
		{"a[2]", "a[10]", -1},
		{"a[10]", "a[9]", 1},
		{"a[1].x", "a[1].y", -1},
		{"a", "a.b", -1},
		{"a[01]", "a[1]", 1},
		{"x9", "x09", -1},
	}
	for _, tt := range tests {
		got := naturalCompare(tt.a, tt.b)
		if sign(got) != tt.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
		if back := naturalCompare(tt.b, tt.a); sign(back) != -tt.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want sign %d", tt.b, tt.a, back, -tt.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func TestSlogLevel(t *testing.T) {
	tests := []struct {
		level string
		want  slog.Level
	}{
		{LogLevelDebug, slog.LevelDebug},
		{LogLevelInfo, slog.LevelInfo},
		{LogLevelWarn, slog.LevelWarn},
		{LogLevelError, slog.LevelError},
		{"", slog.LevelInfo},
		{"bogus", slog.LevelInfo},
	}
	for _, tt := range tests {
		if got := (Log{Level: tt.level}).SlogLevel(); got != tt.want {
			t.Errorf("Log{Level: %q}.SlogLevel() = %v, want %v", tt.level, got, tt.want)
		}
	}
}
