package sim

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Summary totals one Run.
type Summary struct {
	Sent   int // posts made
	OK     int // answered 2xx
	Non2xx int // answered with another status
	Errors int // not answered: transport errors and timeouts
	IDs    int // object IDs in all bodies, repeats included

	// ByStatus counts the answers by HTTP status; ByError counts the posts with no
	// answer by kind: timeout, refused, reset, eof or other.
	ByStatus map[int]int
	ByError  map[string]int

	// Elapsed is the time Run took, so Sent/Elapsed is the request rate.
	Elapsed time.Duration

	// P50 to P999 and Max are post latencies (SendResult.Latency), errors included (a
	// timeout counts as Timeout). The percentiles come from a log-linear histogram and
	// are accurate to about 1.6%; Max is exact.
	P50, P90, P99, P999, Max time.Duration
}

// RPS is the request rate: posts per second of Elapsed.
func (s Summary) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Sent) / s.Elapsed.Seconds()
}

// String formats s as one logfmt line, e.g. "sent=12 ok=12 non_2xx=0 errors=0 ids=1187
// rps=2.4 p50=1.2ms p90=2ms p99=3.4ms p99.9=3.4ms max=3.4ms status_202=12".
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent=%d ok=%d non_2xx=%d errors=%d ids=%d rps=%.1f p50=%s p90=%s p99=%s p99.9=%s max=%s",
		s.Sent, s.OK, s.Non2xx, s.Errors, s.IDs, s.RPS(), round(s.P50), round(s.P90), round(s.P99), round(s.P999), round(s.Max))
	for _, code := range slices.Sorted(maps.Keys(s.ByStatus)) {
		fmt.Fprintf(&b, " status_%d=%d", code, s.ByStatus[code])
	}
	for _, kind := range slices.Sorted(maps.Keys(s.ByError)) {
		fmt.Fprintf(&b, " error_%s=%d", kind, s.ByError[kind])
	}
	return b.String()
}

// errorKind names what went wrong with a post that got no answer.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
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
		if t.sum.ByError == nil {
			t.sum.ByError = map[string]int{}
		}
		t.sum.ByError[errorKind(res.Err)]++
	case res.Status/100 == 2:
		t.sum.OK++
	default:
		t.sum.Non2xx++
	}
	if res.Err == nil {
		if t.sum.ByStatus == nil {
			t.sum.ByStatus = map[int]int{}
		}
		t.sum.ByStatus[res.Status]++
	}
	t.lat.add(cmp.Or(res.Latency, res.Duration))
}

func (t *tally) summary() Summary {
	s := t.sum
	s.ByStatus, s.ByError = maps.Clone(s.ByStatus), maps.Clone(s.ByError)
	s.P50 = t.lat.quantile(0.50)
	s.P90 = t.lat.quantile(0.90)
	s.P99 = t.lat.quantile(0.99)
	s.P999 = t.lat.quantile(0.999)
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
