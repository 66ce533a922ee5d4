package ingest

import (
	"context"
	"fmt"
	"time"

	"callback/pkg/store"
)

// write is the batch writer. It owns pending (ID → newest receipt time), so
// memory stays bounded by the number of distinct IDs however long the
// database is down. It flushes when pending reaches BatchSize and every
// FlushInterval; after a failed write it keeps the rows, goes on merging new
// results and tries again after a backoff. It returns once results is closed
// and everything is written, or, if ctx is cancelled, after one last attempt.
func (p *Pipeline) write(ctx context.Context, results <-chan store.Sighting) {
	var (
		pending  = map[int64]time.Time{}
		tick     = time.NewTicker(p.opt.FlushInterval)
		retry    <-chan time.Time // non-nil while waiting to retry a failed write
		failures int
	)
	defer tick.Stop()

	flush := func() {
		err := p.flush(ctx, pending)
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
				"count", len(pending), "attempt", failures, "wait", wait, "err", err)
			retry = time.After(wait)
		}
	}

	// ready: not backing off after a failure, and not cancelled.
	ready := func() bool { return retry == nil && ctx.Err() == nil }
	cancelled := ctx.Done()
	for in := results; in != nil || (len(pending) > 0 && ctx.Err() == nil); {
		select {
		case s, ok := <-in:
			if !ok {
				in = nil
				if ready() {
					flush()
				}
				continue
			}
			if t, dup := pending[s.ID]; !dup || s.Seen.After(t) {
				pending[s.ID] = s.Seen
			}
			if len(pending) >= p.opt.BatchSize && ready() {
				flush()
			}
		case <-tick.C:
			if len(pending) > 0 && ready() {
				flush()
			}
		case <-retry:
			retry = nil
			flush()
		case <-cancelled:
			// Stop writing but keep reading: workers may still be sending,
			// and the loop ends only when results is closed.
			cancelled, retry = nil, nil
		}
	}
	if len(pending) == 0 {
		return
	}

	// Run's context is cancelled (the drain timeout ran out): one last try on
	// a context of its own, so rows already looked up are not thrown away.
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opt.FinalFlushTimeout)
	defer cancel()
	if err := p.flush(last, pending); err != nil {
		p.stats.abandoned.Add(int64(len(pending)))
		p.log.ErrorContext(ctx, "final write failed, abandoning rows", "count", len(pending), "err", err)
	}
}

// flush writes pending in statements of at most BatchSize rows and removes
// what it wrote. On error the unwritten rows stay in pending.
func (p *Pipeline) flush(ctx context.Context, pending map[int64]time.Time) error {
	batch := make([]store.Sighting, 0, min(len(pending), p.opt.BatchSize))
	for len(pending) > 0 {
		batch = batch[:0]
		for id, seen := range pending {
			batch = append(batch, store.Sighting{ID: id, Seen: seen})
			if len(batch) == p.opt.BatchSize {
				break
			}
		}
		if err := p.upsert(ctx, batch); err != nil {
			return err
		}
		// The upserter may reorder batch, but its IDs are unique, so every
		// one of them was written.
		for _, s := range batch {
			delete(pending, s.ID)
		}
		p.stats.written.Add(int64(len(batch)))
	}
	return nil
}

// upsert writes one batch with its own timeout. A panic in the Upserter is
// turned into an error, so the rows are kept and retried like any failure.
func (p *Pipeline) upsert(ctx context.Context, batch []store.Sighting) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.stats.panics.Add(1)
			err = fmt.Errorf("upsert %d objects: panic: %v", len(batch), r)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, p.opt.DBTimeout)
	defer cancel()
	return p.up.UpsertObjects(ctx, batch)
}
