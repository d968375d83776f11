package mock

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
)

// liveFormat is a GPT-Live audio format (the same both ways).
type liveFormat struct {
	enc  audioFormat // sample encoding
	rate int         // samples per second
}

func (f liveFormat) bytesPerSecond() int { return f.rate * f.enc.sampleBytes() }

// bytes is the size of ms milliseconds of f.
func (f liveFormat) bytes(ms int) int { return f.bytesPerSecond() * ms / 1000 }

// silence is the byte value of a digitally silent sample of f (both bytes
// of a PCM16 sample).
func (f liveFormat) silence() byte {
	switch f.enc {
	case formatPCMU:
		return linearToUlaw(0)
	case formatPCMA:
		return linearToAlaw(0)
	}
	return 0
}

// transcriptWords are the fragments of the mock's transcripts, cycled; an
// utterance (a run of windows that are not silent) starts at the first.
var transcriptWords = []string{"hello", "this", "is", "the", "mock", "live", "session"}

// speechMeter cuts an audio stream into transcriptMillis windows on its
// timeline and reports every window loud enough to be speech (RMS at
// least vadLevel), with a transcript fragment for it.
type speechMeter struct {
	f       liveFormat
	win     int   // bytes per window
	fill    int   // bytes of the current window so far
	sum     int64 // sum of the squares of its samples
	startMs int64 // where the current window starts
	words   int   // fragments of the current utterance so far
}

func newSpeechMeter(f liveFormat) speechMeter {
	return speechMeter{f: f, win: f.bytes(transcriptMillis)}
}

// feed adds n bytes of audio p (whole samples), or n bytes of silence when
// p is nil, and calls emit for each loud window it completes.
func (m *speechMeter) feed(p []byte, n int, emit func(startMs, endMs int64, text string) error) error {
	for n > 0 {
		k := min(m.win-m.fill, n)
		if p != nil {
			m.sum += m.f.enc.sumSquares(p[:k])
			p = p[k:]
		}
		m.fill += k
		n -= k
		if m.fill < m.win {
			return nil
		}
		samples := int64(m.win / m.f.enc.sampleBytes())
		loud := m.sum >= int64(vadLevel)*int64(vadLevel)*samples
		start := m.startMs
		m.startMs += transcriptMillis
		m.fill, m.sum = 0, 0
		if !loud {
			m.words = 0
			continue
		}
		text := transcriptWords[m.words%len(transcriptWords)]
		if m.words > 0 {
			text = " " + text
		}
		m.words++
		if err := emit(start, start+transcriptMillis, text); err != nil {
			return err
		}
	}
	return nil
}

// track is the session's second goroutine: after Options.StartDelay it
// sends session.started (answering the start with event id startEventID),
// then every LiveDeltaInterval one output delta, and every UsageInterval
// the usage, until the session ends (conn.quit) or a write fails.
func (l *liveSession) track(startEventID string) {
	defer close(l.exited)
	c := l.c
	opts := &c.srv.opts
	if d := opts.StartDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.quit:
			t.Stop()
			return
		}
	}
	if !l.announce(startEventID) {
		return
	}
	deltaBytes := l.format.bytes(liveDeltaMillis)
	tr := &trackState{
		l:     l,
		buf:   make([]byte, headroom, headroom+base64.StdEncoding.EncodedLen(deltaBytes)+64),
		chunk: make([]byte, deltaBytes),
		out:   newSpeechMeter(l.format),
	}
	tr.transcript = tr.outputTranscript
	deltas := time.NewTicker(opts.LiveDeltaInterval)
	defer deltas.Stop()
	usage := time.NewTicker(opts.UsageInterval)
	defer usage.Stop()
	for {
		var err error
		select {
		case <-c.quit:
			return
		case <-deltas.C:
			err = tr.delta()
		case <-usage.C:
			err = tr.emit(live.UsageEvent{Type: live.UsageUpdated, EventID: c.newID("event"), Usage: live.Usage{Seconds: l.seconds()}})
		}
		if err != nil {
			return // the session is closing, or the socket failed: the reader ends it
		}
	}
}

// announce sends session.started and marks the session started; it
// reports false when the write failed.
func (l *liveSession) announce(startEventID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := json.Marshal(liveSessionEvent{liveHead{live.SessionStarted, l.c.newID("event"), startEventID}, &l.res})
	if err != nil {
		return false
	}
	if l.c.send(ws.OpText, append(make([]byte, headroom, headroom+len(b)), b...)) != nil {
		return false
	}
	l.started = true
	l.c.log.Debug("mock upstream: GPT-Live session.started")
	return true
}

// trackState is owned by the track goroutine.
type trackState struct {
	l     *liveSession
	buf   []byte // outgoing frame, headroom first
	chunk []byte // the audio of one delta
	out   speechMeter
	// transcript is outputTranscript, bound once (not per delta).
	transcript func(startMs, endMs int64, text string) error
}

// emit sends ev as JSON.
func (tr *trackState) emit(ev any) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	tr.buf = append(tr.buf[:headroom], b...)
	return tr.l.c.send(ws.OpText, tr.buf)
}

// delta sends the next 100 ms of the output track (no event_id, as the
// service), then the output transcript of a window it completed.
func (tr *trackState) delta() error {
	l := tr.l
	l.fillChunk(tr.chunk)
	buf := append(tr.buf[:headroom], `{"type":"`+live.OutputAudioDelta+`","delta":"`...)
	buf = base64.StdEncoding.AppendEncode(buf, tr.chunk)
	tr.buf = append(buf, `"}`...)
	if err := l.c.send(ws.OpText, tr.buf); err != nil {
		return err
	}
	l.ticks.Add(1)
	return tr.out.feed(tr.chunk, len(tr.chunk), tr.transcript)
}

// outputTranscript sends an output transcript fragment.
func (tr *trackState) outputTranscript(startMs, endMs int64, text string) error {
	return tr.emit(live.TranscriptDelta{Type: live.OutputTranscriptDelta, EventID: tr.l.c.newID("event"),
		Delta: text, StartMS: startMs, EndMS: endMs})
}

// fillChunk fills out with the next audio to play: the caller's audio once
// echoDelayMillis of it is buffered, else silence. When the buffer runs
// dry the rest of out is silence and the echo buffers again.
func (l *liveSession) fillChunk(out []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	avail := len(l.echo) - l.echoOff
	if l.buffering && avail >= l.format.bytes(echoDelayMillis) {
		l.buffering = false
	}
	if !l.buffering {
		n = copy(out, l.echo[l.echoOff:])
		l.echoOff += n
		if n < len(out) {
			l.buffering = true
		}
	}
	s := l.format.silence()
	for i := n; i < len(out); i++ {
		out[i] = s
	}
	switch {
	case l.echoOff == len(l.echo):
		l.echo, l.echoOff = l.echo[:0], 0
	case l.echoOff > len(l.echo)/2:
		l.echo = l.echo[:copy(l.echo, l.echo[l.echoOff:])]
		l.echoOff = 0
	}
}
