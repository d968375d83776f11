package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// browserTurnTimeout bounds one page's navigation and voice turn; the page
// gives up on its own a little earlier (browserPageTimeout) and reports
// what it saw.
const (
	browserTurnTimeout = 60 * time.Second
	browserPageTimeout = 45 * time.Second
)

// The tone the page renders with the Web Audio API (testdata/browser/index.html).
const (
	toneSamples = 12000 // 0.5 s at 24 kHz
	toneHz      = 440
)

// browserUpstreamKey is tether's own key for the upstream; the browser
// never has it.
const browserUpstreamKey = "E2Ebrowser0upstream4b1f9c2d7e6a"

// TestBrowserRealtime puts a real browser on tether's browser path: headless
// Chromium, started and stopped by the test and driven over the DevTools
// protocol, loads a page from an in-test HTTP server that opens
//
//	new WebSocket("ws://.../v1/realtime?model=gpt-realtime",
//	              ["realtime", "openai-insecure-api-key." + TOKEN])
//
// to the tether binary (auth.mode token: that subprotocol is what admits the
// page; server.allowed_origins holds the page's origin) and runs a voice
// turn with a 440 Hz tone rendered by an OfflineAudioContext to 24 kHz
// PCM16. The in-test mock answers with audio deltas built from the committed
// audio, so the page must get the tone back byte for byte.
//
//   - ws: the turn completes; tether answered the subprotocol "realtime"; the
//     token appears in nothing the page received, nor upstream, nor in
//     tether's log.
//   - origin_refused: the same page from an origin not in
//     server.allowed_origins gets 403, the page sees the WebSocket fail, and
//     the upstream is never dialed.
//   - token_refused (the control): from the allowed origin with a wrong
//     token the page gets 401, and again no upstream dial.
//   - wss: the page served over https, tether serving wss:// (tls.mode
//     files) with a leaf from a test CA that Chromium trusts by its key's
//     SPKI hash (--ignore-certificate-errors-spki-list, that key only); the
//     same turn and checks as ws.
//
// Without Chromium it is skipped, unless TETHER_REQUIRE_CHROMIUM is set (CI),
// when it fails.
func TestBrowserRealtime(t *testing.T) {
	t.Parallel()
	start := time.Now()

	ca := testkit.NewCA(t)
	leaf := ca.Issue(t, "127.0.0.1", "localhost")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	leaf.Write(t, certFile, keyFile)
	spki := sha256.Sum256(leaf.Leaf.RawSubjectPublicKeyInfo)
	b := startChromium(t, "--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(spki[:]))
	launched := time.Since(start)

	// The browser app's tether token, in the tokens file as its SHA-256 with
	// a label.
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	token := "tbr" + hex.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	tokensFile := filepath.Join(dir, "tokens")
	testkit.WriteFile(t, tokensFile, []byte("sha256:"+hex.EncodeToString(sum[:])+" browser-app\n"))
	protocols := []string{"realtime", "openai-insecure-api-key." + token}

	pageOrigin := servePage(t, nil)
	otherOrigin := servePage(t, nil)
	keyPair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	httpsOrigin := servePage(t, &keyPair)

	timings := map[string]time.Duration{}
	var order []string
	run := func(name string, f func(t *testing.T)) {
		s := time.Now()
		t.Run(name, f)
		timings[name] = time.Since(s)
		order = append(order, name)
	}

	run("ws", func(t *testing.T) {
		r := startBrowserRig(t, tokensFile, pageOrigin, "", "")
		wsURL := "ws://" + r.p.Listen + "/v1/realtime?model=gpt-realtime"
		pg := b.newPage(t)
		rep := pg.turn(t, pageOrigin+"/", wsURL, protocols)
		checkBrowserTurn(t, r, pg, rep, pageOrigin, wsURL, token)
	})

	run("origin_refused", func(t *testing.T) {
		r := startBrowserRig(t, tokensFile, pageOrigin, "", "")
		wsURL := "ws://" + r.p.Listen + "/v1/realtime?model=gpt-realtime"
		pg := b.newPage(t)
		rep := pg.turn(t, otherOrigin+"/", wsURL, protocols)
		checkBrowserRefused(t, r, pg, rep, otherOrigin, http.StatusForbidden, "origin", "Unexpected response code: 403")
		checkTokenNotLogged(t, r.p, token)
	})

	// The control: from the allowed origin, a wrong token is what keeps
	// the page out.
	run("token_refused", func(t *testing.T) {
		r := startBrowserRig(t, tokensFile, pageOrigin, "", "")
		wsURL := "ws://" + r.p.Listen + "/v1/realtime?model=gpt-realtime"
		pg := b.newPage(t)
		rep := pg.turn(t, pageOrigin+"/", wsURL, []string{"realtime", "openai-insecure-api-key.tbr-not-a-token"})
		// A 401 with WWW-Authenticate is reported by Chromium in its
		// own words.
		checkBrowserRefused(t, r, pg, rep, pageOrigin, http.StatusUnauthorized, "unauthorized",
			"HTTP Authentication failed; no valid credentials available")
	})

	run("wss", func(t *testing.T) {
		r := startBrowserRig(t, tokensFile, httpsOrigin, certFile, keyFile)
		wsURL := "wss://" + r.p.Listen + "/v1/realtime?model=gpt-realtime"
		pg := b.newPage(t)
		rep := pg.turn(t, httpsOrigin+"/", wsURL, protocols)
		checkBrowserTurn(t, r, pg, rep, httpsOrigin, wsURL, token)
	})

	var parts []string
	for _, name := range order {
		parts = append(parts, fmt.Sprintf("%s %v", name, timings[name].Round(time.Millisecond)))
	}
	t.Logf("browser test: %v in all (Chromium start %v; %s)", time.Since(start).Round(time.Millisecond),
		launched.Round(time.Millisecond), strings.Join(parts, ", "))
}

// browserRig is tether (fixture browser.yaml) in front of an in-test mock
// that records its upgrades.
type browserRig struct {
	p  *proc
	hs *handshakeLog
}

// startBrowserRig starts the mock and tether allowing origin; with certFile
// tether serves wss://.
func startBrowserRig(t *testing.T, tokensFile, origin, certFile, keyFile string) *browserRig {
	t.Helper()
	r := &browserRig{hs: &handshakeLog{}}
	_, url := startMock(t, mock.Options{APIKey: browserUpstreamKey, OnHandshake: r.hs.record})
	origins, _ := json.Marshal([]string{origin})
	r.p = startTether(t, "browser.yaml", map[string]string{
		"UpstreamURL":    url,
		"AllowedOrigins": string(origins),
		"TokensFile":     tokensFile,
		"CertFile":       certFile,
		"KeyFile":        keyFile,
	}, "E2E_UPSTREAM_KEY="+browserUpstreamKey)
	if certFile != "" {
		waitLog(t, r.p, stepTimeout, "tls certificate loaded")
	}
	return r
}

// servePage serves testdata/browser/index.html at / on a new loopback
// listener (https with cert) and returns the origin.
func servePage(t *testing.T, cert *tls.Certificate) string {
	t.Helper()
	html, err := os.ReadFile(filepath.Join("testdata", "browser", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if cert != nil {
		scheme = "https"
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/":
			case "/favicon.ico":
				w.WriteHeader(http.StatusNoContent)
				return
			default:
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(html)
		}),
		ReadHeaderTimeout: stepTimeout,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return scheme + "://" + ln.Addr().String()
}

// pageReport is what tetherTurn in the page resolves with.
type pageReport struct {
	URL            string         `json:"url"`
	Opened         bool           `json:"opened"`
	Error          bool           `json:"error"`
	Protocol       *string        `json:"protocol"`
	Extensions     *string        `json:"extensions"`
	Types          []string       `json:"types"`
	Messages       []string       `json:"messages"`
	Sent           string         `json:"sent"`
	SentBytes      int            `json:"sentBytes"`
	Received       string         `json:"received"`
	ReceivedBytes  int            `json:"receivedBytes"`
	Deltas         int            `json:"deltas"`
	ResponseStatus *string        `json:"responseStatus"`
	Errors         []string       `json:"errors"`
	TimedOut       bool           `json:"timedOut"`
	Phases         map[string]int `json:"phases"`
	Close          *struct {
		Code     int    `json:"code"`
		Reason   string `json:"reason"`
		WasClean bool   `json:"wasClean"`
	} `json:"close"`
}

// turn loads pageURL and runs tetherTurn(wsURL, protocols) in it.
func (p *page) turn(t *testing.T, pageURL, wsURL string, protocols []string) pageReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTurnTimeout)
	defer cancel()
	if err := p.navigate(ctx, pageURL); err != nil {
		t.Fatalf("load %s: %v\n%s", pageURL, err, p.consoleLog())
	}
	u, _ := json.Marshal(wsURL)
	protos, _ := json.Marshal(protocols)
	var rep pageReport
	s := time.Now()
	if err := p.eval(ctx, fmt.Sprintf("tetherTurn(%s, %s, %d)", u, protos, browserPageTimeout.Milliseconds()), &rep); err != nil {
		t.Fatalf("tetherTurn in %s: %v\n%s", pageURL, err, p.consoleLog())
	}
	t.Logf("page %s -> %s: %v; opened %v, %d messages, %d audio bytes in %d deltas, close %+v; page timeline (ms) %v",
		pageURL, wsURL, time.Since(s).Round(time.Millisecond), rep.Opened, len(rep.Messages), rep.ReceivedBytes, rep.Deltas, rep.Close, rep.Phases)
	if rep.TimedOut {
		t.Fatalf("the page's turn timed out after %v; event types %v\n%s", browserPageTimeout, rep.Types, p.consoleLog())
	}
	return rep
}

// checkBrowserTurn asserts a completed voice turn and that the token stayed
// on the browser's request.
func checkBrowserTurn(t *testing.T, r *browserRig, pg *page, rep pageReport, origin, wsURL, token string) {
	t.Helper()
	checkPageEvents(t, pg, rep, wsURL)
	checkToneEchoed(t, rep)
	if rep.Close == nil || rep.Close.Code != 1000 {
		t.Errorf("close %+v, want 1000 (the page's own close, echoed)", rep.Close)
	}
	respHeaders, frames := checkBrowserHandshake(t, pg, rep, origin, token)
	checkTokenConfined(t, r, rep, respHeaders, frames, token)

	testkit.WaitFor(t, stepTimeout, `tether_sessions_total{reason="client_closed"} 1`, func() bool {
		n, _ := r.p.metric("tether_sessions_total", `reason="client_closed"`)
		return n == 1
	})
	if n, _ := r.p.metric("tether_responses_total", `status="completed"`); n != 1 {
		t.Errorf(`tether_responses_total{status="completed"} = %v, want 1`, n)
	}
	if n, _ := r.p.metric("tether_handshake_rejections_total"); n != 0 {
		t.Errorf("tether_handshake_rejections_total = %v, want 0", n)
	}
}

// checkPageEvents asserts what the page's WebSocket reported: it opened
// with the subprotocol realtime and no extension, got no error and every
// event of a turn, and the response completed.
func checkPageEvents(t *testing.T, pg *page, rep pageReport, wsURL string) {
	t.Helper()
	if !rep.Opened {
		t.Fatalf("the WebSocket to %s did not open: close %+v\n%s", wsURL, rep.Close, pg.consoleLog())
	}
	if rep.Protocol == nil || *rep.Protocol != "realtime" {
		t.Errorf("ws.protocol = %v, want realtime", deref(rep.Protocol))
	}
	if rep.Extensions == nil || *rep.Extensions != "" {
		t.Errorf("ws.extensions = %v, want none", deref(rep.Extensions))
	}
	if len(rep.Errors) != 0 {
		t.Errorf("the page got errors: %v", rep.Errors)
	}
	for _, want := range []string{"session.created", "session.updated", "input_audio_buffer.committed",
		"response.created", "response.output_audio.delta", "response.done"} {
		if !contains(rep.Types, want) {
			t.Errorf("the page never got %s; it got %v", want, rep.Types)
		}
	}
	if rep.ResponseStatus == nil || *rep.ResponseStatus != "completed" {
		t.Errorf("response.done status %v, want completed", deref(rep.ResponseStatus))
	}
}

// checkToneEchoed asserts that the tone the page sent is what Web Audio
// rendered, 0.5 s of a half-scale 440 Hz sine, and that the page received
// exactly it back (the mock answers with the committed audio).
func checkToneEchoed(t *testing.T, rep pageReport) {
	t.Helper()
	sent, err := base64.StdEncoding.DecodeString(rep.Sent)
	if err != nil || len(sent) != 2*toneSamples || rep.SentBytes != len(sent) {
		t.Fatalf("the page sent %d bytes (%v), want %d bytes of PCM16", len(sent), err, 2*toneSamples)
	}
	peak, crossings := toneStats(sent)
	if peak < 15500 || peak > 16800 || crossings < toneHz-4 || crossings > toneHz+4 {
		t.Errorf("the rendered tone has peak %d and %d zero crossings, want about 16384 and %d (a half-scale %d Hz sine for 0.5 s crosses zero twice a cycle)",
			peak, crossings, toneHz, toneHz)
	}
	if rep.ReceivedBytes != len(sent) || rep.Received != rep.Sent {
		t.Errorf("the page received %d audio bytes in %d deltas, equal to the %d sent: %v; want the tone back byte for byte",
			rep.ReceivedBytes, rep.Deltas, len(sent), rep.Received == rep.Sent)
	}
}

// checkBrowserHandshake asserts what the browser put on the wire and what
// it was answered, as DevTools saw them; it returns the answer's headers and
// the frames the browser received.
func checkBrowserHandshake(t *testing.T, pg *page, rep pageReport, origin, token string) (respHeaders map[string]string, frames []string) {
	t.Helper()
	req := pg.handshakeRequest(t)
	if got := header(req, "Origin"); got != origin {
		t.Errorf("the browser sent Origin %q, want %q", got, origin)
	}
	if got := header(req, "Sec-WebSocket-Protocol"); got != "realtime, openai-insecure-api-key."+token {
		t.Errorf("the browser offered Sec-WebSocket-Protocol %q, want realtime and the token", strings.ReplaceAll(got, token, "<TOKEN>"))
	}
	status, ok := pg.handshakeStatus()
	if !ok || status != http.StatusSwitchingProtocols {
		t.Errorf("handshake answered %d (seen: %v), want 101", status, ok)
	}
	respHeaders = pg.handshakeResponseHeaders()
	if got := header(respHeaders, "Sec-WebSocket-Protocol"); got != "realtime" {
		t.Errorf("tether answered Sec-WebSocket-Protocol %q, want realtime", strings.ReplaceAll(got, token, "<TOKEN>"))
	}
	frames = pg.framesReceived()
	if len(frames) != len(rep.Messages) {
		t.Errorf("DevTools saw %d frames received, the page %d messages", len(frames), len(rep.Messages))
	}
	return respHeaders, frames
}

// checkTokenConfined asserts that the token admitted the page and went
// nowhere else: not in any message, frame or response header the browser
// received, not upstream, not in tether's log, /sessions or /metrics.
func checkTokenConfined(t *testing.T, r *browserRig, rep pageReport, respHeaders map[string]string, frames []string, token string) {
	t.Helper()
	for i, m := range append(append([]string{}, rep.Messages...), frames...) {
		if strings.Contains(m, token) {
			t.Errorf("message %d the browser received carries the token", i)
		}
	}
	for k, v := range respHeaders {
		if strings.Contains(k+v, token) {
			t.Errorf("tether's handshake answer carries the token in %s", k)
		}
	}
	if n := r.hs.count(); n != 1 {
		t.Fatalf("the upstream saw %d upgrades, want 1", n)
	}
	up := r.hs.all()[0]
	if got := up.Header.Get("Authorization"); got != "Bearer "+browserUpstreamKey {
		t.Errorf("upstream Authorization %q, want tether's own key", redactFor(got, browserUpstreamKey))
	}
	for name, vs := range up.Header {
		for _, v := range vs {
			if strings.Contains(v, token) || strings.Contains(v, "openai-insecure-api-key") {
				t.Errorf("the browser's credential was forwarded upstream in %s", name)
			}
		}
	}
	if strings.Contains(up.URL.String(), token) {
		t.Errorf("the token is in the upstream URL")
	}
	checkTokenNotLogged(t, r.p, token)
}

// checkBrowserRefused asserts that the page's WebSocket failed at the
// handshake with status (which Chromium's network log reports as
// browserSays), counted under reason, and that the upstream was never
// dialed.
func checkBrowserRefused(t *testing.T, r *browserRig, pg *page, rep pageReport, origin string, status int, reason, browserSays string) {
	t.Helper()
	if rep.Opened || !rep.Error || rep.Close == nil || rep.Close.Code != 1006 || len(rep.Messages) != 0 {
		t.Errorf("page from %s: opened %v, error %v, close %+v, %d messages; want a failed WebSocket (error, close 1006, nothing received)\n%s",
			origin, rep.Opened, rep.Error, rep.Close, len(rep.Messages), pg.consoleLog())
	}
	// Chromium reports no handshake answer event for a refused upgrade; its
	// network log tells.
	if got, seen := pg.handshakeStatus(); seen && got != status {
		t.Errorf("the browser saw the handshake answered %d, want %d", got, status)
	}
	if log := pg.consoleLog(); !strings.Contains(log, browserSays) {
		t.Errorf("the browser's log does not report the %d (%q):\n%s", status, browserSays, log)
	}
	if req := pg.handshakeRequest(t); header(req, "Origin") != origin {
		t.Errorf("the browser sent Origin %q, want %q", header(req, "Origin"), origin)
	}
	want := fmt.Sprintf("tether_handshake_rejections_total{reason=%q} 1", reason)
	testkit.WaitFor(t, stepTimeout, want, func() bool {
		n, _ := r.p.metric("tether_handshake_rejections_total", `reason="`+reason+`"`)
		return n == 1
	})
	if n, _ := r.p.metric("tether_handshake_rejections_total"); n != 1 {
		t.Errorf("tether_handshake_rejections_total over all reasons = %v, want 1 (%s)", n, reason)
	}
	if n := r.hs.count(); n != 0 {
		t.Errorf("the upstream saw %d upgrades, want 0 (a refused handshake is never dialed)", n)
	}
	if n, _ := r.p.metric("tether_sessions_total"); n != 0 {
		t.Errorf("tether_sessions_total = %v, want 0", n)
	}
}

// checkTokenNotLogged asserts the token is not in tether's log, /sessions or
// /metrics.
func checkTokenNotLogged(t *testing.T, p *proc, token string) {
	t.Helper()
	if strings.Contains(p.stderr.String()+p.stdout.String(), token) {
		t.Errorf("tether's log contains the browser's token")
	}
	_, metrics := p.get("/metrics")
	_, sessions := p.get("/sessions")
	if strings.Contains(string(metrics)+string(sessions), token) {
		t.Errorf("the browser's token is in /metrics or /sessions")
	}
}

// toneStats is the peak absolute sample and the number of sign changes of
// little-endian PCM16.
func toneStats(pcm []byte) (peak, crossings int) {
	prev := 0
	for i := 0; i+1 < len(pcm); i += 2 {
		v := int(int16(binary.LittleEndian.Uint16(pcm[i:])))
		peak = max(peak, v, -v)
		if v != 0 {
			if prev != 0 && (v > 0) != (prev > 0) {
				crossings++
			}
			prev = v
		}
	}
	return peak, crossings
}

// handshakeRequest is the headers of the page's one WebSocket handshake
// request (Network.webSocketWillSendHandshakeRequest).
func (p *page) handshakeRequest(t *testing.T) map[string]string {
	t.Helper()
	evs := p.events("Network.webSocketWillSendHandshakeRequest")
	if len(evs) != 1 {
		t.Fatalf("DevTools saw %d WebSocket handshake requests, want 1", len(evs))
	}
	var e struct {
		Request struct {
			Headers map[string]string `json:"headers"`
		} `json:"request"`
	}
	if err := json.Unmarshal(evs[0], &e); err != nil {
		t.Fatal(err)
	}
	return e.Request.Headers
}

type wsHandshakeResponse struct {
	Response struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
	} `json:"response"`
}

// handshakeStatus is the HTTP status of the page's WebSocket handshake
// answer, when DevTools reported one.
func (p *page) handshakeStatus() (int, bool) {
	evs := p.events("Network.webSocketHandshakeResponseReceived")
	if len(evs) == 0 {
		return 0, false
	}
	var e wsHandshakeResponse
	_ = json.Unmarshal(evs[len(evs)-1], &e)
	return e.Response.Status, true
}

// handshakeResponseHeaders is the headers of that answer (only the
// response's: DevTools also reports the request's).
func (p *page) handshakeResponseHeaders() map[string]string {
	evs := p.events("Network.webSocketHandshakeResponseReceived")
	if len(evs) == 0 {
		return nil
	}
	var e wsHandshakeResponse
	_ = json.Unmarshal(evs[len(evs)-1], &e)
	return e.Response.Headers
}

// framesReceived is the payload of every WebSocket frame the page received.
func (p *page) framesReceived() []string {
	var out []string
	for _, raw := range p.events("Network.webSocketFrameReceived") {
		var e struct {
			Response struct {
				Opcode      int    `json:"opcode"`
				PayloadData string `json:"payloadData"`
			} `json:"response"`
		}
		_ = json.Unmarshal(raw, &e)
		out = append(out, e.Response.PayloadData)
	}
	return out
}

// header looks name up in h case-insensitively.
func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}
