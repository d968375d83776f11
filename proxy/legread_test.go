package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// guardReader fails the test if it is read once armed: the relay must
// never read a handshake reader past its buffered bytes.
type guardReader struct {
	t     *testing.T
	r     io.Reader
	armed atomic.Bool
}

func (g *guardReader) Read(p []byte) (int, error) {
	if g.armed.Load() {
		g.t.Error("handshake reader read from its source after the relay took over")
	}
	return g.r.Read(p)
}

// legPair returns a legReader on one end of a connection and the other end.
// pipe selects net.Pipe (no raw access: the fallback path) over loopback TCP.
func legPair(t *testing.T, pipe bool, hs func(net.Conn) *bufio.Reader) (*legReader, net.Conn) {
	t.Helper()
	a, b := connPair(t, pipe)
	lr := &legReader{}
	var br *bufio.Reader
	if hs != nil {
		br = hs(b)
	}
	lr.init(b, br, nil, time.Time{})
	if pipe == lr.raw.ok() {
		t.Fatalf("raw access = %v on pipe=%v", lr.raw.ok(), pipe)
	}
	return lr, a
}

// connPair returns both ends of a net.Pipe (pipe) or of a loopback TCP
// connection, closed when the test ends.
func connPair(t *testing.T, pipe bool) (a, b net.Conn) {
	t.Helper()
	if pipe {
		a, b = net.Pipe()
	} else {
		a, b = tcpPair(t)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	go func() { _, _ = c.Write([]byte(s)) }() // net.Pipe writes block until read
}

// readAll reads len(want) bytes from lr and fails unless they are want.
func readAll(t *testing.T, lr *legReader, want string) {
	t.Helper()
	p := make([]byte, len(want))
	if _, err := io.ReadFull(lr, p); err != nil || string(p) != want {
		t.Fatalf("read %q, %v; want %q", p, err, want)
	}
}

func forBoth(t *testing.T, f func(t *testing.T, pipe bool)) {
	t.Run("tcp", func(t *testing.T) { f(t, false) })
	t.Run("pipe", func(t *testing.T) { f(t, true) })
}

func TestLegReaderServesHandshakeBytesFirst(t *testing.T) {
	forBoth(t, func(t *testing.T, pipe bool) {
		// Nothing left over from the handshake: its reader is never used.
		var g *guardReader
		lr, peer := legPair(t, pipe, func(c net.Conn) *bufio.Reader {
			g = &guardReader{t: t, r: c}
			g.armed.Store(true)
			return bufio.NewReader(g)
		})
		if lr.hs != nil {
			t.Fatal("an empty handshake reader was kept")
		}
		write(t, peer, "hi")
		readAll(t, lr, "hi")
	})
	forBoth(t, func(t *testing.T, pipe bool) {
		// Leftover bytes come first, then the socket's.
		var g *guardReader
		lr, peer := legPairWithLeftover(t, pipe, "HELLO", &g)
		write(t, peer, "WORLD")
		readAll(t, lr, "HELLOWORLD")
		if lr.hs != nil || lr.buf != nil {
			t.Fatalf("after consuming everything: hs %v, buffer held %v", lr.hs != nil, lr.buf != nil)
		}
	})
}

// legPairWithLeftover makes the handshake reader hold leftover bytes, as
// net/http's reader does when a client sends a frame right behind its
// upgrade request.
func legPairWithLeftover(t *testing.T, pipe bool, leftover string, g **guardReader) (*legReader, net.Conn) {
	t.Helper()
	a, b := connPair(t, pipe)
	*g = &guardReader{t: t, r: b}
	br := bufio.NewReader(*g)
	write(t, a, leftover)
	if _, err := br.Peek(len(leftover)); err != nil {
		t.Fatal(err)
	}
	(*g).armed.Store(true)
	lr := &legReader{}
	lr.init(b, br, nil, time.Time{})
	return lr, a
}

func TestLegReaderHoldsNoBufferWhenIdle(t *testing.T) {
	forBoth(t, func(t *testing.T, pipe bool) {
		lr, peer := legPair(t, pipe, nil)
		if lr.buf != nil {
			t.Fatal("a new leg holds a read buffer")
		}
		write(t, peer, "0123456789")
		// The first read brings all ten bytes into a pooled buffer.
		readAll(t, lr, "0123")
		if lr.buf == nil || lr.w-lr.r != 6 {
			t.Fatalf("buffer %v with %d bytes unread; want the other 6 buffered", lr.buf != nil, lr.w-lr.r)
		}
		readAll(t, lr, "456789")
		if lr.buf != nil {
			t.Fatal("an idle leg still holds its read buffer")
		}
	})
}

func TestLegReaderLargeReadsBypassTheBuffer(t *testing.T) {
	forBoth(t, func(t *testing.T, pipe bool) {
		lr, peer := legPair(t, pipe, nil)
		msg := strings.Repeat("x", 3*readBufSize)
		write(t, peer, msg)
		p := make([]byte, len(msg))
		n := 0
		for n < len(p) {
			m, err := lr.Read(p[n:])
			if err != nil {
				t.Fatal(err)
			}
			if lr.buf != nil && len(p)-n >= readBufSize {
				t.Fatal("a read of at least the buffer size went through the pool buffer")
			}
			n += m
		}
		if string(p) != msg {
			t.Fatal("data changed")
		}
	})
}

func TestLegReaderEOFAndDeadline(t *testing.T) {
	forBoth(t, func(t *testing.T, pipe bool) {
		lr, peer := legPair(t, pipe, nil)
		write(t, peer, "ab")
		p := make([]byte, 2)
		if _, err := io.ReadFull(lr, p); err != nil {
			t.Fatal(err)
		}
		// A deadline unblocks a waiting pump (Shutdown relies on it).
		if err := lr.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := lr.Read(p); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after the deadline: %v, want a deadline error", err)
		}
		if lr.buf != nil {
			t.Fatal("a timed-out wait kept a buffer")
		}
		_ = lr.conn.SetReadDeadline(time.Time{})
		peer.Close()
		if _, err := lr.Read(p); err != io.EOF {
			t.Fatalf("after the peer closed: %v, want io.EOF", err)
		}
	})
}

func TestLegReaderDiscard(t *testing.T) {
	forBoth(t, func(t *testing.T, pipe bool) {
		var g *guardReader
		lr, peer := legPairWithLeftover(t, pipe, "abc", &g)
		write(t, peer, strings.Repeat("-", 2*readBufSize)+"XYZ")
		if n, err := lr.Discard(3 + 2*readBufSize); err != nil || n != 3+2*readBufSize {
			t.Fatalf("Discard = %d, %v", n, err)
		}
		readAll(t, lr, "XYZ") // after the discarded bytes
	})
}
