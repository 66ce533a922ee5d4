package ingest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"callback/pkg/logtest"
)

type fakeSource struct {
	OnlineFunc func(ctx context.Context, id int64) (bool, error)

	mu    sync.Mutex
	calls map[int64]int // guarded by mu
}

func (f *fakeSource) Online(ctx context.Context, id int64) (bool, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[int64]int{}
	}
	f.calls[id]++
	f.mu.Unlock()
	return f.OnlineFunc(ctx, id)
}

func (f *fakeSource) Calls(id int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// evenOnline answers like the customer's upstream after a fixed delay.
func evenOnline(delay time.Duration) func(context.Context, int64) (bool, error) {
	return func(ctx context.Context, id int64) (bool, error) {
		if !sleep(ctx, delay) {
			return false, ctx.Err()
		}
		return id%2 == 0, nil
	}
}

// statusError is an upstream answer as the objects client reports it: it
// answers the questions the pipeline asks of an error (see Source).
type statusError struct {
	code       int
	retryAfter time.Duration
}

func (e *statusError) Error() string             { return fmt.Sprintf("upstream status %d", e.code) }
func (e *statusError) Permanent() bool           { return e.code == 404 }
func (e *statusError) Overloaded() bool          { return e.code == 429 || e.code == 503 }
func (e *statusError) RetryAfter() time.Duration { return e.retryAfter }

// fakeUpserter records what was written, like the table would hold it.
type fakeUpserter struct {
	UpsertObjectsFunc func(ctx context.Context, s []Sighting) error // optional, runs first

	mu      sync.Mutex
	rows    map[int64]time.Time // guarded by mu
	batches []int               // guarded by mu: size of each successful batch
}

func (u *fakeUpserter) UpsertObjects(ctx context.Context, s []Sighting) error {
	if u.UpsertObjectsFunc != nil {
		if err := u.UpsertObjectsFunc(ctx, s); err != nil {
			return err
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.rows == nil {
		u.rows = map[int64]time.Time{}
	}
	for _, x := range s {
		if x.Received.After(u.rows[x.ID]) {
			u.rows[x.ID] = x.Received
		}
	}
	u.batches = append(u.batches, len(s))
	return nil
}

func (u *fakeUpserter) Rows() map[int64]time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.rows)
}

// start runs p in the background and returns a function that closes p and
// returns Run's error. It fails the test if Run returns before Close.
func start(t *testing.T, ctx context.Context, p *Pipeline) (closeAndWait func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error {
		p.Close()
		return <-done
	}
}

func TestPipelineWritesOnlineIDsWithReceiptTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSource{OnlineFunc: evenOnline(2 * time.Second)}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{Workers: 4})
		wait := start(t, t.Context(), p)

		t0 := time.Now()
		if err := p.Enqueue(context.Background(), []int64{0, 1, 2, 2, 2, 3, 4}, t0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		t1 := time.Now()
		if err := p.Enqueue(context.Background(), []int64{6, 7}, t1); err != nil {
			t.Fatal(err)
		}
		if err := wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}

		want := map[int64]time.Time{0: t0, 2: t0, 4: t0, 6: t1}
		if got := u.Rows(); !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("rows = %v, want %v", got, want)
		}
		if got := f.Calls(2); got != 1 {
			t.Errorf("lookups of a repeated id = %d, want 1", got)
		}
		s := p.Stats()
		if s.Accepted != 9 || s.Lookups != 7 || s.Online != 4 || s.Written != 4 {
			t.Errorf("stats = %+v", s)
		}
	})
}

func TestPipelineFollowUpForIDInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSource{OnlineFunc: evenOnline(3 * time.Second)}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{Workers: 2})
		wait := start(t, t.Context(), p)

		t0 := time.Now()
		must(t, p.Enqueue(context.Background(), []int64{8}, t0))
		time.Sleep(time.Second) // 8 is now in flight
		for range 3 {
			must(t, p.Enqueue(context.Background(), []int64{8}, time.Now()))
			time.Sleep(100 * time.Millisecond)
		}
		newest := time.Now().Add(-100 * time.Millisecond)
		must(t, wait())

		if got, want := f.Calls(8), 2; got != want {
			t.Errorf("lookups = %d, want %d (one, then exactly one follow-up)", got, want)
		}
		if got := u.Rows()[8]; !got.Equal(newest) {
			t.Errorf("last_seen = %v, want the newest receipt %v", got, newest)
		}
	})
}

func TestPipelineRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		failures := map[int64]int{2: 3, 4: 1} // transient failures before success
		f := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case id == 6:
				return false, fmt.Errorf("fetch object 6: %w", &statusError{code: 404})
			case id == 10:
				return false, fmt.Errorf("fetch object 10: %w", &statusError{code: 429, retryAfter: 2 * time.Second})
			case failures[id] > 0:
				failures[id]--
				if id == 2 {
					return false, fmt.Errorf("fetch object 2: %w", &statusError{code: 503})
				}
				return false, errors.New("connection reset by peer")
			}
			return true, nil
		}}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{Workers: 4, TTL: 10 * time.Second})
		wait := start(t, t.Context(), p)
		t0 := time.Now()
		must(t, p.Enqueue(context.Background(), []int64{2, 4, 6, 8, 10}, t0))
		must(t, wait())

		want := map[int64]time.Time{2: t0, 4: t0, 8: t0}
		if got := u.Rows(); !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("rows = %v, want %v", got, want)
		}
		if got := f.Calls(6); got != 1 {
			t.Errorf("404 fetched %d times, want 1 (not retried)", got)
		}
		// 429 with Retry-After 2s against a 10s TTL: about 5 tries, then given up.
		if got := f.Calls(10); got < 3 || got > 6 {
			t.Errorf("429 fetched %d times, want 3..6 (Retry-After honoured, then given up at TTL)", got)
		}
		s := p.Stats()
		if s.Rejected != 1 || s.GaveUp != 1 || s.Retries < 4 {
			t.Errorf("stats = %+v, want Rejected 1, GaveUp 1, Retries >= 4", s)
		}
		if since := time.Since(t0); since > 11*time.Second {
			t.Errorf("drain took %v, want it bounded by the TTL", since)
		}
	})
}

func TestPipelineRecoversWorkerPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var once sync.Once
		f := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
			if id == 4 {
				once.Do(func() { panic("injected") })
			}
			return true, nil
		}}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{Workers: 1})
		wait := start(t, t.Context(), p)
		t0 := time.Now()
		must(t, p.Enqueue(context.Background(), []int64{2, 4, 6}, t0))
		must(t, wait())

		if got, want := slices.Sorted(maps.Keys(u.Rows())), []int64{2, 4, 6}; !slices.Equal(got, want) {
			t.Errorf("written ids = %v, want %v", got, want)
		}
		if got := p.Stats().Panics; got != 1 {
			t.Errorf("panics = %d, want 1", got)
		}
	})
}

func TestWriterKeepsRowsWhileDatabaseFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		var attempts atomic.Int32
		u := &fakeUpserter{UpsertObjectsFunc: func(ctx context.Context, s []Sighting) error {
			if attempts.Add(1) == 2 {
				panic("driver bug") // a panic is a failure like any other
			}
			return db.upsert(ctx, s)
		}}
		f := &fakeSource{OnlineFunc: evenOnline(100 * time.Millisecond)}
		p := New(logtest.Discard(), f, u, Options{Workers: 8, BatchSize: 10})
		wait := start(t, t.Context(), p)

		// The same ID seen three times while the database is down is kept once,
		// with its newest time.
		var newest time.Time
		for i := range 3 {
			newest = time.Now()
			ids := []int64{0}
			for id := int64(2); id < 60; id += 2 {
				ids = append(ids, id+int64(i)*100)
			}
			must(t, p.Enqueue(context.Background(), ids, newest))
			time.Sleep(2 * time.Second)
		}
		db.set(false)
		must(t, wait())

		rows := u.Rows()
		if got, want := len(rows), 1+3*29; got != want {
			t.Errorf("rows = %d, want %d", got, want)
		}
		if got := rows[0]; !got.Equal(newest) {
			t.Errorf("row 0 last_seen = %v, want newest %v", got, newest)
		}
		s := p.Stats()
		if s.WriteErrs < 2 || s.Panics != 1 {
			t.Errorf("stats = %+v, want WriteErrs >= 2 and Panics 1", s)
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, n := range u.batches {
			if n > 10 {
				t.Errorf("batch of %d rows, want at most BatchSize 10", n)
			}
		}
	})
}

func TestEnqueueRefuses(t *testing.T) {
	f := &fakeSource{OnlineFunc: evenOnline(0)}
	u := &fakeUpserter{}
	t.Run("queue-full", func(t *testing.T) {
		p := New(logtest.Discard(), f, u, Options{QueueSize: 1}) // not running: nothing drains
		must(t, p.Enqueue(context.Background(), []int64{1}, time.Time{}))
		if err := p.Enqueue(context.Background(), []int64{2}, time.Time{}); !errors.Is(err, ErrFull) {
			t.Errorf("Enqueue = %v, want ErrFull", err)
		}
		if err := p.Enqueue(context.Background(), nil, time.Time{}); err != nil {
			t.Errorf("empty Enqueue = %v, want nil (a no-op)", err)
		}
	})
	t.Run("queue-full-waits-a-moment", func(t *testing.T) {
		// A buffer full for a moment (the dispatcher behind by a GC pause)
		// costs the callback a wait, not a 503. (Before, admit refused it
		// at once.)
		synctest.Test(t, func(t *testing.T) {
			p := New(logtest.Discard(), f, u, Options{QueueSize: 1}) // not running: the test drains
			must(t, p.Enqueue(context.Background(), []int64{1}, time.Now()))
			go func() {
				time.Sleep(100 * time.Millisecond)
				<-p.receipts
			}()
			if err := p.Enqueue(context.Background(), []int64{2}, time.Now()); err != nil {
				t.Errorf("Enqueue while the buffer frees up within %v = %v, want nil", fullWait, err)
			}
		})
	})
	t.Run("max-waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			block := make(chan struct{})
			f := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
				<-block
				return false, nil
			}}
			p := New(logtest.Discard(), f, u, Options{Workers: 1, MaxWaiting: 4})
			wait := start(t, t.Context(), p)
			must(t, p.Enqueue(context.Background(), []int64{1, 2, 3, 4}, time.Now())) // 1 in flight, 3 waiting
			synctest.Wait()
			if err := p.Enqueue(context.Background(), []int64{5, 6}, time.Time{}); !errors.Is(err, ErrFull) {
				t.Errorf("Enqueue = %v, want ErrFull", err)
			}
			close(block)
			must(t, wait())
		})
	})
	t.Run("max-waiting-concurrent", func(t *testing.T) {
		// MaxWaiting is a hard cap although the dispatcher has not counted
		// any of these yet (it is not running). (Before, every callback
		// passed a check of the waiting IDs the dispatcher had published:
		// concurrent 1 MiB bodies put 2.21 M IDs waiting against 1 M.)
		p := New(logtest.Discard(), f, u, Options{MaxWaiting: 1000, QueueSize: 64})
		var accepted atomic.Int64
		var wg sync.WaitGroup
		for i := range int64(20) {
			wg.Go(func() {
				ids := make([]int64, 100)
				for j := range ids {
					ids[j] = i*1000 + int64(j)
				}
				if p.Enqueue(context.Background(), ids, time.Now()) == nil {
					accepted.Add(int64(len(ids)))
				}
			})
		}
		wg.Wait()
		if got := accepted.Load(); got != 1000 {
			t.Errorf("%d IDs accepted, want exactly MaxWaiting, 1000", got)
		}
	})
	t.Run("backlog-beyond-ttl", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// 10 lookups of 1 s at a time: 10 IDs a second, so with a TTL of
			// 5 s, 40 may wait (the last must start a lookup's time before
			// the TTL ends).
			f := &fakeSource{OnlineFunc: evenOnline(time.Second)}
			p := New(logtest.Discard(), f, u, Options{Workers: 10, MinLookups: 10, TTL: 5 * time.Second})
			wait := start(t, t.Context(), p)
			ids := func(from, n int64) []int64 {
				var s []int64
				for i := range n {
					s = append(s, from+i)
				}
				return s
			}
			must(t, p.Enqueue(context.Background(), ids(0, 10), time.Now()))
			// Timed at 1 s; the bound is published on the next whole second
			// (at 1 s itself the tick may come before the lookups are timed).
			time.Sleep(2500 * time.Millisecond)
			must(t, p.Enqueue(context.Background(), ids(100, 50), time.Now())) // 10 fly, 40 wait
			synctest.Wait()
			if err := p.Enqueue(context.Background(), []int64{1000}, time.Now()); !errors.Is(err, ErrBacklog) {
				t.Errorf("Enqueue with 40 waiting = %v, want ErrBacklog", err)
			}
			time.Sleep(5 * time.Second)
			must(t, p.Enqueue(context.Background(), []int64{1000}, time.Now()))
			must(t, wait())
			if s := p.Stats(); s.GaveUp != 0 {
				t.Errorf("%d accepted ids given up, want 0: the bound is what the TTL allows", s.GaveUp)
			}
		})
	})
	t.Run("closed", func(t *testing.T) {
		p := New(logtest.Discard(), f, u, Options{})
		p.Close()
		p.Close() // idempotent
		if err := p.Enqueue(context.Background(), []int64{1}, time.Time{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Enqueue = %v, want ErrClosed", err)
		}
		if p.Accepting() {
			t.Error("Accepting after Close")
		}
	})
}

func TestRunAbandonsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSource{OnlineFunc: evenOnline(time.Hour)} // never finishes in time
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{Workers: 2})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		must(t, p.Enqueue(context.Background(), []int64{1, 2, 3, 4, 5}, time.Now()))
		synctest.Wait() // two in flight, three waiting
		p.Close()
		time.Sleep(time.Minute) // the drain "timeout"
		cancel()
		err := <-done
		if err == nil || !strings.Contains(err.Error(), "5 ids abandoned") {
			t.Errorf("Run = %v, want an error counting 5 abandoned ids", err)
		}
		if got := p.Stats().Abandoned; got != 5 {
			t.Errorf("abandoned = %d, want 5", got)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriterKeepsNewestPerID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dup bool
		u := &fakeUpserter{UpsertObjectsFunc: func(_ context.Context, s []Sighting) error {
			seen := map[int64]bool{}
			for _, x := range s {
				dup = dup || seen[x.ID]
				seen[x.ID] = true
			}
			return nil
		}}
		p := New(logtest.Discard(), &fakeSource{}, u, Options{})
		t0 := time.Now()
		sightings := make(chan sighting, 4)
		// Lookups finish in any order: an older receipt may arrive last.
		sightings <- sighting{Sighting: Sighting{ID: 1, Received: t0.Add(2 * time.Second)}}
		sightings <- sighting{Sighting: Sighting{ID: 1, Received: t0}}
		sightings <- sighting{Sighting: Sighting{ID: 2, Received: t0}}
		close(sightings)
		p.write(t.Context(), sightings)

		want := map[int64]time.Time{1: t0.Add(2 * time.Second), 2: t0}
		if got := u.Rows(); !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("rows = %v, want %v", got, want)
		}
		if dup {
			t.Error("a batch held the same id twice")
		}
	})
}

// Writes resume within a second of the database coming back, however long
// it was down: the write backoff is capped at writeRetryMax. (Before, it
// shared the lookups' 5 s cap.)
func TestWritesResumeWithinASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(0)}, u, Options{TTL: time.Hour})
		wait := start(t, t.Context(), p)
		// Five outages: where the database comes back within the retry's
		// wait is chance, so one could pass under a longer cap.
		for i := range int64(5) {
			db.set(true)
			must(t, p.Enqueue(context.Background(), []int64{2 * i}, time.Now()))
			time.Sleep(30 * time.Second) // many failures: the backoff is at its cap
			db.set(false)
			back := time.Now()
			for len(u.Rows()) <= int(i) {
				time.Sleep(10 * time.Millisecond)
			}
			if took := time.Since(back); took > 1100*time.Millisecond {
				t.Errorf("outage %d: row written %v after the database came back, want within about 1 s", i+1, took)
			}
		}
		must(t, wait())
	})
}

// Through a database outage under steady traffic, OldestUnwritten tells how
// long rows have been owed, although every callback refreshes their receipt
// times. (Before, it gave the newest refresh's age, a second or so, and the
// alert on it never fired.)
func TestOldestUnwrittenCountsAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(0)}, u, Options{})
		wait := start(t, t.Context(), p)
		down := time.Now()
		for range 30 {
			must(t, p.Enqueue(context.Background(), []int64{2, 4}, time.Now()))
			time.Sleep(time.Second)
		}
		if got := time.Since(p.OldestUnwritten()); got < 28*time.Second {
			t.Errorf("oldest unwritten %v old after %v of outage, want about the outage", got, time.Since(down))
		}
		db.set(false)
		time.Sleep(3 * time.Second)
		if got := p.OldestUnwritten(); !got.IsZero() {
			t.Errorf("oldest unwritten = %v after the rows were written, want none", got)
		}
		must(t, wait())
	})
}

// The row age (the freshness SLO's indicator) counts an outage the same way:
// from the oldest callback a row carried while unwritten, however often newer
// ones named the ID again. Without an outage it is about the lookup's time.
func TestRowAgeCountsAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		var mu sync.Mutex
		var ages []time.Duration
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(100 * time.Millisecond)}, u, Options{
			ObserveRowAgeFunc: func(d time.Duration) { mu.Lock(); ages = append(ages, d); mu.Unlock() },
		})
		wait := start(t, t.Context(), p)
		for range 20 {
			must(t, p.Enqueue(context.Background(), []int64{2}, time.Now()))
			time.Sleep(time.Second)
		}
		db.set(false)
		time.Sleep(3 * time.Second)
		must(t, p.Enqueue(context.Background(), []int64{4}, time.Now()))
		time.Sleep(3 * time.Second)
		must(t, wait())
		mu.Lock()
		defer mu.Unlock()
		if len(ages) != 2 {
			t.Fatalf("%d rows observed, want 2: %v", len(ages), ages)
		}
		if ages[0] < 20*time.Second {
			t.Errorf("row 2 written %v after it was first owed, want the 20 s outage at least", ages[0])
		}
		if ages[1] > time.Second {
			t.Errorf("row 4 written %v after its callback, want about the lookup's 100 ms", ages[1])
		}
	})
}

// Through a database outage the writer drops the rows whose receipt is
// older than the TTL (the sweeper would delete them at once), so its memory
// is bounded by the IDs seen within a TTL, not by every ID seen. (Before, it
// kept them all, for as long as the outage lasted.)
func TestWriterDropsRowsOlderThanTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(0)}, u, Options{TTL: 5 * time.Second})
		wait := start(t, t.Context(), p)
		for sec := range int64(20) { // 50 new online IDs a second
			ids := make([]int64, 50)
			for i := range ids {
				ids[i] = 2 * (sec*50 + int64(i))
			}
			must(t, p.Enqueue(context.Background(), ids, time.Now()))
			time.Sleep(time.Second)
		}
		db.set(false)
		must(t, wait())
		expired, written := p.Stats().Expired, int64(len(u.Rows()))
		if expired+written != 1000 || expired < 1000-7*50 {
			t.Errorf("%d rows expired and %d written of 1000, want all but the last TTL's expired", expired, written)
		}
	})
}

// A row whose newest sighting is not durable keeps the debt of an older,
// durable one until it is written, and pays it then.
func TestWriterKeepsADurableDebt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &fakeJournal{}
		j.Owe(5, 1) // the older sighting's debt, as the dispatcher hands it over
		var written map[uint64]int
		u := &fakeUpserter{UpsertObjectsFunc: func(context.Context, []Sighting) error {
			written = j.Owed()
			return nil
		}}
		p := New(logtest.Discard(), &fakeSource{}, u, Options{IntakeLog: j})
		t0 := time.Now()
		sightings := make(chan sighting, 2)
		sightings <- sighting{Sighting: Sighting{ID: 1, Received: t0.Add(time.Second)}} // in memory only
		sightings <- sighting{Sighting: Sighting{ID: 1, Received: t0}, mark: 5}
		close(sightings)
		p.write(t.Context(), sightings)
		if want := map[uint64]int{5: 1}; !maps.Equal(written, want) {
			t.Errorf("debts while the row was written = %v, want %v", written, want)
		}
		if got := j.Owed(); len(got) != 0 {
			t.Errorf("debts after the write = %v, want none", got)
		}
	})
}

func TestWritesBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(0)}, u, Options{})
		wait := start(t, t.Context(), p)
		must(t, p.Enqueue(context.Background(), []int64{2}, time.Now()))
		time.Sleep(time.Second)
		if !p.WritesBehind() {
			t.Error("WritesBehind = false while writes fail, want true")
		}
		db.set(false)
		time.Sleep(10 * time.Second)
		if p.WritesBehind() {
			t.Error("WritesBehind = true after a successful write, want false")
		}
		must(t, wait())
	})
}

func TestPipelineSkipsExpiredReceipts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One lookup at a time, and the first (of offline ID 1) takes 31 s:
		// ID 2 waits in the queue for longer than the TTL, and its row
		// would be swept at once, so it is not looked up; ID 4, queued 2 s
		// later, is.
		f := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
			if id == 1 {
				time.Sleep(31 * time.Second)
			}
			return id%2 == 0, nil
		}}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), f, u, Options{TTL: 30 * time.Second, Workers: 1, MinLookups: 1})
		wait := start(t, t.Context(), p)
		must(t, p.Enqueue(context.Background(), []int64{1, 2}, time.Now()))
		time.Sleep(2 * time.Second)
		must(t, p.Enqueue(context.Background(), []int64{4}, time.Now()))
		must(t, wait())
		if got := f.Calls(2); got != 0 {
			t.Errorf("expired id fetched %d times, want 0", got)
		}
		if got, want := slices.Sorted(maps.Keys(u.Rows())), []int64{4}; !slices.Equal(got, want) {
			t.Errorf("rows = %v, want %v", got, want)
		}
		if got := p.Stats().GaveUp; got != 1 {
			t.Errorf("gave up = %d, want 1", got)
		}
	})
}

// A wall clock that steps (NTP after a drift, a VM resumed) changes the
// receipt times the handler stamps, which the rows keep as last_seen, but no
// decision: ages are measured on the monotonic clock from when a callback
// reached the pipeline. Callbacks stamped an hour early and an hour late,
// with lookups of 2 s and the database down for 4 s against a TTL of 5 s,
// are all looked up, written with their stamps, and keep their intake log
// debts until then. (Before, the one stamped an hour early was given up as
// older than the TTL, the moment it was dispatched.)
func TestWallClockStepsDecideNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		u := &fakeUpserter{UpsertObjectsFunc: db.upsert}
		j := &fakeJournal{}
		f := &fakeSource{OnlineFunc: evenOnline(2 * time.Second)}
		p := New(logtest.Discard(), f, u, Options{TTL: 5 * time.Second, IntakeLog: j})
		wait := start(t, t.Context(), p)
		back, ahead := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		must(t, p.Enqueue(context.Background(), []int64{2}, back))
		must(t, p.Enqueue(context.Background(), []int64{4}, ahead))
		time.Sleep(3 * time.Second) // looked up, the rows held: the database is down
		if got := len(j.Owed()); got != 2 {
			t.Errorf("debts on %d records while their rows are unwritten, want 2", got)
		}
		db.set(false)
		time.Sleep(2 * time.Second)
		rows := u.Rows()
		if !rows[2].Equal(back) || !rows[4].Equal(ahead) {
			t.Errorf("rows = %v, want 2 at %v and 4 at %v", rows, back, ahead)
		}
		if s := p.Stats(); s.GaveUp != 0 || s.Expired != 0 {
			t.Errorf("gave up %d, expired %d, want none", s.GaveUp, s.Expired)
		}
		if got := j.Owed(); len(got) != 0 {
			t.Errorf("debts after the writes = %v, want none", got)
		}
		must(t, wait())
	})
}

// fakeJournal hands out a new mark per Append and keeps the books of debts
// as the real intake log does.
type fakeJournal struct {
	AppendFunc func(ctx context.Context, ids []int64, received time.Time) error // optional

	mu    sync.Mutex
	marks uint64
	owed  map[uint64]int // guarded by mu
}

func (f *fakeJournal) Append(ctx context.Context, ids []int64, received time.Time) (uint64, error) {
	if f.AppendFunc != nil {
		if err := f.AppendFunc(ctx, ids, received); err != nil {
			return 0, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks++
	f.debt(f.marks, 1)
	return f.marks, nil
}

func (f *fakeJournal) Owe(mark uint64, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.debt(mark, n)
}

// debt changes mark's debt; f.mu is held.
func (f *fakeJournal) debt(mark uint64, n int) {
	if f.owed == nil {
		f.owed = map[uint64]int{}
	}
	f.owed[mark] += n
	if f.owed[mark] < 0 {
		panic(fmt.Sprintf("mark %d paid more than was owed", mark))
	}
	if f.owed[mark] == 0 {
		delete(f.owed, mark)
	}
}

// Owed returns the marks with debts and how many.
func (f *fakeJournal) Owed() map[uint64]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.owed)
}

type fullErr struct{}

func (fullErr) Error() string { return "intakeLog full" }
func (fullErr) Full() bool    { return true }

func TestEnqueueJournal(t *testing.T) {
	t.Run("appended-before-queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var logged [][]int64
			j := &fakeJournal{AppendFunc: func(_ context.Context, ids []int64, _ time.Time) error {
				logged = append(logged, slices.Clone(ids))
				return nil
			}}
			u := &fakeUpserter{}
			p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(time.Second)}, u, Options{IntakeLog: j})
			wait := start(t, t.Context(), p)
			must(t, p.Enqueue(context.Background(), []int64{2, 2, 4}, time.Now()))
			must(t, p.Enqueue(context.Background(), []int64{}, time.Now())) // nothing to log
			must(t, wait())
			if want := [][]int64{{2, 4}}; fmt.Sprint(logged) != fmt.Sprint(want) {
				t.Errorf("logged %v, want %v (repeats dropped, empty bodies not logged)", logged, want)
			}
			if got := len(u.Rows()); got != 2 {
				t.Errorf("rows = %d, want 2", got)
			}
		})
	})
	t.Run("intakeLog-full-refuses", func(t *testing.T) {
		j := &fakeJournal{AppendFunc: func(context.Context, []int64, time.Time) error { return fmt.Errorf("wal: %w", fullErr{}) }}
		p := New(logtest.Discard(), &fakeSource{}, &fakeUpserter{}, Options{IntakeLog: j})
		if err := p.Enqueue(context.Background(), []int64{1}, time.Now()); !errors.Is(err, ErrFull) {
			t.Errorf("Enqueue = %v, want ErrFull", err)
		}
	})
	t.Run("intakeLog-failure-accepts-in-memory", func(t *testing.T) {
		j := &fakeJournal{AppendFunc: func(context.Context, []int64, time.Time) error { return errors.New("fdatasync: EIO") }}
		p := New(logtest.Discard(), &fakeSource{}, &fakeUpserter{}, Options{IntakeLog: j})
		if err := p.Enqueue(context.Background(), []int64{1, 2}, time.Now()); err != nil {
			t.Errorf("Enqueue = %v, want nil: a failed disk must not refuse callbacks", err)
		}
		if s := p.Stats(); s.NotDurable != 1 || s.Accepted != 2 {
			t.Errorf("stats %+v, want NotDurable 1, Accepted 2", s)
		}
	})
}

// Restore queues what the intake log held, waiting for the dispatcher, and
// never logs it again; the debts it brings are paid once written.
func TestRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &fakeJournal{AppendFunc: func(context.Context, []int64, time.Time) error {
			t.Error("Restore logged a callback again")
			return nil
		}}
		u := &fakeUpserter{}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(time.Second)}, u, Options{IntakeLog: j, QueueSize: 1})
		t0 := time.Now().Add(-5 * time.Second)
		done := make(chan error, 1)
		go func() {
			for i := range int64(5) {
				j.Owe(uint64(i+1), 1) // as Replay does for each record it hands out
				if err := p.Restore(t.Context(), []int64{2 * i, 2 * i}, t0, uint64(i+1)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		synctest.Wait()
		wait := start(t, t.Context(), p)
		must(t, <-done)
		must(t, wait())
		want := map[int64]time.Time{0: t0, 2: t0, 4: t0, 6: t0, 8: t0}
		if got := u.Rows(); !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("rows = %v, want %v with the original receipt time", got, want)
		}
		if got := p.Stats().Restored; got != 5 {
			t.Errorf("Restored = %d, want 5", got)
		}
		if got := j.Owed(); len(got) != 0 {
			t.Errorf("debts %v left after the drain, want none", got)
		}
	})
}

// A replay never costs a live callback its 202: replayed callbacks wait
// while live ones are queued, so they can fill neither the receipts buffer
// nor the waiting set, and live IDs are looked up first. (Before, Restore
// kept the buffer full and Enqueue answered ErrFull.)
func TestReplayYieldsToLiveCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu    sync.Mutex
			order []int64 // lookups, in the order they started
		)
		f := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			return evenOnline(time.Second)(ctx, id)
		}}
		j := &fakeJournal{}
		p := New(logtest.Discard(), f, &fakeUpserter{}, Options{IntakeLog: j, QueueSize: 4, Workers: 8, MinLookups: 8, MaxWaiting: 400})
		wait := start(t, t.Context(), p)
		replayed := make(chan error, 1)
		go func() {
			for i := range int64(2000) { // far more than the queue and the waiting set hold
				if err := p.Restore(t.Context(), []int64{1_000_000 + i}, time.Now(), 0); err != nil {
					replayed <- err
					return
				}
			}
			replayed <- nil
		}()
		time.Sleep(10 * time.Millisecond)
		for i := range int64(100) {
			if err := p.Enqueue(context.Background(), []int64{2 * i, 2*i + 1}, time.Now()); err != nil {
				t.Fatalf("live callback %d refused during a replay: %v", i, err)
			}
			time.Sleep(time.Millisecond) // a sender's pace: the dispatcher runs meanwhile
		}
		must(t, <-replayed)
		must(t, wait())
		mu.Lock()
		defer mu.Unlock()
		// The first lookups began before any live callback came; from the
		// first live ID on, all 200 go before any more replayed ones.
		isLive := func(id int64) bool { return id < 1_000_000 }
		first := slices.IndexFunc(order, isLive)
		if first < 0 || len(order) < first+200 {
			t.Fatalf("lookups %d, first live at %d", len(order), first)
		}
		if i := slices.IndexFunc(order[first:first+200], func(id int64) bool { return !isLive(id) }); i >= 0 {
			t.Errorf("replayed id %d looked up between live ones, at %d", order[first+i], first+i)
		}
		if got := len(j.Owed()); got != 0 {
			t.Errorf("debts left: %d marks", got)
		}
	})
}

// The pipeline pays every debt once the ID is settled (written, offline),
// keeps the debt of a row the database refuses, moves it to the newest
// receipt when callbacks coalesce, and pays nothing it abandons.
func TestJournalDebts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &database{down: true}
		j := &fakeJournal{}
		p := New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(2 * time.Second)}, &fakeUpserter{UpsertObjectsFunc: db.upsert}, Options{IntakeLog: j})
		wait := start(t, t.Context(), p)
		must(t, p.Enqueue(context.Background(), []int64{2, 3}, time.Now())) // mark 1
		must(t, p.Enqueue(context.Background(), []int64{4}, time.Now()))    // mark 2
		time.Sleep(time.Millisecond)
		must(t, p.Enqueue(context.Background(), []int64{4}, time.Now()))                     // mark 3: 4's newest, while 4 flies
		time.Sleep(time.Second)                                                              // lookups in flight
		if got, want := j.Owed(), map[uint64]int{1: 2, 2: 1, 3: 1}; !maps.Equal(got, want) { // 4 in flight for mark 2, its follow-up on 3
			t.Errorf("debts with lookups in flight = %v, want %v", got, want)
		}
		time.Sleep(5 * time.Second) // 3 offline: paid; 2 and 4 looked up, their writes failing
		if got, want := j.Owed(), map[uint64]int{1: 1, 3: 1}; !maps.Equal(got, want) {
			t.Errorf("debts with writes failing = %v, want %v (2's row on mark 1, 4's newest on mark 3)", got, want)
		}
		db.set(false)
		time.Sleep(10 * time.Second)
		if got := j.Owed(); len(got) != 0 {
			t.Errorf("debts after the writes = %v, want none", got)
		}

		// A newer receipt that is not durable takes the time, not the debt.
		db.set(true)
		must(t, p.Enqueue(context.Background(), []int64{10}, time.Now())) // mark 4
		time.Sleep(time.Millisecond)
		j.AppendFunc = func(context.Context, []int64, time.Time) error { return errors.New("EIO") }
		must(t, p.Enqueue(context.Background(), []int64{10}, time.Now())) // in memory only
		j.AppendFunc = nil
		time.Sleep(10 * time.Second) // looked up; the write fails
		if got, want := j.Owed(), map[uint64]int{4: 1}; !maps.Equal(got, want) {
			t.Errorf("debts with a newer receipt in memory only = %v, want %v", got, want)
		}
		db.set(false)
		time.Sleep(10 * time.Second)
		if got := j.Owed(); len(got) != 0 {
			t.Errorf("debts after the write = %v, want none", got)
		}

		ctx, cancel := context.WithCancel(t.Context())
		p = New(logtest.Discard(), &fakeSource{OnlineFunc: evenOnline(time.Hour)}, &fakeUpserter{}, Options{IntakeLog: j})
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		must(t, p.Enqueue(context.Background(), []int64{6, 8}, time.Now()))
		time.Sleep(time.Second)
		p.Close()
		cancel()
		if err := <-done; err == nil {
			t.Fatal("Run = nil after an abandoned drain")
		}
		if got, want := j.Owed(), map[uint64]int{5: 2}; !maps.Equal(got, want) {
			t.Errorf("debts after an abandoned drain = %v, want %v: kept for the next start", got, want)
		}
		must(t, wait())
	})
}

// An abandoned drain pays no debt, even for lookups whose outcome the
// dispatcher reads after the cancellation (select picks among ready cases
// at random, so some come before ctx.Done). Many lookups end at once on the
// cancel to give that every chance.
func TestAbandonPaysNothing(t *testing.T) {
	for range 5 {
		synctest.Test(t, func(t *testing.T) {
			j := &fakeJournal{}
			src := &fakeSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
				<-ctx.Done()
				return false, ctx.Err()
			}}
			ids := make([]int64, 2000)
			for i := range ids {
				ids[i] = int64(i)
			}
			p := New(logtest.Discard(), src, &fakeUpserter{}, Options{IntakeLog: j, Workers: 2000, MinLookups: 2000})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			must(t, p.Enqueue(context.Background(), ids, time.Now()))
			synctest.Wait()
			p.Close()
			cancel()
			if err := <-done; err == nil {
				t.Fatal("Run = nil after an abandoned drain")
			}
			if got, want := j.Owed(), map[uint64]int{1: 2000}; !maps.Equal(got, want) {
				t.Errorf("debts after abandoning 2000 lookups = %v, want %v", got, want)
			}
		})
	}
}

// database is the state of a fake database that tests bring down and up.
type database struct {
	mu   sync.Mutex
	down bool // guarded by mu
}

func (d *database) set(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

// upsert fails while the database is down.
func (d *database) upsert(context.Context, []Sighting) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return errors.New("connection refused")
	}
	return nil
}
