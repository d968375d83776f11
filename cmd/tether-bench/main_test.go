package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/upstreams/mock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runBench runs tether-bench with args and returns its stdout.
func runBench(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newBenchCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// benchReport is the part of the --json report the tests check.
type benchReport struct {
	Config struct {
		FrameBytes int `json:"frame_payload_bytes"`
	} `json:"config"`
	Targets []struct {
		Name   string `json:"name"`
		Sent   uint64 `json:"frames_sent"`
		Recv   uint64 `json:"frames_received"`
		Errors uint64 `json:"errors"`
		RTT    struct {
			P99 float64 `json:"p99_us"`
		} `json:"rtt"`
		Added *struct {
			P50 float64 `json:"p50_us"`
		} `json:"added"`
	} `json:"targets"`
}

// The command end to end against a mock: flags, JSON report, CDF picture.
func TestBenchCommandJSONAndPlot(t *testing.T) {
	m := mock.New(mock.Options{})
	addr, err := m.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	url := "ws://" + addr.String() + "/v1/realtime"
	plot := filepath.Join(t.TempDir(), "cdf.png")
	out, err := runBench(t, "--url", url, "--name", "proxy", "--baseline", url,
		"--sessions", "3", "--rate", "50", "--frame-bytes", "1.3KB", "--duration", "200ms",
		"--slot", "100ms", "--ramp", "30ms", "--quiet", "--json", "--plot", plot)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if rep.Config.FrameBytes != 1300 || len(rep.Targets) != 2 || rep.Targets[0].Name != "proxy" || rep.Targets[1].Name != "direct" {
		t.Fatalf("report: %+v", rep)
	}
	for _, tr := range rep.Targets {
		// 3 sessions x 50/s x 200 ms of turns each.
		if tr.Sent != 30 || tr.Recv != 30 || tr.Errors != 0 || tr.RTT.P99 <= 0 {
			t.Errorf("%s: sent %d received %d errors %d p99 %v", tr.Name, tr.Sent, tr.Recv, tr.Errors, tr.RTT.P99)
		}
	}
	if rep.Targets[0].Added == nil {
		t.Error("no added latency for the target")
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("--plot did not write a PNG: %v", err)
	}
}

func TestBenchCommandRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "ws://10.1.2.3:8080/v1/realtime"},
		{"--url", "ws://127.0.0.1:1/", "--pid", "nginx=12"},
		{"--url", "ws://127.0.0.1:1/", "--pid", "tether=abc"},
		{"--url", "ws://127.0.0.1:1/", "--compare", "nginx"},
		{"--url", "ws://127.0.0.1:1/", "--exe", "/bin/true"},
		{"--pid", "tether=1"},
		{"--frame-bytes", "lots"},
	} {
		if _, err := runBench(t, args...); err == nil {
			t.Errorf("bench %s: accepted", strings.Join(args, " "))
		}
	}
}

// Without --url the command starts the mock upstream and tether from a
// tether binary (built here from the main module) and measures them.
func TestBenchCommandLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tether")
	}
	exe := filepath.Join(t.TempDir(), "tether")
	build := exec.Command("go", "build", "-o", exe, "./cmd/tether")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tether: %v\n%s", err, out)
	}
	out, err := runBench(t, "--exe", exe, "--sessions", "2", "--rate", "50",
		"--duration", "200ms", "--slot", "100ms", "--ramp", "20ms", "--quiet", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(rep.Targets) != 2 || rep.Targets[0].Name != "tether" || rep.Targets[1].Name != "direct" {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	for _, tr := range rep.Targets {
		// 2 sessions x 50/s x 200 ms of turns each.
		if tr.Sent != 20 || tr.Recv != 20 || tr.Errors != 0 {
			t.Errorf("%s: sent %d received %d errors %d", tr.Name, tr.Sent, tr.Recv, tr.Errors)
		}
	}
	if rep.Targets[0].Added == nil {
		t.Error("no added latency for tether")
	}
}
