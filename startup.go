package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"callback/pkg/ingest"
	"callback/pkg/store"
	"callback/pkg/wal"
)

// ensureSchema applies init.sql, retrying until the database answers, and
// reports whether it did; it gives up only when ctx is cancelled. Each
// failure is logged here, where it stops.
func ensureSchema(ctx context.Context, log *slog.Logger, db *store.Postgres, timeout time.Duration) bool {
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err := db.EnsureSchema(sctx)
		cancel()
		if err == nil {
			log.Info("schema ready", "attempts", attempt)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		wait := min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)
		log.Warn("database not ready, retrying", "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// replay queues what the intake log holds from before this start, with the
// original receipt times, skipping callbacks older than the TTL (their rows
// would be swept at once; the cutoff moves on while the replay waits for
// live callbacks). Upserts move last_seen only forward, so replaying a
// callback that was already written changes nothing, and a crash during the
// replay just replays again. A log it cannot read is logged, not fatal: the
// service goes on taking callbacks, and what was not replayed stays on disk
// until it outlives the TTL.
func replay(ctx context.Context, log *slog.Logger, intakeLog *wal.Log, pipe *ingest.Pipeline, ttl time.Duration) {
	var callbacks, skipped int
	err := intakeLog.Replay(func(r wal.Record) error {
		if time.Since(r.Received) > ttl {
			skipped++
			intakeLog.Owe(r.Mark, -1) // settled: its rows would be swept at once
			return nil
		}
		callbacks++
		return pipe.Restore(ctx, r.IDs, r.Received, r.Mark)
	})
	switch {
	case errors.Is(err, ingest.ErrClosed), ctx.Err() != nil:
		// Shutting down mid-replay: what is left stays in the log, and the
		// next start replays it.
		log.Warn("intake log replay cut short by shutdown", "count", callbacks)
		return
	case err != nil:
		log.Error("replay intake log: callbacks not replayed stay on disk until they outlive the ttl", "count", callbacks, "err", err)
		return
	}
	st := intakeLog.Stats()
	log.Info("intake log replayed", "count", callbacks, "skipped_older_than_ttl", skipped,
		"corrupt", st.Corrupt, "torn_bytes", st.TornBytes)
}

// atLeastTwoProcs makes sure two goroutines can run Go code at once when
// the intake log is on. fdatasync keeps its thread's P (the runtime's right
// to run Go code) for the whole sync, a millisecond or more; with
// GOMAXPROCS=1, which is what a container limited to one CPU gets, every
// sync would stop the handlers until the runtime's monitor took the P back
// (BENCHMARKS.md, "Pinned: one core for the service"). The second P costs
// nothing while the first waits: its thread sleeps in the kernel. Setting GOMAXPROCS stops the runtime from
// following later changes of the CPU limit, so it is done only when it
// would otherwise be 1.
func atLeastTwoProcs(log *slog.Logger) {
	if n := runtime.GOMAXPROCS(0); n < 2 {
		runtime.GOMAXPROCS(2)
		log.Info("GOMAXPROCS raised to 2: the intake log's syncs hold a P each", "was", n)
	}
}

// version is the module version and the VCS revision the binary was built
// from, as the Go toolchain recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "callback (no build info)"
	}
	v := "callback " + bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += " " + rev
		if settings["vcs.modified"] == "true" {
			v += "+dirty"
		}
		if t := settings["vcs.time"]; t != "" {
			v += " " + t
		}
	}
	return v + " " + bi.GoVersion
}

// healthcheck gets url and fails unless it answers 200 within 2 s.
func healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", url, resp.StatusCode)
	}
	return nil
}
