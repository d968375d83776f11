// Package upstreams turns configured backends into WebSocket connections:
// URL and query, headers and credential per kind, dial with a timeout, the
// first-event check of realtime backends, and failover down the list.
//
// It owns the upstream kinds ([Kind]) and the configuration of one backend
// ([Config]), which package config decodes, defaults and validates.
package upstreams

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// maxFirstEvent bounds the first event read during a realtime dial.
const maxFirstEvent = 1 << 20

// Upstream is one backend of a [Dialer]: its [Config] and its run-time
// state (credential, trust roots, failure count).
type Upstream struct {
	Config

	// tlsConfig trusts CARootFile for wss upstreams; nil uses the system roots.
	tlsConfig *tls.Config
	key       string // from APIKeyEnv, read once by NewDialer

	mu        sync.Mutex
	failures  int       // consecutive failed dials
	coolUntil time.Time // skipped until then
	fileKeys  []string  // credential values read from files so far (guarded by mu)
}

// ModelFor returns the model to request from u for a client that asked for
// requested ("" = none), and whether u serves it.
func (u *Upstream) ModelFor(requested string) (string, bool) {
	if requested == "" {
		return u.DefaultModel, true
	}
	if len(u.AllowedModels) == 0 || slices.Contains(u.AllowedModels, requested) {
		return requested, true
	}
	return "", false
}

// Available reports whether u is outside its cool-down.
func (u *Upstream) Available(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return !now.Before(u.coolUntil)
}

// record updates the consecutive-failure count after a dial.
func (u *Upstream) record(ok bool, now time.Time) (enteredCooldown bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if ok {
		u.failures = 0
		u.coolUntil = time.Time{}
		return false
	}
	u.failures++
	if u.MaxFailures > 0 && u.failures >= u.MaxFailures && u.Cooldown > 0 {
		u.coolUntil = now.Add(u.Cooldown)
		u.failures = 0
		return true
	}
	return false
}

// credential returns the key to inject, re-reading APIKeyFile (or
// TokenFile) so a rotated file is used by the next dial.
func (u *Upstream) credential() (string, error) {
	file, what := u.APIKeyFile, "api_key_file"
	if u.TokenFile != "" {
		file, what = u.TokenFile, "token_file"
	}
	if file == "" {
		return u.key, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	k := strings.TrimSpace(string(b))
	u.mu.Lock()
	if k != "" && !slices.Contains(u.fileKeys, k) {
		// Remember the last few values (a rotated key may still be quoted
		// by the upstream for sessions dialed before the rotation).
		u.fileKeys = append(u.fileKeys, k)
		if len(u.fileKeys) > 4 {
			u.fileKeys = u.fileKeys[1:]
		}
	}
	u.mu.Unlock()
	return k, nil
}

// Secrets returns the credential values known so far, for redaction. It
// reads no file: values from files are recorded when a dial reads them.
func (u *Upstream) Secrets() []string {
	var out []string
	if u.key != "" {
		out = append(out, u.key)
	}
	u.mu.Lock()
	out = append(out, u.fileKeys...)
	u.mu.Unlock()
	return out
}

// Request is what the client asked for, already filtered by the proxy.
type Request struct {
	// RawQuery is the client's query string (e.g. model=gpt-realtime).
	RawQuery string
	// Model is the client's ?model= value ("" when none).
	Model string
	// Header holds client headers that may travel upstream (OpenAI-Beta, traceparent, ...).
	Header http.Header
	// Start, when set, makes this a GPT-Live dial: the client's session.start
	// message (unmasked payload), sent as it is to each upstream's live_url;
	// Model is then its session.model. RawQuery is not used.
	Start []byte
	// Avoid names an upstream to try last, after every other one that
	// serves the request (the one whose session just failed under a call
	// that resumes).
	Avoid string
}

// Conn is a dialed upstream.
type Conn struct {
	Net net.Conn
	// BR reads the rest of the stream (it may hold buffered bytes).
	BR *bufio.Reader
	// First is the first frame, encoded as received (realtime kinds), to be
	// relayed to the client after the upgrade. Nil for generic upstreams.
	First []byte
	// FirstPayload is the first frame's payload (for the session to parse).
	FirstPayload []byte
	// FirstType is the first event's type.
	FirstType string
	// Early are the messages a GPT-Live upstream sent before session.started
	// (whole payloads, none expected), to be relayed before it, scrubbed.
	Early    [][]byte
	Upstream *Upstream
	// Attempts lists every dial of this request, the successful one last.
	Attempts []Attempt
}

// Attempt records one dial for metrics and traces.
type Attempt struct {
	Upstream string
	Result   string // ok | timeout | refused | http_4xx | http_5xx | auth | rate_limited | error_event | closed | error
	Status   int    // upstream HTTP status, if any
	// RetryAfter is the upstream's Retry-After header on a 429/503 answer.
	RetryAfter string
	Start      time.Time
	Duration   time.Duration
	// EnteredCooldown is set when this failure started the upstream's cool-down.
	EnteredCooldown bool
	// ClientFault: the upstream refused a GPT-Live session.start with an
	// invalid_request_error (the client's to fix); Refusal is that event.
	ClientFault bool
	Refusal     []byte
	Err         error
}

// DialError is returned when every upstream failed. Status and RetryAfter
// are what to answer the client.
type DialError struct {
	Status     int
	RetryAfter string
	Attempts   []Attempt
	// Refusal is, when the last upstream refused a GPT-Live session.start as
	// the client's error, its error event (unscrubbed: the caller scrubs it).
	Refusal []byte
}

func (e *DialError) Error() string {
	var b strings.Builder
	b.WriteString("no upstream available")
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, "; %s: %s", a.Upstream, a.Result)
		if a.Err != nil {
			fmt.Fprintf(&b, " (%v)", a.Err)
		}
	}
	return b.String()
}

// Dialer dials upstreams in list order until one succeeds.
type Dialer struct {
	list []*Upstream
	// OnAttempt, if set, is called after each attempt.
	OnAttempt func(Attempt)
}

// NewDialer validates the list and resolves credentials from the
// environment. Each Config must be complete (package config fills the
// defaults): a missing URL is an error, not a default.
func NewDialer(list []Config) (*Dialer, error) {
	if len(list) == 0 {
		return nil, errors.New("no upstream configured")
	}
	d := &Dialer{list: make([]*Upstream, 0, len(list))}
	for _, c := range list {
		u, err := newUpstream(c)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", c.Name, err)
		}
		d.list = append(d.list, u)
	}
	return d, nil
}

// newUpstream checks c and resolves its credential and trust roots.
func newUpstream(c Config) (*Upstream, error) {
	u := &Upstream{Config: c}
	if u.URL == "" {
		return nil, errors.New("no url")
	}
	if _, err := url.Parse(u.URL); err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if u.APIKeyEnv != "" {
		u.key = os.Getenv(u.APIKeyEnv)
	}
	_, _ = u.credential() // learn a file's key now, so redaction knows it before the first dial
	if (u.Type == KindOpenAI || u.Type == KindAzure) && u.APIKeyFile == "" && u.TokenFile == "" && u.key == "" {
		return nil, fmt.Errorf("no API key: set %s or api_key_file", cmp.Or(u.APIKeyEnv, "api_key_env"))
	}
	if u.CARootFile != "" {
		pem, err := os.ReadFile(u.CARootFile)
		if err != nil {
			return nil, fmt.Errorf("ca_root_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_root_file %s holds no PEM certificate", u.CARootFile)
		}
		u.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return u, nil
}

// ErrModelNotAllowed is returned by CheckModel when no upstream serves the model.
var ErrModelNotAllowed = errors.New("model not allowed")

// CheckLiveModel reports whether some upstream with a GPT-Live endpoint
// serves the model named in session.start.
func (d *Dialer) CheckLiveModel(requested string) error {
	for _, u := range d.list {
		if u.liveModel(requested) {
			return nil
		}
	}
	return ErrModelNotAllowed
}

// CheckModel reports whether some upstream serves the requested model.
func (d *Dialer) CheckModel(requested string) error {
	for _, u := range d.list {
		if _, ok := u.ModelFor(requested); ok {
			return nil
		}
	}
	return ErrModelNotAllowed
}

// Upstreams returns the configured list.
func (d *Dialer) Upstreams() []*Upstream { return d.list }

// Secrets returns every credential value, for redaction.
func (d *Dialer) Secrets() []string {
	var out []string
	for _, u := range d.list {
		out = append(out, u.Secrets()...)
	}
	return out
}

// Dial tries each upstream in order within ctx. Upstreams in cool-down are
// skipped (recorded as result "cooldown"), unless every upstream is cooling
// down: then all are tried, so a recovered backend is found at once.
func (d *Dialer) Dial(ctx context.Context, req Request) (*Conn, error) {
	de := &DialError{Status: http.StatusBadGateway}
	now := time.Now()
	skip := make([]bool, len(d.list))
	models := make([]string, len(d.list))
	serves := make([]bool, len(d.list))
	all := true // every upstream that can serve the request is cooling down
	for i, u := range d.list {
		models[i], serves[i] = u.ModelFor(req.Model)
		if req.Start != nil {
			models[i], serves[i] = req.Model, u.liveModel(req.Model)
		}
		skip[i] = !u.Available(now)
		all = all && (skip[i] || !serves[i])
	}
	for _, i := range d.order(req.Avoid) {
		u := d.list[i]
		if ctx.Err() != nil {
			break
		}
		model := models[i]
		if !serves[i] {
			continue
		}
		if skip[i] && !all {
			a := Attempt{Upstream: u.Name, Result: "cooldown", Start: time.Now()}
			de.Attempts = append(de.Attempts, a)
			if d.OnAttempt != nil {
				d.OnAttempt(a)
			}
			continue
		}
		start := time.Now()
		c, a := d.dialOne(ctx, u, req, model)
		a.Upstream, a.Start, a.Duration = u.Name, start, time.Since(start)
		// A dial given up by the caller (the client left, tether stopping) or
		// a start the service refused as the client's error says nothing
		// about the upstream's health.
		if (c != nil || (ctx.Err() == nil && !a.ClientFault)) && u.record(c != nil, time.Now()) {
			a.EnteredCooldown = true
		}
		if d.OnAttempt != nil {
			d.OnAttempt(a)
		}
		if c != nil {
			c.Attempts = append(de.Attempts, a)
			return c, nil
		}
		de.Attempts = append(de.Attempts, a)
		de.Refusal = a.Refusal
	}
	// The last real answer decides: an earlier 429 was worked around by failover.
	for i := len(de.Attempts) - 1; i >= 0; i-- {
		last := de.Attempts[i]
		if last.Result == "cooldown" {
			continue
		}
		if last.Status == http.StatusTooManyRequests || last.Status == http.StatusServiceUnavailable {
			de.Status = last.Status
			de.RetryAfter = cmp.Or(last.RetryAfter, "1")
		}
		break
	}
	return nil, de
}

// order is the dial order: the list's, with the upstream named avoid last.
func (d *Dialer) order(avoid string) []int {
	out := make([]int, 0, len(d.list))
	last := -1
	for i, u := range d.list {
		if avoid != "" && u.Name == avoid {
			last = i
			continue
		}
		out = append(out, i)
	}
	if last >= 0 {
		out = append(out, last)
	}
	return out
}

// setQuery sets key=value in a raw query string, replacing the key in any
// case (a client's KEY= must not ride along beside tether's key=). An empty
// value only removes the key.
func setQuery(raw, key, value string) string {
	q, err := url.ParseQuery(raw)
	if err != nil {
		q = url.Values{}
	}
	for k := range q {
		if strings.EqualFold(k, key) {
			delete(q, k)
		}
	}
	if value != "" {
		q.Set(key, value)
	}
	return q.Encode()
}

// upstreamURL joins the upstream URL with the client's query string. The
// configured URL's own parameters (api-version, deployment, ...) win: a
// client parameter with the same name, in any case, is dropped. The
// client's other parameters (model=...) are passed on.
func upstreamURL(base, clientQuery string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	if clientQuery == "" {
		return u.String(), nil
	}
	cq, err := url.ParseQuery(clientQuery)
	if err != nil {
		return "", fmt.Errorf("client query: %w", err)
	}
	own, q := u.Query(), u.Query()
	for k, v := range cq {
		if !hasKeyFold(own, k) {
			q[k] = v
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// hasKeyFold reports whether q has key, compared case-insensitively.
func hasKeyFold(q url.Values, key string) bool {
	for k := range q {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// dialOne makes one attempt at u, within u.DialTimeout: the WebSocket
// handshake and, for realtime kinds, the wait for the first event.
func (d *Dialer) dialOne(ctx context.Context, u *Upstream, req Request, model string) (*Conn, Attempt) {
	if u.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.DialTimeout)
		defer cancel()
	}
	key, err := u.credential()
	if err != nil {
		return nil, Attempt{Result: "error", Err: err}
	}
	if req.Start != nil {
		return d.dialLive(ctx, u, req, key)
	}
	target, err := upstreamURL(u.URL, u.query(req, model, key))
	if err != nil {
		return nil, Attempt{Result: "error", Err: err}
	}
	conn, br, a := u.handshake(ctx, target, u.header(req.Header, key), key)
	if conn == nil {
		return nil, a
	}
	c := &Conn{Net: conn, BR: br, Upstream: u}
	if !u.Type.realtime() {
		return c, a
	}
	if a = c.awaitFirst(ctx, key); a.Result != "ok" {
		return nil, a
	}
	return c, a
}

// query is the query string sent to u: the client's, with the model u
// serves it and, for a generic upstream with api_key_query, the credential.
func (u *Upstream) query(req Request, model, key string) string {
	q := req.RawQuery
	if model != "" && model != req.Model {
		q = setQuery(q, "model", model)
	}
	if u.Type == KindGeneric && u.APIKeyQuery != "" {
		// The credential parameter is tether's alone: a client's, in any case, never rides along.
		q = setQuery(q, u.APIKeyQuery, key)
	}
	return q
}

// header is the handshake header sent to u: the client's headers that may
// travel, u's configured headers over them, the beta marker and the credential.
func (u *Upstream) header(client http.Header, key string) http.Header {
	h := http.Header{}
	for k, vs := range client {
		h[k] = vs
	}
	for k, v := range u.Headers {
		h.Set(k, v)
	}
	if u.Beta {
		h.Set("OpenAI-Beta", "realtime=v1")
	}
	if key != "" {
		u.setCredential(h, key)
	}
	return h
}

// setCredential puts key where u's kind expects it.
func (u *Upstream) setCredential(h http.Header, key string) {
	switch {
	case u.Type == KindAzure && u.TokenFile != "":
		h.Set("Authorization", "Bearer "+key)
	case u.Type == KindAzure:
		h.Set("api-key", key)
	case u.Type == KindGeneric && u.APIKeyQuery != "":
		// in the query string
	case u.Type == KindGeneric && u.APIKeyHeader != "":
		h.Set(u.APIKeyHeader, key)
	default:
		h.Set("Authorization", "Bearer "+key)
	}
}

// handshake runs the WebSocket handshake with target. It returns the
// connection and the attempt (result "ok", status 101), or a nil
// connection and the failed attempt, its error cleaned of key.
func (u *Upstream) handshake(ctx context.Context, target string, h http.Header, key string) (net.Conn, *bufio.Reader, Attempt) {
	var (
		status     int
		retryAfter string
	)
	dialer := ws.Dialer{
		Header:    ws.HandshakeHeaderHTTP(h),
		Protocols: u.Subprotocols,
		TLSConfig: u.tlsConfig,
		OnStatusError: func(st int, _ []byte, resp io.Reader) {
			status = st
			if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
				retryAfter = r.Header.Get("Retry-After")
			}
		},
	}
	conn, br, _, err := dialer.Dial(ctx, target)
	if err != nil {
		return nil, nil, Attempt{Result: handshakeResult(status, err), Status: status, RetryAfter: retryAfter,
			Err: redactErr(err, key)}
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	return conn, br, Attempt{Result: "ok", Status: http.StatusSwitchingProtocols}
}

// handshakeResult classifies a failed handshake by the upstream's HTTP
// status, else by the error.
func handshakeResult(status int, err error) string {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "auth"
	case status == http.StatusTooManyRequests:
		return "rate_limited"
	case status >= 500:
		return "http_5xx"
	case status >= 400:
		return "http_4xx"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout"
	default:
		return "refused"
	}
}

// awaitFirst waits, until ctx is done, for the first event of a realtime
// upstream (see readFirst) and returns the attempt.
func (c *Conn) awaitFirst(ctx context.Context, key string) Attempt {
	return c.await(ctx, key, c.readFirst)
}

// await runs exchange (the dial's first exchange of events) until ctx is
// done and returns the attempt. On failure it closes the connection; the
// error is cleaned of key.
func (c *Conn) await(ctx context.Context, key string, exchange func() (result string, err error)) Attempt {
	conn := c.Net
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled dial (tether shutting down) stops waiting too.
	unwatch := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	result, err := exchange()
	if !unwatch() && err == nil {
		err = ctx.Err()
		result = "timeout"
	}
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		_ = conn.Close()
		if isTimeout(err) {
			result = "timeout"
		}
		// The upstream's close reason may quote the key ("Incorrect API key provided: sk-...").
		return Attempt{Result: result, Status: http.StatusSwitchingProtocols, Err: redactErr(err, key)}
	}
	return Attempt{Result: "ok", Status: http.StatusSwitchingProtocols}
}

// readFirst reads the first frame of a realtime upstream: session.created
// is success; an error event or a close is a failed dial.
func (c *Conn) readFirst() (string, error) {
	var hb [wsframe.MaxHeaderSize]byte
	h, err := ws.ReadHeaderBuffer(c.BR, hb[:])
	if err != nil {
		return "closed", fmt.Errorf("read first event: %w", err)
	}
	if h.Masked || h.Rsv != 0 || !h.Fin || h.Length > maxFirstEvent { // session.created is small and whole
		return "error", errors.New("first frame malformed or too large")
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(c.BR, payload); err != nil {
		return "closed", fmt.Errorf("read first event: %w", err)
	}
	switch h.OpCode {
	case ws.OpClose:
		code, reason, err := wsframe.ParseClose(payload)
		if err != nil {
			return "closed", fmt.Errorf("upstream closed before %s: %w", realtime.SessionCreated, err)
		}
		return "closed", fmt.Errorf("upstream closed before %s: %d %s", realtime.SessionCreated, code, reason)
	case ws.OpText:
	default:
		return "error", fmt.Errorf("unexpected first frame opcode %d", h.OpCode)
	}
	first, err := realtime.CheckFirst(payload)
	if err != nil {
		return "error", fmt.Errorf("first event: %w", err)
	}
	switch {
	case first.OK:
	case first.Type == realtime.Error && first.Code == realtime.CodeInvalidAPIKey:
		return "auth", fmt.Errorf("upstream rejected the credential (%s)", first.Code)
	case first.Type == realtime.Error:
		return "error_event", fmt.Errorf("upstream error event before %s: %s", realtime.SessionCreated, first.Code)
	default:
		return "error", fmt.Errorf("first event %q, want %s", first.Type, realtime.SessionCreated)
	}
	frame := make([]byte, ws.HeaderSize(h)+len(payload))
	n := wsframe.PutHeader(frame, h)
	copy(frame[n:], payload)
	c.First = frame
	c.FirstPayload = payload
	c.FirstType = first.Type
	return "ok", nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// redactErr keeps a dial error from carrying the credential (whole, or
// quoted in part by the upstream) into logs and spans.
func redactErr(err error, key string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := redact.New(key).Redact(msg)
	if clean == msg {
		return err
	}
	return errors.New(clean)
}
