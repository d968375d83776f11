package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/upstreams/mock"
)

func startMock(t *testing.T) string {
	t.Helper()
	m := mock.New(mock.Options{})
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return "ws://" + addr.String() + "/v1/realtime"
}

// Two targets in turns against the mock: every scheduled probe is sent,
// echoed and timed, and the added latency is computed against the baseline.
func TestRunCountsEveryScheduledProbe(t *testing.T) {
	url := startMock(t)
	var progress strings.Builder
	rep, err := Run(context.Background(), Options{
		Target:   Target{Name: "a", URL: url},
		Baseline: Target{Name: "direct", URL: url},
		Sessions: 4, Rate: 50, Duration: 400 * time.Millisecond, Slot: 100 * time.Millisecond,
		Ramp: 50 * time.Millisecond, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 {
		t.Fatalf("%d targets in the report, want 2", len(rep.Targets))
	}
	// 4 sessions x 50/s x 400ms of turns = 80 probes per target.
	for _, tr := range rep.Targets {
		if tr.Connected != 4 || tr.Errors != 0 {
			t.Errorf("%s: %d connected, %d errors %v", tr.Name, tr.Connected, tr.Errors, tr.ErrorKinds)
		}
		if tr.FramesSent != 80 || tr.FramesReceived != 80 || tr.RTT.Count != 80 || tr.Lost != 0 {
			t.Errorf("%s: sent %d received %d timed %d lost %d, want 80 80 80 0", tr.Name, tr.FramesSent, tr.FramesReceived, tr.RTT.Count, tr.Lost)
		}
		if tr.BytesSent != 80*uint64(DefaultFrameBytes+8) || tr.BytesReceived != 80*uint64(DefaultFrameBytes+4) {
			t.Errorf("%s: bytes sent %d received %d", tr.Name, tr.BytesSent, tr.BytesReceived)
		}
		if tr.RTT.P50 <= 0 || tr.RTT.P50 > tr.RTT.P99 || tr.RTT.P99 > tr.RTT.Max || tr.Setup.Count != 4 {
			t.Errorf("%s: rtt %+v setup %+v", tr.Name, tr.RTT, tr.Setup)
		}
	}
	if rep.Targets[0].Added == nil || rep.Targets[1].Added != nil {
		t.Fatalf("added latency: target %+v baseline %+v; want it on the target only", rep.Targets[0].Added, rep.Targets[1].Added)
	}
	var table strings.Builder
	if err := rep.WriteText(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rtt p99.9", "added p99", "frames sent"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	for _, want := range []string{"connect | a 4/4 up", "turns of 100ms", "| a up 4 tx", "| direct up 4 tx"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}

// silentServer accepts WebSocket sessions, sends session.created, answers
// the session.update, and then reads every frame without ever answering.
func silentServer(t *testing.T) (string, func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		frames int64
		wg     sync.WaitGroup
		conns  []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if _, err := ws.Upgrade(c); err != nil {
					return
				}
				if err := ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"type":"session.created","session":{}}`))); err != nil {
					return
				}
				for n := 0; ; n++ {
					h, err := ws.ReadHeader(c)
					if err != nil {
						return
					}
					if _, err := io.CopyN(io.Discard, c, h.Length); err != nil {
						return
					}
					if h.OpCode == ws.OpClose {
						return
					}
					if n == 0 { // the session.update: answer it, then never again
						if err := ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"type":"session.updated","session":{}}`))); err != nil {
							return
						}
					}
					mu.Lock()
					frames++
					mu.Unlock()
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/", func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return frames
	}
}

// runOne runs o, which names one target, and returns that target's report;
// an error fails the test.
func runOne(t *testing.T, o Options) TargetReport {
	t.Helper()
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep.Targets[0]
}

// Open loop: with no echo ever coming back, the sends still go out on
// schedule, and every one of them is reported lost.
func TestRunIsOpenLoop(t *testing.T) {
	url, frames := silentServer(t)
	tr := runOne(t, Options{
		Target:   Target{Name: "silent", URL: url},
		Sessions: 3, Rate: 100, Duration: 300 * time.Millisecond, Drain: 50 * time.Millisecond,
	})
	if tr.FramesSent != 90 || tr.FramesReceived != 0 || tr.Lost != 90 {
		t.Fatalf("sent %d received %d lost %d; want 90 0 90", tr.FramesSent, tr.FramesReceived, tr.Lost)
	}
	// The server saw the echo fault event and every probe of each session.
	deadline := time.Now().Add(2 * time.Second)
	for frames() < 96 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := frames(); got != 96 {
		t.Fatalf("server received %d frames, want 3 session updates + 3 echo events + 90 probes", got)
	}
}

func TestRunIdleSessions(t *testing.T) {
	url := startMock(t)
	keyed := strings.Replace(url, "ws://", "ws://user:hunter2@", 1) + "?model=m&api_key=sk-secret"
	tr := runOne(t, Options{
		Target:   Target{Name: "mock", URL: keyed},
		Sessions: 20, Rate: 0, Duration: 100 * time.Millisecond, Ramp: 20 * time.Millisecond,
	})
	if tr.Connected != 20 || tr.FramesSent != 0 || tr.Errors != 0 || tr.Dropped != 0 {
		t.Fatalf("idle run: %+v", tr)
	}
	if tr.ConnectsPerSecond <= 0 {
		t.Fatalf("connects/s = %v", tr.ConnectsPerSecond)
	}
	// The report may be shared: it names the target without its credentials.
	if strings.Contains(tr.URL, "hunter2") || strings.Contains(tr.URL, "sk-secret") || !strings.Contains(tr.URL, "model=m") {
		t.Errorf("report URL %q: want the model and no credentials", tr.URL)
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"remote":       {Target: Target{URL: "ws://192.0.2.1:80/"}},
		"too many":     {Target: Target{URL: "ws://127.0.0.1:1/"}, Sessions: MaxSessions + 1},
		"rate":         {Target: Target{URL: "ws://127.0.0.1:1/"}, Rate: MaxRate + 1},
		"tiny frame":   {Target: Target{URL: "ws://127.0.0.1:1/"}, FrameBytes: 10},
		"long":         {Target: Target{URL: "ws://127.0.0.1:1/"}, Duration: 2 * time.Hour},
		"same name":    {Target: Target{Name: "x", URL: "ws://127.0.0.1:1/"}, Baseline: Target{Name: "x", URL: "ws://127.0.0.1:2/"}},
		"frame memory": {Target: Target{URL: "ws://127.0.0.1:1/"}, Sessions: 1000, Rate: 1, FrameBytes: 16 << 20},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%s: options accepted", name)
		}
	}
}

// A target that refuses connections is reported, not hung on.
func TestRunReportsConnectFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()
	tr := runOne(t, Options{
		Target:   Target{Name: "down", URL: "ws://" + ln.Addr().String() + "/"},
		Sessions: 3, Rate: 10, Duration: 100 * time.Millisecond,
	})
	if tr.Connected != 0 || tr.ConnectFailed != 3 || tr.ErrorKinds["connect: http 503"] != 3 {
		t.Fatalf("connected %d failed %d errors %v; want 0, 3, connect: http 503 x3", tr.Connected, tr.ConnectFailed, tr.ErrorKinds)
	}
}
