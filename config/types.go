// Package config loads, defaults and validates tether's YAML configuration.
//
// The key names are a public contract (see the README): renaming one breaks
// users' files. Run-time-only fields carry no yaml/mapstructure tag.
//
// [Load] reads a YAML file, applies TETHER_<PATH> environment overrides,
// fills per-upstream defaults and validates the result; [Default] and
// [DefaultsYAML] describe the built-in configuration; [Config.Validate]
// reports every problem at once, each with its key path.
package config

import (
	"time"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	tethertls "github.com/tetherproxy/tether/tls"
	"github.com/tetherproxy/tether/upstreams"
)

// Config is the whole tether configuration.
type Config struct {
	// Server is the client-facing WebSocket listener.
	Server Server `mapstructure:"server" yaml:"server"`
	// Admin is the listener for health, metrics, sessions and pprof.
	Admin Admin `mapstructure:"admin" yaml:"admin"`
	// Auth is client authentication.
	Auth Auth `mapstructure:"auth" yaml:"auth"`
	// Upstreams are the backends, dialed in order until one succeeds. The
	// entry type and its keys belong to package upstreams; [Load] fills the
	// defaults described on each field (a list built in code can start from
	// [DefaultUpstream]) and [Config.Validate] checks them.
	// nil (the key is absent) means automatic: the command uses
	// [AutoUpstreams]. A non-nil empty list is invalid.
	Upstreams []upstreams.Config `mapstructure:"upstreams" yaml:"upstreams"`
	// Lifecycle holds the per-session guarantees: heartbeats, limits, drain.
	Lifecycle Lifecycle `mapstructure:"lifecycle" yaml:"lifecycle"`
	// Limits bound what each client identity may use (sessions, spend per
	// window, per-session caps). The type belongs to package limits.
	Limits limits.Config `mapstructure:"limits" yaml:"limits"`
	// Pricing prices usage per model (USD), for limits.cost_per_day.
	Pricing limits.Pricing `mapstructure:"pricing" yaml:"pricing"`
	// State is where the limits' counts live: this process, or a Redis
	// shared by every replica.
	State State `mapstructure:"state" yaml:"state"`
	// TLS configures TLS on the client-facing listener.
	TLS TLS `mapstructure:"tls" yaml:"tls"`
	// Telemetry configures OpenTelemetry tracing.
	Telemetry Telemetry `mapstructure:"telemetry" yaml:"telemetry"`
	// Log configures the process logger.
	Log Log `mapstructure:"log" yaml:"log"`
}

// Server is the client-facing WebSocket listener.
type Server struct {
	// Listen is the host:port of the client-facing listener; port 0 picks a
	// free port (tests), an empty host listens on every interface.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// Paths are the HTTP paths on which WebSocket upgrades are accepted; the
	// query string of an upgrade is passed to the upstream.
	Paths []string `mapstructure:"paths" yaml:"paths"`
	// LivePaths are the HTTP paths of GPT-Live upgrades (client-first: the
	// first message is session.start); empty serves no GPT-Live.
	LivePaths []string `mapstructure:"live_paths" yaml:"live_paths"`
	// HandshakeTimeout bounds reading the client's upgrade request and dialing upstreams.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout" yaml:"handshake_timeout"`
	// ParkAfter is how long a leg carries no data frame before its pump
	// parks: its goroutine ends until the socket turns readable again.
	ParkAfter time.Duration `mapstructure:"park_after" yaml:"park_after"`
	// MaxSessions is the number of concurrent sessions beyond which upgrades get HTTP 503.
	MaxSessions int `mapstructure:"max_sessions" yaml:"max_sessions"`
	// MaxFrameBytes is the largest frame payload accepted on either leg; beyond it the session closes with 1009.
	MaxFrameBytes int64 `mapstructure:"max_frame_bytes" yaml:"max_frame_bytes"`
	// AllowedOrigins is an exact-match list of Origin values; empty allows any.
	AllowedOrigins []string `mapstructure:"allowed_origins" yaml:"allowed_origins"`
	// AllowMissingOrigin admits requests without an Origin header when
	// AllowedOrigins is set (server-side clients send none).
	AllowMissingOrigin bool `mapstructure:"allow_missing_origin" yaml:"allow_missing_origin"`
}

// Admin is the admin listener (/healthz, /readyz, /metrics, /sessions, /debug/pprof).
type Admin struct {
	// Listen is the host:port of the admin listener; port 0 picks a free port.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// PProf serves /debug/pprof/ on the admin listener when true.
	PProf bool `mapstructure:"pprof" yaml:"pprof"`
}

// Auth is client authentication.
type Auth struct {
	// Mode is how clients authenticate: [auth.ModeNone], [auth.ModeToken] or [auth.ModeJWT].
	Mode auth.Mode `mapstructure:"mode" yaml:"mode"` // none | token | jwt
	// TokensFile holds the accepted bearer tokens, one per line (token mode);
	// it is re-read when it changes.
	TokensFile string `mapstructure:"tokens_file" yaml:"tokens_file"`
	// JWT configures jwt mode.
	JWT AuthJWT `mapstructure:"jwt" yaml:"jwt"`
	// MaxSessionsPerClient is the older name of limits.max_sessions (one of
	// the two may be set, or both to the same value).
	MaxSessionsPerClient int `mapstructure:"max_sessions_per_client" yaml:"max_sessions_per_client"`
}

// AuthJWT configures HS256 JWT client authentication.
type AuthJWT struct {
	// HMACSecretFile holds the HS256 signing secret (required in jwt mode).
	HMACSecretFile string `mapstructure:"hmac_secret_file" yaml:"hmac_secret_file"`
	// Issuer, when set, must equal the token's "iss" claim.
	Issuer string `mapstructure:"issuer" yaml:"issuer"`
	// Audience, when set, must appear in the token's "aud" claim.
	Audience string `mapstructure:"audience" yaml:"audience"`
}

// Lifecycle holds the session guarantees.
type Lifecycle struct {
	// Heartbeat configures the pings tether sends on each leg.
	Heartbeat Heartbeats `mapstructure:"heartbeat" yaml:"heartbeat"`
	// IdleTimeout ends a session (reason idle_timeout) after this long
	// without turn activity (speech, an answer, text input) when the
	// session's dialect reports turns (Realtime, GPT-Live), else without a
	// data frame in either direction; 0 disables it.
	IdleTimeout time.Duration `mapstructure:"idle_timeout" yaml:"idle_timeout"`
	// MaxDuration ends a session (reason max_duration) this long after it
	// started; 0 disables it.
	MaxDuration time.Duration `mapstructure:"max_duration" yaml:"max_duration"`
	// DrainTimeout is how long a drain waits for sessions to reach a response
	// boundary before closing the rest; 0 closes them at once.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" yaml:"drain_timeout"`
	// FatalUpstreamErrors are the upstream `error` event codes that tear the
	// session down (reason upstream_fatal_event).
	FatalUpstreamErrors []string `mapstructure:"fatal_upstream_errors" yaml:"fatal_upstream_errors"`
	// Live tunes GPT-Live sessions.
	Live LiveLifecycle `mapstructure:"live" yaml:"live"`
	// Resume carries a call over to a new upstream session when the
	// upstream ends it, without closing the client's socket.
	Resume Resume `mapstructure:"resume" yaml:"resume"`
}

// Resume configures carrying a call over to a new upstream session when its
// upstream ends the session (the provider's cap, a reset, a dead upstream
// leg, a fatal event): tether dials again, replays the session settings and
// a bounded text history, sends on the client audio it held, and relays on.
type Resume struct {
	// Enabled turns resuming on; off, such endings close the call as before.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// On lists the upstream endings that resume a call
	// ([lifecycle.AllTriggers] by default); each at most once.
	On []lifecycle.Trigger `mapstructure:"on" yaml:"on"`
	// MaxResumes bounds the successful resumes of one call; once spent, the
	// next ending closes the call with its own reason. >= 1 when enabled.
	MaxResumes int `mapstructure:"max_resumes" yaml:"max_resumes"`
	// History bounds the text history a call keeps for its next upstream
	// session.
	History ResumeHistory `mapstructure:"history" yaml:"history"`
	// Buffer is how much client audio (by arrival time) is held while the
	// call resumes and sent to the new upstream session; what arrives beyond
	// it is dropped. 0 holds none; at most [MaxResumeBuffer].
	Buffer time.Duration `mapstructure:"buffer" yaml:"buffer"`
	// Notify sends the client a tether.session.resumed event once the call
	// goes on on its new upstream session.
	Notify bool `mapstructure:"notify" yaml:"notify"`
}

// ResumeHistory bounds a call's history: the oldest entries go first once
// either bound is passed. Both are > 0; the dialect's own limits apply on
// top (GPT-Live takes at most 128 messages of history).
type ResumeHistory struct {
	// Items is the most history entries kept (messages, function calls and
	// their outputs). The default, 128, is GPT-Live's own cap on the
	// history of a session.start, so one default serves both dialects; on
	// Realtime each entry is one conversation.item.create to be answered
	// before the call goes on, so the count also bounds the resume's gap.
	Items int `mapstructure:"items" yaml:"items"`
	// Bytes is the most history kept, in bytes of the encoded entries. The
	// default, 32 KiB, is about 8,000 tokens of English: GPT-Live's cap on
	// the rendered history, and a quarter of a gpt-realtime context, so the
	// replay leaves room for instructions, tools and the turns to come, and
	// every later answer (which bills the history again as input) stays cheap.
	Bytes int `mapstructure:"bytes" yaml:"bytes"`
}

// LiveLifecycle tunes the ending and drain of GPT-Live sessions.
type LiveLifecycle struct {
	// CloseTimeout bounds the wait for session.closed after tether sent
	// session.close; 0 closes the sockets without session.close.
	CloseTimeout time.Duration `mapstructure:"close_timeout" yaml:"close_timeout"`
	// Quiet is how long the assistant must have been quiet (no output
	// transcript) before a drain closes the session.
	Quiet time.Duration `mapstructure:"quiet" yaml:"quiet"`
}

// Heartbeats configures pings on each leg.
type Heartbeats struct {
	// Client is the heartbeat on the client leg.
	Client Heartbeat `mapstructure:"client" yaml:"client"`
	// Upstream is the heartbeat on the upstream leg.
	Upstream Heartbeat `mapstructure:"upstream" yaml:"upstream"`
}

// Heartbeat: a ping every Interval; the leg fails if no pong arrives within Timeout.
type Heartbeat struct {
	// Interval is the time between pings; > 0.
	Interval time.Duration `mapstructure:"interval" yaml:"interval"`
	// Timeout is how long to wait for the pong; > 0 and < Interval.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout"`
}

// State is where the limits' counts live.
type State struct {
	// Backend is [StateBackendMemory] (this process) or [StateBackendRedis] (shared by
	// every replica).
	Backend string `mapstructure:"backend" yaml:"backend"` // memory | redis
	// Redis configures the redis backend.
	Redis StateRedis `mapstructure:"redis" yaml:"redis"`
}

// StateRedis configures the Redis that every replica shares.
type StateRedis struct {
	// URL is redis://[user@]host:port[/db] (rediss:// for TLS). A password
	// belongs in PasswordFile or PasswordEnv, never in the URL.
	URL string `mapstructure:"url" yaml:"url"`
	// Username is the ACL user; empty uses the URL's, else the default user.
	Username string `mapstructure:"username" yaml:"username"`
	// PasswordFile holds the password (trailing newline ignored); read at start.
	PasswordFile string `mapstructure:"password_file" yaml:"password_file"`
	// PasswordEnv names the environment variable holding the password.
	PasswordEnv string `mapstructure:"password_env" yaml:"password_env"`
	// KeyPrefix starts every key tether writes.
	KeyPrefix string `mapstructure:"key_prefix" yaml:"key_prefix"`
	// Timeout bounds every round trip; a handshake waits at most this long.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout"`
	// OnError is what admission does when Redis cannot be reached:
	// [StateFailOpen] (local limits keep working) or [StateFailClosed] (503).
	OnError string `mapstructure:"on_error" yaml:"on_error"` // fail_open | fail_closed
	// LeaseTTL is how long a session's lease outlives the replica that
	// stopped refreshing it (a replica that dies frees its slots within it).
	LeaseTTL time.Duration `mapstructure:"lease_ttl" yaml:"lease_ttl"`
	// FlushInterval is how often usage is sent to Redis, in one batch.
	FlushInterval time.Duration `mapstructure:"flush_interval" yaml:"flush_interval"`
	// TLS configures TLS to Redis (on with rediss:// or tls.enabled).
	TLS StateRedisTLS `mapstructure:"tls" yaml:"tls"`
}

// StateRedisTLS configures TLS towards Redis.
type StateRedisTLS struct {
	// Enabled turns TLS on for a redis:// URL.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// CAFile is a PEM bundle trusted for Redis's certificate, beside the
	// system roots.
	CAFile string `mapstructure:"ca_file" yaml:"ca_file"`
	// ServerName overrides the name checked in Redis's certificate.
	ServerName string `mapstructure:"server_name" yaml:"server_name"`
}

// TLS configures the client listener's TLS.
type TLS struct {
	// Mode is [tethertls.ModeOff] (plain ws://), [tethertls.ModeFiles] or [tethertls.ModeACME].
	Mode tethertls.Mode `mapstructure:"mode" yaml:"mode"` // off | files | acme
	// CertFile is the PEM certificate chain (files mode), reloaded on change.
	CertFile string `mapstructure:"cert_file" yaml:"cert_file"`
	// KeyFile is the PEM private key (files mode), reloaded on change.
	KeyFile string `mapstructure:"key_file" yaml:"key_file"`
	// ACME configures acme mode.
	ACME TLSACME `mapstructure:"acme" yaml:"acme"`
}

// TLSACME configures automatic certificates.
type TLSACME struct {
	// Email is the ACME account contact; optional.
	Email string `mapstructure:"email" yaml:"email"`
	// CAURL is the ACME directory URL; empty means Let's Encrypt production
	// ([ACMELetsEncryptProduction]).
	CAURL string `mapstructure:"ca_url" yaml:"ca_url"`
	// CARootFile is a PEM bundle trusted for the ACME server's HTTPS
	// endpoint, in addition to the system roots (private or test CAs).
	CARootFile string `mapstructure:"ca_root_file" yaml:"ca_root_file"`
	// Domains are the names certificates are obtained for; with OnDemand they
	// are the allowlist of names a certificate may be issued for, where a
	// leading "*." label matches exactly one label ("*.example.com" allows
	// "a.example.com", not "example.com" or "a.b.example.com").
	Domains []string `mapstructure:"domains" yaml:"domains"`
	// StorageDir is where certificates and ACME account keys are kept.
	StorageDir string `mapstructure:"storage_dir" yaml:"storage_dir"`
	// OnDemand obtains certificates during the first TLS handshake for a
	// name instead of at startup.
	OnDemand bool `mapstructure:"on_demand" yaml:"on_demand"`
	// HTTPListen, when set, is a host:port on which tether answers ACME
	// HTTP-01 challenges (usually ":80"); empty leaves only TLS-ALPN-01,
	// answered on server.listen.
	HTTPListen string `mapstructure:"http_listen" yaml:"http_listen"`
}

// Telemetry configures tracing.
type Telemetry struct {
	// ServiceName is the OpenTelemetry service.name resource attribute.
	ServiceName string `mapstructure:"service_name" yaml:"service_name"`
	// Traces configures the trace exporter.
	Traces Traces `mapstructure:"traces" yaml:"traces"`
}

// Traces configures the trace exporter.
type Traces struct {
	// Exporter is [ExporterNone], [ExporterOTLP] or [ExporterStdout].
	Exporter string `mapstructure:"exporter" yaml:"exporter"` // none | otlp | stdout
	// Endpoint is the OTLP endpoint; empty leaves it to the OTEL_EXPORTER_OTLP_* variables.
	Endpoint string `mapstructure:"endpoint" yaml:"endpoint"`
	// Protocol is the OTLP transport: [ProtocolGRPC] or [ProtocolHTTP].
	Protocol string `mapstructure:"protocol" yaml:"protocol"` // grpc | http
	// Insecure disables TLS towards the OTLP endpoint.
	Insecure bool `mapstructure:"insecure" yaml:"insecure"`
	// SampleRatio is the fraction of sessions traced, in [0, 1].
	SampleRatio float64 `mapstructure:"sample_ratio" yaml:"sample_ratio"`
}

// Log configures logging.
type Log struct {
	// Level is the minimum level logged: debug, info, warn or error.
	Level string `mapstructure:"level" yaml:"level"` // debug | info | warn | error
	// Format is the handler: json or text.
	Format string `mapstructure:"format" yaml:"format"` // json | text
}
