package ingest

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

// work is one worker: it looks up each job it is handed and reports its
// outcome, until the dispatcher closes jobs.
func (p *Pipeline) work(ctx context.Context, jobs <-chan job, outcomes chan<- outcome, sightings chan<- sighting) {
	for j := range jobs {
		outcomes <- p.process(ctx, j, sightings)
	}
}

// process looks one job up, retrying as needed, and sends an online object to
// the writer as a sighting. It holds the permit the dispatcher took for the
// first request. A panic (a bug in a Source, say) is recovered here and the
// job is handed back for another try, so a crashing lookup loses no ID.
func (p *Pipeline) process(ctx context.Context, j job, sightings chan<- sighting) (o outcome) {
	o.id = j.id
	pm := &permit{lim: p.lim, held: true}
	defer pm.release(cancelled, 0) // a permit no request used says nothing about the upstream
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		p.stats.panics.Add(1)
		p.log.ErrorContext(ctx, "lookup panicked", "object_id", j.id, "panic", r, "stack", string(debug.Stack()))
		switch {
		case ctx.Err() != nil:
			p.stats.abandoned.Add(1)
		case p.expired(j.at, 0):
			p.stats.gaveUp.Add(1)
		default:
			o.requeue, o.at = true, j.at
		}
	}()

	// No lookup starts once the drain is abandoned: the dispatcher's select
	// may still hand over a job after ctx is cancelled.
	if ctx.Err() != nil {
		p.stats.abandoned.Add(1)
		return o
	}
	// Under overload an ID can wait in the queue longer than the TTL; its row
	// would be swept as soon as it was written, so skip the lookup. A newer
	// callback naming it refreshes its receipt time and it is looked up then.
	if p.expired(j.at, 0) {
		p.stats.gaveUp.Add(1)
		p.log.DebugContext(ctx, "lookup skipped: receipt older than ttl", "object_id", j.id, "received", time.Unix(0, j.at.wall))
		return o
	}
	online, ok := p.lookup(ctx, j, pm)
	if !ok {
		return o
	}
	p.stats.lookups.Add(1)
	if online {
		p.stats.online.Add(1)
		// The writer reads sightings until they are closed, which happens
		// only after every worker has returned, so this send cannot block
		// forever. The job's debt goes with it.
		sightings <- sighting{Sighting{ID: j.id, Received: time.Unix(0, j.at.wall)}, j.at.mono, j.mark}
		o.handed = true
	}
	return o
}

// lookup asks the source about j.id until it answers, refuses the ID for
// good, the receipt outlives the TTL, or ctx is cancelled. Each request runs
// under a permit: pm's for the first, a new one for each retry, so a lookup
// that backs off holds none while it waits. It counts and logs every way of
// failing, so callers only need ok.
func (p *Pipeline) lookup(ctx context.Context, j job, pm *permit) (online, ok bool) {
	for attempt := 1; ; attempt++ {
		if !pm.held && pm.acquire(ctx) != nil {
			p.stats.abandoned.Add(1)
			return false, false
		}
		start := time.Now()
		online, err := p.src.Online(ctx, j.id)
		took := time.Since(start)
		if f := p.opt.ObserveLookupFunc; f != nil {
			f(took)
		}
		sig, retryAfter := classify(err)
		p.lim.observe(sig, took)
		pm.release(sig, retryAfter)
		if err == nil {
			return online, true
		}
		if ctx.Err() != nil {
			p.stats.abandoned.Add(1)
			return false, false
		}
		if permanent(err) {
			p.stats.rejected.Add(1)
			p.log.WarnContext(ctx, "lookup rejected", "object_id", j.id, "err", err)
			return false, false
		}
		wait := p.backoff(attempt, err)
		if p.expired(j.at, wait) {
			p.stats.gaveUp.Add(1)
			p.log.WarnContext(ctx, "lookup given up: receipt older than ttl",
				"object_id", j.id, "attempt", attempt, "received", time.Unix(0, j.at.wall), "err", err)
			return false, false
		}
		p.stats.retries.Add(1)
		p.log.DebugContext(ctx, "lookup retry", "object_id", j.id, "attempt", attempt, "wait", wait, "err", err)
		if !sleep(ctx, wait) {
			p.stats.abandoned.Add(1)
			return false, false
		}
	}
}

// expired reports whether a receipt will be older than the TTL after
// waiting wait, on the monotonic clock: its row would be deleted by then, so
// looking it up again is pointless (a newer callback brings its own lookup).
func (p *Pipeline) expired(at stamp, wait time.Duration) bool {
	return p.age(at.mono)+wait > p.opt.TTL
}

// permanent reports whether a failed lookup is the upstream's final word
// about this ID, so trying again is pointless (see Source). Network errors,
// timeouts, 5xx, bad JSON and an answer about another ID are all worth
// another try.
func permanent(err error) bool {
	var e permanentError
	return errors.As(err, &e) && e.Permanent()
}

// backoff returns the wait before retry number attempt (1-based): exponential
// from retryBase, capped at retryMax, with "equal jitter" (a uniform pick in
// the upper half) so workers that failed together do not retry together. A
// Retry-After from the upstream wins when it asks for longer.
func (p *Pipeline) backoff(attempt int, err error) time.Duration {
	d := backoff(retryBase, retryMax, attempt)
	var e retryAfterError
	if errors.As(err, &e) && e.RetryAfter() > d {
		d = min(e.RetryAfter(), p.opt.TTL)
	}
	return d
}

func backoff(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits for d or until ctx is done, and reports whether it waited.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
