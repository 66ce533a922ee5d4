package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"callback/pkg/callback"
	"callback/pkg/ingest"
	"callback/pkg/lifecycle"
	"callback/pkg/metrics"
	"callback/pkg/wal"
)

// routes is the whole HTTP surface, in the order a request meets it:
// Recover (a handler's panic is a logged 500), then the mux; /callback is
// counted by status, then, with authToken, checked for its bearer token,
// then handled by q. pipe and intakeLog (nil without the log) answer /readyz.
func routes(log *slog.Logger, q callback.Enqueuer, pipe *ingest.Pipeline, intakeLog *wal.Log, m *metrics.Metrics, draining *atomic.Bool, authToken string) http.Handler {
	mux := http.NewServeMux()
	// Not "POST /callback": other methods must get our JSON 405, not the mux's text.
	var intake http.Handler = callback.NewHandler(log, q)
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
		if draining.Load() || !pipe.Accepting() || (intakeLog != nil && intakeLog.Degraded()) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return callback.Recover(log, mux)
}

// adminServer listens on addr and returns the part that serves the status
// page (at /) and net/http/pprof there, and nothing else.
func adminServer(addr string, log *slog.Logger, page http.Handler) (lifecycle.Part, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return lifecycle.Part{}, fmt.Errorf("listen admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", page)
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
