// Package redact removes credentials from text that crosses a trust boundary:
// close reasons and error events relayed to clients, log fields, dial errors.
package redact

import (
	"net/url"
	"strings"
)

// Redactor removes secrets from text that crosses a trust boundary (close
// reasons relayed to the client, log fields). It knows the configured
// credentials by value and recognises OpenAI-style key shapes.
type Redactor struct {
	secrets []string
	// more returns secrets that change at run time (keys re-read from files);
	// called at each Redact, so it must be cheap (no I/O): Redact runs for
	// close reasons and upstream error events, inside the relay.
	more func() []string
}

// WithDynamic returns r also redacting whatever more returns at each call
// (e.g. an api_key_file read again after rotation).
func (r *Redactor) WithDynamic(more func() []string) *Redactor {
	return &Redactor{secrets: r.secrets, more: more}
}

// New returns a Redactor for the given secret values; empty values are ignored.
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		if len(s) >= 4 {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

const redacted = "[redacted]"

// keyPrefixes start tokens that are credentials whatever their value.
var keyPrefixes = []string{"Bearer ", "bearer ", "openai-insecure-api-key.", "tether-token.", "api-key=", "key=", "sk-", "ek_"}

// Redact returns s with every known secret and every key-shaped token replaced.
func (r *Redactor) Redact(s string) string {
	if r != nil {
		secrets := r.secrets
		if r.more != nil {
			secrets = append(secrets[:len(secrets):len(secrets)], r.more()...)
		}
		for _, sec := range secrets {
			if len(sec) < 4 {
				continue
			}
			if strings.Contains(s, sec) {
				s = strings.ReplaceAll(s, sec, redacted)
			}
			// The same key as it appears in a URL query string.
			if esc := url.QueryEscape(sec); esc != sec && strings.Contains(s, esc) {
				s = strings.ReplaceAll(s, esc, redacted)
			}
		}
	}
	for _, p := range keyPrefixes {
		s = redactPrefixed(s, p)
	}
	return s
}

// redactPrefixed replaces the token following each occurrence of prefix
// (up to the next separator) with "[redacted]", keeping the prefix for context.
func redactPrefixed(s, prefix string) string {
	i := strings.Index(s, prefix)
	if i < 0 {
		return s
	}
	var b strings.Builder
	for i >= 0 {
		// Only match at a token start, so "task-" does not look like "sk-".
		if i > 0 && isTokenByte(s[i-1]) && prefix[len(prefix)-1] != ' ' && prefix[len(prefix)-1] != '=' {
			b.WriteString(s[:i+len(prefix)])
			s = s[i+len(prefix):]
			i = strings.Index(s, prefix)
			continue
		}
		b.WriteString(s[:i+len(prefix)])
		s = s[i+len(prefix):]
		j := 0
		for j < len(s) && isTokenByte(s[j]) {
			j++
		}
		if j > 0 {
			b.WriteString(redacted)
		}
		s = s[j:]
		i = strings.Index(s, prefix)
	}
	b.WriteString(s)
	return b.String()
}

func isTokenByte(c byte) bool {
	return c == '-' || c == '_' || c == '.' || c == '*' || c == '~' || c == '+' || c == '/' || c == '=' ||
		(c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
