package ingest

import (
	"context"
	"time"
)

// job is one lookup: an ID and the newest receipt time that named it.
type job struct {
	id   int64
	seen time.Time
}

// outcome is what a worker reports back for a job. requeue asks for the job
// to be tried again (its worker panicked), with seen as its receipt time.
type outcome struct {
	id      int64
	requeue bool
	seen    time.Time
}

// coalescer is the dispatcher's bookkeeping. Each ID is in at most one of
// waiting or flying, so the memory it holds is bounded by the number of
// distinct IDs, however many callbacks repeat them.
type coalescer struct {
	waiting map[int64]time.Time // not yet handed to a worker → newest receipt
	order   []int64             // keys of waiting, oldest first, so no ID starves
	// flying holds IDs a worker is looking up → the newest receipt that
	// arrived since the lookup started, or the zero time if none did. A
	// non-zero value earns exactly one follow-up lookup when the flight ends,
	// because the object may have changed since the in-flight lookup began.
	flying map[int64]time.Time
}

func newCoalescer() *coalescer {
	return &coalescer{waiting: map[int64]time.Time{}, flying: map[int64]time.Time{}}
}

// add records that id was named by a callback received at seen.
func (c *coalescer) add(id int64, seen time.Time) {
	if f, ok := c.flying[id]; ok {
		if seen.After(f) {
			c.flying[id] = seen
		}
		return
	}
	if w, ok := c.waiting[id]; ok {
		if seen.After(w) {
			c.waiting[id] = seen
		}
		return
	}
	c.waiting[id] = seen
	c.order = append(c.order, id)
}

// next returns the oldest waiting job without removing it.
func (c *coalescer) next() (job, bool) {
	if len(c.order) == 0 {
		return job{}, false
	}
	id := c.order[0]
	return job{id: id, seen: c.waiting[id]}, true
}

// start moves the job that next returned from waiting to flying.
func (c *coalescer) start() {
	id := c.order[0]
	c.order = c.order[1:]
	if len(c.order) == 0 {
		c.order = nil // let the drained backing array go
	}
	delete(c.waiting, id)
	c.flying[id] = time.Time{}
}

// finish ends a flight and queues its follow-up or retry, if any.
func (c *coalescer) finish(o outcome) {
	followUp := c.flying[o.id]
	delete(c.flying, o.id)
	if o.requeue {
		c.add(o.id, o.seen)
	}
	if !followUp.IsZero() {
		c.add(o.id, followUp)
	}
}

// idle reports whether nothing waits and nothing is in flight.
func (c *coalescer) idle() bool { return len(c.waiting) == 0 && len(c.flying) == 0 }

// pending counts the lookups still owed: waiting IDs and follow-ups.
func (c *coalescer) pending() int {
	n := len(c.waiting)
	for _, f := range c.flying {
		if !f.IsZero() {
			n++
		}
	}
	return n
}

// dispatch feeds workers from the coalescer until intake is closed and all
// work is done, or until ctx is cancelled. It owns the coalescer and closes
// work when it returns, which tells the workers to stop.
func (p *Pipeline) dispatch(ctx context.Context, work chan<- job, done <-chan outcome) {
	defer close(work)
	c := newCoalescer()
	intake := (<-chan Callback)(p.intake)
	tick := time.NewTicker(p.opt.StatsInterval)
	defer tick.Stop()
	var last Stats

	for intake != nil || !c.idle() {
		// A nil channel never sends, so the send case is off while nothing waits.
		var out chan<- job
		next, ok := c.next()
		if ok {
			out = work
		}
		select {
		case cb, open := <-intake:
			if !open {
				intake = nil // closed by Close: finish what is here
				continue
			}
			for _, id := range cb.IDs {
				c.add(id, cb.Received)
			}
		case out <- next:
			// If ctx was cancelled meanwhile, the worker counts the job as
			// abandoned without starting it (see process).
			c.start()
		case o := <-done:
			c.finish(o)
		case <-tick.C:
			if s := p.Stats(); s != last {
				last = s
				p.logStats(ctx, len(c.waiting), len(c.flying))
			}
		case <-ctx.Done():
			p.abandon(ctx, c, done)
			return
		}
		p.waiting.Store(int64(len(c.waiting)))
	}
}

// abandon counts and logs what a cancelled drain leaves undone, then
// collects the outcome of every flight: a worker blocked on a full done
// channel would never exit. The in-flight lookups see the cancelled ctx and
// end quickly; each worker counts its own, and the follow-ups are counted here.
func (p *Pipeline) abandon(ctx context.Context, c *coalescer, done <-chan outcome) {
	n := c.pending()
	for cb := range drainNow(p.intake) { // callbacks still in intake are lost too
		n += len(cb.IDs)
	}
	p.stats.abandoned.Add(int64(n))
	p.log.WarnContext(ctx, "drain cut short, abandoning queued ids",
		"count", n, "in_flight", len(c.flying), "err", context.Cause(ctx))
	for len(c.flying) > 0 {
		delete(c.flying, (<-done).id)
	}
}

// drainNow yields what is buffered in ch right now, without waiting.
func drainNow(ch <-chan Callback) func(func(Callback) bool) {
	return func(yield func(Callback) bool) {
		for {
			select {
			case cb, ok := <-ch:
				if !ok || !yield(cb) {
					return
				}
			default:
				return
			}
		}
	}
}
