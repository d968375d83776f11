package proxy

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/lifecycle"
)

// GPT-Live frame sizes: 50 ms of 24 kHz PCM16 up (3,200 base64 characters),
// 100 ms down (6,400).
const (
	liveUpBytes   = 3200
	liveDownBytes = 6400
	// manySessions is the number of relays with legs ready at once.
	manySessions = 1000
)

// liveFrame encodes a GPT-Live event of about size bytes: an append
// (client, masked) or an output audio delta (upstream).
func liveFrame(size int, fromClient bool) []byte {
	ev := `{"type":"` + live.OutputAudioDelta + `","delta":"`
	if fromClient {
		ev = `{"type":"` + live.InputAudioAppend + `","audio":"`
	}
	return paddedFrame(ev, size, fromClient)
}

// newLiveHarness is newRawHarness with the GPT-Live dialect.
func newLiveHarness(tb testing.TB, mgr *lifecycle.Manager) *rawHarness {
	cp, cr := tcpPair(tb)
	up, ur := tcpPair(tb)
	return startLiveHarness(tb, mgr, cp, cr, up, ur)
}

// startLiveHarness runs a GPT-Live relay between clientRelay and upRelay,
// the peers' ends given.
func startLiveHarness(tb testing.TB, mgr *lifecycle.Manager, clientPeer, clientRelay, upPeer, upRelay net.Conn) *rawHarness {
	h := &rawHarness{clientPeer: clientPeer, upPeer: upPeer, mgr: mgr, done: make(chan struct{})}
	h.sess = runRelay(tb, mgr, lifecycle.Info{Upstream: "bench", Dialect: live.Dialect{}},
		func(*lifecycle.Session) *Relay {
			ro := testRelayOptions()
			ro.ParkAfter = 0 // as served: a streaming leg never parks
			return NewRelay(clientRelay, nil, upRelay, nil, ro)
		}, h.done)
	return h
}

// readFrame reads one whole frame (a single unfragmented frame) from c into sink.
func (h *rawHarness) readFrame(tb testing.TB, c net.Conn, sink []byte) {
	hd, err := readHeader(c, h.hdr[:])
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(c, sink[:hd.Length]); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkRelayLive is the GPT-Live shape: per op, 100 ms of one call
// (two 3.2 KB appends up, one 6.4 KB delta down), and each direction alone.
func BenchmarkRelayLive(b *testing.B) {
	up, down := liveFrame(liveUpBytes, true), liveFrame(liveDownBytes, false)
	sink := make([]byte, 2*liveDownBytes)
	for _, tc := range []struct {
		name       string
		frame      []byte
		fromClient bool
	}{
		{"client_to_upstream/3.2KB", up, true},
		{"upstream_to_client/6.4KB", down, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newLiveHarness(b, lifecycle.NewManager(testLifecycle()))
			defer h.close()
			h.relayOne(b, tc.frame, sink, tc.fromClient)
			b.SetBytes(int64(len(tc.frame)))
			b.ReportAllocs()
			for b.Loop() {
				h.relayOne(b, tc.frame, sink, tc.fromClient)
			}
		})
	}
	b.Run("call_100ms", func(b *testing.B) {
		h := newLiveHarness(b, lifecycle.NewManager(testLifecycle()))
		defer h.close()
		step := func() {
			// Both directions in flight at once, as in a call.
			if _, err := h.clientPeer.Write(up); err != nil {
				b.Fatal(err)
			}
			if _, err := h.upPeer.Write(down); err != nil {
				b.Fatal(err)
			}
			if _, err := h.clientPeer.Write(up); err != nil {
				b.Fatal(err)
			}
			h.readFrame(b, h.upPeer, sink)
			h.readFrame(b, h.clientPeer, sink)
			h.readFrame(b, h.upPeer, sink)
		}
		step()
		b.SetBytes(int64(2*len(up) + len(down)))
		b.ReportAllocs()
		for b.Loop() {
			step()
		}
	})
}

// BenchmarkRelayManySessions relays with 1,000 sessions' legs ready at
// once: per op, one frame into each of the 1,000 sessions (GPT-Live sizes,
// both directions alternating by session), then every frame read out the
// other side. ns/frame is the relay's cost per frame with that many
// goroutines runnable, scheduler and netpoller included.
func BenchmarkRelayManySessions(b *testing.B) {
	mgr := lifecycle.NewManager(testLifecycle())
	hs := make([]*rawHarness, manySessions)
	for i := range hs {
		hs[i] = newLiveHarness(b, mgr)
	}
	defer func() {
		for _, h := range hs {
			h.close()
		}
	}()
	up, down := liveFrame(liveUpBytes, true), liveFrame(liveDownBytes, false)
	sink := make([]byte, liveDownBytes)
	round := func() {
		for i, h := range hs {
			src, f := h.clientPeer, up
			if i%2 == 1 {
				src, f = h.upPeer, down
			}
			if _, err := src.Write(f); err != nil {
				b.Fatal(err)
			}
		}
		for i, h := range hs {
			dst := h.upPeer
			if i%2 == 1 {
				dst = h.clientPeer
			}
			h.readFrame(b, dst, sink)
		}
	}
	round()
	b.SetBytes(int64(manySessions/2*len(up) + manySessions/2*len(down)))
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		round()
		n++
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n*manySessions), "ns/frame")
}

// BenchmarkRelayIdleMemory reports the memory of an idle session (both
// legs open, nothing flowing): Go heap and goroutine stacks per session,
// and goroutines per session, over 1,000 relays, after a forced GC. The
// loopback peers are opened before the first reading, so only the relays
// count. It is a report, not an assertion; the time per op is meaningless.
func BenchmarkRelayIdleMemory(b *testing.B) {
	for b.Loop() {
	}
	type pair struct{ cp, cr, up, ur net.Conn }
	pairs := make([]pair, manySessions)
	for i := range pairs {
		pairs[i].cp, pairs[i].cr = tcpPair(b)
		pairs[i].up, pairs[i].ur = tcpPair(b)
	}
	mgr := lifecycle.NewManager(testLifecycle())
	read := func() (heap, stack uint64, goroutines int) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
	}
	h0, s0, g0 := read()
	hs := make([]*rawHarness, manySessions)
	for i, p := range pairs {
		hs[i] = startLiveHarness(b, mgr, p.cp, p.cr, p.up, p.ur)
	}
	// One event each way, as an idle call that was set up, then idle for
	// longer than ParkAfter (its pumps park).
	up, down := liveFrame(64, true), liveFrame(64, false)
	sink := make([]byte, 256)
	for _, h := range hs {
		h.relayOne(b, up, sink, true)
		h.relayOne(b, down, sink, false)
	}
	time.Sleep(1300 * time.Millisecond)
	h1, s1, g1 := read()
	n := float64(manySessions)
	b.ReportMetric((float64(h1)-float64(h0))/n, "heap-B/session")
	b.ReportMetric((float64(s1)-float64(s0))/n, "stack-B/session")
	b.ReportMetric((float64(h1)+float64(s1)-float64(h0)-float64(s0))/n, "B/session")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/session")
	for _, h := range hs {
		h.close()
	}
}
