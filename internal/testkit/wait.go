package testkit

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often [WaitFor] checks its condition.
const PollInterval = 10 * time.Millisecond

// WaitFor polls cond every [PollInterval] until it holds, and fails the test
// if timeout passes first; what names the condition in the failure.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Recv receives from ch, and fails the test if nothing comes within
// timeout; what names what was awaited in the failure.
func Recv[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// Poll checks cond every [PollInterval] until it holds (true) or timeout
// passes (false).
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
	return true
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a log sink or a
// child process's output.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written so far.
func (s *SyncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *SyncBuffer) String() string { return string(s.Bytes()) }

// Listen returns a loopback listener on a free port, closed when the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// DeadAddr returns a loopback address nothing listens on.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Missing skips the test because a tool it needs is missing, or fails it
// when the environment variable require is set (CI, where the tool must be).
func Missing(t testing.TB, require, format string, args ...any) {
	t.Helper()
	if os.Getenv(require) != "" {
		t.Fatalf(require+" is set but "+format, args...)
	}
	t.Skipf(format+" (set "+require+"=1 to make this a failure)", args...)
}

// Tool finds an external program for a test: $env if set, else name on the
// PATH; when there is neither it calls Missing with why.
func Tool(t testing.TB, env, name, require, why string) string {
	t.Helper()
	if bin := os.Getenv(env); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	Missing(t, require, "%s is not installed: %s (or set %s=/path/to/%s)", name, why, env, name)
	return ""
}
