package sim

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Summary totals one Run.
type Summary struct {
	Sent   int // posts made
	OK     int // answered 2xx
	Non2xx int // answered with another status
	Errors int // not answered: transport errors and timeouts
	IDs    int // object IDs in all bodies, repeats included

	// P50, P99 and Max are post latencies, errors included (a timeout counts as Timeout).
	// The percentiles are accurate to about 1.6%; Max is exact.
	P50, P99, Max time.Duration
}

// String formats s as one logfmt line, e.g.
// "sent=12 ok=12 non_2xx=0 errors=0 ids=1187 p50=1.2ms p99=3.4ms max=3.4ms".
func (s Summary) String() string {
	return fmt.Sprintf("sent=%d ok=%d non_2xx=%d errors=%d ids=%d p50=%s p99=%s max=%s",
		s.Sent, s.OK, s.Non2xx, s.Errors, s.IDs, round(s.P50), round(s.P99), round(s.Max))
}

// round keeps about four significant digits, enough for a summary line.
func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

// tally accumulates SendResults into a Summary. A load generator can post millions of
// times, so latencies go into a fixed-size histogram rather than a growing slice.
type tally struct {
	sum Summary // all but the percentiles
	lat histogram
}

func (t *tally) add(res SendResult) {
	t.sum.Sent++
	t.sum.IDs += len(res.IDs)
	switch {
	case res.Err != nil:
		t.sum.Errors++
	case res.Status/100 == 2:
		t.sum.OK++
	default:
		t.sum.Non2xx++
	}
	t.lat.add(res.Duration)
}

func (t *tally) summary() Summary {
	s := t.sum
	s.P50 = t.lat.quantile(0.50)
	s.P99 = t.lat.quantile(0.99)
	s.Max = t.lat.max
	return s
}

// subBuckets is the number of linear buckets per power of two, so a bucket is at most
// 1/64 (about 1.6%) of its values wide. Durations below 2*subBuckets ns get a bucket each.
const (
	subBits    = 6
	subBuckets = 1 << subBits
)

// histogram counts durations in log-linear buckets (as HdrHistogram does): bucket i
// below 2*subBuckets holds exactly i ns; above, each power of two is split into
// subBuckets equal parts. 64 powers of two cover every int64, in under 30 KiB.
type histogram struct {
	counts [(64 - subBits) * subBuckets]int64
	n      int64
	max    time.Duration
}

func (h *histogram) add(d time.Duration) {
	d = max(d, 0)
	h.counts[bucket(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the upper bound of the bucket holding the q-th value, capped at the
// maximum, or 0 when h is empty.
func (h *histogram) quantile(q float64) time.Duration {
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(upper(i)), h.max)
		}
	}
	return 0
}

// bucket returns the index of the bucket that holds v ns.
func bucket(v uint64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // leaves v>>shift in [subBuckets, 2*subBuckets)
	return shift*subBuckets + int(v>>shift)
}

// upper returns the largest value in bucket i, the inverse of bucket.
func upper(i int) uint64 {
	if i < 2*subBuckets {
		return uint64(i)
	}
	shift := i/subBuckets - 1
	lower := uint64(i%subBuckets+subBuckets) << shift
	return lower + 1<<shift - 1
}
