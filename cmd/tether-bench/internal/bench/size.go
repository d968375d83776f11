package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a byte count: a plain number, or one with a unit (B, KB,
// MB = 1000-based; KiB, MiB = 1024-based; case-insensitive), e.g. "1350",
// "1.3KB", "15MiB".
func ParseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"kb", 1e3}, {"mb", 1e6}, {"k", 1 << 10}, {"m", 1 << 20}, {"b", 1}}
	mult := 1.0
	lower := strings.ToLower(t)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: want a byte count like 1350, 1.3KB or 15MiB", s)
	}
	n := math.Round(v * mult)
	if n > math.MaxInt32 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int(n), nil
}
