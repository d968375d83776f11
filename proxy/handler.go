package proxy

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/state"
	"github.com/tetherproxy/tether/upstreams"
)

// UpstreamDialer dials the upstream for one client (upstreams.Dialer).
type UpstreamDialer interface {
	Dial(ctx context.Context, req upstreams.Request) (*upstreams.Conn, error)
	// CheckModel reports upstreams.ErrModelNotAllowed when no upstream serves the model.
	CheckModel(model string) error
	// CheckLiveModel is CheckModel for a GPT-Live session.start's model.
	CheckLiveModel(model string) error
}

// HandlerOptions configure the client-facing upgrade handler.
type HandlerOptions struct {
	// HandshakeTimeout bounds the upstream dial (all attempts) for one
	// upgrade. cmd/tether always sets it (server.handshake_timeout, whose
	// default lives in package config); 0 means no bound of its own: the
	// dial is bounded by each upstream's dial timeout and the client.
	HandshakeTimeout time.Duration
	// AllowedOrigins is an exact-match Origin list; empty allows any.
	AllowedOrigins []string
	// AllowMissingOrigin admits requests without Origin when AllowedOrigins is set.
	AllowMissingOrigin bool
	// Auth authenticates clients; nil admits everyone (identity: remote IP).
	Auth auth.Authenticator
	// Relay tunes each session's relay.
	Relay Options
	// Logger receives handshake and panic logs; nil discards.
	Logger *slog.Logger
	// Rejections counts refused handshakes; nil counts nothing.
	Rejections Rejections
	// Limits admits each client identity against its limits; nil admits
	// everyone.
	Limits Admitter
}

// Admitter holds client identities to their limits (package limits).
type Admitter interface {
	// Admit takes a slot for one session of identity; release gives it back.
	Admit(ctx context.Context, identity string) (release func(), refused *limits.Refusal)
}

// Rejections counts refused handshakes by reason
// (tether_handshake_rejections_total).
type Rejections interface {
	HandshakeRejected(reason string)
}

// Handler accepts client upgrades: checks the handshake, dials the upstream
// first, then answers 101 and relays until the session ends.
type Handler struct {
	opts   HandlerOptions
	mgr    *lifecycle.Manager
	dialer UpstreamDialer
	log    *slog.Logger
}

// NewHandler returns a Handler.
func NewHandler(mgr *lifecycle.Manager, dialer UpstreamDialer, opts HandlerOptions) *Handler {
	opts.Logger = cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))
	return &Handler{opts: opts, mgr: mgr, dialer: dialer, log: opts.Logger}
}

// fallbackWait bounds the waits that need a bound when HandshakeTimeout is
// 0 (an embedder's or a test's handler): the end of a frame during the
// GPT-Live hand-off, and a resumed call's replay.
const fallbackWait = 10 * time.Second

// waitBound is HandshakeTimeout, or fallbackWait when it is 0.
func (h *Handler) waitBound() time.Duration { return cmp.Or(h.opts.HandshakeTimeout, fallbackWait) }

// dialContext is the context of one upgrade's upstream dial: parent,
// bounded by HandshakeTimeout when that is set.
func (h *Handler) dialContext(parent context.Context) (context.Context, context.CancelFunc) {
	if h.opts.HandshakeTimeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, h.opts.HandshakeTimeout)
}

// Subprotocol handling (see the README).
const (
	protoRealtime  = "realtime"
	protoKeyPrefix = "openai-insecure-api-key."
	protoBeta      = "openai-beta.realtime-v1"
)

// forwardHeaders may travel from the client to the upstream. Everything else
// (Authorization, Cookie, Sec-WebSocket-*, hop-by-hop headers, and
// OpenAI-Organization / OpenAI-Project, which pick whose account pays) stays
// behind; an upstream's own `headers` may still set them.
var forwardHeaders = []string{
	"OpenAI-Beta", "OpenAI-Safety-Identifier", "X-Request-Id", "Traceparent", "Tracestate", "User-Agent",
}

// strippedQuery are client query parameters that carry credentials; they are
// dropped whatever their case (API-KEY, Api-Key).
var strippedQuery = []string{"api-key", "api_key", "apikey", "key", "token", "access_token", "authorization"}

func (h *Handler) rejected(reason string) {
	if h.opts.Rejections != nil {
		h.opts.Rejections.HandshakeRejected(reason)
	}
}

func (h *Handler) reject(w http.ResponseWriter, rj *rejection) {
	h.rejected(rj.reason)
	for k, v := range rj.hdr {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(rj.status)
	body := map[string]string{"type": "tether_error", "code": rj.reason, "message": rj.msg}
	if rj.limit != "" {
		body["limit"] = rj.limit
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

// headerHasToken reports whether a comma-separated header contains token (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	requestedAt := time.Now()
	c, release, ok := h.preflight(w, r, h.identify)
	if !ok {
		return
	}
	handedOff := false // once the relay runs, it releases the slot
	defer func() {
		if !handedOff {
			release()
		}
	}()
	info := h.sessionInfo(r, c, requestedAt)
	up, rj, _ := h.dialUpstream(r.Context(), r, upstreamRequest(r, c), &info)
	if rj != nil {
		h.refuse(w, rj)
		return
	}
	handedOff = h.upgradeAndRelay(w, r, c, info, up, upstreamRequest(r, c), release)
}

// preflight runs the checks of every upgrade, before anything is dialed:
// the handshake itself, who is calling and what they ask for (identify),
// and admission. A refusal is answered here; release frees the slot taken.
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request,
	identify func(*http.Request) (caller, *rejection)) (c caller, release func(), ok bool) {
	rj := h.checkUpgrade(r)
	if rj == nil {
		c, rj = identify(r)
	}
	if rj == nil {
		release, rj = h.admit(r.Context(), c.identity)
	}
	if rj != nil {
		h.refuse(w, rj)
		return c, nil, false
	}
	return c, release, true
}

// Why a client upgrade is refused: the reason label of
// tether_handshake_rejections_total.
const (
	RejectNotWebSocket        = "not_websocket"
	RejectBadHandshake        = "bad_handshake"
	RejectBadVersion          = "bad_version"
	RejectBadMethod           = "bad_method"
	RejectOrigin              = "origin"
	RejectUnauthenticated     = "unauthenticated"
	RejectUnauthorized        = "unauthorized"
	RejectModelNotAllowed     = "model_not_allowed"
	RejectClientLimit         = "client_limit"
	RejectBudgetExhausted     = "budget_exhausted"
	RejectLimitsUnavailable   = "limits_unavailable"
	RejectDraining            = "draining"
	RejectMaxSessions         = "max_sessions"
	RejectUpstreamUnavailable = "upstream_unavailable"
	RejectUpstreamRateLimited = "upstream_rate_limited"
	// RejectClientClosed: a GPT-Live client left before its session started.
	RejectClientClosed = "client_closed"
)

// RejectReasons are all the reasons a handshake is refused for.
var RejectReasons = []string{RejectNotWebSocket, RejectBadHandshake, RejectBadVersion, RejectBadMethod, RejectOrigin,
	RejectUnauthenticated, RejectUnauthorized, RejectModelNotAllowed, RejectClientLimit, RejectBudgetExhausted,
	RejectLimitsUnavailable, RejectDraining, RejectMaxSessions, RejectUpstreamUnavailable, RejectUpstreamRateLimited, RejectClientClosed}

// rejection is a refused handshake: the HTTP answer and the reason counted.
type rejection struct {
	status      int
	reason, msg string
	hdr         map[string]string
	// limit names the client limit that refused it (a 429's body), if one did.
	limit string
}

func (h *Handler) refuse(w http.ResponseWriter, rj *rejection) { h.reject(w, rj) }

// checkUpgrade checks the handshake itself, at least as strictly as the
// upgrader that answers 101 later.
func (h *Handler) checkUpgrade(r *http.Request) *rejection {
	switch {
	case !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return &rejection{status: http.StatusUpgradeRequired, reason: RejectNotWebSocket, msg: "this endpoint accepts WebSocket upgrades only", hdr: map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}}
	case r.Method != http.MethodGet:
		return &rejection{status: http.StatusMethodNotAllowed, reason: RejectBadMethod, msg: "WebSocket upgrades use GET", hdr: map[string]string{"Allow": "GET"}}
	case !r.ProtoAtLeast(1, 1):
		return &rejection{status: http.StatusHTTPVersionNotSupported, reason: RejectBadHandshake, msg: "WebSocket upgrades need HTTP/1.1"}
	case !validProtocolList(r.Header.Values("Sec-WebSocket-Protocol")):
		return &rejection{status: http.StatusBadRequest, reason: RejectBadHandshake, msg: "malformed Sec-WebSocket-Protocol"}
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return &rejection{status: http.StatusBadRequest, reason: RejectBadHandshake, msg: "missing Connection: Upgrade"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return &rejection{status: http.StatusUpgradeRequired, reason: RejectBadVersion, msg: "unsupported Sec-WebSocket-Version", hdr: map[string]string{"Sec-WebSocket-Version": "13"}}
	}
	if k, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(k) != 16 {
		return &rejection{status: http.StatusBadRequest, reason: RejectBadHandshake, msg: "missing or malformed Sec-WebSocket-Key"}
	}
	if !h.originAllowed(r.Header.Values("Origin")) {
		return &rejection{status: http.StatusForbidden, reason: RejectOrigin, msg: "origin not allowed"}
	}
	return nil
}

// caller is who is calling and what they ask for.
type caller struct {
	clientID string // authenticated identity; "" without auth
	identity string // clientID, else the remote IP (per-client limits)
	query    url.Values
	model    string
	// offered: the client offered the realtime subprotocol; beta: it asked
	// for the beta API shape.
	offered, beta bool
}

// identify authenticates the client and checks what it asks for.
func (h *Handler) identify(r *http.Request) (caller, *rejection) {
	c, rj := h.authenticate(r)
	if rj != nil {
		return c, rj
	}
	c.offered, c.beta = parseProtocols(r.Header)
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return c, &rejection{status: http.StatusBadRequest, reason: RejectBadHandshake, msg: "malformed query string"}
	}
	c.query = query
	models := modelValues(query)
	if len(models) > 1 {
		// Which one would the upstream read? Refuse rather than guess.
		return c, &rejection{status: http.StatusBadRequest, reason: RejectModelNotAllowed, msg: "the query names more than one model"}
	}
	if len(models) == 1 {
		c.model = models[0]
	}
	if err := h.dialer.CheckModel(c.model); err != nil {
		return c, &rejection{status: http.StatusBadRequest, reason: RejectModelNotAllowed, msg: "model not served by this proxy"}
	}
	return c, nil
}

// authenticate identifies the client (auth.mode), else by its IP.
func (h *Handler) authenticate(r *http.Request) (caller, *rejection) {
	var c caller
	if h.opts.Auth != nil {
		id, err := h.opts.Auth.Authenticate(r)
		if err != nil {
			reason := RejectUnauthorized
			if errors.Is(err, auth.ErrMissing) {
				reason = RejectUnauthenticated
			}
			return c, &rejection{status: http.StatusUnauthorized, reason: reason, msg: err.Error(), hdr: map[string]string{"WWW-Authenticate": `Bearer realm="tether"`}}
		}
		c.clientID = id
	}
	c.identity = cmp.Or(c.clientID, remoteIP(r.RemoteAddr))
	return c, nil
}

// admit reserves a session slot, and one for identity under its limits.
func (h *Handler) admit(ctx context.Context, identity string) (release func(), rj *rejection) {
	slot, err := h.mgr.Reserve()
	switch {
	case errors.Is(err, lifecycle.ErrDraining):
		return nil, drainingRejection
	case err != nil:
		return nil, &rejection{status: http.StatusServiceUnavailable, reason: RejectMaxSessions, msg: "session limit reached",
			hdr: map[string]string{"Retry-After": "1"}}
	case h.opts.Limits == nil:
		return slot, nil
	}
	client, refused := h.opts.Limits.Admit(ctx, identity)
	if refused == nil {
		return func() { client(); slot() }, nil
	}
	slot()
	retry := map[string]string{"Retry-After": strconv.Itoa(max(1, int(math.Ceil(refused.RetryAfter.Seconds()))))}
	switch {
	case refused.Unavailable:
		return nil, &rejection{status: http.StatusServiceUnavailable, reason: RejectLimitsUnavailable, msg: refused.Message(), hdr: retry}
	case refused.Limit == state.LimitSessions:
		return nil, &rejection{status: http.StatusTooManyRequests, reason: RejectClientLimit, msg: refused.Message(), hdr: retry,
			limit: string(refused.Limit)}
	}
	return nil, &rejection{status: http.StatusTooManyRequests, reason: RejectBudgetExhausted, msg: refused.Message(), hdr: retry,
		limit: string(refused.Limit)}
}

// drainingRejection answers upgrades while tether shuts down.
var drainingRejection = &rejection{status: http.StatusServiceUnavailable, reason: RejectDraining, msg: "tether is shutting down; retry on another instance", hdr: map[string]string{"Retry-After": "5"}}

// sessionInfo is the session's start record, before the dial fills in the upstream.
func (h *Handler) sessionInfo(r *http.Request, c caller, requestedAt time.Time) lifecycle.Info {
	var localAddr string
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		localAddr = la.String()
	}
	return lifecycle.Info{
		ClientAddr: r.RemoteAddr, ServerAddr: localAddr, Model: c.model, RequestedAt: requestedAt, ClientID: c.clientID,
		Identity:    c.identity,
		TraceParent: r.Header.Get("Traceparent"), TraceState: r.Header.Get("Tracestate"),
		Dialect: realtime.Dialect{},
	}
}

// upstreamRequest is what the upstream is asked for: the client's filtered
// query and the headers that may be passed on.
func upstreamRequest(r *http.Request, c caller) upstreams.Request {
	ureq := upstreams.Request{RawQuery: filterQuery(r.URL.RawQuery, c.query), Model: c.model, Header: http.Header{}}
	for _, k := range forwardHeaders {
		if vs := r.Header.Values(k); len(vs) > 0 {
			ureq.Header[http.CanonicalHeaderKey(k)] = vs
		}
	}
	if c.beta && ureq.Header.Get("OpenAI-Beta") == "" {
		ureq.Header.Set("OpenAI-Beta", "realtime=v1")
	}
	return ureq
}

// dialUpstream dials the upstream first, recording the attempts in info.
// The dial gives up with the client, at the handshake timeout, and when
// tether stops waiting (drain deadline or second signal): then the client
// gets 503 with Retry-After at once, like any upgrade during a drain.
func (h *Handler) dialUpstream(parent context.Context, r *http.Request, req upstreams.Request,
	info *lifecycle.Info) (*upstreams.Conn, *rejection, error) {
	ctx, cancel := h.dialContext(parent)
	stopDial := context.AfterFunc(h.mgr.Stopping(), cancel)
	up, err := h.dialer.Dial(ctx, req)
	stopDial()
	cancel()
	info.Dials = dialOutcome(up, err)
	if h.mgr.Stopping().Err() != nil {
		if err == nil {
			_ = up.Net.Close()
		}
		h.log.Info("upstream dial cancelled: shutting down", "client", r.RemoteAddr)
		h.mgr.HandshakeFailed(*info, http.StatusServiceUnavailable, RejectDraining)
		return nil, drainingRejection, err
	}
	if err != nil {
		status, retry := http.StatusBadGateway, ""
		if de, ok := errors.AsType[*upstreams.DialError](err); ok {
			status, retry = de.Status, de.RetryAfter
		}
		h.log.Warn("upstream dial failed", "client", r.RemoteAddr, "err", err)
		hdr := map[string]string{}
		if retry != "" {
			hdr["Retry-After"] = retry
		}
		reason := RejectUpstreamUnavailable
		if status == http.StatusTooManyRequests {
			reason = RejectUpstreamRateLimited
		}
		h.mgr.HandshakeFailed(*info, status, reason)
		return nil, &rejection{status: status, reason: reason, msg: "no upstream could be reached", hdr: hdr}, err
	}
	info.Upstream, info.UpstreamType = up.Upstream.Name, string(up.Upstream.Type)
	return up, nil, nil
}

// upgradeAndRelay answers 101, opens the session and hands both legs to a
// relay, which runs on goroutines of its own. It reports whether the relay took over
// (and with it the admission slot).
func (h *Handler) upgradeAndRelay(w http.ResponseWriter, r *http.Request, c caller, info lifecycle.Info,
	up *upstreams.Conn, req upstreams.Request, release func()) (handedOff bool) {
	u := ws.HTTPUpgrader{
		Protocol: func(p string) bool { return p == protoRealtime && c.offered },
	}
	conn, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		_ = up.Net.Close()
		if conn != nil {
			_ = conn.Close() // hijacked: net/http no longer owns it
		}
		h.rejected(RejectBadHandshake)
		h.log.Info("client upgrade failed", "client", r.RemoteAddr, "err", err)
		return false
	}
	s := h.mgr.Open(info)
	s.ReleaseOnEnd(release)
	defer func() {
		if !handedOff {
			// Something between Open and the hand-off panicked (net/http
			// recovers it): end the session so nothing stays registered.
			s.End(lifecycle.ReasonPanic)
			_ = conn.Close()
			_ = up.Net.Close()
			h.mgr.Finished(s, release)
		}
	}()
	ro := h.opts.Relay
	ro.Logger = cmp.Or(ro.Logger, h.log)
	relay := NewRelay(conn, rw.Reader, up.Net, up.BR, ro)
	h.enableResume(s, relay, req)
	if up.First != nil {
		if err := relay.WriteFirst(up.First); err != nil {
			s.LegError(lifecycle.Client, err)
		} else {
			s.Frame(lifecycle.UpstreamToClient, int64(len(up.FirstPayload)))
			s.Captured([]byte(up.FirstType), up.FirstPayload)
		}
	}
	s.Start(relay)
	// The relay runs on goroutines of its own and ServeHTTP returns, so
	// net/http's per-connection goroutine (and its grown stack and buffers)
	// goes away. Once its legs park, an idle session holds no goroutine; one
	// whose upstream leg is TLS, or that may resume, keeps its upstream pump.
	h.startRelay(s, relay, release)
	return true
}

// startRelay relays one session to its end and then tells the manager.
func (h *Handler) startRelay(s *lifecycle.Session, relay *Relay, release func()) {
	relay.Start(s, func() { h.mgr.Finished(s, release) })
}

// enableResume lets a call that may resume (lifecycle.resume) carry on on
// a new upstream session, dialed as the first one was (req).
func (h *Handler) enableResume(s *lifecycle.Session, relay *Relay, req upstreams.Request) {
	if !s.Resumable() {
		return
	}
	relay.EnableResume(s, ResumeOptions{Dial: h.redial(req), Buffer: s.ResumeBuffer(),
		Timeout: h.waitBound()})
}

// redial dials for a call that resumes: as for its first upstream session,
// within the handshake timeout and while tether still waits, trying the
// upstream whose session failed last (a session that expired says nothing
// about its upstream's health).
func (h *Handler) redial(req upstreams.Request) Redial {
	return func(ctx context.Context, trigger lifecycle.Trigger, from string, start []byte) (*upstreams.Conn, error) {
		ctx, cancel := h.dialContext(ctx)
		defer cancel()
		stop := context.AfterFunc(h.mgr.Stopping(), cancel)
		defer stop()
		req := req
		if trigger != lifecycle.TriggerExpired {
			req.Avoid = from
		}
		if start != nil {
			req.Start = start
		}
		return h.dialer.Dial(ctx, req)
	}
}

// dialOutcome is the session's record of a dial's attempts, whether it
// connected (up) or failed (err).
func dialOutcome(up *upstreams.Conn, err error) []lifecycle.Dial {
	if err == nil {
		return dialRecords(up.Attempts)
	}
	if de, ok := errors.AsType[*upstreams.DialError](err); ok {
		return dialRecords(de.Attempts)
	}
	return nil
}

// dialRecords converts dial attempts for the session's record.
func dialRecords(as []upstreams.Attempt) []lifecycle.Dial {
	out := make([]lifecycle.Dial, 0, len(as))
	for _, a := range as {
		d := lifecycle.Dial{Upstream: a.Upstream, Result: a.Result, Status: a.Status, Start: a.Start, Duration: a.Duration}
		if a.Err != nil {
			d.Err = a.Err.Error()
		}
		out = append(out, d)
	}
	return out
}

// originAllowed applies server.allowed_origins (exact match).
func (h *Handler) originAllowed(origins []string) bool {
	if len(h.opts.AllowedOrigins) == 0 {
		return true
	}
	if len(origins) == 0 {
		return h.opts.AllowMissingOrigin
	}
	if len(origins) > 1 {
		return false
	}
	for _, o := range h.opts.AllowedOrigins {
		if origins[0] == o {
			return true
		}
	}
	return false
}

// remoteIP is the host part of a remote address (the identity of an anonymous client).
func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// validProtocolList reports whether Sec-WebSocket-Protocol values are
// comma-separated lists of HTTP tokens (RFC 6455 4.1).
func validProtocolList(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				return false
			}
			for i := 0; i < len(p); i++ {
				if !isTokenChar(p[i]) {
					return false
				}
			}
		}
	}
	return true
}

// isTokenChar: RFC 7230 tchar.
func isTokenChar(c byte) bool {
	if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseProtocols reads Sec-WebSocket-Protocol: whether `realtime` was
// offered and whether the beta dialect was asked for. Credential tokens
// (openai-insecure-api-key.*, tether-token.*) are consumed: never echoed,
// never forwarded.
func parseProtocols(h http.Header) (realtime, beta bool) {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			switch p = strings.TrimSpace(p); {
			case p == protoRealtime:
				realtime = true
			case p == protoBeta:
				beta = true
			}
		}
	}
	return realtime, beta
}

// modelValues returns every value of the query's model parameter, whatever
// the key's case (model, Model, MODEL).
func modelValues(q url.Values) []string {
	var out []string
	for k, vs := range q {
		if strings.EqualFold(k, "model") {
			out = append(out, vs...)
		}
	}
	return out
}

// filterQuery returns the client's query string (raw, parsed as q) as it
// may travel upstream: credential parameters are dropped whatever their
// case, and the model parameter is spelled "model". The upstream URL's own
// parameters win over the client's (upstreams.Dialer).
func filterQuery(raw string, q url.Values) string {
	if raw == "" {
		return ""
	}
	changed := false
	for k, vs := range q {
		switch {
		case slices.ContainsFunc(strippedQuery, func(s string) bool { return strings.EqualFold(s, k) }):
			delete(q, k)
			changed = true
		case k != "model" && strings.EqualFold(k, "model"):
			delete(q, k)
			q["model"] = vs // at most one value in all: checked by the handler
			changed = true
		}
	}
	if !changed {
		return raw
	}
	return q.Encode()
}
