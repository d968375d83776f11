package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	// Buckets are contiguous: each starts right after the previous one ends.
	next := uint64(0)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if lo != next || hi < lo {
			t.Fatalf("bucket %d = [%d, %d], want it to start at %d", i, lo, hi, next)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d = [%d, %d] but bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		// Relative width bounds the error of a reported percentile.
		if lo >= exactLimit && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d = [%d, %d] is wider than 1/%d of its start", i, lo, hi, subCount)
		}
		next = hi + 1
	}
	if got := bucketOf(math.MaxUint64); got != numBuckets-1 {
		t.Fatalf("huge values go to bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

// exactQuantile is the nearest-rank percentile of sorted samples.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() time.Duration{
		"uniform 0-2ms":    func() time.Duration { return time.Duration(rng.Int64N(int64(2 * time.Millisecond))) },
		"lognormal ~100us": func() time.Duration { return time.Duration(math.Exp(rng.NormFloat64()*0.8) * 100e3) },
		"bimodal with tail": func() time.Duration {
			if rng.IntN(100) == 0 {
				return time.Duration(50e6 + rng.Int64N(50e6))
			}
			return time.Duration(80e3 + rng.Int64N(40e3))
		},
		"tiny exact": func() time.Duration { return time.Duration(rng.IntN(200)) },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			h := NewHistogram()
			samples := make([]time.Duration, 100_000)
			var sum time.Duration
			for i := range samples {
				samples[i] = gen()
				sum += samples[i]
				h.Record(samples[i])
			}
			slices.Sort(samples)
			s := h.Snapshot()
			if s.Count != uint64(len(samples)) || s.Min != samples[0] || s.Max != samples[len(samples)-1] {
				t.Fatalf("count/min/max = %d/%s/%s, want %d/%s/%s", s.Count, s.Min, s.Max, len(samples), samples[0], samples[len(samples)-1])
			}
			if s.Mean() != sum/time.Duration(len(samples)) {
				t.Errorf("mean %s, want %s", s.Mean(), sum/time.Duration(len(samples)))
			}
			for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 0.9999} {
				got, want := s.Quantile(q), exactQuantile(samples, q)
				// The reported value is the top of the sample's bucket: never
				// below the true percentile, and within the bucket precision.
				if got < want || float64(got-want) > float64(want)/subCount+1 {
					t.Errorf("p%g = %s, want %s within %.2f%%", q*100, got, want, 100.0/subCount)
				}
			}
			if s.Quantile(1) != s.Max || s.Quantile(0) != s.Min {
				t.Errorf("p0/p100 = %s/%s, want min/max %s/%s", s.Quantile(0), s.Quantile(1), s.Min, s.Max)
			}
		})
	}
}

func TestEmptyHistogram(t *testing.T) {
	s := NewHistogram().Snapshot()
	if s.Count != 0 || s.Quantile(0.5) != 0 || s.Mean() != 0 || s.Max != 0 || s.CDF() != nil {
		t.Fatalf("empty snapshot: %+v p50 %s", s, s.Quantile(0.5))
	}
}

func TestNegativeRecordsAsZero(t *testing.T) {
	h := NewHistogram()
	h.Record(-time.Second)
	s := h.Snapshot()
	if s.Min != 0 || s.Max != 0 || s.Count != 1 {
		t.Fatalf("negative sample: min %s max %s count %d, want 0 0 1", s.Min, s.Max, s.Count)
	}
}

func TestWindowSub(t *testing.T) {
	h := NewHistogram()
	for range 1000 {
		h.Record(time.Millisecond)
	}
	before := h.Snapshot()
	for range 100 {
		h.Record(10 * time.Microsecond)
	}
	win := h.Snapshot().Sub(before)
	if win.Count != 100 {
		t.Fatalf("window count %d, want 100", win.Count)
	}
	if p := win.Quantile(0.99); p < 10*time.Microsecond || p > 10*time.Microsecond+10*time.Microsecond/subCount {
		t.Fatalf("window p99 %s, want about 10µs (the earlier 1ms samples are not in the window)", p)
	}
	if win.Mean() != 10*time.Microsecond {
		t.Fatalf("window mean %s, want 10µs", win.Mean())
	}
	if all := h.Snapshot().Sub(nil); all.Count != 1100 {
		t.Fatalf("Sub(nil) count %d, want 1100", all.Count)
	}
}

func TestCDFIsMonotoneAndEndsAtOne(t *testing.T) {
	h := NewHistogram()
	for i := range 5000 {
		h.Record(time.Duration(i*i) * time.Nanosecond)
	}
	cdf := h.Snapshot().CDF()
	for i := 1; i < len(cdf); i++ {
		if cdf[i].Value <= cdf[i-1].Value || cdf[i].Fraction <= cdf[i-1].Fraction {
			t.Fatalf("CDF not increasing at %d: %+v then %+v", i, cdf[i-1], cdf[i])
		}
	}
	if last := cdf[len(cdf)-1]; last.Fraction != 1 || last.Value != h.Snapshot().Max {
		t.Fatalf("CDF ends at %+v, want fraction 1 at the max", last)
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				h.Record(time.Duration(g*10_000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 80_000 || s.Min != 0 || s.Max != 79_999*time.Microsecond {
		t.Fatalf("after concurrent records: count %d min %s max %s", s.Count, s.Min, s.Max)
	}
}

func BenchmarkRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	var d time.Duration
	for b.Loop() {
		d = (d + 7919) % time.Second
		h.Record(d)
	}
}
