package ingest

import (
	"context"
	"time"
)

// job is one lookup: an ID, the newest receipt that named it, and the
// intake log mark of the callback that carried that receipt.
type job struct {
	id   int64
	at   stamp
	mark uint64
}

// outcome is what a worker reports back for a job. requeue asks for the job
// to be tried again (its worker panicked), with at as its receipt.
// handed says the object was online and its sighting, with the job's debt,
// went to the writer.
type outcome struct {
	id      int64
	requeue bool
	handed  bool
	at      stamp
}

// dispatch feeds workers from the coalescer until intake is closed and all
// work is done, or until ctx is cancelled. It owns the coalescer and closes
// jobs when it returns, which tells the workers to stop. It hands out a job
// only with a permit from the limiter, which the worker returns after its
// first request; so the limit, not the size of the pool, decides how many
// lookups run.
//
// Replayed callbacks (Restore) are taken only while no live one is queued
// and replayed IDs leave room (replayRoom), so a replay can neither fill
// the receipts buffer nor the waiting set that Enqueue checks: it never
// costs a live callback its 202.
func (p *Pipeline) dispatch(ctx context.Context, jobs chan<- job, outcomes <-chan outcome) {
	defer close(jobs)
	c := newCoalescer(p.owe)
	receipts := (<-chan receipt)(p.receipts)
	tick := time.NewTicker(p.opt.StatsInterval)
	defer tick.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	var (
		last        Stats
		permit      bool            // a permit taken for next, not yet handed over
		permitFreed <-chan struct{} // closed when a permit may be free again
	)

	for receipts != nil || !c.idle() {
		// A nil channel never sends or receives, so the send case is off
		// while nothing waits or no permit is free, and the permitFreed case is
		// off unless a job waits for a permit.
		var out chan<- job
		var restores <-chan receipt
		if len(p.receipts) == 0 && c.waitingReplayed() < p.replayRoom() {
			restores = p.restores
		}
		permitFreed = nil
		next, ok := c.next()
		if ok && !permit {
			permit, permitFreed = p.lim.tryAcquire()
		}
		if ok && permit {
			out = jobs
		}
		select {
		case r, open := <-receipts:
			if !open {
				receipts = nil // closed by Close: finish what is here
				continue
			}
			c.take(r, false)
			// Now counted in waiting; published before the reservation
			// goes, so admit never counts these IDs in neither.
			p.nWaiting.Store(int64(c.waiting()))
			p.nQueued.Add(-int64(len(r.ids)))
		case r := <-restores:
			c.take(r, true)
		case out <- next:
			// If ctx was cancelled meanwhile, the worker counts the job as
			// abandoned without starting it (see process).
			c.start()
			permit = false // the worker owns it now
		case <-permitFreed:
		case o := <-outcomes:
			if ctx.Err() != nil {
				// Cancelled: select picks among ready cases at random, so
				// outcomes can come before ctx.Done. The worker may have
				// skipped or cut short the lookup; pay nothing.
				c.forget(o.id)
				continue
			}
			c.finish(o)
		case <-second.C:
			p.oldestQueued.Store(c.oldest())
			p.backlog.Store(int64(p.lim.backlog(p.opt.TTL)))
		case <-tick.C:
			if s := p.Stats(); s != last {
				last = s
				p.logStats(ctx, c.waiting(), c.inLookup())
			}
		case <-ctx.Done():
			if permit {
				p.lim.release(cancelled, 0)
			}
			p.abandon(ctx, c, outcomes)
			return
		}
		p.nWaiting.Store(int64(c.waiting()))
		p.nLive.Store(int64(c.waiting() - c.waitingReplayed()))
	}
}

// replayRoom is how many replayed IDs may wait: half of MaxWaiting, and no
// more than can be looked up within the TTL (see admit), so a replay never
// takes the room live callbacks need nor builds a backlog that expires
// unlooked-up; the rest of it waits in the intake log meanwhile.
func (p *Pipeline) replayRoom() int {
	room := max(1, p.opt.MaxWaiting/2)
	if b := int(p.backlog.Load()); b > 0 {
		room = min(room, b)
	}
	return room
}

// abandon counts and logs what a cancelled drain leaves undone, then
// collects the outcome of every flight: a worker blocked on a full outcomes
// channel would never exit. The in-flight lookups see the cancelled ctx and
// end quickly; each worker counts its own, and the follow-ups are counted
// here. Nothing abandoned pays its debt, so the intake log keeps it for the
// next start.
func (p *Pipeline) abandon(ctx context.Context, c *coalescer, outcomes <-chan outcome) {
	n := c.owed()
	for r := range drainNow(p.receipts) { // callbacks not yet coalesced are lost too
		n += len(r.ids)
	}
	p.stats.abandoned.Add(int64(n))
	p.log.WarnContext(ctx, "drain cut short, abandoning queued ids",
		"count", n, "ids_in_lookup", c.inLookup(), "err", context.Cause(ctx))
	for c.inLookup() > 0 {
		c.forget((<-outcomes).id) // waiting entries are counted above and dropped with c
	}
}

// drainNow yields what is buffered in ch right now, without waiting.
func drainNow(ch <-chan receipt) func(func(receipt) bool) {
	return func(yield func(receipt) bool) {
		for {
			select {
			case r, ok := <-ch:
				if !ok || !yield(r) {
					return
				}
			default:
				return
			}
		}
	}
}
