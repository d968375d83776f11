package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/internal/cli"
)

// configPath resolves the config file: --config, else $TETHER_CONFIG, else
// ./tether.yaml when present, else none (built-in defaults).
func configPath(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv("TETHER_CONFIG"); p != "" {
		return p
	}
	if _, err := os.Stat("tether.yaml"); err == nil {
		return "tether.yaml"
	}
	return ""
}

func newConfigCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Validate or print configuration"}
	var file string
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check a config file; list every problem with its key path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := configPath(file)
			if _, err := config.Load(path); err != nil {
				return &cli.ExitError{Code: 1, Msg: fmt.Sprintf("tether: invalid config %s:\n%v", displayPath(path), err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", displayPath(path))
			return nil
		},
	}
	validate.Flags().StringVar(&file, "config", "", "config file (default $TETHER_CONFIG or ./tether.yaml)")
	defaults := &cobra.Command{
		Use:   "defaults",
		Short: "Print the full default configuration as commented YAML",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			_, _ = cmd.OutOrStdout().Write(config.DefaultsYAML())
		},
	}
	c.AddCommand(validate, defaults)
	return c
}

func displayPath(p string) string {
	if p == "" {
		return "(built-in defaults)"
	}
	return p
}
