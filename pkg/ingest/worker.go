package ingest

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"callback/pkg/objects"
	"callback/pkg/store"
)

// process looks one job up, retrying as needed, and sends an online object to
// the writer. A panic (a bug in a Fetcher, say) is recovered here and the job
// is handed back for another try, so a crashing lookup loses no ID.
func (p *Pipeline) process(ctx context.Context, j job, results chan<- store.Sighting) (o outcome) {
	o.id = j.id
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
		case p.expired(j.seen, 0):
			p.stats.gaveUp.Add(1)
		default:
			o.requeue, o.seen = true, j.seen
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
	if p.expired(j.seen, 0) {
		p.stats.gaveUp.Add(1)
		p.log.DebugContext(ctx, "lookup skipped: receipt older than ttl", "object_id", j.id, "seen", j.seen)
		return o
	}
	obj, ok := p.lookup(ctx, j)
	if !ok {
		return o
	}
	p.stats.lookups.Add(1)
	if obj.Online {
		p.stats.online.Add(1)
		// The writer reads results until they are closed, which happens only
		// after every worker has returned, so this send cannot block forever.
		results <- store.Sighting{ID: j.id, Seen: j.seen}
	}
	return o
}

// lookup fetches j.id until it succeeds, the upstream refuses the ID for
// good, the receipt outlives the TTL, or ctx is cancelled. It counts and logs
// every way of failing, so callers only need ok.
func (p *Pipeline) lookup(ctx context.Context, j job) (objects.Object, bool) {
	for attempt := 1; ; attempt++ {
		obj, err := p.fetch.Fetch(ctx, j.id)
		if err == nil {
			return obj, true
		}
		if ctx.Err() != nil {
			p.stats.abandoned.Add(1)
			return objects.Object{}, false
		}
		if !temporary(err) {
			p.stats.rejected.Add(1)
			p.log.WarnContext(ctx, "lookup rejected", "object_id", j.id, "err", err)
			return objects.Object{}, false
		}
		wait := p.backoff(attempt, err)
		if p.expired(j.seen, wait) {
			p.stats.gaveUp.Add(1)
			p.log.WarnContext(ctx, "lookup given up: receipt older than ttl",
				"object_id", j.id, "attempt", attempt, "seen", j.seen, "err", err)
			return objects.Object{}, false
		}
		p.stats.retries.Add(1)
		p.log.DebugContext(ctx, "lookup retry", "object_id", j.id, "attempt", attempt, "wait", wait, "err", err)
		if !sleep(ctx, wait) {
			p.stats.abandoned.Add(1)
			return objects.Object{}, false
		}
	}
}

// expired reports whether a sighting received at seen will be older than the
// TTL after waiting wait: its row would be deleted by then, so looking it up
// again is pointless (a newer callback brings its own lookup).
func (p *Pipeline) expired(seen time.Time, wait time.Duration) bool {
	return time.Since(seen)+wait > p.opt.TTL
}

// temporary reports whether a failed lookup may succeed if tried again. Only
// a definite "no" from the upstream about this ID (a 4xx other than 408 and
// 429) is final; network errors, timeouts, 5xx, bad JSON and an answer about
// another ID are all worth another try.
func temporary(err error) bool {
	var se *objects.StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	return true
}

// backoff returns the wait before retry number attempt (1-based): exponential
// from RetryBase, capped at RetryMax, with "equal jitter" (a uniform pick in
// the upper half) so workers that failed together do not retry together. A
// Retry-After from the upstream wins when it asks for longer.
func (p *Pipeline) backoff(attempt int, err error) time.Duration {
	d := backoff(p.opt.RetryBase, p.opt.RetryMax, attempt)
	var se *objects.StatusError
	if errors.As(err, &se) && se.RetryAfter > d {
		d = min(se.RetryAfter, p.opt.TTL)
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
