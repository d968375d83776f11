package upstreams

import "time"

// Kind is an upstream's type (the `type` key of an upstreams entry): it
// decides where the credential goes and whether a dial waits for the first
// event.
type Kind string

// Kinds of upstream.
const (
	// KindOpenAI is the OpenAI Realtime API: Authorization: Bearer, and a
	// dial succeeds on session.created.
	KindOpenAI Kind = "openai"
	// KindAzure is Azure OpenAI realtime: the api-key header (or a bearer
	// token from Config.TokenFile), and a dial succeeds on session.created.
	KindAzure Kind = "azure"
	// KindGeneric is any realtime-compatible WebSocket backend: the
	// credential in Authorization, Config.APIKeyHeader or
	// Config.APIKeyQuery; a dial succeeds on the 101.
	KindGeneric Kind = "generic"
	// KindMock is the mock realtime backend (package mock); it is dialed
	// like openai.
	KindMock Kind = "mock"
)

// Kinds returns every Kind, in the order the documentation lists them.
func Kinds() []Kind { return []Kind{KindOpenAI, KindAzure, KindGeneric, KindMock} }

// realtime reports whether a dial succeeds only on the first event (session.created).
func (k Kind) realtime() bool {
	return k == KindOpenAI || k == KindAzure || k == KindMock
}

// Config is one configured backend: an entry of the `upstreams` list of
// tether's configuration, which package config decodes, defaults and
// validates. The keys are a public contract (see the README).
//
// [NewDialer] takes Configs as complete values: package config fills every
// default (the openai url, the api_key_env of openai and azure, dial_timeout,
// max_failures, cooldown, the name); this package restates none of them.
type Config struct {
	// Name labels the upstream in logs, metrics and spans; unique within the
	// list. Config's default: the type, with "-<index>" appended when that
	// is taken.
	Name string `yaml:"name"`
	// Type is the upstream kind: [KindOpenAI] (config's default),
	// [KindAzure], [KindGeneric] or [KindMock].
	Type Kind `yaml:"type"` // openai | azure | generic | mock
	// URL is the ws:// or wss:// address dialed; [NewDialer] requires it.
	// Config's default for openai: config.DefaultOpenAIURL; required in the
	// file for azure and generic; for mock, empty means the built-in mock
	// backend (cmd/tether starts it and fills the URL).
	URL string `yaml:"url"`
	// LiveURL is the GPT-Live endpoint (ws:// or wss://, no query): a
	// GPT-Live session is dialed only to upstreams that have one. Config's
	// defaults: openai config.DefaultOpenAILiveURL; azure the url's host with
	// /openai/v1/live/sessions; mock, when url is empty too, the built-in
	// mock; generic none.
	LiveURL string `yaml:"live_url"`
	// APIKeyEnv names the environment variable holding the API key (read
	// once, by [NewDialer]). Config's default for openai, when APIKeyFile is
	// empty too: config.DefaultOpenAIAPIKeyEnv.
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKeyFile is a file holding the API key, re-read at each dial.
	// At most one of APIKeyEnv and APIKeyFile is set.
	APIKeyFile string `yaml:"api_key_file"`
	// Headers are extra HTTP headers sent on the upstream handshake. Config
	// stores the names in canonical form (X-Api-Version); the headers tether
	// sets itself on the handshake (Host, Connection, Upgrade,
	// Sec-WebSocket-*) are not allowed.
	Headers map[string]string `yaml:"headers"`
	// DialTimeout bounds one dial attempt, including the wait for the first
	// event of realtime upstreams. Config always sets it (a 0 in the file
	// takes config.DefaultDialTimeout); here 0 means no bound of its own:
	// the attempt is bounded by the context given to [Dialer.Dial] alone.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Beta adds `OpenAI-Beta: realtime=v1` for servers that still speak the
	// beta dialect.
	Beta bool `yaml:"beta"`
	// APIKeyHeader (generic) sends the credential in this header instead of
	// `Authorization: Bearer` (e.g. x-goog-api-key).
	APIKeyHeader string `yaml:"api_key_header"`
	// APIKeyQuery (generic) sends the credential as this query parameter
	// (e.g. Gemini Live's "key").
	APIKeyQuery string `yaml:"api_key_query"`
	// TokenFile (azure) holds a bearer token, re-read at each dial (the
	// file workload identity keeps fresh). Alternative to an api-key.
	TokenFile string `yaml:"token_file"`
	// Subprotocols (generic) are offered to the upstream in Sec-WebSocket-Protocol.
	Subprotocols []string `yaml:"subprotocols"`
	// AllowedModels limits the ?model= a client may ask for; empty allows any.
	AllowedModels []string `yaml:"allowed_models"`
	// DefaultModel is used when the client asks for none.
	DefaultModel string `yaml:"default_model"`
	// CARootFile is a PEM bundle of CAs trusted for this upstream (private CAs).
	CARootFile string `yaml:"ca_root_file"`
	// MaxFailures consecutive failed dials put the upstream in cool-down; 0 never does.
	MaxFailures int `yaml:"max_failures"`
	// Cooldown is how long an upstream is skipped after MaxFailures failures.
	Cooldown time.Duration `yaml:"cooldown"`
}
