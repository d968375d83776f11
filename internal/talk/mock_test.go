package talk

import (
	"bytes"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherproxy/tether/upstreams/mock"
)

// TestAgainstMockUpstream runs a turn against tether's built-in mock
// backend, the one the chart's default install answers with.
func TestAgainstMockUpstream(t *testing.T) {
	var authz atomic.Value // string; set on the mock's handshake goroutine
	srv := mock.New(mock.Options{
		APIKey:      "sk-test",
		OnHandshake: func(r *http.Request) { authz.Store(r.Header.Get("Authorization")) },
	})
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "ws://" + addr.String() + "/v1/realtime?model=gpt-realtime"

	h := http.Header{}
	h.Set("Authorization", "Bearer sk-test")
	var out bytes.Buffer
	res, err := run(t.Context(), Options{URL: url, Headers: h, Timeout: 10 * time.Second, Out: &out})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if got, _ := authz.Load().(string); got != "Bearer sk-test" {
		t.Errorf("mock saw Authorization %q", got)
	}
	if !strings.HasPrefix(res.SessionID, "sess_") || res.Status != "completed" {
		t.Errorf("session %q status %q", res.SessionID, res.Status)
	}
	// The mock answers with audio built from the committed audio.
	if res.AudioBytes == 0 || res.TotalTokens == 0 {
		t.Errorf("audio %d bytes, %d tokens", res.AudioBytes, res.TotalTokens)
	}

	// A wrong key: the mock reports invalid_api_key in-band, as OpenAI does.
	h.Set("Authorization", "Bearer sk-wrong")
	err = Run(t.Context(), Options{URL: url, Headers: h, Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "invalid_api_key") {
		t.Errorf("wrong key: err = %v, want invalid_api_key", err)
	}
}
