package main

import (
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/upstreams/mock"
)

func newMockUpstreamCmd() *cobra.Command {
	var listen, apiKey, level string
	c := &cobra.Command{
		Use:   "mock-upstream",
		Short: "Run the built-in mock realtime backend alone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr(), level, "text")
			srv := mock.New(mock.Options{APIKey: apiKey, Logger: log})
			addr, err := srv.Start(listen)
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("tether: mock-upstream: %v", err)}
			}
			log.Info("mock upstream listening", "url", fmt.Sprintf("ws://%s/v1/realtime", addr))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return srv.Close()
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8081", "address to listen on")
	c.Flags().StringVar(&apiKey, "api-key", "", "require this credential (default: accept any)")
	c.Flags().StringVar(&level, "log-level", "info", "debug | info | warn | error")
	return c
}
