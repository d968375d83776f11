package bench

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the bench started (the mock upstream or tether). Its
// stderr is scanned for the line that says it is ready, then kept (the last
// lines) for error reports.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and stderr is drained
	err  error         // exit status; valid after done

	mu    sync.Mutex
	tail  []string // guarded by mu; last lines of stderr
	warns []string // guarded by mu; last warning and error lines
}

const (
	tailLines = 40
	warnLines = 5
)

// isWarning spots warning and error lines of tether's JSON or text logs.
func isWarning(line string) bool {
	for _, l := range []string{`"level":"WARN"`, `"level":"ERROR"`, "level=WARN", "level=ERROR"} {
		if strings.Contains(line, l) {
			return true
		}
	}
	return false
}

// warnings returns the last warning and error lines the child logged.
func (c *child) warnings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.warns...)
}

// startChild runs exe with args and waits (up to timeout) until ready
// returns a non-empty value for a line of its stderr.
func startChild(ctx context.Context, name, exe string, args []string, timeout time.Duration, ready func(line string) string) (*child, string, error) {
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = childAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		searching := true
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.tail = append(c.tail, line)
			if len(c.tail) > tailLines {
				c.tail = c.tail[len(c.tail)-tailLines:]
			}
			if isWarning(line) {
				c.warns = append(c.warns, line)
				if len(c.warns) > warnLines {
					c.warns = c.warns[len(c.warns)-warnLines:]
				}
			}
			c.mu.Unlock()
			if searching {
				if v := ready(line); v != "" {
					found <- v
					searching = false
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case v := <-found:
		return c, v, nil
	case <-c.done:
		return nil, "", fmt.Errorf("%s exited before it was ready (%v):\n%s", name, c.err, c.lastLines())
	case <-t.C:
		c.stop()
		return nil, "", fmt.Errorf("%s not ready after %s:\n%s", name, timeout, c.lastLines())
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

func (c *child) lastLines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the process to exit (SIGTERM), kills it after a grace period,
// and waits for it.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// findTether finds the tether binary for a local run: a tether in the
// directory of this executable (bin/tether next to bin/tether-bench, as
// make builds them), else tether on $PATH.
func findTether() (string, error) {
	self, err := os.Executable()
	if err == nil {
		beside := filepath.Join(filepath.Dir(self), "tether")
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return beside, nil
		}
	}
	if p, err := exec.LookPath("tether"); err == nil {
		return p, nil
	}
	return "", errors.New("no tether binary beside this executable or on $PATH: build one (make build) and pass --exe bin/tether, or measure a running one with --url")
}

// localStack is the mock upstream and tether, run as child processes of the
// bench so that tether's CPU and memory are its own.
type localStack struct {
	dir          string
	mock, tether *child
	MockURL      string // ws://.../v1/realtime of the mock (the direct baseline)
	URL          string // ws://.../v1/realtime of tether
	Admin        string // tether's admin host:port
	mockPID      int
}

// tetherConfig is the config of the local tether, its max_sessions and
// mock url still to fill in; compare.sh fills in the same file.
//
//go:embed tether.yaml.tmpl
var tetherConfig string

// startLocal starts `exe mock-upstream` and `exe serve` with a generated
// config that points tether at that mock.
func startLocal(ctx context.Context, exe string, maxSessions int) (l *localStack, err error) {
	st := &localStack{} // the returns below set l to nil; st is what to close
	l = st
	defer func() {
		if err != nil {
			st.close()
			l = nil
		}
	}()
	if l.dir, err = os.MkdirTemp("", "tether-bench-"); err != nil {
		return nil, err
	}
	var mockURL string
	l.mock, mockURL, err = startChild(ctx, "mock upstream", exe,
		[]string{"mock-upstream", "--listen", "127.0.0.1:0", "--log-level", "info"}, 15*time.Second,
		func(line string) string {
			if !strings.Contains(line, "mock upstream listening") {
				return ""
			}
			for f := range strings.FieldsSeq(line) {
				if u, ok := strings.CutPrefix(f, "url="); ok {
					return strings.Trim(u, `"`)
				}
			}
			return ""
		})
	if err != nil {
		return nil, err
	}
	l.MockURL = mockURL
	cfg := strings.NewReplacer("@MAX_SESSIONS@", strconv.Itoa(maxSessions), "@MOCK_URL@", mockURL).Replace(tetherConfig)
	path := filepath.Join(l.dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	var addrs string
	l.tether, addrs, err = startChild(ctx, "tether", exe, []string{"serve", "--config", path}, 15*time.Second,
		func(line string) string {
			var ev struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
				Admin  string `json:"admin"`
			}
			if json.Unmarshal([]byte(line), &ev) != nil || ev.Msg != "tether started" || ev.Listen == "" {
				return ""
			}
			return ev.Listen + " " + ev.Admin
		})
	if err != nil {
		return nil, err
	}
	listen, admin, _ := strings.Cut(addrs, " ")
	l.URL = "ws://" + listen + "/v1/realtime?model=gpt-realtime"
	l.Admin = admin
	return l, nil
}

// close stops tether, then the mock, and removes the config. Safe after a
// partial start.
func (l *localStack) close() error {
	var errs []error
	if l.tether != nil {
		l.tether.stop()
		if l.tether.err != nil && !isSignalExit(l.tether.err) {
			errs = append(errs, fmt.Errorf("tether: %w\n%s", l.tether.err, l.tether.lastLines()))
		}
	}
	if l.mock != nil {
		l.mock.stop()
	}
	if l.dir != "" {
		_ = os.RemoveAll(l.dir)
	}
	return errors.Join(errs...)
}

// isSignalExit reports whether a process ended by our own SIGTERM/SIGKILL.
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}
