package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A long session: 10 minutes of audio at 50 frames/s (20 ms frames), each
// way, sent as fast as tether relays it.
const (
	memoryFrames  = 30000
	memoryWindow  = 64   // frames in flight
	memoryEvery   = 2000 // frames between heap samples
	memoryWarmup  = 2    // samples before the reference sample
	memoryMaxGrow = 256 << 10
)

// TestMemoryLongSession: one session streams 30,000 audio frames each way
// (appends, echoed by the mock: the equivalent of 10 minutes at 50 frames/s,
// sent faster than real time). tether's heap in use after GC, sampled every
// 2,000 frames, stays flat: after warm-up no sample exceeds the reference
// by more than 256 KiB (a leak of 9 bytes per frame would), and the
// least-squares trend is under 4 bytes per frame.
func TestMemoryLongSession(t *testing.T) {
	m := startMockProc(t)
	p := startTether(t, "load.yaml", map[string]string{"UpstreamURL": m.URL}, heapGODEBUG)
	idle := p.heapLow()

	s, err := dialStreamer(p.Listen)
	if err != nil {
		t.Fatalf("open the session: %v", err)
	}
	t.Cleanup(s.Close)
	if err := s.sendText(`{"type":"mock.fault","fault":"echo"}`); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	type sample struct {
		frames int64
		heap   float64
	}
	var samples []sample
	// waitEchoed waits until the first n frames have come back.
	waitEchoed := func(n int64) {
		t.Helper()
		for s.echoed.Load() < n {
			select {
			case <-s.progress:
			case <-s.done:
				t.Fatalf("session ended after %d frames: close %d, %v", s.echoed.Load(), s.closeCode.Load(), s.err())
			case <-time.After(stepTimeout):
				t.Fatalf("no echo for %v (sent %d, echoed %d)", stepTimeout, s.sent.Load(), s.echoed.Load())
			}
		}
	}
	for sent := int64(0); sent < memoryFrames; sent++ {
		if sent > 0 && sent%memoryEvery == 0 {
			// Sample with nothing in flight, so every sample sees the same state.
			waitEchoed(sent)
			samples = append(samples, sample{sent, p.heapLow()})
		}
		waitEchoed(sent - memoryWindow) // keep memoryWindow frames in flight
		if err := s.sendAppend(); err != nil {
			t.Fatalf("append %d: %v (session closed with %d)", sent+1, err, s.closeCode.Load())
		}
	}
	waitEchoed(memoryFrames)
	samples = append(samples, sample{memoryFrames, p.heapLow()})
	streamed := time.Since(start)

	// tether carried it all, in one session.
	rows, raw := p.sessions()
	if len(rows) != 1 {
		t.Fatalf("GET /sessions: %s", tail(raw, 2048))
	}
	perFrame := float64(len(`{"type":"input_audio_buffer.append","event_id":"s00000","audio":""}`) + len(appendAudio))
	for _, k := range []string{"bytes_client_to_upstream", "bytes_upstream_to_client"} {
		if v, _ := rows[0][k].(float64); v < memoryFrames*perFrame*0.99 {
			t.Errorf("%s = %v, want about %v (30,000 frames)", k, v, memoryFrames*perFrame)
		}
	}

	ref := samples[memoryWarmup]
	var b strings.Builder
	var peak float64
	for i, sm := range samples {
		fmt.Fprintf(&b, " %d:%.0fKiB", sm.frames, sm.heap/1024)
		if i >= memoryWarmup {
			peak = max(peak, sm.heap)
		}
	}
	last := samples[len(samples)-1]
	slope := trend(samples[memoryWarmup:], func(sm sample) (float64, float64) { return float64(sm.frames), sm.heap })
	if peak-ref.heap > memoryMaxGrow {
		t.Errorf("heap in use grew %.0f KiB from %d to %d frames (%.0f KiB allowed):%s",
			(peak-ref.heap)/1024, ref.frames, memoryFrames, float64(memoryMaxGrow)/1024, b.String())
	}
	if slope > 4 {
		t.Errorf("heap in use trend %.1f bytes per frame over the session, want < 4 (flat):%s", slope, b.String())
	}

	_ = s.closeWith(1000)
	<-s.done
	waitSessionsGone(t, p, 1)
	after := p.heapLow()
	t.Logf("memory figures: %d frames each way (%.0f s of 50 frames/s audio) in %v; heap in use after GC: idle %.0f KiB, "+
		"during the session (frames:heap)%s; last - reference (at %d frames) %+.0f KiB, trend %+.2f bytes/frame; after the session %.0f KiB",
		memoryFrames, memoryFrames/50.0, streamed.Round(time.Millisecond), idle/1024, b.String(), ref.frames,
		(last.heap-ref.heap)/1024, slope, after/1024)
}

// trend is the least-squares slope of y over x.
func trend[T any](pts []T, xy func(T) (float64, float64)) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, p := range pts {
		x, y := xy(p)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	if d := n*sxx - sx*sx; d != 0 {
		return (n*sxy - sx*sy) / d
	}
	return 0
}
