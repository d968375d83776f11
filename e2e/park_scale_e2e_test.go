package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
)

// scaleEnd is one end of a scale session (the client's or the upstream's).
type scaleEnd struct {
	conn   net.Conn
	br     *bufio.Reader
	client bool
	wmu    sync.Mutex
	seq    uint64 // next seq to send (writer's)

	// reader's
	next    uint64 // next seq expected
	bad     atomic.Int64
	late    atomic.Int64
	maxLat  atomic.Int64
	got     atomic.Int64
	created chan struct{}
	done    chan struct{}
	closeRx atomic.Int64
}

func (e *scaleEnd) write(f ws.Frame) error {
	if e.client {
		f = ws.MaskFrame(f)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	_ = e.conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
	return ws.WriteFrame(e.conn, f)
}

func (e *scaleEnd) read() {
	defer close(e.done)
	createdOnce := false
	buf := make([]byte, 256)
	for {
		h, err := ws.ReadHeader(e.br)
		if err != nil {
			return
		}
		if h.Length > int64(len(buf)) {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(e.br, p); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = e.write(ws.NewPongFrame(append([]byte(nil), p...)))
		case ws.OpClose:
			if len(p) >= 2 {
				e.closeRx.Store(int64(binary.BigEndian.Uint16(p)))
			} else {
				e.closeRx.Store(1005)
			}
			_ = e.write(ws.NewCloseFrame(append([]byte(nil), p[:min(len(p), 2)]...)))
			_ = e.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		case ws.OpText:
			if !createdOnce {
				createdOnce = true
				close(e.created)
			}
		case ws.OpBinary:
			if len(p) < 16 {
				e.bad.Add(1)
				continue
			}
			seq := binary.BigEndian.Uint64(p)
			lat := time.Now().UnixNano() - int64(binary.BigEndian.Uint64(p[8:]))
			if seq != e.next {
				e.bad.Add(1)
			}
			e.next = seq + 1
			e.got.Add(1)
			if lat > e.maxLat.Load() {
				e.maxLat.Store(lat)
			}
			if lat > int64(50*time.Millisecond) {
				e.late.Add(1)
			}
		}
	}
}

func newScaleEnd(conn net.Conn, br *bufio.Reader, client bool) *scaleEnd {
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	e := &scaleEnd{conn: conn, br: br, client: client, created: make(chan struct{}), done: make(chan struct{})}
	go e.read()
	return e
}

// tetherFDs counts tether's open sockets (the waker's epoll and eventfd,
// created once per process, are not sockets).
func tetherFDs(t testing.TB, p *proc) int {
	dir := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fds: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestParkScale: many sessions park, then all stream at 50 frames/s each
// way at once, then tear down: no frame lost or reordered, latency mostly
// under 50 ms, and tether's goroutines and sockets return to their
// baseline. 50 sessions; TETHER_PARK_SCALE sets another count (2,000
// saturates a 2-core machine with the test's own load).
func TestParkScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TETHER_PARK_SCALE"))
	if n <= 0 {
		n = 50
	}
	streamFor := 4 * time.Second
	if os.Getenv("TETHER_PARK_SCALE") == "" {
		streamFor = 2 * time.Second
	}

	var upMu sync.Mutex
	var ups []*scaleEnd
	srv := testkit.Serve(t, func(nc net.Conn) {
		_ = nc.SetDeadline(time.Now().Add(stepTimeout))
		u := ws.Upgrader{Protocol: func(b []byte) bool { return string(b) == "realtime" }}
		if _, err := u.Upgrade(nc); err != nil {
			nc.Close()
			return
		}
		_ = nc.SetDeadline(time.Time{})
		e := newScaleEnd(nc, nil, false)
		close(e.created)
		// Counted before session.created goes out: a client that has it
		// finds its upstream end in ups.
		upMu.Lock()
		ups = append(ups, e)
		upMu.Unlock()
		if e.write(ws.NewTextFrame([]byte(rawSessionCreated))) != nil {
			return
		}
		<-e.done
	})
	p := startTether(t, "proxy.yaml", parkVars(map[string]string{
		"UpstreamURL": srv.URL("/v1/realtime"), "MaxSessions": strconv.Itoa(n + 100), "IdleTimeout": "0s",
		"ClientHBInterval": "5s", "ClientHBTimeout": "4s", "UpstreamHBInterval": "5s", "UpstreamHBTimeout": "4s",
	}))
	base, baseFD := p.baseline(), tetherFDs(t, p)
	t.Logf("baseline: %d goroutines, %d fds", base, baseFD)

	clients := make([]*scaleEnd, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var dialErr atomic.Value
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
			defer cancel()
			conn, br, _, err := ws.Dialer{Protocols: []string{"realtime"}}.Dial(ctx, "ws://"+p.Listen+"/v1/realtime?model=gpt-realtime")
			if err != nil {
				dialErr.Store(err)
				return
			}
			if br == nil {
				br = bufio.NewReaderSize(conn, 4096)
			}
			clients[i] = newScaleEnd(conn, br, true)
			select {
			case <-clients[i].created:
			case <-time.After(stepTimeout):
				dialErr.Store(fmt.Errorf("session %d: no session.created", i))
			}
		}()
	}
	wg.Wait()
	if err := dialErr.Load(); err != nil {
		t.Fatalf("opening %d sessions: %v", n, err)
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.conn.Close()
		}
	})
	upMu.Lock()
	nu := len(ups)
	upMu.Unlock()
	if nu != n {
		t.Fatalf("%d upstream sessions, want %d", nu, n)
	}
	// All legs park once quiet: tether is back to its baseline, plus the
	// waker's goroutine (and one of slack).
	parked := func(what string) {
		t.Helper()
		testkit.WaitFor(t, 10*time.Second, what, func() bool { return p.goroutines() <= base+2 })
	}
	parked("every leg parked before any traffic")
	t.Logf("%d sessions open and quiet: %d goroutines (baseline %d), %d fds", n, p.goroutines(), base, tetherFDs(t, p))

	for round := range 2 {
		// Stream both ways at 50 frames/s.
		stop := make(chan struct{})
		var sent atomic.Int64
		var werr atomic.Value
		var swg sync.WaitGroup
		shard := 100
		for _, side := range [][]*scaleEnd{clients, ups} {
			for s := 0; s < len(side); s += shard {
				ends := side[s:min(s+shard, len(side))]
				swg.Add(1)
				go func() {
					defer swg.Done()
					tk := time.NewTicker(20 * time.Millisecond)
					defer tk.Stop()
					var b [32]byte
					for {
						select {
						case <-stop:
							return
						case <-tk.C:
						}
						for _, e := range ends {
							binary.BigEndian.PutUint64(b[:], e.seq)
							binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
							if err := e.write(ws.NewBinaryFrame(append([]byte(nil), b[:]...))); err != nil {
								werr.Store(err)
								return
							}
							e.seq++
							sent.Add(1)
						}
					}
				}()
			}
		}
		time.Sleep(streamFor)
		close(stop)
		swg.Wait()
		if err := werr.Load(); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		// Every frame sent arrives at the other end.
		testkit.Poll(5*time.Second, func() bool {
			var got, want int64
			for i := range n {
				got += clients[i].got.Load() + ups[i].got.Load()
				want += int64(clients[i].seq + ups[i].seq)
			}
			return got == want
		})
		var bad, late int64
		var lats []int64
		// tally sums one side's ends: frames they received and sent.
		tally := func(ends []*scaleEnd) (got, sent int64) {
			for _, e := range ends {
				got += e.got.Load()
				sent += int64(e.seq)
				bad += e.bad.Load()
				late += e.late.Load()
				lats = append(lats, e.maxLat.Load())
			}
			return got, sent
		}
		gotC, sentC := tally(clients)
		gotU, sentU := tally(ups)
		lost := sentC - gotU + sentU - gotC
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		t.Logf("round %d: sent %d frames (cumulative %d each way), lost %d, out of order %d, late (>50ms) %d; per-leg max latency: median %v, p99 %v, max %v",
			round, sent.Load(), sentC, lost, bad, late,
			time.Duration(lats[len(lats)/2]), time.Duration(lats[len(lats)*99/100]), time.Duration(lats[len(lats)-1]))
		if lost != 0 || bad != 0 {
			t.Errorf("round %d: %d frames lost, %d out of order", round, lost, bad)
		}
		// Lateness checks waking, not a latency target: a machine that
		// stalls every leg at once (other load, the race detector) makes
		// some of a round's frames late together, while a leg that did not
		// wake would fall seconds behind.
		if maxLat := time.Duration(lats[len(lats)-1]); late > (sentC+sentU)/20 || maxLat > 2*time.Second {
			t.Errorf("round %d: %d frames late by more than 50 ms (of %d), a leg's worst %v", round, late, sentC+sentU, maxLat)
		}
		for _, e := range append(append([]*scaleEnd(nil), clients...), ups...) {
			e.late.Store(0)
			e.maxLat.Store(0)
		}
		parked(fmt.Sprintf("every leg parked again after round %d", round))
	}

	// Teardown: every client closes.
	for _, c := range clients {
		_ = c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))
	}
	testkit.WaitFor(t, 20*time.Second, "tether_sessions_active 0", func() bool {
		v, ok := p.metric("tether_sessions_active")
		return ok && v == 0
	})
	var g, fds int
	ok := testkit.Poll(10*time.Second, func() bool {
		g, fds = p.goroutines(), tetherFDs(t, p)
		return g <= base+2 && fds <= baseFD+1
	})
	t.Logf("after teardown: %d goroutines (baseline %d), %d fds (baseline %d)", g, base, fds, baseFD)
	if !ok {
		_, dump := p.get("/debug/pprof/goroutine?debug=1")
		if len(dump) > 6000 {
			dump = dump[:6000]
		}
		t.Errorf("goroutines %d (baseline %d) or fds %d (baseline %d) not back; profile:\n%s", g, base, fds, baseFD, dump)
	}
	var noClose int
	for _, u := range ups {
		if u.closeRx.Load() != 1000 {
			noClose++
		}
	}
	if noClose > 0 {
		t.Errorf("%d upstreams did not get close 1000", noClose)
	}
}
