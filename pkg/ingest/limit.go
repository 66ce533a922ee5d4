package ingest

import (
	"context"
	"errors"
	"math"
	"sync"
	"syscall"
	"time"
)

// limiter bounds the upstream requests in flight by a limit that adapts,
// between a floor and a ceiling, to what the upstream can take. It is the
// one place that decides how many lookups may run at once: the dispatcher
// takes a permit before it hands a job to a worker, and a worker takes one
// again before each retry.
//
// The algorithm is loss-based AIMD with windows, as in TCP and Netflix's
// AIMDLimit, not delay-based like Vegas or Gradient2: the upstream's answer
// time is uniform over 0.3 to 4.3 s by design, so a slow answer says nothing
// about queueing there, and a delay-based limit would shrink on noise. What
// does say "too much" is the upstream itself: 429 or 503, a refused
// connection, or most requests of a window timing out. Everything else that
// fails (a 500, a reset, the odd hang) is flakiness: the lookup is retried,
// but the limit does not move.
//
// An overload answer costs the limit one permit at once: the request that
// got it was one too many, and handing its permit to the next waiting lookup
// would only earn another refusal a millisecond later.
// So E requests over an upstream's capacity shrink the limit by E, to the
// capacity. Then every window (half a second by default) the limiter looks
// back:
//
//   - overloaded (an overload answer, or most requests timed out): what the
//     refusals left is remembered as the capacity, and the limit goes to 95 %
//     of it, or to 90 % of where the window began if that is lower; a
//     Retry-After holds growth until it passes, for at most maxHold: one
//     answer must not keep the limit at its floor for as long as it asks
//     (Retry-After: 86400 would be a day), and a longer hold than a few
//     windows only delays finding out whether the upstream has recovered.
//   - lookups waited for a permit and nothing was overloaded: the limit grows,
//     doubling while no overload has ever been seen (slow start), by a
//     quarter while it is below 80 % of the remembered capacity, and by 2 %
//     (at least one) near or above it, so it probes a capped upstream with
//     few refused requests and still climbs when the upstream grows.
//   - otherwise the limit was not the bottleneck and stays where it is.
type limiter struct {
	floor, ceiling float64
	window         time.Duration
	maxHold        time.Duration // the longest a Retry-After holds growth
	now            func() time.Time

	mu       sync.Mutex
	limit    float64
	inFlight int
	wake     chan struct{} // closed and replaced whenever a permit frees up or the limit grows...
	watched  bool          // ...if anyone was handed it to wait on

	// The current window, and what the next decision needs.
	start         time.Time
	startLimit    float64 // the limit when the window started
	samples       int
	overloads     int
	timeouts      int
	saturated     bool      // a lookup waited for a permit
	rememberedCap float64   // the limit before the last decrease; 0: never decreased
	holdUntil     time.Time // no growth before this (Retry-After)
	meanTime      float64   // seconds one request takes, a moving average; 0: none timed yet
}

// signal is what one upstream request says about the upstream's load.
type signal int

const (
	answered   signal = iota // an answer, good or bad, that says nothing about load
	overloaded               // 429, 503 or a refused connection: the upstream is over its capacity
	timedOut                 // no answer in time: overload if most requests of a window see it
	cancelled                // our own cancellation: no sample
)

// classify reads a lookup's error as a load signal (see Source).
func classify(err error) (signal, time.Duration) {
	var (
		ov overloadedError
		ra retryAfterError
		to timeoutError
	)
	var retryAfter time.Duration
	if errors.As(err, &ra) {
		retryAfter = ra.RetryAfter()
	}
	switch {
	case err == nil:
		return answered, 0
	case errors.Is(err, context.Canceled):
		return cancelled, 0
	case errors.As(err, &ov) && ov.Overloaded(), errors.Is(err, syscall.ECONNREFUSED):
		return overloaded, retryAfter
	case errors.As(err, &to) && to.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return timedOut, 0
	}
	return answered, 0
}

// The limiter's defaults; Options holds the floor and the ceiling.
const (
	limitWindow        = 500 * time.Millisecond
	timeoutOverloadPct = 50 // a window in which at least this share of requests timed out is overloaded
	minTimeoutSamples  = 10 // ...given at least this many requests, so a lone hang is never overload
	holdWindows        = 10 // a Retry-After holds growth for at most this many windows (and the TTL)

	// How the limit moves at the end of a window (see limiter).
	dropToCap     = 0.95 // after an overload: this share of what the refusals left...
	dropFromStart = 0.9  // ...and at most this share of where the window began
	nearCap       = 0.8  // below this share of the remembered capacity, grow fast
	growFast      = 1.25 // by a quarter
	growProbe     = 1.02 // near or above it, by 2 % (at least one)
)

// newLimiter returns a limiter between floor and ceiling whose Retry-After
// holds last no longer than holdWindows windows, nor ttl.
func newLimiter(floor, ceiling int, ttl time.Duration, now func() time.Time) *limiter {
	floor = max(1, min(floor, ceiling))
	return &limiter{
		floor: float64(floor), ceiling: float64(ceiling), window: limitWindow, now: now,
		maxHold: min(holdWindows*limitWindow, ttl),
		limit:   float64(floor), wake: make(chan struct{}), start: now(), startLimit: float64(floor),
	}
}

// tryAcquire takes a permit if one is free. If none is, it returns a channel
// that is closed once one may be: the dispatcher waits on it beside its
// other work.
func (l *limiter) tryAcquire() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tick()
	if l.inFlight < int(l.limit) {
		l.inFlight++
		return true, nil
	}
	l.saturated = true
	l.watched = true
	return false, l.wake
}

// acquire waits for a permit until ctx is done.
func (l *limiter) acquire(ctx context.Context) error {
	for {
		ok, wake := l.tryAcquire()
		if ok {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release returns a permit with what its request said about the upstream.
func (l *limiter) release(s signal, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case overloaded:
		l.overloads++
		l.limit = max(l.floor, l.limit-1) // this request was one too many
		if until := l.now().Add(min(retryAfter, l.maxHold)); until.After(l.holdUntil) {
			l.holdUntil = until
		}
		l.samples++
	case timedOut:
		l.timeouts++
		l.samples++
	case answered:
		l.samples++
	}
	l.inFlight--
	l.tick()
	l.wakeAll()
}

// wakeAll wakes whoever waits for a permit. Nearly every release finds no
// one waiting, and then costs no channel.
func (l *limiter) wakeAll() {
	if !l.watched {
		return
	}
	close(l.wake)
	l.wake, l.watched = make(chan struct{}), false
}

// tick ends the current window if it is over and adapts the limit. l.mu is held.
func (l *limiter) tick() {
	now := l.now()
	if now.Sub(l.start) < l.window {
		return
	}
	overload := l.overloads > 0 ||
		(l.samples >= minTimeoutSamples && l.timeouts*100 >= l.samples*timeoutOverloadPct)
	old := l.limit
	switch {
	case overload:
		// What the refusals left is about the upstream's capacity; stay a
		// little below it, and at most at 90 % of where the window began.
		l.rememberedCap = l.limit
		l.limit = max(l.floor, math.Floor(min(l.limit*dropToCap, l.startLimit*dropFromStart)))
	case l.saturated && !now.Before(l.holdUntil):
		switch {
		case l.rememberedCap == 0:
			l.limit *= 2
		case l.limit < nearCap*l.rememberedCap:
			l.limit *= growFast
		default:
			l.limit = max(l.limit+1, l.limit*growProbe)
		}
		l.limit = min(l.ceiling, math.Ceil(l.limit))
	}
	l.start, l.startLimit, l.samples, l.overloads, l.timeouts, l.saturated = now, l.limit, 0, 0, 0, false
	if l.limit > old {
		l.wakeAll()
	}
}

// observe records how long one upstream request took, for backlog: only
// answers and timeouts, what a lookup really costs.
func (l *limiter) observe(s signal, d time.Duration) {
	if s != answered && s != timedOut {
		return // a refusal or our own cancellation ends early: it would look faster
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.meanTime == 0 {
		l.meanTime = d.Seconds()
		return
	}
	l.meanTime += (d.Seconds() - l.meanTime) / 256 // a few seconds of lookups
}

// backlog returns how many IDs may wait for a permit and still all be
// looked up within ttl, by Little's law: requests complete at about the
// limit over the mean request time, and the last to start must finish one
// request's time before ttl is over. The limit it counts with is the one it
// is heading for: its ceiling while no overload has been seen (slow start
// doubles it every window), else where it stands. It is at least one limit's
// worth, and 0, meaning no bound, until a request has been timed.
func (l *limiter) backlog(ttl time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.meanTime == 0 {
		return 0
	}
	target := l.limit
	if l.rememberedCap == 0 {
		target = l.ceiling
	}
	return int(max(target, target/l.meanTime*(ttl.Seconds()-l.meanTime)))
}

// snapshot returns the limit and the requests in flight now, ending the
// window first if it is over.
func (l *limiter) snapshot() (limit, inFlight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tick()
	return int(l.limit), l.inFlight
}

// permit is a worker's hold on one of the limiter's permits.
type permit struct {
	lim  *limiter
	held bool
}

func (pm *permit) acquire(ctx context.Context) error {
	err := pm.lim.acquire(ctx)
	pm.held = err == nil
	return err
}

// release gives the permit back, if held, with what its request said.
func (pm *permit) release(s signal, retryAfter time.Duration) {
	if pm.held {
		pm.held = false
		pm.lim.release(s, retryAfter)
	}
}
