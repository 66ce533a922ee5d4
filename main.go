// Command callback receives object-ID callbacks over HTTP, looks every object
// up in the object service and keeps a PostgreSQL table of the objects that
// are online, each with the time it was last seen. Rows not seen for the TTL
// are deleted. Run with -h for the flags; see README.md and docs/ for the design.
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
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/joho/godotenv"

	"callback/pkg/config"
	"callback/pkg/lifecycle"
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

// run reads the config, builds the service, starts its parts, and blocks
// until ctx is cancelled (a signal) or a part fails, and then until every
// part has stopped. Logs go to stdout as JSON; usage and config errors to
// stderr. -version and -healthcheck do their one thing instead.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	switch {
	case cfg.Version:
		fmt.Fprintln(stdout, version())
		return nil
	case cfg.Healthcheck != "":
		return healthcheck(ctx, cfg.Healthcheck)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("starting", "config", cfg)

	svc, err := newService(ctx, cfg, log, wrap{})
	if err != nil {
		return err
	}
	defer svc.close()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// admin: the status page and pprof on a listener of its own, off by
	// default, so neither is ever exposed where callbacks arrive.
	var admin []lifecycle.Part
	if cfg.AdminAddr != "" {
		srv, err := adminServer(cfg.AdminAddr, log, svc.status)
		if err != nil {
			ln.Close()
			return err
		}
		admin = []lifecycle.Part{{Name: "status", Run: svc.status.Run}, srv}
	}

	// Start in dependency order; parts stops them in reverse. Each part
	// runs until parts.Stop (or Abandon) ends it, never on ctx alone, so
	// whatever ends the wait below, every part is stopped in order.
	parts := lifecycle.New(log)
	for _, p := range append(svc.parts(ln), admin...) {
		parts.Start(ctx, p)
	}
	log.Info("listening", "addr", ln.Addr().String(), "admin_addr", cfg.AdminAddr)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", cfg.DrainTimeout.String())
	case <-parts.Ended():
		log.Error("a part stopped on its own, shutting down", "drain_timeout", cfg.DrainTimeout.String())
	}
	return shutdown(ctx, log, cfg, parts, &svc.draining)
}

// shutdown stops the service. /readyz answers 503 from now on, while the
// listener still takes callbacks for -shutdown-delay, so that a load
// balancer moves senders away first. Then the parts stop in reverse order of
// start: http (no new callbacks), the pipeline (drain the queue, write the
// last batch), the replay, the sweeper, the schema step, the intake log; the
// pool closes last, deferred by run. The drain has -drain-timeout. A second
// signal means "now": it skips the delay and abandons the drain as the
// deadline would; the pipeline logs how many IDs that abandons.
func shutdown(ctx context.Context, log *slog.Logger, cfg config.Config, parts *lifecycle.Group, draining *atomic.Bool) error {
	draining.Store(true)
	force, stopForce := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopForce()
	select {
	case <-time.After(cfg.ShutdownDelay):
	case <-force.Done():
	case <-parts.Ended(): // a part failed: nothing to wait for
	}

	// A fresh context: the signal context is already cancelled.
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
