package e2e

// Liveness while audio flows (issue 11, part 7; the drain scenarios live
// elsewhere). Every test drives the real binary over loopback with traffic
// on both legs, heartbeat 1 s / 500 ms on both legs, and asserts what a user
// notices: the close code the other leg receives, the teardown reason (the
// "session ended" log line and tether_sessions_total{reason}), and the time
// bound interval + timeout + 1 s. The close codes the log line reports must
// be the close frames the peers actually received.
//
// Where the built-in mock cannot produce a scenario (a frame cut mid-way),
// an independent raw WebSocket peer (github.com/gobwas/ws) plays the
// upstream or the client.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

const (
	lvInterval = time.Second
	lvTimeout  = 500 * time.Millisecond
	// lvBound is the contract's interval + timeout plus 1 s of slack.
	lvBound = lvInterval + lvTimeout + time.Second
	// lvObserve is how long a test keeps watching after the bound has
	// passed, so a miss reports what actually happened (and when).
	lvObserve = 12 * time.Second
	// lvAppendEvery is a microphone's pace: 20 ms of audio, 50 appends/s.
	lvAppendEvery = 20 * time.Millisecond
)

// lvVars is proxy.yaml with heartbeat 1 s / 500 ms on both legs.
// An empty upstreamURL leaves the upstream to newRig.
func lvVars(upstreamURL string) map[string]string {
	v := map[string]string{
		"ClientHBInterval": lvInterval.String(), "ClientHBTimeout": lvTimeout.String(),
		"UpstreamHBInterval": lvInterval.String(), "UpstreamHBTimeout": lvTimeout.String(),
		"IdleTimeout": "60s",
	}
	if upstreamURL != "" {
		v["UpstreamURL"] = upstreamURL
	}
	return v
}

// lvAppend is one input_audio_buffer.append of 20 ms of 24 kHz pcm16 (960
// bytes, base64'd: about 1.3 KB of JSON).
var lvAppend = []byte(`{"type":"input_audio_buffer.append","audio":"` + appendAudio + `"}`)

// lvDelta is one response.output_audio.delta of 20 ms of audio.
var lvDelta = []byte(`{"type":"response.output_audio.delta","event_id":"evt_raw","response_id":"resp_raw","item_id":"item_raw",` +
	`"output_index":0,"content_index":0,"delta":"` + appendAudio + `"}`)

// ---------------------------------------------------------------------------
// What tether reports

// sessionEnd is tether's "session ended" log line.
type sessionEnd struct {
	Reason                     string
	CloseClient, CloseUpstream int       // 0: none reported
	At                         time.Time // the line's timestamp
}

func logInt(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// waitSessionEnd waits up to timeout for the (first) "session ended" line.
func waitSessionEnd(p *proc, timeout time.Duration) (sessionEnd, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, rec := range p.logRecords() {
			if rec["msg"] == "session ended" {
				r, _ := rec["reason"].(string)
				ts, _ := rec["time"].(string)
				at, _ := time.Parse(time.RFC3339Nano, ts)
				return sessionEnd{Reason: r, CloseClient: logInt(rec["close_client"]), CloseUpstream: logInt(rec["close_upstream"]), At: at}, true
			}
		}
		if time.Now().After(deadline) {
			return sessionEnd{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkEnd checks the session ended once, with reason, in the log and in
// tether_sessions_total; when it did, it also checks the session and its
// goroutines are gone (assertSessionGone). from is the trigger (the fault).
func checkEnd(t *testing.T, p *proc, want string, base int, from time.Time) sessionEnd {
	t.Helper()
	end, ok := waitSessionEnd(p, stepTimeout)
	if !ok {
		t.Errorf("no \"session ended\" log line within %v", stepTimeout)
		return end
	}
	t.Logf("session ended %v after the trigger: reason %s, close_client %d, close_upstream %d",
		end.At.Sub(from).Round(time.Millisecond), end.Reason, end.CloseClient, end.CloseUpstream)
	if end.Reason != want {
		t.Errorf("session ended with reason %s, want %s", end.Reason, want)
	}
	// The counter is incremented before the log line is written.
	code, m := p.get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	if v, _ := parseMetric(string(m), "tether_sessions_total", `reason="`+want+`"`); v != 1 {
		t.Errorf("tether_sessions_total{reason=%q} = %v, want 1; %s", want, v, grepLines(string(m), "tether_sessions_total{"))
	}
	if end.Reason == want && !t.Failed() {
		p.assertSessionGone(want, base)
	}
	return end
}

// checkReported compares a close code the log line reports for a leg with
// the close frame that leg's peer actually received (0: none).
func checkReported(t *testing.T, leg string, reported, received int) {
	t.Helper()
	if reported != received {
		t.Errorf("log reports close %d sent to the %s, but the %s received %s", reported, leg, leg, describeCode(received))
	}
}

func describeCode(code int) string {
	if code == 0 {
		return "no close frame"
	}
	return fmt.Sprintf("close %d", code)
}

// ---------------------------------------------------------------------------
// The harness client: its end, and audio at 50 appends/s

// lateClose returns got, or, when the client had no close frame by the
// bound, the code of one that arrived since (within another second), so
// the log's report can be compared with what the client received at all.
func lateClose(t *testing.T, c *rtClient, got int, from time.Time) int {
	t.Helper()
	if got != 0 {
		return got
	}
	if ci, _, at := awaitClientEnd(c, time.Second); ci != nil {
		t.Logf("client got close %d late, %v after the stall", ci.Code, at.Sub(from).Round(time.Millisecond))
		return ci.Code
	}
	return 0
}

// awaitClientEnd polls c until it received a close frame or its connection
// ended, or timeout passed. at is when (the close frame's arrival, or when
// the end was seen).
func awaitClientEnd(c *rtClient, timeout time.Duration) (ci *closeInfo, readErr error, at time.Time) {
	deadline := time.Now().Add(timeout)
	for {
		ci, readErr = c.CloseReceived(), c.Err()
		switch {
		case ci != nil:
			return ci, nil, ci.At
		case readErr != nil:
			return nil, readErr, time.Now()
		case time.Now().After(deadline):
			return nil, nil, time.Time{}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rtSend writes one masked text frame on c, unless c has started or
// answered a closing handshake (audio stops there, as a browser's would).
func rtSend(c *rtClient) func([]byte) error {
	return func(b []byte) error { return c.WriteOpen(ws.NewTextFrame(b)) }
}

// ticker sends one frame every period until stopped or a send fails.
type ticker struct {
	sent     atomic.Int64
	stopCh   chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	err      error
}

// startTicker calls send(frame) every period in a goroutine; stop ends it
// (also at cleanup).
func startTicker(t testing.TB, period time.Duration, frame []byte, send func([]byte) error) *ticker {
	k := &ticker{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			if err := send(frame); err != nil {
				k.mu.Lock()
				k.err = err
				k.mu.Unlock()
				return
			}
			k.sent.Add(1)
			select {
			case <-k.stopCh:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(k.stop)
	return k
}

func (k *ticker) stop() {
	k.stopOnce.Do(func() { close(k.stopCh) })
	<-k.done
}

func (k *ticker) ended() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// countEvents counts c's received events of type typ.
func countEvents(c *rtClient, typ string) int {
	n := 0
	for _, ev := range c.Events() {
		if ev["type"] == typ {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// An independent WebSocket peer (either side of tether)

var errPeerStopped = errors.New("peer: stalled or closing")

// peerMsg is one data message a peer received (fragments reassembled).
type peerMsg struct {
	Op     ws.OpCode
	Len    int64
	Sum    [sha256.Size]byte
	Type   string // the JSON "type" found in the first bytes of a text message
	Frames int    // frames it came in
	At     time.Time
}

// wsPeer is a raw WebSocket endpoint: a reader goroutine reassembles
// messages (hashing them, keeping no copy), hands pings to a ponger
// goroutine (so the reader never waits behind a long write), echoes a close
// frame, and records what arrived. After stallMidFrame it writes nothing
// more, not even pongs, while it keeps reading.
type wsPeer struct {
	name   string
	conn   net.Conn
	rd     io.Reader
	client bool // mask writes

	wmu       sync.Mutex
	stalled   bool // guarded by wmu
	closeSent bool // guarded by wmu

	pings    chan []byte
	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup

	mu      sync.Mutex
	msgs    []peerMsg
	closeRx *closeInfo
	endErr  error
	endAt   time.Time
}

func newPeer(name string, conn net.Conn, rd io.Reader, client bool) *wsPeer {
	p := &wsPeer{name: name, conn: conn, rd: rd, client: client, pings: make(chan []byte, 8), quit: make(chan struct{})}
	p.wg.Add(2)
	go p.read()
	go p.pong()
	return p
}

// dialPeer opens a session through tether (ws://addr) as a raw client.
func dialPeer(t testing.TB, addr string) *wsPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	conn, br, _, err := ws.Dialer{Timeout: stepTimeout}.Dial(ctx, "ws://"+addr+"/v1/realtime?model=gpt-realtime")
	if err != nil {
		t.Fatalf("dial ws://%s: %v", addr, err)
	}
	var rd io.Reader = conn
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	p := newPeer("client", conn, rd, true)
	t.Cleanup(p.Close)
	return p
}

// Close drops the connection and waits for the peer's goroutines.
func (p *wsPeer) Close() {
	p.quitOnce.Do(func() { close(p.quit) })
	p.conn.Close()
	p.wg.Wait()
}

var typeRE = regexp.MustCompile(`"type"\s*:\s*"([^"]{1,64})"`)

func (p *wsPeer) read() {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	var (
		inMsg  bool
		cur    peerMsg
		h256   = sha256.New()
		prefix []byte
	)
	for {
		h, err := ws.ReadHeader(p.rd)
		if err != nil {
			p.end(err)
			return
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 {
				p.end(fmt.Errorf("control frame of %d bytes", h.Length))
				return
			}
			b := make([]byte, h.Length)
			if _, err := io.ReadFull(p.rd, b); err != nil {
				p.end(err)
				return
			}
			if h.Masked {
				ws.Cipher(b, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				select {
				case p.pings <- b:
				default:
				}
			case ws.OpClose:
				ci := &closeInfo{Code: 1005, At: time.Now()}
				if len(b) >= 2 {
					ci.Code, ci.Reason = int(binary.BigEndian.Uint16(b)), string(b[2:])
				}
				p.mu.Lock()
				if p.closeRx == nil {
					p.closeRx = ci
				}
				p.mu.Unlock()
				_ = p.writeFrame(ws.NewCloseFrame(b[:min(len(b), 2)]))
				_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			}
			continue
		}
		if h.OpCode != ws.OpContinuation || !inMsg {
			inMsg = true
			cur = peerMsg{Op: h.OpCode}
			h256.Reset()
			prefix = prefix[:0]
		}
		cur.Frames++
		var off int64
		for off < h.Length {
			n := int(min(h.Length-off, int64(len(buf))))
			if _, err := io.ReadFull(p.rd, buf[:n]); err != nil {
				p.end(err)
				return
			}
			if h.Masked {
				ws.Cipher(buf[:n], h.Mask, int(off))
			}
			h256.Write(buf[:n])
			if len(prefix) < 256 {
				prefix = append(prefix, buf[:min(n, 256-len(prefix))]...)
			}
			off += int64(n)
		}
		cur.Len += h.Length
		if !h.Fin {
			continue
		}
		inMsg = false
		copy(cur.Sum[:], h256.Sum(nil))
		if m := typeRE.FindSubmatch(prefix); m != nil && cur.Op == ws.OpText {
			cur.Type = string(m[1])
		}
		cur.At = time.Now()
		p.mu.Lock()
		p.msgs = append(p.msgs, cur)
		p.mu.Unlock()
	}
}

func (p *wsPeer) end(err error) {
	p.mu.Lock()
	if p.endErr == nil {
		p.endErr, p.endAt = err, time.Now()
	}
	p.mu.Unlock()
	p.quitOnce.Do(func() { close(p.quit) })
	p.conn.Close()
}

func (p *wsPeer) pong() {
	defer p.wg.Done()
	for {
		select {
		case <-p.quit:
			return
		case b := <-p.pings:
			_ = p.writeFrame(ws.NewPongFrame(b))
		}
	}
}

// writeFrame writes f whole (masked if a client), unless the peer stalled
// or sent its close.
func (p *wsPeer) writeFrame(f ws.Frame) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.stalled || p.closeSent {
		return errPeerStopped
	}
	if f.Header.OpCode == ws.OpClose {
		p.closeSent = true
	}
	if p.client {
		f = ws.MaskFrame(f)
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(stepTimeout + time.Duration(len(f.Payload)>>19)*time.Second))
	return ws.WriteFrame(p.conn, f)
}

func (p *wsPeer) sendText(b []byte) error { return p.writeFrame(ws.NewTextFrame(b)) }

// stallMidFrame writes the header of a total-byte text frame and the
// first len(part) bytes of its payload, and from then on writes nothing.
func (p *wsPeer) stallMidFrame(total int64, part []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.stalled || p.closeSent {
		return errPeerStopped
	}
	p.stalled = true
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: total}
	part = bytes.Clone(part)
	if p.client {
		h.Masked, h.Mask = true, ws.NewMask()
		ws.Cipher(part, h.Mask, 0)
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(stepTimeout))
	if err := ws.WriteHeader(p.conn, h); err != nil {
		return err
	}
	_, err := p.conn.Write(part)
	return err
}

func (p *wsPeer) messages() []peerMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]peerMsg(nil), p.msgs...)
}

func (p *wsPeer) count(typ string) int {
	n := 0
	for _, m := range p.messages() {
		if m.Type == typ {
			n++
		}
	}
	return n
}

// closeState returns the close frame received (nil if none) and, once the
// connection ended, why and when.
func (p *wsPeer) CloseState() (ci *closeInfo, endErr error, endAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closeRx, p.endErr, p.endAt
}

// receivedCode is the close code received, 0 if none.
func (p *wsPeer) receivedCode() int {
	if ci, _, _ := p.CloseState(); ci != nil {
		return ci.Code
	}
	return 0
}

// settledCode is the close code the peer received once its connection has
// settled: tether writes both legs' close frames at once, so the other leg's
// may arrive a moment after the one the test waited for.
func (p *wsPeer) settledCode() int {
	if ci, _, _ := p.awaitClose(time.Second); ci != nil {
		return ci.Code
	}
	return 0
}

// awaitClose polls until the peer received a close frame or its connection
// ended, or timeout passed.
func (p *wsPeer) awaitClose(timeout time.Duration) (ci *closeInfo, endErr error, at time.Time) {
	deadline := time.Now().Add(timeout)
	for {
		ci, endErr, endAt := p.CloseState()
		switch {
		case ci != nil:
			return ci, nil, ci.At
		case endErr != nil:
			return nil, endErr, endAt
		case time.Now().After(deadline):
			return nil, nil, time.Time{}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitType waits until the peer received a message of type typ.
func (p *wsPeer) waitType(t testing.TB, typ string, n int, timeout time.Duration) {
	t.Helper()
	testkit.WaitFor(t, timeout, fmt.Sprintf("%d %s at the %s", n, typ, p.name), func() bool {
		if _, err, _ := p.CloseState(); err != nil {
			t.Fatalf("%s: connection ended (%v) while waiting for %s", p.name, err, typ)
		}
		return p.count(typ) >= n
	})

}

// ---------------------------------------------------------------------------
// A raw realtime upstream

// rawUpstream answers WebSocket upgrades itself, sends session.created, and
// hands each session to the test as a wsPeer.
type rawUpstream struct {
	URL   string
	peers chan *wsPeer
}

func startRawUpstream(t testing.TB) *rawUpstream {
	t.Helper()
	u := &rawUpstream{peers: make(chan *wsPeer, 16)}
	u.URL = "ws://" + testkit.Serve(t, u.serve).Addr() + "/v1/realtime"
	return u
}

const rawSessionCreated = `{"type":"session.created","event_id":"evt_raw_0","session":{"type":"realtime","object":"realtime.session","id":"sess_raw","model":"gpt-realtime"}}`

// serve upgrades nc and runs its peer until the connection ends (the
// server closes it when the test ends).
func (u *rawUpstream) serve(nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(stepTimeout))
	up := ws.Upgrader{Protocol: func(b []byte) bool { return string(b) == "realtime" }}
	_, err := up.Upgrade(nc)
	_ = nc.SetDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return
	}
	p := newPeer("upstream", nc, nc, false)
	defer p.wg.Wait()
	if p.sendText([]byte(rawSessionCreated)) != nil {
		return
	}
	select {
	case u.peers <- p:
	default:
	}
}

// next waits for the next upstream session.
func (u *rawUpstream) next(t testing.TB) *wsPeer {
	t.Helper()
	return testkit.Recv(t, u.peers, stepTimeout, "an upstream session")
}

// streamAnswer starts an answer: response.created, then a 20 ms audio delta
// every 20 ms (real time) until stopped or a write fails.
func streamAnswer(t testing.TB, up *wsPeer) *ticker {
	t.Helper()
	if err := up.sendText([]byte(`{"type":"response.created","event_id":"evt_raw_1","response":{"object":"realtime.response","id":"resp_raw","status":"in_progress","output":[]}}`)); err != nil {
		t.Fatalf("response.created: %v", err)
	}
	return startTicker(t, lvAppendEvery, lvDelta, up.sendText)
}

// ---------------------------------------------------------------------------
// A link shaped to a rate (client -> tether)

// throttle is a TCP relay in front of tether that passes the client's
// bytes on at most rate bytes/s (a slow uplink) and tether's unshaped.
type throttle struct {
	srv    *testkit.Server
	target string
	rate   float64
}

func startThrottle(t testing.TB, target string, rate float64) *throttle {
	t.Helper()
	th := &throttle{target: target, rate: rate}
	th.srv = testkit.Serve(t, th.relay)
	return th
}

func (th *throttle) Addr() string { return th.srv.Addr() }

// relay connects one client connection to tether until either side ends.
func (th *throttle) relay(down net.Conn) {
	up, err := net.DialTimeout("tcp", th.target, stepTimeout)
	if err != nil {
		down.Close()
		return
	}
	var downlink sync.WaitGroup
	downlink.Go(func() { copyPaced(down, up, 0) })
	copyPaced(up, down, th.rate)
	downlink.Wait()
}

// copyPaced copies src to dst, then closes both; with rate > 0, paced to
// rate bytes/s (no credit for idle time, so no bursts).
func copyPaced(dst, src net.Conn, rate float64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 8<<10)
	next := time.Now()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if rate > 0 {
				// Sleep overshoots are made up; idle time is not credited.
				if now := time.Now(); now.Sub(next) > 20*time.Millisecond {
					next = now
				}
				next = next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
				time.Sleep(time.Until(next))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ---------------------------------------------------------------------------
// The scenarios

// expectClientClose checks that c received close want within lvBound of
// from, and returns the code received (0: none).
func expectClientClose(t *testing.T, c *rtClient, from time.Time, want int) int {
	t.Helper()
	ci, err, at := awaitClientEnd(c, lvBound+lvObserve)
	switch {
	case ci != nil:
		d := at.Sub(from)
		t.Logf("client got close %d %q %v after the stall (bound %v)", ci.Code, ci.Reason, d.Round(time.Millisecond), lvBound)
		if ci.Code != want {
			t.Errorf("client got close %d, want %d", ci.Code, want)
		}
		if d > lvBound {
			t.Errorf("client got its close %v after the stall, want within %v (interval + timeout + 1 s)", d.Round(time.Millisecond), lvBound)
		}
		return ci.Code
	case err != nil:
		t.Errorf("client connection ended %v after the stall without a close frame (%v), want close %d within %v",
			at.Sub(from).Round(time.Millisecond), err, want, lvBound)
	default:
		t.Errorf("client got nothing within %v of the stall (want close %d within %v): the session is still open",
			lvBound+lvObserve, want, lvBound)
	}
	return 0
}

// lvStallWhileAppending runs scenarios 1 and 5: the in-test mock stalls
// (mock.fault stall) while the client appends at 50/s, and, with answer,
// while a 10 s answer streams to the client.
func lvStallWhileAppending(t *testing.T, answer bool) {
	r := newRig(t, lvVars(""), mock.Options{})
	c := r.dial(t, clientOpts{})
	if answer {
		c.fault("slow", map[string]any{"delta_interval_ms": 100}) // 100 ms deltas in real time
		c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(testAudio(10000))})
		c.Send(map[string]any{"type": "input_audio_buffer.commit"})
		c.WaitEvent("input_audio_buffer.committed", stepTimeout)
		c.Send(map[string]any{"type": "response.create"})
		c.WaitEvent("response.output_audio.delta", stepTimeout)
	}
	app := startTicker(t, lvAppendEvery, lvAppend, rtSend(c))
	testkit.WaitFor(t, stepTimeout, "a second of audio appended", func() bool { return app.sent.Load() >= 50 })
	if answer {
		if n := countEvents(c, "response.output_audio.delta"); n < 5 {
			t.Fatalf("only %d audio deltas after a second of the answer", n)
		}
		if countEvents(c, "response.done") > 0 {
			t.Fatal("the answer ended before the stall")
		}
	}
	c.fault("stall", nil)
	stall := time.Now()
	got := expectClientClose(t, c, stall, 4002)
	t.Logf("appends sent: %d (%v); audio deltas received: %d", app.sent.Load(), app.ended(),
		countEvents(c, "response.output_audio.delta"))
	app.stop()
	end := checkEnd(t, r.p, "upstream_heartbeat_timeout", r.base, stall)
	checkReported(t, "client", end.CloseClient, lateClose(t, c, got, stall))
}

// TestLivenessUpstreamStallWhileAppending (scenario 1): the upstream stalls
// (stops reading, writing and answering pings, socket open) while the
// client appends 20 ms of audio 50 times a second. Write progress must not
// keep the dead upstream alive: the client gets 4002 within interval +
// timeout + 1 s of the stall, reason upstream_heartbeat_timeout.
func TestLivenessUpstreamStallWhileAppending(t *testing.T) {
	lvStallWhileAppending(t, false)
}

// TestLivenessUpstreamStallDuringAnswer (scenario 5): as above, but a 10 s
// answer streams to the client (100 ms deltas in real time) while the
// client appends: 4002 within the bound, upstream_heartbeat_timeout.
func TestLivenessUpstreamStallDuringAnswer(t *testing.T) {
	lvStallWhileAppending(t, true)
}

// TestLivenessClientSilentDuringAnswer (scenario 2): the client stops
// reading, stops answering pings and sends nothing while a 10 s answer
// streams from the upstream (in real time: the kernel keeps taking the
// audio, so write progress proves nothing). The upstream leg is closed
// (close 1001, or at least the connection) within interval + timeout + 1 s
// of the client's last frame, reason client_heartbeat_timeout, well before
// the answer ends.
func TestLivenessClientSilentDuringAnswer(t *testing.T) {
	r := newRig(t, lvVars(""), mock.Options{})
	c := r.dial(t, clientOpts{})
	c.fault("slow", map[string]any{"delta_interval_ms": 100})
	c.Send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(testAudio(10000))})
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.WaitEvent("input_audio_buffer.committed", stepTimeout)
	c.Send(map[string]any{"type": "response.create"})
	c.WaitEvent("response.output_audio.delta", stepTimeout)
	answerStart := time.Now()

	// Silence: no pongs, no reads, nothing written from here on.
	c.SetAnswerPings(false)
	c.StopReading()
	silent := time.Now()
	if sent := c.SentFrames(); len(sent) > 0 && sent[len(sent)-1].At.After(silent) {
		silent = sent[len(sent)-1].At // a pong that was already on its way
	}

	deadline := silent.Add(lvBound + lvObserve)
	var (
		closedAt  time.Time
		closeCode int
		how       string
	)
	for closedAt.IsZero() && time.Now().Before(deadline) {
		if r.tap.count() > 0 {
			tc := r.tap.conn(0)
			for _, f := range tc.frames() {
				if f.Op == ws.OpClose {
					closeCode, _ = f.CloseCode()
					closedAt, how = time.Now(), fmt.Sprintf("close frame %d", closeCode)
					break
				}
			}
			if closedAt.IsZero() {
				tc.mu.Lock()
				ended := tc.endErr
				tc.mu.Unlock()
				if ended != nil {
					closedAt, how = time.Now(), fmt.Sprintf("connection closed without a close frame (%v)", ended)
				}
			}
		}
		if closedAt.IsZero() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	pings := c.Pings()
	upDeltas := 0
	if r.tap.count() > 0 {
		for _, f := range r.tap.conn(0).upstreamFrames() {
			if f.Op == ws.OpText && bytes.Contains(f.Payload, []byte(`"response.output_audio.delta"`)) {
				upDeltas++
			}
		}
	}
	if closedAt.IsZero() {
		t.Errorf("upstream leg still open %v after the client went silent (want closed within %v); the upstream sent %d of the answer's 100 deltas",
			lvBound+lvObserve, lvBound, upDeltas)
	} else {
		d := closedAt.Sub(silent)
		t.Logf("upstream leg: %s %v after the client went silent (bound %v), %v into the 10 s answer; upstream had sent %d of 100 deltas; pings seen by the client %d",
			how, d.Round(time.Millisecond), lvBound, closedAt.Sub(answerStart).Round(time.Millisecond), upDeltas, pings)
		if d > lvBound {
			t.Errorf("upstream leg closed %v after the client went silent, want within %v (interval + timeout + 1 s)", d.Round(time.Millisecond), lvBound)
		}
		if closeCode != 0 && closeCode != 1001 {
			t.Errorf("upstream got close %d, want 1001", closeCode)
		}
	}
	end := checkEnd(t, r.p, "client_heartbeat_timeout", r.base, silent)
	checkReported(t, "upstream", end.CloseUpstream, closeCode)
	c.ResumeReading()
}

// midFramePart is the first 1 KB of a 200 KB text frame that never ends.
const (
	midFrameTotal = 200_000
	midFramePart  = 1000
)

func midFrameBytes(typ string) []byte {
	b := []byte(`{"type":"` + typ + `","audio":"`)
	return append(b, bytes.Repeat([]byte("A"), midFramePart-len(b))...)
}

// TestLivenessMidFrameStall (scenario 3): with audio flowing both ways
// (client appends at 50/s, the upstream streams 20 ms deltas at 50/s), one
// leg sends the header and the first 1 KB of a 200 KB text frame and then
// nothing (it keeps reading; its socket stays open). The stalled leg is
// named and the other leg receives a close frame, within interval + timeout
// + 1 s: upstream stalled -> upstream_heartbeat_timeout, the client gets
// 4002; client stalled -> client_heartbeat_timeout, the upstream gets 1001.
func TestLivenessMidFrameStall(t *testing.T) {
	t.Run("upstream", func(t *testing.T) {
		u := startRawUpstream(t)
		p := startTether(t, "proxy.yaml", lvVars(u.URL))
		base := p.baseline()
		c := dialClient(t, p.Listen, clientOpts{})
		c.WaitEvent("session.created", stepTimeout)
		up := u.next(t)
		app := startTicker(t, lvAppendEvery, lvAppend, rtSend(c))
		answer := streamAnswer(t, up)
		testkit.WaitFor(t, stepTimeout, "a second of audio each way", func() bool {
			return up.count("input_audio_buffer.append") >= 50 && countEvents(c, "response.output_audio.delta") >= 50
		})

		answer.stop()
		if err := up.stallMidFrame(midFrameTotal, midFrameBytes("response.output_audio.delta")); err != nil {
			t.Fatalf("stall mid-frame: %v", err)
		}
		stall := time.Now()
		got := expectClientClose(t, c, stall, 4002)
		app.stop()
		upCode := up.settledCode()
		t.Logf("upstream received %s; appends sent %d (%v)", describeCode(upCode), app.sent.Load(), app.ended())
		end := checkEnd(t, p, "upstream_heartbeat_timeout", base, stall)
		checkReported(t, "client", end.CloseClient, lateClose(t, c, got, stall))
		checkReported(t, "upstream", end.CloseUpstream, upCode)
	})

	t.Run("client", func(t *testing.T) {
		u := startRawUpstream(t)
		p := startTether(t, "proxy.yaml", lvVars(u.URL))
		base := p.baseline()
		c := dialPeer(t, p.Listen)
		up := u.next(t)
		c.waitType(t, "session.created", 1, stepTimeout)
		app := startTicker(t, lvAppendEvery, lvAppend, c.sendText)
		answer := streamAnswer(t, up)
		testkit.WaitFor(t, stepTimeout, "a second of audio each way", func() bool {
			return up.count("input_audio_buffer.append") >= 50 && c.count("response.output_audio.delta") >= 50
		})

		app.stop()
		if err := c.stallMidFrame(midFrameTotal, midFrameBytes("input_audio_buffer.append")); err != nil {
			t.Fatalf("stall mid-frame: %v", err)
		}
		stall := time.Now()
		ci, err, at := up.awaitClose(lvBound + lvObserve)
		upCode := 0
		switch {
		case ci != nil:
			upCode = ci.Code
			d := at.Sub(stall)
			t.Logf("upstream got close %d %q %v after the client stalled (bound %v)", ci.Code, ci.Reason, d.Round(time.Millisecond), lvBound)
			if ci.Code != 1001 {
				t.Errorf("upstream got close %d, want 1001", ci.Code)
			}
			if d > lvBound {
				t.Errorf("upstream got its close %v after the client stalled, want within %v", d.Round(time.Millisecond), lvBound)
			}
		case err != nil:
			t.Errorf("upstream connection ended %v after the client stalled without a close frame (%v), want close 1001 within %v",
				at.Sub(stall).Round(time.Millisecond), err, lvBound)
		default:
			t.Errorf("upstream got nothing within %v of the client's stall: the session is still open", lvBound+lvObserve)
		}
		answer.stop()
		// The client kept reading: what it received is what tether wrote.
		if ci, err, _ := c.awaitClose(stepTimeout); ci == nil && err == nil {
			t.Errorf("the client's connection is still open %v after the upstream's close", stepTimeout)
		}
		clientCode := c.settledCode()
		t.Logf("client received %s; deltas sent %d", describeCode(clientCode), answer.sent.Load())
		end := checkEnd(t, p, "client_heartbeat_timeout", base, stall)
		checkReported(t, "upstream", end.CloseUpstream, upCode)
		checkReported(t, "client", end.CloseClient, clientCode)
	})
}

// TestLivenessSlowUplinkLongAppend (scenario 4): a 15 MiB
// input_audio_buffer.append (under the 16 MiB max_frame_bytes default) over
// a client link shaped to 1 MiB/s, while the upstream streams audio back:
// a slow but live uplink is alive (its bytes keep arriving). The message
// arrives whole at the upstream (length and SHA-256; fragments
// reassembled), the session is not torn down, and it goes on (a later
// event arrives, then the client's close ends it as client_closed).
func TestLivenessSlowUplinkLongAppend(t *testing.T) {
	const size = 15 << 20
	const rate = 1 << 20
	u := startRawUpstream(t)
	vars := lvVars(u.URL)
	vars["MaxFrameBytes"] = "16777216"
	p := startTether(t, "proxy.yaml", vars)
	base := p.baseline()
	th := startThrottle(t, p.Listen, rate)
	c := dialPeer(t, th.Addr())
	up := u.next(t)
	c.waitType(t, "session.created", 1, stepTimeout)
	answer := streamAnswer(t, up)

	head, tail := `{"type":"input_audio_buffer.append","event_id":"evt_big","audio":"`, `"}`
	raw := make([]byte, (size-len(head)-len(tail))/4*3)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	payload := make([]byte, 0, size)
	payload = append(payload, head...)
	payload = base64.StdEncoding.AppendEncode(payload, raw)
	payload = append(payload, tail...)
	sum := sha256.Sum256(payload)

	start := time.Now()
	wrote := make(chan error, 1)
	go func() { wrote <- c.sendText(payload) }()
	var arrived *peerMsg
	deadline := start.Add(time.Duration(size/rate)*time.Second + 10*time.Second)
	for arrived == nil {
		for _, m := range up.messages() {
			if m.Type == "input_audio_buffer.append" && m.Len > 1<<20 {
				arrived = &m
				break
			}
		}
		if arrived != nil {
			break
		}
		if ci, err, at := c.CloseState(); ci != nil || err != nil {
			t.Fatalf("client leg ended %v into the long append: close %v, %v", at.Sub(start).Round(time.Millisecond), ci, err)
		}
		if _, err, at := up.CloseState(); err != nil {
			t.Fatalf("upstream leg ended %v into the long append: %v (close received %d)", at.Sub(start).Round(time.Millisecond), err, up.receivedCode())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d-byte append did not arrive within %v", len(payload), deadline.Sub(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("writing the long append: %v", err)
	}
	d := arrived.At.Sub(start)
	t.Logf("%d-byte append arrived at the upstream %v after the client started it (%.2f MiB/s), in %d frames",
		arrived.Len, d.Round(time.Millisecond), float64(arrived.Len)/(1<<20)/d.Seconds(), arrived.Frames)
	if arrived.Len != int64(len(payload)) || arrived.Sum != sum {
		t.Errorf("upstream got %d bytes (sha256 match %v), want the client's %d bytes unchanged", arrived.Len, arrived.Sum == sum, len(payload))
	}
	if _, ok := waitSessionEnd(p, 0); ok {
		t.Fatalf("the session ended during the long append: %s", logTail(p))
	}
	if code := up.receivedCode(); code != 0 {
		t.Fatalf("the upstream got close %d during the long append", code)
	}
	// The session goes on.
	if err := c.sendText([]byte(`{"type":"input_audio_buffer.commit"}`)); err != nil {
		t.Fatalf("commit after the long append: %v", err)
	}
	up.waitType(t, "input_audio_buffer.commit", 1, stepTimeout)
	answer.stop()
	t.Logf("deltas streamed meanwhile: %d sent, %d received", answer.sent.Load(), c.count("response.output_audio.delta"))
	if ci, err, _ := c.CloseState(); ci != nil || err != nil {
		t.Fatalf("client leg ended: close %v, %v", ci, err)
	}
	bye := time.Now()
	if err := c.writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))); err != nil {
		t.Fatalf("close: %v", err)
	}
	if ci, _, _ := c.awaitClose(stepTimeout); ci == nil || ci.Code != 1000 {
		t.Errorf("client's close echoed as %v, want 1000", ci)
	}
	checkEnd(t, p, "client_closed", base, bye)
}

// logTail is the last lines of tether's log, for a failure message.
func logTail(p *proc) string {
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}
