package e2e

// Parked legs (proxy/park.go) driven from outside: every scenario runs
// tether with a short server.park_after, waits until the goroutine profile
// shows the session's pumps parked, then acts.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// parkAfter is server.park_after in the park scenarios' tether (tether's
// default is 1 s): short, so that a scenario waits little for its legs to
// park.
const parkAfter = 200 * time.Millisecond

// parkQuiet is a quiet spell well past parkAfter (and the wake-up's
// latency): how long a frame's payload lags its header, for one.
const parkQuiet = 3 * parkAfter

// rawParkSession starts a raw upstream and a tether in front of it with
// park_after set to parkAfter, and opens one session through them: it
// returns tether, the client (which has session.created) and the
// upstream's end.
func rawParkSession(t *testing.T) (*proc, *rtClient, *wsPeer) {
	t.Helper()
	raw := startRawUpstream(t)
	p := startTether(t, "proxy.yaml", parkVars(map[string]string{"UpstreamURL": raw.URL}))
	c := dialClient(t, p.Listen, clientOpts{})
	up := raw.next(t)
	c.WaitEvent("session.created", stepTimeout)
	return p, c, up
}

// parkVars are a park scenario's fixture variables: vars, with tether's
// park_after set to parkAfter.
func parkVars(vars map[string]string) map[string]string {
	v := map[string]string{"ParkAfter": parkAfter.String()}
	maps.Copy(v, vars)
	return v
}

// pumpGoroutines counts tether's goroutines that run a relay pump, from
// its goroutine profile (a parked leg's pump has none), and returns their
// records of the profile.
func (p *proc) pumpGoroutines() (int, string) {
	p.t.Helper()
	// After a "goroutine profile: total" line, records are "<count> @ <pcs>"
	// followed by one "#\t" line per frame, and end at a blank line.
	_, recs, _ := strings.Cut(p.goroutineProfile(), "\n")
	var n int
	var records strings.Builder
	for rec := range strings.SplitSeq(recs, "\n\n") {
		head, _, ok := strings.Cut(rec, " @ ")
		if !ok || !strings.Contains(rec, "/proxy.(*pump).serve") {
			continue
		}
		var count int
		if _, err := fmt.Sscanf(strings.TrimSpace(head), "%d", &count); err != nil {
			p.t.Fatalf("goroutine profile record %q: %v", head, err)
		}
		n += count
		records.WriteString(rec + "\n\n")
	}
	return n, records.String()
}

// awaitParked waits until tether has sessions open and no pump running but
// running (the upstream pumps of calls that may resume, which do not park):
// every other leg of them is parked. It returns how long that took.
func awaitParked(t testing.TB, p *proc, sessions, running int) time.Duration {
	t.Helper()
	start := time.Now()
	var pumps, open int
	var records string
	ok := testkit.Poll(5*time.Second, func() bool {
		// Pumps first: a session still listed afterwards was open when they
		// were counted (the last pump of a session removes it as it stops).
		if pumps, records = p.pumpGoroutines(); pumps != running {
			return false
		}
		rows, _ := p.sessions()
		open = len(rows)
		return open == sessions
	})
	if !ok {
		if len(records) > 6000 {
			records = records[:6000]
		}
		t.Fatalf("legs not parked within 5s: %d pumps running (want %d), %d sessions open when last counted (want %d); pumps:\n%s",
			pumps, running, open, sessions, records)
	}
	return time.Since(start)
}

// TestParkAfterFromConfig: tether's legs park server.park_after after the
// last data frame: a data frame from the client, once the upstream has it,
// leaves the client's leg running for park_after (200ms), not for
// tether's default of 1 s. (A session that has carried no data frame
// through the relay parks at once.)
func TestParkAfterFromConfig(t *testing.T) {
	t.Parallel()
	p, c, up := rawParkSession(t)
	awaitParked(t, p, 1, 0)
	sent := time.Now()
	c.SendFrame(ws.OpText, true, []byte(`{"type":"conversation.item.create"}`))
	testkit.WaitFor(t, stepTimeout, "the frame upstream", func() bool { return len(up.messages()) >= 1 })
	awaitParked(t, p, 1, 0)
	d := time.Since(sent)
	t.Logf("the client's leg parked again %v after its data frame (park_after %v)", d.Round(time.Millisecond), parkAfter)
	if d < parkAfter || d > 750*time.Millisecond {
		t.Errorf("the client's leg parked %v after its data frame; with park_after %v, want %v to 750ms", d, parkAfter, parkAfter)
	}
}

// TestParkedClientSilentHeartbeat: a quiet (parked) session whose client
// then stops answering pings and reading: the upstream gets 1001 within
// interval + timeout + 1 s, reason client_heartbeat_timeout.
func TestParkedClientSilentHeartbeat(t *testing.T) {
	t.Parallel()
	r := newRig(t, parkVars(lvVars("")), mock.Options{})
	c := r.dial(t, clientOpts{})
	awaitParked(t, r.p, 1, 0)
	c.SetAnswerPings(false)
	c.StopReading()
	silent := time.Now()
	f, ok := r.tap.findClose(0, lvBound+lvObserve)
	if !ok {
		t.Fatalf("no close frame on the upstream leg within %v of the client going silent (%s)", lvBound+lvObserve, r.tap.conn(0).describeEnd())
	}
	d := time.Since(silent)
	code, _ := f.CloseCode()
	t.Logf("upstream got close %d %v after the client went silent", code, d.Round(time.Millisecond))
	if code != 1001 {
		t.Errorf("upstream got close %d, want 1001", code)
	}
	if d > lvBound+200*time.Millisecond {
		t.Errorf("upstream close %v after silence, want within %v", d, lvBound)
	}
	checkEnd(t, r.p, "client_heartbeat_timeout", r.base, silent)
	c.ResumeReading()
}

// TestParkedUpstreamStall: the upstream of a parked session stalls: the
// client gets 4002 within the bound, reason upstream_heartbeat_timeout.
func TestParkedUpstreamStall(t *testing.T) {
	t.Parallel()
	r := newRig(t, parkVars(lvVars("")), mock.Options{})
	c := r.dial(t, clientOpts{})
	awaitParked(t, r.p, 1, 0)
	c.fault("stall", nil)
	stall := time.Now()
	expectClientClose(t, c, stall, 4002)
	checkEnd(t, r.p, "upstream_heartbeat_timeout", r.base, stall)
}

// parkEnd waits for the client's close and the upstream's close and checks both codes.
func parkEnd(t *testing.T, r *rig, c *rtClient, from time.Time, bound time.Duration, wantClient, wantUp int) {
	t.Helper()
	ci, err, at := awaitClientEnd(c, bound+5*time.Second)
	switch {
	case ci == nil:
		t.Errorf("client: no close frame within %v (read end %v)", bound+5*time.Second, err)
	default:
		t.Logf("client got %d %q %v after the trigger", ci.Code, ci.Reason, at.Sub(from).Round(time.Millisecond))
		if ci.Code != wantClient {
			t.Errorf("client got close %d, want %d", ci.Code, wantClient)
		}
		if at.Sub(from) > bound {
			t.Errorf("client close %v after the trigger, want within %v", at.Sub(from), bound)
		}
	}
	f, ok := r.tap.findClose(0, 3*time.Second)
	if !ok {
		t.Errorf("upstream: no close frame (%s)", r.tap.conn(0).describeEnd())
		return
	}
	if code, _ := f.CloseCode(); code != wantUp {
		t.Errorf("upstream got close %d, want %d", code, wantUp)
	}
}

// TestParkedTimeouts: a session quiet past idle_timeout (both legs parked
// long before) gets 4000 / 1000; one at max_duration 4001 / 1000.
func TestParkedTimeouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key, reason string
		code        int
	}{{"IdleTimeout", "idle_timeout", 4000}, {"MaxDuration", "max_duration", 4001}} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			const timeout = 1500 * time.Millisecond
			r := newRig(t, parkVars(map[string]string{tc.key: timeout.String()}), mock.Options{})
			c := r.dial(t, clientOpts{})
			start := time.Now()
			awaitParked(t, r.p, 1, 0)
			parkEnd(t, r, c, start, timeout+1500*time.Millisecond, tc.code, 1000)
			checkEnd(t, r.p, tc.reason, r.base, start)
		})
	}
}

// TestParkedAdminDelete: DELETE /sessions/{id} on a parked session: 4003 / 1000.
func TestParkedAdminDelete(t *testing.T) {
	t.Parallel()
	r := newRig(t, parkVars(nil), mock.Options{})
	c := r.dial(t, clientOpts{})
	awaitParked(t, r.p, 1, 0)
	rows, raw := r.p.sessions()
	if len(rows) != 1 {
		t.Fatalf("sessions: %s", raw)
	}
	id, _ := rows[0]["id"].(string)
	del := time.Now()
	if code, body := r.p.del("/sessions/" + id); code/100 != 2 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	parkEnd(t, r, c, del, 1500*time.Millisecond, 4003, 1000)
	checkEnd(t, r.p, "admin", r.base, del)
}

// parkDrain: parked sessions, then SIGTERM (and, with second, SIGINT at once).
func parkDrain(t *testing.T, second bool) {
	r := newRig(t, parkVars(map[string]string{"DrainTimeout": "5s"}), mock.Options{})
	cs := []*rtClient{r.dial(t, clientOpts{}), r.dial(t, clientOpts{}), r.dial(t, clientOpts{})}
	awaitParked(t, r.p, len(cs), 0)
	sig := time.Now()
	r.p.signal(syscall.SIGTERM)
	if second {
		// The process may already be gone (idle sessions close at once).
		_ = r.p.cmd.Process.Signal(syscall.SIGINT)
	}
	for i, c := range cs {
		ci, err, at := awaitClientEnd(c, 8*time.Second)
		if ci == nil {
			t.Errorf("client %d: no close frame (read end %v)", i, err)
			continue
		}
		t.Logf("client %d got %d %v after the signal", i, ci.Code, at.Sub(sig).Round(time.Millisecond))
		if ci.Code != 1001 {
			t.Errorf("client %d got close %d, want 1001", i, ci.Code)
		}
		if at.Sub(sig) > 2*time.Second {
			t.Errorf("client %d got its close %v after the signal: idle sessions are closed at once", i, at.Sub(sig))
		}
	}
	for i := range cs {
		f, ok := r.tap.findClose(i, 3*time.Second)
		if !ok {
			t.Errorf("upstream %d: no close frame (%s)", i, r.tap.conn(i).describeEnd())
			continue
		}
		if code, _ := f.CloseCode(); code != 1001 {
			t.Errorf("upstream %d got close %d, want 1001", i, code)
		}
	}
	code := r.p.waitExit(8 * time.Second)
	t.Logf("exit %d %v after the signal", code, time.Since(sig).Round(time.Millisecond))
	if time.Since(sig) > 4*time.Second {
		t.Errorf("tether took %v to exit after the signal with only idle sessions", time.Since(sig))
	}
}

func TestParkedDrainSIGTERM(t *testing.T)    { t.Parallel(); parkDrain(t, false) }
func TestParkedDrainTwoSignals(t *testing.T) { t.Parallel(); parkDrain(t, true) }

// TestParkedClientPingAndClose: pings from the client of a parked session
// are answered, and its close frame reaches the upstream.
func TestParkedClientPingAndClose(t *testing.T) {
	t.Parallel()
	r := newRig(t, parkVars(nil), mock.Options{})
	c := r.dial(t, clientOpts{})
	for i := range 3 {
		awaitParked(t, r.p, 1, 0)
		c.SendFrame(ws.OpPing, true, []byte{'p', byte('0' + i)})
		testkit.WaitFor(t, time.Second, "a pong", func() bool { return len(c.Pongs()) > i })
	}
	awaitParked(t, r.p, 1, 0)
	c.SendClose(1000, "bye")
	sent := time.Now()
	f, ok := r.tap.findClose(0, 3*time.Second)
	if !ok {
		t.Fatalf("upstream: no close (%s)", r.tap.conn(0).describeEnd())
	}
	if code, _ := f.CloseCode(); code != 1000 {
		t.Errorf("upstream got %d, want 1000", code)
	}
	t.Logf("upstream got the close %v after it was sent", time.Since(sent).Round(time.Millisecond))
	c.WaitEnd(3 * time.Second)
	checkEnd(t, r.p, "client_closed", r.base, sent)
}

// TestParkedLargeFramesAfterQuiet: a raw upstream; the client goes quiet,
// then sends a 6 MiB binary frame, a 3 MiB text message in 3 fragments,
// and a frame whose header comes alone with its payload parkQuiet later
// (past park_after, mid-frame); the upstream gets each whole and in order.
// The upstream sends a 5 MiB frame after a quiet spell as well.
func TestParkedLargeFramesAfterQuiet(t *testing.T) {
	t.Parallel()
	p, c, up := rawParkSession(t)

	big := bytes.Repeat([]byte("0123456789abcdef"), 6<<16) // 6 MiB
	awaitParked(t, p, 1, 0)
	c.SendFrame(ws.OpBinary, true, big)
	testkit.WaitFor(t, 10*time.Second, "the 6 MiB frame upstream", func() bool { return len(up.messages()) >= 1 })
	if m := up.messages()[0]; m.Len != int64(len(big)) || m.Sum != sha256.Sum256(big) {
		t.Fatalf("upstream got %d bytes (want %d), sum match %v", m.Len, len(big), m.Sum == sha256.Sum256(big))
	}

	awaitParked(t, p, 1, 0)
	part := bytes.Repeat([]byte("x"), 1<<20)
	text := append([]byte(`{"type":"conversation.item.create","pad":"`), part...)
	c.SendFrame(ws.OpText, false, text)
	c.SendFrame(ws.OpContinuation, false, part)
	tail := append(bytes.Clone(part), []byte(`"}`)...)
	c.SendFrame(ws.OpContinuation, true, tail)
	whole := append(append(bytes.Clone(text), part...), tail...)
	testkit.WaitFor(t, 10*time.Second, "the fragmented message upstream", func() bool { return len(up.messages()) >= 2 })
	if m := up.messages()[1]; m.Len != int64(len(whole)) || m.Sum != sha256.Sum256(whole) {
		t.Fatalf("fragmented: upstream got %d bytes (want %d)", m.Len, len(whole))
	}

	// Header alone after a quiet spell, payload parkQuiet later.
	awaitParked(t, p, 1, 0)
	payload := bytes.Repeat([]byte("y"), 200_000)
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(payload)), Masked: true, Mask: ws.NewMask()}
	masked := bytes.Clone(payload)
	ws.Cipher(masked, h.Mask, 0)
	if err := c.WritePartial(h, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(parkQuiet)
	if _, err := c.NetConn().Write(masked); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the stalled frame upstream", func() bool { return len(up.messages()) >= 3 })
	if m := up.messages()[2]; m.Len != int64(len(payload)) || m.Sum != sha256.Sum256(payload) {
		t.Fatalf("stalled frame: upstream got %d bytes (want %d)", m.Len, len(payload))
	}

	// Upstream to client: 5 MiB after a quiet spell.
	awaitParked(t, p, 1, 0)
	down := bytes.Repeat([]byte("z"), 5<<20)
	if err := up.writeFrame(ws.NewBinaryFrame(down)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "5 MiB at the client", func() bool {
		return bytes.Count(c.Received(), []byte("zzzzzzzzzzzzzzzz")) >= (5<<20)/16-2
	})
	c.SendClose(1000, "")
	if ci, _, _ := up.awaitClose(3 * time.Second); ci == nil || ci.Code != 1000 {
		t.Errorf("upstream close %+v, want 1000", ci)
	}
}

// TestParkedPeerVanishes: a parked session whose client resets (RST) or
// whose upstream closes its socket (FIN) ends at once.
func TestParkedPeerVanishes(t *testing.T) {
	t.Parallel()
	t.Run("client RST", func(t *testing.T) {
		r := newRig(t, parkVars(nil), mock.Options{})
		c := r.dial(t, clientOpts{})
		awaitParked(t, r.p, 1, 0)
		c.TCP().SetLinger(0)
		c.NetConn().Close()
		from := time.Now()
		end := checkEnd(t, r.p, "client_error", r.base, from)
		if d := end.At.Sub(from); d > time.Second {
			t.Errorf("session ended %v after the reset", d)
		}
	})
	t.Run("upstream FIN", func(t *testing.T) {
		raw := startRawUpstream(t)
		p := startTether(t, "proxy.yaml", parkVars(map[string]string{"UpstreamURL": raw.URL}))
		base := p.baseline()
		c := dialClient(t, p.Listen, clientOpts{})
		up := raw.next(t)
		c.WaitEvent("session.created", stepTimeout)
		awaitParked(t, p, 1, 0)
		up.conn.Close()
		from := time.Now()
		ci, err, at := awaitClientEnd(c, 5*time.Second)
		if ci == nil {
			t.Fatalf("client: no close (%v)", err)
		}
		t.Logf("client got %d %v after the upstream FIN", ci.Code, at.Sub(from).Round(time.Millisecond))
		if at.Sub(from) > time.Second {
			t.Errorf("client close %v after the upstream vanished", at.Sub(from))
		}
		checkEnd(t, p, "upstream_error", base, from)
	})
}
