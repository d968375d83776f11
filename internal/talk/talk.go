// Package talk runs one voice turn against an OpenAI Realtime WebSocket
// endpoint (tether, or anything that speaks the GA protocol) and reports
// how it went. It backs `tether talk`, the smoke test of the Helm chart.
//
// The turn: connect offering the "realtime" subprotocol, wait for
// session.created, send session.update (manual turns), stream the audio as
// input_audio_buffer.append events, commit, response.create, and wait for
// response.done. Run fails on a timeout, an error event, a close before
// response.done, a response that did not complete, or a reply without audio.
package talk

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tetherproxy/tether/dialect/realtime"
	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// DefaultTimeout bounds a turn when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// chunkBytes is the audio per input_audio_buffer.append event: 100 ms.
const chunkBytes = bytesPerSecond / 10

// maxTranscript bounds the transcript kept for the report.
const maxTranscript = 400

// Options configure Run.
type Options struct {
	// URL of the Realtime endpoint, ws:// or wss://, with its query
	// (e.g. ?model=gpt-realtime).
	URL string
	// WAV is a file of 16-bit PCM, mono, 24 kHz audio to send. Empty sends
	// ToneDuration seconds of a ToneHz tone.
	WAV string
	// Timeout bounds the whole turn, from dialing to response.done.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// Headers are added to the upgrade request (e.g. Authorization).
	Headers http.Header
	// InsecureSkipVerify skips the TLS certificate check of a wss:// URL.
	InsecureSkipVerify bool
	// Out receives a short report of the turn, also of a failed one (whose
	// error Run returns rather than prints); nil discards it.
	Out io.Writer

	// netDial replaces the TCP dial (tests).
	netDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// result is what a turn produced.
type result struct {
	SessionID        string
	Model            string
	AudioSentBytes   int
	ResponseID       string
	Status           string // response.done status: completed, incomplete, cancelled, failed
	StatusDetails    string // reason or error of a response that did not complete
	AudioBytes       int    // decoded output audio
	AudioDeltas      int
	TimeToFirstAudio time.Duration // from sending the commit to the first audio delta; 0 if none
	Transcript       string
	InputTokens      int64
	OutputTokens     int64
	TotalTokens      int64
	Elapsed          time.Duration
	gotResponseDone  bool
}

// Run performs one voice turn and writes a report to opts.Out. It returns
// nil only when response.done arrived with status completed or incomplete
// and the reply held audio.
func Run(ctx context.Context, opts Options) error {
	_, err := run(ctx, opts)
	return err
}

func run(ctx context.Context, opts Options) (*result, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	u, pcm, source, err := opts.prepare("ws://host[:port]/path")
	if err != nil {
		return nil, err
	}
	t := &turn{res: &result{AudioSentBytes: len(pcm)}}
	rep := reporter{cmp.Or(opts.Out, io.Discard)}
	t.res.Elapsed, err = runTimed(ctx, rep, opts.URL, timeout, &t.waiter, func(ctx context.Context) error {
		return t.run(ctx, opts, u, pcm)
	})
	t.report(rep, source)
	if err != nil {
		return t.res, err
	}
	rep.line("ok", "one turn in %s", t.res.Elapsed.Round(time.Millisecond))
	return t.res, nil
}

// prepare checks the URL (want shows a good one) and loads the audio to
// send: the WAV file, or else the tone; source names it for the report.
func (o Options) prepare(want string) (u *url.URL, pcm []byte, source string, err error) {
	u, err = url.Parse(o.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, nil, "", fmt.Errorf("url %q: want %s or wss://...", redact.URL(o.URL), want)
	}
	if o.WAV == "" {
		return u, Tone(ToneDuration), fmt.Sprintf("%d Hz tone", ToneHz), nil
	}
	if pcm, err = ReadWAVFile(o.WAV); err != nil {
		return nil, nil, "", err
	}
	return u, pcm, o.WAV, nil
}

// runTimed writes the url line, then runs body under timeout; a deadline
// becomes an error naming what w waited for. It returns body's error and
// how long body took.
func runTimed(ctx context.Context, rep reporter, rawURL string, timeout time.Duration, w *waiter, body func(context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w.phase = "the WebSocket handshake"
	start := time.Now()
	rep.line("url", "%s", redact.URL(rawURL))
	err := body(ctx)
	elapsed := time.Since(start)
	if err != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s waiting for %s", timeout, w.phase)
	}
	return elapsed, err
}

// reporter writes the lines of a report: a label column, then the value.
type reporter struct{ out io.Writer }

func (r reporter) line(label, format string, args ...any) {
	fmt.Fprintf(r.out, "%-13s%s\n", label+":", fmt.Sprintf(format, args...))
}

// turn is one run. Only Run's goroutine touches it, except conn writes,
// which go through client.
type turn struct {
	waiter
	res *result
}

func (t *turn) run(ctx context.Context, opts Options, u *url.URL, pcm []byte) error {
	c, err := dial(ctx, opts, u, "realtime")
	if err != nil {
		return err
	}
	defer c.close()
	if err := t.awaitSession(ctx, c); err != nil {
		return err
	}
	committed, err := t.sendAudio(c, pcm)
	if err != nil {
		return err
	}
	if err := t.awaitResponse(ctx, c, committed); err != nil {
		return err
	}
	c.closeGracefully()
	return t.res.verdict()
}

// dial opens the WebSocket, offering protocols (Realtime's "realtime";
// GPT-Live clients offer none); a refused upgrade's error carries the HTTP
// status and the start of its body. Until the client is closed, ctx ending
// unblocks any read or write in progress.
func dial(ctx context.Context, opts Options, u *url.URL, protocols ...string) (*client, error) {
	var statusErr error
	d := ws.Dialer{
		Protocols: protocols,
		NetDial:   opts.netDial,
		OnStatusError: func(status int, reason []byte, resp io.Reader) {
			statusErr = fmt.Errorf("handshake: HTTP %d %s: %s", status, reason, rejectionBody(resp))
		},
	}
	if len(opts.Headers) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(opts.Headers)
	}
	if opts.InsecureSkipVerify {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in flag for self-signed test servers
	}
	conn, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		if statusErr != nil && ctx.Err() == nil {
			return nil, statusErr
		}
		return nil, fmt.Errorf("connect %s: %w", redact.URL(opts.URL), err)
	}
	c := newClient(conn, br)
	c.stopDeadline = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

// rejectionBody returns the start of a refused upgrade's body. resp is the
// whole response, status line on: parsing it stops the body read at the
// body's end (the server may keep the connection open).
func rejectionBody(resp io.Reader) string {
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return ""
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 512))
	return strings.TrimSpace(string(body))
}

// awaitSession waits for session.created and records the session.
func (t *turn) awaitSession(ctx context.Context, c *client) error {
	t.phase = realtime.SessionCreated
	for t.res.SessionID == "" {
		ev, err := t.next(ctx, c)
		if err != nil {
			return err
		}
		if ev.Type == realtime.SessionCreated && ev.Session != nil {
			t.res.SessionID, t.res.Model = ev.Session.ID, ev.Session.Model
			if t.res.SessionID == "" {
				t.res.SessionID = "(no id)"
			}
		}
	}
	return nil
}

// sendAudio configures the session, streams pcm as appends, commits and
// asks for a response; it returns when the commit was sent.
func (t *turn) sendAudio(c *client, pcm []byte) (committed time.Time, err error) {
	t.phase = "sending audio"
	if err := c.sendJSON(sessionUpdate()); err != nil {
		return time.Time{}, err
	}
	for off := 0; off < len(pcm); off += chunkBytes {
		chunk := pcm[off:min(off+chunkBytes, len(pcm))]
		if err := c.sendJSON(map[string]any{
			"type":  realtime.InputAudioAppend,
			"audio": base64.StdEncoding.EncodeToString(chunk),
		}); err != nil {
			return time.Time{}, err
		}
	}
	if err := c.sendJSON(map[string]any{"type": realtime.InputAudioCommit}); err != nil {
		return time.Time{}, err
	}
	committed = time.Now()
	if err := c.sendJSON(map[string]any{"type": realtime.ResponseCreate}); err != nil {
		return time.Time{}, err
	}
	return committed, nil
}

// awaitResponse reads the response until response.done, recording its
// audio (time to first audio counted from committed), transcript, status
// and usage.
func (t *turn) awaitResponse(ctx context.Context, c *client, committed time.Time) error {
	t.phase = realtime.ResponseDone
	var transcript strings.Builder
	for !t.res.gotResponseDone {
		ev, err := t.next(ctx, c)
		if err != nil {
			return err
		}
		switch ev.Type {
		case realtime.ResponseCreated:
			if ev.Response != nil {
				t.res.ResponseID = ev.Response.ID
			}
		case realtime.OutputAudioDelta, realtime.BetaAudioDelta:
			n, err := decodedLen(ev.Delta)
			if err != nil {
				return fmt.Errorf("%s: bad base64 audio: %w", ev.Type, err)
			}
			if t.res.AudioDeltas == 0 {
				t.res.TimeToFirstAudio = time.Since(committed)
			}
			t.res.AudioDeltas++
			t.res.AudioBytes += n
		case realtime.OutputTranscriptDelta, realtime.BetaTranscriptDelta,
			realtime.OutputTextDelta, realtime.BetaTextDelta:
			if transcript.Len() < maxTranscript {
				transcript.WriteString(ev.Delta)
			}
		case realtime.ResponseDone:
			t.res.done(ev.Response)
		}
	}
	t.res.Transcript = wsframe.Abbrev(transcript.String(), maxTranscript)
	return nil
}

// done records response.done's response (nil if the event had none).
func (r *result) done(resp *response) {
	r.gotResponseDone = true
	if resp == nil {
		return
	}
	if r.ResponseID == "" {
		r.ResponseID = resp.ID
	}
	r.Status = resp.Status
	r.StatusDetails = resp.StatusDetails.String()
	if resp.Usage != nil {
		r.InputTokens, r.OutputTokens, r.TotalTokens = resp.Usage.InputTokens, resp.Usage.OutputTokens, resp.Usage.TotalTokens
	}
}

// verdict fails a finished turn whose response did not complete (nor end
// incomplete) or held no audio.
func (r *result) verdict() error {
	switch {
	case r.Status != "completed" && r.Status != "incomplete":
		msg := fmt.Sprintf("response %s ended with status %q", r.ResponseID, r.Status)
		if r.StatusDetails != "" {
			msg += ": " + r.StatusDetails
		}
		return errors.New(msg)
	case r.AudioBytes == 0:
		return fmt.Errorf("response %s (%s) held no audio", r.ResponseID, r.Status)
	}
	return nil
}

// next returns the next server event; an error event, a close or a read
// failure is an error.
func (t *turn) next(ctx context.Context, c *client) (*event, error) {
	var ev event
	if err := t.read(ctx, c, &ev); err != nil {
		return nil, err
	}
	if ev.Type == "error" {
		return nil, t.errorEvent(ev.Error)
	}
	return &ev, nil
}

// waiter knows what a run waits for (its phase), and names it in the
// errors of what ends the wait: a timeout, an error event, a close, a
// read failure or a frame that is not a JSON event.
type waiter struct {
	phase string
}

// read reads the next server event into ev.
func (w *waiter) read(ctx context.Context, c *client, ev any) error {
	data, err := c.receive(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return w.closedErr(err)
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return fmt.Errorf("waiting for %s: server sent a frame that is not a JSON event: %w", w.phase, err)
	}
	return nil
}

func (w *waiter) errorEvent(e *apiError) error {
	return fmt.Errorf("waiting for %s: error event: %s", w.phase, e)
}

func (w *waiter) closedErr(err error) error {
	var closed wsutil.ClosedError
	switch {
	case errors.As(err, &closed):
		return fmt.Errorf("server closed the WebSocket (code %d %q) while waiting for %s", closed.Code, closed.Reason, w.phase)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("connection dropped without a close frame while waiting for %s", w.phase)
	default:
		return fmt.Errorf("read while waiting for %s: %w", w.phase, err)
	}
}

func (t *turn) report(rep reporter, source string) {
	r := t.res
	line := rep.line
	line("audio", "%s (%d bytes, %s)", seconds(r.AudioSentBytes), r.AudioSentBytes, source)
	if r.SessionID == "" {
		return
	}
	model := ""
	if r.Model != "" {
		model = " (model " + r.Model + ")"
	}
	line("session", "%s%s", r.SessionID, model)
	if r.ResponseID != "" || r.Status != "" {
		line("response", "%s %s", r.ResponseID, r.Status)
	}
	if r.AudioDeltas > 0 {
		line("first audio", "%s after commit", r.TimeToFirstAudio.Round(time.Millisecond))
	}
	line("received", "%s of audio (%d bytes in %d deltas)", seconds(r.AudioBytes), r.AudioBytes, r.AudioDeltas)
	if r.Transcript != "" {
		line("transcript", "%q", r.Transcript)
	}
	if r.gotResponseDone {
		line("usage", "%d tokens (input %d, output %d)", r.TotalTokens, r.InputTokens, r.OutputTokens)
	}
}

func seconds(pcmBytes int) string {
	return fmt.Sprintf("%.2f s", float64(pcmBytes)/bytesPerSecond)
}

// sessionUpdate configures a GA realtime session for manual turns: audio
// in and out as 24 kHz PCM, no server VAD (talk commits the turn itself).
func sessionUpdate() map[string]any {
	format := map[string]any{"type": "audio/pcm", "rate": SampleRate}
	return map[string]any{
		"type": realtime.SessionUpdate,
		"session": map[string]any{
			"type":              "realtime",
			"output_modalities": []string{"audio"},
			"instructions":      "This is a connectivity test. Answer in one short sentence.",
			"audio": map[string]any{
				"input":  map[string]any{"format": format, "turn_detection": nil},
				"output": map[string]any{"format": format},
			},
		},
	}
}

// event is the part of a server event talk reads.
type event struct {
	Type     string            `json:"type"`
	Session  *realtime.Session `json:"session"`
	Response *response         `json:"response"`
	Delta    string            `json:"delta"`
	Error    *apiError         `json:"error"`
}

// response is the dialect's response object with the status details of
// one that did not complete.
type response struct {
	realtime.Response
	StatusDetails *statusDetails `json:"status_details"`
}

type statusDetails struct {
	Reason string    `json:"reason"`
	Error  *apiError `json:"error"`
}

func (d *statusDetails) String() string {
	switch {
	case d == nil:
		return ""
	case d.Error != nil:
		return d.Error.String()
	default:
		return d.Reason
	}
}

type apiError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) String() string {
	if e == nil {
		return "(no details)"
	}
	s := e.Type
	if e.Code != "" {
		s += "/" + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// decodedLen validates base64 audio and returns its decoded length.
func decodedLen(s string) (int, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return len(b), err
}

// maxQueued bounds the server messages held while Run is busy sending.
const maxQueued = 64 << 20

// client is the WebSocket connection of a turn. A reader goroutine owns the
// read side: it answers pings and closes and queues data messages, so the
// server never waits on talk while talk streams audio; every write, the
// reader's control replies included, holds wmu.
type client struct {
	conn         net.Conn
	stopDeadline func() bool // ends dial's unblocking of conn when its ctx ends

	wmu       sync.Mutex  // guards writes to conn
	closeSent atomic.Bool // our close frame is out: the server's close needs no reply

	mu       sync.Mutex    // guards the fields below
	queue    [][]byte      // data messages not yet received
	queued   int           // bytes in queue
	readErr  error         // why the reader stopped; set once, with stopped
	stopped  bool          // the reader has returned
	notify   chan struct{} // capacity 1: poked after every change of the fields above
	wg       sync.WaitGroup
	closeOne sync.Once
}

func newClient(conn net.Conn, br *bufio.Reader) *client {
	c := &client{conn: conn, notify: make(chan struct{}, 1)}
	var src io.Reader = conn
	if br != nil {
		// The handshake reader holds bytes the server sent right after the
		// upgrade (session.created, usually); it reads on from conn.
		src = br
	}
	c.wg.Add(1)
	go c.readLoop(src)
	return c
}

// readLoop reads messages until the connection fails or closes.
func (c *client) readLoop(src io.Reader) {
	defer c.wg.Done()
	err := c.readMessages(src)
	c.mu.Lock()
	c.readErr, c.stopped = err, true
	c.mu.Unlock()
	c.poke()
}

func (c *client) readMessages(src io.Reader) error {
	rd := &wsutil.Reader{Source: src, State: ws.StateClientSide, CheckUTF8: true}
	rd.OnIntermediate = c.control
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			return err
		}
		if hdr.OpCode.IsControl() {
			if err := c.control(hdr, rd); err != nil {
				return err
			}
			continue
		}
		if hdr.OpCode != ws.OpText {
			// The Realtime protocol is JSON text; ignore anything else.
			if err := rd.Discard(); err != nil {
				return err
			}
			continue
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.queue = append(c.queue, data)
		c.queued += len(data)
		full := c.queued > maxQueued
		c.mu.Unlock()
		if full {
			return fmt.Errorf("more than %d MiB of unread server messages", maxQueued>>20)
		}
		c.poke()
	}
}

func (c *client) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// receive returns the next data message, or why there will be none.
func (c *client) receive(ctx context.Context) ([]byte, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			data := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.queued -= len(data)
			c.mu.Unlock()
			return data, nil
		}
		stopped, err := c.stopped, c.readErr
		c.mu.Unlock()
		if stopped {
			return nil, err
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// control answers a ping with a pong and a close with a close, as one write.
func (c *client) control(h ws.Header, r io.Reader) error {
	var reply bytes.Buffer
	err := wsutil.ControlHandler{Src: r, Dst: &reply, State: ws.StateClientSide, DisableSrcCiphering: true}.Handle(h)
	if reply.Len() > 0 && !(h.OpCode == ws.OpClose && c.closeSent.Load()) {
		c.wmu.Lock()
		_, werr := c.conn.Write(reply.Bytes())
		c.wmu.Unlock()
		if err == nil {
			err = werr
		}
	}
	return err
}

func (c *client) sendJSON(v any) error {
	p, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := wsutil.WriteClientText(c.conn, p); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// closeGracefully sends a normal close and gives the server a moment to
// answer it before close() drops the connection.
func (c *client) closeGracefully() {
	body := wsframe.AppendClose(nil, wsframe.NormalClosure, "tether talk: done")
	c.wmu.Lock()
	c.closeSent.Store(true)
	err := ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewCloseFrame(body)))
	c.wmu.Unlock()
	if err != nil {
		return
	}
	// The server's close (or the deadline) ends the reader.
	_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
	c.wg.Wait()
}

// close closes the connection and waits for the reader.
func (c *client) close() {
	c.closeOne.Do(func() {
		if c.stopDeadline != nil {
			c.stopDeadline()
		}
		_ = c.conn.Close()
		c.wg.Wait()
	})
}
