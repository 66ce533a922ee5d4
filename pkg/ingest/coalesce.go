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

// add records that id was named by a callback received at received.
func (c *coalescer) add(id int64, received time.Time) {
	if f, ok := c.flying[id]; ok {
		if received.After(f) {
			c.flying[id] = received
		}
		return
	}
	if w, ok := c.waiting[id]; ok {
		if received.After(w) {
			c.waiting[id] = received
		}
		return
	}
	c.waiting[id] = received
	c.order = append(c.order, id)
}

// next returns the oldest waiting job without removing it.
func (c *coalescer) next() (job, bool) {
	if len(c.order) == 0 {
		return job{}, false
	}
	id := c.order[0]
	return job{id: id, received: c.waiting[id]}, true
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
		c.add(o.id, o.received)
	}
	if !followUp.IsZero() {
		c.add(o.id, followUp)
	}
}

// idle reports whether nothing waits and nothing is in flight.
func (c *coalescer) idle() bool { return len(c.waiting) == 0 && len(c.flying) == 0 }

// owed counts the lookups not yet started: waiting IDs and follow-ups.
func (c *coalescer) owed() int {
	n := len(c.waiting)
	for _, f := range c.flying {
		if !f.IsZero() {
			n++
		}
	}
	return n
}
