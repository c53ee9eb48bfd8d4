package loadgen

import (
	"math/bits"
	"time"
)

// Histogram records latencies with about 3% relative precision in a fixed
// set of log-linear buckets: values below 64 ns exactly, above that 32
// sub-buckets per power of two. Recording never allocates. A Histogram is
// owned by one goroutine; merge them with Merge.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
}

const (
	subBits    = 5
	subCount   = 1 << subBits // 32
	linearMax  = 2 * subCount // values below this are their own bucket
	numBuckets = linearMax + (64-(subBits+1))*subCount
)

func bucketOf(v uint64) int {
	if v < linearMax {
		return int(v)
	}
	p := bits.Len64(v) - 1    // >= subBits+1
	top := v >> (p - subBits) // in [subCount, 2*subCount)
	return linearMax + (p-(subBits+1))*subCount + int(top-subCount)
}

// bucketLow is the smallest value in bucket b; bucketHigh the largest.
func bucketLow(b int) uint64 {
	if b < linearMax {
		return uint64(b)
	}
	b -= linearMax
	p := b/subCount + subBits + 1
	top := uint64(b%subCount + subCount)
	return top << (p - subBits)
}

func bucketHigh(b int) uint64 {
	if b+1 >= numBuckets {
		return ^uint64(0)
	}
	return bucketLow(b+1) - 1
}

// Record adds one latency. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += v
	h.max = max(h.max, v)
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the samples, or 0 if there are none.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the q-quantile (0 < q <= 1): the midpoint of the bucket
// holding the ceil(q*n)-th smallest sample, never more than Max. It
// returns 0 if there are no samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketLow(b), bucketHigh(b)
			mid := lo + (hi-lo)/2
			return time.Duration(min(mid, h.max))
		}
	}
	return time.Duration(h.max)
}
