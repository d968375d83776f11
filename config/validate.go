package config

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/state"
	tethertls "github.com/tetherproxy/tether/tls"
	"github.com/tetherproxy/tether/upstreams"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the key path of the offending value, in the file's spelling:
	// "lifecycle.idle_timeout", "upstreams[1].dial_timeout",
	// "upstreams[0].headers[Host]". It is never empty.
	Path string
	// Message says what is wrong, e.g. "must be > 0".
	Message string
}

// String returns "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError lists every problem found in a configuration. [Load] and
// [Config.Validate] return it with Problems sorted by path.
type ValidationError struct {
	Problems []Problem
}

// Error returns every problem, one per line, as "path: message", sorted by
// path (list indexes in numeric order).
func (e *ValidationError) Error() string {
	ps := slices.Clone(e.Problems)
	sortProblems(ps)
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// sortProblems orders problems by path, then message, comparing runs of
// digits numerically so upstreams[2] sorts before upstreams[10].
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := naturalCompare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
}

// naturalCompare compares a and b byte by byte, except that runs of ASCII
// digits are compared as numbers.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			da, db := digitRun(a), digitRun(b)
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			if c := da - db; c != 0 { // "01" after "1"
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digitRun(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

// problems collects Problems during validation.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// err returns nil or a *ValidationError holding the sorted problems.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	out := slices.Clone([]Problem(ps))
	sortProblems(out)
	return &ValidationError{Problems: out}
}

// Validate checks every rule and returns nil or a *ValidationError listing
// every problem with its key path. It does not modify c and does not fill
// defaults: a Config built in code must hold complete values (start from
// Default and DefaultUpstream).
func (c *Config) Validate() error {
	var ps problems
	c.validate(&ps)
	return ps.err()
}

func (c *Config) validate(ps *problems) {
	c.Server.validate(ps)
	// Two listeners on one fixed address cannot both bind; port 0 is fine.
	if checkListen(ps, "admin.listen", c.Admin.Listen) &&
		c.Admin.Listen == c.Server.Listen && !strings.HasSuffix(c.Admin.Listen, ":0") {
		ps.add("admin.listen", "must differ from server.listen (both %q)", c.Server.Listen)
	}
	c.Auth.validate(ps)
	validateUpstreams(ps, c.Upstreams)
	c.Lifecycle.validate(ps)
	validateLimits(ps, "limits", &c.Limits, nil, c.Pricing)
	for _, label := range sortedKeys(c.Limits.Overrides) {
		o := c.Limits.Overrides[label]
		if label == "" {
			ps.add("limits.overrides", "an override needs a client identity as its name")
		}
		validateLimits(ps, "limits.overrides["+label+"]", &o, &c.Limits, c.Pricing)
	}
	validatePricing(ps, c.Pricing)
	c.State.validate(ps)
	c.TLS.validate(ps)
	if l := c.TLS.ACME.HTTPListen; c.TLS.Mode == tethertls.ModeACME && l != "" && !strings.HasSuffix(l, ":0") &&
		(l == c.Server.Listen || l == c.Admin.Listen) {
		ps.add("tls.acme.http_listen", "must differ from server.listen and admin.listen (got %q)", l)
	}
	c.Telemetry.validate(ps)
	c.Log.validate(ps)
}

func (s *Server) validate(ps *problems) {
	checkListen(ps, "server.listen", s.Listen)
	if len(s.Paths) == 0 && len(s.LivePaths) == 0 {
		ps.add("server.paths", "must list at least one path (here or in server.live_paths)")
	}
	seen := make(map[string]string, len(s.Paths)+len(s.LivePaths))
	checkPaths(ps, "server.paths", s.Paths, seen)
	checkPaths(ps, "server.live_paths", s.LivePaths, seen)
	positive(ps, "server.handshake_timeout", s.HandshakeTimeout)
	positive(ps, "server.park_after", s.ParkAfter)
	if s.MaxSessions < 1 {
		ps.add("server.max_sessions", "must be >= 1 (got %d)", s.MaxSessions)
	}
	if s.MaxFrameBytes < 1 || s.MaxFrameBytes > MaxFrameBytesLimit {
		ps.add("server.max_frame_bytes", "must be between 1 and %d (got %d)", MaxFrameBytesLimit, s.MaxFrameBytes)
	}
}

// checkPaths checks one list of upgrade paths; seen maps each path already
// listed (in this list or another) to its key path.
func checkPaths(ps *problems, key string, paths []string, seen map[string]string) {
	for i, p := range paths {
		path := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case !strings.HasPrefix(p, "/"):
			ps.add(path, "must start with \"/\" (got %q)", p)
		case strings.ContainsAny(p, "?# \t\r\n"):
			ps.add(path, "must be a plain URL path without query, fragment or spaces (got %q)", p)
		}
		if other, dup := seen[p]; dup {
			ps.add(path, "duplicate of %s", other)
		} else {
			seen[p] = path
		}
	}
}

func (a *Auth) validate(ps *problems) {
	switch a.Mode {
	case auth.ModeNone:
	case auth.ModeToken:
		requiredIn(ps, "auth.tokens_file", a.TokensFile, "auth.mode", auth.ModeToken)
	case auth.ModeJWT:
		requiredIn(ps, "auth.jwt.hmac_secret_file", a.JWT.HMACSecretFile, "auth.mode", auth.ModeJWT)
	default:
		oneOf(ps, "auth.mode", a.Mode, auth.Modes()...)
	}
	if a.MaxSessionsPerClient < 0 {
		ps.add("auth.max_sessions_per_client", "must be >= 0 (got %d); 0 means unlimited", a.MaxSessionsPerClient)
	}
}

// validateLimits checks one set of client limits: the top level, or an
// override of base (a value it inherits from base is base's problem).
func validateLimits(ps *problems, path string, l, base *limits.Config, pricing limits.Pricing) {
	values := func(l *limits.Config) []float64 {
		return []float64{float64(l.MaxSessions), float64(l.TokensPerDay), l.AudioSecondsPerDay, l.CostPerDay,
			float64(l.MaxSessionTokens), l.MaxSessionAudioSeconds}
	}
	keys := []string{"max_sessions", "tokens_per_day", "audio_seconds_per_day", "cost_per_day",
		"max_session_tokens", "max_session_audio_seconds"}
	var inherited []float64
	if base != nil {
		inherited = values(base)
	}
	for i, v := range values(l) {
		if inherited != nil && (v == inherited[i] || math.IsNaN(v) && math.IsNaN(inherited[i])) {
			continue // inherited: reported at the top level
		}
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			ps.add(joinKey(path, keys[i]), "must be >= 0 (got %v); 0 means unlimited", v)
		}
	}
	if l.CostPerDay > 0 && len(pricing) == 0 && (base == nil || base.CostPerDay != l.CostPerDay) {
		ps.add(joinKey(path, "cost_per_day"), "needs prices: set pricing (model -> USD per 1M tokens or per minute)")
	}
	if path == "limits" {
		positive(ps, "limits.window", l.Window)
		if l.Window > 0 && (24*time.Hour)%l.Window != 0 && l.Window%(24*time.Hour) != 0 {
			ps.add("limits.window", "must divide a day or be whole days, so windows start at midnight UTC (got %s)", l.Window)
		}
		positive(ps, "limits.boundary_timeout", l.BoundaryTimeout)
	}
}

// validatePricing checks the price of every model.
func validatePricing(ps *problems, pricing limits.Pricing) {
	for _, model := range sortedKeys(pricing) {
		p := pricing[model]
		path := "pricing[" + model + "]"
		if strings.TrimSpace(model) == "" {
			ps.add("pricing", "a price needs a model name")
		}
		for _, f := range []struct {
			key string
			v   float64
		}{
			{"input_text", p.InputText}, {"cached_input_text", p.CachedInputText}, {"output_text", p.OutputText},
			{"input_audio", p.InputAudio}, {"cached_input_audio", p.CachedInputAudio}, {"output_audio", p.OutputAudio},
			{"per_minute", p.PerMinute},
		} {
			if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
				ps.add(joinKey(path, f.key), "must be >= 0 USD (got %v)", f.v)
			}
		}
	}
}

func (s *State) validate(ps *problems) {
	switch s.Backend {
	case StateBackendMemory:
		return
	case StateBackendRedis:
	default:
		oneOf(ps, "state.backend", s.Backend, StateBackendMemory, StateBackendRedis)
		return
	}
	r := &s.Redis
	requiredIn(ps, "state.redis.url", r.URL, "state.backend", StateBackendRedis)
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		switch {
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "":
			ps.add("state.redis.url", "must be redis://host:port or rediss://host:port (got %q)", redact.URL(r.URL))
		default:
			if err := state.CheckURL(r.URL); err != nil {
				ps.add("state.redis.url", "%s", err)
			}
		}
	}
	if r.PasswordFile != "" && r.PasswordEnv != "" {
		ps.add("state.redis.password_env", "set one of password_file and password_env")
	}
	positive(ps, "state.redis.timeout", r.Timeout)
	positive(ps, "state.redis.lease_ttl", r.LeaseTTL)
	positive(ps, "state.redis.flush_interval", r.FlushInterval)
	if r.LeaseTTL > 0 && r.FlushInterval >= r.LeaseTTL {
		ps.add("state.redis.flush_interval", "must be shorter than state.redis.lease_ttl (%s)", r.LeaseTTL)
	}
	if r.OnError != StateFailOpen && r.OnError != StateFailClosed {
		oneOf(ps, "state.redis.on_error", r.OnError, StateFailOpen, StateFailClosed)
	}
	if r.TLS.CAFile != "" {
		checkPEMFile(ps, "state.redis.tls.ca_file", r.TLS.CAFile)
	}
}

// requiredIn reports path when its value v is empty: it is required when
// modeKey is mode.
func requiredIn(ps *problems, path, v, modeKey string, mode any) {
	if v == "" {
		ps.add(path, "required when %s is %q", modeKey, mode)
	}
}

// forbiddenHeaders are the handshake headers tether sets itself.
var forbiddenHeaders = []string{"Host", "Upgrade", "Connection"}

func validateUpstreams(ps *problems, list []upstreams.Config) {
	if list == nil {
		return // automatic choice
	}
	if len(list) == 0 {
		ps.add("upstreams", "empty list; remove the key to use the default upstream")
		return
	}
	names := make(map[string]int, len(list))
	for i := range list {
		u := &list[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case u.Name == "":
			ps.add(p+".name", "must not be empty")
		default:
			if j, dup := names[u.Name]; dup {
				ps.add(p+".name", "duplicate name %q (also upstreams[%d])", u.Name, j)
			} else {
				names[u.Name] = i
			}
		}
		if !slices.Contains(upstreams.Kinds(), u.Type) {
			oneOf(ps, p+".type", u.Type, upstreams.Kinds()...)
		}
		if u.URL == "" {
			if u.Type == upstreams.KindAzure || u.Type == upstreams.KindGeneric {
				ps.add(p+".url", "required for type %q", u.Type)
			}
		} else {
			checkWebSocketURL(ps, p+".url", u.URL)
		}
		if u.LiveURL != "" {
			checkWebSocketURL(ps, p+".live_url", u.LiveURL)
			if strings.Contains(u.LiveURL, "?") {
				ps.add(p+".live_url", "must have no query: GPT-Live takes none (got %q)", u.LiveURL)
			}
		}
		if u.APIKeyEnv != "" && u.APIKeyFile != "" {
			ps.add(p+".api_key_file", "set either api_key_env or api_key_file, not both")
		}
		for _, name := range sortedKeys(u.Headers) {
			hp := p + ".headers[" + name + "]"
			switch {
			case !validHeaderName(name):
				ps.add(hp, "not a valid HTTP header name")
			case slices.ContainsFunc(forbiddenHeaders, func(f string) bool { return strings.EqualFold(f, name) }),
				len(name) >= len("Sec-WebSocket-") && strings.EqualFold(name[:len("Sec-WebSocket-")], "Sec-WebSocket-"):
				ps.add(hp, "tether sets this header itself; Host, Upgrade, Connection and Sec-WebSocket-* are not allowed")
			}
			if strings.ContainsAny(u.Headers[name], "\r\n\x00") {
				ps.add(hp, "value must not contain CR, LF or NUL")
			}
		}
		positive(ps, p+".dial_timeout", u.DialTimeout)
		validateCredentials(ps, p, u)
		if u.DefaultModel != "" && len(u.AllowedModels) > 0 && !slices.Contains(u.AllowedModels, u.DefaultModel) {
			ps.add(p+".default_model", "%q is not in allowed_models", u.DefaultModel)
		}
		if u.CARootFile != "" {
			checkPEMFile(ps, p+".ca_root_file", u.CARootFile)
		}
		if u.MaxFailures < 0 {
			ps.add(p+".max_failures", "must be >= 0 (got %d); 0 never skips the upstream", u.MaxFailures)
		}
		nonNegative(ps, p+".cooldown", u.Cooldown)
		for j, sp := range u.Subprotocols {
			if sp == "" || strings.ContainsAny(sp, " ,\r\n\t") {
				ps.add(fmt.Sprintf("%s.subprotocols[%d]", p, j), "must be a single token")
			}
		}
	}
}

// validateCredentials checks where an upstream's credential comes from and goes.
func validateCredentials(ps *problems, p string, u *upstreams.Config) {
	if u.APIKeyHeader != "" && u.APIKeyQuery != "" {
		ps.add(p+".api_key_query", "set either api_key_header or api_key_query, not both")
	}
	if (u.APIKeyHeader != "" || u.APIKeyQuery != "") && u.Type != upstreams.KindGeneric {
		ps.add(p+".api_key_header", "only for type generic (openai uses Authorization: Bearer, azure the api-key header)")
	}
	if u.APIKeyHeader != "" && !validHeaderName(u.APIKeyHeader) {
		ps.add(p+".api_key_header", "not a valid HTTP header name")
	}
	if u.TokenFile != "" {
		if u.Type != upstreams.KindAzure {
			ps.add(p+".token_file", "only for type azure")
		}
		if u.APIKeyEnv != "" || u.APIKeyFile != "" {
			ps.add(p+".token_file", "set either token_file or api_key_env/api_key_file, not both")
		}
	}
	if u.Type == upstreams.KindAzure && u.APIKeyEnv == "" && u.APIKeyFile == "" && u.TokenFile == "" {
		ps.add(p+".api_key_env", "azure needs api_key_env, api_key_file or token_file")
	}
}

// checkPEMFile reports an unreadable file or one without a PEM certificate.
func checkPEMFile(ps *problems, path, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		ps.add(path, "cannot read: %v", err)
		return
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(b) {
		ps.add(path, "%s holds no PEM certificate", file)
	}
}

func (l *Lifecycle) validate(ps *problems) {
	l.Heartbeat.Client.validate(ps, "lifecycle.heartbeat.client")
	l.Heartbeat.Upstream.validate(ps, "lifecycle.heartbeat.upstream")
	nonNegative(ps, "lifecycle.idle_timeout", l.IdleTimeout)
	nonNegative(ps, "lifecycle.max_duration", l.MaxDuration)
	nonNegative(ps, "lifecycle.drain_timeout", l.DrainTimeout)
	nonNegative(ps, "lifecycle.live.close_timeout", l.Live.CloseTimeout)
	nonNegative(ps, "lifecycle.live.quiet", l.Live.Quiet)
	for i, code := range l.FatalUpstreamErrors {
		if strings.TrimSpace(code) == "" {
			ps.add(fmt.Sprintf("lifecycle.fatal_upstream_errors[%d]", i), "must not be empty")
		}
	}
	l.Resume.validate(ps)
}

// validate checks lifecycle.resume. The shape of the block is checked even
// when it is off, so a mistake shows before the day it is turned on.
func (r *Resume) validate(ps *problems) {
	const path = "lifecycle.resume"
	seen := make(map[lifecycle.Trigger]string, len(r.On))
	for i, t := range r.On {
		p := fmt.Sprintf("%s.on[%d]", path, i)
		if !slices.Contains(lifecycle.AllTriggers, t) {
			oneOf(ps, p, t, lifecycle.AllTriggers...)
			continue
		}
		if other, dup := seen[t]; dup {
			ps.add(p, "duplicate of %s (%q)", other, t)
		} else {
			seen[t] = p
		}
	}
	if r.Enabled && len(r.On) == 0 {
		ps.add(path+".on", "must list at least one trigger when %s.enabled is true; set enabled: false to never resume", path)
	}
	switch {
	case r.Enabled && r.MaxResumes < 1:
		ps.add(path+".max_resumes", "must be >= 1 when %s.enabled is true (got %d)", path, r.MaxResumes)
	case r.MaxResumes < 0:
		ps.add(path+".max_resumes", "must be >= 0 (got %d)", r.MaxResumes)
	}
	if r.History.Items < 1 {
		ps.add(path+".history.items", "must be >= 1 (got %d)", r.History.Items)
	}
	if r.History.Bytes < 1 {
		ps.add(path+".history.bytes", "must be >= 1 (got %d)", r.History.Bytes)
	}
	if r.Buffer < 0 || r.Buffer > MaxResumeBuffer {
		ps.add(path+".buffer", "must be between 0 and %s (got %s); 0 holds no client audio", MaxResumeBuffer, r.Buffer)
	}
}

func (h Heartbeat) validate(ps *problems, path string) {
	positive(ps, path+".interval", h.Interval)
	positive(ps, path+".timeout", h.Timeout)
	if h.Interval > 0 && h.Timeout > 0 && h.Timeout >= h.Interval {
		ps.add(path+".timeout", "must be less than interval (%s), got %s", h.Interval, h.Timeout)
	}
}

func (t *TLS) validate(ps *problems) {
	switch t.Mode {
	case tethertls.ModeOff:
	case tethertls.ModeFiles:
		requiredIn(ps, "tls.cert_file", t.CertFile, "tls.mode", tethertls.ModeFiles)
		requiredIn(ps, "tls.key_file", t.KeyFile, "tls.mode", tethertls.ModeFiles)
	case tethertls.ModeACME:
		a := &t.ACME
		if len(a.Domains) == 0 {
			if a.OnDemand {
				ps.add("tls.acme.domains", "required with on_demand: only these names may get a certificate")
			} else {
				ps.add("tls.acme.domains", "must list at least one domain when tls.mode is %q", tethertls.ModeACME)
			}
		}
		requiredIn(ps, "tls.acme.storage_dir", a.StorageDir, "tls.mode", tethertls.ModeACME)
		// The file is only read in acme mode: a bundle kept in the file
		// for later must not break a configuration that does not use it.
		if a.CARootFile != "" {
			checkPEMFile(ps, "tls.acme.ca_root_file", a.CARootFile)
		}
	default:
		oneOf(ps, "tls.mode", t.Mode, tethertls.Modes()...)
	}
	for i, d := range t.ACME.Domains {
		path := fmt.Sprintf("tls.acme.domains[%d]", i)
		switch {
		case strings.TrimSpace(d) == "" || strings.ContainsAny(d, " \t/:"):
			ps.add(path, "must be a host name (got %q)", d)
		case strings.Contains(d, "*") && (!strings.HasPrefix(d, "*.") || strings.Count(d, "*") > 1 || len(d) < 3):
			ps.add(path, "a wildcard must be the whole first label, as in \"*.example.com\" (got %q)", d)
		case strings.HasPrefix(d, "*.") && t.Mode == tethertls.ModeACME && !t.ACME.OnDemand:
			// A wildcard certificate needs the DNS-01 challenge, which
			// tether does not solve; on demand, the wildcard is a pattern
			// of names that each get their own certificate.
			ps.add(path, "a wildcard name needs tls.acme.on_demand: true (got %q)", d)
		}
	}
	if t.ACME.CAURL != "" {
		u, err := url.Parse(t.ACME.CAURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.add("tls.acme.ca_url", "must be an http or https URL (got %q)", t.ACME.CAURL)
		}
	}
	if t.ACME.HTTPListen != "" {
		checkListen(ps, "tls.acme.http_listen", t.ACME.HTTPListen)
	}
}

func (t *Telemetry) validate(ps *problems) {
	if t.ServiceName == "" {
		ps.add("telemetry.service_name", "must not be empty")
	}
	switch t.Traces.Exporter {
	case ExporterNone, ExporterOTLP, ExporterStdout:
	default:
		oneOf(ps, "telemetry.traces.exporter", t.Traces.Exporter, ExporterNone, ExporterOTLP, ExporterStdout)
	}
	switch t.Traces.Protocol {
	case ProtocolGRPC, ProtocolHTTP:
	default:
		oneOf(ps, "telemetry.traces.protocol", t.Traces.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	if r := t.Traces.SampleRatio; !(r >= 0 && r <= 1) { // also rejects NaN
		ps.add("telemetry.traces.sample_ratio", "must be between 0 and 1 (got %v)", r)
	}
}

func (l Log) validate(ps *problems) {
	switch l.Level {
	case LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError:
	default:
		oneOf(ps, "log.level", l.Level, LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError)
	}
	switch l.Format {
	case LogFormatJSON, LogFormatText:
	default:
		oneOf(ps, "log.format", l.Format, LogFormatJSON, LogFormatText)
	}
}

// SlogLevel returns the slog level for l.Level; an unknown level (which
// Validate rejects) maps to slog.LevelInfo.
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case LogLevelDebug:
		return slog.LevelDebug
	case LogLevelWarn:
		return slog.LevelWarn
	case LogLevelError:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// checkListen requires host:port with a numeric port in 0..65535 and
// reports whether addr passed.
func checkListen(ps *problems, path, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(path, "must be host:port, e.g. \"127.0.0.1:8080\" (got %q)", addr)
		return false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ps.add(path, "port must be a number from 0 to 65535 (got %q)", port)
		return false
	}
	return true
}

// checkWebSocketURL requires an absolute ws:// or wss:// URL with a host.
func checkWebSocketURL(ps *problems, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		ps.add(path, "not a valid URL (%q)", raw)
		return
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		ps.add(path, "scheme must be ws or wss (got %q)", raw)
		return
	}
	if u.Host == "" {
		ps.add(path, "must include a host (got %q)", raw)
	}
}

func positive(ps *problems, path string, d time.Duration) {
	if d <= 0 {
		ps.add(path, "must be > 0 (got %s)", d)
	}
}

func nonNegative(ps *problems, path string, d time.Duration) {
	if d < 0 {
		ps.add(path, "must be >= 0 (got %s); 0 disables", d)
	}
}

// oneOf reports value as not one of allowed.
func oneOf[T ~string](ps *problems, path string, value T, allowed ...T) {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	ps.add(path, "must be one of %s (got %q)", strings.Join(names, ", "), value)
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
