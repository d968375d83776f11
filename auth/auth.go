// Package auth authenticates tether's clients at the WebSocket handshake:
// static tokens from a file (plain or sha256:<hex>, re-read when the file
// changes) or HS256 JWTs. A credential may arrive as `Authorization: Bearer`,
// as the subprotocol `tether-token.<token>` (browsers cannot set headers), or
// as `openai-insecure-api-key.<token>` so unmodified OpenAI browser clients
// work. Credentials are compared in constant time and never logged.
package auth

import (
	"errors"
	"net/http"
	"strings"
)

// Mode is how clients authenticate (the auth.mode key).
type Mode string

// Modes.
const (
	// ModeNone accepts every client ([None]).
	ModeNone Mode = "none"
	// ModeToken accepts the bearer tokens listed in a file ([NewTokens]).
	ModeToken Mode = "token"
	// ModeJWT accepts HS256 JWTs signed with a shared secret ([NewJWT]).
	ModeJWT Mode = "jwt"
)

// Modes returns every Mode, in the order the documentation lists them.
func Modes() []Mode { return []Mode{ModeNone, ModeToken, ModeJWT} }

// Subprotocol prefixes that carry a credential.
const (
	ProtoTether = "tether-token."
	ProtoOpenAI = "openai-insecure-api-key."
)

// Errors returned by Authenticate. They say what is wrong without echoing the credential.
var (
	ErrMissing = errors.New("no credential: send Authorization: Bearer <token> or the subprotocol tether-token.<token>")
	ErrInvalid = errors.New("invalid credential")
	ErrExpired = errors.New("credential expired")
)

// Authenticator checks one upgrade request and returns the client identity
// (token label or JWT subject).
type Authenticator interface {
	Authenticate(r *http.Request) (clientID string, err error)
}

// None accepts everyone; the identity is empty (the caller falls back to the remote IP).
type None struct{}

// Authenticate implements Authenticator.
func (None) Authenticate(*http.Request) (string, error) { return "", nil }

// Credential extracts the client's credential from the request: the
// Authorization bearer token first, then a tether-token.* subprotocol, then
// an openai-insecure-api-key.* subprotocol.
func Credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			if tok := strings.TrimSpace(h[7:]); tok != "" {
				return tok, true
			}
		}
	}
	var openai string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			switch {
			case strings.HasPrefix(p, ProtoTether) && len(p) > len(ProtoTether):
				return p[len(ProtoTether):], true
			case strings.HasPrefix(p, ProtoOpenAI) && len(p) > len(ProtoOpenAI) && openai == "":
				openai = p[len(ProtoOpenAI):]
			}
		}
	}
	if openai != "" {
		return openai, true
	}
	return "", false
}
