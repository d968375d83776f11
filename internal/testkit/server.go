package testkit

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Server is a loopback TCP server for tests: it accepts connections and
// hands each to a handler on its own goroutine (or, with no handler, holds
// it open: a black hole). When the test ends it closes the listener and
// every connection and waits for its goroutines.
type Server struct {
	ln       net.Listener
	accepter sync.WaitGroup // the accept loop
	wg       sync.WaitGroup // the handlers

	mu    sync.Mutex
	conns []net.Conn
}

// Serve starts a Server calling handle for each connection; handle may be
// nil.
func Serve(t testing.TB, handle func(net.Conn)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ServeListener(t, ln, handle)
}

// ServeListener is [Serve] on ln (a TLS listener, say), which the Server
// closes when the test ends.
func ServeListener(t testing.TB, ln net.Listener, handle func(net.Conn)) *Server {
	s := &Server{ln: ln}
	s.accepter.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			if handle != nil {
				s.wg.Go(func() { handle(c) })
			}
		}
	})
	t.Cleanup(s.Close)
	return s
}

// ServeWS starts a Server that upgrades each connection (within 5 s) and
// hands it to handle as a server-side [Conn] with options o; a failed
// upgrade just drops the connection.
func ServeWS(t testing.TB, o Options, handle func(*Conn)) *Server {
	t.Helper()
	return Serve(t, func(nc net.Conn) {
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ws.Upgrade(nc); err != nil {
			nc.Close()
			return
		}
		_ = nc.SetDeadline(time.Time{})
		c := newConn(t, false, o)
		c.tcp, _ = nc.(*net.TCPConn)
		c.conn, c.rd, c.Connected = nc, nc, time.Now()
		go c.read()
		defer c.Close()
		handle(c)
	})
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is ws://Addr followed by path.
func (s *Server) URL(path string) string { return "ws://" + s.Addr() + path }

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops accepting, closes every connection and waits for the
// handlers. It is idempotent.
func (s *Server) Close() {
	s.ln.Close()
	s.accepter.Wait()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
