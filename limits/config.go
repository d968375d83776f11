package limits

import "time"

// Config is the limits key: what each client identity may use. The key
// names are a public contract (see the README); package config fills the
// defaults and validates.
type Config struct {
	// MaxSessions bounds the client's concurrent sessions (fleet-wide with
	// state.backend redis); beyond it upgrades get 429. 0 is unlimited.
	// auth.max_sessions_per_client is its older name.
	MaxSessions int `yaml:"max_sessions" json:"max_sessions,omitempty"`
	// TokensPerDay bounds the client's tokens (input + output) per window.
	TokensPerDay int64 `yaml:"tokens_per_day" json:"tokens_per_day,omitempty"`
	// AudioSecondsPerDay bounds the client's billed audio seconds (GPT-Live
	// usage) per window.
	AudioSecondsPerDay float64 `yaml:"audio_seconds_per_day" json:"audio_seconds_per_day,omitempty"`
	// CostPerDay bounds the client's spend in USD per window, priced by the
	// pricing key.
	CostPerDay float64 `yaml:"cost_per_day" json:"cost_per_day,omitempty"`
	// MaxSessionTokens bounds one session's tokens.
	MaxSessionTokens int64 `yaml:"max_session_tokens" json:"max_session_tokens,omitempty"`
	// MaxSessionAudioSeconds bounds one session's billed audio seconds.
	MaxSessionAudioSeconds float64 `yaml:"max_session_audio_seconds" json:"max_session_audio_seconds,omitempty"`
	// Overrides gives some identities (a token label, a JWT sub, an IP)
	// other values: an override's keys replace the ones above, the keys it
	// leaves out keep them. window, boundary_timeout, client_metrics and
	// overrides have no place inside an override.
	Overrides map[string]Config `yaml:"overrides" json:"-"`
	// Window is the length of the usage windows of the *_per_day keys,
	// aligned to midnight UTC (24h); shorter windows are for tests.
	Window time.Duration `yaml:"window" json:"-"`
	// BoundaryTimeout bounds the wait for a spent call's answer boundary: a
	// call that never reaches one (a caller who never pauses, answers that
	// overlap) ends this long after its budget was spent.
	BoundaryTimeout time.Duration `yaml:"boundary_timeout" json:"-"`
	// ClientMetrics exports tether_budget_spent{client,kind} for every
	// client with usage in the window (one series per client: opt-in).
	ClientMetrics bool `yaml:"client_metrics" json:"-"`
}

// For returns the limits of identity: its override, else the defaults.
func (c *Config) For(identity string) Config {
	if o, ok := c.Overrides[identity]; ok {
		return o
	}
	return *c
}

// Price is what one model costs, in USD: per 1M tokens of each kind, or per
// minute of billed audio (GPT-Live). Cached input tokens are priced at the
// cached rate, the rest of the input at the input rate.
type Price struct {
	InputText        float64 `yaml:"input_text"`
	CachedInputText  float64 `yaml:"cached_input_text"`
	OutputText       float64 `yaml:"output_text"`
	InputAudio       float64 `yaml:"input_audio"`
	CachedInputAudio float64 `yaml:"cached_input_audio"`
	OutputAudio      float64 `yaml:"output_audio"`
	PerMinute        float64 `yaml:"per_minute"`
}
