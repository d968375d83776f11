package talk

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// DefaultLiveURL is the GPT-Live endpoint of a local tether.
const DefaultLiveURL = "ws://127.0.0.1:8080/v1/live/sessions"

const (
	// liveChunkBytes is the audio per session.input_audio.append: 50 ms,
	// the frame size real GPT-Live clients send.
	liveChunkBytes = bytesPerSecond / 20
	// liveChunkInterval paces the appends in real time.
	liveChunkInterval = 50 * time.Millisecond
	// audibleLevel is the sample magnitude (16-bit PCM) from which output
	// audio counts as not silent: about -36 dBFS.
	audibleLevel = 512
	// liveCloseWait bounds the wait for the server to close the socket
	// after session.closed.
	liveCloseWait = 2 * time.Second
)

// LiveOptions configure RunLive.
type LiveOptions struct {
	// Options are as for Run, except: URL is a GPT-Live endpoint (e.g.
	// DefaultLiveURL; GPT-Live takes no query), and Timeout bounds the whole
	// session, which streams the audio in real time (so it must be longer
	// than the audio).
	Options
	// Model is session.start's session.model; empty means live.ModelGPTLive1.
	Model string

	// chunkInterval replaces liveChunkInterval (tests stream faster than
	// real time).
	chunkInterval time.Duration
}

// liveResult is what a GPT-Live session produced.
type liveResult struct {
	SessionID         string
	Model             string
	AudioSentBytes    int // the source audio
	SilenceSentBytes  int // the silence streamed after it
	InputTranscript   string
	OutputTranscript  string
	TimeToFirstAnswer time.Duration // caller's last input transcript delta -> next output transcript delta; 0 if none
	AudioDeltas       int
	AudioBytes        int // decoded output audio
	AudibleBytes      int // of which in deltas that are not silent
	UsageSeconds      float64
	gotUsage          bool
	ClosedReason      string
	Elapsed           time.Duration
}

// RunLive runs one GPT-Live session and writes a report to opts.Out: it
// sends session.start, waits for session.started, streams the audio as
// 50 ms appends in real time followed by silence (a GPT-Live session needs
// a continuous stream), waits for the answer (an output transcript delta
// after the caller's last input transcript delta, and output audio that is
// not silent), then sends session.close and waits for session.closed. It
// fails on a timeout, an error event, or a close (or session.closed)
// before it asked for one.
func RunLive(ctx context.Context, opts LiveOptions) error {
	_, err := runLive(ctx, opts)
	return err
}

func runLive(ctx context.Context, opts LiveOptions) (*liveResult, error) {
	timeout := cmp.Or(opts.Timeout, DefaultTimeout)
	u, pcm, source, err := opts.prepare("ws://host[:port]/v1/live/sessions")
	if err != nil {
		return nil, err
	}
	interval := cmp.Or(opts.chunkInterval, liveChunkInterval)
	if streamed := time.Duration(len(pcm)/liveChunkBytes) * interval; streamed >= timeout {
		return nil, fmt.Errorf("the audio streams in real time for %s, longer than the timeout %s: raise --timeout", streamed, timeout)
	}

	s := &liveTalk{res: &liveResult{AudioSentBytes: len(pcm), Model: cmp.Or(opts.Model, live.ModelGPTLive1)}}
	rep := reporter{cmp.Or(opts.Out, io.Discard)}
	s.res.Elapsed, err = runTimed(ctx, rep, opts.URL, timeout, &s.waiter, func(ctx context.Context) error {
		return s.run(ctx, opts, u, pcm, interval)
	})
	s.report(rep, source)
	if err != nil {
		return s.res, err
	}
	rep.line("ok", "answered and closed in %s", s.res.Elapsed.Round(time.Millisecond))
	return s.res, nil
}

// liveTalk is one RunLive. Only its goroutine touches it; the audio goes
// out from a liveStreamer.
type liveTalk struct {
	waiter
	res *liveResult

	audioDone   bool      // the source audio was all sent
	lastInput   time.Time // when the latest input transcript delta came
	inputOpen   bool      // no output transcript delta since lastInput
	answered    bool      // an output transcript delta came after audioDone and the latest input transcript
	inText      strings.Builder
	outText     strings.Builder
	closeCalled bool // session.close was sent
}

func (s *liveTalk) run(ctx context.Context, opts LiveOptions, u *url.URL, pcm []byte, interval time.Duration) error {
	c, err := dial(ctx, opts.Options, u)
	if err != nil {
		return err
	}
	defer c.close()

	s.phase = live.SessionStarted
	if err := c.sendJSON(map[string]any{"type": live.SessionStart, "event_id": "talk_start",
		"session": map[string]any{"model": s.res.Model}}); err != nil {
		return err
	}
	for s.res.SessionID == "" {
		ev, err := s.next(ctx, c)
		if err != nil {
			return err
		}
		if ev.Type == live.SessionStarted && ev.Session != nil {
			s.res.SessionID = cmp.Or(ev.Session.ID, "(no id)")
			s.res.Model = cmp.Or(ev.Session.Model, s.res.Model)
		}
	}

	s.phase = "the answer"
	st := startStreamer(c, pcm, interval)
	defer st.stop()
	for !s.answered || s.res.AudibleBytes == 0 {
		ev, err := s.next(ctx, c)
		if err != nil {
			return cmp.Or(st.failed(), err)
		}
		if !s.audioDone && st.sourceSent() {
			s.audioDone = true
		}
		s.observe(ev)
	}
	st.stop()
	s.res.SilenceSentBytes = st.silence()
	if err := st.failed(); err != nil {
		return err
	}

	s.phase = live.SessionClosed
	s.closeCalled = true
	if err := c.sendJSON(map[string]any{"type": live.SessionClose, "event_id": "talk_close"}); err != nil {
		return err
	}
	for s.res.ClosedReason == "" {
		ev, err := s.next(ctx, c)
		if err != nil {
			return err
		}
		s.observe(ev)
	}
	s.awaitServerClose(ctx, c)
	return nil
}

// liveEvent is the part of a GPT-Live server event talk reads.
type liveEvent struct {
	Type    string        `json:"type"`
	Session *live.Session `json:"session"`
	Delta   string        `json:"delta"`
	Usage   *live.Usage   `json:"usage"`
	Reason  string        `json:"reason"`
	Error   *apiError     `json:"error"`
}

// next returns the next server event. An error event, a session.closed
// talk did not ask for, a close or a read failure is an error.
func (s *liveTalk) next(ctx context.Context, c *client) (*liveEvent, error) {
	var ev liveEvent
	if err := s.read(ctx, c, &ev); err != nil {
		return nil, err
	}
	switch {
	case ev.Type == live.Error:
		return nil, s.errorEvent(ev.Error)
	case ev.Type == live.SessionClosed && !s.closeCalled:
		s.observe(&ev)
		return nil, fmt.Errorf("the server ended the session (session.closed, reason %q) while waiting for %s", ev.Reason, s.phase)
	}
	return &ev, nil
}

// observe records what ev says about the session.
func (s *liveTalk) observe(ev *liveEvent) {
	r := s.res
	switch ev.Type {
	case live.OutputAudioDelta:
		pcm, err := base64.StdEncoding.DecodeString(ev.Delta)
		if err != nil {
			return // not audio talk can judge; the count stays honest
		}
		r.AudioDeltas++
		r.AudioBytes += len(pcm)
		if audible(pcm) {
			r.AudibleBytes += len(pcm)
		}
	case live.InputTranscriptDelta:
		s.lastInput, s.inputOpen, s.answered = time.Now(), true, false
		appendBounded(&s.inText, ev.Delta)
	case live.OutputTranscriptDelta:
		if s.inputOpen {
			r.TimeToFirstAnswer = time.Since(s.lastInput)
			s.inputOpen = false
		}
		if s.audioDone {
			s.answered = true
		}
		appendBounded(&s.outText, ev.Delta)
	case live.UsageUpdated:
		if ev.Usage != nil {
			r.UsageSeconds, r.gotUsage = ev.Usage.Seconds, true
		}
	case live.SessionClosed:
		r.ClosedReason = cmp.Or(ev.Reason, "(no reason)")
		if ev.Usage != nil {
			r.UsageSeconds, r.gotUsage = ev.Usage.Seconds, true
		}
	}
	r.InputTranscript = wsframe.Abbrev(s.inText.String(), maxTranscript)
	r.OutputTranscript = wsframe.Abbrev(s.outText.String(), maxTranscript)
}

func appendBounded(b *strings.Builder, s string) {
	if b.Len() <= maxTranscript {
		b.WriteString(s)
	}
}

// audible reports whether 16-bit PCM holds a sample of at least audibleLevel.
func audible(pcm []byte) bool {
	for i := 0; i+1 < len(pcm); i += 2 {
		v := int16(binary.LittleEndian.Uint16(pcm[i:]))
		if v >= audibleLevel || v <= -audibleLevel {
			return true
		}
	}
	return false
}

// awaitServerClose gives the server liveCloseWait to close the socket after
// session.closed (GPT-Live's server closes it), then closes it itself.
func (s *liveTalk) awaitServerClose(ctx context.Context, c *client) {
	wctx, cancel := context.WithTimeout(ctx, liveCloseWait)
	defer cancel()
	for {
		if _, err := c.receive(wctx); err != nil {
			break
		}
	}
	if wctx.Err() != nil && ctx.Err() == nil {
		c.closeGracefully()
	}
}

func (s *liveTalk) report(rep reporter, source string) {
	r := s.res
	line := rep.line
	silence := ""
	if r.SilenceSentBytes > 0 {
		silence = ", then " + seconds(r.SilenceSentBytes) + " of silence"
	}
	line("audio", "%s (%d bytes, %s)%s", seconds(r.AudioSentBytes), r.AudioSentBytes, source, silence)
	if r.SessionID == "" {
		return
	}
	line("session", "%s (model %s)", r.SessionID, r.Model)
	if r.TimeToFirstAnswer > 0 {
		line("answer", "%s after the caller's last words (input -> output transcript)", r.TimeToFirstAnswer.Round(time.Millisecond))
	}
	line("received", "%s of audio (%d bytes in %d deltas, %s not silent)", seconds(r.AudioBytes), r.AudioBytes, r.AudioDeltas, seconds(r.AudibleBytes))
	if r.InputTranscript != "" {
		line("heard", "%q", r.InputTranscript)
	}
	if r.OutputTranscript != "" {
		line("transcript", "%q", r.OutputTranscript)
	}
	if r.gotUsage {
		line("usage", "%.1f s of session time", r.UsageSeconds)
	}
	if r.ClosedReason != "" {
		line("closed", "%s", r.ClosedReason)
	}
}

// liveStreamer streams the source audio, then silence, as appends every
// interval until stopped: a GPT-Live session's timeline advances with its
// input audio.
type liveStreamer struct {
	c        *client
	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine returns; err is set before
	err      error
	sent     atomic.Bool  // the source audio was all sent
	silenced atomic.Int64 // bytes of silence sent
}

func startStreamer(c *client, pcm []byte, interval time.Duration) *liveStreamer {
	st := &liveStreamer{c: c, quit: make(chan struct{}), done: make(chan struct{})}
	go st.run(pcm, interval)
	return st
}

func (st *liveStreamer) run(pcm []byte, interval time.Duration) {
	defer close(st.done)
	silence := base64.StdEncoding.EncodeToString(make([]byte, liveChunkBytes))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for off := 0; ; {
		audio := silence
		if off < len(pcm) {
			chunk := pcm[off:min(off+liveChunkBytes, len(pcm))]
			audio = base64.StdEncoding.EncodeToString(chunk)
			off += len(chunk)
		} else {
			st.silenced.Add(liveChunkBytes)
		}
		if err := st.c.sendJSON(map[string]any{"type": live.InputAudioAppend, "audio": audio}); err != nil {
			st.err = fmt.Errorf("streaming audio: %w", err)
			return
		}
		if off >= len(pcm) {
			st.sent.Store(true)
		}
		select {
		case <-st.quit:
			return
		case <-tick.C:
		}
	}
}

// stop ends the stream and waits for its goroutine.
func (st *liveStreamer) stop() {
	st.stopOnce.Do(func() { close(st.quit) })
	<-st.done
}

func (st *liveStreamer) sourceSent() bool { return st.sent.Load() }
func (st *liveStreamer) silence() int     { return int(st.silenced.Load()) }

// failed is the error that stopped the stream, once it stopped (nil while
// it runs).
func (st *liveStreamer) failed() error {
	select {
	case <-st.done:
		return st.err
	default:
		return nil
	}
}
