package ingest

import (
	"context"
	"fmt"
	"time"
)

// write is the batch writer. It owns unwritten (ID → newest receipt time,
// and the intake log debt on its newest durable receipt), so memory stays
// bounded by the number of distinct IDs however long the database is down.
// A row's debt is paid once it is written; an older sighting merged into it
// pays its own at once. It flushes when unwritten reaches BatchSize and every
// FlushInterval; after a failed write it keeps the rows, goes on merging new
// sightings and tries again after a backoff. It returns once sightings is
// closed and everything is written, or, if ctx is cancelled, after one last
// attempt.
func (p *Pipeline) write(ctx context.Context, sightings <-chan sighting) {
	var (
		unwritten = map[int64]row{}
		tick      = time.NewTicker(p.opt.FlushInterval)
		second    = time.NewTicker(time.Second) // OldestUnwritten walks unwritten: not every flush
		retry     <-chan time.Time              // non-nil while waiting to retry a failed write
		failures  int
		// owedSince: when unwritten last went from empty to holding rows
		// (on the pipeline's clock; none while empty). A newer sighting
		// refreshes a row's receipt time but not this, so through a
		// database outage it tells how long rows have been owed
		// (OldestUnwritten).
		owedSince = none
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
			wait := backoff(retryBase, writeRetryMax, failures)
			p.log.WarnContext(ctx, "write failed, keeping rows for retry",
				"count", len(unwritten), "attempt", failures, "wait", wait, "err", err)
			retry = time.After(wait)
		}
	}

	// ready: not backing off after a failure, and not cancelled.
	ready := func() bool { return retry == nil && ctx.Err() == nil }
	stopped := ctx.Done()
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
			if len(unwritten) == 0 {
				owedSince = p.now()
			}
			r, dup := unwritten[s.ID]
			mono, owed := s.mono, s.mono
			if dup {
				mono, owed = max(mono, r.mono), min(owed, r.owed)
			}
			switch {
			case !dup:
				unwritten[s.ID] = row{s.Received, mono, s.mark, owed}
			case s.Received.After(r.received) && s.mark == 0:
				unwritten[s.ID] = row{s.Received, mono, r.mark, owed} // not durable: the debt stays
			case s.Received.After(r.received):
				p.owe(r.mark, -1)
				unwritten[s.ID] = row{s.Received, mono, s.mark, owed}
			case r.mark == 0:
				unwritten[s.ID] = row{r.received, mono, s.mark, owed} // the newer row is not durable: keep this debt
			default:
				p.owe(s.mark, -1) // the row already waiting is as new
				unwritten[s.ID] = row{r.received, mono, r.mark, owed}
			}
			if len(unwritten) >= p.opt.BatchSize && ready() {
				flush()
			}
		case <-tick.C:
			if len(unwritten) > 0 && ready() {
				flush()
			}
		case <-second.C:
			kept := p.expire(ctx, unwritten)
			if len(unwritten) == 0 {
				owedSince = none // flushed since
			}
			p.oldestRow.Store(min(kept, owedSince))
		case <-retry:
			retry = nil
			flush()
		case <-stopped:
			// Stop writing but keep reading: workers may still be sending,
			// and the loop ends only when sightings is closed.
			stopped, retry = nil, nil
		}
	}
	if len(unwritten) == 0 {
		return
	}

	// Run's context is cancelled (the drain timeout ran out): one last try on
	// a context of its own, so rows already looked up are not thrown away.
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
	defer cancel()
	if err := p.flush(last, unwritten); err != nil {
		p.stats.abandoned.Add(int64(len(unwritten)))
		p.log.ErrorContext(ctx, "final write failed, abandoning rows", "count", len(unwritten), "err", err)
	}
}

// row is one unwritten row: the newest receipt time of its ID, the newest
// arrival (stamp.mono) among its sightings, the mark of the intake log
// record that holds it, on which the row holds a debt, and the oldest
// arrival among its sightings, from which the row has been owed: newer
// callbacks refresh mono, but not how long the table has lacked the row.
type row struct {
	received time.Time
	mono     int64
	mark     uint64
	owed     int64
}

// expire drops the rows whose receipt is older than the TTL: the sweeper
// would delete them at once, so through a database outage they would only
// hold memory, growing with every distinct ID seen. Their debts are paid:
// a replay would skip them as too old too. It returns the oldest arrival
// among the rows it keeps, or none, from the same walk.
func (p *Pipeline) expire(ctx context.Context, unwritten map[int64]row) (oldest int64) {
	oldest = none
	n := 0
	for id, r := range unwritten {
		if p.age(r.mono) > p.opt.TTL {
			p.owe(r.mark, -1)
			delete(unwritten, id)
			n++
			continue
		}
		oldest = min(oldest, r.mono)
	}
	if n > 0 {
		p.stats.expired.Add(int64(n))
		p.log.WarnContext(ctx, "rows dropped unwritten: receipt older than ttl", "count", n, "ttl", p.opt.TTL.String())
	}
	return oldest
}

// flush writes unwritten in statements of at most BatchSize rows, removes
// what it wrote and pays its debts, one Owe per record. On error the rows
// not yet written stay in unwritten.
func (p *Pipeline) flush(ctx context.Context, unwritten map[int64]row) error {
	batch := make([]Sighting, 0, min(len(unwritten), p.opt.BatchSize))
	paid := map[uint64]int{}
	for len(unwritten) > 0 {
		batch = batch[:0]
		for id, r := range unwritten {
			batch = append(batch, Sighting{ID: id, Received: r.received})
			if len(batch) == p.opt.BatchSize {
				break
			}
		}
		if err := p.upsert(ctx, batch); err != nil {
			return err
		}
		observe := p.opt.ObserveRowAgeFunc
		for _, s := range batch {
			r := unwritten[s.ID]
			if observe != nil {
				observe(p.age(r.owed))
			}
			paid[r.mark]++
			delete(unwritten, s.ID)
		}
		for mark, n := range paid {
			p.owe(mark, -n)
		}
		clear(paid)
		p.stats.written.Add(int64(len(batch)))
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
