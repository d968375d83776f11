package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// readBufSize is a leg's read-ahead: one read brings a frame header and a
// typical voice event (a 20-100 ms append or audio delta) together.
const readBufSize = 4 << 10

// readPool holds read-ahead buffers. A leg holds one only while it has bytes
// read but not yet consumed, so an idle leg (the common state of a voice
// session between frames) holds none.
var readPool = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// legReader is the reading side of a leg, owned by the pump that reads it.
// It first serves the bytes that arrived with the handshake, then reads the
// socket through a pooled buffer that it takes only once bytes are there:
// on plain TCP it waits for readability holding no buffer
// (syscall.RawConn); on other connections (TLS, pipes) a blocked read holds
// one.
type legReader struct {
	// hs holds bytes read past the handshake; nil once they are consumed.
	// It is never read beyond its buffered bytes: its source may be a
	// wrapper (net/http's connReader) that must not see the relay's reads.
	hs   *bufio.Reader
	conn net.Conn
	raw  rawReader // unset when conn offers no raw access
	buf  *[readBufSize]byte
	r, w int   // unread bytes are buf[r:w]; buf is nil when r == w
	err  error // a read error to return once the buffered bytes are consumed
	// heard is set to the time since base after every read that returned
	// bytes: the peer is alive while it sends anything.
	heard *atomic.Int64
	base  time.Time
	// park is the pump's parking on this reader (park.go).
	park parkClock
}

// idle reports whether nothing is buffered, so a pump may park on the
// socket.
func (lr *legReader) idle() bool {
	return (lr.hs == nil || lr.hs.Buffered() == 0) && lr.r == lr.w && lr.err == nil
}

func (lr *legReader) init(conn net.Conn, hs *bufio.Reader, heard *atomic.Int64, base time.Time) {
	lr.conn = conn
	lr.heard, lr.base = heard, base
	if hs != nil && hs.Buffered() > 0 {
		lr.hs = hs
	}
	lr.raw.init(conn)
}

// release returns the read-ahead buffer to the pool.
func (lr *legReader) release() {
	if lr.buf != nil {
		readPool.Put(lr.buf)
		lr.buf = nil
	}
	lr.r, lr.w = 0, 0
}

// touch records that the peer sent bytes.
func (lr *legReader) touch() {
	if lr.heard != nil {
		lr.heard.Store(int64(time.Since(lr.base)))
	}
}

// takeErr returns and clears the kept read error.
func (lr *legReader) takeErr() error {
	err := lr.err
	lr.err = nil
	return err
}

// Read implements io.Reader.
func (lr *legReader) Read(p []byte) (int, error) {
	if lr.hs != nil {
		if lr.hs.Buffered() > 0 {
			return lr.hs.Read(p) // served from its buffer: no read on its source
		}
		lr.hs = nil
	}
	if lr.r < lr.w {
		n := copy(p, lr.buf[lr.r:lr.w])
		lr.r += n
		if lr.r == lr.w {
			lr.release()
		}
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	if lr.err != nil {
		return 0, lr.takeErr()
	}
	if len(p) >= readBufSize {
		return lr.fill(p) // a large read goes straight to the caller's buffer
	}
	n, err := lr.fill(nil)
	if n == 0 {
		return 0, err
	}
	lr.err = err
	m := copy(p, lr.buf[:n])
	lr.r, lr.w = m, n
	if lr.r == lr.w {
		lr.release()
	}
	return m, nil
}

// fill reads once into dst or, with a nil dst, into lr.buf, taken from the
// pool when bytes are there (and put back if none came). It returns 0 only
// with an error, io.EOF at the end of the stream.
func (lr *legReader) fill(dst []byte) (int, error) {
	if lr.raw.ok() {
		return lr.raw.read(lr, dst)
	}
	for {
		var n int
		var err error
		if dst != nil {
			n, err = lr.conn.Read(dst)
		} else {
			lr.buf = readPool.Get().(*[readBufSize]byte)
			n, err = lr.conn.Read(lr.buf[:])
			if n == 0 {
				lr.release()
			}
		}
		if n > 0 {
			lr.touch()
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// Discard skips n bytes.
func (lr *legReader) Discard(n int) (int, error) {
	done := 0
	for done < n {
		if lr.hs != nil {
			if lr.hs.Buffered() == 0 {
				lr.hs = nil
				continue
			}
			k, err := lr.hs.Discard(min(n-done, lr.hs.Buffered()))
			done += k
			if err != nil {
				return done, err
			}
			continue
		}
		if lr.r == lr.w {
			if lr.err != nil {
				return done, lr.takeErr()
			}
			m, err := lr.fill(nil)
			if m == 0 {
				return done, err
			}
			lr.r, lr.w, lr.err = 0, m, err
		}
		k := min(n-done, lr.w-lr.r)
		lr.r += k
		done += k
		if lr.r == lr.w {
			lr.release()
		}
	}
	return done, nil
}

var _ io.Reader = (*legReader)(nil)
