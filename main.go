// Command callback receives object-ID callbacks over HTTP, looks every object
// up in the object service and keeps a PostgreSQL table of the objects that
// are online, each with the time it was last seen. Rows not seen for the TTL
// are deleted. Run with -h for the flags; see README.md for the design.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/joho/godotenv"

	"callback/pkg/callback"
	"callback/pkg/config"
	"callback/pkg/expiry"
	"callback/pkg/ingest"
	"callback/pkg/lifecycle"
	"callback/pkg/metrics"
	"callback/pkg/objects"
	"callback/pkg/store"
	"callback/pkg/wal"
)

var (
	_ ingest.Source     = (*objects.Client)(nil)
	_ ingest.Upserter   = (*store.Postgres)(nil)
	_ expiry.Deleter    = (*store.Postgres)(nil)
	_ callback.Enqueuer = (*ingest.Pipeline)(nil)
)

func main() {
	// .env fills in variables that are not set; real environment variables win.
	if err := godotenv.Load(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "load .env:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// run wires the service and blocks until ctx is cancelled (a signal) or a
// part fails, and then until every part has stopped. Logs go to stdout as
// JSON; usage and config errors to stderr. -version and -healthcheck are
// answered before anything starts.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if slices.Contains(args, "-version") || slices.Contains(args, "--version") {
		fmt.Fprintln(stdout, version())
		return nil
	}
	// -healthcheck URL: a container's health probe on an image with no
	// shell or curl; it exits non-zero unless URL answers 200.
	if len(args) == 2 && args[0] == "-healthcheck" {
		return healthcheck(ctx, args[1])
	}
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("starting", "config", cfg)

	// Database. The pool only connects when used; the schema is applied in
	// the background (below), so the service starts and answers even while
	// its database is still down.
	poolCfg, err := poolConfig(cfg.DatabaseURL, cfg.DBMaxConns, log)
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("open database pool: %w", err)
	}
	defer pool.Close()
	db := store.New(pool)

	// Metrics: the histograms are fed by the parts as things happen; the
	// rest is read from the parts at every scrape (Watch, below).
	m := metrics.New()

	// The intake log: every callback is synced there before its 202 and
	// replayed after a restart (see replay). Without -wal-dir, callbacks live
	// in memory until written, as the log's README section says.
	var (
		journal    *wal.Log
		journalOpt ingest.Journal // stays a nil interface without the log
	)
	if cfg.WALDir != "" {
		atLeastTwoProcs(log)
		// Segments go once the pipeline has paid what it owes on them (see
		// ingest.Journal), or once older than the TTL, when their rows
		// would be swept anyway.
		if journal, err = wal.Open(cfg.WALDir, log, wal.Options{
			MaxBytes:        int64(cfg.WALMaxBytes),
			Linger:          cfg.WALLinger,
			KeepFor:         cfg.TTL,
			ObserveSyncFunc: metrics.ObserveFunc(m.WALSync),
		}); err != nil {
			return err
		}
		defer journal.Close()
		journalOpt = journal
	}

	src := objects.New(cfg.SourceURL, cfg.Workers, cfg.FetchTimeout, log)
	pipe := ingest.New(log, src, db, ingest.Options{
		Journal:           journalOpt,
		ObserveLookupFunc: metrics.ObserveFunc(m.LookupDuration),
		ObserveWriteFunc:  metrics.ObserveFunc(m.WriteDuration),
		Workers:           cfg.Workers,
		MinLookups:        cfg.MinLookups,
		QueueSize:         cfg.QueueSize,
		MaxWaiting:        cfg.MaxPending,
		BatchSize:         cfg.BatchSize,
		FlushInterval:     cfg.FlushInterval,
		DBTimeout:         cfg.DBTimeout,
		TTL:               cfg.TTL,
		StatsInterval:     cfg.StatsInterval,
	})
	sweeper := expiry.New(log, db, expiry.Options{
		TTL:      cfg.TTL,
		Interval: cfg.SweepInterval,
		Batch:    cfg.SweepBatch,
		Timeout:  cfg.DBTimeout,
	})
	// Sweeping while the writer holds rows newer than the table's would
	// delete objects that were in fact seen (see Pipeline.WritesBehind).
	sweeper.PauseFunc = pipe.WritesBehind

	m.Watch(metrics.Sources{Pipeline: pipe, Journal: journal, Sweeper: sweeper, Pool: func() metrics.PoolStats {
		st := pool.Stat()
		return metrics.PoolStats{
			Acquired: st.AcquiredConns(), Idle: st.IdleConns(), Total: st.TotalConns(), Max: st.MaxConns(),
			Acquires: st.AcquireCount(), AcquireWait: st.AcquireDuration(),
		}
	}})

	// draining is set once the service has decided to stop: /readyz
	// answers 503 from then on, while the listener still takes callbacks
	// for -shutdown-delay, so a load balancer moves senders away first.
	var draining atomic.Bool
	mux := http.NewServeMux()
	addRoutes(mux, log, pipe, journal, m, &draining, cfg.AuthToken)
	srv := &http.Server{
		Handler: callback.Recover(log, mux),
		// A slow or stuck client must not hold a connection: headers within
		// 2 s, the whole body within 10 s. Handlers answer in microseconds.
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		// Senders post every 5 s on a kept-alive connection. Without an
		// IdleTimeout, net/http uses ReadTimeout as the idle limit, and a
		// server that closes an idle connection just as the sender reuses it
		// makes that POST fail. Keep idle connections far longer than 5 s.
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// admin: pprof on a listener of its own, off by default, so profiling
	// is never exposed where callbacks arrive.
	var admin lifecycle.Part
	if cfg.AdminAddr != "" {
		if admin, err = adminServer(cfg.AdminAddr, log); err != nil {
			ln.Close()
			return err
		}
	}

	// Start in dependency order; parts stops them in reverse. Each part
	// runs until parts.Stop (or Abandon) ends it, never on ctx alone, so
	// whatever ends the wait below, every part is stopped in order.
	parts := lifecycle.New(log)
	// wal: the intake log's writer starts first and stops last, so every
	// callback the server takes can be synced until the server has stopped.
	if journal != nil {
		parts.Start(ctx, lifecycle.Part{Name: "wal", Run: journal.Run})
	}
	// upkeep: the schema, then the sweeper, and beside them the replay of
	// the intake log, which yields to live callbacks and may so take long
	// under load (upkeep's Run owns its goroutine and waits for it). The
	// replay runs while the server already takes callbacks; until the schema
	// is applied, writes fail and the writer keeps their rows and retries,
	// as it does through any database outage, so callbacks are accepted from
	// the first second. It stops after the pipeline: a drain that starts
	// before the table exists still needs it, and Close ends the replay.
	parts.Start(ctx, lifecycle.Part{Name: "upkeep", Run: func(ctx context.Context) error {
		replayed := make(chan struct{})
		go func() {
			defer close(replayed)
			if journal != nil {
				replay(ctx, log, journal, pipe, cfg.TTL)
			}
		}()
		defer func() { <-replayed }()
		if !ensureSchema(ctx, log, db, cfg.DBTimeout) {
			return nil // stopped before the database answered
		}
		return sweeper.Run(ctx)
	}})
	// pipeline: Close stops intake and lets the workers drain the queue;
	// cancelling (the drain deadline, a second signal) abandons the rest.
	parts.Start(ctx, lifecycle.Part{Name: "pipeline", Run: pipe.Run, Drain: func(context.Context) error {
		pipe.Close()
		return nil
	}})
	// http: Shutdown stops new callbacks and lets in-flight ones finish.
	parts.Start(ctx, lifecycle.Part{Name: "http", Drain: srv.Shutdown, Run: func(context.Context) error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}})
	if admin.Run != nil {
		parts.Start(ctx, admin)
	}
	log.Info("listening", "addr", ln.Addr().String(), "admin_addr", cfg.AdminAddr)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", cfg.DrainTimeout.String())
	case <-parts.Ended():
		log.Error("a part stopped on its own, shutting down", "drain_timeout", cfg.DrainTimeout.String())
	}

	// Not ready from here on; callbacks are still taken for the delay.
	draining.Store(true)
	// A second signal means "now": skip the delay and abandon the drain as
	// the deadline would. The pipeline logs how many IDs that abandons.
	force, stopForce := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopForce()
	select {
	case <-time.After(cfg.ShutdownDelay):
	case <-force.Done():
	case <-parts.Ended(): // a part failed: nothing to wait for
	}

	// Stop: http (no new callbacks), pipeline (drain the queue, write the
	// last batch), upkeep, the intake log; the pool closes last, deferred
	// above. The drain gets a fresh context: the signal context is already
	// cancelled.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.DrainTimeout)
	defer cancel()
	stopOnForce := context.AfterFunc(force, func() {
		log.Warn("second signal, abandoning the drain")
		parts.Abandon()
	})
	defer stopOnForce()
	if err := parts.Stop(drainCtx); err != nil {
		log.Error("drain incomplete", "err", err)
		return err
	}
	log.Info("drained")
	return nil
}

// poolConfig is the database pool for dbURL, with what the service needs of
// it beyond pgx's defaults; a parameter the URL sets wins over each.
func poolConfig(dbURL string, maxConns int, log *slog.Logger) (*pgxpool.Config, error) {
	poolCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	poolCfg.MaxConns = int32(maxConns)
	// A host that takes the TCP connection and never answers (a frozen VM,
	// a black-holed route) would hold each connection attempt until the
	// statement's timeout, and with a multi-host URL the next host would
	// never be tried. The URL's connect_timeout, if any, wins.
	if poolCfg.ConnConfig.ConnectTimeout == 0 {
		poolCfg.ConnConfig.ConnectTimeout = dbConnectTimeout
	}
	// No prepared statements that outlive a statement: behind a pooler in
	// transaction mode (PgBouncer) each transaction may get another server
	// connection, where pgx's cached statements collide or are missing
	// (42P05, 26000). The exec mode sends each statement with an unnamed
	// one, in one round trip, and costs only the parse the cache saved.
	// The URL's default_query_exec_mode, if any, wins.
	if !strings.Contains(dbURL, "default_query_exec_mode") {
		poolCfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	// Connections are replaced every few minutes, so that one left on the
	// wrong node by a failover, or on an address DNS no longer gives, does
	// not last for pgxpool's default hour. The URL's pool_max_conn_lifetime,
	// if any, wins.
	if !strings.Contains(dbURL, "pool_max_conn_lifetime") {
		poolCfg.MaxConnLifetime = dbConnLifetime
	}
	// With several hosts, pgx tells why the ones before the one it
	// settled on failed only if all fail; the operator needs to know now.
	store.LogHostFailures(&poolCfg.ConnConfig.Config, log)
	return poolCfg, nil
}

// Database connection defaults that the URL can override (see poolConfig).
const (
	dbConnectTimeout = 2 * time.Second
	dbConnLifetime   = 5 * time.Minute
)

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

// addRoutes is the whole HTTP surface. journal may be nil; authToken, if
// set, is the bearer token /callback requires.
func addRoutes(mux *http.ServeMux, log *slog.Logger, pipe *ingest.Pipeline, journal *wal.Log, m *metrics.Metrics, draining *atomic.Bool, authToken string) {
	// Not "POST /callback": other methods must get our JSON 405, not the mux's text.
	var intake http.Handler = callback.NewHandler(log, pipe)
	if authToken != "" {
		intake = callback.RequireBearer(authToken, intake)
	}
	mux.Handle("/callback", m.CountRequests(intake))
	// metrics: Prometheus's text format, for a scraper.
	mux.Handle("GET /metrics", m.Handler())
	// healthz: the process answers. It does no I/O.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	// readyz: 503 while draining, so a load balancer moves senders elsewhere,
	// and while the intake log cannot write, so it prefers replicas whose
	// 202 still means "on disk" (this one keeps answering 202 from memory).
	// It deliberately ignores the database: the service buffers through a
	// database outage, and pulling every replica for a blip would turn it
	// into missed callbacks.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() || !pipe.Accepting() || (journal != nil && journal.Degraded()) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// replay queues what the intake log holds from before this start, with the
// original receipt times, skipping callbacks older than the TTL (their rows
// would be swept at once; the cutoff moves on while the replay waits for
// live callbacks). Upserts move last_seen only forward, so replaying a
// callback that was already written changes nothing, and a crash during the
// replay just replays again. A log it cannot read is logged, not fatal: the
// service goes on taking callbacks, and what was not replayed stays on disk
// until it outlives the TTL.
func replay(ctx context.Context, log *slog.Logger, journal *wal.Log, pipe *ingest.Pipeline, ttl time.Duration) {
	var callbacks, skipped int
	err := journal.Replay(func(r wal.Record) error {
		if time.Since(r.Received) > ttl {
			skipped++
			journal.Owe(r.Mark, -1) // settled: its rows would be swept at once
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
	st := journal.Stats()
	log.Info("intake log replayed", "count", callbacks, "skipped_older_than_ttl", skipped,
		"corrupt", st.Corrupt, "torn_bytes", st.TornBytes)
}

// adminServer listens on addr and returns the part that serves
// net/http/pprof there, and nothing else.
func adminServer(addr string, log *slog.Logger) (lifecycle.Part, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return lifecycle.Part{}, fmt.Errorf("listen admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 2 * time.Second,
		// A CPU profile or trace streams for as long as it was asked for.
		WriteTimeout: 2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return lifecycle.Part{Name: "admin", Drain: srv.Shutdown, Run: func(context.Context) error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}}, nil
}

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

// atLeastTwoProcs makes sure two goroutines can run Go code at once when
// the intake log is on. fdatasync keeps its thread's P (the runtime's right
// to run Go code) for the whole sync, a millisecond or more; with
// GOMAXPROCS=1, which is what a container limited to one CPU gets, every
// sync would stop the handlers until the runtime's monitor took the P back.
// Measured with the service pinned to one core: the intake at 0.37-0.57x
// the bare read+decode handler with 2 records per sync; with two Ps,
// 0.95-0.99x with 24. The second P costs nothing while the first waits: its
// thread sleeps in the kernel. Setting GOMAXPROCS stops the runtime from
// following later changes of the CPU limit, so it is done only when it
// would otherwise be 1.
func atLeastTwoProcs(log *slog.Logger) {
	if n := runtime.GOMAXPROCS(0); n < 2 {
		runtime.GOMAXPROCS(2)
		log.Info("GOMAXPROCS raised to 2: the intake log's syncs hold a P each", "was", n)
	}
}
