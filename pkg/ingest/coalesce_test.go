package ingest

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestCoalescer(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)

	c := newCoalescer(nil)
	for _, id := range []int64{5, 5, 7, 5} { // one body with duplicates
		c.add(id, at(t0), 0, false)
	}
	if got, want := c.waiting(), 2; got != want {
		t.Fatalf("waiting = %d, want %d", got, want)
	}
	c.add(5, at(t2), 0, false) // a newer callback keeps the newest time...
	c.add(5, at(t1), 0, false) // ...even when an older one is merged after it
	j, ok := c.next()
	if !ok || j.id != 5 || j.at != at(t2) {
		t.Fatalf("next = %+v, %v; want id 5 received %v", j, ok, t2)
	}
	c.start()
	if _, waiting := waitingAt(c, 5); waiting {
		t.Fatal("5 still waiting after start")
	}

	// Arrivals during the flight collapse into one follow-up with the newest time.
	c.add(5, at(t1), 0, false)
	c.add(5, at(t2), 0, false)
	c.add(5, at(t0), 0, false)
	if got, want := c.waiting(), 1; got != want { // only 7
		t.Fatalf("waiting = %d, want %d", got, want)
	}
	if got, want := c.owed(), 2; got != want { // 7 and the follow-up of 5
		t.Fatalf("owed = %d, want %d", got, want)
	}
	c.finish(outcome{id: 5})
	if got, _ := waitingAt(c, 5); !got.Equal(t2) {
		t.Fatalf("follow-up received = %v, want %v", got, t2)
	}

	// Order is FIFO: 7 came first.
	if j, _ := c.next(); j.id != 7 {
		t.Fatalf("next id = %d, want 7", j.id)
	}
	c.start()
	c.start() // 5's follow-up
	c.finish(outcome{id: 7})
	if c.idle() {
		t.Fatal("idle while 5 is in flight")
	}
	c.finish(outcome{id: 5}) // no arrivals during this flight: no further lookup
	if !c.idle() {
		t.Fatalf("not idle: %v", c.ids)
	}

	// A requeued outcome (a panicking worker) comes back with its own time.
	c.add(9, at(t0), 0, false)
	c.start()
	c.finish(outcome{id: 9, requeue: true, at: at(t0)})
	if got, _ := waitingAt(c, 9); !got.Equal(t0) {
		t.Fatalf("requeued received = %v, want %v", got, t0)
	}
}

// An older receipt is subsumed by the newest and takes no debt, unless the
// newest is not durable (mark 0): then the older one's record is what a crash
// could replay, and the entry holds its debt, waiting or flying.
func TestCoalescerKeepsADurableDebt(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newCoalescer(nil)
	c.add(1, at(t0.Add(time.Second)), 0, false) // newest, in memory only
	if !c.add(1, at(t0), 7, false) || c.ids[1].mark != 7 {
		t.Fatalf("older durable receipt of a waiting entry: mark %d, want it to take mark 7", c.ids[1].mark)
	}
	if c.add(1, at(t0), 8, false) || c.ids[1].mark != 7 {
		t.Fatalf("a second older receipt took the debt: mark %d, want 7 kept", c.ids[1].mark)
	}
	c.next()
	c.start()
	c.add(1, at(t0.Add(3*time.Second)), 0, false) // follow-up in memory only
	if !c.add(1, at(t0.Add(2*time.Second)), 9, false) || c.ids[1].follow != 9 {
		t.Fatalf("older durable receipt of a follow-up: follow %d, want 9", c.ids[1].follow)
	}
}

// waitingAt returns the receipt time of id if it waits for a worker.
func waitingAt(c *coalescer, id int64) (time.Time, bool) {
	e, ok := c.ids[id]
	if !ok || e.flying {
		return time.Time{}, false
	}
	return time.Unix(0, e.received.wall), true
}

func TestBackoff(t *testing.T) {
	base, limit := 100*time.Millisecond, 5*time.Second
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{7, 2500 * time.Millisecond, 5 * time.Second}, // capped
		{1000, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			got := backoff(base, limit, tt.attempt)
			if got < tt.min || got > tt.max {
				t.Fatalf("backoff(attempt %d) = %v, want in [%v, %v]", tt.attempt, got, tt.min, tt.max)
			}
		}
	}
}

// BenchmarkCoalescer feeds the dispatcher's bookkeeping 200-ID bodies of the
// customer's range (0..99, so most IDs repeat) and of a wide range (every ID
// new), starting and finishing a lookup for every ID that waits, as the
// dispatcher does at saturation. It reports the cost per ID received.
func BenchmarkCoalescer(b *testing.B) {
	for _, tt := range []struct {
		name  string
		idMax int64
	}{{"customer-range", 100}, {"wide-range", 1 << 40}} {
		b.Run(tt.name, func(b *testing.B) {
			bodies := make([][]int64, 64)
			for i := range bodies {
				bodies[i] = make([]int64, 200)
				for j := range bodies[i] {
					bodies[i][j] = rand.Int64N(tt.idMax)
				}
			}
			c := newCoalescer(nil)
			now := time.Now()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				for _, id := range bodies[n%len(bodies)] {
					c.add(id, at(now), 0, false)
				}
				n++
				for {
					j, ok := c.next()
					if !ok {
						break
					}
					c.start()
					c.finish(outcome{id: j.id})
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*200), "ns/id")
		})
	}
}

// After a step of the wall clock the newer wall time and the later arrival
// may belong to different receipts: the entry keeps both.
func TestNewer(t *testing.T) {
	for _, tt := range []struct{ a, b, want stamp }{
		{stamp{1, 1}, stamp{2, 2}, stamp{2, 2}},
		{stamp{2, 2}, stamp{1, 1}, stamp{2, 2}},
		{stamp{5, 1}, stamp{3, 2}, stamp{5, 2}}, // the clock stepped back between them
		{stamp{1, -4}, stamp{1, -9}, stamp{1, -4}},
	} {
		if got := newer(tt.a, tt.b); got != tt.want {
			t.Errorf("newer(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// at is the stamp of a receipt at t, arriving at t on the monotonic clock
// too (the coalescer only compares stamps).
func at(t time.Time) stamp { return stamp{t.UnixNano(), t.UnixNano()} }
