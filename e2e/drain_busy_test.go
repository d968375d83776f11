package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// Drain under traffic (issue 11, part 5): every session streams audio both
// ways when the signal arrives, and some callers' frames are stuck half-way.
const (
	busySessions   = 200
	busyMidFrame   = 40                    // callers stuck mid-append (no response in progress)
	appendEvery    = 20 * time.Millisecond // 50 appends a second, like a microphone
	busyDelta      = time.Second           // a response is 10 deltas: 9 s
	midFrameLength = 200 << 10             // the stuck frame's announced payload...
	midFrameSent   = 1 << 10               // ...of which the caller sent this much
)

// busyRig is tether with busySessions sessions. The talking ones are in the
// middle of a response (audio deltas down) while their caller appends 20 ms
// of audio every 20 ms (audio up); the stuck ones appended for a while, then
// sent the header of a 200 KB append and 1 KB of it, and nothing more.
type busyRig struct {
	p              *proc
	tap            *tap // nil unless asked for
	exited         <-chan time.Time
	talking, stuck []*rtClient
	timeout        time.Duration
	stopAudio      func()
}

// appendFrame is a masked input_audio_buffer.append of 20 ms of silence
// (silence: the mock's VAD starts no response of its own).
func appendFrame() ws.Frame {
	audio := base64.StdEncoding.EncodeToString(make([]byte, 48*int(appendEvery/time.Millisecond)))
	f := ws.NewTextFrame([]byte(`{"type":"input_audio_buffer.append","audio":"` + audio + `"}`))
	return ws.MaskFrameInPlace(f)
}

// sendHalfFrame writes the header of a midFrameLength text frame and the
// first midFrameSent bytes of its (masked) payload, and then nothing.
func (c *rtClient) sendHalfFrame(t *testing.T) {
	t.Helper()
	payload := []byte(`{"type":"input_audio_buffer.append","audio":"` + strings.Repeat("A", midFrameSent) + `"}`)[:midFrameSent]
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: midFrameLength, Masked: true, Mask: ws.NewMask()}
	ws.Cipher(payload, h.Mask, 0)
	if err := c.WritePartial(h, payload); err != nil {
		t.Fatalf("half frame: %v", err)
	}
}

// startBusyRig opens n sessions, midFrame of them stuck, and returns once
// audio has flowed both ways for a moment and tether lists every talking
// session as responding.
func startBusyRig(t *testing.T, n, midFrame int, drainTimeout time.Duration, withTap bool) *busyRig {
	t.Helper()
	raiseNoFile(t, 4*uint64(n)+256)
	_, url := startMock(t, mock.Options{})
	r := &busyRig{timeout: drainTimeout}
	if withTap {
		r.tap, url = startTap(t, url)
	}
	r.p = startTether(t, "load.yaml", map[string]string{
		"UpstreamURL":  url,
		"MaxSessions":  "1000",
		"DrainTimeout": drainTimeout.String(),
	})
	stride := n / max(midFrame, 1)
	for i := range n {
		c := dialClient(t, r.p.Listen, clientOpts{})
		c.WaitEvent("session.created", stepTimeout)
		if midFrame > 0 && i%stride == 0 && len(r.stuck) < midFrame {
			r.stuck = append(r.stuck, c)
		} else {
			r.talking = append(r.talking, c)
		}
	}
	f := appendFrame()
	stop, stopStuck := make(chan struct{}), make(chan struct{})
	var wg, stuckWG sync.WaitGroup
	for _, c := range r.talking {
		wg.Add(1)
		go c.stream(f, appendEvery, stop, &wg)
	}
	for _, c := range r.stuck {
		stuckWG.Add(1)
		go c.stream(f, appendEvery, stopStuck, &stuckWG)
	}
	var once sync.Once
	r.stopAudio = func() { once.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(r.stopAudio)
	// Every caller talks for at least 10 appends; then the stuck ones stop
	// in the middle of a frame, and the others talk on (10 more appends)
	// while their answers stream.
	r.waitAudio(t, n, 10, nil)
	close(stopStuck)
	stuckWG.Wait()
	for _, c := range r.stuck {
		c.sendHalfFrame(t)
	}
	// The answers start last, so they are still streaming at the deadline
	// however long the set-up took.
	for _, c := range r.talking {
		c.fault("slow", map[string]any{"delta_interval_ms": busyDelta.Milliseconds()})
		c.Send(map[string]any{"type": "response.create"})
	}
	for _, c := range r.talking {
		c.WaitEvent("response.output_audio.delta", stepTimeout)
	}
	r.waitAudio(t, n, 20, func(row map[string]any) bool { return row["state"] == "responding" })
	rows, raw := r.p.sessions()
	states := map[string]int{}
	for _, row := range rows {
		states[fmt.Sprint(row["state"])]++
	}
	if len(rows) != n || states["responding"] != len(r.talking) {
		t.Fatalf("before SIGTERM: %d sessions by state %v, want %d with %d responding: %s", len(rows), states, n, len(r.talking), tail(raw, 1024))
	}
	return r
}

// waitAudio waits until tether has relayed at least appends appends upstream
// on each of the n sessions that match (nil: all).
func (r *busyRig) waitAudio(t *testing.T, n, appends int, match func(map[string]any) bool) {
	t.Helper()
	want := float64(appends * len(appendFrame().Payload))
	testkit.WaitFor(t, stepTimeout, fmt.Sprintf("%d appends relayed upstream on every talking session", appends), func() bool {
		rows, _ := r.p.sessions()
		if len(rows) != n {
			return false
		}
		for _, row := range rows {
			if match != nil && !match(row) {
				continue
			}
			if up, _ := row["bytes_client_to_upstream"].(float64); up < want {
				return false
			}
		}
		return true
	})

}

func (r *busyRig) signal(t *testing.T) time.Time {
	t.Helper()
	return sigterm(r.p, &r.exited)
}

// closes waits for each client's close frame and checks it is 1001; it
// returns the earliest and latest, relative to t0.
func closes(t *testing.T, what string, cs []*rtClient, t0 time.Time, within time.Duration) (first, last time.Duration) {
	t.Helper()
	first = time.Hour
	for i, c := range cs {
		ci := c.WaitClose(within + time.Second)
		d := ci.At.Sub(t0)
		first, last = min(first, d), max(last, d)
		if ci.Code != 1001 {
			t.Errorf("%s session %d: close %d %q, want 1001", what, i, ci.Code, ci.Reason)
		}
		if d > within {
			t.Errorf("%s session %d: closed %v after the signal, want within %v", what, i, d, within)
		}
	}
	return first, last
}

// checkShutdownLogs: every session ended once, with reason shutdown.
func checkShutdownLogs(t *testing.T, p *proc, n int) {
	t.Helper()
	reasons := map[string]int{}
	for _, rec := range p.logRecords() {
		if rec["msg"] == "session ended" {
			reasons[fmt.Sprint(rec["reason"])]++
		}
	}
	if reasons["shutdown"] != n || len(reasons) != 1 {
		t.Errorf("session ended log lines by reason %v, want %d shutdown", reasons, n)
	}
}

// TestDrainBusyMidFrame: 200 sessions with audio flowing both ways (160
// mid-response with the caller appending at 50/s, 40 callers stuck in the
// middle of a 200 KB append), drain_timeout 2 s, SIGTERM. The stuck ones
// have no response in progress, so all 40 get 1001 at once (within 1 s:
// they close concurrently, not one after another); the others get 1001 at
// the deadline, counted from the signal (or right after their
// response.done, should a slow set-up leave their 9 s answer less to run);
// tether exits 0 within drain_timeout + 2 s.
func TestDrainBusyMidFrame(t *testing.T) {
	r := startBusyRig(t, busySessions, busyMidFrame, 2*time.Second, false)
	t0 := r.signal(t)
	_, stuckLast := closes(t, "stuck", r.stuck, t0, drainAtOnce)
	first, last := closes(t, "talking", r.talking, t0, r.timeout+time.Second)
	early := 0
	for i, c := range r.talking {
		if c.WaitClose(0).At.Sub(t0) >= r.timeout-100*time.Millisecond {
			continue
		}
		// Before the deadline only at its answer's end (a slow set-up may
		// leave an answer that little to run).
		early++
		if fs := serverFrames(c); len(fs) < 2 || fs[len(fs)-2].Type != "response.done" {
			t.Errorf("talking session %d: closed %v after SIGTERM, before the %v deadline and not after its response.done:%s",
				i, c.WaitClose(0).At.Sub(t0), r.timeout, describe(fs[max(0, len(fs)-4):]))
		}
	}
	r.stopAudio()
	exit := checkExit(t, r.p, r.exited, t0, r.timeout+2*time.Second)
	checkShutdownLogs(t, r.p, busySessions)
	t.Logf("busy drain figures (%d sessions streaming, %d stuck mid-frame, drain_timeout %v): stuck closed 1001 within %v; "+
		"talking closed 1001 between %v and %v (%d at their response.done before the deadline); exit 0 after %v",
		busySessions, len(r.stuck), r.timeout, stuckLast.Round(time.Millisecond),
		first.Round(time.Millisecond), last.Round(time.Millisecond), early, exit.Round(time.Millisecond))
}

// TestDrainBusySecondSignal: the same 200 sessions, drain_timeout 10 s; a
// second SIGTERM 200 ms after the first (while the stuck sessions are still
// being closed) closes every session with 1001 within 1 s of it, and tether
// exits 0 within 3 s of it.
func TestDrainBusySecondSignal(t *testing.T) {
	r := startBusyRig(t, busySessions, busyMidFrame, 10*time.Second, false)
	t0 := r.signal(t)
	time.Sleep(200 * time.Millisecond)
	t1 := r.signal(t)
	_, stuckLast := closes(t, "stuck", r.stuck, t0, drainAtOnce)
	_, last := closes(t, "talking", r.talking, t1, drainAtOnce)
	r.stopAudio()
	exit := checkExit(t, r.p, r.exited, t1, 3*time.Second)
	checkShutdownLogs(t, r.p, busySessions)
	if !strings.Contains(r.p.stderr.String(), "second signal") {
		t.Errorf("the log does not mention the second signal")
	}
	t.Logf("busy second signal figures (%d sessions, %d stuck, drain_timeout %v): second SIGTERM %v after the first; "+
		"stuck closed within %v of the first; every talking session closed 1001 within %v of the second; exit 0 %v after it",
		busySessions, len(r.stuck), r.timeout, t1.Sub(t0).Round(time.Millisecond), stuckLast.Round(time.Millisecond),
		last.Round(time.Millisecond), exit.Round(time.Millisecond))
}

// TestDrainMidFrameUpstreamGetsClose: 80 sessions through a tap, 40 callers
// stuck mid-frame, drain_timeout 2 s: every upstream leg, the stuck ones'
// too, receives a close frame 1001 (between fragments, since the frame the
// caller started never ends) within 1 s of its session's end, and tether
// exits 0 within drain_timeout + 2 s. Needs the relay that does not hold
// the upstream's write lock while waiting for the caller's bytes (issue 11
// part 2); before it, the stuck sessions' upstream legs are closed without a
// close frame.
func TestDrainMidFrameUpstreamGetsClose(t *testing.T) {
	const n = 80
	r := startBusyRig(t, n, busyMidFrame, 2*time.Second, true)
	t0 := r.signal(t)
	closes(t, "stuck", r.stuck, t0, drainAtOnce)
	closes(t, "talking", r.talking, t0, r.timeout+time.Second)
	r.stopAudio()
	checkExit(t, r.p, r.exited, t0, r.timeout+2*time.Second)
	if got := r.tap.count(); got != n {
		t.Fatalf("%d upstream connections through the tap, want %d", got, n)
	}
	missing := 0
	for i := range n {
		f, ok := r.tap.findClose(i, 0)
		if !ok {
			missing++
			if missing <= 3 {
				t.Errorf("upstream leg %d: no close frame from tether (%s)", i, r.tap.conn(i).describeEnd())
			}
			continue
		}
		if code, _ := f.CloseCode(); code != 1001 {
			t.Errorf("upstream leg %d: close %d, want 1001", i, code)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d upstream legs got no close frame (%d sessions were stuck mid-frame)", missing, n, len(r.stuck))
	}
}

// hangingUpstream accepts TCP connections and never answers: an upstream
// whose upgrade hangs. accepted counts connections.
func hangingUpstream(t *testing.T) (url string, accepted func() int) {
	t.Helper()
	s := testkit.Serve(t, nil)
	return s.URL("/v1/realtime"), s.Accepted
}

// upgradeAnswer is an upgrade's HTTP answer and when it came.
type upgradeAnswer struct {
	status int
	retry  string
	body   string
	at     time.Time
	err    error
}

// upgradeInBackground sends an upgrade from its own goroutine (no t.Fatal
// there) and delivers the answer.
func upgradeInBackground(addr string) <-chan upgradeAnswer {
	out := make(chan upgradeAnswer, 1)
	go func() {
		var a upgradeAnswer
		defer func() { out <- a }()
		conn, err := net.DialTimeout("tcp", addr, stepTimeout)
		if err != nil {
			a.err = err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * stepTimeout))
		fmt.Fprintf(conn, "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		a.at = time.Now()
		if err != nil {
			a.err = err
			return
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		a.status, a.retry, a.body = resp.StatusCode, resp.Header.Get("Retry-After"), b.String()
	}()
	return out
}

// startHangingDial starts tether whose only upstream hangs (dial timeout
// 10 s) and an upgrade that is dialing it.
func startHangingDial(t *testing.T, drainTimeout time.Duration) (*proc, <-chan upgradeAnswer) {
	t.Helper()
	url, accepted := hangingUpstream(t)
	p := startTether(t, "load.yaml", map[string]string{
		"UpstreamURL":  url,
		"DialTimeout":  "10s",
		"DrainTimeout": drainTimeout.String(),
	})
	ans := upgradeInBackground(p.Listen)
	testkit.WaitFor(t, stepTimeout, "tether dialing the hanging upstream", func() bool { return accepted() == 1 })
	return p, ans
}

func awaitAnswer(t *testing.T, ans <-chan upgradeAnswer) upgradeAnswer {
	t.Helper()
	select {
	case a := <-ans:
		if a.err != nil {
			t.Fatalf("upgrade: %v", a.err)
		}
		return a
	case <-time.After(2*stepTimeout + time.Second):
		t.Fatal("no answer to the upgrade")
		return upgradeAnswer{}
	}
}

func check503(t *testing.T, a upgradeAnswer) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable || a.retry == "" {
		t.Errorf("upgrade dialing at shutdown: %d Retry-After %q %s, want 503 with Retry-After", a.status, a.retry, a.body)
	}
}

// TestDrainSecondSignalCancelsDial: an upgrade whose upstream never answers
// the HTTP upgrade is still dialing at SIGTERM (drain_timeout 10 s, dial
// timeout 10 s); a second SIGTERM 300 ms later answers it 503 with
// Retry-After within 500 ms (not 502 after the dial timeout), and tether
// exits 0 within 3 s.
func TestDrainSecondSignalCancelsDial(t *testing.T) {
	p, ans := startHangingDial(t, 10*time.Second)
	exited := watchExit(p)
	p.signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	select {
	case a := <-ans:
		t.Fatalf("upgrade answered %d before the second signal (drain_timeout not reached)", a.status)
	default:
	}
	t1 := time.Now()
	p.signal(syscall.SIGTERM)
	a := awaitAnswer(t, ans)
	check503(t, a)
	if d := a.at.Sub(t1); d > 500*time.Millisecond {
		t.Errorf("503 came %v after the second signal, want within 500ms", d)
	}
	exit := checkExit(t, p, exited, t1, 3*time.Second)
	t.Logf("dial cancelled by the second signal: %d after %v; exit 0 %v after the second signal",
		a.status, a.at.Sub(t1).Round(time.Millisecond), exit.Round(time.Millisecond))
}

// TestDrainDeadlineCancelsDial: the same hanging dial and one SIGTERM with
// drain_timeout 1 s: the upgrade gets 503 with Retry-After at the deadline
// (not 502 after the 10 s dial timeout), and tether exits 0 within
// drain_timeout + 2 s.
func TestDrainDeadlineCancelsDial(t *testing.T) {
	const timeout = time.Second
	p, ans := startHangingDial(t, timeout)
	exited := watchExit(p)
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	a := awaitAnswer(t, ans)
	check503(t, a)
	if d := a.at.Sub(t0); d < timeout-50*time.Millisecond || d > timeout+500*time.Millisecond {
		t.Errorf("503 came %v after SIGTERM, want at the %v deadline", d, timeout)
	}
	exit := checkExit(t, p, exited, t0, timeout+2*time.Second)
	t.Logf("dial cancelled at the drain deadline (%v): %d after %v; exit 0 after %v",
		timeout, a.status, a.at.Sub(t0).Round(time.Millisecond), exit.Round(time.Millisecond))
}
