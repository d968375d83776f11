// Command tether is a sidecar WebSocket proxy that adds lifecycle
// guarantees in front of OpenAI Realtime and other voice backends.
package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		cli.Exit("tether", err)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "A sidecar proxy with lifecycle guarantees for realtime voice WebSockets",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newConfigCmd(), newMockUpstreamCmd(), newVersionCmd())
	for _, extra := range extraCommands {
		root.AddCommand(extra())
	}
	return root
}

// extraCommands are registered by other files of this package (talk).
var extraCommands []func() *cobra.Command

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "tether %s\n", version)
		},
	}
}
