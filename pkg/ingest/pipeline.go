// Package ingest turns accepted callbacks into rows: it coalesces their IDs,
// looks each one up with a fixed pool of workers, and writes the online ones
// in batches. It never blocks the caller of Enqueue and never drops an
// accepted ID on its own: a failed lookup is retried until its row would have
// expired anyway, and a failed write is retried with its rows kept.
//
// The goroutines and who owns what:
//
//	Enqueue ──intake (buffered)──▶ dispatcher ──work──▶ N workers ──results──▶ writer ──▶ Upserter
//	                                   ▲                    │
//	                                   └──────done──────────┘
//
// The dispatcher alone owns the coalescing state (which IDs wait, which are
// in flight), the writer alone owns the pending batch, so neither needs a lock.
// Run starts them all and returns when all of them have stopped.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"callback/pkg/objects"
	"callback/pkg/store"
)

// Callback is one accepted request: the IDs it named and when the service
// received it. Received becomes the objects' last_seen, whenever the lookups
// finish.
type Callback struct {
	IDs      []int64
	Received time.Time
}

// Errors returned by Enqueue. Both are temporary from the sender's point of
// view, so the HTTP edge answers 503 with Retry-After.
var (
	ErrFull   = errors.New("ingest: queue full")
	ErrClosed = errors.New("ingest: closed")
)

// Fetcher looks up one object upstream.
type Fetcher interface {
	Fetch(ctx context.Context, id int64) (objects.Object, error)
}

// Upserter stores a batch of sightings in one statement. It may reorder s.
type Upserter interface {
	UpsertObjects(ctx context.Context, s []store.Sighting) error
}

// Options tunes a Pipeline. Zero values take the defaults named on each field.
type Options struct {
	Workers    int // concurrent lookups; default 512
	QueueSize  int // callbacks buffered before Enqueue says ErrFull; default 1024
	MaxPending int // distinct IDs waiting before Enqueue says ErrFull; default 1e6

	BatchSize     int           // rows per upsert; default 1000
	FlushInterval time.Duration // longest wait of a partial batch; default 100ms
	DBTimeout     time.Duration // bound of one upsert; default 5s

	// TTL is how long a sighting matters: a lookup is retried until its
	// receipt time is older than TTL, because by then its row would be
	// deleted anyway. Default 30s.
	TTL time.Duration

	// RetryBase and RetryMax bound the exponential backoff of failed lookups
	// and writes; defaults 100ms and 5s.
	RetryBase, RetryMax time.Duration
	// FinalFlushTimeout bounds the last write attempt after Run's context is
	// cancelled; default 5s.
	FinalFlushTimeout time.Duration
	// StatsInterval is how often a summary is logged when anything happened;
	// default 10s.
	StatsInterval time.Duration
}

func (o *Options) setDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.Workers, 512)
	def(&o.QueueSize, 1024)
	def(&o.MaxPending, 1_000_000)
	def(&o.BatchSize, 1000)
	defd(&o.FlushInterval, 100*time.Millisecond)
	defd(&o.DBTimeout, 5*time.Second)
	defd(&o.TTL, 30*time.Second)
	defd(&o.RetryBase, 100*time.Millisecond)
	defd(&o.RetryMax, 5*time.Second)
	defd(&o.FinalFlushTimeout, 5*time.Second)
	defd(&o.StatsInterval, 10*time.Second)
}

// Pipeline is the queue, the lookup workers and the batch writer. Create it
// with New, call Run once, Enqueue from any goroutine, and Close to drain.
type Pipeline struct {
	log   *slog.Logger
	fetch Fetcher
	up    Upserter
	opt   Options

	mu     sync.RWMutex // guards closed and sends on intake, so Close cannot race a send
	closed bool
	intake chan Callback // created and closed by the Pipeline; read by the dispatcher

	waiting atomic.Int64 // distinct IDs waiting for a worker, published by the dispatcher
	behind  atomic.Bool  // the writer holds rows a failed write could not store
	stats   counters
}

// New returns a pipeline that looks IDs up with f and writes them with u.
func New(log *slog.Logger, f Fetcher, u Upserter, opt Options) *Pipeline {
	if log == nil || f == nil || u == nil {
		panic("ingest: nil dependency")
	}
	opt.setDefaults()
	return &Pipeline{
		log:    log.With("component", "ingest"),
		fetch:  f,
		up:     u,
		opt:    opt,
		intake: make(chan Callback, opt.QueueSize),
	}
}

// Enqueue hands a callback to the pipeline without blocking. It returns
// ErrFull when the buffer or the set of waiting IDs is full, and ErrClosed
// after Close, so the handler can answer 503 instead of holding the request.
// Enqueue keeps c.IDs; the caller must not change it afterwards.
func (p *Pipeline) Enqueue(c Callback) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if len(c.IDs) == 0 {
		return nil
	}
	if p.waiting.Load() >= int64(p.opt.MaxPending) {
		return ErrFull
	}
	select {
	case p.intake <- c:
		p.stats.accepted.Add(int64(len(c.IDs)))
		return nil
	default:
		return ErrFull
	}
}

// Close stops intake. Everything already enqueued is still looked up and
// written; Run returns when that is done. Close may be called more than once.
func (p *Pipeline) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.intake)
	}
}

// Accepting reports whether Enqueue still takes callbacks.
func (p *Pipeline) Accepting() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return !p.closed
}

// WritesBehind reports whether the writer holds rows that a failed write
// could not store yet. The sweeper pauses meanwhile: those rows carry newer
// receipt times than the table, and deleting by the table's older times would
// drop objects that were in fact seen.
func (p *Pipeline) WritesBehind() bool { return p.behind.Load() }

// Run does the work until Close has been called and everything enqueued
// before it is written. Cancelling ctx abandons what is left: lookups stop,
// one last write of the rows already looked up is tried, and Run returns an
// error that counts the abandoned IDs. Call Run once.
func (p *Pipeline) Run(ctx context.Context) error {
	work := make(chan job)
	// The dispatcher reads every outcome, even when cancelled; the buffer only
	// spares a finishing worker from waiting on a busy dispatcher.
	done := make(chan outcome, p.opt.Workers)
	results := make(chan store.Sighting, p.opt.BatchSize)

	var workers sync.WaitGroup
	for range p.opt.Workers {
		workers.Go(func() {
			for j := range work {
				done <- p.process(ctx, j, results)
			}
		})
	}
	var writer sync.WaitGroup
	writer.Go(func() { p.write(ctx, results) })

	p.dispatch(ctx, work, done) // closes work when it returns
	workers.Wait()
	close(results) // every sender has returned
	writer.Wait()

	p.logStats(ctx, 0, 0)
	if n := p.stats.abandoned.Load(); n > 0 {
		return fmt.Errorf("ingest: drain cut short, %d ids abandoned: %w", n, context.Cause(ctx))
	}
	return nil
}

// Stats is a snapshot of the pipeline's counters since New.
type Stats struct {
	Accepted  int64 // IDs enqueued, duplicates included
	Lookups   int64 // successful lookups
	Online    int64 // lookups that found the object online
	Written   int64 // rows written (after coalescing)
	Retries   int64 // failed lookups that were tried again
	Rejected  int64 // lookups the upstream refused with a permanent 4xx
	GaveUp    int64 // lookups abandoned because their receipt outlived the TTL
	Panics    int64 // panics recovered in workers or the writer
	Abandoned int64 // IDs not written because Run's context was cancelled
	WriteErrs int64 // failed batch writes (the rows were kept and retried)
}

type counters struct {
	accepted, lookups, online, written, retries, rejected, gaveUp, panics, abandoned, writeErrs atomic.Int64
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	c := &p.stats
	return Stats{
		Accepted: c.accepted.Load(), Lookups: c.lookups.Load(), Online: c.online.Load(),
		Written: c.written.Load(), Retries: c.retries.Load(), Rejected: c.rejected.Load(),
		GaveUp: c.gaveUp.Load(), Panics: c.panics.Load(), Abandoned: c.abandoned.Load(),
		WriteErrs: c.writeErrs.Load(),
	}
}

func (p *Pipeline) logStats(ctx context.Context, waiting, inFlight int) {
	s := p.Stats()
	p.log.InfoContext(ctx, "pipeline stats",
		"accepted", s.Accepted, "waiting", waiting, "in_flight", inFlight,
		"lookups", s.Lookups, "online", s.Online, "written", s.Written,
		"retries", s.Retries, "rejected", s.Rejected, "gave_up", s.GaveUp,
		"write_errors", s.WriteErrs, "panics", s.Panics, "abandoned", s.Abandoned)
}
