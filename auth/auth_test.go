package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func req(auth string, protocols ...string) *http.Request {
	r, _ := http.NewRequest("GET", "http://x/v1/realtime", nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	if len(protocols) > 0 {
		r.Header.Set("Sec-WebSocket-Protocol", strings.Join(protocols, ", "))
	}
	return r
}

func TestCredentialSources(t *testing.T) {
	for _, tc := range []struct {
		r    *http.Request
		want string
		ok   bool
	}{
		{req("Bearer abc"), "abc", true},
		{req("bearer   abc  "), "abc", true},
		{req("Basic abc"), "", false},
		{req("", "realtime", "tether-token.t1"), "t1", true},
		{req("", "realtime", "openai-insecure-api-key.ek_1"), "ek_1", true},
		{req("", "openai-insecure-api-key.ek_1", "tether-token.t2"), "t2", true}, // tether token wins
		{req("", "realtime", "tether-token."), "", false},
		{req(""), "", false},
	} {
		got, ok := Credential(tc.r)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%v: got %q %v, want %q %v", tc.r.Header, got, ok, tc.want, tc.ok)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	sum := sha256.Sum256([]byte("hashed-secret"))
	path := writeFile(t, dir, "tokens", "# comment\nplain-secret app-a\n\nsha256:"+hex.EncodeToString(sum[:])+" app-b\n")
	tok, err := NewTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    *http.Request
		id   string
		want error
	}{
		{req("Bearer plain-secret"), "app-a", nil},
		{req("", "realtime", "tether-token.hashed-secret"), "app-b", nil},
		{req("", "realtime", "openai-insecure-api-key.plain-secret"), "app-a", nil},
		{req("Bearer wrong"), "", ErrInvalid},
		{req(""), "", ErrMissing},
	} {
		id, err := tok.Authenticate(tc.r)
		if id != tc.id || !errors.Is(err, tc.want) {
			t.Errorf("got %q %v, want %q %v", id, err, tc.id, tc.want)
		}
	}
	// Rotation: the file changes, the old token stops working.
	writeFile(t, dir, "tokens", "new-secret app-c\n")
	future := time.Now().Add(2 * time.Second)
	_ = os.Chtimes(path, future, future)
	tok.list.w.mu.Lock()
	tok.list.w.checked = time.Time{}
	tok.list.w.mu.Unlock()
	if _, err := tok.Authenticate(req("Bearer plain-secret")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("old token after rotation: %v", err)
	}
	if id, err := tok.Authenticate(req("Bearer new-secret")); err != nil || id != "app-c" {
		t.Fatalf("new token: %q %v", id, err)
	}
	if _, err := NewTokens(writeFile(t, dir, "empty", "# nothing\n")); err == nil {
		t.Fatal("empty tokens file accepted")
	}
	if _, err := NewTokens(writeFile(t, dir, "bad", "sha256:zz\n")); err == nil {
		t.Fatal("bad sha256 accepted")
	}
}

func TestJWT(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	path := writeFile(t, t.TempDir(), "secret", string(secret)+"\n")
	j, err := NewJWT(path, "issuer-1", "tether")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	j.Now = func() time.Time { return now }
	good := map[string]any{"sub": "caller-7", "iss": "issuer-1", "aud": "tether", "exp": now.Unix() + 60, "nbf": now.Unix() - 60}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		token string
		id    string
		want  error
	}{
		{"valid", SignHS256(good, secret), "caller-7", nil},
		{"aud array", SignHS256(with("aud", []string{"x", "tether"}), secret), "caller-7", nil},
		{"expired within leeway", SignHS256(with("exp", now.Unix()-10), secret), "caller-7", nil},
		{"expired", SignHS256(with("exp", now.Unix()-120), secret), "", ErrExpired},
		{"not yet valid", SignHS256(with("nbf", now.Unix()+120), secret), "", ErrInvalid},
		{"wrong issuer", SignHS256(with("iss", "other"), secret), "", ErrInvalid},
		{"wrong audience", SignHS256(with("aud", "other"), secret), "", ErrInvalid},
		{"no subject", SignHS256(with("sub", nil), secret), "", ErrInvalid},
		{"wrong secret", SignHS256(good, []byte("another-secret-another-secret-xx")), "", ErrInvalid},
		{"alg none", "eyJhbGciOiJub25lIn0." + strings.Split(SignHS256(good, secret), ".")[1] + ".", "", ErrInvalid},
		{"garbage", "a.b.c", "", ErrInvalid},
	} {
		id, err := j.Authenticate(req("Bearer " + tc.token))
		if id != tc.id || !errors.Is(err, tc.want) {
			t.Errorf("%s: got %q %v, want %q %v", tc.name, id, err, tc.id, tc.want)
		}
	}
	if _, err := NewJWT(writeFile(t, t.TempDir(), "short", "short"), "", ""); err == nil {
		t.Fatal("short secret accepted")
	}
}

// FuzzCredential: any header values parse without panic, and a found
// credential is a substring of the request.
func FuzzCredential(f *testing.F) {
	f.Add("Bearer abc", "realtime, tether-token.x")
	f.Add("", "openai-insecure-api-key.ek_1,openai-beta.realtime-v1")
	f.Add("bearer ", ",,,tether-token.")
	f.Fuzz(func(t *testing.T, authz, protos string) {
		r := req("")
		r.Header["Authorization"] = []string{authz}
		r.Header["Sec-WebSocket-Protocol"] = []string{protos}
		cred, ok := Credential(r)
		if ok && (cred == "" || !strings.Contains(authz+protos, cred)) {
			t.Fatalf("credential %q not from the request", cred)
		}
	})
}

// FuzzVerifyHS256: arbitrary tokens never panic and never verify without the secret.
func FuzzVerifyHS256(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	f.Add(SignHS256(map[string]any{"sub": "a"}, secret))
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("...")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := VerifyHS256(tok, secret, time.Now())
		if err == nil && c == nil {
			t.Fatal("nil claims without error")
		}
		if err == nil && tok != SignHS256Raw(tok, secret) {
			t.Fatalf("token verified with a signature we did not make: %q", tok)
		}
	})
}

// FuzzTokensFile: any file content parses or errors, never panics.
func FuzzTokensFile(f *testing.F) {
	f.Add([]byte("a\nsha256:" + strings.Repeat("0", 64) + " label\n# c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseTokens(data)
		if err == nil && len(entries) == 0 {
			t.Fatal("no entries without error")
		}
	})
}
