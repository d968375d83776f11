package upstreams

import (
	"context"
	"encoding/pem"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/upstreams/mock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen records the upgrade requests a mock received.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r.Clone(context.Background()))
}

func (s *seen) last(t *testing.T) *http.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("upstream saw no request")
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// wantSent checks the upstream's handshake r: each header in header and
// each query parameter in query has the value given ("": absent).
func wantSent(t *testing.T, r *http.Request, header, query map[string]string) {
	t.Helper()
	for k, v := range header {
		if got := r.Header.Get(k); got != v {
			t.Errorf("upstream got header %s %q, want %q", k, got, v)
		}
	}
	for k, v := range query {
		if got := r.URL.Query().Get(k); got != v {
			t.Errorf("upstream got query %s=%q, want %q (in %q)", k, got, v, r.URL.RawQuery)
		}
	}
}

func startMock(t *testing.T, key string) (string, *seen) {
	t.Helper()
	sn := &seen{}
	m := mock.New(mock.Options{APIKey: key, OnHandshake: sn.add})
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return "ws://" + addr.String() + "/v1/realtime", sn
}

// statusServer answers every request with status (and Retry-After when set).
func statusServer(t *testing.T, status int, retryAfter string) (string, *seen) {
	t.Helper()
	sn := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sn.add(r)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, "no", status)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/realtime", sn
}

func dial(t *testing.T, d *Dialer, req Request) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, req)
	if c != nil {
		t.Cleanup(func() { c.Net.Close() })
	}
	return c, err
}

func TestOpenAIShape(t *testing.T) {
	url, sn := startMock(t, "sk-canary-openai")
	t.Setenv("TEST_OPENAI_KEY", "sk-canary-openai")
	d, err := NewDialer([]Config{{Name: "oa", Type: KindOpenAI, URL: url, APIKeyEnv: "TEST_OPENAI_KEY",
		Beta: true, DefaultModel: "gpt-realtime-mini", AllowedModels: []string{"gpt-realtime", "gpt-realtime-mini"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(t, d, Request{RawQuery: "foo=bar", Header: http.Header{"Traceparent": {"00-abc"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The default model, the client's query and a forwarded header.
	wantSent(t, sn.last(t),
		map[string]string{"Authorization": "Bearer sk-canary-openai", "OpenAI-Beta": "realtime=v1", "Traceparent": "00-abc"},
		map[string]string{"model": "gpt-realtime-mini", "foo": "bar"})
	if !strings.Contains(string(c.FirstPayload), `"session.created"`) || len(c.Attempts) != 1 || c.Attempts[0].Result != "ok" {
		t.Fatalf("first event %q attempts %+v", c.FirstPayload, c.Attempts)
	}
	if err := d.CheckModel("gpt-4o"); !errors.Is(err, ErrModelNotAllowed) {
		t.Fatalf("CheckModel: %v", err)
	}
	if err := d.CheckModel("gpt-realtime"); err != nil {
		t.Fatal(err)
	}
}

func TestAzureShapes(t *testing.T) {
	url, sn := startMock(t, "")
	t.Setenv("TEST_AZURE_KEY", "azure-canary-key")
	d, err := NewDialer([]Config{{Name: "az", Type: KindAzure, URL: url + "?api-version=ignored", APIKeyEnv: "TEST_AZURE_KEY"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, d, Request{RawQuery: "model=my-deployment"}); err != nil {
		t.Fatal(err)
	}
	wantSent(t, sn.last(t), map[string]string{"api-key": "azure-canary-key", "Authorization": ""},
		map[string]string{"model": "my-deployment", "api-version": "ignored"})
	// Workload identity: a token file, re-read at each dial.
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("token-one\n"), 0o600)
	d2, err := NewDialer([]Config{{Name: "az-wi", Type: KindAzure, URL: url, TokenFile: tokenFile}})
	if err != nil {
		t.Fatal(err)
	}
	dial(t, d2, Request{})
	if got := sn.last(t).Header.Get("Authorization"); got != "Bearer token-one" {
		t.Fatalf("first token %q", got)
	}
	os.WriteFile(tokenFile, []byte("token-two\n"), 0o600)
	dial(t, d2, Request{})
	if got := sn.last(t).Header.Get("Authorization"); got != "Bearer token-two" {
		t.Fatalf("rotated token %q", got)
	}
}

func TestGenericCredentialPlacement(t *testing.T) {
	url, sn := startMock(t, "")
	t.Setenv("TEST_GEN_KEY", "gen-canary")
	for _, tc := range []struct {
		name          string
		header, query string
		// what the upstream must get besides X-Tenant and the subprotocol
		wantHeader, wantQuery map[string]string
	}{
		{"bearer", "", "", map[string]string{"Authorization": "Bearer gen-canary"}, nil},
		{"header", "X-Goog-Api-Key", "", map[string]string{"X-Goog-Api-Key": "gen-canary", "Authorization": ""}, nil},
		{"query", "", "key", map[string]string{"Authorization": ""}, map[string]string{"key": "gen-canary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := Config{Name: "g", Type: KindGeneric, URL: url, APIKeyEnv: "TEST_GEN_KEY",
				APIKeyHeader: tc.header, APIKeyQuery: tc.query,
				Headers: map[string]string{"X-Tenant": "demo"}, Subprotocols: []string{"realtime"}}
			d, err := NewDialer([]Config{u})
			if err != nil {
				t.Fatal(err)
			}
			c, err := dial(t, d, Request{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"X-Tenant": "demo", "Sec-WebSocket-Protocol": "realtime"}
			maps.Copy(want, tc.wantHeader)
			wantSent(t, sn.last(t), want, tc.wantQuery)
			if c.First != nil {
				t.Fatal("generic upstream must not wait for a first event")
			}
		})
	}
}

func TestFailoverAndStatuses(t *testing.T) {
	good, goodSeen := startMock(t, "")
	unauthorized, _ := statusServer(t, http.StatusUnauthorized, "")
	limited, _ := statusServer(t, http.StatusTooManyRequests, "7")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "ws://" + ln.Addr().String() + "/"
	ln.Close()

	d, _ := NewDialer([]Config{
		{Name: "a", Type: KindGeneric, URL: unauthorized},
		{Name: "b", Type: KindGeneric, URL: dead},
		{Name: "c", Type: KindMock, URL: good},
	})
	c, err := dial(t, d, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Name != "c" || len(c.Attempts) != 3 || c.Attempts[0].Result != "auth" || c.Attempts[1].Result != "refused" {
		t.Fatalf("attempts %+v", c.Attempts)
	}
	if goodSeen.count() != 1 {
		t.Fatal("healthy upstream not dialed once")
	}

	d2, _ := NewDialer([]Config{{Name: "a", Type: KindGeneric, URL: unauthorized}, {Name: "l", Type: KindGeneric, URL: limited}})
	_, err = dial(t, d2, Request{})
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests || de.RetryAfter != "7" {
		t.Fatalf("want 429 Retry-After 7, got %v", err)
	}
	d3, _ := NewDialer([]Config{{Name: "l", Type: KindGeneric, URL: limited}, {Name: "a", Type: KindGeneric, URL: unauthorized}})
	_, err = dial(t, d3, Request{})
	if !errors.As(err, &de) || de.Status != http.StatusBadGateway {
		t.Fatalf("our credential failing last must be 502, got %v", err)
	}
}

func TestInBandAuthFailureIsAFailedDial(t *testing.T) {
	url, _ := startMock(t, "the-right-key")
	t.Setenv("TEST_WRONG_KEY", "sk-wrong-key")
	d, _ := NewDialer([]Config{{Name: "oa", Type: KindOpenAI, URL: url, APIKeyEnv: "TEST_WRONG_KEY"}})
	_, err := dial(t, d, Request{})
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusBadGateway || de.Attempts[0].Result != "auth" {
		t.Fatalf("in-band invalid_api_key: %v", err)
	}
	if strings.Contains(err.Error(), "sk-wrong-key") {
		t.Fatal("dial error carries the key")
	}
}

func TestCooldown(t *testing.T) {
	bad, badSeen := statusServer(t, http.StatusInternalServerError, "")
	good, _ := startMock(t, "")
	d, _ := NewDialer([]Config{
		{Name: "bad", Type: KindGeneric, URL: bad, MaxFailures: 2, Cooldown: time.Hour},
		{Name: "good", Type: KindMock, URL: good},
	})
	for range 2 {
		if _, err := dial(t, d, Request{}); err != nil {
			t.Fatal(err)
		}
	}
	if badSeen.count() != 2 || d.list[0].Available(time.Now()) {
		t.Fatalf("bad dialed %d times, available=%v", badSeen.count(), d.list[0].Available(time.Now()))
	}
	c, err := dial(t, d, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if badSeen.count() != 2 || c.Attempts[0].Result != "cooldown" {
		t.Fatalf("upstream in cool-down was dialed: %+v", c.Attempts)
	}
	// When every upstream cools down, they are all tried anyway.
	only, _ := NewDialer([]Config{{Name: "bad", Type: KindGeneric, URL: bad, MaxFailures: 1, Cooldown: time.Hour}})
	dial(t, only, Request{})
	dial(t, only, Request{})
	if badSeen.count() != 4 {
		t.Fatalf("sole upstream in cool-down not retried: %d dials", badSeen.count())
	}
}

func TestCARootFile(t *testing.T) {
	m := mock.New(mock.Options{})
	srv := httptest.NewTLSServer(m)
	t.Cleanup(func() { m.Close(); srv.Close() })
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	url := "wss" + strings.TrimPrefix(srv.URL, "https") + "/v1/realtime"
	d, err := NewDialer([]Config{{Name: "private", Type: KindMock, URL: url, CARootFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, d, Request{}); err != nil {
		t.Fatalf("dial with private CA: %v", err)
	}
	d2, _ := NewDialer([]Config{{Name: "untrusted", Type: KindMock, URL: url}})
	if _, err := dial(t, d2, Request{}); err == nil {
		t.Fatal("dial without the CA succeeded")
	}
}
