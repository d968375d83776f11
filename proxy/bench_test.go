package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		tb.Fatal(r.err)
	}
	return a, r.c
}

// rawHarness is a relay between two loopback TCP legs whose peers are
// driven directly by the benchmark (no reader goroutines of their own).
type rawHarness struct {
	clientPeer, upPeer net.Conn
	mgr                *lifecycle.Manager
	sess               *lifecycle.Session
	done               chan struct{}
	hdr                [wsframe.MaxHeaderSize]byte
}

func newRawHarness(tb testing.TB) *rawHarness {
	cp, cr := tcpPair(tb)
	up, ur := tcpPair(tb)
	h := &rawHarness{clientPeer: cp, upPeer: up, mgr: lifecycle.NewManager(testLifecycle()), done: make(chan struct{})}
	ro := testRelayOptions()
	ro.MaxFrameBytes = 16 << 20
	ro.ParkAfter = 0 // as served: a streaming leg never parks
	h.sess = startRelay(tb, h.mgr, "bench", cr, ur, ro, h.done)
	return h
}

func (h *rawHarness) close() {
	h.sess.End(lifecycle.ReasonShutdown)
	h.clientPeer.Close()
	h.upPeer.Close()
	<-h.done
}

// voiceFrame encodes a realistic event of about size bytes: an append
// (client, masked) or an audio delta (upstream).
func voiceFrame(size int, fromClient bool) []byte {
	var ev string
	if fromClient {
		ev = `{"type":"input_audio_buffer.append","audio":"`
	} else {
		ev = `{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"`
	}
	return paddedFrame(ev, size, fromClient)
}

// paddedFrame encodes an event of about size bytes, prefix and a string
// value of "A"s closing it, as a text frame: masked if fromClient.
func paddedFrame(prefix string, size int, fromClient bool) []byte {
	payload := []byte(prefix + strings.Repeat("A", max(size-len(prefix)-2, 0)) + `"}`)
	f := ws.NewTextFrame(payload)
	if fromClient {
		f = ws.MaskFrame(f)
	}
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, f)
	return b.Bytes()
}

// relayCase is one frame size and direction.
type relayCase struct {
	name       string
	size       int
	fromClient bool
}

var relayCases = []relayCase{
	{"client_to_upstream/1KiB", 1 << 10, true},
	{"client_to_upstream/64KiB", 64 << 10, true},
	{"upstream_to_client/1KiB", 1 << 10, false},
	{"upstream_to_client/64KiB", 64 << 10, false},
}

// relayOne sends one frame into the relay and reads the message out the
// other side (one frame up to 32 KiB, fragments beyond) into sink, payload
// unmasked; it returns the payload length.
func (h *rawHarness) relayOne(tb testing.TB, frame, sink []byte, fromClient bool) int {
	src, dst := h.upPeer, h.clientPeer
	if fromClient {
		src, dst = h.clientPeer, h.upPeer
	}
	var werr chan error
	if len(frame) > 1<<20 {
		// A large frame fills the kernel buffers: write it while reading.
		werr = make(chan error, 1)
		go func() { _, err := src.Write(frame); werr <- err }()
	} else if _, err := src.Write(frame); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if werr != nil {
			if err := <-werr; err != nil {
				tb.Fatal(err)
			}
		}
	}()
	n := 0
	for {
		hd, err := readHeader(dst, h.hdr[:])
		if err != nil {
			tb.Fatal(err)
		}
		p := sink[n : n+int(hd.Length)]
		if _, err := io.ReadFull(dst, p); err != nil {
			tb.Fatal(err)
		}
		if hd.Masked {
			ws.Cipher(p, hd.Mask, 0)
		}
		n += len(p)
		if hd.Fin {
			return n
		}
	}
}

// payloadOf returns the unmasked payload of an encoded frame.
func payloadOf(frame []byte) []byte {
	h, _ := ws.ReadHeader(bytes.NewReader(frame))
	p := bytes.Clone(frame[len(frame)-int(h.Length):])
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return p
}

// largeCases are benchmarked only: a 15 MiB append (the largest a client
// sends) goes out as fragments of at most 32 KiB.
var largeCases = []relayCase{
	{"client_to_upstream/15MiB", 15 << 20, true},
	{"upstream_to_client/15MiB", 15 << 20, false},
}

func BenchmarkRelay(b *testing.B) {
	for _, tc := range append(relayCases[:len(relayCases):len(relayCases)], largeCases...) {
		b.Run(tc.name, func(b *testing.B) {
			h := newRawHarness(b)
			defer h.close()
			frame := voiceFrame(tc.size, tc.fromClient)
			sink := make([]byte, len(frame))
			h.relayOne(b, frame, sink, tc.fromClient) // warm the pools
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.relayOne(b, frame, sink, tc.fromClient)
			}
		})
	}
}

// TestRelayZeroAllocs fails if a steady-state relayed data frame allocates,
// in either direction, for small and large frames.
func TestRelayZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation test")
	}
	for _, tc := range relayCases {
		t.Run(tc.name, func(t *testing.T) {
			h := newRawHarness(t)
			defer h.close()
			frame := voiceFrame(tc.size, tc.fromClient)
			sink := make([]byte, len(frame))
			for range 10 {
				h.relayOne(t, frame, sink, tc.fromClient)
			}
			allocs := testing.AllocsPerRun(200, func() { h.relayOne(t, frame, sink, tc.fromClient) })
			if allocs != 0 {
				t.Fatalf("%v allocations per relayed frame, want 0", allocs)
			}
			n := h.relayOne(t, frame, sink, tc.fromClient)
			if !bytes.Equal(sink[:n], payloadOf(frame)) {
				t.Fatal("payload changed in transit")
			}
		})
	}
	_ = fmt.Sprint
}
