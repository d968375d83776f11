package proxy

import "github.com/tetherproxy/tether/internal/redact"

// Redactor removes secrets from close reasons and error events relayed from
// the upstream (see package redact).
type Redactor = redact.Redactor

// NewRedactor returns a Redactor for the given secret values.
func NewRedactor(secrets ...string) *Redactor { return redact.New(secrets...) }
