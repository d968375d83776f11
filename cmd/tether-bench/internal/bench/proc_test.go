package bench

import (
	"os"
	"runtime"
	"testing"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := []byte("1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 1000 200\n")
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 77 || st.utime != 250 || st.stime != 31 {
		t.Fatalf("parsed %+v, want ppid 77 utime 250 stime 31", st)
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Fatal("malformed stat accepted")
	}
}

func TestParseStatusKiB(t *testing.T) {
	b := []byte("Name:\ttether\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n")
	if v := parseStatusKiB(b, "VmRSS"); v != 40960 {
		t.Fatalf("VmRSS = %d", v)
	}
	if v := parseStatusKiB(b, "VmHWM"); v != 51200 {
		t.Fatalf("VmHWM = %d", v)
	}
	if v := parseStatusKiB(b, "VmSwap"); v != 0 {
		t.Fatalf("missing key = %d, want 0", v)
	}
}

func TestSampleSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	s, err := sampleProcs([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.PIDs) == 0 || s.PIDs[0] != os.Getpid() || s.RSSKiB == 0 || s.HWMKiB < s.RSSKiB {
		t.Fatalf("sample of this process: %+v", s)
	}
	if clockTicks <= 0 {
		t.Fatalf("clock ticks %v", clockTicks)
	}
}

func TestParseIOField(t *testing.T) {
	b := []byte("rchar: 10\nwchar: 20\nsyscr: 1234\nsyscw: 567\nread_bytes: 0\n")
	if r, w := parseIOField(b, "syscr"), parseIOField(b, "syscw"); r != 1234 || w != 567 {
		t.Fatalf("syscr %d syscw %d, want 1234 567", r, w)
	}
}
