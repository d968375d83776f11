package config

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeYAML writes content to a fresh file and returns its path.
func writeYAML(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// isolateEnv blanks every TETHER_* override for the test, so the caller's
// environment cannot change what Load returns (empty values are ignored).
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, key := range envKeys() {
		t.Setenv(envName(key), "")
	}
}

// problemPaths returns the paths of err's problems, failing the test unless
// err is a *ValidationError.
func problemPaths(t *testing.T, err error) []string {
	t.Helper()
	ve, ok := err.(*ValidationError)
	if !ok {
		t.Fatalf("error = %v (%T), want *ValidationError", err, err)
	}
	paths := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		paths[i] = p.Path
	}
	return paths
}

// problemAt returns the message of the problem at path, or "" if none.
func problemAt(err error, path string) string {
	ve, ok := err.(*ValidationError)
	if !ok {
		return ""
	}
	for _, p := range ve.Problems {
		if p.Path == path {
			return p.Message
		}
	}
	return ""
}
