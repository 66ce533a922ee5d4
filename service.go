package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"callback/pkg/callback"
	"callback/pkg/config"
	"callback/pkg/expiry"
	"callback/pkg/ingest"
	"callback/pkg/lifecycle"
	"callback/pkg/metrics"
	"callback/pkg/objects"
	"callback/pkg/status"
	"callback/pkg/store"
	"callback/pkg/wal"
)

var (
	_ ingest.Source     = (*objects.Client)(nil)
	_ ingest.Upserter   = (*store.Postgres)(nil)
	_ expiry.Deleter    = (*store.Postgres)(nil)
	_ callback.Enqueuer = (*ingest.Pipeline)(nil)
)

// service is the callback service, wired and not yet started: newService
// builds every part, parts says how each starts and stops, close releases
// what newService opened.
type service struct {
	cfg       config.Config
	log       *slog.Logger
	pool      *pgxpool.Pool
	db        *store.Postgres
	intakeLog *wal.Log // nil without -wal-dir
	src       *objects.Client
	pipe      *ingest.Pipeline
	sweeper   *expiry.Sweeper
	srv       *http.Server
	status    *status.Sampler // the admin listener's page; it samples only with -admin-addr

	// draining is set once the service has decided to stop: /readyz
	// answers 503 from then on (see shutdown).
	draining atomic.Bool
}

// wrap lets a test wrap two things the service wires: the upstream client
// the pipeline looks up with, and the queue the handler enqueues into
// (panic_test.go). A nil field leaves it as it is.
type wrap struct {
	source   func(ingest.Source) ingest.Source
	enqueuer func(callback.Enqueuer) callback.Enqueuer
}

// newService opens the database pool and the intake log and builds the
// pipeline, the sweeper, the metrics and the HTTP server on them. Nothing
// runs yet, and nothing here waits for the database: the pool connects when
// used, and the schema is a step of parts, so the service starts and answers
// even while its database is still down.
func newService(ctx context.Context, cfg config.Config, log *slog.Logger, w wrap) (_ *service, err error) {
	s := &service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	poolCfg, err := poolConfig(cfg.DatabaseURL, cfg.DBMaxConns, log)
	if err != nil {
		return nil, err
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	s.db = store.New(s.pool)

	// Metrics: the histograms are fed by the parts as things happen; the
	// rest is read from the parts at every scrape (Watch, below).
	m := metrics.New()
	s.status = status.New(m.Gatherer(), cfg.TTL)

	// The intake log: every callback is synced there before its 202 and
	// replayed after a restart (see replay). Without -wal-dir, callbacks
	// live in memory until written. Segments go once the pipeline has paid
	// what it owes on them (see ingest.IntakeLog), or once older than the TTL,
	// when their rows would be swept anyway.
	var intakeLog ingest.IntakeLog // a nil interface, not a nil *wal.Log, without the log
	if cfg.WALDir != "" {
		atLeastTwoProcs(log)
		if s.intakeLog, err = wal.Open(cfg.WALDir, log, wal.Options{
			MaxBytes:        int64(cfg.WALMaxBytes),
			Linger:          cfg.WALLinger,
			KeepFor:         cfg.TTL,
			StatsInterval:   cfg.StatsInterval,
			ObserveSyncFunc: metrics.ObserveFunc(m.WALSync),
		}); err != nil {
			return nil, err
		}
		intakeLog = s.intakeLog
	}

	s.src = objects.New(cfg.SourceURL, cfg.Workers, cfg.FetchTimeout, log)
	var src ingest.Source = s.src
	if w.source != nil {
		src = w.source(src)
	}
	s.pipe = ingest.New(log, src, s.db, ingest.Options{
		IntakeLog:         intakeLog,
		ObserveLookupFunc: metrics.ObserveFunc(m.LookupDuration),
		ObserveWriteFunc:  metrics.ObserveFunc(m.WriteDuration),
		ObserveRowAgeFunc: metrics.ObserveFunc(m.RowAge),
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
	s.sweeper = expiry.New(log, s.db, expiry.Options{
		TTL:      cfg.TTL,
		Interval: cfg.SweepInterval,
		Batch:    cfg.SweepBatch,
		Timeout:  cfg.DBTimeout,
	})
	// Sweeping while the writer holds rows newer than the table's would
	// delete objects that were in fact seen (see Pipeline.WritesBehind).
	s.sweeper.PauseFunc = s.pipe.WritesBehind

	pool := s.pool
	m.Watch(metrics.Sources{Pipeline: s.pipe, IntakeLog: s.intakeLog, Sweeper: s.sweeper, Pool: func() metrics.PoolStats {
		st := pool.Stat()
		return metrics.PoolStats{
			Acquired: st.AcquiredConns(), Idle: st.IdleConns(), Total: st.TotalConns(), Max: st.MaxConns(),
			Acquires: st.AcquireCount(), AcquireWait: st.AcquireDuration(),
		}
	}})

	var q callback.Enqueuer = s.pipe
	if w.enqueuer != nil {
		q = w.enqueuer(q)
	}
	s.srv = &http.Server{
		Handler: routes(log, q, s.pipe, s.intakeLog, m, &s.draining, cfg.AuthToken),
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
	return s, nil
}

// parts are the service's parts in the order they start; lifecycle stops
// them in reverse.
//   - wal: the intake log's writer starts first and stops last, so every
//     callback the server takes can be synced until the server has stopped.
//   - schema, a step: applies init.sql, retrying until the database answers.
//     Until then writes fail, and the writer keeps their rows and retries, as
//     it does through any database outage, so callbacks are accepted from the
//     first second.
//   - sweeper: deletes stale rows, once the schema is there.
//   - replay, a step: what the log holds from before this start, behind live
//     callbacks, so it may take long under load. It stops after the pipeline,
//     whose Close ends it.
//   - pipeline: Close stops intake and lets the workers drain the queue;
//     cancelling (the drain deadline, a second signal) abandons the rest.
//   - http: Shutdown stops new callbacks and lets in-flight ones finish.
func (s *service) parts(ln net.Listener) []lifecycle.Part {
	var ps []lifecycle.Part
	if s.intakeLog != nil {
		ps = append(ps, lifecycle.Part{Name: "wal", Run: s.intakeLog.Run})
	}
	schema := make(chan struct{}) // closed once the schema is applied
	ps = append(ps,
		lifecycle.Part{Name: "schema", Once: true, Run: func(ctx context.Context) error {
			if ensureSchema(ctx, s.log, s.db, s.cfg.DBTimeout) {
				close(schema)
			}
			return nil
		}},
		lifecycle.Part{Name: "sweeper", Run: func(ctx context.Context) error {
			select {
			case <-schema:
				return s.sweeper.Run(ctx)
			case <-ctx.Done():
				return nil // stopped before the database answered
			}
		}})
	if s.intakeLog != nil {
		ps = append(ps, lifecycle.Part{Name: "replay", Once: true, Run: func(ctx context.Context) error {
			replay(ctx, s.log, s.intakeLog, s.pipe, s.cfg.TTL)
			return nil
		}})
	}
	return append(ps,
		lifecycle.Part{Name: "pipeline", Run: s.pipe.Run, Drain: func(context.Context) error {
			s.pipe.Close()
			return nil
		}},
		lifecycle.Part{Name: "http", Drain: s.srv.Shutdown, Run: func(context.Context) error {
			if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}})
}

// close releases what newService opened, in reverse. Run the parts' Stop
// first: the pipeline uses all of it until it has drained.
func (s *service) close() {
	if s.src != nil {
		s.src.Close()
	}
	if s.intakeLog != nil {
		s.intakeLog.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
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
