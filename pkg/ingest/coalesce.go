package ingest

import "time"

// job is one lookup: an ID and the newest receipt time that named it.
type job struct {
	id       int64
	received time.Time
}

// outcome is what a worker reports back for a job. requeue asks for the job
// to be tried again (its worker panicked), with received as its receipt time.
type outcome struct {
	id       int64
	requeue  bool
	received time.Time
}

// coalescer is the dispatcher's bookkeeping: one entry per distinct ID that
// waits for a worker or is being looked up, so the memory it holds is bounded
// by the number of distinct IDs, however many callbacks repeat them. At
// saturation it sees millions of IDs a second on one goroutine, so add costs
// one map lookup and times are kept as Unix nanoseconds.
type coalescer struct {
	ids      map[int64]entry
	order    []int64 // the waiting IDs, oldest first, so no ID starves
	nWaiting int     // entries not flying
	nFollow  int     // flying entries with a follow-up owed
}

// entry is one ID's state. While it waits, received is its newest receipt.
// While it flies, received is the newest receipt that arrived since the
// lookup started, or 0 if none did: a non-zero value earns exactly one
// follow-up lookup when the flight ends, because the object may have changed
// since the in-flight lookup began.
type entry struct {
	received int64 // Unix nanoseconds
	started  int64 // while flying: the in-flight job's receipt time
	flying   bool
}

func newCoalescer() *coalescer {
	return &coalescer{ids: map[int64]entry{}}
}

// add records that id was named by a callback received at received.
func (c *coalescer) add(id int64, received time.Time) {
	c.addNanos(id, received.UnixNano())
}

func (c *coalescer) addNanos(id, received int64) {
	e, ok := c.ids[id]
	switch {
	case !ok:
		c.ids[id] = entry{received: received}
		c.order = append(c.order, id)
		c.nWaiting++
	case received > e.received:
		if e.flying && e.received == 0 {
			c.nFollow++
		}
		e.received = received
		c.ids[id] = e
	}
}

// next returns the oldest waiting job without removing it.
func (c *coalescer) next() (job, bool) {
	if len(c.order) == 0 {
		return job{}, false
	}
	id := c.order[0]
	return job{id: id, received: time.Unix(0, c.ids[id].received)}, true
}

// start moves the job that next returned from waiting to flying.
func (c *coalescer) start() {
	id := c.order[0]
	c.order = c.order[1:]
	if len(c.order) == 0 {
		c.order = nil // let the drained backing array go
	}
	c.ids[id] = entry{flying: true, started: c.ids[id].received}
	c.nWaiting--
}

// finish ends a flight and queues its follow-up or retry, if any.
func (c *coalescer) finish(o outcome) {
	e := c.ids[o.id]
	delete(c.ids, o.id)
	if e.received != 0 {
		c.nFollow--
	}
	if o.requeue {
		c.add(o.id, o.received)
	}
	if e.received != 0 {
		c.addNanos(o.id, e.received)
	}
}

// waiting is the number of IDs waiting for a worker.
func (c *coalescer) waiting() int { return c.nWaiting }

// flying is the number of IDs being looked up.
func (c *coalescer) flying() int { return len(c.ids) - c.nWaiting }

// idle reports whether nothing waits and nothing is in flight.
func (c *coalescer) idle() bool { return len(c.ids) == 0 }

// owed counts the lookups not yet started: waiting IDs and follow-ups.
func (c *coalescer) owed() int { return c.nWaiting + c.nFollow }

// oldest returns the oldest receipt time (Unix ns) any entry stands for, or
// 0: a waiting entry's, or a flying entry's job's. It walks every entry, so
// the dispatcher calls it once a second, not per callback.
func (c *coalescer) oldest() int64 {
	var min int64
	for _, e := range c.ids {
		t := e.received
		if e.flying {
			t = e.started
		}
		min = earliest(min, t)
	}
	return min
}

// earliest returns the earlier of two receipt times in Unix ns, where 0
// means none.
func earliest(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}
