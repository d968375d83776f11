package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-linear buckets, in the manner of
// HdrHistogram: values below 256 ns are exact; above, each power of two is
// split into 128 linear sub-buckets, so a reported percentile is within
// 1/128 (0.8 %) of the true sample. Memory is fixed (about 34 KiB) whatever
// the number of samples, and Record is lock-free and safe for concurrent
// use.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; wraps only after 584 years of samples
	min    atomic.Int64  // nanoseconds; valid when total > 0
	max    atomic.Int64  // nanoseconds
}

const (
	subBits    = 7
	subCount   = 1 << subBits // linear sub-buckets per power of two
	exactLimit = 2 * subCount // values below are their own bucket
	// maxShift is the largest shift: values up to 2^(maxShift+subBits+1) ns
	// (about 9 minutes) have their own bucket; larger ones share the last.
	maxShift   = 31
	numBuckets = exactLimit + maxShift*subCount
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < exactLimit {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1) // >= 1; v>>shift is in [128, 256)
	if shift > maxShift {
		return numBuckets - 1
	}
	return exactLimit + (shift-1)*subCount + int(v>>shift) - subCount
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < exactLimit {
		return uint64(i), uint64(i)
	}
	shift := (i-exactLimit)/subCount + 1
	m := uint64((i-exactLimit)%subCount + subCount)
	return m << shift, (m+1)<<shift - 1
}

// Record adds one sample. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for {
		cur := h.min.Load()
		if v >= cur || h.min.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
}

// Snapshot is an immutable copy of a histogram, from which percentiles are read.
type Snapshot struct {
	counts   []uint64
	Count    uint64
	Sum      time.Duration
	Min, Max time.Duration
}

// Snapshot copies the current counts. Samples recorded concurrently may be
// partly included.
func (h *Histogram) Snapshot() *Snapshot {
	s := &Snapshot{counts: make([]uint64, numBuckets)}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] = c
		s.Count += c
	}
	s.Sum = time.Duration(h.sum.Load())
	if s.Count > 0 {
		s.Min, s.Max = time.Duration(h.min.Load()), time.Duration(h.max.Load())
	}
	return s
}

// Sub returns the samples of s that are not in earlier (an older snapshot of
// the same histogram): the distribution of one time window. Min and Max of
// the window are bucket bounds.
func (s *Snapshot) Sub(earlier *Snapshot) *Snapshot {
	w := &Snapshot{counts: make([]uint64, numBuckets)}
	first, last := -1, -1
	for i := range s.counts {
		c := s.counts[i]
		if earlier != nil {
			c -= min(c, earlier.counts[i])
		}
		w.counts[i] = c
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
			w.Count += c
		}
	}
	w.Sum = s.Sum
	if earlier != nil {
		w.Sum -= earlier.Sum
	}
	if w.Count > 0 {
		lo, _ := bucketRange(first)
		_, hi := bucketRange(last)
		w.Min, w.Max = max(time.Duration(lo), s.Min), min(time.Duration(hi), s.Max)
	}
	return w
}

// Mean is the average sample, or 0 without samples.
func (s *Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}

// Quantile returns the smallest recorded value v such that a fraction q
// (0..1) of the samples are <= v, to within the bucket precision: it is the
// highest value of the bucket holding that rank, capped by the maximum.
// Quantile(1) is the maximum; without samples it is 0.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	if q >= 1 {
		return s.Max
	}
	if q <= 0 {
		return s.Min
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(max(time.Duration(hi), s.Min), s.Max)
		}
	}
	return s.Max
}

// CDFPoint is one step of a cumulative distribution.
type CDFPoint struct {
	Value    time.Duration
	Fraction float64 // of samples <= Value
}

// CDF returns the cumulative distribution at the upper bound of every
// non-empty bucket, in increasing order.
func (s *Snapshot) CDF() []CDFPoint {
	if s.Count == 0 {
		return nil
	}
	var out []CDFPoint
	var seen uint64
	for i, c := range s.counts {
		if c == 0 {
			continue
		}
		seen += c
		_, hi := bucketRange(i)
		out = append(out, CDFPoint{Value: min(max(time.Duration(hi), s.Min), s.Max), Fraction: float64(seen) / float64(s.Count)})
	}
	return out
}
