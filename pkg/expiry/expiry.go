// Package expiry deletes objects that no callback has named for longer than
// the TTL. It owns the ticker loop only; what "stale" means in SQL is the
// Deleter's business. Several instances may sweep the same table at once.
package expiry

import (
	"context"
	"log/slog"
	"time"
)

// Deleter deletes up to limit rows last seen before the given time and says
// how many it deleted.
type Deleter interface {
	DeleteStale(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Sweeper periodically deletes stale objects in bounded batches.
type Sweeper struct {
	log      *slog.Logger
	del      Deleter
	ttl      time.Duration
	interval time.Duration
	batch    int
	timeout  time.Duration // per statement
	// NowFunc is the clock; tests replace it. Defaults to time.Now.
	NowFunc func() time.Time
	// PauseFunc, if set, is asked before each sweep; while it reports true
	// the sweep is skipped. main pauses sweeps while the batch writer holds
	// unwritten sightings, which are newer than the rows they would refresh.
	PauseFunc func() bool
}

// New returns a sweeper that deletes rows older than ttl every interval, at
// most batch rows per statement, each statement bounded by timeout.
func New(log *slog.Logger, del Deleter, ttl, interval time.Duration, batch int, timeout time.Duration) *Sweeper {
	if log == nil || del == nil {
		panic("expiry: nil dependency")
	}
	batch = max(batch, 1) // Sweep stops on a short batch; 0 would never be short
	return &Sweeper{
		log:      log.With("component", "expiry"),
		del:      del,
		ttl:      ttl,
		interval: interval,
		batch:    batch,
		timeout:  timeout,
		NowFunc:  time.Now,
	}
}

// Run sweeps once at once, then every interval, until ctx is done. It always
// returns nil: a failed sweep is logged and the next tick tries again, since
// the rows it missed are still there.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
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
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep deletes every row older than the TTL, in batches, until a batch comes
// back short. It returns how many rows it deleted, also when it fails midway.
func (s *Sweeper) Sweep(ctx context.Context) (int64, error) {
	before := s.NowFunc().Add(-s.ttl) // fixed for the whole sweep, so it ends
	var total int64
	for {
		n, err := s.deleteBatch(ctx, before)
		total += n
		if err != nil || n < int64(s.batch) {
			return total, err
		}
	}
}

func (s *Sweeper) deleteBatch(ctx context.Context, before time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.del.DeleteStale(ctx, before, s.batch)
}
