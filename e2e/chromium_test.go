package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
)

// A headless Chromium driven over the DevTools protocol (CDP), spoken
// directly on a WebSocket: no CDP library, no Docker.

// chromiumStartTimeout bounds Chromium's start, up to its DevTools endpoint.
const chromiumStartTimeout = 30 * time.Second

// chromiumCandidates are looked up in PATH when TETHER_CHROMIUM is unset.
// Debian's chromium package installs /usr/bin/chromium.
var chromiumCandidates = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// browser is a running headless Chromium with a CDP connection to it.
type browser struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr testkit.SyncBuffer
	exited chan struct{}
	cdp    *cdpConn
}

// startChromium starts headless Chromium with a fresh profile in a temporary
// directory and connects to its DevTools endpoint; extra flags are added.
// Where Chromium is missing or cannot start it skips the test, unless
// TETHER_REQUIRE_CHROMIUM is set (CI), when it fails. Cleanup closes the
// browser (Browser.close, then SIGKILL to its process group).
func startChromium(t testing.TB, extra ...string) *browser {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		testkit.Missing(t, "TETHER_REQUIRE_CHROMIUM", format+" (apt-get install chromium, or set TETHER_CHROMIUM)", args...)
	}
	bin := findChromium()
	if bin == "" {
		missing("no Chromium found (looked for %s in PATH)", strings.Join(chromiumCandidates, ", "))
		return nil
	}

	// The profile and everything Chromium writes under HOME stay in this
	// test's temporary directory (removed after the browser has exited:
	// cleanups run last-registered first).
	dir := t.TempDir()
	profile := filepath.Join(dir, "profile")
	b := &browser{t: t, exited: make(chan struct{})}
	b.cmd = exec.Command(bin, chromiumArgs(profile, extra)...)
	b.cmd.Env = append(childEnv(),
		"HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	b.cmd.Stdout, b.cmd.Stderr = &b.stderr, &b.stderr
	// Its own process group, so that cleanup can end the renderer, GPU and
	// zygote children too.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A helper that left the group must not keep Wait on the output pipe.
	b.cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	if err := b.cmd.Start(); err != nil {
		missing("%s cannot start: %v", bin, err)
		return nil
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(b.close)

	wsURL, err := b.devToolsURL(profile)
	if err != nil {
		missing("%s %v", bin, err)
		return nil
	}
	c, err := dialCDP(wsURL)
	if err != nil {
		missing("CDP connection to %s: %v", wsURL, err)
		return nil
	}
	b.cdp = c
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	var v struct {
		Product   string `json:"product"`
		UserAgent string `json:"userAgent"`
	}
	if err := c.call(ctx, "", "Browser.getVersion", nil, &v); err != nil {
		t.Fatalf("Browser.getVersion: %v", err)
	}
	t.Logf("%s (%s) started in %v", v.Product, bin, time.Since(start).Round(time.Millisecond))
	return b
}

// findChromium is $TETHER_CHROMIUM, else the first of chromiumCandidates in
// PATH; "" if there is none.
func findChromium() string {
	if bin := os.Getenv("TETHER_CHROMIUM"); bin != "" {
		return bin
	}
	for _, name := range chromiumCandidates {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromiumArgs are the flags of a headless Chromium with its profile in
// profile, quiet (no first-run, sync, extensions, background networking or
// sound), extra added, showing about:blank.
func chromiumArgs(profile string, extra []string) []string {
	args := []string{
		"--headless=new",
		"--remote-debugging-port=0",
		"--remote-debugging-address=127.0.0.1",
		"--user-data-dir=" + profile,
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-extensions",
		"--mute-audio",
		"--password-store=basic",
		"--use-mock-keychain",
	}
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox.
		args = append(args, "--no-sandbox")
	}
	args = append(args, extra...)
	return append(args, "about:blank")
}

// devToolsURL waits (up to chromiumStartTimeout) for the browser's DevTools
// endpoint and returns its WebSocket URL: Chromium writes DevToolsActivePort
// (port, then the browser target's path) into the profile once its endpoint
// listens. The error says why there is none (the browser exited, or took
// too long), with its output.
func (b *browser) devToolsURL(profile string) (string, error) {
	deadline := time.Now().Add(chromiumStartTimeout)
	for {
		if raw, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort")); err == nil {
			if port, path, ok := strings.Cut(strings.TrimSpace(string(raw)), "\n"); ok && port != "" && path != "" {
				return "ws://127.0.0.1:" + strings.TrimSpace(port) + strings.TrimSpace(path), nil
			}
		}
		select {
		case <-b.exited:
			return "", fmt.Errorf("exited at start (%v); output:\n%s", b.cmd.ProcessState, tail(b.stderr.String(), 4000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("did not open its DevTools endpoint within %v; output:\n%s", chromiumStartTimeout, tail(b.stderr.String(), 4000))
		}
	}
}

// close asks the browser to exit and waits; SIGKILL to its process group if
// it does not within a few seconds (and for any child left behind).
func (b *browser) close() {
	if b.cdp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = b.cdp.call(ctx, "", "Browser.close", nil, nil)
		cancel()
	}
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		b.t.Logf("chromium did not exit after Browser.close; killing its process group")
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-b.exited:
	case <-time.After(exitTimeout):
		b.t.Errorf("chromium (pid %d) did not exit after SIGKILL", b.cmd.Process.Pid)
	}
	if b.cdp != nil {
		b.cdp.close()
	}
}

// ---------------------------------------------------------------------------
// A page: one tab in its own browser context (a fresh profile, like an
// incognito window), attached with a flat CDP session.

type page struct {
	b                   *browser
	context, target, id string // browser context, target, CDP session
}

// newPage opens about:blank in a new browser context with the Page,
// Runtime, Network and Log domains enabled; cleanup closes it.
func (b *browser) newPage(t testing.TB) *page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	p := &page{b: b}
	var bc struct {
		BrowserContextID string `json:"browserContextId"`
	}
	if err := b.cdp.call(ctx, "", "Target.createBrowserContext", map[string]any{"disposeOnDetach": true}, &bc); err != nil {
		t.Fatalf("Target.createBrowserContext: %v", err)
	}
	p.context = bc.BrowserContextID
	var tg struct {
		TargetID string `json:"targetId"`
	}
	if err := b.cdp.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank", "browserContextId": p.context}, &tg); err != nil {
		t.Fatalf("Target.createTarget: %v", err)
	}
	p.target = tg.TargetID
	var at struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.cdp.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": p.target, "flatten": true}, &at); err != nil {
		t.Fatalf("Target.attachToTarget: %v", err)
	}
	p.id = at.SessionID
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		_ = b.cdp.call(ctx, "", "Target.closeTarget", map[string]any{"targetId": p.target}, nil)
		_ = b.cdp.call(ctx, "", "Target.disposeBrowserContext", map[string]any{"browserContextId": p.context}, nil)
	})
	for _, domain := range []string{"Page", "Runtime", "Network", "Log"} {
		if err := b.cdp.call(ctx, p.id, domain+".enable", nil, nil); err != nil {
			t.Fatalf("%s.enable: %v", domain, err)
		}
	}
	return p
}

// navigate loads url and waits for its load event.
func (p *page) navigate(ctx context.Context, url string) error {
	from := p.b.cdp.mark()
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.b.cdp.call(ctx, p.id, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return err
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("Page.navigate %s: %s", url, nav.ErrorText)
	}
	_, err := p.b.cdp.waitEvent(ctx, from, p.id, "Page.loadEventFired")
	return err
}

// eval evaluates expr in the page, awaits the promise it returns and
// decodes its value into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.cdp.call(ctx, p.id, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true,
	}, &res)
	if err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("page exception: %s %s", e.Text, e.Exception.Description)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// events returns the params of this page's events named method, in order.
func (p *page) events(method string) []json.RawMessage {
	return p.b.cdp.eventsOf(p.id, method)
}

// consoleLog is the page's console messages and browser log entries (such
// as a failed WebSocket handshake), one a line, for failure messages.
func (p *page) consoleLog() string {
	var b strings.Builder
	for _, raw := range p.events("Log.entryAdded") {
		var e struct {
			Entry struct{ Source, Level, Text string } `json:"entry"`
		}
		_ = json.Unmarshal(raw, &e)
		fmt.Fprintf(&b, "log %s/%s: %s\n", e.Entry.Source, e.Entry.Level, e.Entry.Text)
	}
	for _, raw := range p.events("Runtime.consoleAPICalled") {
		var e struct {
			Type string `json:"type"`
			Args []struct {
				Value any `json:"value"`
			} `json:"args"`
		}
		_ = json.Unmarshal(raw, &e)
		fmt.Fprintf(&b, "console.%s:", e.Type)
		for _, a := range e.Args {
			fmt.Fprintf(&b, " %v", a.Value)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// The CDP connection: JSON messages over a WebSocket; commands carry an id
// answered by a result or an error, events carry a method (and, for a page,
// the flat session's sessionId).

type cdpMessage struct {
	ID        int64           `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

type cdpConn struct {
	conn net.Conn
	r    io.Reader
	wmu  sync.Mutex // one frame written at a time

	mu      sync.Mutex
	nextID  int64
	calls   map[int64]chan cdpMessage
	events  []cdpMessage
	changed chan struct{} // closed and replaced when an event arrives or the connection ends
	err     error         // why the read loop ended

	done chan struct{} // closed when the read loop has returned
}

func dialCDP(url string) (*cdpConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	conn, br, _, err := ws.Dialer{Timeout: stepTimeout}.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	c := &cdpConn{conn: conn, r: conn, calls: map[int64]chan cdpMessage{},
		changed: make(chan struct{}), done: make(chan struct{})}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	go c.readLoop()
	return c, nil
}

// write sends one frame, masked (client role), in a single Write.
func (c *cdpConn) write(f ws.Frame) error {
	b, err := ws.CompileFrame(ws.MaskFrame(f))
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(stepTimeout))
	_, err = c.conn.Write(b)
	return err
}

func (c *cdpConn) readLoop() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.r, 64<<10)
	var msg []byte
	err := func() error {
		for {
			f, err := ws.ReadFrame(r)
			if err != nil {
				return err
			}
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			switch f.Header.OpCode {
			case ws.OpPing:
				if err := c.write(ws.NewPongFrame(f.Payload)); err != nil {
					return err
				}
				continue
			case ws.OpPong:
				continue
			case ws.OpClose:
				_ = c.write(ws.NewCloseFrame(f.Payload))
				return io.EOF
			}
			msg = append(msg, f.Payload...)
			if !f.Header.Fin {
				continue
			}
			var m cdpMessage
			if err := json.Unmarshal(msg, &m); err != nil {
				return fmt.Errorf("CDP message %.200q: %v", msg, err)
			}
			msg = msg[:0]
			c.dispatch(m)
		}
	}()
	c.mu.Lock()
	c.err = err
	for id, ch := range c.calls {
		close(ch)
		delete(c.calls, id)
	}
	close(c.changed)
	c.changed = nil
	c.mu.Unlock()
}

func (c *cdpConn) dispatch(m cdpMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.ID != 0 {
		if ch := c.calls[m.ID]; ch != nil {
			delete(c.calls, m.ID)
			ch <- m
		}
		return
	}
	c.events = append(c.events, m)
	close(c.changed)
	c.changed = make(chan struct{})
}

// call sends method with params (on the page session, or the browser's
// when session is "") and decodes the result into out.
func (c *cdpConn) call(ctx context.Context, session, method string, params, out any) error {
	c.mu.Lock()
	if c.changed == nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%s: CDP connection closed: %v", method, err)
	}
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMessage, 1)
	c.calls[id] = ch
	c.mu.Unlock()

	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if session != "" {
		req["sessionId"] = session
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := c.write(ws.NewTextFrame(b)); err != nil {
		return fmt.Errorf("%s: %v", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: CDP connection closed", method)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.calls, id)
		c.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// mark is the number of events received so far, for waitEvent.
func (c *cdpConn) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// waitEvent waits for an event of method on session received after the
// first from events, and returns its params.
func (c *cdpConn) waitEvent(ctx context.Context, from int, session, method string) (json.RawMessage, error) {
	for {
		c.mu.Lock()
		for i := from; i < len(c.events); i++ {
			if e := c.events[i]; e.Method == method && e.SessionID == session {
				c.mu.Unlock()
				return e.Params, nil
			}
		}
		from = len(c.events)
		changed := c.changed
		c.mu.Unlock()
		if changed == nil {
			return nil, fmt.Errorf("waiting for %s: CDP connection closed", method)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w", method, ctx.Err())
		}
	}
}

func (c *cdpConn) eventsOf(session, method string) []json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []json.RawMessage
	for _, e := range c.events {
		if e.Method == method && e.SessionID == session {
			out = append(out, e.Params)
		}
	}
	return out
}

// close ends the connection and waits for the read loop.
func (c *cdpConn) close() {
	_ = c.conn.Close()
	<-c.done
}
