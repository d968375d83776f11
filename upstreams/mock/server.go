// Package mock is tether's built-in mock OpenAI voice backend. It speaks
// two dialects over WebSocket (github.com/gobwas/ws), chosen by the path:
//
//   - A path ending in /live/sessions (/v1/live/sessions,
//     /openai/v1/live/sessions) is GPT-Live (live.go, dialect/live): the
//     client speaks first with a strictly checked session.start, answered by
//     session.started after Options.StartDelay; then a continuous output
//     audio track (one session.output_audio.delta of 100 ms per
//     Options.LiveDeltaInterval, digital silence or the caller's audio echoed
//     about 200 ms later), input and output transcript deltas for the audio
//     that is not silent, cumulative session.usage.updated, the acks of the
//     client events, Responses-delegation answers as response.event, and
//     session.close answered by session.closed and close 1000.
//   - Every other path is the Realtime GA dialect: session.created on
//     connect, session.update, input_audio_buffer.*, response.* with audio
//     deltas that echo the committed audio, response.done with usage,
//     optional energy-based server VAD.
//
// Both obey the mock.fault client events of the design contract. It runs
// in-process as tether's default upstream, behind `tether mock-upstream`,
// and in tests and load benchmarks.
//
// Realtime faults, sent by the client as {"type":"mock.fault","fault":F,...}:
//
//   - close: close frame with "code" (default 1000) and "reason".
//   - rst: drop the TCP connection without a close frame (RST).
//   - stall: stop reading, writing and answering pings; the socket stays
//     open until Server.Close (even if the peer goes away).
//   - error: error event with "code" (default mock_error) and "error_type" (default
//     invalid_request_error) and optional "message"; with "close_code", then
//     a close frame with that code and reason "<error_type>.<code>".
//   - expire: error session_expired, then close 1001 with its message.
//   - echo: from now on every data frame is sent back verbatim, unparsed.
//   - slow: "delta_interval_ms" (default 100) between this session's
//     output deltas.
//
// GPT-Live faults, accepted at any time after session.start (also while
// session.started is pending):
//
//   - close, rst, stall: as for Realtime (stall also stops the output track).
//   - error: an error event (GPT-Live shape) with "code" (default
//     mock_error), "error_type" (default invalid_request_error) and
//     optional "message"; with "close_code", then a close frame with that
//     code and reason "<error_type>.<code>". The session goes on otherwise
//     (e.g. code credit_balance_exhausted before session.started).
//   - expire: session.closed with reason expired and the usage so far, then
//     close 1000.
//   - content: session.closed with reason content, then close 1000.
//
// Realtime usage numbers in response.done are derived from audio lengths:
// input audio_tokens = ceil(committed ms / 100), input text_tokens =
// 10 + len(instructions)/4, cached_tokens = that text_tokens from the second
// response of a session on, output audio_tokens = ceil(sent ms / 50), output
// text_tokens = transcript words sent. GPT-Live usage seconds are the session
// timeline: 0.1 s per output delta sent (wall-clock seconds since
// session.started at the default pace).
package mock

import (
	"cmp"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Options configures a Server.
type Options struct {
	// APIKey, if non-empty, is the credential every session must present.
	// Realtime: as "Authorization: Bearer KEY", an "api-key" header or query
	// parameter, or the subprotocol "openai-insecure-api-key.KEY"; a wrong or
	// missing one is reported in-band like OpenAI does: the upgrade
	// succeeds, then an error event (invalid_request_error, invalid_api_key)
	// and close 3000. GPT-Live: as "Authorization: Bearer KEY" or an
	// "api-key" header; a wrong or missing one gets HTTP 401 with a JSON
	// error body at the upgrade.
	APIKey string
	// DeltaInterval is the pause between the audio deltas of a response.
	// Zero sends them in a burst, faster than real time.
	DeltaInterval time.Duration
	// DeltaBytes is the raw audio per output delta; default 4800 (100 ms of
	// 24 kHz pcm16).
	DeltaBytes int
	// StartDelay is how long a GPT-Live session takes from session.start to
	// session.started (the service takes about 1.1 s). Zero answers at once.
	StartDelay time.Duration
	// LiveDeltaInterval paces a GPT-Live session's output audio track: one
	// session.output_audio.delta carrying 100 ms of audio every interval,
	// for the whole session. Zero means DefaultLiveDeltaInterval (real
	// time); a shorter interval runs the track, and with it the session
	// timeline, faster than real time.
	LiveDeltaInterval time.Duration
	// UsageInterval is the pause between a GPT-Live session's
	// session.usage.updated events. Zero means DefaultUsageInterval.
	UsageInterval time.Duration
	// OnHandshake, if set, is called with every upgrade request before it is
	// answered.
	OnHandshake func(r *http.Request)
	// Logger receives the mock's logs (sessions at debug, faults at info);
	// nil discards them. Credentials are never logged.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	// DefaultDeltaBytes is the audio per Realtime output delta when
	// Options.DeltaBytes is 0.
	DefaultDeltaBytes = 4800
	// DefaultLiveDeltaInterval is the pace of a GPT-Live output track when
	// Options.LiveDeltaInterval is 0: real time.
	DefaultLiveDeltaInterval = 100 * time.Millisecond
	// DefaultUsageInterval is the pause between GPT-Live usage events when
	// Options.UsageInterval is 0.
	DefaultUsageInterval = 5 * time.Second
)

const (
	// handshakeTimeout bounds reading the upgrade request and writing its answer.
	handshakeTimeout = 10 * time.Second
	// defaultCloseWait is how long a session waits for the peer's close
	// frame after sending its own.
	defaultCloseWait = time.Second
	// killWriteTimeout bounds the going-away close frame Close sends.
	killWriteTimeout = 100 * time.Millisecond
)

// Server is a mock OpenAI voice backend (Realtime and GPT-Live). Its
// methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	// closeWait is how long a session waits for the peer's close frame
	// after sending its own (defaultCloseWait; tests shorten it).
	closeWait time.Duration

	mu      sync.Mutex
	closed  bool                      // guarded by mu; set once by Close
	servers map[*http.Server]struct{} // guarded by mu; from Serve and Start
	conns   map[*conn]struct{}        // guarded by mu; live sessions
	// wg counts the goroutines Start started, and every ServeHTTP call in
	// progress (a session runs in its ServeHTTP call). Add only under mu
	// while !closed.
	wg sync.WaitGroup
}

// New returns a Server; it listens only once Serve or Start is called, or
// when used as an http.Handler.
func New(opts Options) *Server {
	if opts.DeltaBytes <= 0 {
		opts.DeltaBytes = DefaultDeltaBytes
	}
	if opts.DeltaInterval < 0 {
		opts.DeltaInterval = 0
	}
	if opts.StartDelay < 0 {
		opts.StartDelay = 0
	}
	if opts.LiveDeltaInterval <= 0 {
		opts.LiveDeltaInterval = DefaultLiveDeltaInterval
	}
	if opts.UsageInterval <= 0 {
		opts.UsageInterval = DefaultUsageInterval
	}
	log := cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))
	return &Server{
		opts:      opts,
		log:       log,
		closeWait: defaultCloseWait,
		servers:   make(map[*http.Server]struct{}),
		conns:     make(map[*conn]struct{}),
	}
}

// ServeHTTP upgrades the request to a WebSocket and runs the session until
// it ends. A path ending in /live/sessions gets a GPT-Live session (the
// credential is checked at the upgrade: 401 without it); any other path a
// Realtime session whose model is the "model" query parameter, else
// "gpt-realtime". After Close it answers 503.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "mock upstream closed", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	if f := s.opts.OnHandshake; f != nil {
		f(r)
	}
	live := isLivePath(r.URL.Path)
	if live && !s.liveAuthorized(w, r) {
		return
	}
	u := ws.HTTPUpgrader{Timeout: handshakeTimeout}
	if !live {
		u.Protocol = func(p string) bool { return p == "realtime" }
	}
	nc, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		s.log.Debug("mock upstream: upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	var c *conn
	if live {
		c = newLiveConn(s, nc, rw.Reader)
	} else {
		c = newConn(s, nc, rw.Reader, r)
	}
	if !s.register(c) {
		nc.Close()
		return
	}
	defer s.unregister(c)
	c.run(s.authorized(r))
}

// Serve accepts connections on ln until Close, and returns nil then. It
// returns net.ErrClosed at once (closing ln) if Close was already called.
func (s *Server) Serve(ln net.Listener) error {
	hs := s.newHTTPServer()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.servers[hs] = struct{}{}
	s.mu.Unlock()
	return s.serve(hs, ln)
}

// Start listens on addr ("127.0.0.1:0" for an ephemeral port) and serves in
// a goroutine until Close. It returns the address listened on.
func (s *Server) Start(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := s.newHTTPServer()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil, net.ErrClosed
	}
	s.servers[hs] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if err := s.serve(hs, ln); err != nil {
			s.log.Error("mock upstream: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return ln.Addr(), nil
}

// Close stops every listener, closes every live session (with a best-effort
// close frame 1001, except on stalled sessions) and waits for the
// goroutines the Server started and the ServeHTTP calls in progress. It is
// idempotent: later calls wait the same way and return nil too.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	servers := make([]*http.Server, 0, len(s.servers))
	for hs := range s.servers {
		servers = append(servers, hs)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, hs := range servers {
		hs.Close()
	}
	for _, c := range conns {
		c.kill()
	}
	s.wg.Wait()
	return nil
}

// ActiveSessions is the number of live WebSocket sessions.
func (s *Server) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: handshakeTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func (s *Server) serve(hs *http.Server, ln net.Listener) error {
	defer func() {
		s.mu.Lock()
		delete(s.servers, hs)
		s.mu.Unlock()
	}()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// enter counts a ServeHTTP call in s.wg unless the Server is closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) register(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// insecureKeyPrefix marks the subprotocol token that carries a credential.
const insecureKeyPrefix = "openai-insecure-api-key."

// keyMatches reports whether got is Options.APIKey (compared in constant time).
func (s *Server) keyMatches(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.APIKey)) == 1
}

// headerAuthorized reports whether r carries Options.APIKey in a header:
// "Authorization: Bearer KEY" or "api-key: KEY".
func (s *Server) headerAuthorized(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") && s.keyMatches(strings.TrimSpace(h[7:])) {
		return true
	}
	return s.keyMatches(r.Header.Get("api-key"))
}

// authorized reports whether a Realtime request r carries Options.APIKey
// (or none is required): in a header, the api-key query parameter or the
// subprotocol.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" || s.headerAuthorized(r) || s.keyMatches(r.URL.Query().Get("api-key")) {
		return true
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for tok := range strings.SplitSeq(h, ",") {
			tok = strings.TrimSpace(tok)
			if strings.HasPrefix(tok, insecureKeyPrefix) && s.keyMatches(tok[len(insecureKeyPrefix):]) {
				return true
			}
		}
	}
	return false
}
