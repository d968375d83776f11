package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Leeway tolerates clock skew on exp and nbf.
const Leeway = 30 * time.Second

// JWT accepts HS256 tokens signed with the secret in a file (re-read when
// it changes); iss and aud are checked when configured, exp and nbf always
// when present. The identity is the `sub` claim.
type JWT struct {
	secret   *fileValue[[]byte]
	Issuer   string
	Audience string
	// Now returns the current time (tests).
	Now func() time.Time
}

// NewJWT loads the secret from path.
func NewJWT(path, issuer, audience string) (*JWT, error) {
	secret, err := newFileValue("hmac_secret_file", path, func(b []byte, _ bool) ([]byte, error) {
		b = bytes.TrimSpace(b)
		if len(b) < 32 {
			return nil, errors.New("hmac_secret_file: secret shorter than 32 bytes")
		}
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return &JWT{secret: secret, Issuer: issuer, Audience: audience, Now: time.Now}, nil
}

// Claims are the registered claims tether checks.
type Claims struct {
	Subject   string   `json:"sub"`
	Issuer    string   `json:"iss"`
	Audience  audience `json:"aud"`
	ExpiresAt *int64   `json:"exp"`
	NotBefore *int64   `json:"nbf"`
}

// audience accepts the string or array form of "aud".
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// Authenticate implements Authenticator.
func (j *JWT) Authenticate(r *http.Request) (string, error) {
	cred, ok := Credential(r)
	if !ok {
		return "", ErrMissing
	}
	c, err := VerifyHS256(cred, j.secret.get(), j.Now())
	if err != nil {
		return "", err
	}
	if j.Issuer != "" && c.Issuer != j.Issuer {
		return "", ErrInvalid
	}
	if j.Audience != "" {
		found := false
		for _, a := range c.Audience {
			if a == j.Audience {
				found = true
			}
		}
		if !found {
			return "", ErrInvalid
		}
	}
	if c.Subject == "" {
		return "", ErrInvalid
	}
	return c.Subject, nil
}

var b64 = base64.RawURLEncoding

// VerifyHS256 checks a compact JWS signed with HMAC-SHA256 and its time
// claims at now, and returns its claims. Only alg HS256 is accepted ("none"
// and asymmetric algorithms are refused).
func VerifyHS256(token string, secret []byte, now time.Time) (*Claims, error) {
	if len(secret) == 0 || len(token) > 8192 {
		return nil, ErrInvalid
	}
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	if first < 0 || first == last {
		return nil, ErrInvalid
	}
	hdrB, err := b64.DecodeString(token[:first])
	if err != nil {
		return nil, ErrInvalid
	}
	var hdr struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if json.Unmarshal(hdrB, &hdr) != nil || hdr.Alg != "HS256" {
		return nil, ErrInvalid
	}
	sig, err := b64.DecodeString(token[last+1:])
	if err != nil {
		return nil, ErrInvalid
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(token[:last]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, ErrInvalid
	}
	payload, err := b64.DecodeString(token[first+1 : last])
	if err != nil {
		return nil, ErrInvalid
	}
	var c Claims
	if json.Unmarshal(payload, &c) != nil {
		return nil, ErrInvalid
	}
	if c.ExpiresAt != nil && now.After(time.Unix(*c.ExpiresAt, 0).Add(Leeway)) {
		return nil, ErrExpired
	}
	if c.NotBefore != nil && now.Add(Leeway).Before(time.Unix(*c.NotBefore, 0)) {
		return nil, ErrInvalid
	}
	return &c, nil
}

// SignHS256 creates a token (tests and tooling).
func SignHS256(claims map[string]any, secret []byte) string {
	h := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	p, _ := json.Marshal(claims)
	s := h + "." + b64.EncodeToString(p)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(s))
	return s + "." + b64.EncodeToString(mac.Sum(nil))
}
