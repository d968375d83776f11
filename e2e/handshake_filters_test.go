package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherproxy/tether/upstreams/mock"
)

// filterRig is tether (fixture handshake_filters.yaml) in front of a tap in
// front of an in-test mock that records its upgrade requests.
type filterRig struct {
	p   *proc
	hs  *handshakeLog
	tap *tap
}

func newFilterRig(t *testing.T, handshakeTimeout string) *filterRig {
	t.Helper()
	r := &filterRig{hs: &handshakeLog{}}
	_, url := startMock(t, mock.Options{OnHandshake: r.hs.record})
	r.tap, url = startTap(t, url)
	r.p = startTether(t, "handshake_filters.yaml", map[string]string{"UpstreamURL": url, "HandshakeTimeout": handshakeTimeout})
	return r
}

// TestHandshakeRepeatedModel: every model value in the query is checked; a
// query naming the model twice is 400 before any upstream dial, whichever
// value comes first.
func TestHandshakeRepeatedModel(t *testing.T) {
	t.Parallel()
	r := newFilterRig(t, "5s")
	for _, q := range []string{
		"model=gpt-realtime&model=gpt-4o",
		"model=gpt-4o&model=gpt-realtime",
		"model=gpt-realtime&Model=gpt-4o",
		"model=gpt-4o",
	} {
		a := rawUpgrade(t, r.p.Listen, "/v1/realtime?"+q, nil)
		if a.Status != http.StatusBadRequest {
			t.Errorf("?%s: HTTP %d %s, want 400", q, a.Status, a.Body)
		}
	}
	if n, c := r.hs.count(), r.tap.count(); n != 0 || c != 0 {
		t.Fatalf("the upstream saw %d upgrade(s) (%d connections) for refused handshakes", n, c)
	}
	if v, _ := r.p.metric("tether_handshake_rejections_total", `reason="model_not_allowed"`); v != 4 {
		t.Errorf(`tether_handshake_rejections_total{reason="model_not_allowed"} = %v, want 4`, v)
	}
	c := dialClient(t, r.p.Listen, clientOpts{Path: "/v1/realtime?model=gpt-realtime"})
	c.WaitEvent("session.created", stepTimeout)
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
}

// TestHandshakeClientCannotSteerUpstream: the configured URL's parameters
// win over the client's, credential parameters are dropped whatever their
// case, and the client's OpenAI-Organization / OpenAI-Project never reach
// the upstream, while the upstream's configured OpenAI-Project does.
func TestHandshakeClientCannotSteerUpstream(t *testing.T) {
	t.Parallel()
	r := newFilterRig(t, "5s")
	path := "/v1/realtime?model=gpt-realtime&api-version=2020-01-01&DEPLOYMENT=cheap&deployment=cheap" +
		"&API-KEY=sk-leak-one&Api-Key=sk-leak-two&KEY=sk-leak-three&foo=bar"
	hdr := http.Header{}
	hdr["openai-organization"] = []string{"org_client"}
	hdr["OPENAI-PROJECT"] = []string{"proj_client"}
	c := dialClient(t, r.p.Listen, clientOpts{Path: path, Header: hdr})
	c.WaitEvent("session.created", stepTimeout)
	reqs := r.hs.all()
	if len(reqs) != 1 {
		t.Fatalf("the upstream saw %d upgrades, want 1", len(reqs))
	}
	up := reqs[0]
	if strings.Contains(up.URL.RawQuery, "leak") {
		t.Errorf("client credential parameter reached the upstream: %q", up.URL.RawQuery)
	}
	q := up.URL.Query()
	want := map[string]string{"api-version": "2025-04-01", "deployment": "prod", "model": "gpt-realtime", "foo": "bar"}
	for k, v := range want {
		if got := q[k]; len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s = %v, want [%s] (query %q)", k, got, v, up.URL.RawQuery)
		}
	}
	if len(q) != len(want) {
		t.Errorf("upstream query %q, want exactly %v", up.URL.RawQuery, want)
	}
	if v := up.Header.Values("OpenAI-Organization"); len(v) != 0 {
		t.Errorf("client OpenAI-Organization reached the upstream: %v", v)
	}
	if v := up.Header.Values("OpenAI-Project"); len(v) != 1 || v[0] != "proj_tether" {
		t.Errorf("upstream OpenAI-Project = %v, want the configured [proj_tether] only", v)
	}
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	if strings.Contains(r.p.stderr.String(), "sk-leak") {
		t.Error("a client credential parameter reached tether's log")
	}
}

// TestHandshakeIdleConnectionsClosed: 300 keep-alive connections that each
// sent one non-upgrade request and then sit idle are all closed by tether
// within handshake_timeout + 1 s, as is a connection that never finishes its
// request headers; none counts as a session, and a WebSocket session opened
// before them outlives them all.
func TestHandshakeIdleConnectionsClosed(t *testing.T) {
	t.Parallel()
	const (
		handshakeTimeout = time.Second
		conns            = 300
	)
	r := newFilterRig(t, "1s")
	sess := dialClient(t, r.p.Listen, clientOpts{Path: "/v1/realtime?model=gpt-realtime"})
	sess.WaitEvent("session.created", stepTimeout)

	type result struct {
		i   int
		d   time.Duration // from the end of the answer to tether's close
		err error
	}
	results := make(chan result, conns+1)
	var wg sync.WaitGroup
	watch := func(i int, conn net.Conn, rd io.Reader, since time.Time) {
		defer wg.Done()
		defer conn.Close()
		_ = conn.SetReadDeadline(since.Add(handshakeTimeout + 3*time.Second))
		_, err := io.Copy(io.Discard, rd) // nil once tether closes
		results <- result{i, time.Since(since), err}
	}
	for i := range conns {
		conn, err := net.DialTimeout("tcp", r.p.Listen, stepTimeout)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_ = conn.SetDeadline(time.Now().Add(stepTimeout))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: tether\r\n\r\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("connection %d: answer %d closes the connection; the test needs keep-alive", i, resp.StatusCode)
		}
		wg.Add(1)
		go watch(i, conn, br, time.Now())
	}
	partial, err := net.DialTimeout("tcp", r.p.Listen, stepTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(partial, "GET /v1/realtime HTTP/1.1\r\nHost: tether\r\nUpgrade: websocket\r\n") // never finished
	wg.Add(1)
	go watch(conns, partial, partial, time.Now())
	wg.Wait()
	close(results)
	late, worst := 0, time.Duration(0)
	for res := range results {
		worst = max(worst, res.d)
		if res.err != nil || res.d > handshakeTimeout+time.Second {
			if late++; late <= 5 {
				what := "idle keep-alive connection"
				if res.i == conns {
					what = "unfinished request headers"
				}
				t.Errorf("%s %d: closed after %v (%v), want within %v", what, res.i, res.d, res.err, handshakeTimeout+time.Second)
			}
		}
	}
	t.Logf("%d idle connections and one unfinished request: slowest closed after %v; %d late", conns, worst, late)
	if v, _ := r.p.metric("tether_sessions_active"); v != 1 {
		t.Errorf("tether_sessions_active = %v, want 1 (idle connections are no sessions)", v)
	}
	// The upgraded session is older than the handshake timeout several times over and still relays.
	sess.Send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "still here"}})
	sess.WaitEvent("session.updated", stepTimeout)
	sess.SendClose(1000, "")
	sess.WaitClose(stepTimeout)
}
