// Package bench is tether's load generator (the tether-bench command): open-loop
// WebSocket load through tether (or any proxy in front of tether's mock
// upstream) with the mock's echo fault, round trips measured per frame,
// added latency against a direct baseline measured in the same run, and the
// proxy's own CPU and memory read from /proc.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetherproxy/tether/internal/redact"
	"github.com/tetherproxy/tether/internal/wsframe"
)

// Limits that keep a run bounded.
const (
	MaxSessions   = 50_000
	MaxRate       = 1_000
	MaxFrameBytes = 16 << 20
	MaxDuration   = time.Hour
	MaxRamp       = 10 * time.Minute
	// maxProbeMemory bounds the pre-encoded frames (one per session).
	maxProbeMemory = 1 << 30
)

// Target is one endpoint under load.
type Target struct {
	// Name labels the target in the report (tether, direct, nginx).
	Name string
	// URL is the ws:// URL of the endpoint; it must lead to tether's mock
	// upstream (directly or through a proxy) and be on a loopback address.
	URL string
	// PIDs are processes to measure (with their descendants), e.g. tether's
	// or nginx's master; empty measures nothing.
	PIDs []int
	// Admin is a tether admin address (host:port) for runtime figures, a
	// forced GC before memory readings and the CPU profile; optional.
	Admin string
}

// Options configure a run.
type Options struct {
	// Target is what is measured. With an empty URL, Run starts the mock
	// upstream and tether as child processes (Exe) and measures tether.
	Target Target
	// Baseline, if its URL is set, is a direct connection to the same
	// upstream, measured in the same run; added latency is Target - Baseline.
	// With a local Target and no Baseline URL, the local mock is the baseline
	// unless NoBaseline is set.
	Baseline   Target
	NoBaseline bool
	// Compare are further targets (nginx) measured in the same run; the
	// report gives Target/Compare ratios.
	Compare []Target

	Sessions   int           // per target
	Rate       float64       // probes per second per session; 0 = idle sessions
	FrameBytes int           // probe payload size
	Ramp       time.Duration // connects are spread over it
	Duration   time.Duration // measured time per target
	// Slot is the length of a turn when several targets are measured: slots
	// rotate between targets. 0 runs all targets at once.
	Slot time.Duration
	// LateAfter: a send later than this after its scheduled time is counted late.
	LateAfter time.Duration
	// HandshakeTimeout bounds each session's dial and first event.
	HandshakeTimeout time.Duration
	// Drain is the longest wait for outstanding echoes after the last send.
	Drain time.Duration
	// Exe is the tether binary run for a local target (default: a tether
	// beside this executable, else tether on $PATH).
	Exe string
	// CPUProfile, if set, receives the target's CPU profile over the
	// measurement (needs Target.Admin, known for a local target).
	CPUProfile string
	// Progress receives one line per second; nil prints nothing.
	Progress io.Writer
	// Shape is the load: ShapeRealtime (default: echoed appends, targets in
	// turns) or ShapeLive (GPT-Live calls streaming both ways; targets are
	// measured one after another, since a call never pauses).
	Shape string
	// LiveLate: an output delta this much behind its call's 100 ms grid is
	// counted late (GPT-Live shape; default 20 ms).
	LiveLate time.Duration
}

func (o *Options) defaults() {
	if o.Sessions == 0 {
		o.Sessions = 100
	}
	if o.FrameBytes == 0 {
		o.FrameBytes = DefaultFrameBytes
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.LateAfter == 0 {
		o.LateAfter = time.Millisecond
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Drain == 0 {
		o.Drain = 5 * time.Second
	}
	if o.Target.Name == "" {
		o.Target.Name = "tether"
	}
	if o.Shape == "" {
		o.Shape = ShapeRealtime
	}
	if o.LiveLate == 0 {
		o.LiveLate = 20 * time.Millisecond
	}
	if o.Shape == ShapeLive {
		o.FrameBytes = LiveFrameBytes
	}
	if o.Baseline.Name == "" {
		o.Baseline.Name = "direct"
	}
}

// sendersPerTarget is the number of sender goroutines (shards) per target.
// Few senders batch the sends due at each timer wake-up; more would isolate
// sessions better from a write that blocks. A blocked send shows as late
// sends either way.
const sendersPerTarget = 4

// DefaultFrameBytes is a 20 ms pcm16 append: 1280 base64 characters of
// audio in about 1.35 KB of JSON.
const DefaultFrameBytes = 1350

func (o *Options) validate() error {
	var errs []error
	if o.Shape != ShapeRealtime && o.Shape != ShapeLive {
		errs = append(errs, fmt.Errorf("shape: %q, want %s or %s", o.Shape, ShapeRealtime, ShapeLive))
	}
	if o.Sessions < 1 || o.Sessions > MaxSessions {
		errs = append(errs, fmt.Errorf("sessions: %d, want 1..%d", o.Sessions, MaxSessions))
	}
	if o.Rate < 0 || o.Rate > MaxRate {
		errs = append(errs, fmt.Errorf("rate: %g, want 0..%d frames/s", o.Rate, MaxRate))
	}
	if o.FrameBytes < MinFrameBytes || o.FrameBytes > MaxFrameBytes {
		errs = append(errs, fmt.Errorf("frame size: %d bytes, want %d..%d", o.FrameBytes, MinFrameBytes, MaxFrameBytes))
	}
	if o.Duration <= 0 || o.Duration > MaxDuration {
		errs = append(errs, fmt.Errorf("duration: %s, want up to %s", o.Duration, MaxDuration))
	}
	if o.Ramp < 0 || o.Ramp > MaxRamp {
		errs = append(errs, fmt.Errorf("ramp: %s, want 0..%s", o.Ramp, MaxRamp))
	}
	if o.Slot < 0 {
		errs = append(errs, fmt.Errorf("slot: %s, want >= 0", o.Slot))
	}
	targets := 1 + len(o.Compare)
	if o.Baseline.URL != "" {
		targets++
	}
	if o.Rate > 0 && int64(o.Sessions)*int64(targets)*int64(o.FrameBytes) > maxProbeMemory {
		errs = append(errs, fmt.Errorf("sessions x frame size: over %d MiB of frames; use fewer sessions or smaller frames", maxProbeMemory>>20))
	}
	names := map[string]bool{}
	for _, t := range append([]Target{o.Target, o.Baseline}, o.Compare...) {
		if t.URL == "" {
			continue
		}
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("target name %q used twice", t.Name))
		}
		names[t.Name] = true
		if err := checkLoopback(t.URL); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name, err))
		}
	}
	return errors.Join(errs...)
}

// checkLoopback accepts ws:// URLs on loopback addresses only: the bench
// puts real load on what it targets.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "ws" {
		return fmt.Errorf("url %q: want a ws:// URL", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("url %q: tether-bench only targets loopback addresses (127.0.0.0/8, ::1, localhost)", raw)
	}
	return nil
}

// target is a Target during a run.
type target struct {
	Target
	index    int
	role     string // target | baseline | compare
	stats    *targetStats
	sessions []*session
	admin    *adminClient
	proc     procFigures
}

// milestone names a point of the run where memory is read.
type milestone int

const (
	atBefore    milestone = iota // before any session
	atConnected                  // every session set up, before the measurement
	atEnd                        // after the measurement and the drain
	milestones
)

// procFigures are /proc and runtime readings of a target's processes.
type procFigures struct {
	mem        [milestones]procSample    // memory at each milestone (after a forced GC when possible)
	rt         [milestones]*RuntimeStats // from the admin listener, if any
	start, end procSample                // CPU (and peak RSS) around the measurement
	peakReset  bool                      // VmHWM was reset at the start of the measurement
}

// runner holds the state of one Run.
type runner struct {
	opts    Options
	base    time.Time // clock base of probe timestamps
	start   time.Time // measurement start; written before started is closed
	started chan struct{}
	quit    chan struct{} // closed to stop writers early
	sched   Schedule
	targets []*target
	// upstreamPID is the local mock's process, measured for the report; 0 if unknown.
	upstreamPID int
	// cpu of the load generator (this process) and the local upstream around the measurement.
	selfStart, selfEnd, upStart, upEnd procSample
}

// Run performs one bounded run and returns its report. Cancelling ctx
// stops it early (the report then covers what was measured).
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	o.defaults()
	if err := o.validate(); err != nil { // before starting anything
		return nil, err
	}
	var stack *localStack
	if o.Target.URL == "" {
		var limitNote string
		if stack, limitNote, err = startLocalTether(ctx, &o); err != nil {
			return nil, err
		}
		defer func() {
			if rep != nil {
				if limitNote != "" {
					rep.Notes = append(rep.Notes, limitNote)
				}
				for _, w := range stack.tether.warnings() {
					rep.Notes = append(rep.Notes, "tether logged: "+wsframe.Abbrev(w, 300))
				}
			}
			if cerr := stack.close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
	}
	if err := o.validate(); err != nil { // with the local target and baseline
		return nil, err
	}
	all := o.targets()
	upstreamPID := 0
	if stack != nil {
		upstreamPID = stack.mockPID
	} else if _, err := raiseFileLimit(uint64(2*len(all)*o.Sessions + 1024)); err != nil {
		return nil, fmt.Errorf("raise the open files limit: %w", err)
	}
	if o.Shape != ShapeLive || len(all) == 1 {
		return newRunner(o, upstreamPID, all).run(ctx)
	}
	return runOneByOne(ctx, o, upstreamPID, all)
}

// startLocalTether starts the mock upstream and tether for a run without a
// target URL and points o's target (and its baseline, unless o has one) at
// them. The note, if any, says that the open files limit is too low.
func startLocalTether(ctx context.Context, o *Options) (stack *localStack, limitNote string, err error) {
	exe := o.Exe
	if exe == "" {
		if exe, err = findTether(); err != nil {
			return nil, "", err
		}
	}
	if limitNote, err = raiseLocalFileLimit(o.Sessions); err != nil {
		return nil, "", err
	}
	progress(o.Progress, "starting mock upstream and tether (%s)", exe)
	if stack, err = startLocal(ctx, exe, o.Sessions+64); err != nil {
		return nil, "", err
	}
	stack.mockPID = stack.mock.pid()
	progress(o.Progress, "tether pid %d at %s (admin %s), mock upstream at %s", stack.tether.pid(), redact.URL(stack.URL), stack.Admin, stack.MockURL)
	o.Target.URL = stack.URL
	o.Target.PIDs = []int{stack.tether.pid()}
	o.Target.Admin = stack.Admin
	if o.Baseline.URL == "" && !o.NoBaseline {
		o.Baseline.URL = stack.MockURL
		if o.Shape == ShapeLive {
			o.Baseline.URL = liveURL(stack.MockURL)
		}
	}
	if o.Shape == ShapeLive {
		o.Target.URL = liveURL(stack.URL)
	}
	return stack, limitNote, nil
}

// raiseLocalFileLimit raises the open files limit for this process and a
// local tether of that many sessions; the note says how many sessions fit
// when the hard limit keeps it too low.
func raiseLocalFileLimit(sessions int) (note string, err error) {
	limit, err := raiseFileLimit(uint64(8*sessions + 1024))
	if err != nil {
		return "", fmt.Errorf("raise the open files limit: %w", err)
	}
	if need := uint64(2*sessions + 64); limit < need {
		note = fmt.Sprintf("the open files limit is %d (the hard limit could not be raised): tether needs two per session, so about %d sessions fit", limit, (limit-32)/2)
	}
	return note, nil
}

// targets lists the targets of a run in report order: the target, the
// baseline (if any), then the other proxies.
func (o *Options) targets() []target {
	all := []target{{Target: o.Target, role: "target"}}
	if o.Baseline.URL != "" {
		all = append(all, target{Target: o.Baseline, role: "baseline"})
	}
	for _, c := range o.Compare {
		all = append(all, target{Target: c, role: "compare"})
	}
	return all
}

// newRunner prepares a run that measures ts.
func newRunner(o Options, upstreamPID int, ts []target) *runner {
	r := &runner{opts: o, started: make(chan struct{}), quit: make(chan struct{}), upstreamPID: upstreamPID}
	for j, t := range ts {
		tg := &target{Target: t.Target, index: j, role: t.role, stats: newTargetStats()}
		if o.Shape == ShapeLive {
			tg.stats.live = newLiveStats()
		}
		if t.Admin != "" {
			tg.admin = newAdminClient(t.Admin)
		}
		r.targets = append(r.targets, tg)
	}
	return r
}

// runOneByOne gives each target the whole load in turn, one after another,
// and merges their reports: GPT-Live calls never pause, so targets cannot
// take turns.
func runOneByOne(ctx context.Context, o Options, upstreamPID int, all []target) (*Report, error) {
	var merged *Report
	for i := range all {
		progress(o.Progress, "GPT-Live shape: target %d of %d, %s", i+1, len(all), all[i].Name)
		rep, err := newRunner(o, upstreamPID, all[i:i+1]).run(ctx)
		if err != nil {
			return nil, err
		}
		merged = merged.merge(rep)
		if ctx.Err() != nil {
			break
		}
	}
	merged.compare(o)
	return merged, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "bench: "+format+"\n", args...)
	}
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	o := r.opts
	rep := &Report{LoadAvgStart: loadAvg()}
	r.readProcs(ctx, atBefore)

	connectCtx, cancelConnect := context.WithCancel(ctx)
	defer cancelConnect()
	var wg sync.WaitGroup
	interval := time.Second
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	dialer := r.connect(connectCtx, &wg, interval)
	r.waitConnected(ctx, dialer)
	rep.ConnectTime = time.Since(r.base)

	r.readProcs(ctx, atConnected)
	r.schedule(interval)
	r.sampleTargetsAtStart()
	if o.Rate > 0 {
		r.startSenders(&wg)
	}
	r.selfStart, r.upStart = r.sampleGenerator()
	r.start = time.Now()
	close(r.started)
	profDone := r.startProfile(ctx)
	r.measure(ctx)
	if o.Rate > 0 {
		r.drain(ctx)
	}
	r.sampleTargetsAtEnd()
	r.selfEnd, r.upEnd = r.sampleGenerator()
	measured := time.Since(r.start)
	r.readProcs(ctx, atEnd)
	rep.LoadAvgEnd = loadAvg()
	if profDone != nil {
		r.noteProfile(rep, <-profDone)
	}

	close(r.quit)
	cancelConnect()
	<-dialer
	r.closeSessions()
	wg.Wait()
	return r.report(rep, measured), nil
}

// connect opens every session, open-loop too: spread over the ramp, targets
// interleaved. The channel it returns is closed when every session has
// been dialed or, once ctx is done, marked failed.
func (r *runner) connect(ctx context.Context, wg *sync.WaitGroup, interval time.Duration) <-chan struct{} {
	o := r.opts
	r.base = time.Now()
	total := len(r.targets) * o.Sessions
	for _, t := range r.targets {
		t.sessions = make([]*session, o.Sessions)
		for i := range t.sessions {
			t.sessions[i] = &session{r: r, tgt: t, phase: Phase(i, o.Sessions, interval), up: make(chan struct{})}
		}
	}
	progress(o.Progress, "connecting %d sessions to %s over %s", total, r.names(), o.Ramp)
	dialer := make(chan struct{})
	go func() {
		defer close(dialer)
		for i := range total {
			at := r.base.Add(time.Duration(int64(o.Ramp) * int64(i) / int64(total)))
			if !sleepUntil(ctx, at) {
				// Sessions never dialed still count as set up (failed).
				for j := i; j < total; j++ {
					s := r.dialed(j)
					s.upOK = false
					close(s.up)
				}
				return
			}
			s := r.dialed(i)
			wg.Go(func() { s.run(ctx) })
		}
	}()
	return dialer
}

// dialed is the i-th session to dial (the targets take turns).
func (r *runner) dialed(i int) *session {
	k := len(r.targets)
	return r.targets[i%k].sessions[i/k]
}

// schedule sets the schedule of the measurement and the slot and duration
// per target it rounds them to.
func (r *runner) schedule(interval time.Duration) {
	o := r.opts
	r.sched = turns(interval, len(r.targets), o.Slot, o.Duration, o.Rate > 0)
	r.opts.Slot, r.opts.Duration = r.sched.Slot, r.sched.End/time.Duration(max(r.sched.Targets, 1))
	if r.sched.Slot == 0 {
		r.opts.Duration = r.sched.End
	}
}

// sampleTargetsAtStart resets the peak RSS of the measured processes and
// reads their CPU as the measurement starts.
func (r *runner) sampleTargetsAtStart() {
	for _, t := range r.targets {
		if len(t.PIDs) > 0 {
			t.proc.peakReset = resetPeak(t.PIDs)
			if s, err := sampleProcs(t.PIDs); err == nil {
				t.proc.start = s
			}
		}
	}
}

// sampleTargetsAtEnd reads the CPU (and peak RSS) of the measured processes
// as the measurement ends.
func (r *runner) sampleTargetsAtEnd() {
	for _, t := range r.targets {
		if len(t.PIDs) > 0 {
			t.proc.end, _ = sampleProcs(t.PIDs)
		}
	}
}

// sampleGenerator reads the CPU of the load generator (this process) and of
// the local upstream, if known.
func (r *runner) sampleGenerator() (self, upstream procSample) {
	self, _ = sampleSelf()
	if r.upstreamPID != 0 {
		upstream, _ = sampleProcs([]int{r.upstreamPID})
	}
	return self, upstream
}

func (r *runner) startSenders(wg *sync.WaitGroup) {
	for _, t := range r.targets {
		for _, sh := range r.shards(t, sendersPerTarget) {
			wg.Go(sh.run)
		}
	}
}

// noteProfile notes in rep where the CPU profile went, or why it did not.
func (r *runner) noteProfile(rep *Report, err error) {
	if err != nil {
		rep.Notes = append(rep.Notes, "cpu profile: "+err.Error())
	} else {
		rep.Notes = append(rep.Notes, "cpu profile of "+r.targets[0].Name+" written to "+r.opts.CPUProfile)
	}
}

// closeSessions closes every session that was set up, once all were dialed.
func (r *runner) closeSessions() {
	for _, t := range r.targets {
		for _, s := range t.sessions {
			<-s.up
			if s.upOK {
				s.close(2 * time.Second)
			}
		}
	}
}

func (r *runner) names() string {
	var n []string
	for _, t := range r.targets {
		n = append(n, t.Name)
	}
	return strings.Join(n, ", ")
}

// readProcs reads each measured target's memory at milestone m: with an
// admin address, after a forced GC (so the figure does not depend on where
// the collector happens to be), with its runtime gauges.
func (r *runner) readProcs(ctx context.Context, m milestone) {
	for _, t := range r.targets {
		if t.admin != nil {
			if t.admin.gc(ctx) == nil {
				time.Sleep(200 * time.Millisecond) // let the sweep and scavenger settle
			}
			if s, err := t.admin.runtimeStats(ctx); err == nil {
				t.proc.rt[m] = &s
			}
		}
		if len(t.PIDs) > 0 {
			t.proc.mem[m], _ = sampleProcs(t.PIDs)
		}
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// turns builds the schedule of a run. With several targets taking turns, a
// slot is rounded up to whole send intervals (so that every slot holds the
// same number of sends of each session, and no target's slots miss the
// ticks) and the duration to whole slots (so that every target gets the same
// time).
func turns(interval time.Duration, targets int, slot, duration time.Duration, load bool) Schedule {
	if !load {
		return Schedule{Targets: targets, End: duration}
	}
	if slot <= 0 || targets <= 1 {
		return Schedule{Interval: interval, Targets: targets, End: duration}
	}
	slot = (slot + interval - 1) / interval * interval
	per := (duration + slot - 1) / slot * slot
	return Schedule{Interval: interval, Targets: targets, Slot: slot, End: time.Duration(targets) * per}
}

// waitConnected waits until every session is set up or failed, printing progress.
func (r *runner) waitConnected(ctx context.Context, dialer <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	all := make(chan struct{})
	go func() {
		<-dialer
		for _, t := range r.targets {
			for _, s := range t.sessions {
				<-s.up
			}
		}
		close(all)
	}()
	for {
		select {
		case <-all:
			r.connectLine()
			return
		case <-tick.C:
			r.connectLine()
		case <-ctx.Done():
			<-all // the dialer and the dials stop on ctx
			return
		}
	}
}

func (r *runner) connectLine() {
	if r.opts.Progress == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%6.1fs] connect", time.Since(r.base).Seconds())
	for _, t := range r.targets {
		e, _ := t.stats.errors()
		fmt.Fprintf(&b, " | %s %d/%d up, %d failed, %d errors", t.Name, t.stats.connected.Load(), r.opts.Sessions, t.stats.failed.Load(), e)
	}
	fmt.Fprintln(r.opts.Progress, b.String())
}

// measure runs the schedule to its end, printing a progress line per second.
func (r *runner) measure(ctx context.Context) {
	o := r.opts
	end := r.start.Add(r.sched.End)
	if o.Rate == 0 {
		end = r.start.Add(o.Duration)
	}
	progress(o.Progress, "measuring for %s (%s)", end.Sub(r.start).Round(time.Millisecond), r.describeSchedule())
	prev := make([]*Snapshot, len(r.targets))
	prevSent := make([]uint64, len(r.targets))
	prevRecv := make([]uint64, len(r.targets))
	prevCPU := make([]procSample, len(r.targets))
	for i, t := range r.targets {
		prev[i] = t.stats.rtt.Snapshot()
		prevCPU[i] = t.proc.start
	}
	last := r.start
	for next := r.start.Add(time.Second); ; next = next.Add(time.Second) {
		stop := !next.Before(end)
		at := next
		if stop {
			at = end
		}
		if !sleepUntil(ctx, at) {
			return
		}
		now := time.Now()
		secs := now.Sub(last).Seconds()
		prevAt := last.Sub(r.start)
		last = now
		if o.Progress != nil {
			var b strings.Builder
			fmt.Fprintf(&b, "[%6.1fs]", now.Sub(r.start).Seconds())
			if a := r.sched.Active((now.Sub(r.start) + prevAt) / 2); o.Rate > 0 && o.Slot > 0 && len(r.targets) > 1 && a >= 0 {
				fmt.Fprintf(&b, " turn %-8s", r.targets[a].Name)
			}
			for i, t := range r.targets {
				snap := t.stats.rtt.Snapshot()
				win := snap.Sub(prev[i])
				prev[i] = snap
				sent, recv := t.stats.sent.Load(), t.stats.recv.Load()
				e, _ := t.stats.errors()
				fmt.Fprintf(&b, " | %s up %d", t.Name, t.stats.connected.Load()-t.stats.dropped.Load())
				if o.Rate > 0 {
					fmt.Fprintf(&b, " tx %.0f/s rx %.0f/s p50 %s p99 %s late %d",
						float64(sent-prevSent[i])/secs, float64(recv-prevRecv[i])/secs,
						fmtDur(win.Quantile(0.5)), fmtDur(win.Quantile(0.99)), t.stats.late.Load())
				}
				fmt.Fprintf(&b, " err %d", e)
				prevSent[i], prevRecv[i] = sent, recv
				if len(t.PIDs) > 0 {
					if s, err := sampleProcs(t.PIDs); err == nil {
						cpu := float64(s.CPUTicks-prevCPU[i].CPUTicks) / clockTicks / secs * 100
						fmt.Fprintf(&b, " cpu %.0f%% rss %.1fMiB", cpu, float64(s.RSSKiB)/1024)
						prevCPU[i] = s
					}
				}
			}
			fmt.Fprintln(o.Progress, b.String())
		}
		if stop {
			return
		}
	}
}

func (r *runner) describeSchedule() string {
	o := r.opts
	if o.Rate == 0 {
		return "idle sessions"
	}
	s := fmt.Sprintf("%d sessions x %g frames/s x %d B per target", o.Sessions, o.Rate, o.FrameBytes)
	if len(r.targets) > 1 {
		if o.Slot > 0 {
			s += fmt.Sprintf(", turns of %s", o.Slot)
		} else {
			s += ", all targets at once"
		}
	}
	return s
}

// drain waits until every sent probe came back (GPT-Live: every whole
// window of appends was transcribed), or Drain passes.
func (r *runner) drain(ctx context.Context) {
	deadline := time.Now().Add(r.opts.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		for _, t := range r.targets {
			if t.stats.live != nil {
				for _, s := range t.sessions {
					if s.live != nil && !s.liveHeard() {
						done = false
						break
					}
				}
			} else if t.stats.recv.Load() < t.stats.sent.Load() {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startProfile fetches the target's CPU profile over the measurement.
func (r *runner) startProfile(ctx context.Context) <-chan error {
	t := r.targets[0]
	if r.opts.CPUProfile == "" || t.role != "target" {
		return nil
	}
	done := make(chan error, 1)
	if t.admin == nil {
		done <- errors.New("no admin address for " + t.Name)
		return done
	}
	d := r.sched.End
	if r.opts.Rate == 0 {
		d = r.opts.Duration
	}
	go func() { done <- t.admin.cpuProfile(ctx, d, r.opts.CPUProfile) }()
	return done
}

// sortedKinds lists error kinds, most frequent first.
func sortedKinds(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}
