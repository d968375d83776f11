package lifecycle

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/dialect/realtime"
)

// openWith opens a started session speaking d. Its finish tells m the
// session's relay returned; it runs at the end of the test (inside a
// synctest bubble, before the bubble ends) unless the test called it.
func openWith(t *testing.T, m *Manager, d dialect.Dialect) (*Session, *fakeTransport, func()) {
	t.Helper()
	release, err := m.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	s := m.Open(Info{Upstream: "u", Dialect: d})
	ft := newFakeTransport()
	s.Start(ft)
	finish := sync.OnceFunc(func() { m.Finished(s, release) })
	t.Cleanup(finish)
	return s, ft, finish
}

func upstreamEvent(s *Session, typ string) { s.Event(UpstreamToClient, []byte(typ), nil) }

func captured(s *Session, typ, payload string) { s.Captured([]byte(typ), []byte(payload)) }

// A microphone streaming silence is no turn: frames do not keep a
// Realtime session from idling out; speech events do.
func TestIdleCountsTurnsNotFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{IdleTimeout: 10 * time.Second})
		streaming, _, _ := openWith(t, m, realtime.Dialect{})
		talking, _, _ := openWith(t, m, realtime.Dialect{})
		// One long utterance: speech_started once, no speech_stopped for 12 s.
		speech, _, _ := openWith(t, m, realtime.Dialect{})
		upstreamEvent(speech, realtime.SpeechStarted)
		for i := range 24 { // 12 s: audio both ways, speech on one every 6 s, one long utterance
			time.Sleep(500 * time.Millisecond)
			for _, s := range []*Session{streaming, talking, speech} {
				s.Frame(ClientToUpstream, 3200)
				s.Event(ClientToUpstream, []byte(realtime.InputAudioAppend), nil)
			}
			if i%12 == 0 {
				upstreamEvent(talking, realtime.SpeechStarted)
			}
		}
		synctest.Wait()
		if r := streaming.Summary().Reason; r != ReasonIdleTimeout || !streaming.Ended() {
			t.Errorf("session streaming silence: ended %v reason %q, want idle_timeout", streaming.Ended(), r)
		}
		if talking.Ended() {
			t.Errorf("session with speech every 6 s ended: %s", talking.Summary().Reason)
		}
		if speech.Ended() {
			t.Errorf("a caller still speaking after 12 s was cut off: %s", speech.Summary().Reason)
		}
		upstreamEvent(speech, realtime.SpeechStopped)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if r := speech.Summary().Reason; r != ReasonIdleTimeout {
			t.Errorf("10 s after the caller stopped speaking: reason %q, want idle_timeout", r)
		}
		// A caller whose audio stops mid-utterance (no speech_stopped ever
		// comes) is quiet: idle ends it.
		frozen, _, _ := openWith(t, m, realtime.Dialect{})
		upstreamEvent(frozen, realtime.SpeechStarted)
		frozen.Frame(ClientToUpstream, 3200)
		time.Sleep(21 * time.Second)
		synctest.Wait()
		if r := frozen.Summary().Reason; r != ReasonIdleTimeout {
			t.Errorf("a caller frozen mid-speech for 21 s: reason %q, want idle_timeout", r)
		}
		talking.End(ReasonAdmin)
	})
}

// GPT-Live: transcripts are the activity; a drain waits for the assistant
// to be quiet for Quiet.
func TestLiveDrainWaitsForQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{Quiet: time.Second, DrainTimeout: 20 * time.Second})
		s, ft, finish := openWith(t, m, live.Dialect{})
		quiet, _, f2 := openWith(t, m, live.Dialect{})
		upstreamEvent(s, live.OutputTranscriptDelta)
		if st := s.Snapshot().State; st != stateResponding {
			t.Errorf("GET /sessions state %q while the assistant speaks, want %q", st, stateResponding)
		}
		drained := make(chan struct{})
		go func() { m.Drain(t.Context()); close(drained) }()
		start := time.Now()
		for range 10 { // the answer goes on for 3 s
			time.Sleep(300 * time.Millisecond)
			upstreamEvent(s, live.OutputTranscriptDelta)
		}
		last := time.Now()
		synctest.Wait()
		if !quiet.Ended() {
			t.Error("a session with no answer in progress was not closed at once")
		}
		if s.Ended() {
			t.Fatalf("closed %v into the drain while the answer was spoken", time.Since(start))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !s.Ended() || s.Summary().Reason != ReasonShutdown {
			t.Fatalf("not closed 1 s after the answer's last words (ended %v)", s.Ended())
		}
		if d := s.Summary().Duration - last.Sub(s.StartedAt); d != time.Second {
			t.Errorf("closed %v after the last transcript, want 1s (quiet)", d)
		}
		if len(ft.began) != 0 { // CloseTimeout 0: no session.close
			t.Errorf("session.close sent with close_timeout 0: %v", ft.began)
		}
		finish()
		f2()
		<-drained
	})
}

// Usage seconds are cumulative: the latest wins; the hooks get the growth.
func TestLiveUsageIsLatestNotSum(t *testing.T) {
	hooks := &recHooks{}
	m := NewManager(Options{Hooks: []Hooks{hooks}})
	s, _, finish := openWith(t, m, live.Dialect{})
	captured(s, live.SessionStarted, `{"type":"session.started","session":{"id":"live_1","model":"gpt-live-1"}}`)
	for _, sec := range []string{"5", "7", "7", "6.5"} {
		captured(s, live.UsageUpdated, `{"type":"session.usage.updated","usage":{"seconds":`+sec+`}}`)
	}
	captured(s, live.SessionClosed, `{"type":"session.closed","reason":"close_requested","usage":{"seconds":9}}`)
	s.CloseReceived(Upstream, 1000, "")
	finish()
	sum := s.Summary()
	if sum.AudioSeconds != 9 || sum.Conversation != "live_1" || sum.Model != "gpt-live-1" || sum.UpstreamEndReason != "close_requested" {
		t.Errorf("summary audio %v conversation %q model %q end %q", sum.AudioSeconds, sum.Conversation, sum.Model, sum.UpstreamEndReason)
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if hooks.audioSeconds != 9 {
		t.Errorf("hooks got %v audio seconds in all, want 9 (the growth of the total)", hooks.audioSeconds)
	}
}

// After session.closed, an upstream that drops its socket ends the session
// as upstream_closed (1000 to the client), not upstream_error.
func TestLiveUpstreamEndedThenDropped(t *testing.T) {
	m := NewManager(Options{CloseTimeout: time.Second})
	s, ft, finish := openWith(t, m, live.Dialect{})
	captured(s, live.SessionClosed, `{"type":"session.closed","reason":"expired"}`)
	s.LegError(Upstream, errors.New("EOF"))
	finish()
	if r := s.Summary().Reason; r != ReasonUpstreamClosed || ft.client.Code != 1000 || len(ft.began) != 0 {
		t.Errorf("reason %s client close %d session.close %v; want upstream_closed, 1000, none", r, ft.client.Code, ft.began)
	}
}

// tether's own end of a GPT-Live session goes through session.close; the
// upstream's answer, or close_timeout, lets the sockets close. A dead
// upstream leg gets no session.close.
func TestLiveGracefulClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{CloseTimeout: 5 * time.Second})
		answered, ft1, _ := openWith(t, m, live.Dialect{})
		silent, ft2, _ := openWith(t, m, live.Dialect{})
		dead, ft3, _ := openWith(t, m, live.Dialect{})
		answered.End(ReasonAdmin)
		silent.End(ReasonIdleTimeout)
		dead.End(ReasonUpstreamError)
		synctest.Wait()
		if len(ft1.began) != 1 || ft1.began[0] != string(live.CloseMessage) || ft1.shutdown != 0 {
			t.Fatalf("began %v shutdown %d; want session.close sent and the sockets still open", ft1.began, ft1.shutdown)
		}
		time.Sleep(300 * time.Millisecond)
		captured(answered, live.SessionClosed, `{"type":"session.closed","reason":"close_requested"}`)
		synctest.Wait()
		if ft1.shutdown != 1 || ft1.client.Code != 4003 {
			t.Errorf("after session.closed: shutdown %d client close %d, want 1 and 4003", ft1.shutdown, ft1.client.Code)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if ft2.shutdown != 1 || ft2.client.Code != 4000 {
			t.Errorf("unanswered: shutdown %d client close %d after close_timeout, want 1 and 4000", ft2.shutdown, ft2.client.Code)
		}
		if len(ft3.began) != 0 || ft3.shutdown != 1 {
			t.Errorf("dead upstream leg: began %v shutdown %d, want no session.close", ft3.began, ft3.shutdown)
		}
	})
}

// EndAtBoundary waits for the answer in progress (Realtime) or for a quiet
// moment and a graceful close (GPT-Live), then closes the client with the
// reason's code after the notice.
func TestEndAtBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{Quiet: time.Second, CloseTimeout: 5 * time.Second})
		rt, ftRT, _ := openWith(t, m, realtime.Dialect{})
		lv, ftLV, _ := openWith(t, m, live.Dialect{})
		captured(rt, realtime.ResponseCreated, `{"type":"response.created","response":{"id":"resp_1"}}`)
		upstreamEvent(lv, live.OutputTranscriptDelta)
		rt.EndAtBoundary(ReasonBudgetExhausted, `{"type":"error"}`, time.Minute)
		lv.EndAtBoundary(ReasonBudgetExhausted, `{"type":"error"}`, time.Minute)
		rt.EndAtBoundary(ReasonShutdown, "", 0) // the first reason stays
		synctest.Wait()
		if rt.Ended() || lv.Ended() {
			t.Fatalf("ended mid-answer (realtime %v, live %v)", rt.Ended(), lv.Ended())
		}
		if st := rt.Snapshot().State; st != stateDraining {
			t.Errorf("state %q while waiting for the boundary, want %q", st, stateDraining)
		}
		captured(rt, realtime.ResponseDone, `{"type":"response.done","response":{"id":"resp_1","status":"completed"}}`)
		synctest.Wait()
		if !rt.Ended() || rt.Summary().Reason != ReasonBudgetExhausted {
			t.Fatalf("realtime after response.done: ended %v reason %q", rt.Ended(), rt.Summary().Reason)
		}
		if ftRT.client.Code != 4004 || ftRT.client.Notice != `{"type":"error"}` || ftRT.upstream.Code != 1000 {
			t.Errorf("realtime closes: client %+v upstream %+v, want 4004 after the notice and 1000", ftRT.client, ftRT.upstream)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if len(ftLV.began) != 1 || ftLV.shutdown != 0 {
			t.Fatalf("live after a quiet second: began %v shutdown %d, want session.close sent", ftLV.began, ftLV.shutdown)
		}
		captured(lv, live.SessionClosed, `{"type":"session.closed","reason":"close_requested"}`)
		synctest.Wait()
		if ftLV.shutdown != 1 || ftLV.client.Code != 4004 || ftLV.client.Notice == "" {
			t.Errorf("live after session.closed: shutdown %d client %+v, want 4004 with the notice", ftLV.shutdown, ftLV.client)
		}
	})
}

// A session that never reaches its boundary (a caller who never pauses on
// a continuous stream, answers that overlap) still ends within the bound.
func TestEndAtBoundaryDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{Quiet: time.Second})
		lv, ftLV, _ := openWith(t, m, live.Dialect{})
		rt, ftRT, _ := openWith(t, m, realtime.Dialect{})
		captured(rt, realtime.ResponseCreated, `{"type":"response.created","response":{"id":"a"}}`)
		upstreamEvent(lv, live.OutputTranscriptDelta)
		start := time.Now()
		lv.EndAtBoundary(ReasonBudgetExhausted, `{"type":"error"}`, 5*time.Second)
		rt.EndAtBoundary(ReasonBudgetExhausted, `{"type":"error"}`, 5*time.Second)
		for time.Since(start) < 4900*time.Millisecond {
			upstreamEvent(lv, live.OutputTranscriptDelta) // the answer never pauses
			captured(rt, realtime.ResponseCreated, `{"type":"response.created","response":{"id":"b"}}`)
			captured(rt, realtime.ResponseDone, `{"type":"response.done","response":{"id":"a","status":"completed"}}`)
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		if lv.Ended() || rt.Ended() {
			t.Fatalf("ended before the bound (live %v, realtime %v)", lv.Ended(), rt.Ended())
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		for name, ft := range map[string]*fakeTransport{"live": ftLV, "realtime": ftRT} {
			if ft.shutdown != 1 || ft.client.Code != 4004 {
				t.Errorf("%s at the bound: shutdown %d client %+v, want 4004", name, ft.shutdown, ft.client)
			}
		}
	})
}
