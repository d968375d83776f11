// Command tether-bench is tether's load tool: open-loop voice load through
// tether (or any proxy in front of tether's mock upstream) with latency, CPU
// and memory figures (see internal/bench). It is its own module so that its
// plotting libraries stay out of the sidecar binary.
package main

import (
	"encoding/json"
	"fmt"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/cmd/tether-bench/internal/bench"
	"github.com/tetherproxy/tether/internal/cli"
)

func main() {
	if err := newBenchCmd().Execute(); err != nil {
		cli.Exit("tether-bench", err)
	}
}

// benchFlags are the values of tether-bench's flags: the options of the
// run, the flags parsed into them, and what to do with the report.
type benchFlags struct {
	o                     bench.Options
	baseline, size        string
	compare, pids, admins []string
	jsonOut, quiet        bool
	plotFile, addedPlot   string
}

// newBenchCmd is the tether-bench command.
func newBenchCmd() *cobra.Command {
	var fl benchFlags
	cmd := &cobra.Command{
		Use:   "tether-bench",
		Short: "Measure tether under open-loop voice load: round trips, added latency, CPU and memory",
		Long: `tether-bench opens N WebSocket sessions and sends R
input_audio_buffer.append events per second on each (S bytes, 20 ms of pcm16 audio by default) on a fixed
schedule that never waits for replies (open loop; late sends are counted).
Each session is set up as a client does (session.created, then
session.update answered by session.updated); the upstream must be tether's
mock, whose echo fault (the mock.fault event sent next) sends every frame
back, so each frame's round trip is measured from its send time to its echo.

Without --url, tether-bench starts the mock upstream and tether as child
processes of a tether binary (--exe; default: a tether beside this
executable, else tether on $PATH), measures tether's CPU and memory from
/proc, and uses the mock itself as the direct baseline: the added latency is
tether's. With --url, point it at a running tether (or another proxy) in front of a
mock started with 'tether mock-upstream', and give --baseline with the mock's
own URL; --pid lets it read those processes' CPU and memory.

Several targets (--baseline, --compare) are measured in the same run, taking
turns of --slot so each sees the same machine load; with --rate 0 sessions
stay idle (for memory per session, heartbeats still run; tether needs two
open files per session, and tether-bench raises its limit as far as it
may). Only loopback addresses are accepted, and every run is bounded by its flags.`,
		Example: `  # 500 voice sessions through a local tether, against the mock directly
  tether-bench --sessions 500 --rate 50 --duration 30s --plot cdf.png
  # memory of 10,000 idle sessions
  tether-bench --sessions 10000 --rate 0 --ramp 20s --duration 40s
  # one 15 MiB append
  tether-bench --sessions 1 --rate 0.5 --frame-bytes 15MiB --duration 4s
  # a running tether and nginx in front of one mock
  tether-bench --url ws://127.0.0.1:8080/v1/realtime --pid tether=$TETHER_PID \
    --baseline ws://127.0.0.1:8081/v1/realtime \
    --compare nginx=ws://127.0.0.1:8082/v1/realtime --pid nginx=$NGINX_PID`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return fl.run(cmd) },
	}
	fl.addFlags(cmd)
	return cmd
}

func (fl *benchFlags) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&fl.o.Target.URL, "url", "", "target ws:// URL (default: start the mock upstream and tether locally)")
	f.StringVar(&fl.o.Target.Name, "name", "tether", "name of the target in the report")
	f.StringVar(&fl.baseline, "baseline", "", "ws:// URL of the same mock upstream, direct, for added latency (local default: the local mock; \"none\" to skip)")
	f.StringArrayVar(&fl.compare, "compare", nil, "another proxy of the same mock as NAME=URL, measured in the same run (repeatable)")
	f.StringArrayVar(&fl.pids, "pid", nil, "processes of a target to measure as TARGET=PID[,PID...]; descendants included (repeatable)")
	f.StringArrayVar(&fl.admins, "admin", nil, "tether admin address of a target as TARGET=HOST:PORT, for runtime figures and --cpuprofile (repeatable)")
	f.IntVar(&fl.o.Sessions, "sessions", 100, fmt.Sprintf("sessions per target (1..%d)", bench.MaxSessions))
	f.Float64Var(&fl.o.Rate, "rate", 50, "append events per second per session (0: idle sessions)")
	f.StringVar(&fl.size, "frame-bytes", strconv.Itoa(bench.DefaultFrameBytes), "payload bytes of each append event (e.g. 1350, 15MiB)")
	f.DurationVar(&fl.o.Ramp, "ramp", 5*time.Second, "spread the connects over this time")
	f.DurationVar(&fl.o.Duration, "duration", 20*time.Second, "measured time per target")
	f.DurationVar(&fl.o.Slot, "slot", time.Second, "with several targets, the length of each target's turn (0: all at once)")
	f.DurationVar(&fl.o.LateAfter, "late", time.Millisecond, "count a send this much behind its schedule as late")
	f.DurationVar(&fl.o.Drain, "drain", 5*time.Second, "longest wait for outstanding echoes after the last send")
	f.DurationVar(&fl.o.HandshakeTimeout, "handshake-timeout", 10*time.Second, "bound on each session's dial and first event")
	f.StringVar(&fl.o.Exe, "exe", "", "tether binary to start without --url (default: a tether beside this executable, else on $PATH)")
	f.StringVar(&fl.o.CPUProfile, "cpuprofile", "", "write the target's CPU profile over the measurement to this file (needs its admin address)")
	f.BoolVar(&fl.jsonOut, "json", false, "print the report as JSON instead of a table")
	f.StringVar(&fl.plotFile, "plot", "", "draw the round-trip CDF into this .png (or .svg, .pdf) file")
	f.StringVar(&fl.addedPlot, "plot-added", "", "draw the added-latency CDF of every proxy (quantile minus the baseline's) into this file")
	f.StringVar(&fl.o.Shape, "shape", bench.ShapeRealtime, "load shape: realtime (echoed appends, targets in turns) or live (GPT-Live calls on "+bench.LivePath+", streaming both ways; targets one after another)")
	f.DurationVar(&fl.o.LiveLate, "live-late", 20*time.Millisecond, "with --shape live, count an output delta this much behind its call's 100 ms grid as late")
	f.BoolVar(&fl.quiet, "quiet", false, "no progress lines on stderr")
}

// run measures, prints the report and says in its error whether the
// report is partial or a target had no session.
func (fl *benchFlags) run(cmd *cobra.Command) error {
	if err := fl.parseOptions(cmd); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, fl.o)
	if err != nil {
		return &cli.ExitError{Code: 1, Msg: "tether-bench: " + err.Error()}
	}
	if err := fl.writeReport(cmd, rep); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return &cli.ExitError{Code: 1, Msg: "tether-bench: interrupted; the figures above are partial"}
	}
	for _, t := range rep.Targets {
		if t.Connected == 0 {
			return &cli.ExitError{Code: 1, Msg: fmt.Sprintf("tether-bench: no session to %s could be set up", t.Name)}
		}
	}
	return nil
}

// parseOptions fills in fl.o from the flags that are parsed into it, or
// says which flag is wrong.
func (fl *benchFlags) parseOptions(cmd *cobra.Command) error {
	o := &fl.o
	var err error
	if o.FrameBytes, err = bench.ParseSize(fl.size); err != nil {
		return err
	}
	if o.Shape == bench.ShapeLive {
		if cmd.Flags().Changed("frame-bytes") {
			return fmt.Errorf("--frame-bytes does not go with --shape live: a GPT-Live append is 50 ms of audio (%d B)", bench.LiveFrameBytes)
		}
		if !cmd.Flags().Changed("rate") {
			o.Rate = bench.LiveRate
		}
	}
	if fl.baseline == "none" {
		o.NoBaseline = true
	} else {
		o.Baseline.URL = fl.baseline
	}
	if err := addCompare(o, fl.compare); err != nil {
		return err
	}
	targets := targetsByName(o)
	if err := addPIDs(targets, fl.pids); err != nil {
		return err
	}
	if err := addAdmins(targets, fl.admins); err != nil {
		return err
	}
	if o.Target.URL != "" && o.Exe != "" {
		return fmt.Errorf("--exe starts a local tether; it does not go with --url")
	}
	if o.Target.URL == "" && (len(o.Target.PIDs) > 0 || o.Target.Admin != "") {
		return fmt.Errorf("--pid/--admin for %s need --url (without it tether-bench starts its own tether)", o.Target.Name)
	}
	if !fl.quiet {
		o.Progress = cmd.ErrOrStderr()
	}
	return nil
}

// addCompare adds the targets of the --compare flags to o.
func addCompare(o *bench.Options, compare []string) error {
	for _, c := range compare {
		name, u, ok := strings.Cut(c, "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("--compare %q: want NAME=URL", c)
		}
		o.Compare = append(o.Compare, bench.Target{Name: name, URL: u})
	}
	return nil
}

// targetsByName maps the names of o's targets to them.
func targetsByName(o *bench.Options) map[string]*bench.Target {
	targets := map[string]*bench.Target{o.Target.Name: &o.Target, o.Baseline.Name: &o.Baseline}
	for i := range o.Compare {
		targets[o.Compare[i].Name] = &o.Compare[i]
	}
	return targets
}

// addPIDs gives the targets the processes of the --pid flags.
func addPIDs(targets map[string]*bench.Target, pids []string) error {
	for _, p := range pids {
		name, list, ok := strings.Cut(p, "=")
		t := targets[name]
		if !ok || t == nil {
			return fmt.Errorf("--pid %q: want TARGET=PID[,PID...] with a target name (%s)", p, targetNames(targets))
		}
		for f := range strings.SplitSeq(list, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				return fmt.Errorf("--pid %q: %q is not a process id", p, f)
			}
			t.PIDs = append(t.PIDs, pid)
		}
	}
	return nil
}

// addAdmins gives the targets the admin addresses of the --admin flags.
func addAdmins(targets map[string]*bench.Target, admins []string) error {
	for _, a := range admins {
		name, addr, ok := strings.Cut(a, "=")
		t := targets[name]
		if !ok || t == nil || addr == "" {
			return fmt.Errorf("--admin %q: want TARGET=HOST:PORT with a target name (%s)", a, targetNames(targets))
		}
		t.Admin = addr
	}
	return nil
}

// writeReport prints rep (as JSON or a table) and draws the plots asked for.
func (fl *benchFlags) writeReport(cmd *cobra.Command, rep *bench.Report) error {
	out := cmd.OutOrStdout()
	if fl.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteText(out); err != nil {
		return err
	}
	if fl.plotFile != "" {
		if err := rep.WritePlot(fl.plotFile); err != nil {
			return &cli.ExitError{Code: 1, Msg: "tether-bench: " + err.Error()}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "tether-bench: latency CDF written to %s\n", fl.plotFile)
	}
	if fl.addedPlot != "" {
		if err := rep.WriteAddedPlot(fl.addedPlot); err != nil {
			return &cli.ExitError{Code: 1, Msg: "tether-bench: " + err.Error()}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "tether-bench: added-latency CDF written to %s\n", fl.addedPlot)
	}
	return nil
}

func targetNames(m map[string]*bench.Target) string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	slices.Sort(n)
	return strings.Join(n, ", ")
}
