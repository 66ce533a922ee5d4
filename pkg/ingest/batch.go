package ingest

import (
	"context"
	"fmt"
	"time"
)

// write is the batch writer. It owns unwritten (ID → newest receipt time),
// so memory stays bounded by the number of distinct IDs however long the
// database is down. It flushes when unwritten reaches BatchSize and every
// FlushInterval; after a failed write it keeps the rows, goes on merging new
// sightings and tries again after a backoff. It returns once sightings is
// closed and everything is written, or, if ctx is cancelled, after one last
// attempt.
func (p *Pipeline) write(ctx context.Context, sightings <-chan Sighting) {
	var (
		unwritten = map[int64]time.Time{}
		tick      = time.NewTicker(p.opt.FlushInterval)
		second    = time.NewTicker(time.Second) // OldestUnwritten walks unwritten: not every flush
		retry     <-chan time.Time              // non-nil while waiting to retry a failed write
		failures  int
	)
	defer tick.Stop()
	defer second.Stop()

	flush := func() {
		err := p.flush(ctx, unwritten)
		switch {
		case err == nil:
			if failures > 0 {
				p.log.InfoContext(ctx, "database writes recovered", "attempts", failures+1)
			}
			failures, retry = 0, nil
			p.behind.Store(false)
		case ctx.Err() != nil:
			retry = nil // cancelled: the last attempt below decides
		default:
			failures++
			p.behind.Store(true)
			p.stats.writeErrs.Add(1)
			wait := backoff(p.opt.RetryBase, p.opt.RetryMax, failures)
			p.log.WarnContext(ctx, "write failed, keeping rows for retry",
				"count", len(unwritten), "attempt", failures, "wait", wait, "err", err)
			retry = time.After(wait)
		}
	}

	// ready: not backing off after a failure, and not cancelled.
	ready := func() bool { return retry == nil && ctx.Err() == nil }
	cancelled := ctx.Done()
	for in := sightings; in != nil || (len(unwritten) > 0 && ctx.Err() == nil); {
		select {
		case s, ok := <-in:
			if !ok {
				in = nil
				if ready() {
					flush()
				}
				continue
			}
			t, dup := unwritten[s.ID]
			if !dup || s.Received.After(t) {
				unwritten[s.ID] = s.Received
			}
			if dup {
				p.rowsPending.Add(-1) // merged: the row already pending writes it
			}
			if len(unwritten) >= p.opt.BatchSize && ready() {
				flush()
			}
		case <-tick.C:
			if len(unwritten) > 0 && ready() {
				flush()
			}
		case <-second.C:
			p.oldestRow.Store(oldest(unwritten))
		case <-retry:
			retry = nil
			flush()
		case <-cancelled:
			// Stop writing but keep reading: workers may still be sending,
			// and the loop ends only when sightings is closed.
			cancelled, retry = nil, nil
		}
	}
	if len(unwritten) == 0 {
		return
	}

	// Run's context is cancelled (the drain timeout ran out): one last try on
	// a context of its own, so rows already looked up are not thrown away.
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opt.FinalFlushTimeout)
	defer cancel()
	if err := p.flush(last, unwritten); err != nil {
		p.stats.abandoned.Add(int64(len(unwritten)))
		p.log.ErrorContext(ctx, "final write failed, abandoning rows", "count", len(unwritten), "err", err)
	}
}

// oldest returns the oldest receipt time (Unix ns) in unwritten, or 0.
func oldest(unwritten map[int64]time.Time) int64 {
	var min int64
	for _, t := range unwritten {
		min = earliest(min, t.UnixNano())
	}
	return min
}

// flush writes unwritten in statements of at most BatchSize rows and removes
// what it wrote. On error the rows not yet written stay in unwritten.
func (p *Pipeline) flush(ctx context.Context, unwritten map[int64]time.Time) error {
	batch := make([]Sighting, 0, min(len(unwritten), p.opt.BatchSize))
	for len(unwritten) > 0 {
		batch = batch[:0]
		for id, received := range unwritten {
			batch = append(batch, Sighting{ID: id, Received: received})
			if len(batch) == p.opt.BatchSize {
				break
			}
		}
		if err := p.upsert(ctx, batch); err != nil {
			return err
		}
		for _, s := range batch {
			delete(unwritten, s.ID)
		}
		p.stats.written.Add(int64(len(batch)))
		p.rowsPending.Add(-int64(len(batch)))
	}
	return nil
}

// upsert writes one batch with its own timeout. A panic in the Upserter is
// turned into an error, so the rows are kept and retried like any failure.
func (p *Pipeline) upsert(ctx context.Context, batch []Sighting) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.stats.panics.Add(1)
			err = fmt.Errorf("upsert %d objects: panic: %v", len(batch), r)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, p.opt.DBTimeout)
	defer cancel()
	if f := p.opt.ObserveWriteFunc; f != nil {
		defer func(start time.Time) { f(time.Since(start)) }(time.Now())
	}
	return p.up.UpsertObjects(ctx, batch)
}
