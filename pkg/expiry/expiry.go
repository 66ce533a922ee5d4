// Package expiry deletes objects that no callback has named for longer than
// the TTL. It owns the ticker loop only; what "stale" means in SQL is the
// Deleter's business. Several instances may sweep the same table at once.
package expiry

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Deleter deletes up to limit rows last seen before the given time and says
// how many it deleted.
type Deleter interface {
	DeleteStale(ctx context.Context, before time.Time, limit int) (int64, error)
}

// The defaults of Options. The service's flags use them too.
const (
	DefaultInterval = time.Second
	DefaultBatch    = 5000
	DefaultTimeout  = 5 * time.Second
)

// Options tunes a Sweeper. A zero or negative field takes its Default,
// except TTL, which is required.
type Options struct {
	// TTL is how long a row lives after its last_seen.
	TTL time.Duration
	// Interval is the time between sweeps.
	Interval time.Duration
	// Batch is the most rows one statement deletes, so a huge sweep never
	// holds long locks.
	Batch int
	// Timeout bounds each statement.
	Timeout time.Duration
}

// Sweeper periodically deletes stale objects in bounded batches.
type Sweeper struct {
	log     *slog.Logger
	del     Deleter
	opt     Options
	deleted atomic.Int64 // rows deleted since New
	// NowFunc is the clock; tests replace it. Defaults to time.Now.
	NowFunc func() time.Time
	// PauseFunc, if set, is asked before each sweep; while it reports true
	// the sweep is skipped. main pauses sweeps while the batch writer holds
	// unwritten sightings, which are newer than the rows they would refresh.
	PauseFunc func() bool
}

// New returns a sweeper that deletes rows older than opt.TTL through del.
func New(log *slog.Logger, del Deleter, opt Options) *Sweeper {
	if log == nil || del == nil || opt.TTL <= 0 {
		panic("expiry: nil dependency or no TTL")
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Batch <= 0 { // Sweep stops on a short batch; 0 would never be short
		opt.Batch = DefaultBatch
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	return &Sweeper{log: log.With("component", "expiry"), del: del, opt: opt, NowFunc: time.Now}
}

// Run sweeps once at once, then every interval, until ctx is done. It always
// returns nil: a failed sweep is logged and the next tick tries again, since
// the rows it missed are still there.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.opt.Interval)
	defer t.Stop()
	for {
		var (
			n   int64
			err error
		)
		if s.PauseFunc == nil || !s.PauseFunc() {
			n, err = s.Sweep(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "sweep", "count", n, "err", err)
		case n > 0:
			s.log.InfoContext(ctx, "deleted stale objects", "count", n)
		}
		s.deleted.Add(n)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Deleted returns how many rows Run's sweeps have deleted.
func (s *Sweeper) Deleted() int64 { return s.deleted.Load() }

// Sweep deletes every row older than the TTL, in batches, until a batch comes
// back short. It returns how many rows it deleted, also when it fails midway.
func (s *Sweeper) Sweep(ctx context.Context) (int64, error) {
	before := s.NowFunc().Add(-s.opt.TTL) // fixed for the whole sweep, so it ends
	var total int64
	for {
		n, err := s.deleteBatch(ctx, before)
		total += n
		if err != nil || n < int64(s.opt.Batch) {
			return total, err
		}
	}
}

func (s *Sweeper) deleteBatch(ctx context.Context, before time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	return s.del.DeleteStale(ctx, before, s.opt.Batch)
}
