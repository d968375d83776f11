//go:build unix

package bench

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// raiseFileLimit raises the soft limit on open files to at least want
// (raising the hard limit too when allowed, up to fs.nr_open). Children
// started afterwards inherit it: tether needs two descriptors per session.
// It returns the soft limit in force.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		ceiling := uint64(1 << 20)
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				ceiling = v
			}
		}
		hard := min(want, ceiling)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: hard, Max: hard}); err == nil {
			lim = syscall.Rlimit{Cur: hard, Max: hard}
		}
	}
	// Setting the soft limit explicitly (even to its current value) also
	// makes children inherit it rather than the limit the process started with.
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}
