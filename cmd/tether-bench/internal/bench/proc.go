package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procSample is the summed state of a set of processes (a pid and its
// descendants) read from /proc.
type procSample struct {
	PIDs     []int
	CPUTicks uint64 // utime + stime, in clock ticks
	RSSKiB   uint64 // VmRSS
	HWMKiB   uint64 // VmHWM: peak RSS since start or the last resetPeak
	// SyscR and SyscW count read- and write-like system calls
	// (/proc/<pid>/io; zero where it cannot be read).
	SyscR, SyscW uint64
}

// clockTicks is the unit of /proc/<pid>/stat times (USER_HZ), from the aux vector.
var clockTicks = func() float64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		const atClkTck = 17
		for i := 0; i+16 <= len(b); i += 16 {
			if binary.NativeEndian.Uint64(b[i:]) == atClkTck {
				if v := binary.NativeEndian.Uint64(b[i+8:]); v > 0 {
					return float64(v)
				}
			}
		}
	}
	return 100
}()

// procTree returns roots and all their live descendants.
func procTree(roots []int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	var out []int
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

type statFields struct {
	ppid         int
	utime, stime uint64
}

// readStat parses /proc/<pid>/stat (the command name may hold spaces and
// parentheses: fields are counted after the last ')').
func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return statFields{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return statFields{}, fmt.Errorf("malformed stat: %d fields", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseUint(f[11], 10, 64)
	stt, err3 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return statFields{}, fmt.Errorf("malformed stat fields")
	}
	return statFields{ppid: ppid, utime: ut, stime: stt}, nil
}

// parseStatusKiB returns the kB value of a "Key:   123 kB" line of /proc/<pid>/status.
func parseStatusKiB(b []byte, key string) uint64 {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte(key+":"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 64)
			return v
		}
	}
	return 0
}

// parseIOField returns a "key: 123" field of /proc/<pid>/io.
func parseIOField(b []byte, key string) uint64 {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte(key+":")); ok {
			v, _ := strconv.ParseUint(strings.TrimSpace(string(rest)), 10, 64)
			return v
		}
	}
	return 0
}

// sampleProcs reads CPU time and memory of roots and their descendants.
func sampleProcs(roots []int) (procSample, error) {
	return sample(procTree(roots))
}

// sampleSelf reads this process alone (its children are tether and the mock).
func sampleSelf() (procSample, error) {
	return sample([]int{os.Getpid()})
}

func sample(pids []int) (procSample, error) {
	var s procSample
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		s.PIDs = append(s.PIDs, pid)
		s.CPUTicks += st.utime + st.stime
		s.RSSKiB += parseStatusKiB(b, "VmRSS")
		s.HWMKiB += parseStatusKiB(b, "VmHWM")
		if io, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "io")); err == nil {
			s.SyscR += parseIOField(io, "syscr")
			s.SyscW += parseIOField(io, "syscw")
		}
	}
	if len(s.PIDs) == 0 {
		return s, fmt.Errorf("processes %v: not found in /proc", pids)
	}
	return s, nil
}

// resetPeak resets VmHWM of roots and their descendants to their current RSS
// (Linux clear_refs 5); it reports whether that worked for all of them.
func resetPeak(roots []int) bool {
	ok := true
	for _, pid := range procTree(roots) {
		if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}

// loadAvg returns the 1-minute load average, or -1.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}
