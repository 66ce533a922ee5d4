package ingest

// coalescer is the dispatcher's bookkeeping: one entry per distinct ID that
// waits for a worker or is being looked up, so the memory it holds is bounded
// by the number of distinct IDs, however many callbacks repeat them. At
// saturation it sees millions of IDs a second on one goroutine, so add costs
// one map lookup (and an intake log call only when a debt moves) and times are
// kept as stamps of nanoseconds.
//
// It also keeps the intake log's books (see IntakeLog): each entry holds one debt
// on the record of its newest durable receipt, and a flying entry one more
// for its follow-up, so a crash before the ID is settled replays that
// record. An older receipt of the same ID is subsumed: looking the object up
// now for the newest receipt writes the row it would have written, or a
// newer one. A newer receipt that is not durable (the intake log failed) takes
// the receipt time but not the debt, which stays on the durable record.
//
// IDs wait in two queues, oldest first within each: live callbacks, and
// callbacks replayed from the intake log after a restart. Live ones go first,
// so a replay never delays what senders post now; a replayed ID named by a
// live callback moves to the live queue.
type coalescer struct {
	ids      map[int64]entry
	live     []int64 // waiting IDs of live callbacks, oldest first
	replayed []int64 // waiting IDs of replayed ones; may hold IDs that moved or started (skipped)
	nWaiting int     // entries not flying
	nReplay  int     // of those, in the replayed queue
	nFollow  int     // flying entries with a follow-up owed
	owe      func(mark uint64, n int)
}

// entry is one ID's state. While it waits, received is its newest receipt
// and mark the intake log record its debt is on. While it flies, received is
// the newest receipt that arrived since the lookup started, or zero if none
// did: a non-zero one earns exactly one follow-up lookup when the flight
// ends, because the object may have changed since the in-flight lookup
// began; mark is then the job's record and follow the follow-up's. Mark 0 is
// none (the intake log is off or failed). Which receipt is newer is the wall
// clock's call (it is what the row keeps); see newer.
type entry struct {
	received stamp
	started  stamp // while flying: the in-flight job's receipt
	mark     uint64
	follow   uint64
	flying   bool
	// replay: waiting, it is in the replayed queue; flying, only replayed
	// callbacks named it, and its follow-up or retry goes back there.
	replay bool
}

// newCoalescer returns an empty coalescer that keeps its debts with owe
// (nil: no intake log).
func newCoalescer(owe func(mark uint64, n int)) *coalescer {
	if owe == nil {
		owe = func(uint64, int) {}
	}
	return &coalescer{ids: map[int64]entry{}, owe: owe}
}

// take coalesces one callback's IDs. The receipt holds one debt on its
// record, which take pays once every ID that needs the record holds its
// own.
func (c *coalescer) take(r receipt, replay bool) {
	took := 0
	for _, id := range r.ids {
		if c.add(id, r.at, r.mark, replay) {
			took++
		}
	}
	c.owe(r.mark, took-1)
}

// add records that id was named by a callback received at at, whose
// intake log record is mark, and reports whether the entry took a debt on mark
// (which the caller accounts for). A debt it gives up on another record is
// paid here.
func (c *coalescer) add(id int64, at stamp, mark uint64, replay bool) (took bool) {
	e, ok := c.ids[id]
	switch {
	case !ok:
		c.wait(id, entry{received: at, mark: mark, replay: replay})
		return true
	case e.flying:
		if replay && at.wall <= e.started.wall {
			return false // the lookup in flight began after this callback: it covers it
		}
		e.replay = e.replay && replay
		if at.wall <= e.received.wall {
			e.received.mono = max(e.received.mono, at.mono)
			e.follow, took = c.keepDurable(e.follow, mark)
			c.ids[id] = e
			return took
		}
		if e.received.wall == 0 {
			c.nFollow++
			e.received = at
		} else {
			e.received = newer(e.received, at)
		}
		e.follow, took = c.moveDebt(e.follow, mark)
	default:
		if !replay && e.replay { // named live: it is wanted now
			e.replay = false
			c.nReplay--
			c.dropStale()
			c.live = append(c.live, id)
		}
		if at.wall <= e.received.wall {
			e.received.mono = max(e.received.mono, at.mono)
			e.mark, took = c.keepDurable(e.mark, mark)
			c.ids[id] = e
			return took
		}
		e.received = newer(e.received, at)
		e.mark, took = c.moveDebt(e.mark, mark)
	}
	c.ids[id] = e
	return took
}

// moveDebt moves an entry's debt from the record old to the record of a
// newer receipt, new, and reports whether it took one there. A receipt that
// is not durable (new is 0) leaves the debt where it is: the newer receipt
// could not be replayed, the older one can.
func (c *coalescer) moveDebt(old, new uint64) (uint64, bool) {
	if new == 0 {
		return old, false
	}
	c.owe(old, -1)
	return new, true
}

// keepDurable is for an older receipt, on record mark, of an entry whose
// newest receipt's record is cur: an older receipt is subsumed and owes
// nothing, unless the newest is not durable (cur is 0), when the older one's
// record is what a crash could still replay, and the entry takes its debt.
func (c *coalescer) keepDurable(cur, mark uint64) (uint64, bool) {
	if cur == 0 && mark != 0 {
		return mark, true
	}
	return cur, false
}

// wait queues a new waiting entry for id, which has none.
func (c *coalescer) wait(id int64, e entry) {
	c.ids[id] = e
	c.nWaiting++
	if e.replay {
		c.nReplay++
		c.replayed = append(c.replayed, id)
	} else {
		c.live = append(c.live, id)
	}
}

// next returns the oldest waiting job, live ones first, without removing it.
func (c *coalescer) next() (job, bool) {
	var id int64
	switch {
	case len(c.live) > 0:
		id = c.live[0]
	case c.nReplay > 0:
		id = c.replayHead()
	default:
		return job{}, false
	}
	e := c.ids[id]
	return job{id: id, at: e.received, mark: e.mark}, true
}

// start moves the job that next returned from waiting to flying. The
// entry's debt goes with the job.
func (c *coalescer) start() {
	var id int64
	if len(c.live) > 0 {
		id, c.live = c.live[0], c.live[1:]
		if len(c.live) == 0 {
			c.live = nil // let the drained backing array go
		}
	} else {
		id = c.replayHead()
		c.replayed = c.replayed[1:]
		c.nReplay--
		c.dropStale()
	}
	e := c.ids[id]
	c.ids[id] = entry{flying: true, started: e.received, mark: e.mark, replay: e.replay}
	c.nWaiting--
}

// replayHead drops the IDs at the head of the replayed queue that moved to
// the live queue or started since, and returns the first one still waiting
// there. nReplay must be positive.
func (c *coalescer) replayHead() int64 {
	for {
		id := c.replayed[0]
		if e, ok := c.ids[id]; ok && !e.flying && e.replay {
			return id
		}
		c.replayed = c.replayed[1:]
	}
}

// dropStale lets the replayed queue's backing array go once nothing in it
// waits there any more.
func (c *coalescer) dropStale() {
	if c.nReplay == 0 {
		c.replayed = nil
	}
}

// finish ends a flight and queues its follow-up or retry, if any, in the
// queue it came from: replayed only if nothing live named it. The job's debt
// is paid unless it went to the writer or comes back as the retry.
func (c *coalescer) finish(o outcome) {
	e := c.ids[o.id]
	delete(c.ids, o.id)
	following := e.received.wall != 0
	if following {
		c.nFollow--
	}
	switch {
	case o.requeue && following && e.received.wall > o.at.wall:
		// The follow-up is newer and covers the retry; the debt moves to it
		// if it is durable.
		mark, _ := c.moveDebt(e.mark, e.follow)
		c.wait(o.id, entry{received: newer(e.received, o.at), mark: mark, replay: e.replay})
	case o.requeue:
		c.owe(e.follow, -1)
		at := o.at
		if following {
			at = newer(at, e.received)
		}
		c.wait(o.id, entry{received: at, mark: e.mark, replay: e.replay})
	default:
		if !o.handed {
			c.owe(e.mark, -1)
		}
		if following {
			c.wait(o.id, entry{received: e.received, mark: e.follow, replay: e.replay})
		}
	}
}

// forget ends a flight whose outcome came after the drain was abandoned:
// nothing is queued and no debt is paid, so the intake log keeps the callbacks
// for the next start, whatever the lookup found.
func (c *coalescer) forget(id int64) {
	if c.ids[id].received.wall != 0 {
		c.nFollow--
	}
	delete(c.ids, id)
}

// waiting is the number of IDs waiting for a worker.
func (c *coalescer) waiting() int { return c.nWaiting }

// waitingReplayed is the number of those that only a replay named.
func (c *coalescer) waitingReplayed() int { return c.nReplay }

// flying is the number of IDs being looked up.
func (c *coalescer) inLookup() int { return len(c.ids) - c.nWaiting }

// idle reports whether nothing waits and nothing is in flight.
func (c *coalescer) idle() bool { return len(c.ids) == 0 }

// owed counts the lookups not yet started: waiting IDs and follow-ups.
func (c *coalescer) owed() int { return c.nWaiting + c.nFollow }

// oldest returns the arrival (stamp.mono) of the oldest receipt any entry
// stands for, a waiting entry's or a flying entry's job's, or none. It walks
// every entry, so the dispatcher calls it once a second, not per callback.
func (c *coalescer) oldest() int64 {
	oldest := none
	for _, e := range c.ids {
		t := e.received.mono
		if e.flying {
			t = e.started.mono
		}
		oldest = min(oldest, t)
	}
	return oldest
}
