package proxy

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/wsframe"
	"github.com/tetherproxy/tether/lifecycle"
)

// the client dies mid-frame (header + a few payload bytes, nothing of the
// payload forwarded yet). Contract: client_error -> upstream gets 1001.
func TestClientDiesMidFrameUpstreamGets1001(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	start := time.Now()
	go func() {
		_ = h.client.writeHeader(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 100, Masked: true, Mask: [4]byte{1, 2, 3, 4}})
		_, _ = h.client.conn.Write(make([]byte, 10))
		h.client.conn.Close()
	}()
	code, gotClose := h.upstream.drainClose()
	sum := h.wait(t)
	t.Logf("reason=%s closeUp=%d upstream got close frame=%v teardown took %v", sum.Reason, sum.CloseUp.Code, gotClose, time.Since(start))
	if !gotClose || code != wsframe.GoingAway {
		t.Errorf("upstream got close frame %v, code %d (want 1001 for client_error)", gotClose, code)
	}
}

// uploadSlowly sends the client's masked binary frame of size bytes at
// 64 KiB/s (a 1 MiB append takes 16 s) until it is whole or the session
// ended.
func (h *harness) uploadSlowly(size int) {
	go func() {
		_ = h.client.writeHeader(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(size), Masked: true, Mask: [4]byte{1, 2, 3, 4}})
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := h.client.conn.Write(chunk); err != nil {
				return
			}
			time.Sleep(time.Second)
			if h.sess.Ended() {
				return
			}
		}
	}()
}

// A client uploading one large frame slowly: the frame goes upstream as
// fragments, tether's pings to the upstream go out between them, and the
// upstream, which answers them, is not declared dead (4002).
func TestSlowUploadKeepsHealthyUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lo := testLifecycle()
		lo.UpstreamHeartbeat = lifecycle.HeartbeatOptions{Interval: 5 * time.Second, Timeout: 2 * time.Second}
		h := newHarness(t, lo, testRelayOptions())
		h.uploadSlowly(1 << 20)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if h.sess.Ended() {
			t.Errorf("healthy upstream (answers every ping) torn down after 10s: reason %s", h.sess.Summary().Reason)
		}
		h.mgr.CloseAll(lifecycle.ReasonShutdown)
		h.wait(t)
		time.Sleep(2 * time.Second)
	})
}

// While the client uploads a frame slowly, an upstream ping must not make the
// upstream->client pump wait for the upstream leg's write lock (the pong goes
// out at the frame boundary): upstream events keep reaching the client.
func TestUpstreamPingDoesNotBlockDownlink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testLifecycle(), testRelayOptions())
		h.uploadSlowly(1 << 20)
		time.Sleep(time.Second)
		go func() {
			h.upstream.send(ws.NewPingFrame([]byte("p")))
			h.upstream.text(`{"type":"response.output_audio.delta","delta":"AAAA"}`)
		}()
		start := time.Now()
		select {
		case f := <-h.client.frames:
			t.Logf("client got %v after %v", f.Header.OpCode, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Errorf("upstream audio delta not delivered to the client within 5s (blocked behind the client's upload)")
		}
		h.mgr.CloseAll(lifecycle.ReasonShutdown)
		h.wait(t)
		time.Sleep(2 * time.Second)
	})
}

// the upstream dies mid-frame: contract upstream_error -> client gets 1014.
func TestUpstreamDiesMidFrameClientGets1014(t *testing.T) {
	h := newHarness(t, testLifecycle(), testRelayOptions())
	go func() {
		_ = h.upstream.writeHeader(ws.Header{Fin: true, OpCode: ws.OpText, Length: 20000})
		_, _ = h.upstream.conn.Write([]byte(`{"type":"response.output_audio.delta","delta":"AAAA`))
		h.upstream.conn.Close()
	}()
	code, gotClose := h.client.drainClose()
	sum := h.wait(t)
	t.Logf("reason=%s closeClient=%d client got close frame=%v", sum.Reason, sum.CloseClient.Code, gotClose)
	if !gotClose || code != wsframe.BadGateway {
		t.Errorf("client got close frame %v, code %d (want 1014 for upstream_error)", gotClose, code)
	}
}
