package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/internal/testkit"
	"github.com/tetherproxy/tether/upstreams/mock"
)

// dataFrames keeps the data frames of fs.
func dataFrames(fs []frame) []frame {
	var out []frame
	for _, f := range fs {
		if !f.Op.IsControl() {
			out = append(out, f)
		}
	}
	return out
}

func sameFrames(t *testing.T, what string, got, want []frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d data frames, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Op != w.Op || g.Fin != w.Fin || g.Length != w.Length || !bytes.Equal(g.Payload, w.Payload) {
			t.Errorf("%s: frame %d differs: got op %d fin %v len %d %.80q, want op %d fin %v len %d %.80q",
				what, i, g.Op, g.Fin, g.Length, g.Payload, w.Op, w.Fin, w.Length, w.Payload)
			return
		}
	}
}

// TestRelayFidelity: frames cross tether unchanged in both directions
// (fragments kept, client frames still masked upstream), tether answers a
// client ping itself, and permessage-deflate is negotiated on neither leg.
func TestRelayFidelity(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, mock.Options{})
	c := r.dial(t, clientOpts{
		Protocols: []string{"realtime"},
		Header:    http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_max_window_bits"}},
	})
	head, _, _ := bytes.Cut(c.Received(), []byte("\r\n\r\n"))
	if bytes.Contains(bytes.ToLower(head), []byte("sec-websocket-extensions")) {
		t.Errorf("tether negotiated an extension with the client:\n%s", head)
	}
	if req := r.tap.conn(0).request(); req == nil {
		t.Errorf("could not parse tether's upstream upgrade request")
	} else if ext := req.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("tether offered %q upstream", ext)
	}

	// A fragmented session.update with a ping between its fragments.
	msg, _ := json.Marshal(map[string]any{"type": "session.update", "session": map[string]any{
		"type": "realtime", "instructions": strings.Repeat("Be brief. ", 30),
	}})
	a, b := len(msg)/3, 2*len(msg)/3
	for _, f := range []ws.Frame{
		ws.NewFrame(ws.OpText, false, msg[:a]),
		ws.NewPingFrame([]byte("fidelity-ping")),
		ws.NewFrame(ws.OpContinuation, false, msg[a:b]),
		ws.NewFrame(ws.OpContinuation, true, msg[b:]),
	} {
		if err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitEvent("session.updated", stepTimeout)
	testkit.WaitFor(t, stepTimeout, "tether's pong to the client's ping", func() bool {
		for _, p := range c.Pongs() {
			if string(p) == "fidelity-ping" {
				return true
			}
		}
		return false
	})

	c.voiceTurn()
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	c.WaitEnd(stepTimeout)
	r.tap.waitClose(0, stepTimeout)

	up := r.tap.conn(0)
	toUp := up.frames()
	for _, f := range toUp {
		if !f.Masked {
			t.Errorf("tether sent the upstream an unmasked frame (op %d)", f.Op)
		}
		if f.Op == ws.OpPing && string(f.Payload) == "fidelity-ping" {
			t.Errorf("the client's ping was forwarded upstream")
		}
	}
	sameFrames(t, "client->upstream", dataFrames(toUp), dataFrames(c.SentFrames()))

	fromUp := dataFrames(up.upstreamFrames())
	got := parseFrames(c.Received(), nil)
	for _, f := range got {
		if f.Masked {
			t.Errorf("tether sent the client a masked frame (op %d)", f.Op)
		}
	}
	sameFrames(t, "upstream->client", dataFrames(got), fromUp)
	r.p.assertSessionGone("client_closed", r.base)
}

// TestRelayStreamsLargeFrames: a 15 MiB append crosses tether without tether
// allocating anything near its size (payloads are streamed, never buffered
// whole), and the session goes on.
func TestRelayStreamsLargeFrames(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, mock.Options{})
	c := r.dial(t, clientOpts{})
	audio := make([]byte, 11<<20) // base64: about 14.7 MiB
	for i := range audio {
		audio[i] = byte(i * 13)
	}
	ev, _ := json.Marshal(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(audio)})
	if len(ev) > 16<<20 {
		t.Fatalf("append of %d bytes exceeds max_frame_bytes", len(ev))
	}
	before, ok := r.p.metric("go_memstats_alloc_bytes_total")
	if !ok {
		t.Skip("go_memstats_alloc_bytes_total not exported")
	}
	if err := c.Write(ws.NewTextFrame(ev)); err != nil {
		t.Fatal(err)
	}
	c.Send(map[string]any{"type": "input_audio_buffer.commit"})
	c.WaitEvent("input_audio_buffer.committed", stepTimeout)
	after, _ := r.p.metric("go_memstats_alloc_bytes_total")
	if d := after - before; d > 4<<20 {
		t.Errorf("tether allocated %.1f MiB while relaying a %.1f MiB frame: payloads must be streamed",
			d/(1<<20), float64(len(ev))/(1<<20))
	}
	if v, _ := r.p.metric("tether_bytes_total", `direction="client_to_upstream"`); v < float64(len(ev)) {
		t.Errorf("tether_bytes_total{direction=client_to_upstream} = %v, want >= %d", v, len(ev))
	}
	c.SendClose(1000, "")
	c.WaitClose(stepTimeout)
	r.p.assertSessionGone("client_closed", r.base)
}
