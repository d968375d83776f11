package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A local run finds tether on $PATH when none sits beside the executable,
// and says how to give one when there is none.
func TestFindTether(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	if _, err := findTether(); err == nil || !strings.Contains(err.Error(), "--exe") {
		t.Fatalf("no tether anywhere: err = %v, want one naming --exe", err)
	}
	dir := t.TempDir()
	want := filepath.Join(dir, "tether")
	if err := os.WriteFile(want, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	got, err := findTether()
	if err != nil || got != want {
		t.Fatalf("findTether() = %q, %v; want %q", got, err, want)
	}
}

// A tether that cannot start is an error, with what was started undone.
func TestStartLocalFails(t *testing.T) {
	for _, exe := range []string{filepath.Join(t.TempDir(), "missing"), "/bin/false"} {
		l, err := startLocal(t.Context(), exe, 10)
		if err == nil || l != nil {
			t.Errorf("startLocal(%s) = %v, %v; want an error", exe, l, err)
		}
	}
}
