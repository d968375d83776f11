package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

// resumeLifecycle is testLifecycle with lifecycle.resume on.
func resumeLifecycle() lifecycle.Options {
	o := testLifecycle()
	o.Resume = lifecycle.ResumeOptions{Enabled: true, On: lifecycle.AllTriggers, MaxResumes: 2, Buffer: 2 * time.Second, Notify: true}
	return o
}

// startResumingRelay is startRelay for a call that may resume: dial gives
// the relay its next upstream session.
func startResumingRelay(t testing.TB, mgr *lifecycle.Manager, clientRelay, upRelay net.Conn, dial Redial, done chan struct{}) *lifecycle.Session {
	t.Helper()
	return runRelay(t, mgr, lifecycle.Info{Upstream: "first", Dialect: realtime.Dialect{}}, func(sess *lifecycle.Session) *Relay {
		ro := testRelayOptions()
		ro.ParkAfter = 0 // as served: a streaming leg never parks (a wake starts a goroutine)
		r := NewRelay(clientRelay, nil, upRelay, nil, ro)
		r.EnableResume(sess, ResumeOptions{Dial: dial, Buffer: time.Second, Timeout: 2 * time.Second})
		return r
	}, done)
}

// A call that may resume still relays without allocating.
func TestRelayZeroAllocsWithResume(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation test")
	}
	for _, tc := range relayCases[:4] {
		t.Run(tc.name, func(t *testing.T) {
			cp, cr := tcpPair(t)
			up, ur := tcpPair(t)
			h := &rawHarness{clientPeer: cp, upPeer: up, mgr: lifecycle.NewManager(resumeLifecycle()), done: make(chan struct{})}
			unused := func(context.Context, lifecycle.Trigger, string, []byte) (*upstreams.Conn, error) {
				return nil, errors.New("not dialed in this test")
			}
			h.sess = startResumingRelay(t, h.mgr, cr, ur, unused, h.done)
			defer h.close()
			frame := voiceFrame(tc.size, tc.fromClient)
			sink := make([]byte, len(frame))
			for range 10 {
				h.relayOne(t, frame, sink, tc.fromClient)
			}
			if allocs := testing.AllocsPerRun(200, func() { h.relayOne(t, frame, sink, tc.fromClient) }); allocs != 0 {
				t.Fatalf("%v allocations per relayed frame, want 0", allocs)
			}
		})
	}
}

// The first upstream resets under the call: the relay dials the second
// (asked to try the first last), gives it the client's settings, swallows
// its answers, and relays on; the client keeps its socket and hears of
// the resume, and what it sent meanwhile reaches the second upstream.
func TestResumeSwapsTheUpstreamLeg(t *testing.T) {
	mgr := lifecycle.NewManager(resumeLifecycle())
	cp, cr := tcpPair(t)
	up1, ur1 := tcpPair(t)
	up2, ur2 := tcpPair(t)
	client, first, second := newPeer(cp, true), newPeer(up1, false), newPeer(up2, false)
	defer cp.Close()
	defer up2.Close()
	dialed := make(chan string, 1)
	created := []byte(`{"type":"session.created","session":{"id":"sess_2","type":"realtime"}}`)
	dial := func(_ context.Context, trigger lifecycle.Trigger, from string, start []byte) (*upstreams.Conn, error) {
		dialed <- string(trigger) + " from " + from
		return &upstreams.Conn{Net: ur2, Upstream: &upstreams.Upstream{Config: upstreams.Config{Name: "second"}},
			FirstType: realtime.SessionCreated, FirstPayload: created}, nil
	}
	done := make(chan struct{})
	sess := startResumingRelay(t, mgr, cr, ur1, dial, done)

	client.text(`{"type":"session.update","session":{"type":"realtime","instructions":"Be brief."}}`)
	if f := first.next(t); !bytes.Contains(f.Payload, []byte("Be brief.")) {
		t.Fatalf("the first upstream got %q", f.Payload)
	}
	up1.(*net.TCPConn).SetLinger(0)
	up1.Close() // a reset
	if got := <-dialed; got != "upstream_error from first" {
		t.Fatalf("dialed for %q", got)
	}
	client.text(`{"type":"input_audio_buffer.append","audio":"AAAA"}`) // held, or sent after the replay

	replayed := second.next(t)
	if !bytes.Contains(replayed.Payload, []byte(`"type":"session.update"`)) || !bytes.Contains(replayed.Payload, []byte("Be brief.")) {
		t.Fatalf("the second upstream's first message: %q", replayed.Payload)
	}
	second.text(`{"type":"session.updated","event_id":"event_2","session":{"type":"realtime","instructions":"Be brief."}}`)
	if f := second.next(t); !bytes.Contains(f.Payload, []byte(realtime.InputAudioAppend)) {
		t.Fatalf("the second upstream's next message: %q, want the held append", f.Payload)
	}
	notice := client.next(t)
	if !bytes.Contains(notice.Payload, []byte(`"type":"tether.session.resumed"`)) || !bytes.Contains(notice.Payload, []byte("sess_2")) {
		t.Fatalf("the client got %q, want the resume notice (never session.updated from the replay)", notice.Payload)
	}
	second.text(`{"type":"response.output_audio.delta","response_id":"r","delta":"AA"}`)
	if f := client.next(t); !bytes.Contains(f.Payload, []byte("output_audio.delta")) {
		t.Fatalf("the client got %q, want the second upstream's audio", f.Payload)
	}
	if got := sess.Snapshot(); got.Upstream != "second" || got.Resumes != 1 || got.Conversation != "sess_2" {
		t.Errorf("snapshot: upstream %q, resumes %d, conversation %q", got.Upstream, got.Resumes, got.Conversation)
	}
	sess.End(lifecycle.ReasonClientClosed)
	<-done
	if code, _ := second.expectClose(t); code != wsframe.NormalClosure {
		t.Errorf("the second upstream got close %d", code)
	}
}

// The resume's dial fails: the call ends with the reason of the ending it
// came from (a stalled upstream: upstream_heartbeat_timeout, 4002), not as
// a generic upstream error.
func TestResumeFailureKeepsTheReason(t *testing.T) {
	o := resumeLifecycle()
	o.UpstreamHeartbeat = lifecycle.HeartbeatOptions{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond}
	mgr := lifecycle.NewManager(o)
	cp, cr := tcpPair(t)
	up, ur := tcpPair(t)
	client, upstream := newPeer(cp, true), newPeer(up, false)
	upstream.autoPong.Store(false) // silent
	defer cp.Close()
	defer up.Close()
	dial := func(context.Context, lifecycle.Trigger, string, []byte) (*upstreams.Conn, error) {
		return nil, &upstreams.DialError{Attempts: []upstreams.Attempt{{Upstream: "first", Result: "refused"}}}
	}
	done := make(chan struct{})
	startResumingRelay(t, mgr, cr, ur, dial, done)
	code, reason := client.expectClose(t)
	<-done
	if code != wsframe.UpstreamTimeout {
		t.Fatalf("client close %d %q, want %d", code, reason, wsframe.UpstreamTimeout)
	}
}
