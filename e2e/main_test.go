// Package e2e holds tether's end-to-end tests: they build the real binary
// once, start it from the fixture configs under testdata/, and drive it from
// outside exactly as a user would (WebSocket clients, the admin listener,
// signals, the CLI).
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// tetherBin is the path of the binary built by TestMain.
var tetherBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(2)
	}
	tetherBin = filepath.Join(dir, "tether")
	// Build in the root module (its go.mod and go.sum), as a user would.
	build := exec.Command("go", "build", "-o", tetherBin, "./cmd/tether")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build ../cmd/tether:", err)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}
