package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// fill takes every free permit and reports how many it took, leaving the
// limiter saturated (a further request had to wait).
func fill(l *limiter) int {
	n := 0
	for {
		ok, _ := l.tryAcquire()
		if !ok {
			return n
		}
		n++
	}
}

func TestLimiterSlowStartToCeiling(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 100, time.Minute, clk.now)
	var got []int
	for range 6 {
		n := fill(l)
		got = append(got, n)
		for range n {
			l.release(answered, 0)
		}
		clk.advance(limitWindow)
	}
	want := []int{10, 20, 40, 80, 100, 100}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("permits per window = %v, want %v (doubling, capped at the ceiling)", got, want)
	}
}

// An upstream that serves 40 at once and answers 503 beyond: the limit drops
// to about its capacity, not to the floor, even though the quickly failing
// requests outnumber the successes in the window.
func TestLimiterFindsCapacity(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 1000, time.Minute, clk.now)
	const capacity = 40
	var limits []int
	refusedTotal, total := 0, 0
	for range 30 {
		n := fill(l)
		// The first capacity requests are served; the rest are refused
		// while the served ones are still in flight.
		refused := max(0, n-capacity)
		refusedTotal += refused
		total += n
		for range refused {
			l.release(overloaded, 0)
		}
		for range n - refused {
			l.release(answered, 0)
		}
		clk.advance(limitWindow)
		limit, _ := l.snapshot()
		limits = append(limits, limit)
	}
	for _, lim := range limits[10:] {
		if lim < capacity*7/10 || lim > capacity*13/10 {
			t.Fatalf("limits = %v, want them settled within 30 %% of the capacity %d", limits, capacity)
		}
	}
	if refusedTotal*10 >= total {
		t.Errorf("%d of %d requests refused, want under 10 %%", refusedTotal, total)
	}
}

// A flaky upstream (errors, resets, a minority of hangs) is not an
// overloaded one: the limit keeps growing.
func TestLimiterIgnoresFlakiness(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 10_000, time.Minute, clk.now)
	for range 8 {
		n := fill(l)
		for i := range n {
			switch i % 10 {
			case 0, 1, 2: // 30 % hang until the fetch timeout
				l.release(timedOut, 0)
			case 3, 4: // 20 % 500s and resets
				l.release(answered, 0)
			default:
				l.release(answered, 0)
			}
		}
		clk.advance(limitWindow)
	}
	if limit, _ := l.snapshot(); limit < 1000 {
		t.Errorf("limit = %d after 8 saturated windows with 30 %% timeouts, want it grown (>= 1000)", limit)
	}
}

func TestLimiterBacksOffOnTimeoutsAndRetryAfter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 10_000, time.Minute, clk.now)
	for range 4 { // grow to 160
		n := fill(l)
		for range n {
			l.release(answered, 0)
		}
		clk.advance(limitWindow)
	}
	n := fill(l)
	for range n {
		l.release(timedOut, 0) // most requests of a window time out: overload
	}
	clk.advance(limitWindow)
	after, _ := l.snapshot()
	if after >= n {
		t.Fatalf("limit = %d after a window of timeouts at %d, want lower", after, n)
	}

	// A 429 with Retry-After 5s holds growth for 5 s.
	ok, _ := l.tryAcquire()
	if !ok {
		t.Fatal("no permit free")
	}
	l.release(overloaded, 5*time.Second)
	clk.advance(limitWindow)
	held, _ := l.snapshot()
	for range 8 { // 4 s of saturated windows
		n := fill(l)
		for range n {
			l.release(answered, 0)
		}
		clk.advance(limitWindow)
	}
	if limit, _ := l.snapshot(); limit != held {
		t.Errorf("limit = %d within Retry-After, want it held at %d", limit, held)
	}
}

// One Retry-After of a day holds growth for holdWindows windows, not a day:
// the limit grows again after them. (Before, after one 429 with
// Retry-After: 86400 the limit stayed at its floor, and no alert fired.)
func TestLimiterRetryAfterHoldIsCapped(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 10_000, time.Minute, clk.now)
	ok, _ := l.tryAcquire()
	if !ok {
		t.Fatal("no permit free")
	}
	l.release(overloaded, 24*time.Hour)
	clk.advance(limitWindow)
	held, _ := l.snapshot()
	var limits []int
	for range holdWindows + 3 {
		n := fill(l)
		for range n {
			l.release(answered, 0)
		}
		clk.advance(limitWindow)
		limit, _ := l.snapshot()
		limits = append(limits, limit)
	}
	if limits[holdWindows-3] != held {
		t.Errorf("limits per window %v: want held at %d within the cap", limits, held)
	}
	if last := limits[len(limits)-1]; last <= held {
		t.Errorf("limits per window %v: want growth again after %d windows", limits, holdWindows)
	}
}

// The hold is at most the TTL, when that is shorter than holdWindows windows.
func TestLimiterRetryAfterHoldAtMostTTL(t *testing.T) {
	l := newLimiter(10, 100, time.Second, time.Now)
	if l.maxHold != time.Second {
		t.Errorf("maxHold = %v with a TTL of 1s, want 1s", l.maxHold)
	}
}

func TestLimiterFloorAndWake(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(4, 100, time.Minute, clk.now)
	for range 10 { // overload every window: never below the floor
		n := fill(l)
		for range n {
			l.release(overloaded, 0)
		}
		clk.advance(limitWindow)
	}
	if limit, _ := l.snapshot(); limit != 4 {
		t.Errorf("limit = %d after constant overload, want the floor 4", limit)
	}
	fill(l)
	ok, wake := l.tryAcquire()
	if ok {
		t.Fatal("got a permit beyond the limit")
	}
	acquired := make(chan error, 1)
	go func() { acquired <- l.acquire(context.Background()) }()
	l.release(answered, 0)
	<-wake // closed by the release
	if err := <-acquired; err != nil {
		t.Errorf("acquire = %v after a release, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire on a full limiter with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestClassify(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}
	timeout := &url.Error{Op: "Get", URL: "http://x", Err: context.DeadlineExceeded}
	tests := []struct {
		name string
		err  error
		want signal
	}{
		{"nil", nil, answered},
		{"503", fmt.Errorf("fetch: %w", &statusError{code: 503}), overloaded},
		{"429", fmt.Errorf("fetch: %w", &statusError{code: 429}), overloaded},
		{"500", fmt.Errorf("fetch: %w", &statusError{code: 500}), answered},
		{"refused", fmt.Errorf("fetch: %w", refused), overloaded},
		{"reset", errors.New("read: connection reset by peer"), answered},
		{"timeout", fmt.Errorf("fetch: %w", timeout), timedOut},
		{"cancelled", fmt.Errorf("fetch: %w", context.Canceled), cancelled},
	}
	for _, tt := range tests {
		if got, _ := classify(tt.err); got != tt.want {
			t.Errorf("classify(%s) = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// A refused request's permit does not go to the next lookup: against an
// upstream that refuses everything beyond its capacity, handing it on would
// only buy another refusal a millisecond later.
func TestLimiterRefusalConsumesPermit(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(5, 100, time.Minute, clk.now)
	for range fill(l) { // one saturated window: the limit doubles to 10
		l.release(answered, 0)
	}
	clk.advance(limitWindow)
	if n := fill(l); n != 10 {
		t.Fatalf("took %d permits, want 10", n)
	}
	l.release(overloaded, 0)
	if ok, _ := l.tryAcquire(); ok {
		t.Error("a permit was free right after a refusal, want the limit shrunk by one")
	}
	if limit, inFlight := l.snapshot(); limit != 9 || inFlight != 9 {
		t.Errorf("limit, in flight = %d, %d; want 9, 9", limit, inFlight)
	}
}

// The backlog is what the limit can look up within the TTL at the mean
// request time: with the ceiling while the upstream has never pushed back,
// with the limit once it has; never less than one limit's worth, and no
// bound before any request was timed.
func TestLimiterBacklog(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(10, 100, time.Minute, c.now)
	if got := l.backlog(30 * time.Second); got != 0 {
		t.Errorf("backlog before any request = %d, want 0 (no bound)", got)
	}
	l.observe(answered, 2*time.Second)
	if got, want := l.backlog(30*time.Second), 100/2*28; got != want {
		t.Errorf("backlog with the ceiling = %d, want %d", got, want)
	}
	l.rememberedCap, l.limit = 40, 20 // the upstream pushed back
	if got, want := l.backlog(30*time.Second), 20/2*28; got != want {
		t.Errorf("backlog with the limit = %d, want %d", got, want)
	}
	if got := l.backlog(time.Second); got != 20 {
		t.Errorf("backlog with a TTL below a request's time = %d, want one limit, 20", got)
	}
}
