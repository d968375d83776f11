package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/tetherproxy/tether/config"
)

// tlsListener wraps the client listener according to the tls section.
// It returns a close function for background work (certificate renewal, file watching).
func tlsListener(cfg config.TLS, ln net.Listener, log *slog.Logger) (net.Listener, func(), error) {
	if cfg.Mode == "" || cfg.Mode == "off" {
		return ln, func() {}, nil
	}
	return nil, nil, fmt.Errorf("tls.mode %q is not supported by this build", cfg.Mode)
}
