package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/metrics"
	"github.com/tetherproxy/tether/state"
	tethertls "github.com/tetherproxy/tether/tls"
)

// newEnforcer builds the limits' store (state section) and the enforcer
// that holds each client to the limits section.
func newEnforcer(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*limits.Enforcer, state.Store, error) {
	store, err := newStore(cfg.State, cfg.Limits, m, log)
	if err != nil {
		return nil, nil, err
	}
	opts := limits.Options{Limits: cfg.Limits, Pricing: cfg.Pricing, Store: store, Logger: log.With("component", "limits")}
	if cfg.State.Backend == config.StateBackendRedis {
		// Spend on other replicas reaches this one's calls as often as its
		// own reaches Redis.
		opts.CheckInterval = cfg.State.Redis.FlushInterval
	}
	e := limits.New(opts)
	if cfg.Limits.ClientMetrics {
		m.WatchSpending(e.Spending)
	}
	return e, store, nil
}

// newStore returns the store the state section names.
func newStore(c config.State, l limits.Config, m *metrics.Metrics, log *slog.Logger) (state.Store, error) {
	if c.Backend != config.StateBackendRedis {
		return state.NewMemory(), nil
	}
	r := c.Redis
	password, err := redisPassword(r)
	if err != nil {
		return nil, err
	}
	tlsConf, err := redisTLS(r)
	if err != nil {
		return nil, err
	}
	s, err := state.NewRedis(state.RedisOptions{
		URL: r.URL, Username: r.Username, Password: password, TLS: tlsConf, KeyPrefix: r.KeyPrefix,
		Timeout: r.Timeout, LeaseTTL: r.LeaseTTL, FlushInterval: r.FlushInterval, Window: l.Window,
		FailClosed: r.OnError == config.StateFailClosed, Logger: log.With("component", "state"),
		OnError: m.StateError,
	})
	if err != nil {
		return nil, fmt.Errorf("state.redis: %w", err)
	}
	return s, nil
}

// redisPassword reads the password from password_file or password_env; a
// source that is named but empty is an error (a Redis that wants a password
// would refuse every round trip, and fail_open would hide it).
func redisPassword(r config.StateRedis) (string, error) {
	switch {
	case r.PasswordFile != "":
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("state.redis.password_file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("state.redis.password_file: %s is empty", r.PasswordFile)
		}
		return p, nil
	case r.PasswordEnv != "":
		p := os.Getenv(r.PasswordEnv)
		if p == "" {
			return "", fmt.Errorf("state.redis.password_env: %s is not set", r.PasswordEnv)
		}
		return p, nil
	}
	return "", nil
}

// redisTLS is the TLS configuration towards Redis: nil leaves it to the
// URL's scheme.
func redisTLS(r config.StateRedis) (*tls.Config, error) {
	if !r.TLS.Enabled && r.TLS.CAFile == "" && r.TLS.ServerName == "" && !strings.HasPrefix(r.URL, "rediss:") {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.TLS.ServerName}
	roots, err := tethertls.TrustedRoots(r.TLS.CAFile)
	if err != nil {
		return nil, fmt.Errorf("state.redis.tls.ca_file: %w", err)
	}
	conf.RootCAs = roots
	return conf, nil
}
