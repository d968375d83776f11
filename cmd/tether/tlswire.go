package main

import (
	"log/slog"
	"net"

	"github.com/tetherproxy/tether/config"
	tethertls "github.com/tetherproxy/tether/tls"
)

// tlsListener wraps the client listener according to the tls section.
// It returns a close function for background work (certificate renewal, file watching).
func tlsListener(cfg config.TLS, ln net.Listener, log *slog.Logger) (net.Listener, func(), error) {
	m, err := tethertls.New(ln, tethertls.Options{
		Mode:     cfg.Mode,
		CertFile: cfg.CertFile,
		KeyFile:  cfg.KeyFile,
		ACME: tethertls.ACMEOptions{
			Email:      cfg.ACME.Email,
			CAURL:      cfg.ACME.CAURL,
			CARootFile: cfg.ACME.CARootFile,
			Domains:    cfg.ACME.Domains,
			StorageDir: cfg.ACME.StorageDir,
			OnDemand:   cfg.ACME.OnDemand,
			HTTPListen: cfg.ACME.HTTPListen,
		},
		Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	if cfg.Mode.ServesTLS() {
		log.Info("serving wss:// on the client listener", "tls_mode", cfg.Mode)
	}
	return m.Listener(), m.Close, nil
}
