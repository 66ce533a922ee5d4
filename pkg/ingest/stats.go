package ingest

import (
	"context"
	"sync/atomic"
	"time"
)

// LookupsInFlight returns the upstream requests in flight and the adaptive
// limit on them (callback_lookups_in_flight, callback_lookup_limit).
func (p *Pipeline) LookupsInFlight() (inFlight, limit int) {
	limit, inFlight = p.lim.snapshot()
	return inFlight, limit
}

// Waiting returns the distinct IDs waiting for a lookup.
func (p *Pipeline) Waiting() int { return int(p.nWaiting.Load()) }

// OldestUnwritten returns the receipt time of the oldest callback whose IDs
// are still waiting, being looked up or waiting to be written, or the zero
// time if there is none; for the rows waiting to be written, the moment the
// writer last started holding rows, if earlier: newer callbacks refresh a
// row's receipt time, and through a database outage the receipt times alone
// would stay young while rows go unwritten. It is refreshed every second or
// so.
func (p *Pipeline) OldestUnwritten() time.Time {
	oldest := min(p.oldestQueued.Load(), p.oldestRow.Load())
	if oldest == none {
		return time.Time{}
	}
	// On the monotonic clock: what callers measure from it is too.
	return p.epoch.Add(time.Duration(oldest))
}

// WritesBehind reports whether the writer holds rows that a failed write
// could not store yet. The sweeper pauses meanwhile: those rows carry newer
// receipt times than the table, and deleting by the table's older times would
// drop objects that were in fact seen.
func (p *Pipeline) WritesBehind() bool { return p.behind.Load() }

// Stats is a snapshot of the pipeline's counters since New.
type Stats struct {
	Accepted  int64 // IDs enqueued, duplicates included
	Lookups   int64 // successful lookups
	Online    int64 // lookups that found the object online
	Written   int64 // rows written (after coalescing)
	Retries   int64 // failed lookups that were tried again
	Rejected  int64 // lookups the upstream refused for good
	GaveUp    int64 // lookups abandoned because their receipt outlived the TTL
	Expired   int64 // rows not written before their receipt outlived the TTL (a database outage)
	Panics    int64 // panics recovered in workers or the writer
	Abandoned int64 // IDs not written because Run's context was cancelled
	WriteErrs int64 // failed batch writes (the rows were kept and retried)
	Restored  int64 // distinct IDs of callbacks replayed from the intake log
	// NotDurable counts callbacks accepted in memory only because the
	// intake log failed: a crash before they are written would lose them.
	NotDurable int64
}

type counters struct {
	accepted, lookups, online, written, retries, rejected, gaveUp, expired, panics, abandoned, writeErrs,
	restored, notDurable atomic.Int64
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	c := &p.stats
	return Stats{
		Accepted: c.accepted.Load(), Lookups: c.lookups.Load(), Online: c.online.Load(),
		Written: c.written.Load(), Retries: c.retries.Load(), Rejected: c.rejected.Load(),
		GaveUp: c.gaveUp.Load(), Expired: c.expired.Load(), Panics: c.panics.Load(), Abandoned: c.abandoned.Load(),
		WriteErrs: c.writeErrs.Load(), Restored: c.restored.Load(), NotDurable: c.notDurable.Load(),
	}
}

func (p *Pipeline) logStats(ctx context.Context, waiting, inLookup int) {
	s := p.Stats()
	limit, inFlight := p.lim.snapshot()
	p.log.InfoContext(ctx, "pipeline stats",
		"accepted", s.Accepted, "ids_waiting", waiting, "ids_in_lookup", inLookup,
		"lookups_in_flight", inFlight, "lookup_limit", limit,
		"lookups", s.Lookups, "online", s.Online, "written", s.Written,
		"retries", s.Retries, "rejected", s.Rejected, "gave_up", s.GaveUp, "expired", s.Expired,
		"write_errors", s.WriteErrs, "panics", s.Panics, "abandoned", s.Abandoned,
		"restored", s.Restored, "not_durable", s.NotDurable)
}
