package sim

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1e6, 4.3e9, 1<<63 - 1} {
		i := bucket(v)
		if up := upper(i); up < v {
			t.Errorf("upper(bucket(%d)) = %d, want >= %d", v, up, v)
		}
		if i > 0 {
			if below := upper(i - 1); below >= v {
				t.Errorf("upper(bucket(%d)-1) = %d, want < %d", v, below, v)
			}
		}
	}
	for range 10000 {
		v := rand.Uint64N(1 << 63)
		if up := upper(bucket(v)); up < v || float64(up-v) > float64(v)/64 {
			t.Fatalf("upper(bucket(%d)) = %d, want within 1/64 above", v, up)
		}
	}
}

func TestTallySummary(t *testing.T) {
	t.Parallel()
	var tl tally
	if got := tl.summary(); !reflect.DeepEqual(got, Summary{}) {
		t.Errorf("empty summary = %+v, want zero", got)
	}
	for ms := 1; ms <= 1000; ms++ {
		res := SendResult{IDs: make([]int64, 2), Duration: time.Duration(ms) * time.Millisecond, Status: 202}
		switch ms % 10 {
		case 1:
			res.Status, res.Err = 0, errors.New("connection reset")
		case 2:
			res.Status = 503
		}
		tl.add(res)
	}
	got := tl.summary()
	if got.Sent != 1000 || got.OK != 800 || got.Non2xx != 100 || got.Errors != 100 || got.IDs != 2000 {
		t.Errorf("counts = %+v, want 1000 sent, 800 ok, 100 non-2xx, 100 errors, 2000 ids", got)
	}
	near := func(name string, got, want time.Duration) {
		if got < want || float64(got-want) > float64(want)/64 {
			t.Errorf("%s = %v, want %v to 1/64 above", name, got, want)
		}
	}
	near("p50", got.P50, 500*time.Millisecond)
	near("p99", got.P99, 990*time.Millisecond)
	if got.Max != time.Second {
		t.Errorf("max = %v, want 1s", got.Max)
	}
	if s, want := got.String(), "sent=1000 ok=800 non_2xx=100 errors=100 ids=2000 rps=0.0 p50="; len(s) < len(want) || s[:len(want)] != want {
		t.Errorf("String() = %q, want prefix %q", s, want)
	}
}
