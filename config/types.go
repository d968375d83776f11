// Package config loads, defaults and validates tether's YAML configuration.
//
// The key names are a public contract (see the README): renaming one breaks
// users' files. Run-time-only fields carry no yaml tag.
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
	Server Server `yaml:"server"`
	// Admin is the listener for health, metrics, sessions and pprof.
	Admin Admin `yaml:"admin"`
	// Auth is client authentication.
	Auth Auth `yaml:"auth"`
	// Upstreams are the backends, dialed in order until one succeeds. The
	// entry type and its keys belong to package upstreams; [Load] fills the
	// defaults described on each field (a list built in code can start from
	// [DefaultUpstream]) and [Config.Validate] checks them.
	// nil (the key is absent) means automatic: the command uses
	// [AutoUpstreams]. A non-nil empty list is invalid.
	Upstreams []upstreams.Config `yaml:"upstreams"`
	// Lifecycle holds the per-session guarantees: heartbeats, limits, drain.
	Lifecycle Lifecycle `yaml:"lifecycle"`
	// Limits bound what each client identity may use (sessions, spend per
	// window, per-session caps). The type belongs to package limits.
	Limits limits.Config `yaml:"limits"`
	// Pricing prices usage per model (USD), for limits.cost_per_day.
	Pricing limits.Pricing `yaml:"pricing"`
	// State is where the limits' counts live: this process, or a Redis
	// shared by every replica.
	State State `yaml:"state"`
	// TLS configures TLS on the client-facing listener.
	TLS TLS `yaml:"tls"`
	// Telemetry configures OpenTelemetry tracing.
	Telemetry Telemetry `yaml:"telemetry"`
	// Log configures the process logger.
	Log Log `yaml:"log"`
}

// Server is the client-facing WebSocket listener.
type Server struct {
	// Listen is the host:port of the client-facing listener; port 0 picks a
	// free port (tests), an empty host listens on every interface.
	Listen string `yaml:"listen"`
	// Paths are the HTTP paths on which WebSocket upgrades are accepted; the
	// query string of an upgrade is passed to the upstream.
	Paths []string `yaml:"paths"`
	// LivePaths are the HTTP paths of GPT-Live upgrades (client-first: the
	// first message is session.start); empty serves no GPT-Live.
	LivePaths []string `yaml:"live_paths"`
	// HandshakeTimeout bounds reading the client's upgrade request and dialing upstreams.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// ParkAfter is how long a leg carries no data frame before its pump
	// parks: its goroutine ends until the socket turns readable again.
	ParkAfter time.Duration `yaml:"park_after"`
	// MaxSessions is the number of concurrent sessions beyond which upgrades get HTTP 503.
	MaxSessions int `yaml:"max_sessions"`
	// MaxFrameBytes is the largest frame payload accepted on either leg; beyond it the session closes with 1009.
	MaxFrameBytes int64 `yaml:"max_frame_bytes"`
	// AllowedOrigins is an exact-match list of Origin values; empty allows any.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowMissingOrigin admits requests without an Origin header when
	// AllowedOrigins is set (server-side clients send none).
	AllowMissingOrigin bool `yaml:"allow_missing_origin"`
}

// Admin is the admin listener (/healthz, /readyz, /metrics, /sessions, /debug/pprof).
type Admin struct {
	// Listen is the host:port of the admin listener; port 0 picks a free port.
	Listen string `yaml:"listen"`
	// PProf serves /debug/pprof/ on the admin listener when true.
	PProf bool `yaml:"pprof"`
}

// Auth is client authentication.
type Auth struct {
	// Mode is how clients authenticate: [auth.ModeNone], [auth.ModeToken] or [auth.ModeJWT].
	Mode auth.Mode `yaml:"mode"` // none | token | jwt
	// TokensFile holds the accepted bearer tokens, one per line (token mode);
	// it is re-read when it changes.
	TokensFile string `yaml:"tokens_file"`
	// JWT configures jwt mode.
	JWT AuthJWT `yaml:"jwt"`
	// MaxSessionsPerClient is the older name of limits.max_sessions (one of
	// the two may be set, or both to the same value).
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
}

// AuthJWT configures HS256 JWT client authentication.
type AuthJWT struct {
	// HMACSecretFile holds the HS256 signing secret (required in jwt mode).
	HMACSecretFile string `yaml:"hmac_secret_file"`
	// Issuer, when set, must equal the token's "iss" claim.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must appear in the token's "aud" claim.
	Audience string `yaml:"audience"`
}

// Lifecycle holds the session guarantees.
type Lifecycle struct {
	// Heartbeat configures the pings tether sends on each leg.
	Heartbeat Heartbeats `yaml:"heartbeat"`
	// IdleTimeout ends a session (reason idle_timeout) after this long
	// without turn activity (speech, an answer, text input) when the
	// session's dialect reports turns (Realtime, GPT-Live), else without a
	// data frame in either direction; 0 disables it.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxDuration ends a session (reason max_duration) this long after it
	// started; 0 disables it.
	MaxDuration time.Duration `yaml:"max_duration"`
	// DrainTimeout is how long a drain waits for sessions to reach a response
	// boundary before closing the rest; 0 closes them at once.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// FatalUpstreamErrors are the upstream `error` event codes that tear the
	// session down (reason upstream_fatal_event).
	FatalUpstreamErrors []string `yaml:"fatal_upstream_errors"`
	// Live tunes GPT-Live sessions.
	Live LiveLifecycle `yaml:"live"`
	// Resume carries a call over to a new upstream session when the
	// upstream ends it, without closing the client's socket.
	Resume Resume `yaml:"resume"`
}

// Resume configures carrying a call over to a new upstream session when its
// upstream ends the session (the provider's cap, a reset, a dead upstream
// leg, a fatal event): tether dials again, replays the session settings and
// a bounded text history, sends on the client audio it held, and relays on.
type Resume struct {
	// Enabled turns resuming on; off, such endings close the call as before.
	Enabled bool `yaml:"enabled"`
	// On lists the upstream endings that resume a call
	// ([lifecycle.AllTriggers] by default); each at most once.
	On []lifecycle.Trigger `yaml:"on"`
	// MaxResumes bounds the successful resumes of one call; once spent, the
	// next ending closes the call with its own reason. >= 1 when enabled.
	MaxResumes int `yaml:"max_resumes"`
	// History bounds the text history a call keeps for its next upstream
	// session.
	History ResumeHistory `yaml:"history"`
	// Buffer is how much client audio (by arrival time) is held while the
	// call resumes and sent to the new upstream session; what arrives beyond
	// it is dropped. 0 holds none; at most [MaxResumeBuffer].
	Buffer time.Duration `yaml:"buffer"`
	// Notify sends the client a tether.session.resumed event once the call
	// goes on on its new upstream session.
	Notify bool `yaml:"notify"`
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
	Items int `yaml:"items"`
	// Bytes is the most history kept, in bytes of the encoded entries. The
	// default, 32 KiB, is about 8,000 tokens of English: GPT-Live's cap on
	// the rendered history, and a quarter of a gpt-realtime context, so the
	// replay leaves room for instructions, tools and the turns to come, and
	// every later answer (which bills the history again as input) stays cheap.
	Bytes int `yaml:"bytes"`
}

// LiveLifecycle tunes the ending and drain of GPT-Live sessions.
type LiveLifecycle struct {
	// CloseTimeout bounds the wait for session.closed after tether sent
	// session.close; 0 closes the sockets without session.close.
	CloseTimeout time.Duration `yaml:"close_timeout"`
	// Quiet is how long the assistant must have been quiet (no output
	// transcript) before a drain closes the session.
	Quiet time.Duration `yaml:"quiet"`
}

// Heartbeats configures pings on each leg.
type Heartbeats struct {
	// Client is the heartbeat on the client leg.
	Client Heartbeat `yaml:"client"`
	// Upstream is the heartbeat on the upstream leg.
	Upstream Heartbeat `yaml:"upstream"`
}

// Heartbeat: a ping every Interval; the leg fails if no pong arrives within Timeout.
type Heartbeat struct {
	// Interval is the time between pings; > 0.
	Interval time.Duration `yaml:"interval"`
	// Timeout is how long to wait for the pong; > 0 and < Interval.
	Timeout time.Duration `yaml:"timeout"`
}

// State is where the limits' counts live.
type State struct {
	// Backend is [StateBackendMemory] (this process) or [StateBackendRedis] (shared by
	// every replica).
	Backend string `yaml:"backend"` // memory | redis
	// Redis configures the redis backend.
	Redis StateRedis `yaml:"redis"`
}

// StateRedis configures the Redis that every replica shares.
type StateRedis struct {
	// URL is redis://[user@]host:port[/db] (rediss:// for TLS). A password
	// belongs in PasswordFile or PasswordEnv, never in the URL.
	URL string `yaml:"url"`
	// Username is the ACL user; empty uses the URL's, else the default user.
	Username string `yaml:"username"`
	// PasswordFile holds the password (trailing newline ignored); read at start.
	PasswordFile string `yaml:"password_file"`
	// PasswordEnv names the environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	// KeyPrefix starts every key tether writes.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds every round trip; a handshake waits at most this long.
	Timeout time.Duration `yaml:"timeout"`
	// OnError is what admission does when Redis cannot be reached:
	// [StateFailOpen] (local limits keep working) or [StateFailClosed] (503).
	OnError string `yaml:"on_error"` // fail_open | fail_closed
	// LeaseTTL is how long a session's lease outlives the replica that
	// stopped refreshing it (a replica that dies frees its slots within it).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// FlushInterval is how often usage is sent to Redis, in one batch.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// TLS configures TLS to Redis (on with rediss:// or tls.enabled).
	TLS StateRedisTLS `yaml:"tls"`
}

// StateRedisTLS configures TLS towards Redis.
type StateRedisTLS struct {
	// Enabled turns TLS on for a redis:// URL.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle trusted for Redis's certificate, beside the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in Redis's certificate.
	ServerName string `yaml:"server_name"`
}

// TLS configures the client listener's TLS.
type TLS struct {
	// Mode is [tethertls.ModeOff] (plain ws://), [tethertls.ModeFiles] or [tethertls.ModeACME].
	Mode tethertls.Mode `yaml:"mode"` // off | files | acme
	// CertFile is the PEM certificate chain (files mode), reloaded on change.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key (files mode), reloaded on change.
	KeyFile string `yaml:"key_file"`
	// ACME configures acme mode.
	ACME TLSACME `yaml:"acme"`
}

// TLSACME configures automatic certificates.
type TLSACME struct {
	// Email is the ACME account contact; optional.
	Email string `yaml:"email"`
	// CAURL is the ACME directory URL; empty means Let's Encrypt production
	// ([ACMELetsEncryptProduction]).
	CAURL string `yaml:"ca_url"`
	// CARootFile is a PEM bundle trusted for the ACME server's HTTPS
	// endpoint, in addition to the system roots (private or test CAs).
	CARootFile string `yaml:"ca_root_file"`
	// Domains are the names certificates are obtained for; with OnDemand they
	// are the allowlist of names a certificate may be issued for, where a
	// leading "*." label matches exactly one label ("*.example.com" allows
	// "a.example.com", not "example.com" or "a.b.example.com").
	Domains []string `yaml:"domains"`
	// StorageDir is where certificates and ACME account keys are kept.
	StorageDir string `yaml:"storage_dir"`
	// OnDemand obtains certificates during the first TLS handshake for a
	// name instead of at startup.
	OnDemand bool `yaml:"on_demand"`
	// HTTPListen, when set, is a host:port on which tether answers ACME
	// HTTP-01 challenges (usually ":80"); empty leaves only TLS-ALPN-01,
	// answered on server.listen.
	HTTPListen string `yaml:"http_listen"`
}

// Telemetry configures tracing.
type Telemetry struct {
	// ServiceName is the OpenTelemetry service.name resource attribute.
	ServiceName string `yaml:"service_name"`
	// Traces configures the trace exporter.
	Traces Traces `yaml:"traces"`
}

// Traces configures the trace exporter.
type Traces struct {
	// Exporter is [ExporterNone], [ExporterOTLP] or [ExporterStdout].
	Exporter string `yaml:"exporter"` // none | otlp | stdout
	// Endpoint is the OTLP endpoint; empty leaves it to the OTEL_EXPORTER_OTLP_* variables.
	Endpoint string `yaml:"endpoint"`
	// Protocol is the OTLP transport: [ProtocolGRPC] or [ProtocolHTTP].
	Protocol string `yaml:"protocol"` // grpc | http
	// Insecure disables TLS towards the OTLP endpoint.
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the fraction of sessions traced, in [0, 1].
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Log configures logging.
type Log struct {
	// Level is the minimum level logged: debug, info, warn or error.
	Level string `yaml:"level"` // debug | info | warn | error
	// Format is the handler: json or text.
	Format string `yaml:"format"` // json | text
}
