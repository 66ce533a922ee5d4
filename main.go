// Command callback receives object-ID callbacks over HTTP, looks every object
// up in the object service and keeps a PostgreSQL table of the objects that
// are online, each with the time it was last seen. Rows not seen for the TTL
// are deleted. Run with -h for the flags; see README.md for the design.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/joho/godotenv"

	"callback/pkg/callback"
	"callback/pkg/config"
	"callback/pkg/expiry"
	"callback/pkg/ingest"
	"callback/pkg/objects"
	"callback/pkg/store"
)

// schema is init.sql, applied at every start so an empty database just works.
//
//go:embed init.sql
var schema string

var (
	_ ingest.Fetcher    = (*objects.Client)(nil)
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

// run wires the service and blocks until ctx is cancelled (a signal) and the
// drain has finished. Logs go to stdout as JSON; usage and config errors to
// stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("starting", "config", cfg)

	// Database. The pool only connects when used; the schema is applied in
	// the background (below), so the service starts and answers even while
	// its database is still down.
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	poolCfg.MaxConns = int32(cfg.DBMaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("open database pool: %w", err)
	}
	defer pool.Close()
	db := store.New(pool)

	src := objects.New(cfg.SourceURL, cfg.Workers, cfg.FetchTimeout)
	pipe := ingest.New(log, src, db, ingest.Options{
		Workers:       cfg.Workers,
		QueueSize:     cfg.QueueSize,
		MaxPending:    cfg.MaxPending,
		BatchSize:     cfg.BatchSize,
		FlushInterval: cfg.FlushInterval,
		DBTimeout:     cfg.DBTimeout,
		TTL:           cfg.TTL,
	})
	sweeper := expiry.New(log, db, cfg.TTL, cfg.SweepInterval, cfg.SweepBatch, cfg.DBTimeout)
	// schemaDone is closed once the schema set-up below has ended. Sweeping
	// needs the table, and must wait while the writer holds rows newer than
	// the table's (see Pipeline.WritesBehind).
	schemaDone := make(chan struct{})
	sweeper.PauseFunc = func() bool {
		select {
		case <-schemaDone:
			return pipe.WritesBehind()
		default:
			return true
		}
	}

	mux := http.NewServeMux()
	addRoutes(mux, log, pipe)
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

	// Each long-running part runs in a goroutine owned here, and reports on
	// its own channel when it has stopped.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// Until the schema is applied, writes fail and the writer keeps their rows
	// and retries, as it does through any database outage: callbacks are
	// accepted from the first second. It runs on workCtx, not ctx: a drain
	// that starts before the table exists still needs it.
	go func() {
		defer close(schemaDone)
		ensureSchema(workCtx, log, db, cfg.DBTimeout)
	}()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- pipe.Run(workCtx) }()
	sweepDone := make(chan error, 1)
	go func() { sweepDone <- sweeper.Run(ctx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", cfg.DrainTimeout)
	case serveErr = <-serveDone:
		log.Error("http server stopped", "err", serveErr)
	}

	// Shutdown order: stop intake, drain, cancel what is left, flush, close
	// the pool (deferred above). Shutdown gets a fresh context: the signal
	// context is already cancelled and would make it return at once.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.DrainTimeout)
	defer cancel()
	// A second signal means "now": abandon the drain as the deadline would.
	// The pipeline logs how many IDs that abandons.
	force, stopForce := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopForce()
	stopOnForce := context.AfterFunc(force, func() {
		log.Warn("second signal, abandoning the drain")
		cancelWork()
	})
	defer stopOnForce()
	if err := srv.Shutdown(drainCtx); err != nil { // 1. no new callbacks; in-flight ones finish
		log.Warn("http shutdown", "err", err)
	}
	pipe.Close()                                           // 2. intake closed; workers drain the queue
	stopAbandon := context.AfterFunc(drainCtx, cancelWork) // 3. at the deadline, abandon the rest
	defer stopAbandon()
	pipeErr := <-pipeDone // 4. workers done, last batch written
	if pipeErr != nil {
		log.Error("drain incomplete", "err", pipeErr)
	} else {
		log.Info("drained")
	}
	<-sweepDone  // 5. the sweeper stopped when ctx was cancelled
	cancelWork() // 6. nothing left to write: stop the schema set-up if it still retries
	<-schemaDone
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return pipeErr
}

// addRoutes is the whole HTTP surface.
func addRoutes(mux *http.ServeMux, log *slog.Logger, pipe *ingest.Pipeline) {
	// Not "POST /callback": other methods must get our JSON 405, not the mux's text.
	mux.Handle("/callback", callback.NewHandler(log, pipe))
	// healthz: the process answers. It does no I/O.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	// readyz: 503 while draining, so a load balancer moves senders elsewhere.
	// It deliberately ignores the database: the service buffers through a
	// database outage, and pulling every replica for a blip would turn it
	// into missed callbacks.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !pipe.Accepting() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// ensureSchema applies init.sql, retrying until the database answers; it
// gives up only when ctx is cancelled, which happens after the sweeper has
// stopped. Each failure is logged here, where it stops.
func ensureSchema(ctx context.Context, log *slog.Logger, db *store.Postgres, timeout time.Duration) {
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err := db.EnsureSchema(sctx, schema)
		cancel()
		if err == nil {
			log.Info("schema ready", "attempts", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		wait := min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)
		log.Warn("database not ready, retrying", "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
