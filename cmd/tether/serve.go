package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/auth"
	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/cli"
	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/metrics"
	"github.com/tetherproxy/tether/proxy"
	"github.com/tetherproxy/tether/state"
	"github.com/tetherproxy/tether/upstreams"
	"github.com/tetherproxy/tether/upstreams/mock"
)

func newLogger(w io.Writer, level, format string) *slog.Logger {
	lvl := config.Log{Level: level}.SlogLevel()
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func newServeCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := configPath(file)
			cfg, err := config.Load(path)
			if err != nil {
				// One line for serve (logs, kubectl describe); `config validate` lists them one per line.
				return &cli.ExitError{Code: 1, Msg: fmt.Sprintf("tether: invalid config %s: %s", displayPath(path),
					strings.ReplaceAll(err.Error(), "\n", "; "))}
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log.Level, cfg.Log.Format)
			setGCPercent()
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			if err := serve(cfg, path, log, sigs); err != nil {
				return &cli.ExitError{Code: 1, Msg: "tether: " + err.Error()}
			}
			return nil
		},
	}
	c.Flags().StringVar(&file, "config", "", "config file (default $TETHER_CONFIG or ./tether.yaml; none: built-in defaults)")
	return c
}

// gcPercent is the garbage collector's target (GOGC) tether serves with
// unless GOGC is set. A relayed frame allocates nothing, so garbage comes
// from session setup and rare events alone and a tighter target costs no
// measurable CPU, while the heap the process keeps for its idle sessions
// stays closer to what they hold (README, Performance).
const gcPercent = 50

// setGCPercent applies gcPercent unless GOGC is set (an empty GOGC counts
// as unset, as it does for the runtime).
func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// app is a running tether: listeners, registry, upstreams.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	mgr     *lifecycle.Manager
	dialer  *upstreams.Dialer
	limits  *limits.Enforcer
	store   state.Store
	mock    *mock.Server
	// mockURL is the built-in mock's address when it runs.
	mockURL string

	clientLn, adminLn net.Listener
	// tlsClose stops certificate maintenance; nil when TLS is off or not started.
	tlsClose func()
	// telShutdown flushes queued spans; nil when telemetry did not start.
	telShutdown func(context.Context) error
	clientSrv   *http.Server
	adminSrv    *http.Server
}

// Exit budget after the first signal: the process exits within
// drain_timeout + 2 s whatever happens (the contract). Drain itself returns
// by drain_timeout + about 1.25 s (closing sessions is bounded); closing the
// listeners and flushing spans get what is left, minus exitSlack for the
// process to go. After a second signal they get at most forcedClose.
const (
	exitBudget  = 2 * time.Second
	exitSlack   = 150 * time.Millisecond
	forcedClose = time.Second
)

// serve runs tether until a signal drains it. The first signal drains; a
// second closes every session (and cancels every upstream dial) at once,
// whether it arrives during the drain or while the listeners close.
func serve(cfg *config.Config, path string, log *slog.Logger, sigs <-chan os.Signal) error {
	a, err := start(cfg, log)
	if err != nil {
		return err
	}
	log.Info("tether started", "version", version, "config", displayPath(path),
		"listen", a.clientLn.Addr().String(), "paths", cfg.Server.Paths, "live_paths", cfg.Server.LivePaths,
		"admin", a.adminLn.Addr().String(), "upstreams", a.describeUpstreams())
	sig := <-sigs
	exitBy := time.Now().Add(cfg.Lifecycle.DrainTimeout + exitBudget - exitSlack)
	log.Info("signal received: draining", "signal", sig.String())
	// The watcher lives until serve returns: a second signal is honoured in
	// every phase, not only while Drain runs.
	force, forceNow := context.WithCancel(context.Background())
	defer forceNow()
	quit, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case s := <-sigs:
			log.Info("second signal: closing every session now", "signal", s.String())
			forceNow()
		case <-quit:
		}
	}()
	defer func() { close(quit); <-watched }()
	a.mgr.Drain(force)
	closeBy := exitBy
	forced := force.Err() != nil
	if forced {
		closeBy = earliest(closeBy, time.Now().Add(forcedClose))
	}
	ctx, cancel := context.WithDeadline(context.Background(), closeBy)
	defer cancel()
	if !forced {
		// A second signal while closing: stop waiting for anything.
		stop := context.AfterFunc(force, cancel)
		defer stop()
	}
	a.closeWithin(ctx)
	log.Info("tether stopped")
	return nil
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// start builds everything and starts the listeners. On error, whatever was
// started is closed again.
func start(cfg *config.Config, log *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, log: log, metrics: metrics.New(metrics.Options{
		KnownErrorCodes:     realtime.KnownErrorCodes,
		ResponseStatuses:    realtime.ResponseStatuses,
		FatalUpstreamErrors: cfg.Lifecycle.FatalUpstreamErrors,
		HandshakeReasons:    proxy.RejectReasons,
	})}
	defer func() {
		if err != nil {
			a.close() // a itself, not the (nil) result
		}
	}()
	list, err := a.useBuiltinMock(upstreamConfigs(cfg, log))
	if err != nil {
		return nil, err
	}
	if err := a.newDialer(list); err != nil {
		return nil, err
	}
	authn, err := newAuthenticator(cfg.Auth)
	if err != nil {
		return nil, err
	}
	hooks, err := a.startTelemetry()
	if err != nil {
		return nil, err
	}
	if a.limits, a.store, err = newEnforcer(cfg, a.metrics, log); err != nil {
		return nil, err
	}
	// Last: the other hooks see an answer before the budget it spent ends the session.
	hooks = append(hooks, a.limits)
	a.mgr = newManager(cfg, hooks, log)
	a.metrics.WatchRelayed(a.mgr)
	if err := a.bindListeners(); err != nil {
		return nil, err
	}
	a.serveListeners(a.newClientMux(authn))
	return a, nil
}

// upstreamConfigs returns a copy of the configured upstreams, or the
// automatic choice (saying which in the log) when none is configured.
func upstreamConfigs(cfg *config.Config, log *slog.Logger) []upstreams.Config {
	if cfg.Upstreams != nil {
		return slices.Clone(cfg.Upstreams)
	}
	list := config.AutoUpstreams(os.Getenv)
	if list[0].Type == upstreams.KindMock {
		log.Info("no upstream configured and OPENAI_API_KEY is not set: using the built-in mock upstream")
	} else {
		log.Info("no upstream configured: using OpenAI with OPENAI_API_KEY")
	}
	return list
}

// useBuiltinMock points every mock upstream without a url at the built-in
// mock backend, which it starts on first need, and returns list.
func (a *app) useBuiltinMock(list []upstreams.Config) ([]upstreams.Config, error) {
	for i := range list {
		u := &list[i]
		if u.Type != upstreams.KindMock || u.URL != "" {
			continue
		}
		builtinLive := u.LiveURL == ""
		if a.mock == nil {
			a.mock = mock.New(mock.Options{Logger: a.log.With("component", "mock"), StartDelay: builtinMockStartDelay})
			addr, err := a.mock.Start("127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("start built-in mock upstream: %w", err)
			}
			a.mockURL = "ws://" + addr.String()
			a.log.Debug("built-in mock upstream", "url", a.mockURL)
		}
		u.URL = a.mockURL + config.DefaultServerPath
		if builtinLive {
			u.LiveURL = a.mockURL + config.DefaultLivePath
		}
	}
	return list, nil
}

// newDialer builds the upstream dialer, reporting each attempt, and has the
// metrics watch each upstream's availability.
func (a *app) newDialer(list []upstreams.Config) (err error) {
	if a.dialer, err = upstreams.NewDialer(list); err != nil {
		return err
	}
	a.dialer.OnAttempt = a.observeDial
	for _, u := range a.dialer.Upstreams() {
		a.metrics.WatchUpstream(u.Name, func() bool { return u.Available(time.Now()) })
	}
	return nil
}

// observeDial records one upstream dial attempt in the metrics and logs a
// failure and the start of a cool-down.
func (a *app) observeDial(at upstreams.Attempt) {
	if at.Result != "cooldown" {
		a.metrics.ObserveDial(at.Upstream, at.Result, at.Duration)
	}
	if at.Result != "ok" && at.Result != "cooldown" {
		a.log.Warn("upstream dial attempt failed", "upstream", at.Upstream, "result", at.Result,
			"status", at.Status, "err", at.Err)
	}
	if at.EnteredCooldown {
		a.log.Warn("upstream skipped for its cool-down after repeated failures", "upstream", at.Upstream)
	}
}

// startTelemetry starts tracing and returns the lifecycle hooks: the
// metrics, and the tracer when traces are exported.
func (a *app) startTelemetry() ([]lifecycle.Hooks, error) {
	traceHooks, telShutdown, err := setupTelemetry(a.cfg.Telemetry, a.metrics, a.log)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	a.telShutdown = telShutdown
	hooks := []lifecycle.Hooks{a.metrics}
	if traceHooks != nil {
		hooks = append(hooks, traceHooks)
	}
	return hooks, nil
}

// newManager builds the session registry from the lifecycle section and
// the session limits.
func newManager(cfg *config.Config, hooks []lifecycle.Hooks, log *slog.Logger) *lifecycle.Manager {
	lc := cfg.Lifecycle
	return lifecycle.NewManager(lifecycle.Options{
		Hooks:               hooks,
		ClientHeartbeat:     lifecycle.HeartbeatOptions{Interval: lc.Heartbeat.Client.Interval, Timeout: lc.Heartbeat.Client.Timeout},
		UpstreamHeartbeat:   lifecycle.HeartbeatOptions{Interval: lc.Heartbeat.Upstream.Interval, Timeout: lc.Heartbeat.Upstream.Timeout},
		IdleTimeout:         lc.IdleTimeout,
		MaxDuration:         lc.MaxDuration,
		DrainTimeout:        lc.DrainTimeout,
		FatalUpstreamErrors: lc.FatalUpstreamErrors,
		MaxSessions:         cfg.Server.MaxSessions,
		CloseTimeout:        lc.Live.CloseTimeout,
		Quiet:               lc.Live.Quiet,
		Resume: lifecycle.ResumeOptions{
			Enabled:    lc.Resume.Enabled,
			On:         lc.Resume.On,
			MaxResumes: lc.Resume.MaxResumes,
			History:    dialect.HistoryBounds{Items: lc.Resume.History.Items, Bytes: lc.Resume.History.Bytes},
			Buffer:     lc.Resume.Buffer,
			Notify:     lc.Resume.Notify,
		},
		Logger: log,
	})
}

// newClientMux serves the upgrade handler on every server path.
func (a *app) newClientMux(authn auth.Authenticator) *http.ServeMux {
	cfg := a.cfg
	handler := proxy.NewHandler(a.mgr, a.dialer, proxy.HandlerOptions{
		HandshakeTimeout:   cfg.Server.HandshakeTimeout,
		AllowedOrigins:     cfg.Server.AllowedOrigins,
		AllowMissingOrigin: cfg.Server.AllowMissingOrigin,
		Auth:               authn,
		Relay:              relayOptions(cfg, a.dialer.Secrets),
		Logger:             a.log,
		Rejections:         a.metrics,
		Limits:             a.limits,
	})
	mux := http.NewServeMux()
	for _, p := range cfg.Server.Paths {
		mux.Handle(p, handler)
	}
	for _, p := range cfg.Server.LivePaths {
		mux.HandleFunc(p, handler.ServeLive)
	}
	return mux
}

// relayOptions tune each session's relay from cfg. secrets lists the
// upstream keys the relay's redactor scrubs; keys from files are read
// again at each dial, and so is the redactor's list.
func relayOptions(cfg *config.Config, secrets func() []string) proxy.Options {
	return proxy.Options{
		MaxFrameBytes: cfg.Server.MaxFrameBytes,
		ParkAfter:     cfg.Server.ParkAfter,
		Redactor:      proxy.NewRedactor(secrets()...).WithDynamic(secrets),
	}
}

// bindListeners binds the client listener (wrapped in TLS per the tls section)
// and the admin listener.
func (a *app) bindListeners() (err error) {
	if a.clientLn, err = listen("server.listen", a.cfg.Server.Listen); err != nil {
		return err
	}
	tlsLn, tlsClose, err := tlsListener(a.cfg.TLS, a.clientLn, a.log)
	if err != nil {
		return fmt.Errorf("tls: %w", err) // a.close closes the plain listener
	}
	a.clientLn, a.tlsClose = tlsLn, tlsClose
	if a.adminLn, err = listen("admin.listen", a.cfg.Admin.Listen); err != nil {
		return err
	}
	return nil
}

// adminReadHeaderTimeout bounds reading a request's header on the admin listener.
const adminReadHeaderTimeout = 10 * time.Second

// serveListeners starts the client server (clientMux) and the admin server
// on the bound listeners.
func (a *app) serveListeners(clientMux http.Handler) {
	errorLog := slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)
	a.clientSrv = &http.Server{
		Handler:           clientMux,
		ReadHeaderTimeout: a.cfg.Server.HandshakeTimeout,
		IdleTimeout:       a.cfg.Server.HandshakeTimeout, // idle keep-alives; net/http clears the read deadline before a hijack
		ErrorLog:          errorLog,
	}
	a.adminSrv = &http.Server{
		Handler:           newAdminMux(a.mgr, a.metrics, a.limits, a.cfg.Admin.PProf),
		ReadHeaderTimeout: adminReadHeaderTimeout,
		ErrorLog:          errorLog,
	}
	go a.run(a.clientSrv, a.clientLn)
	go a.run(a.adminSrv, a.adminLn)
}

func (a *app) run(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
	}
}

// newAuthenticator builds client authentication from the auth section.
func newAuthenticator(c config.Auth) (auth.Authenticator, error) {
	switch c.Mode {
	case auth.ModeToken:
		t, err := auth.NewTokens(c.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		return t, nil
	case auth.ModeJWT:
		j, err := auth.NewJWT(c.JWT.HMACSecretFile, c.JWT.Issuer, c.JWT.Audience)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt: %w", err)
		}
		return j, nil
	}
	return nil, nil
}

func listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s: %s is already in use", key, addr)
		}
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return ln, nil
}

func (a *app) describeUpstreams() string {
	var parts []string
	for _, u := range a.dialer.Upstreams() {
		parts = append(parts, fmt.Sprintf("%s(%s %s)", u.Name, u.Type, redact.URL(u.URL)))
	}
	return strings.Join(parts, ", ")
}

// close stops listeners and the built-in mock. Safe after a partial start.
func (a *app) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	a.closeWithin(ctx)
}

// closeWithin is close, done by ctx's deadline: waits (connections still in
// a handshake, sessions still closing, the span flush, at most 5 s) give up
// when ctx is done.
func (a *app) closeWithin(ctx context.Context) {
	shutdown := func(srv *http.Server) {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}
	if a.clientSrv != nil {
		shutdown(a.clientSrv)
	} else if a.clientLn != nil {
		_ = a.clientLn.Close()
	}
	if a.adminSrv != nil {
		shutdown(a.adminSrv)
	} else if a.adminLn != nil {
		_ = a.adminLn.Close()
	}
	if a.mgr != nil {
		a.mgr.CloseAll(lifecycle.ReasonShutdown)
		if !a.mgr.WaitContext(ctx) {
			a.log.Warn("exiting with sessions still closing", "sessions", a.mgr.Len())
		}
	}
	if a.limits != nil {
		a.limits.Stop()
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Warn("closing the state store", "err", err)
		}
	}
	if a.telShutdown != nil {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		if err := a.telShutdown(fctx); err != nil {
			a.log.Warn("flushing spans", "err", err)
		}
		fcancel()
	}
	if a.tlsClose != nil {
		a.tlsClose()
	}
	if a.mock != nil {
		// Bounded too: the mock writes a going-away close on each of its sessions.
		done := make(chan struct{})
		go func() { _ = a.mock.Close(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}
