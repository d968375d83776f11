package redact

import (
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	r := New("sk-proj-SECRETSECRET", "topsecret-token")
	for in, want := range map[string]string{
		"Incorrect API key provided: sk-proj-SECRETSECRET.": "Incorrect API key provided: [redacted].",
		"bad key sk-abc123 here":                            "bad key sk-[redacted] here",
		"Bearer ek_12345":                                   "Bearer [redacted]",
		"token topsecret-token leaked":                      "token [redacted] leaked",
		"task-force is fine":                                "task-force is fine",
		"wss://x/?api-key=abc&x=1":                          "wss://x/?api-key=[redacted]&x=1",
		"escaped sk-proj-SECRETSECRET%2B":                   "escaped [redacted]%2B",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactorDynamic(t *testing.T) {
	key := "rotated-key-1"
	r := New("static-key").WithDynamic(func() []string { return []string{key} })
	if got := r.Redact("static-key rotated-key-1"); got != "[redacted] [redacted]" {
		t.Errorf("Redact = %q", got)
	}
	key = "rotated-key-2"
	if got := r.Redact("rotated-key-2"); got != "[redacted]" {
		t.Errorf("after rotation: %q", got)
	}
}

func TestURL(t *testing.T) {
	const secret = "s3cr3t"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "wss://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime"},
		{"model kept", "wss://api.openai.com/v1/realtime?model=gpt-realtime", "wss://api.openai.com/v1/realtime?model=gpt-realtime"},
		{"user info", "https://user:" + secret + "@otel:4318/", "https://otel:4318/"},
		{"key query", "http://otel:4318/v1/traces?key=" + secret, "http://otel:4318/v1/traces?key=REDACTED"},
		{"azure", "wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=d&api-key=" + secret,
			"wss://r.openai.azure.com/openai/realtime?api-key=REDACTED&api-version=2025-04-01-preview&deployment=d"},
		{"any parameter", "ws://h/p?sig=" + secret + "&Model=m", "ws://h/p?Model=m&sig=REDACTED"},
		{"fragment", "ws://h/p#" + secret, "ws://h/p"},
		{"bare host port", "collector:4317", "collector:4317"},
		{"bare ip port", "10.0.0.1:4317", "10.0.0.1:4317"},
		{"bare with query", "collector:4317?token=" + secret, "collector:4317?token=REDACTED"},
		{"unparsable", "ws://a b:%zz/?key=" + secret, "(unparsable URL)"},
		{"unparsable with user info", "redis://u:" + secret + "@[::1", "(unparsable URL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := URL(tc.in)
			if got != tc.want {
				t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, secret) {
				t.Errorf("URL(%q) = %q keeps the secret", tc.in, got)
			}
		})
	}
}
