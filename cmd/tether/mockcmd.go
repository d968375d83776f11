package main

import (
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/internal/cli"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// builtinMockStartDelay is how long the built-in mock (in `tether serve`
// and `tether mock-upstream`) takes to answer session.start with
// session.started; the real service takes about 1.1 s.
const builtinMockStartDelay = 100 * time.Millisecond

func newMockUpstreamCmd() *cobra.Command {
	var listen, apiKey, level string
	c := &cobra.Command{
		Use:   "mock-upstream",
		Short: "Run the built-in mock voice backend (OpenAI Realtime and GPT-Live) alone",
		Long: `mock-upstream runs tether's built-in mock backend on its own. It speaks two
dialects, chosen by the path:

  /v1/live/sessions (any path ending in /live/sessions)  GPT-Live: the client
      sends session.start first; a continuous 100 ms output audio track echoes
      the caller's audio, with transcript deltas and cumulative usage;
      session.close is answered by session.closed.
  any other path (e.g. /v1/realtime?model=gpt-realtime)  the OpenAI Realtime
      GA dialect: session.created on connect, responses that echo the
      committed audio.

Both obey the mock.fault client events (close, rst, stall, error, expire, and
for Realtime echo and slow, for GPT-Live content).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr(), level, "text")
			srv := mock.New(mock.Options{APIKey: apiKey, Logger: log, StartDelay: builtinMockStartDelay})
			addr, err := srv.Start(listen)
			if err != nil {
				return &cli.ExitError{Code: 1, Msg: fmt.Sprintf("tether: mock-upstream: %v", err)}
			}
			log.Info("mock upstream listening",
				"url", fmt.Sprintf("ws://%s/v1/realtime", addr),
				"live_url", fmt.Sprintf("ws://%s/v1/live/sessions", addr))
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
