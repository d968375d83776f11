package config

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	tethertls "github.com/tetherproxy/tether/tls"
	"github.com/tetherproxy/tether/upstreams"
)

// Allowed values of the enumerated keys that only config knows. The kinds
// of upstream, auth modes and TLS modes are types of the packages that act
// on them: [upstreams.Kind], [auth.Mode] and [tethertls.Mode].
const (
	// ACMELetsEncryptProduction is the ACME directory used when
	// tls.acme.ca_url is empty.
	ACMELetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	// ACMELetsEncryptStaging is Let's Encrypt's staging directory: untrusted
	// certificates, generous rate limits; for trying a setup.
	ACMELetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"

	// ExporterNone disables tracing.
	ExporterNone = "none"
	// ExporterOTLP exports spans over OTLP.
	ExporterOTLP = "otlp"
	// ExporterStdout writes spans to standard output (debugging).
	ExporterStdout = "stdout"

	// ProtocolGRPC is OTLP over gRPC.
	ProtocolGRPC = "grpc"
	// ProtocolHTTP is OTLP over HTTP/protobuf.
	ProtocolHTTP = "http"

	// LogLevelDebug and the other LogLevel constants are the values of log.level.
	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"

	// StateBackendMemory keeps the limits' counts in this process.
	StateBackendMemory = "memory"
	// StateBackendRedis keeps them in a Redis shared by the fleet.
	StateBackendRedis = "redis"
	// StateFailOpen admits by this replica's counts when Redis is unreachable.
	StateFailOpen = "fail_open"
	// StateFailClosed refuses upgrades (503) when Redis is unreachable.
	StateFailClosed = "fail_closed"

	// LogFormatJSON writes one JSON object per line.
	LogFormatJSON = "json"
	// LogFormatText writes logfmt-style key=value lines.
	LogFormatText = "text"
)

// Upstream error codes that end a session by default (lifecycle.fatal_upstream_errors).
const (
	UpstreamErrorSessionExpired       = "session_expired"
	UpstreamErrorInvalidAPIKey        = "invalid_api_key"
	UpstreamErrorBetaAPIShapeDisabled = "beta_api_shape_disabled"
)

// Defaults. Default, DefaultUpstream and the file returned by DefaultsYAML
// are built from these.
const (
	DefaultServerListen      = "127.0.0.1:8080"
	DefaultServerPath        = "/v1/realtime"
	DefaultLivePath          = "/v1/live/sessions"
	DefaultLiveCloseTimeout  = 5 * time.Second
	DefaultLiveQuiet         = time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultParkAfter         = time.Second
	DefaultMaxSessions       = 10000
	DefaultMaxFrameBytes     = 16 << 20 // 16 MiB: one large input_audio_buffer.append
	DefaultAdminListen       = "127.0.0.1:9090"
	DefaultAdminPProf        = true
	DefaultAuthMode          = auth.ModeNone
	DefaultHeartbeatInterval = 15 * time.Second
	DefaultHeartbeatTimeout  = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxDuration       = 60 * time.Minute
	DefaultDrainTimeout      = 30 * time.Second
	DefaultTLSMode           = tethertls.ModeOff
	DefaultLimitsWindow      = 24 * time.Hour
	DefaultBoundaryTimeout   = 30 * time.Second
	DefaultStateBackend      = StateBackendMemory
	DefaultRedisKeyPrefix    = "tether:"
	DefaultRedisTimeout      = 200 * time.Millisecond
	DefaultRedisOnError      = StateFailOpen
	DefaultRedisLeaseTTL     = 15 * time.Second
	DefaultRedisFlush        = 500 * time.Millisecond
	DefaultServiceName       = "tether"
	DefaultTracesExporter    = ExporterNone
	DefaultTracesProtocol    = ProtocolGRPC
	DefaultTracesInsecure    = true
	DefaultSampleRatio       = 1.0
	DefaultLogLevel          = LogLevelInfo
	DefaultLogFormat         = LogFormatJSON

	// DefaultUpstreamType is the type of an upstream entry without one.
	DefaultUpstreamType = upstreams.KindOpenAI
	// DefaultOpenAIURL is the url of an openai upstream without one.
	DefaultOpenAIURL = "wss://api.openai.com/v1/realtime"
	// DefaultOpenAILiveURL is the live_url of an openai upstream without one.
	DefaultOpenAILiveURL = "wss://api.openai.com/v1/live/sessions"
	// AzureLivePath is the GPT-Live path of an Azure resource: an azure
	// upstream's default live_url is its url's scheme and host with it.
	AzureLivePath = "/openai/v1/live/sessions"
	// DefaultOpenAIAPIKeyEnv is the api_key_env of an openai upstream with
	// neither api_key_env nor api_key_file. Its presence in the environment
	// also selects the automatic upstream (see AutoUpstreams).
	DefaultOpenAIAPIKeyEnv = "OPENAI_API_KEY"
	// DefaultDialTimeout is the dial_timeout of an upstream without one.
	DefaultDialTimeout = 10 * time.Second
	// DefaultAzureAPIKeyEnv holds the key of an azure upstream without a credential setting.
	DefaultAzureAPIKeyEnv = "AZURE_OPENAI_API_KEY"
	// DefaultMaxFailures is the max_failures of an upstream without one.
	DefaultMaxFailures = 3
	// DefaultCooldown is the cooldown of an upstream without one.
	DefaultCooldown = 30 * time.Second
)

// Defaults of lifecycle.resume (why these values: see [Resume] and
// [ResumeHistory]).
const (
	DefaultResumeEnabled      = false
	DefaultResumeMaxResumes   = 3
	DefaultResumeHistoryItems = 128
	DefaultResumeHistoryBytes = 32 << 10 // 32 KiB
	DefaultResumeBuffer       = 2 * time.Second
	DefaultResumeNotify       = true
)

// Limits enforced by Validate.
const (
	// MaxFrameBytesLimit is the largest allowed server.max_frame_bytes (1 GiB).
	MaxFrameBytesLimit = 1 << 30
	// MaxResumeBuffer is the largest allowed lifecycle.resume.buffer. The
	// audio is held in memory, per call (30 s of 24 kHz PCM16 is about
	// 2 MB as base64 appends), and audio older than this would reach the
	// new upstream session as a backlog it answers long after the caller spoke.
	MaxResumeBuffer = 30 * time.Second
)

// EnvPrefix starts the name of every environment override: the key path
// upper-cased with dots replaced by underscores, e.g.
// TETHER_LIFECYCLE_IDLE_TIMEOUT for lifecycle.idle_timeout.
const EnvPrefix = "TETHER"

// Default returns the built-in configuration. Upstreams is nil: the command
// picks one with AutoUpstreams. Every call returns a fresh value.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:           DefaultServerListen,
			Paths:            []string{DefaultServerPath},
			LivePaths:        []string{DefaultLivePath},
			HandshakeTimeout: DefaultHandshakeTimeout,
			ParkAfter:        DefaultParkAfter,
			MaxSessions:      DefaultMaxSessions,
			MaxFrameBytes:    DefaultMaxFrameBytes,
			AllowedOrigins:   []string{},
		},
		Admin: Admin{
			Listen: DefaultAdminListen,
			PProf:  DefaultAdminPProf,
		},
		Auth: Auth{
			Mode: DefaultAuthMode,
		},
		Lifecycle: Lifecycle{
			Heartbeat: Heartbeats{
				Client:   Heartbeat{Interval: DefaultHeartbeatInterval, Timeout: DefaultHeartbeatTimeout},
				Upstream: Heartbeat{Interval: DefaultHeartbeatInterval, Timeout: DefaultHeartbeatTimeout},
			},
			IdleTimeout:  DefaultIdleTimeout,
			MaxDuration:  DefaultMaxDuration,
			DrainTimeout: DefaultDrainTimeout,
			FatalUpstreamErrors: []string{
				UpstreamErrorSessionExpired,
				UpstreamErrorInvalidAPIKey,
				UpstreamErrorBetaAPIShapeDisabled,
			},
			Live: LiveLifecycle{CloseTimeout: DefaultLiveCloseTimeout, Quiet: DefaultLiveQuiet},
			Resume: Resume{
				Enabled:    DefaultResumeEnabled,
				On:         slices.Clone(lifecycle.AllTriggers),
				MaxResumes: DefaultResumeMaxResumes,
				History:    ResumeHistory{Items: DefaultResumeHistoryItems, Bytes: DefaultResumeHistoryBytes},
				Buffer:     DefaultResumeBuffer,
				Notify:     DefaultResumeNotify,
			},
		},
		Limits: limits.Config{Window: DefaultLimitsWindow, BoundaryTimeout: DefaultBoundaryTimeout,
			Overrides: map[string]limits.Config{}},
		Pricing: limits.Pricing{},
		State: State{Backend: DefaultStateBackend, Redis: StateRedis{KeyPrefix: DefaultRedisKeyPrefix,
			Timeout: DefaultRedisTimeout, OnError: DefaultRedisOnError, LeaseTTL: DefaultRedisLeaseTTL,
			FlushInterval: DefaultRedisFlush}},
		TLS: TLS{
			Mode: DefaultTLSMode,
			ACME: TLSACME{Domains: []string{}},
		},
		Telemetry: Telemetry{
			ServiceName: DefaultServiceName,
			Traces: Traces{
				Exporter:    DefaultTracesExporter,
				Protocol:    DefaultTracesProtocol,
				Insecure:    DefaultTracesInsecure,
				SampleRatio: DefaultSampleRatio,
			},
		},
		Log: Log{
			Level:  DefaultLogLevel,
			Format: DefaultLogFormat,
		},
	}
}

// DefaultUpstream returns an upstream of type typ with every default [Load]
// would fill: name = typ, dial_timeout, and for openai the url and
// api_key_env. An empty typ means [DefaultUpstreamType].
func DefaultUpstream(typ upstreams.Kind) upstreams.Config {
	u := upstreams.Config{Type: typ}
	fillUpstreamDefaults(&u)
	u.Name = string(u.Type)
	return u
}

// AutoUpstreams is the upstream list used when the configuration has no
// upstreams key: openai when getenv(DefaultOpenAIAPIKeyEnv) is non-empty,
// else the built-in mock. Pass os.Getenv; tests pass their own lookup.
func AutoUpstreams(getenv func(string) string) []upstreams.Config {
	if getenv(DefaultOpenAIAPIKeyEnv) != "" {
		return []upstreams.Config{DefaultUpstream(upstreams.KindOpenAI)}
	}
	return []upstreams.Config{DefaultUpstream(upstreams.KindMock)}
}

// fillUpstreamDefaults fills the defaults of one entry that do not depend on
// the rest of the list (everything but the name), and canonicalises header
// names (HTTP header names are case-insensitive); an empty header map becomes nil.
func fillUpstreamDefaults(u *upstreams.Config) {
	if u.Type == "" {
		u.Type = DefaultUpstreamType
	}
	if u.Type == upstreams.KindOpenAI {
		if u.URL == "" {
			u.URL = DefaultOpenAIURL
		}
		if u.LiveURL == "" {
			u.LiveURL = openAILiveURL(u.URL)
		}
		if u.APIKeyEnv == "" && u.APIKeyFile == "" {
			u.APIKeyEnv = DefaultOpenAIAPIKeyEnv
		}
	}
	if u.Type == upstreams.KindMock && u.LiveURL == "" && u.URL != "" {
		u.LiveURL = openAILiveURL(u.URL) // a mock-upstream elsewhere serves both
	}
	if u.Type == upstreams.KindAzure && u.LiveURL == "" {
		if base, err := url.Parse(u.URL); err == nil && base.Host != "" {
			u.LiveURL = (&url.URL{Scheme: base.Scheme, Host: base.Host, Path: AzureLivePath}).String()
		}
	}
	if u.Type == upstreams.KindAzure && u.APIKeyEnv == "" && u.APIKeyFile == "" && u.TokenFile == "" {
		u.APIKeyEnv = DefaultAzureAPIKeyEnv
	}
	if u.DialTimeout == 0 {
		u.DialTimeout = DefaultDialTimeout
	}
	if len(u.Subprotocols) == 0 {
		u.Subprotocols = nil
	}
	if len(u.AllowedModels) == 0 {
		u.AllowedModels = nil
	}
	if u.MaxFailures == 0 {
		u.MaxFailures = DefaultMaxFailures
	}
	if u.Cooldown == 0 {
		u.Cooldown = DefaultCooldown
	}
	if len(u.Headers) == 0 {
		u.Headers = nil // "headers: {}" is the same as no headers
	} else {
		h := make(map[string]string, len(u.Headers))
		for k, v := range u.Headers {
			h[textproto.CanonicalMIMEHeaderKey(k)] = v
		}
		u.Headers = h
	}
}

// openAILiveURL is the default live_url of an openai upstream at url: the
// same host with /live/sessions in place of a path ending in /realtime
// (DefaultOpenAILiveURL for the default url), else none.
func openAILiveURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !strings.HasSuffix(u.Path, "/realtime") {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host,
		Path: strings.TrimSuffix(u.Path, "/realtime") + "/live/sessions"}).String()
}

// fillUpstreamListDefaults fills the defaults of every entry. An entry
// without a name is named after its type; when that name is taken (by an
// explicit name anywhere in the list or an earlier default) it becomes
// "<type>-<index>", the index being its position in the list. Explicit
// names are never changed, so duplicates among them remain for Validate to
// report.
func fillUpstreamListDefaults(list []upstreams.Config) {
	taken := make(map[string]bool, len(list))
	for i := range list {
		fillUpstreamDefaults(&list[i])
		if list[i].Name != "" {
			taken[list[i].Name] = true
		}
	}
	for i := range list {
		u := &list[i]
		if u.Name != "" {
			continue
		}
		name := string(u.Type)
		for n := i; taken[name]; n++ {
			name = fmt.Sprintf("%s-%d", u.Type, n)
		}
		u.Name = name
		taken[name] = true
	}
}

//go:embed defaults.yaml
var defaultsYAML []byte

// DefaultsYAML returns the default configuration as commented YAML: every
// key with its default value and a comment saying what it does and which
// values it accepts. The upstreams section is a commented-out example, since
// its absence selects the upstream automatically. Loading it yields exactly
// Default(). The caller may modify the returned slice.
func DefaultsYAML() []byte {
	return bytes.Clone(defaultsYAML)
}
