package state

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherproxy/tether/internal/testkit"
)

// testPassword protects the test servers, so that the tests see it never
// reaches a log line or an error.
const testPassword = "s3cret-redis-pass"

// redisServer is a redis-server child process on a loopback port, with
// no persistence unless told to SAVE (its dump then loads at a restart).
type redisServer struct {
	t    *testing.T
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
	// exited is closed when cmd has exited.
	exited chan struct{}
	out    testkit.SyncBuffer
}

// startRedis starts a server for the test and stops it when the test
// ends; the test is skipped when redis-server is not installed (failed
// with TETHER_REQUIRE_REDIS set).
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin := testkit.Tool(t, "TETHER_REDIS", "redis-server", "TETHER_REQUIRE_REDIS", "the Redis store tests run a real server")
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), addr: testkit.DeadAddr(t)}
	// Registered first, so it runs after every store's Close.
	t.Cleanup(func() { waitRedisClientGone(t) })
	s.start()
	t.Cleanup(s.kill)
	return s
}

// start runs the server on s.addr and waits until it answers PING.
func (s *redisServer) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(s.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--dbfilename", "dump.rdb", "--requirepass", testPassword, "--loglevel", "warning")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	cmd := s.cmd
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	ok := testkit.Poll(5*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		return s.ping()
	})
	select {
	case <-exited:
		s.t.Fatalf("redis-server exited: %s", s.out.String())
	default:
	}
	if !ok {
		s.t.Fatalf("redis-server on %s does not answer PING: %s", s.addr, s.out.String())
	}
	s.exited = exited
}

// ping reports whether the server answers AUTH and PING.
func (s *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "AUTH "+testPassword+"\r\nPING\r\n"); err != nil {
		return false
	}
	r := bufio.NewReader(c)
	a, _ := r.ReadString('\n')
	b, _ := r.ReadString('\n')
	return a == "+OK\r\n" && b == "+PONG\r\n"
}

// kill stops the server at once (SIGKILL); what it did not SAVE is lost.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// restart starts the server again on the same port.
func (s *redisServer) restart() {
	s.t.Helper()
	s.kill()
	s.start()
}

// client is a go-redis client straight to the server, closed when the test
// ends.
func (s *redisServer) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.addr, Password: testPassword, Protocol: 2, DisableIdentity: true})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// do runs one command on a fresh connection.
func (s *redisServer) do(args ...any) (any, error) {
	c := redis.NewClient(&redis.Options{Addr: s.addr, Password: testPassword, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Result()
}

func (s *redisServer) url() string { return "redis://:" + testPassword + "@" + s.addr + "/0" }

// waitRedisClientGone waits until go-redis has no goroutine left: its pool,
// once dials have failed, probes the server every second on a goroutine
// that sees the pool closed only after its sleep.
func waitRedisClientGone(t *testing.T) {
	var stacks []byte
	if !testkit.Poll(3*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		stacks = buf[:runtime.Stack(buf, true)]
		return !bytes.Contains(stacks, []byte("github.com/redis/go-redis/"))
	}) {
		t.Errorf("go-redis goroutines still running after the stores closed:\n%s", stacks)
	}
}

// proxy relays TCP to a server; with drop set it swallows the server's
// replies (the requests still arrive): a reply lost, or a server that hangs.
type proxy struct {
	addr string
	drop atomic.Bool
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{}
	srv := testkit.Serve(t, func(c net.Conn) {
		defer c.Close()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _ = io.Copy(up, c)
			up.Close()
		})
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 && !p.drop.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		c.Close()
		wg.Wait()
	})
	p.addr = srv.Addr()
	return p
}

func (p *proxy) url() string { return "redis://:" + testPassword + "@" + p.addr + "/0" }

// errorCounter counts OnError calls per operation.
type errorCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *errorCounter) add(op string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[op]++
}

func (e *errorCounter) get(op string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[op]
}

// logLines counts the lines of a log that contain s.
func logLines(log *testkit.SyncBuffer, s string) int {
	n := 0
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
