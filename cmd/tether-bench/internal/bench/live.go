package bench

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherproxy/tether/dialect/live"
)

// The GPT-Live shape (--shape live): each call, once set up (session.start
// answered by session.started), streams session.input_audio.append events
// of 50 ms of 24 kHz PCM16 (2,400 bytes of audio, 3,200 base64 characters)
// at Rate per second (20: real time) for the whole measurement, while the
// mock's output track streams one session.output_audio.delta of 100 ms
// (6,400 base64 characters) every 100 ms, silence included. Nothing waits for
// anything: both directions are continuous, as a GPT-Live call is.
//
// What is measured per call:
//   - downlink cadence: each output delta's lateness against the call's own
//     100 ms grid (anchored at the earliest arrival seen), late beyond
//     LiveLate, and grid slots of the measurement that saw no delta (lost);
//   - uplink: the mock emits session.input_transcript.delta for every 200 ms
//     window of loud input audio (the probe audio is a 440 Hz tone), with the
//     window's place on the input timeline, so the arrival of the transcript
//     of the window that append k completed gives k's round trip (append sent
//     to transcript received; the mock's work included, as the direct
//     baseline's), and the timeline's end tells how many appends arrived
//     (uplink frames lost = sent minus heard, in whole windows).
const (
	// ShapeRealtime is the OpenAI Realtime voice load with echoed probes.
	ShapeRealtime = "realtime"
	// ShapeLive is the GPT-Live-shaped continuous load.
	ShapeLive = "live"

	// LivePath is the GPT-Live path of tether and of the mock.
	LivePath = "/v1/live/sessions"
	// LiveRate is the appends per second of a GPT-Live call (50 ms each).
	LiveRate = 20
	// liveAppendAudio is 50 ms of 24 kHz PCM16.
	liveAppendAudio = 2400
	// liveAppendMillis is the audio of one append.
	liveAppendMillis = 50
	// liveWindowMillis is the mock's transcript window.
	liveWindowMillis = 200
	// liveDeltaInterval is the mock's output track cadence.
	liveDeltaInterval = 100 * time.Millisecond
	// liveRing is how many appends' send times a call keeps (3.2 s at 20/s).
	liveRing = 64
)

var (
	livePrefixDelta      = []byte(`{"type":"` + live.OutputAudioDelta + `"`)
	livePrefixTranscript = []byte(`{"type":"` + live.InputTranscriptDelta + `"`)
	livePrefixError      = []byte(`"type":"` + live.Error + `"`)
	liveStartEvent       = []byte(`{"type":"` + live.SessionStart + `","event_id":"bench_start","session":{"model":"` + live.ModelGPTLive1 + `"}}`)
)

// liveAppendPayload is one append: 50 ms of the probe tone.
func liveAppendPayload() []byte {
	p := []byte(`{"type":"` + live.InputAudioAppend + `","audio":"`)
	p = append(p, audioBlock[:liveAppendAudio/3*4]...)
	return append(p, `"}`...)
}

// LiveFrameBytes is the payload size of a GPT-Live append.
var LiveFrameBytes = len(liveAppendPayload())

// newLiveProbe encodes the masked append frame of a call (never stamped:
// its round trip comes from the transcript of its window).
func newLiveProbe(mask [4]byte) *probe {
	payload := liveAppendPayload()
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload)), Masked: true, Mask: mask}
	hl := ws.HeaderSize(h)
	frame := make([]byte, hl+len(payload))
	_ = ws.WriteHeader(&fixedWriter{buf: frame[:0:hl]}, h)
	copy(frame[hl:], payload)
	ws.Cipher(frame[hl:], mask, 0)
	return &probe{frame: frame, hdrLen: hl, mask: mask, fixed: true}
}

// liveStats are the GPT-Live counters of one target.
type liveStats struct {
	lateness *Histogram // output delta arrival behind the call's grid
	deltas   atomic.Uint64
	late     atomic.Uint64 // deltas later than LiveLate
	skipped  atomic.Uint64 // grid slots of the measurement that saw no delta
	heard    atomic.Uint64 // appends the mock's input timeline holds (in whole windows)
	sentUp   atomic.Uint64 // appends sent (all calls; only whole windows count as expected)
	windows  atomic.Uint64 // input transcripts received
	other    atomic.Uint64 // other downlink events (output transcripts, usage)
}

func newLiveStats() *liveStats { return &liveStats{lateness: NewHistogram()} }

// liveCall is the GPT-Live state of one session.
type liveCall struct {
	// Written by the sender, read by the reader.
	sentAt  [liveRing]atomic.Int64 // send time (since the run's base) of append k at k % liveRing
	sentSeq [liveRing]atomic.Uint64
	// Owned by the reader.
	anchor     time.Duration // earliest grid origin seen
	haveAnchor bool
	next       int64 // grid slot of the next delta
	heardMs    int64 // end of the latest input transcript window
	// heard mirrors heardMs, sentN counts the appends sent: the drain reads them.
	heard atomic.Int64
	sentN atomic.Uint64
}

// sent records append seq's send time (called by the shard sender).
func (lc *liveCall) sent(seq uint64, at time.Duration) {
	i := seq % liveRing
	lc.sentAt[i].Store(int64(at))
	lc.sentSeq[i].Store(seq)
	lc.sentN.Store(seq + 1)
}

// inMeasurement reports whether now (since base) falls in the measured time
// of the run, and so whether a downlink frame counts.
func (s *session) inMeasurement(now time.Duration) bool {
	r := s.r
	select {
	case <-r.started:
	default:
		return false
	}
	from := r.start.Sub(r.base)
	return now >= from && now < from+r.sched.End
}

// liveFrame handles one downlink data frame of a call; head is its first
// bytes (unmasked).
func (s *session) liveFrame(head []byte, frameBytes uint64) {
	st := s.tgt.stats
	ls := st.live
	lc := s.live
	now := time.Since(s.r.base)
	measured := s.inMeasurement(now)
	if measured {
		st.recvBytes.Add(frameBytes)
	}
	switch {
	case bytes.HasPrefix(head, livePrefixDelta):
		// The n-th delta of a call belongs to slot n of its 100 ms grid; a
		// delta more than half an interval early for its count means slots
		// were skipped (deltas lost).
		if !lc.haveAnchor {
			lc.anchor, lc.haveAnchor = now, true
		}
		off := now - lc.anchor - time.Duration(lc.next)*liveDeltaInterval
		if off < -time.Minute || off > time.Minute { // lost track of the grid: start over, count nothing
			lc.anchor, lc.next, off = now, 0, 0
		} else if off < -liveDeltaInterval/2 {
			skipped := int64((-off + liveDeltaInterval/2) / liveDeltaInterval)
			lc.next += skipped
			off += time.Duration(skipped) * liveDeltaInterval
			if measured {
				ls.skipped.Add(uint64(skipped))
			}
		}
		if off < 0 { // earlier than the grid so far: move the grid
			lc.anchor += off
			off = 0
		}
		lc.next++
		if !measured {
			return
		}
		ls.deltas.Add(1)
		st.recv.Add(1)
		ls.lateness.Record(off)
		if off > s.r.opts.LiveLate {
			ls.late.Add(1)
		}
	case bytes.HasPrefix(head, livePrefixTranscript):
		start, ok := jsonInt(head, `"start_ms":`)
		end, ok2 := jsonInt(head, `"end_ms":`)
		if !ok || !ok2 {
			st.fail("live: unreadable input transcript")
			return
		}
		lc.heardMs = max(lc.heardMs, end)
		lc.heard.Store(lc.heardMs)
		if measured {
			ls.windows.Add(1)
			st.recv.Add(1)
		}
		// The append that completed the window [start, start+200 ms).
		k := uint64((start+liveWindowMillis)/liveAppendMillis) - 1
		i := k % liveRing
		if lc.sentSeq[i].Load() != k {
			return // sent before the measurement, or too long ago
		}
		at := time.Duration(lc.sentAt[i].Load())
		if at > 0 && s.inMeasurement(at) {
			st.rtt.Record(now - at)
		}
	case bytes.Contains(head, livePrefixError):
		st.fail("upstream error event")
	default:
		if measured {
			ls.other.Add(1)
			st.recv.Add(1)
		}
	}
}

// liveEnd adds a call's totals when its reader stops.
func (s *session) liveEnd() {
	ls, lc := s.tgt.stats.live, s.live
	ls.heard.Add(uint64(lc.heardMs / liveAppendMillis))
	win := uint64(liveWindowMillis / liveAppendMillis)
	ls.sentUp.Add(lc.sentN.Load() / win * win)
}

// liveHeard reports whether every whole window of appends sent so far has
// been transcribed (the drain's condition).
func (s *session) liveHeard() bool {
	win := uint64(liveWindowMillis / liveAppendMillis)
	return uint64(s.live.heard.Load()/liveAppendMillis) >= s.live.sentN.Load()/win*win
}

// jsonInt reads the non-negative integer after key in b.
func jsonInt(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	for j < len(b) && b[j] == ' ' {
		j++
	}
	var v int64
	n := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		v = v*10 + int64(b[j]-'0')
		n++
	}
	return v, n > 0
}

// LiveFigures are the GPT-Live figures of a target.
type LiveFigures struct {
	// Downlink output deltas in the measurement: received, their lateness
	// against each call's 100 ms grid, late beyond LiveLateMs, and grid slots
	// that saw none.
	Deltas     uint64  `json:"deltas"`
	Slots      uint64  `json:"delta_slots"`
	DeltasLost uint64  `json:"deltas_lost"`
	DeltasLate uint64  `json:"deltas_late"`
	LiveLateMs float64 `json:"late_after_ms"`
	Lateness   Latency `json:"delta_lateness"`
	// Uplink appends: sent (in whole 200 ms windows), heard by the mock, lost.
	AppendsSent  uint64 `json:"appends_sent"`
	AppendsHeard uint64 `json:"appends_heard"`
	AppendsLost  uint64 `json:"appends_lost"`
	Transcripts  uint64 `json:"input_transcripts"`
	OtherEvents  uint64 `json:"other_events"`
	// CallSeconds are calls up x measured seconds; CPUMsPerCallSecond the
	// proxy's CPU over them.
	CallSeconds        float64 `json:"call_seconds"`
	CPUMsPerCallSecond float64 `json:"cpu_ms_per_call_second,omitempty"`
}

func (t *target) liveFigures(o Options, connected int64, measured time.Duration, pr *Process) *LiveFigures {
	ls := t.stats.live
	f := &LiveFigures{Deltas: ls.deltas.Load(), DeltasLost: ls.skipped.Load(), DeltasLate: ls.late.Load(),
		LiveLateMs: float64(o.LiveLate) / float64(time.Millisecond), Lateness: latencyOf(ls.lateness.Snapshot()),
		AppendsSent: ls.sentUp.Load(), AppendsHeard: ls.heard.Load(), Transcripts: ls.windows.Load(),
		OtherEvents: ls.other.Load(), CallSeconds: float64(connected) * measured.Seconds()}
	f.Slots = f.Deltas + f.DeltasLost
	f.AppendsLost = f.AppendsSent - min(f.AppendsSent, f.AppendsHeard)
	if pr != nil && f.CallSeconds > 0 {
		f.CPUMsPerCallSecond = pr.CPUSeconds * 1000 / f.CallSeconds
	}
	return f
}

func liveURL(raw string) string {
	if i := bytes.IndexByte([]byte(raw), '?'); i >= 0 {
		raw = raw[:i]
	}
	if j := bytes.Index([]byte(raw), []byte("/v1/")); j >= 0 {
		return raw[:j] + LivePath
	}
	return raw
}

var _ = fmt.Sprint
