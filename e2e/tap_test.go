package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/tetherproxy/tether/internal/testkit"
)

// tap is a TCP relay between tether and an upstream that records every byte
// tether sends, so a test can see the frames (close codes) on the upstream
// leg. A reset from either side is passed on as a reset.
type tap struct {
	t      testing.TB
	target string
	// refusing: later connections are closed at once (refuse).
	refusing atomic.Bool

	mu    sync.Mutex
	conns []*tapConn
}

type tapConn struct {
	down, up net.Conn // down: from tether; up: to the upstream
	toUp     stream   // what tether sent the upstream, handshake included
	toTether stream   // what the upstream sent tether, handshake included

	mu     sync.Mutex
	endErr error // why reading from tether stopped (io.EOF: tether closed)
}

// stream records one direction of a tapped connection.
type stream struct {
	mu    sync.Mutex
	buf   []byte
	marks []tapMark // arrival time of each chunk in buf
}

type tapMark struct {
	end int
	at  time.Time
}

func (s *stream) add(p []byte) {
	s.mu.Lock()
	s.buf = append(s.buf, p...)
	s.marks = append(s.marks, tapMark{len(s.buf), time.Now()})
	s.mu.Unlock()
}

func (s *stream) snapshot() ([]byte, []tapMark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf, s.marks
}

// startTap relays 127.0.0.1:0 to the upstream URL's host; it returns the tap
// and the ws:// URL to configure in tether.
func startTap(t testing.TB, upstreamURL string) (*tap, string) {
	t.Helper()
	host := strings.TrimPrefix(upstreamURL, "ws://")
	host, path, _ := strings.Cut(host, "/")
	tp := &tap{t: t, target: host}
	srv := testkit.Serve(t, tp.relay)
	return tp, "ws://" + srv.Addr() + "/" + path
}

// relay connects one connection from tether to the upstream and records
// both directions until either side ends.
func (tp *tap) relay(down net.Conn) {
	if tp.refusing.Load() {
		down.Close()
		return
	}
	up, err := net.DialTimeout("tcp", tp.target, 5*time.Second)
	if err != nil {
		down.Close()
		return
	}
	tc := &tapConn{down: down, up: up}
	tp.mu.Lock()
	tp.conns = append(tp.conns, tc)
	tp.mu.Unlock()
	var toTether sync.WaitGroup
	toTether.Go(func() { copyRecorded(down, up, &tc.toTether) })
	err = copyRecorded(up, down, &tc.toUp)
	tc.mu.Lock()
	tc.endErr = err
	tc.mu.Unlock()
	toTether.Wait()
}

// copyRecorded copies src to dst, recording the bytes in rec, and returns why it
// stopped; it closes both, passing a reset on as a reset.
func copyRecorded(dst, src net.Conn, rec *stream) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rec.add(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}
			dst.Close()
			src.Close()
			return err
		}
	}
}

// refuse makes the tap close every later connection at once (an upstream
// that takes no new session); connections already relayed go on.
func (tp *tap) refuse() { tp.refusing.Store(true) }

// count is the number of connections tether made through the tap.
func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.conns)
}

func (tp *tap) conn(i int) *tapConn {
	tp.t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if i >= len(tp.conns) {
		tp.t.Fatalf("tap: no connection #%d (have %d)", i, len(tp.conns))
	}
	return tp.conns[i]
}

// frame is one WebSocket frame seen on a leg, payload unmasked.
type frame = testkit.Frame

// parseFrames parses the complete frames after the HTTP head in buf.
func parseFrames(buf []byte, marks []tapMark) []frame {
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if i < 0 {
		return nil
	}
	off := i + 4
	var out []frame
	for {
		r := bytes.NewReader(buf[off:])
		h, err := ws.ReadHeader(r)
		if err != nil {
			return out
		}
		hlen := len(buf[off:]) - r.Len()
		if int64(r.Len()) < h.Length {
			return out
		}
		start := off + hlen
		end := start + int(h.Length)
		keep := min(int(h.Length), 64<<10)
		p := bytes.Clone(buf[start : start+keep])
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		f := frame{Op: h.OpCode, Fin: h.Fin, Masked: h.Masked, Length: h.Length, Payload: p}
		for _, m := range marks {
			if m.end >= end {
				f.At = m.at
				break
			}
		}
		out = append(out, f)
		off = end
	}
}

// frames parses what tether sent on this upstream connection so far.
func (tc *tapConn) frames() []frame { return parseFrames(tc.toUp.snapshot()) }

// upstreamFrames parses what the upstream sent tether so far.
func (tc *tapConn) upstreamFrames() []frame { return parseFrames(tc.toTether.snapshot()) }

// describeEnd says how tether's side of the connection ended.
func (tc *tapConn) describeEnd() string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.endErr == nil {
		return "connection still open"
	}
	return fmt.Sprintf("tether's side ended without one: %v", tc.endErr)
}

// request parses tether's upgrade request on this connection.
func (tc *tapConn) request() *http.Request {
	buf, _ := tc.toUp.snapshot()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf)))
	if err != nil {
		return nil
	}
	return r
}

// waitClose waits for tether's close frame on upstream connection i.
func (tp *tap) waitClose(i int, timeout time.Duration) frame {
	tp.t.Helper()
	f, ok := tp.findClose(i, timeout)
	if !ok {
		desc := "no connection"
		if tp.count() > i {
			desc = tp.conn(i).describeEnd()
		}
		tp.t.Fatalf("no close frame from tether on the upstream leg within %v (%s)", timeout, desc)
	}
	return f
}

// findClose polls for tether's close frame on upstream connection i, or
// returns ok=false after timeout.
func (tp *tap) findClose(i int, timeout time.Duration) (frame, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if tp.count() > i {
			for _, f := range tp.conn(i).frames() {
				if f.Op == ws.OpClose {
					return f, true
				}
			}
		}
		if time.Now().After(deadline) {
			return frame{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
