package lifecycle

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/internal/wsframe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTransport records what the session asked of the relay. Its peers
// are heard from when the test says so (hear), as the relay's readers would.
type fakeTransport struct {
	mu       sync.Mutex
	pings    [2]int
	heard    [2]time.Time
	writing  [2]time.Time
	pingErr  error
	shutdown int
	client   CloseFrame
	upstream CloseFrame
	// unsent makes Shutdown report that leg's close frame as not written.
	unsent [2]bool
	// began are the messages of BeginClose calls.
	began []string
}

func newFakeTransport() *fakeTransport {
	now := time.Now()
	return &fakeTransport{heard: [2]time.Time{now, now}}
}

func (f *fakeTransport) Ping(leg Leg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings[leg]++
	return f.pingErr
}

// hear records bytes from leg's peer now.
func (f *fakeTransport) hear(leg Leg) {
	f.mu.Lock()
	f.heard[leg] = time.Now()
	f.mu.Unlock()
}

// setWriting marks a write to leg in progress since now (or none with false).
func (f *fakeTransport) setWriting(leg Leg, on bool) {
	f.mu.Lock()
	f.writing[leg] = time.Time{}
	if on {
		f.writing[leg] = time.Now()
	}
	f.mu.Unlock()
}

func (f *fakeTransport) Liveness(leg Leg) (heard, writing time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heard[leg], f.writing[leg]
}

func (f *fakeTransport) BeginClose(msg []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.began = append(f.began, string(msg))
	return nil
}

func (f *fakeTransport) Shutdown(c, u CloseFrame) (sent [2]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdown++
	f.client, f.upstream = c, u
	return [2]bool{!f.unsent[Client], !f.unsent[Upstream]}
}

// recHooks counts what the session told its hooks.
type recHooks struct {
	mu         sync.Mutex
	started    int
	ended      []Summary
	rtts       [2]int
	timeouts   [2]int
	firstAudio []time.Duration
	usage      Tokens
	errCodes   []string
	// audioSeconds sums UsageUpdated's growth of the audio total.
	audioSeconds float64
}

func (h *recHooks) HandshakeFailed(Info, int, string) {}
func (h *recHooks) SessionStarted(*Session)           { h.mu.Lock(); h.started++; h.mu.Unlock() }
func (h *recHooks) ResponseStarted(*Session, string)  {}
func (h *recHooks) FirstAudio(_ *Session, _ string, d time.Duration) {
	h.mu.Lock()
	h.firstAudio = append(h.firstAudio, d)
	h.mu.Unlock()
}
func (h *recHooks) ResponseDone(_ *Session, _, _ string, u Tokens) {
	h.mu.Lock()
	h.usage.Add(u)
	h.mu.Unlock()
}
func (h *recHooks) UpstreamError(_ *Session, _, code string) {
	h.mu.Lock()
	h.errCodes = append(h.errCodes, code)
	h.mu.Unlock()
}
func (h *recHooks) HeartbeatTimeout(_ *Session, leg Leg) {
	h.mu.Lock()
	h.timeouts[leg]++
	h.mu.Unlock()
}
func (h *recHooks) UsageUpdated(_ *Session, _ Tokens, audio float64) {
	h.mu.Lock()
	h.audioSeconds += audio
	h.mu.Unlock()
}

func (h *recHooks) HeartbeatRTT(_ *Session, leg Leg, _ time.Duration) {
	h.mu.Lock()
	h.rtts[leg]++
	h.mu.Unlock()
}
func (h *recHooks) SessionResumed(*Session, Resume) {}
func (h *recHooks) SessionEnded(_ *Session, sum Summary) {
	h.mu.Lock()
	h.ended = append(h.ended, sum)
	h.mu.Unlock()
}

// reserve takes a handshake slot on m; a refusal fails the test.
func reserve(t *testing.T, m *Manager) (release func()) {
	t.Helper()
	release, err := m.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	return release
}

func open(t *testing.T, m *Manager) (*Session, *fakeTransport, func()) {
	t.Helper()
	release := reserve(t, m)
	s := m.Open(Info{Upstream: "u", ClientAddr: "1.2.3.4:5"})
	ft := newFakeTransport()
	s.Start(ft)
	return s, ft, func() { m.Finished(s, release) }
}

func TestEndIsExactlyOnce(t *testing.T) {
	hooks := &recHooks{}
	m := NewManager(Options{Hooks: []Hooks{hooks}})
	s, ft, finish := open(t, m)
	if m.Get(s.ID) != s || m.Len() != 1 {
		t.Fatal("session not registered")
	}
	var wg sync.WaitGroup
	for _, r := range []Reason{ReasonAdmin, ReasonIdleTimeout, ReasonShutdown, ReasonClientError} {
		wg.Add(1)
		go func() { defer wg.Done(); s.End(r) }()
	}
	wg.Wait()
	finish()
	if ft.shutdown != 1 {
		t.Fatalf("Shutdown called %d times", ft.shutdown)
	}
	if m.Get(s.ID) != nil || m.Len() != 0 {
		t.Fatal("registry entry not removed")
	}
	if hooks.started != 1 || len(hooks.ended) != 1 {
		t.Fatalf("hooks heard %d starts and %d ends, want 1 and 1", hooks.started, len(hooks.ended))
	}
}

func TestCloseCodesFollowTheContract(t *testing.T) {
	cases := map[Reason][2]wsframe.CloseCode{
		ReasonClientError:              {CodeNone, 1001},
		ReasonUpstreamError:            {1014, CodeNone},
		ReasonClientHeartbeatTimeout:   {1001, 1001},
		ReasonUpstreamHeartbeatTimeout: {4002, 1001},
		ReasonIdleTimeout:              {4000, 1000},
		ReasonMaxDuration:              {4001, 1000},
		ReasonUpstreamFatalEvent:       {1014, 1000},
		ReasonFrameTooLarge:            {1009, 1000},
		ReasonProtocolError:            {1002, 1000},
		ReasonAdmin:                    {4003, 1000},
		ReasonShutdown:                 {1001, 1001},
	}
	for r, want := range cases {
		m := NewManager(Options{})
		s, ft, finish := open(t, m)
		s.End(r)
		finish()
		if ft.client.Code != want[0] || ft.upstream.Code != want[1] {
			t.Errorf("%s: client %d upstream %d, want %v", r, ft.client.Code, ft.upstream.Code, want)
		}
	}
	m := NewManager(Options{})
	s, ft, finish := open(t, m)
	s.CloseReceived(Upstream, 3000, "invalid_api_key")
	finish()
	if ft.client != (CloseFrame{Code: 3000, Reason: "invalid_api_key"}) || ft.upstream.Code != 3000 || s.Summary().Reason != ReasonUpstreamClosed {
		t.Fatalf("upstream close relayed as %+v / %+v", ft.client, ft.upstream)
	}
}

func TestReserveLimitsAndDraining(t *testing.T) {
	m := NewManager(Options{MaxSessions: 2})
	r1, err1 := m.Reserve()
	r2, err2 := m.Reserve()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := m.Reserve(); !errors.Is(err, ErrFull) {
		t.Fatalf("third reserve: %v", err)
	}
	r1()
	r1() // idempotent
	r3, err := m.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	r2()
	r3()
	m.Drain(context.Background())
	if _, err := m.Reserve(); !errors.Is(err, ErrDraining) {
		t.Fatalf("reserve while draining: %v", err)
	}
}

func TestHeartbeatPingsAndTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hooks := &recHooks{}
		m := NewManager(Options{Hooks: []Hooks{hooks},
			ClientHeartbeat:   HeartbeatOptions{Interval: 10 * time.Second, Timeout: 3 * time.Second},
			UpstreamHeartbeat: HeartbeatOptions{Interval: 10 * time.Second, Timeout: 3 * time.Second}})
		s, ft, finish := open(t, m)
		// Three healthy rounds: pongs 100 ms after each ping.
		for round := 1; round <= 3; round++ {
			time.Sleep(10*time.Second + 100*time.Millisecond)
			synctest.Wait()
			if ft.pings[Client] != round || ft.pings[Upstream] != round {
				t.Fatalf("round %d: pings %v", round, ft.pings)
			}
			for _, leg := range []Leg{Client, Upstream} {
				ft.hear(leg)
				s.Pong(leg)
			}
		}
		if s.Ended() {
			t.Fatal("healthy session ended")
		}
		if hooks.rtts != [2]int{3, 3} {
			t.Fatalf("round trips reported %v, want 3 per leg", hooks.rtts)
		}
		// t = 30.3 s. The upstream falls silent (last heard at 30.3 s): it is
		// dead at 30.3 + 10 + 3 = 43.3 s; the client keeps answering.
		for time.Sleep(9*time.Second + 800*time.Millisecond); ; time.Sleep(time.Second) {
			ft.hear(Client)
			if time.Since(ft.heard[Upstream]) > 12*time.Second {
				break
			}
		}
		synctest.Wait()
		if s.Ended() {
			t.Fatalf("ended %v after the upstream's last bytes, before interval+timeout", time.Since(ft.heard[Upstream]))
		}
		time.Sleep(time.Until(ft.heard[Upstream].Add(13 * time.Second)))
		synctest.Wait()
		if !s.Ended() || s.Summary().Reason != ReasonUpstreamHeartbeatTimeout {
			t.Fatalf("ended=%v reason=%s", s.Ended(), s.Summary().Reason)
		}
		finish()
		if hooks.timeouts != [2]int{0, 1} {
			t.Fatalf("heartbeat timeouts %v", hooks.timeouts)
		}
	})
}

// A peer that streams data but never answers a ping is alive: liveness is
// "the peer sent something", not "a pong came back".
func TestHeartbeatDataKeepsLegAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := HeartbeatOptions{Interval: time.Second, Timeout: 500 * time.Millisecond}
		m := NewManager(Options{ClientHeartbeat: hb, UpstreamHeartbeat: hb})
		s, ft, finish := open(t, m)
		for range 3000 { // 60 s of 20 ms audio frames both ways, no pongs
			time.Sleep(20 * time.Millisecond)
			ft.hear(Client)
			ft.hear(Upstream)
		}
		synctest.Wait()
		if s.Ended() {
			t.Fatalf("streaming session ended: %s", s.Summary().Reason)
		}
		if ft.pings[Client] < 50 {
			t.Fatalf("pings %v: heartbeats stopped while data flowed", ft.pings)
		}
		// The client stops sending anything: dead 1.5 s after its last frame.
		last := time.Now()
		for !s.Ended() {
			time.Sleep(20 * time.Millisecond)
			ft.hear(Upstream)
			synctest.Wait()
		}
		if got := time.Since(last); got < 1500*time.Millisecond || got > 1520*time.Millisecond {
			t.Fatalf("client silence noticed after %v, want 1.5 s", got)
		}
		if r := s.Summary().Reason; r != ReasonClientHeartbeatTimeout {
			t.Fatalf("reason %s", r)
		}
		finish()
	})
}

// A write that makes no progress for the timeout is the written leg's
// failure, even while that peer keeps sending (it stopped reading).
func TestHeartbeatStalledWriteFailsLeg(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := HeartbeatOptions{Interval: time.Second, Timeout: 500 * time.Millisecond}
		m := NewManager(Options{ClientHeartbeat: hb, UpstreamHeartbeat: hb})
		s, ft, finish := open(t, m)
		// Slow but moving writes (each takes 300 ms) never trip it.
		for range 40 {
			ft.setWriting(Client, true)
			for range 15 {
				time.Sleep(20 * time.Millisecond)
				ft.hear(Client)
				ft.hear(Upstream)
			}
			ft.setWriting(Client, false)
		}
		synctest.Wait()
		if s.Ended() {
			t.Fatalf("slow writer ended: %s", s.Summary().Reason)
		}
		ft.setWriting(Client, true) // this one never returns
		stuck := time.Now()
		for !s.Ended() {
			time.Sleep(20 * time.Millisecond)
			ft.hear(Client) // the client still talks
			ft.hear(Upstream)
			synctest.Wait()
		}
		if got := time.Since(stuck); got < 500*time.Millisecond || got > hb.Interval+20*time.Millisecond {
			t.Fatalf("stalled write noticed after %v", got)
		}
		if r := s.Summary().Reason; r != ReasonClientHeartbeatTimeout {
			t.Fatalf("reason %s", r)
		}
		finish()
	})
}

// The session reports the close frames the relay wrote, not the ones it meant to.
func TestSummaryReportsCloseFramesWritten(t *testing.T) {
	m := NewManager(Options{})
	release, _ := m.Reserve()
	s := m.Open(Info{})
	ft := newFakeTransport()
	ft.unsent[Upstream] = true
	s.Start(ft)
	s.End(ReasonClientHeartbeatTimeout)
	m.Finished(s, release)
	sum := s.Summary()
	if sum.CloseClient.Code != 1001 || sum.CloseUp.Code != CodeNone {
		t.Fatalf("summary close codes %d/%d, want 1001/none", sum.CloseClient.Code, sum.CloseUp.Code)
	}
	if sum.CloseUnsent != [2]bool{false, true} {
		t.Fatalf("close frames unsent %v, want the upstream's", sum.CloseUnsent)
	}
}

func TestIdleTimerCountsDataFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{IdleTimeout: 10 * time.Second})
		s, _, finish := open(t, m)
		for range 5 { // a frame every 6 s keeps it alive for 30 s
			time.Sleep(6 * time.Second)
			s.Frame(ClientToUpstream, 100)
		}
		synctest.Wait()
		if s.Ended() {
			t.Fatal("active session ended as idle")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if s.Summary().Reason != ReasonIdleTimeout {
			t.Fatalf("reason %q", s.Summary().Reason)
		}
		finish()
	})
}

func TestDrainClosesIdleAtOnceAndBusyAtBoundaryOrDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewManager(Options{DrainTimeout: 20 * time.Second})
		idle, _, f1 := open(t, m)
		busy, _, f2 := open(t, m)
		stuck, _, f3 := open(t, m)
		busy.AnswerStarted("r1")
		stuck.AnswerStarted("r2")
		done := make(chan struct{})
		start := time.Now()
		go func() {
			m.Drain(context.Background())
			close(done)
		}()
		synctest.Wait()
		if !idle.Ended() || busy.Ended() || stuck.Ended() {
			t.Fatalf("after drain start: idle=%v busy=%v stuck=%v", idle.Ended(), busy.Ended(), stuck.Ended())
		}
		if snap := busy.Snapshot(); snap.State != stateDraining {
			t.Fatalf("busy state %q", snap.State)
		}
		f1()
		time.Sleep(5 * time.Second)
		busy.AnswerDone("r1", "completed", Tokens{})
		synctest.Wait()
		if !busy.Ended() || busy.Summary().Reason != ReasonShutdown {
			t.Fatal("busy session not closed at its response boundary")
		}
		f2()
		go func() { // the relay exits once its session has ended
			for !stuck.Ended() {
				time.Sleep(100 * time.Millisecond)
			}
			f3()
		}()
		<-done
		if d := time.Since(start); d < 20*time.Second || d > 22*time.Second {
			t.Fatalf("drain took %v, want the 20 s deadline", d)
		}
		if stuck.Summary().Reason != ReasonShutdown {
			t.Fatalf("stuck reason %q", stuck.Summary().Reason)
		}
	})
}

func TestTimeToFirstAudioAndTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hooks := &recHooks{}
		m := NewManager(Options{Hooks: []Hooks{hooks}})
		s, _, finish := open(t, m)
		s.SpeechEnded()
		time.Sleep(200 * time.Millisecond)
		s.AnswerStarted("resp_1")
		time.Sleep(300 * time.Millisecond)
		s.AnswerAudio([]byte("resp_other"))
		s.AnswerAudio([]byte("resp_1"))
		s.AnswerAudio([]byte("resp_1"))
		s.AnswerDone("resp_1", "completed", Tokens{Input: 300, Output: 112, InputText: 120, InputAudio: 180, Cached: 64, OutputText: 25, OutputAudio: 87})
		if s.lastTTFA != 500*time.Millisecond {
			t.Fatalf("ttfa %v, want 500ms from speech_stopped", s.lastTTFA)
		}
		if len(hooks.firstAudio) != 1 || hooks.firstAudio[0] != 500*time.Millisecond {
			t.Fatalf("first audio reported %v, want once at 500ms", hooks.firstAudio)
		}
		if hooks.usage.InputAudio != 180 || hooks.usage.OutputAudio != 87 || hooks.usage.Cached != 64 {
			t.Errorf("usage reported %+v", hooks.usage)
		}
		s.End(ReasonClientClosed)
		finish()
		sum := s.Summary()
		if sum.Tokens.Input != 300 || sum.Tokens.Output != 112 || sum.Responses != 1 {
			t.Fatalf("summary %+v", sum)
		}
	})
}

func TestFatalUpstreamErrorEndsSession(t *testing.T) {
	hooks := &recHooks{}
	m := NewManager(Options{Hooks: []Hooks{hooks}, FatalUpstreamErrors: []string{"session_expired"}})
	s, ft, finish := open(t, m)
	s.UpstreamError("invalid_request_error", "input_audio_buffer_commit_empty")
	if s.Ended() {
		t.Fatal("recoverable error ended the session")
	}
	s.UpstreamError("invalid_request_error", "session_expired")
	finish()
	if s.Summary().Reason != ReasonUpstreamFatalEvent || ft.client.Code != 1014 {
		t.Fatalf("reason %s client %d", s.Summary().Reason, ft.client.Code)
	}
	if len(hooks.errCodes) != 2 || hooks.errCodes[0] != "input_audio_buffer_commit_empty" {
		t.Fatalf("errors reported %v", hooks.errCodes)
	}
}

func TestEndBeforeStartStillShutsTheRelayDown(t *testing.T) {
	m := NewManager(Options{})
	release, _ := m.Reserve()
	s := m.Open(Info{})
	s.End(ReasonShutdown) // e.g. drain began during the handshake
	ft := newFakeTransport()
	s.Start(ft)
	m.Finished(s, release)
	if ft.shutdown != 1 || ft.client.Code != 1001 {
		t.Fatalf("Shutdown calls %d, client close %d", ft.shutdown, ft.client.Code)
	}
}

// A direction runs from its source leg to the other.
func TestDirectionLegs(t *testing.T) {
	for _, tc := range []struct {
		d            Direction
		source, dest Leg
		name         string
	}{
		{ClientToUpstream, Client, Upstream, "client_to_upstream"},
		{UpstreamToClient, Upstream, Client, "upstream_to_client"},
	} {
		if tc.d.Source() != tc.source || tc.d.Dest() != tc.dest || tc.d.String() != tc.name {
			t.Errorf("%v: source %v, dest %v; want %v, %v", tc.d, tc.d.Source(), tc.d.Dest(), tc.source, tc.dest)
		}
	}
}
