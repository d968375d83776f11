package bench

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/tetherproxy/tether/internal/redact"
)

// Report is the outcome of a run; it marshals to the --json output.
type Report struct {
	Config          ConfigReport   `json:"config"`
	LoadAvgStart    float64        `json:"loadavg_1m_start"`
	LoadAvgEnd      float64        `json:"loadavg_1m_end"`
	ConnectTime     time.Duration  `json:"-"`
	ConnectSeconds  float64        `json:"connect_seconds"`
	MeasuredSeconds float64        `json:"measured_seconds"`
	Targets         []TargetReport `json:"targets"`
	// GeneratorCPUSeconds is the load generator's (this process's) CPU
	// time over the measurement; UpstreamCPUSeconds the local mock's, when
	// bench started it. With the targets' they show how busy the machine was.
	GeneratorCPUSeconds float64 `json:"generator_cpu_seconds"`
	UpstreamCPUSeconds  float64 `json:"upstream_cpu_seconds,omitempty"`
	Ratios              []Ratio `json:"ratios,omitempty"`
	// Best compares the target with the best of the other proxies, metric by
	// metric (the better C proxy: nginx or HAProxy).
	Best  *Ratio   `json:"best,omitempty"`
	Notes []string `json:"notes,omitempty"`
	cdfs  map[string][]CDFPoint
	snaps map[string]*Snapshot
}

// ConfigReport echoes the load.
type ConfigReport struct {
	Sessions        int     `json:"sessions_per_target"`
	Rate            float64 `json:"frames_per_second_per_session"`
	FrameBytes      int     `json:"frame_payload_bytes"`
	RampSeconds     float64 `json:"ramp_seconds"`
	DurationSeconds float64 `json:"duration_seconds_per_target"`
	SlotSeconds     float64 `json:"slot_seconds"`
	LateAfterMs     float64 `json:"late_after_ms"`
	CPUs            int     `json:"cpus"`
	Shape           string  `json:"shape"`
	// Sequential: targets were measured one after another (GPT-Live shape).
	Sequential bool `json:"sequential,omitempty"`
}

// Latency summarises a distribution, in microseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

func latencyOf(s *Snapshot) Latency {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Latency{Count: s.Count, Mean: us(s.Mean()), P50: us(s.Quantile(0.5)), P90: us(s.Quantile(0.9)),
		P99: us(s.Quantile(0.99)), P999: us(s.Quantile(0.999)), Max: us(s.Max)}
}

// TargetReport is what one target did.
type TargetReport struct {
	Name              string            `json:"name"`
	URL               string            `json:"url"`
	Role              string            `json:"role"`
	Sessions          int               `json:"sessions"`
	Connected         int64             `json:"connected"`
	ConnectFailed     int64             `json:"connect_failed"`
	Dropped           int64             `json:"dropped"`
	ConnectsPerSecond float64           `json:"connects_per_second"`
	Connect           Latency           `json:"connect"`
	Setup             Latency           `json:"setup"`
	FramesSent        uint64            `json:"frames_sent"`
	FramesReceived    uint64            `json:"frames_received"`
	BytesSent         uint64            `json:"bytes_sent"`
	BytesReceived     uint64            `json:"bytes_received"`
	Lost              uint64            `json:"frames_lost"`
	LateSends         uint64            `json:"late_sends"`
	Lateness          Latency           `json:"send_lateness"`
	Errors            uint64            `json:"errors"`
	ErrorKinds        map[string]uint64 `json:"error_kinds,omitempty"`
	RTT               Latency           `json:"rtt"`
	Added             *Added            `json:"added,omitempty"`
	Process           *Process          `json:"process,omitempty"`
	Live              *LiveFigures      `json:"live,omitempty"`
}

// Added is the latency a target adds over the baseline, in microseconds:
// the difference of the two distributions' percentiles.
type Added struct {
	P50      float64 `json:"p50_us"`
	P90      float64 `json:"p90_us"`
	P99      float64 `json:"p99_us"`
	P999     float64 `json:"p999_us"`
	SetupP50 float64 `json:"setup_p50_us"`
	SetupP99 float64 `json:"setup_p99_us"`
	// DeltaP50 and DeltaP99 are the added lateness of GPT-Live output deltas.
	DeltaP50 float64 `json:"delta_lateness_p50_us,omitempty"`
	DeltaP99 float64 `json:"delta_lateness_p99_us,omitempty"`
}

// Process holds /proc figures of a target's processes.
type Process struct {
	PIDs            []int   `json:"pids"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPercent      float64 `json:"cpu_percent"`
	RelayedMB       float64 `json:"relayed_mb"`
	CPUSecondsPerMB float64 `json:"cpu_seconds_per_mb"`
	// ReadCallsPerFrame and WriteCallsPerFrame are the read(v) and
	// write(v) system calls per relayed frame (both directions), from
	// /proc/<pid>/io; Linux does not count recv/send there, so they are 0
	// for a process that uses those (nginx).
	ReadCallsPerFrame  float64 `json:"read_syscalls_per_frame,omitempty"`
	WriteCallsPerFrame float64 `json:"write_syscalls_per_frame,omitempty"`
	RSSBeforeKiB       uint64  `json:"rss_before_kib"`
	RSSConnectedKiB    uint64  `json:"rss_connected_kib"`
	RSSEndKiB          uint64  `json:"rss_end_kib"`
	// RSSPeakKiB is the peak during the measurement (VmHWM reset at its
	// start), or 0 when it could not be reset.
	RSSPeakKiB uint64 `json:"rss_peak_kib,omitempty"`
	// PeakGrowthKiB is RSSPeakKiB minus the RSS at the start of the measurement.
	PeakGrowthKiB       int64    `json:"peak_growth_kib,omitempty"`
	RSSPerSessionKiB    float64  `json:"rss_per_session_kib"`
	RSSPerSessionEndKiB float64  `json:"rss_per_session_end_kib"`
	Runtime             *Runtime `json:"runtime,omitempty"`
}

// Runtime holds Go runtime figures per session (connected minus before),
// from the admin listener after a forced GC.
type Runtime struct {
	GoroutinesPerSession float64 `json:"goroutines_per_session"`
	HeapPerSessionKiB    float64 `json:"heap_inuse_per_session_kib"`
	StackPerSessionKiB   float64 `json:"stack_inuse_per_session_kib"`
}

// Ratio compares the target with another proxy: values below 1 mean the
// target does better. A ratio is omitted when its denominator is not positive.
type Ratio struct {
	Of       string   `json:"of"`
	To       string   `json:"to"`
	AddedP50 *float64 `json:"added_p50,omitempty"`
	AddedP99 *float64 `json:"added_p99,omitempty"`
	CPUPerMB *float64 `json:"cpu_per_mb,omitempty"`
	// CPUPerCallSecond compares CPU per call-second (GPT-Live shape).
	CPUPerCallSecond *float64 `json:"cpu_per_call_second,omitempty"`
	// For Best: which proxy was the better one for each metric.
	AddedP50Of         string `json:"added_p50_of,omitempty"`
	AddedP99Of         string `json:"added_p99_of,omitempty"`
	CPUPerMBOf         string `json:"cpu_per_mb_of,omitempty"`
	CPUPerCallSecondOf string `json:"cpu_per_call_second_of,omitempty"`
}

func ratio(a, b float64) *float64 {
	if b <= 0 || math.IsNaN(a) {
		return nil
	}
	v := a / b
	return &v
}

// report builds the Report from the run's counters.
func (r *runner) report(rep *Report, measured time.Duration) *Report {
	o := r.opts
	rep.Config = ConfigReport{Sessions: o.Sessions, Rate: o.Rate, FrameBytes: o.FrameBytes,
		RampSeconds: o.Ramp.Seconds(), DurationSeconds: o.Duration.Seconds(), SlotSeconds: o.Slot.Seconds(),
		LateAfterMs: float64(o.LateAfter) / float64(time.Millisecond), CPUs: runtime.NumCPU(), Shape: o.Shape}
	rep.ConnectSeconds = rep.ConnectTime.Seconds()
	rep.MeasuredSeconds = measured.Seconds()
	cpu := func(a, b procSample) float64 {
		if a.PIDs == nil || b.PIDs == nil || b.CPUTicks < a.CPUTicks {
			return 0
		}
		return float64(b.CPUTicks-a.CPUTicks) / clockTicks
	}
	rep.GeneratorCPUSeconds = cpu(r.selfStart, r.selfEnd)
	rep.UpstreamCPUSeconds = cpu(r.upStart, r.upEnd)
	rep.cdfs = map[string][]CDFPoint{}
	rep.snaps = map[string]*Snapshot{}
	for _, t := range r.targets {
		st := t.stats
		rtt := st.rtt.Snapshot()
		tr := TargetReport{Name: t.Name, URL: redact.URL(t.URL), Role: t.role, Sessions: o.Sessions,
			Connected: st.connected.Load(), ConnectFailed: st.failed.Load(), Dropped: st.dropped.Load(),
			Connect: latencyOf(st.connect.Snapshot()), Setup: latencyOf(st.setup.Snapshot()),
			FramesSent: st.sent.Load(), FramesReceived: st.recv.Load(),
			BytesSent: st.sentBytes.Load(), BytesReceived: st.recvBytes.Load(),
			LateSends: st.late.Load(), Lateness: latencyOf(st.lateness.Snapshot()), RTT: latencyOf(rtt)}
		tr.Lost = tr.FramesSent - min(tr.FramesSent, tr.FramesReceived)
		tr.Errors, tr.ErrorKinds = st.errors()
		if first, last := st.firstDial.Load(), st.lastUp.Load(); first >= 0 && last > first && tr.Connected > 0 {
			tr.ConnectsPerSecond = float64(tr.Connected) / time.Duration(last-first).Seconds()
		}
		tr.Process = t.process(int(tr.Connected), tr.BytesSent+tr.BytesReceived, o.Rate > 0)
		if pr := tr.Process; pr != nil && o.Rate > 0 {
			if frames := float64(tr.FramesSent + tr.FramesReceived); frames > 0 && t.proc.end.SyscR > 0 {
				pr.ReadCallsPerFrame = float64(t.proc.end.SyscR-min(t.proc.end.SyscR, t.proc.start.SyscR)) / frames
				pr.WriteCallsPerFrame = float64(t.proc.end.SyscW-min(t.proc.end.SyscW, t.proc.start.SyscW)) / frames
			}
		}
		if st.live != nil {
			tr.Live = t.liveFigures(o, tr.Connected, measured, tr.Process)
			tr.Lost = tr.Live.DeltasLost + tr.Live.AppendsLost
			tr.LateSends += 0 // uplink sends behind schedule stay in LateSends
		}
		rep.cdfs[t.Name] = rtt.CDF()
		rep.snaps[t.Name] = rtt
		rep.Targets = append(rep.Targets, tr)
	}
	rep.compare(o)
	for _, tr := range rep.Targets {
		if tr.Process != nil && tr.Process.RSSPeakKiB == 0 && o.Rate > 0 {
			rep.Notes = append(rep.Notes, tr.Name+": peak RSS not measured (VmHWM could not be reset)")
		}
	}
	return rep
}

// merge appends the targets of a run measured after rep's (the GPT-Live
// shape measures one target after another); a nil rep takes next as is.
func (rep *Report) merge(next *Report) *Report {
	if rep == nil {
		next.Config.Sequential = true
		return next
	}
	rep.LoadAvgEnd = next.LoadAvgEnd
	rep.ConnectTime += next.ConnectTime
	rep.ConnectSeconds += next.ConnectSeconds
	rep.MeasuredSeconds += next.MeasuredSeconds
	rep.GeneratorCPUSeconds += next.GeneratorCPUSeconds
	rep.UpstreamCPUSeconds += next.UpstreamCPUSeconds
	rep.Targets = append(rep.Targets, next.Targets...)
	rep.Notes = append(rep.Notes, next.Notes...)
	for k, v := range next.cdfs {
		rep.cdfs[k] = v
	}
	for k, v := range next.snaps {
		rep.snaps[k] = v
	}
	return rep
}

// compare fills in the added latency of every target over the baseline, the
// ratios of the target to each other proxy and to the best of them.
func (rep *Report) compare(o Options) {
	rep.Ratios, rep.Best = nil, nil
	if base := rep.baseline(); base != nil && base.Connected > 0 {
		rep.fillAdded(base, o.Rate > 0)
	}
	main := &rep.Targets[0]
	for i := range rep.Targets {
		if c := &rep.Targets[i]; c.Role == "compare" {
			rep.Ratios = append(rep.Ratios, ratioTo(main, c))
		}
	}
	if len(rep.Ratios) >= 2 {
		rep.Best = rep.bestRatio(main)
	}
}

// baseline is the (last) target of role baseline, or nil.
func (rep *Report) baseline() *TargetReport {
	var base *TargetReport
	for i := range rep.Targets {
		if rep.Targets[i].Role == "baseline" {
			base = &rep.Targets[i]
		}
	}
	return base
}

// fillAdded fills in the latency each target adds over base; under load, only
// where both have round trips.
func (rep *Report) fillAdded(base *TargetReport, load bool) {
	for i := range rep.Targets {
		tr := &rep.Targets[i]
		if tr.Role == "baseline" || tr.Connected == 0 || (load && (tr.RTT.Count == 0 || base.RTT.Count == 0)) {
			continue
		}
		tr.Added = &Added{
			P50: tr.RTT.P50 - base.RTT.P50, P90: tr.RTT.P90 - base.RTT.P90,
			P99: tr.RTT.P99 - base.RTT.P99, P999: tr.RTT.P999 - base.RTT.P999,
			SetupP50: tr.Setup.P50 - base.Setup.P50, SetupP99: tr.Setup.P99 - base.Setup.P99,
		}
		if tr.Live != nil && base.Live != nil {
			tr.Added.DeltaP50 = tr.Live.Lateness.P50 - base.Live.Lateness.P50
			tr.Added.DeltaP99 = tr.Live.Lateness.P99 - base.Live.Lateness.P99
		}
	}
}

// ratioTo compares main with the other proxy c.
func ratioTo(main, c *TargetReport) Ratio {
	ra := Ratio{Of: main.Name, To: c.Name}
	if main.Added != nil && c.Added != nil {
		ra.AddedP50 = ratio(main.Added.P50, c.Added.P50)
		ra.AddedP99 = ratio(main.Added.P99, c.Added.P99)
	}
	if main.Process != nil && c.Process != nil {
		ra.CPUPerMB = ratio(main.Process.CPUSecondsPerMB, c.Process.CPUSecondsPerMB)
	}
	if main.Live != nil && c.Live != nil {
		ra.CPUPerCallSecond = ratio(main.Live.CPUMsPerCallSecond, c.Live.CPUMsPerCallSecond)
	}
	return ra
}

// bestRatio compares main with the best other proxy, metric by metric.
func (rep *Report) bestRatio(main *TargetReport) *Ratio {
	best := &Ratio{Of: main.Name, To: "best"}
	if main.Added != nil {
		best.AddedP50, best.AddedP50Of = rep.bestOf(addedVal(func(a *Added) float64 { return a.P50 }), main.Added.P50)
		best.AddedP99, best.AddedP99Of = rep.bestOf(addedVal(func(a *Added) float64 { return a.P99 }), main.Added.P99)
	}
	if main.Process != nil {
		best.CPUPerMB, best.CPUPerMBOf = rep.bestOf(func(t *TargetReport) (float64, bool) {
			return procVal(t, func(p *Process) float64 { return p.CPUSecondsPerMB })
		}, main.Process.CPUSecondsPerMB)
	}
	if main.Live != nil && main.Process != nil {
		best.CPUPerCallSecond, best.CPUPerCallSecondOf = rep.bestOf(func(t *TargetReport) (float64, bool) {
			if t.Live == nil || t.Process == nil {
				return 0, false
			}
			return t.Live.CPUMsPerCallSecond, true
		}, main.Live.CPUMsPerCallSecond)
	}
	return best
}

// bestOf is the ratio of mine to the lowest val of the other proxies, and
// the name of the proxy with it; nil and "" when none has a val.
func (rep *Report) bestOf(val func(t *TargetReport) (float64, bool), mine float64) (*float64, string) {
	var bv float64
	var bn string
	for i := range rep.Targets {
		c := &rep.Targets[i]
		if c.Role != "compare" {
			continue
		}
		if v, ok := val(c); ok && (bn == "" || v < bv) {
			bv, bn = v, c.Name
		}
	}
	if bn == "" {
		return nil, ""
	}
	return ratio(mine, bv), bn
}

// addedVal picks a figure of a target's added latency, if it has one.
func addedVal(f func(a *Added) float64) func(t *TargetReport) (float64, bool) {
	return func(t *TargetReport) (float64, bool) {
		if t.Added == nil {
			return 0, false
		}
		return f(t.Added), true
	}
}

func procVal(t *TargetReport, f func(p *Process) float64) (float64, bool) {
	if t.Process == nil {
		return 0, false
	}
	return f(t.Process), true
}

// process computes the /proc figures of t, or nil when it has no processes.
func (t *target) process(sessions int, relayed uint64, load bool) *Process {
	p := &t.proc
	if len(t.PIDs) == 0 || p.mem[atBefore].PIDs == nil || p.end.PIDs == nil {
		return nil
	}
	ticks := float64(p.end.CPUTicks-min(p.end.CPUTicks, p.start.CPUTicks)) / clockTicks
	pr := &Process{PIDs: p.end.PIDs, CPUSeconds: ticks, RelayedMB: float64(relayed) / 1e6,
		RSSBeforeKiB: p.mem[atBefore].RSSKiB, RSSConnectedKiB: p.mem[atConnected].RSSKiB, RSSEndKiB: p.mem[atEnd].RSSKiB}
	if pr.RelayedMB > 0 && load {
		pr.CPUSecondsPerMB = pr.CPUSeconds / pr.RelayedMB
	}
	if p.peakReset {
		pr.RSSPeakKiB = p.end.HWMKiB
		pr.PeakGrowthKiB = int64(p.end.HWMKiB) - int64(p.start.RSSKiB)
	}
	n := float64(max(sessions, 1)) // per session that was up
	pr.RSSPerSessionKiB = (float64(pr.RSSConnectedKiB) - float64(pr.RSSBeforeKiB)) / n
	pr.RSSPerSessionEndKiB = (float64(pr.RSSEndKiB) - float64(pr.RSSBeforeKiB)) / n
	if b, c := p.rt[atBefore], p.rt[atConnected]; b != nil && c != nil {
		pr.Runtime = &Runtime{
			GoroutinesPerSession: (c.Goroutines - b.Goroutines) / n,
			HeapPerSessionKiB:    (c.HeapInuseBytes - b.HeapInuseBytes) / 1024 / n,
			StackPerSessionKiB:   (c.StackInuse - b.StackInuse) / 1024 / n,
		}
	}
	return pr
}

// fmtDur prints a duration with three significant digits in a fitting unit.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// fmtUS prints microseconds (possibly negative) like fmtDur.
func fmtUS(us float64) string {
	if us < 0 {
		return "-" + fmtDur(time.Duration(-us*1e3))
	}
	return fmtDur(time.Duration(us * 1e3))
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

// WriteText prints the report as a table, one column per target.
func (rep *Report) WriteText(w io.Writer) error {
	c := rep.Config
	rep.writeHeading(w)
	if err := rep.writeTable(w); err != nil {
		return err
	}
	if c.Shape == ShapeLive && c.Rate > 0 {
		fmt.Fprintln(w, "\nrtt: the append that completes a 200 ms window -> the mock's input transcript of it; down: output deltas against each call's 100 ms grid")
	}
	fmt.Fprintf(w, "\nmeasured %.1fs; load generator cpu %.2fs", rep.MeasuredSeconds, rep.GeneratorCPUSeconds)
	if rep.UpstreamCPUSeconds > 0 {
		fmt.Fprintf(w, ", mock upstream cpu %.2fs", rep.UpstreamCPUSeconds)
	}
	fmt.Fprintln(w)
	rep.writeRatios(w)
	for _, t := range rep.Targets {
		for _, k := range sortedKinds(t.ErrorKinds) {
			fmt.Fprintf(w, "%s error: %s x%d\n", t.Name, k, t.ErrorKinds[k])
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
	_, err := fmt.Fprintln(w)
	return err
}

// writeHeading prints the line that says what load the run put on the targets.
func (rep *Report) writeHeading(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "\ntether-bench: %d sessions per target", c.Sessions)
	if c.Shape == ShapeLive && c.Rate > 0 {
		fmt.Fprintf(w, ", GPT-Live shape (%g appends/s x %d B up, the mock's 100 ms output deltas down, continuous)", c.Rate, c.FrameBytes)
	} else if c.Rate > 0 {
		fmt.Fprintf(w, " x %g frames/s x %d B each way", c.Rate, c.FrameBytes)
	} else {
		fmt.Fprint(w, ", idle")
	}
	fmt.Fprintf(w, "; ramp %gs, %gs per target", c.RampSeconds, c.DurationSeconds)
	if c.Sequential {
		fmt.Fprint(w, ", targets one after another")
	} else if len(rep.Targets) > 1 && c.Rate > 0 {
		if c.SlotSeconds > 0 {
			fmt.Fprintf(w, " in turns of %gs", c.SlotSeconds)
		} else {
			fmt.Fprint(w, ", all at once")
		}
	}
	fmt.Fprintf(w, "; %d CPUs, load average %.2f -> %.2f\n\n", c.CPUs, rep.LoadAvgStart, rep.LoadAvgEnd)
}

// writeTable prints the figures of the targets, one row per figure.
func (rep *Report) writeTable(w io.Writer) error {
	c := rep.Config
	tab := &textTable{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight), targets: rep.Targets}
	tab.row("", func(t *TargetReport) string { return t.Name })
	tab.row("sessions up", func(t *TargetReport) string { return fmt.Sprintf("%d/%d", t.Connected, t.Sessions) })
	tab.row("connects/s", func(t *TargetReport) string { return fmt.Sprintf("%.0f", t.ConnectsPerSecond) })
	tab.row("setup p50", func(t *TargetReport) string { return fmtUS(t.Setup.P50) })
	tab.row("setup p99", func(t *TargetReport) string { return fmtUS(t.Setup.P99) })
	if c.Rate > 0 {
		tab.frameRows(c.LateAfterMs)
	}
	tab.row("errors", func(t *TargetReport) string { return fmt.Sprint(t.Errors) })
	if tab.anyTarget(func(t *TargetReport) bool { return t.Live != nil }) {
		tab.liveRows()
	}
	if c.Rate > 0 {
		tab.rttRows()
	}
	if tab.anyTarget(func(t *TargetReport) bool { return t.Added != nil }) {
		tab.addedRows(c)
	}
	if tab.anyTarget(func(t *TargetReport) bool { return t.Process != nil }) {
		tab.processRows(c)
	}
	return tab.tw.Flush()
}

// writeRatios prints the ratios of the target to each other proxy and to
// the best of them.
func (rep *Report) writeRatios(w io.Writer) {
	for _, ra := range rep.Ratios {
		fmt.Fprintf(w, "\n%s/%s: added p50 %s, added p99 %s, cpu per MB %s", ra.Of, ra.To,
			fmtRatio(ra.AddedP50), fmtRatio(ra.AddedP99), fmtRatio(ra.CPUPerMB))
		if ra.CPUPerCallSecond != nil {
			fmt.Fprintf(w, ", cpu per call-second %s", fmtRatio(ra.CPUPerCallSecond))
		}
	}
	if b := rep.Best; b != nil {
		of := func(n string) string {
			if n == "" {
				return ""
			}
			return " (" + n + ")"
		}
		fmt.Fprintf(w, "\n%s/best other proxy: added p50 %s%s, added p99 %s%s, cpu per MB %s%s", b.Of,
			fmtRatio(b.AddedP50), of(b.AddedP50Of), fmtRatio(b.AddedP99), of(b.AddedP99Of), fmtRatio(b.CPUPerMB), of(b.CPUPerMBOf))
		if b.CPUPerCallSecond != nil {
			fmt.Fprintf(w, ", cpu per call-second %s%s", fmtRatio(b.CPUPerCallSecond), of(b.CPUPerCallSecondOf))
		}
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w, "   (below 1: "+rep.Targets[0].Name+" does better)")
	}
}

// textTable is the table of WriteText: a row per figure, a column per target.
type textTable struct {
	tw      *tabwriter.Writer
	targets []TargetReport
}

// row prints a row: its label, then f of each target.
func (tab *textTable) row(label string, f func(t *TargetReport) string) {
	fmt.Fprint(tab.tw, label+"\t")
	for i := range tab.targets {
		fmt.Fprint(tab.tw, f(&tab.targets[i])+"\t")
	}
	fmt.Fprintln(tab.tw)
}

// anyTarget reports whether f holds for a target.
func (tab *textTable) anyTarget(f func(t *TargetReport) bool) bool {
	for i := range tab.targets {
		if f(&tab.targets[i]) {
			return true
		}
	}
	return false
}

func (tab *textTable) frameRows(lateAfterMs float64) {
	tab.row("frames sent", func(t *TargetReport) string { return fmt.Sprint(t.FramesSent) })
	tab.row("frames received", func(t *TargetReport) string { return fmt.Sprint(t.FramesReceived) })
	tab.row("frames lost", func(t *TargetReport) string { return fmt.Sprint(t.Lost) })
	tab.row(fmt.Sprintf("late sends (>%gms)", lateAfterMs), func(t *TargetReport) string { return fmt.Sprint(t.LateSends) })
}

func (tab *textTable) liveRows() {
	lv := func(f func(l *LiveFigures) string) func(t *TargetReport) string {
		return partCell(func(t *TargetReport) *LiveFigures { return t.Live }, f)
	}
	tab.row("down: output deltas", lv(func(l *LiveFigures) string { return fmt.Sprintf("%d/%d", l.Deltas, l.Slots) }))
	tab.row("down: deltas lost", lv(func(l *LiveFigures) string { return fmt.Sprint(l.DeltasLost) }))
	tab.row("down: deltas late", lv(func(l *LiveFigures) string { return fmt.Sprintf("%d (>%gms)", l.DeltasLate, l.LiveLateMs) }))
	tab.row("down: lateness p50", lv(func(l *LiveFigures) string { return fmtUS(l.Lateness.P50) }))
	tab.row("down: lateness p99", lv(func(l *LiveFigures) string { return fmtUS(l.Lateness.P99) }))
	tab.row("down: lateness max", lv(func(l *LiveFigures) string { return fmtUS(l.Lateness.Max) }))
	tab.row("down: other events", lv(func(l *LiveFigures) string { return fmt.Sprint(l.OtherEvents) }))
	tab.row("up: appends heard", lv(func(l *LiveFigures) string { return fmt.Sprintf("%d/%d", l.AppendsHeard, l.AppendsSent) }))
	tab.row("up: appends lost", lv(func(l *LiveFigures) string { return fmt.Sprint(l.AppendsLost) }))
	tab.row("call-seconds", lv(func(l *LiveFigures) string { return fmt.Sprintf("%.0f", l.CallSeconds) }))
	tab.row("cpu ms per call-second", lv(func(l *LiveFigures) string {
		if l.CPUMsPerCallSecond == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", l.CPUMsPerCallSecond)
	}))
}

func (tab *textTable) rttRows() {
	tab.row("rtt p50", func(t *TargetReport) string { return fmtUS(t.RTT.P50) })
	tab.row("rtt p90", func(t *TargetReport) string { return fmtUS(t.RTT.P90) })
	tab.row("rtt p99", func(t *TargetReport) string { return fmtUS(t.RTT.P99) })
	tab.row("rtt p99.9", func(t *TargetReport) string { return fmtUS(t.RTT.P999) })
	tab.row("rtt max", func(t *TargetReport) string { return fmtUS(t.RTT.Max) })
}

func (tab *textTable) addedRows(c ConfigReport) {
	added := func(f func(a *Added) float64) func(t *TargetReport) string {
		return partCell(func(t *TargetReport) *Added { return t.Added }, func(a *Added) string { return fmtUS(f(a)) })
	}
	if c.Rate > 0 {
		tab.row("added p50", added(func(a *Added) float64 { return a.P50 }))
		tab.row("added p90", added(func(a *Added) float64 { return a.P90 }))
		tab.row("added p99", added(func(a *Added) float64 { return a.P99 }))
		tab.row("added p99.9", added(func(a *Added) float64 { return a.P999 }))
	}
	if c.Shape == ShapeLive && c.Rate > 0 {
		tab.row("added delta lateness p50", added(func(a *Added) float64 { return a.DeltaP50 }))
		tab.row("added delta lateness p99", added(func(a *Added) float64 { return a.DeltaP99 }))
	}
	tab.row("added setup p50", added(func(a *Added) float64 { return a.SetupP50 }))
	tab.row("added setup p99", added(func(a *Added) float64 { return a.SetupP99 }))
}

func (tab *textTable) processRows(c ConfigReport) {
	if c.Rate > 0 {
		tab.cpuRows()
	}
	tab.rssRows(c.Rate > 0)
	if tab.anyTarget(func(t *TargetReport) bool { return t.Process != nil && t.Process.Runtime != nil }) {
		tab.runtimeRows()
	}
}

func (tab *textTable) cpuRows() {
	tab.row("cpu seconds", processCell(func(p *Process) string { return fmt.Sprintf("%.2f", p.CPUSeconds) }))
	tab.row("relayed MB", processCell(func(p *Process) string { return fmt.Sprintf("%.1f", p.RelayedMB) }))
	tab.row("cpu ms per relayed MB", processCell(func(p *Process) string { return fmt.Sprintf("%.2f", p.CPUSecondsPerMB*1000) }))
	tab.row("read/write calls per frame", processCell(func(p *Process) string {
		if p.ReadCallsPerFrame == 0 && p.WriteCallsPerFrame == 0 {
			return "n/a" // recv/send are not counted by /proc/<pid>/io
		}
		return fmt.Sprintf("%.2f/%.2f", p.ReadCallsPerFrame, p.WriteCallsPerFrame)
	}))
}

func (tab *textTable) rssRows(load bool) {
	mib := func(k uint64) string { return fmt.Sprintf("%.1fMiB", float64(k)/1024) }
	tab.row("rss before", processCell(func(p *Process) string { return mib(p.RSSBeforeKiB) }))
	tab.row("rss connected", processCell(func(p *Process) string { return mib(p.RSSConnectedKiB) }))
	tab.row("rss end", processCell(func(p *Process) string { return mib(p.RSSEndKiB) }))
	if load {
		tab.row("rss peak growth", processCell(func(p *Process) string {
			if p.RSSPeakKiB == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2fMiB", float64(p.PeakGrowthKiB)/1024)
		}))
	}
	tab.row("rss per session", processCell(func(p *Process) string { return fmt.Sprintf("%.1fKiB", p.RSSPerSessionKiB) }))
	tab.row("rss per session (end)", processCell(func(p *Process) string { return fmt.Sprintf("%.1fKiB", p.RSSPerSessionEndKiB) }))
}

func (tab *textTable) runtimeRows() {
	rt := func(f func(r *Runtime) string) func(t *TargetReport) string {
		return processCell(func(p *Process) string {
			if p.Runtime == nil {
				return "-"
			}
			return f(p.Runtime)
		})
	}
	tab.row("heap per session", rt(func(r *Runtime) string { return fmt.Sprintf("%.1fKiB", r.HeapPerSessionKiB) }))
	tab.row("stacks per session", rt(func(r *Runtime) string { return fmt.Sprintf("%.1fKiB", r.StackPerSessionKiB) }))
	tab.row("goroutines per session", rt(func(r *Runtime) string { return fmt.Sprintf("%.2f", r.GoroutinesPerSession) }))
}

// processCell is a table cell of a target's process figures.
func processCell(f func(p *Process) string) func(t *TargetReport) string {
	return partCell(func(t *TargetReport) *Process { return t.Process }, f)
}

// partCell is a table cell of the part of a target that part picks (its
// live figures, added latency or process figures): f of it, or "-" for a
// target without one.
func partCell[P any](part func(t *TargetReport) *P, f func(p *P) string) func(t *TargetReport) string {
	return func(t *TargetReport) string {
		if p := part(t); p != nil {
			return f(p)
		}
		return "-"
	}
}
