// Package ingest turns accepted callbacks into rows: it coalesces their IDs,
// looks each one up with a fixed pool of workers, and writes the online ones
// in batches. The caller of Enqueue waits at most for its callback's sync to
// the intake log, never for a lookup or the database, and an accepted ID is
// never dropped on its own: a failed lookup is retried until its row would
// have expired anyway, and a failed write is retried with its rows kept.
//
// The goroutines, what they pass each other, and the files they live in:
//
//	Enqueue ──receipts──▶ dispatcher ──jobs──▶ N workers ──sightings──▶ writer ──▶ Upserter
//	(pipeline.go)          (dispatch.go)  ▲     (worker.go)   │            (writer.go)
//	                                      └────outcomes───────┘
//
// The dispatcher alone owns the coalescing state (coalesce.go: which IDs
// wait, which are in flight), the writer alone owns the unwritten rows, so
// neither needs a lock. A worker holds a permit of the adaptive limit
// (limit.go) for each upstream request. Run starts them all and returns when
// all have stopped. Options are in options.go, what the pipeline reports
// (stats, gauges) in stats.go.
//
// One time travels with every ID: the receipt time of the newest callback
// that named it, called received throughout. It becomes the row's last_seen.
//
// The package declares what it needs of the upstream (Source) and the
// database (Upserter) and imports neither side.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Sighting is an object found online, with the receipt time of the newest
// callback that named it.
type Sighting struct {
	ID       int64
	Received time.Time
}

// Source looks objects up upstream.
//
// The pipeline decides whether and when to retry a failed lookup, and how
// the adaptive limit reads it, by asking the error (anywhere in its chain)
// the questions below: Permanent (never retry), RetryAfter (wait at least
// this long), Overloaded and Timeout (load signals), and whether it is
// ECONNREFUSED (overloaded too). Each is optional; any other error is worth
// another try.
type Source interface {
	Online(ctx context.Context, id int64) (bool, error)
}

// What the pipeline asks of an error, anywhere in its chain (errors.As).
// Each question is optional, and an error that answers none is worth another
// try: "try again" is the default, and only Permanent says otherwise.
type (
	permanentError  interface{ Permanent() bool }           // the upstream said no for good about this ID
	retryAfterError interface{ RetryAfter() time.Duration } // the upstream asked to wait at least this long
	overloadedError interface{ Overloaded() bool }          // the upstream said it is over capacity
	timeoutError    interface{ Timeout() bool }             // the request ran out of time
	fullError       interface{ Full() bool }                // the intake log is at its size cap
)

// IntakeLog makes an accepted callback durable before Enqueue returns, so a
// crash after the 202 loses nothing: the service replays it at the next
// start (see Restore).
//
// Append returns once the callback is durable, with its record's mark, on
// which one debt is owed from then on; it may return ctx's error only while
// the record is not yet on its way to disk. An error that answers Full()
// true means the intake log is at its size cap and the callback must be
// refused; any other error (a failed disk) leaves the choice to Enqueue,
// which accepts in memory.
//
// Owe adds n to the debts on mark's record (negative n pays). The pipeline
// keeps one debt on each record that something it holds still needs after
// a crash (see coalescer), and pays it once the ID is settled: written, or
// found offline, refused or given up. What an abandoned drain leaves is
// never paid, so the next start replays it. So the intake log can delete what
// is paid within seconds, and after a drain that finished everything, all
// of it. Mark 0 is none.
type IntakeLog interface {
	Append(ctx context.Context, ids []int64, received time.Time) (mark uint64, err error)
	Owe(mark uint64, n int)
}

// Upserter stores a batch of sightings in one statement. It must not keep or
// modify s. The IDs in s are unique.
type Upserter interface {
	UpsertObjects(ctx context.Context, s []Sighting) error
}

// Errors returned by Enqueue. All pass (a full queue drains, a closing
// instance is replaced), so they report Temporary and the HTTP edge answers
// 503 with Retry-After.
var (
	ErrFull   error = refusal("ingest: queue full")
	ErrClosed error = refusal("ingest: closed")
	// ErrBacklog: more IDs wait than the upstream can look up within the
	// TTL at the rate it answers; accepting more would only delay every
	// waiting ID until its row expires unwritten.
	ErrBacklog error = refusal("ingest: backlog beyond what the upstream can look up within the ttl")
	// errGone: the sender left before its callback was durable.
	errGone error = refusal("ingest: sender gone before the callback was durable")
)

type refusal string

func (r refusal) Error() string { return string(r) }

// Temporary reports true: the sender should come back later.
func (refusal) Temporary() bool { return true }

// fullWait is how long a callback held only in memory waits for room in the
// receipts buffer before ErrFull: long enough to ride out the dispatcher's
// moment behind, short against the sender's 1 s.
const fullWait = 250 * time.Millisecond

// receipt is one accepted callback on its way to the dispatcher, with its
// intake log record's mark, on which it holds a debt (0: none).
type receipt struct {
	ids  []int64
	at   stamp
	mark uint64
}

// sighting is a Sighting on its way to the writer, with its arrival
// (stamp.mono) and its debt.
type sighting struct {
	Sighting
	mono int64
	mark uint64
}

// Pipeline is the queue, the lookup workers and the batch writer. Create it
// with New, call Run once, Enqueue from any goroutine, and Close to drain.
type Pipeline struct {
	log *slog.Logger
	src Source
	up  Upserter
	opt Options

	mu       sync.RWMutex // guards closed and sends on receipts, so Close cannot race a send
	closed   bool
	receipts chan receipt  // created and closed by the Pipeline; read by the dispatcher
	restores chan receipt  // Restore to the dispatcher; unbuffered and never closed
	closing  chan struct{} // closed by Close: Restore stops waiting
	finished chan struct{} // closed when the dispatcher has returned: nothing reads receipts

	lim      *limiter     // how many upstream requests may be in flight
	nWaiting atomic.Int64 // coalescer.waiting(), published by the dispatcher for Enqueue
	// IDs admitted by Enqueue and not yet taken in by the dispatcher (in
	// the receipts buffer, or on their way there): with nWaiting, what
	// MaxWaiting bounds.
	nQueued atomic.Int64
	nLive   atomic.Int64 // of those, named by live callbacks (not only by a replay)
	backlog atomic.Int64 // limiter.backlog(TTL), published every second; 0: no bound

	// The oldest arrival (stamp.mono, or none) among the coalescer's
	// entries, published by the dispatcher, and among the writer's
	// unwritten rows, published by the writer: OldestUnwritten.
	oldestQueued, oldestRow atomic.Int64
	epoch                   time.Time   // the start of the pipeline's monotonic clock (now)
	behind                  atomic.Bool // the writer holds rows a failed write could not store
	stats                   counters
}

// New returns a pipeline that looks IDs up with src and writes them with u.
func New(log *slog.Logger, src Source, u Upserter, opt Options) *Pipeline {
	if log == nil || src == nil || u == nil {
		panic("ingest: nil dependency")
	}
	opt.setDefaults()
	p := &Pipeline{
		log:      log.With("component", "ingest"),
		src:      src,
		up:       u,
		opt:      opt,
		receipts: make(chan receipt, opt.QueueSize),
		restores: make(chan receipt),
		closing:  make(chan struct{}),
		finished: make(chan struct{}),
		lim:      newLimiter(opt.MinLookups, opt.Workers, opt.TTL, time.Now),
		epoch:    time.Now(),
	}
	p.oldestQueued.Store(none)
	p.oldestRow.Store(none)
	return p
}

// Enqueue hands the IDs of a callback received at received to the pipeline.
// With a IntakeLog it first waits until they are durable, which group commit
// keeps to a sync's time; otherwise it never blocks. It returns ErrFull when
// the buffer, the set of waiting IDs or the intake log is full, ErrBacklog when
// more IDs wait than can be looked up within the TTL (see admit), and
// ErrClosed after Close, so the handler can answer 503 instead of holding
// the request. A durable callback that finds the buffer full after its
// sync (admit found room before it) waits for the dispatcher instead.
// If the intake log fails otherwise (a failed disk), the callback is accepted
// in memory and counted as not durable: the endpoint keeps answering, and
// the intake log reports itself degraded. A callback that reached the disk is
// queued even if ctx ended meanwhile (its sender left during the sync): it
// is on disk either way, and waiting for a crash to replay it would store
// it late or never. Enqueue takes ids over: it drops repeats in place (see
// dedupe) and keeps the slice, so the caller must not use it afterwards.
func (p *Pipeline) Enqueue(ctx context.Context, ids []int64, received time.Time) (err error) {
	n := len(ids)
	ids = dedupe(ids)
	if err := p.admit(ids); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			p.nQueued.Add(-int64(len(ids))) // not queued after all
		}
	}()
	r := receipt{ids: ids, at: p.arriving(received)}
	if p.opt.IntakeLog != nil && len(ids) > 0 {
		mark, err := p.opt.IntakeLog.Append(ctx, ids, received)
		var full fullError
		switch {
		case err == nil:
			r.mark = mark
		case errors.As(err, &full) && full.Full():
			return fmt.Errorf("%w: %w", ErrFull, err)
		case ctx.Err() != nil: // the sender left before the record went to disk
			return fmt.Errorf("%w: %w", errGone, err)
		default:
			p.stats.notDurable.Add(1)
			p.log.DebugContext(ctx, "callback accepted in memory only", "count", len(ids), "err", err)
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.owe(r.mark, -1)
		return ErrClosed
	}
	if len(ids) == 0 {
		return nil
	}
	select {
	case p.receipts <- r:
	default:
		if r.mark == 0 {
			// The dispatcher, one goroutine, has fallen a moment behind
			// (a GC pause, cores busy with handlers): wait for room a
			// little, well within the sender's second, rather than answer
			// a 503, which is a missed callback. What admit reserved
			// bounds the memory meanwhile.
			wait := time.NewTimer(fullWait)
			defer wait.Stop()
			select {
			case p.receipts <- r:
			case <-wait.C:
				return ErrFull
			case <-ctx.Done():
				return fmt.Errorf("%w: %w", errGone, ctx.Err())
			case <-p.finished:
				return ErrClosed
			}
			break
		}
		// On disk already, and admit found room a sync ago: wait for the
		// dispatcher, which reads receipts until Close, rather than refuse
		// what a crash would replay anyway. If it has stopped (Run was
		// cancelled without Close), the debt stays and the next start
		// replays the callback.
		select {
		case p.receipts <- r:
		case <-p.finished:
			return ErrClosed
		}
	}
	p.stats.accepted.Add(int64(n))
	return nil
}

// owe passes a debt change to the intake log (see IntakeLog).
func (p *Pipeline) owe(mark uint64, n int) {
	if mark != 0 && p.opt.IntakeLog != nil {
		p.opt.IntakeLog.Owe(mark, n)
	}
}

// admit refuses a callback that could not be queued anyway (no room among
// the waiting IDs), before the intake log spends a sync on it, and one that
// would add to a backlog that
// cannot be looked up within the TTL: better a 503 the sender sees than a
// 202 for a row that expires unwritten, and a backlog so bounded is one
// that the workers, oldest first, serve within the TTL.
//
// MaxWaiting is a hard cap: an admitted callback reserves room for all its
// IDs in nQueued at once, so concurrent callbacks cannot all pass a check
// that none of them has yet changed. (IDs that are already waiting count
// twice until the dispatcher merges them: the cap errs on the safe side.)
// The caller returns the reservation if it does not queue the callback.
func (p *Pipeline) admit(ids []int64) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	switch {
	case p.closed:
		return ErrClosed
	case len(ids) == 0:
		return nil
	case p.backlog.Load() > 0 && p.nLive.Load() >= p.backlog.Load():
		return ErrBacklog
	}
	if p.nQueued.Add(int64(len(ids)))+p.nWaiting.Load() > int64(p.opt.MaxWaiting) {
		p.nQueued.Add(-int64(len(ids)))
		return ErrFull
	}
	return nil
}

// Restore queues a callback read back from the intake log after a restart,
// with its record's mark, on which it holds a debt; it does not log it again
// again. It waits until the dispatcher takes it, which it does only while
// live callbacks leave room (see dispatch), and returns ErrClosed after
// Close and ctx's error if ctx ends first; the debt is then the caller's.
func (p *Pipeline) Restore(ctx context.Context, ids []int64, received time.Time, mark uint64) error {
	ids = dedupe(ids)
	if len(ids) == 0 {
		p.owe(mark, -1)
		return nil
	}
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	select {
	case p.restores <- receipt{ids: ids, at: p.replayed(received), mark: mark}:
		p.stats.restored.Add(int64(len(ids)))
		return nil
	case <-p.closing:
		return ErrClosed
	case <-p.finished: // Run was cancelled without Close
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops intake. Everything already enqueued is still looked up and
// written; Run returns when that is done. Close may be called more than once.
func (p *Pipeline) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.receipts)
		close(p.closing)
	}
}

// Accepting reports whether Enqueue still takes callbacks.
func (p *Pipeline) Accepting() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return !p.closed
}

// Run does the work until Close has been called and everything enqueued
// before it is written. Cancelling ctx abandons what is left: lookups stop,
// one last write of the rows already looked up is tried, and Run returns an
// error that counts the abandoned IDs. Call Run once.
func (p *Pipeline) Run(ctx context.Context) error {
	jobs := make(chan job)
	// The dispatcher reads every outcome, even when cancelled; the buffer only
	// spares a finishing worker from waiting on a busy dispatcher.
	outcomes := make(chan outcome, p.opt.Workers)
	sightings := make(chan sighting, p.opt.BatchSize)

	var workers sync.WaitGroup
	for range p.opt.Workers {
		workers.Go(func() { p.work(ctx, jobs, outcomes, sightings) })
	}
	var writer sync.WaitGroup
	writer.Go(func() { p.write(ctx, sightings) })

	p.dispatch(ctx, jobs, outcomes) // closes jobs when it returns
	close(p.finished)
	workers.Wait()
	close(sightings) // every sender has returned
	writer.Wait()

	p.logStats(ctx, 0, 0)
	if n := p.stats.abandoned.Load(); n > 0 {
		return fmt.Errorf("ingest: drain cut short, %d ids abandoned: %w", n, context.Cause(ctx))
	}
	return nil
}
