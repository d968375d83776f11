package mock

import (
	"encoding/base64"
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// rawPeer does round trips with pre-built frames, so it allocates nothing
// itself and AllocsPerRun measures the mock.
type rawPeer struct {
	c     *client
	out   []byte // masked frames to send
	reply []byte // room for the expected answer
}

// noDeadline clears the deadlines the client helpers set: a benchmark runs
// longer than readTimeout.
func (p *rawPeer) noDeadline() *rawPeer {
	p.c.nc.SetDeadline(time.Time{})
	return p
}

func (p *rawPeer) roundTrip(tb testing.TB) {
	if _, err := p.c.nc.Write(p.out); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(p.c.r, p.reply); err != nil {
		tb.Fatal(err)
	}
}

func compile(tb testing.TB, op ws.OpCode, payload []byte) []byte {
	b, err := ws.CompileFrame(ws.MaskFrame(ws.NewFrame(op, true, payload)))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// appendEvent is a 100 ms pcm16 append, the load benchmark's frame.
func appendEvent(audio []byte) []byte {
	return []byte(`{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(audio) + `"}`)
}

// echoPeer opens a session in echo mode.
func echoPeer(tb testing.TB, url string) *rawPeer {
	c := dial(tb, url, ws.Dialer{})
	c.t = tb
	c.event() // session.created
	c.send(map[string]any{"type": "mock.fault", "fault": "echo"})
	msg := appendEvent(noise(4800))
	answer := ws.HeaderSize(ws.Header{Length: int64(len(msg))}) + len(msg)
	return (&rawPeer{c: c, out: compile(tb, ws.OpText, msg), reply: make([]byte, answer)}).noDeadline()
}

// vadPeer opens a session with server VAD and sends silence, then a ping.
func vadPeer(tb testing.TB, url string) *rawPeer {
	c := dial(tb, url, ws.Dialer{})
	c.t = tb
	c.event()
	c.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{
		"input": map[string]any{"turn_detection": map[string]any{"type": "server_vad"}},
	}}})
	c.event() // session.updated
	out := compile(tb, ws.OpText, appendEvent(make([]byte, 4800)))
	out = append(out, compile(tb, ws.OpPing, []byte("p"))...)
	return (&rawPeer{c: c, out: out, reply: make([]byte, 3)}).noDeadline()
}

func TestHotPathAllocs(t *testing.T) {
	_, url := startServer(t, Options{})
	for name, p := range map[string]*rawPeer{"echo": echoPeer(t, url), "append with VAD": vadPeer(t, url)} {
		p.roundTrip(t) // warm up the buffers
		if n := testing.AllocsPerRun(200, func() { p.roundTrip(t) }); n > 0.1 {
			t.Errorf("%s: %.2f allocations per frame", name, n)
		}
	}
}

func BenchmarkEcho(b *testing.B) {
	_, url := startServer(b, Options{})
	p := echoPeer(b, url)
	b.SetBytes(int64(len(p.out) + len(p.reply)))
	b.ReportAllocs()
	for b.Loop() {
		p.roundTrip(b)
	}
}

func BenchmarkAppendVAD(b *testing.B) {
	_, url := startServer(b, Options{})
	p := vadPeer(b, url)
	b.SetBytes(int64(len(p.out)))
	b.ReportAllocs()
	for b.Loop() {
		p.roundTrip(b)
	}
}

// BenchmarkResponse measures a whole manual turn: 1 s of audio appended,
// committed and echoed back in ten deltas.
func BenchmarkResponse(b *testing.B) {
	_, url := startServer(b, Options{})
	c := dial(b, url, ws.Dialer{})
	c.event()
	audio := noise(48000)
	b.ReportAllocs()
	for b.Loop() {
		c.appendAudio(audio, 4800)
		c.send(map[string]any{"type": "input_audio_buffer.commit"})
		c.send(map[string]any{"type": "response.create"})
		for {
			f := c.mustFrame()
			if len(f.payload) > 20 && string(f.payload[:22]) == `{"type":"response.done` {
				break
			}
		}
	}
}
