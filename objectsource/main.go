// Command objectsource plays the program the customer attaches to the brief, both halves
// in one process: it serves GET /objects/{id} on -addr and posts callbacks to -target. Its
// defaults are the customer's; with -senders or -rate it doubles as a load generator.
//
//	go run ./objectsource                      # like the customer's program
//	go run ./objectsource -addr '' -rate 200 -senders 4 -duration 1m -log-level warn
//	go run ./objectsource -addr '' -interval 0 -senders 64 -min-ids 200 -max-ids 200 \
//	    -duration 20s -log-level warn             # closed loop at saturation
//	go run ./objectsource -capacity 400 -target ''  # an upstream that refuses beyond 400
//	go run ./objectsource -addr '' -target '' -baseline-addr 127.0.0.1:9091
//	                                           # baselines: POST /read and /decode
//
// It stops on SIGINT or SIGTERM (a second one kills it at once), after -duration, or, when
// it does not serve, once -max-sends posts are done, and prints a summary line to stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"callback/objectsource/sim"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	if err != errUsage { // for a bare errUsage, the flag package has printed the problem
		fmt.Fprintln(os.Stderr, err)
	}
	if errors.Is(err, errUsage) {
		os.Exit(2) // as flag.ExitOnError does
	}
	os.Exit(1)
}

// errUsage marks a bad command line, for which main exits 2.
var errUsage = errors.New("bad command line")

// options holds the parsed command line.
type options struct {
	addr     string
	baseline string // address of the baseline handlers, or empty
	durable  string // directory of the durable baseline's file
	duration time.Duration
	logLevel slog.Level
	upstream sim.Upstream // only the configuration fields are set
	sender   sim.Sender   // Target empty means no sending
}

// parseFlags parses args and checks the values, reporting every problem at once.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("objectsource", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: objectsource [flags]\n\nServes GET /objects/{id} and posts callbacks, like the customer's program.\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", ":9010", "listen `address` for GET /objects/{id}; empty disables serving")
	fs.DurationVar(&o.upstream.MinLatency, "min-latency", 300*time.Millisecond, "shortest delay before an object answer")
	fs.DurationVar(&o.upstream.MaxLatency, "max-latency", 4300*time.Millisecond, "longest delay before an object answer (uniform in between)")
	fs.Float64Var(&o.upstream.ErrorRate, "error-rate", 0, "`fraction` of object lookups answered 500, 0 to 1")
	fs.IntVar(&o.upstream.Capacity, "capacity", 0, "most lookups served at once; beyond it answer 503 at once (0: no cap)")
	fs.StringVar(&o.baseline, "baseline-addr", "", "listen `address` for the intake baselines: POST /read reads the body, /decode also decodes it with encoding/json, /durable appends it to a file and syncs it (group commit) before its 202")
	fs.StringVar(&o.durable, "baseline-dir", os.TempDir(), "`directory` for the file of the /durable baseline (put it on the disk the service's -wal-dir is on)")
	fs.Float64Var(&o.sender.FreshRate, "fresh-rate", 0, "new distinct IDs per second: the ID range slides forward at this rate (0: fixed range)")
	fs.StringVar(&o.sender.Target, "target", "http://localhost:9090/callback", "callback `URL` to post to; empty disables sending")
	fs.DurationVar(&o.sender.Interval, "interval", 5*time.Second, "delay after each answer before a sender's next post (fixed delay); 0 is a closed loop at full speed")
	fs.DurationVar(&o.sender.InitialDelay, "initial-delay", 5*time.Second, "delay before the first post")
	fs.DurationVar(&o.sender.Timeout, "timeout", time.Second, "client timeout per post; a slower answer is a missed callback")
	fs.IntVar(&o.sender.Senders, "senders", 1, "concurrent senders, each posting on its own")
	fs.Float64Var(&o.sender.Rate, "rate", 0, "posts per second per sender on a fixed schedule (open loop); 0 uses -interval")
	fs.IntVar(&o.sender.MinIDs, "min-ids", 0, "fewest IDs in a body")
	fs.IntVar(&o.sender.MaxIDs, "max-ids", 199, "most IDs in a body (uniform in between)")
	fs.Int64Var(&o.sender.IDRange, "id-range", 100, "`count` of distinct IDs: each is drawn from id-base to id-base+id-range-1")
	fs.Int64Var(&o.sender.IDBase, "id-base", 0, "smallest ID")
	fs.IntVar(&o.sender.MaxSends, "max-sends", 0, "stop posting after this many posts in total; 0 means no limit")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long; 0 runs until SIGINT or SIGTERM")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error (every post logs at info)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage // fs has printed the problem and the usage
	}

	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.addr == "" && o.sender.Target == "" && o.baseline == "" {
		errs = append(errs, errors.New("-addr, -target and -baseline-addr are all empty: nothing to do"))
	}
	if o.upstream.Capacity < 0 || !(o.sender.FreshRate >= 0) {
		errs = append(errs, errors.New("-capacity and -fresh-rate must be >= 0"))
	}
	u, s := &o.upstream, &o.sender
	if u.MinLatency < 0 || u.MaxLatency < u.MinLatency {
		errs = append(errs, fmt.Errorf("-min-latency %v, -max-latency %v: want 0 <= min <= max", u.MinLatency, u.MaxLatency))
	}
	if !(u.ErrorRate >= 0 && u.ErrorRate <= 1) {
		errs = append(errs, fmt.Errorf("-error-rate %v: want 0 to 1", u.ErrorRate))
	}
	if s.Interval < 0 || s.InitialDelay < 0 || s.Timeout <= 0 || o.duration < 0 {
		errs = append(errs, errors.New("-interval, -initial-delay and -duration must be >= 0, -timeout > 0"))
	}
	if s.Senders < 1 || !(s.Rate >= 0) || s.MaxSends < 0 {
		errs = append(errs, errors.New("-senders must be >= 1, -rate and -max-sends >= 0"))
	}
	if s.MinIDs < 0 || s.MaxIDs < s.MinIDs || s.IDRange < 1 {
		errs = append(errs, errors.New("want 0 <= -min-ids <= -max-ids and -id-range >= 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	// sim.Sender reads zero as "the customer's value" and negative as "none"; on the
	// command line zero means zero.
	if s.Interval == 0 {
		s.Interval = -1
	}
	if s.MaxIDs == 0 {
		s.MaxIDs = -1
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	// cancelSend stops the sender when the server fails, and at the end in any case.
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()

	var errs []error

	// A nil channel never receives, so a disabled half simply never reports.
	var (
		up       *sim.Upstream
		srv      *http.Server
		serveErr chan error
	)
	if o.addr != "" {
		ln, err := net.Listen("tcp", o.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", o.addr, err)
		}
		up = &sim.Upstream{MinLatency: o.upstream.MinLatency, MaxLatency: o.upstream.MaxLatency,
			ErrorRate: o.upstream.ErrorRate, Capacity: o.upstream.Capacity}
		srv = &http.Server{
			Handler:           up,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      up.MaxLatency + 10*time.Second, // an answer waits up to MaxLatency
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		serveErr = make(chan error, 1)
		go func() { serveErr <- srv.Serve(ln) }()
		log.Info("serving objects", "addr", ln.Addr().String(),
			"min_latency", up.MinLatency, "max_latency", up.MaxLatency, "error_rate", up.ErrorRate,
			"capacity", up.Capacity)
	}
	if o.baseline != "" {
		ln, err := net.Listen("tcp", o.baseline)
		if err != nil {
			return fmt.Errorf("listen %s: %w", o.baseline, err)
		}
		file := filepath.Join(o.durable, fmt.Sprintf("callback-durable-baseline-%d", os.Getpid()))
		durable, err := sim.NewDurable(file)
		if err != nil {
			return fmt.Errorf("durable baseline: %w", err)
		}
		defer func() {
			durable.Close()
			os.Remove(file)
		}()
		mux := http.NewServeMux()
		mux.Handle("POST /read", sim.ReadOnly)
		mux.Handle("POST /decode", sim.ReadDecode)
		mux.Handle("POST /durable", durable)
		base := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
		baseErr := make(chan error, 1)
		go func() { baseErr <- base.Serve(ln) }()
		defer func() {
			base.Close() // the baselines hold nothing worth draining
			<-baseErr
		}()
		log.Info("serving baselines", "addr", ln.Addr().String())
	}

	type sendOutcome struct {
		sum sim.Summary
		err error
	}
	var sendDone chan sendOutcome
	if o.sender.Target != "" {
		snd := o.sender
		snd.Log = log.With("component", "sender")
		sendDone = make(chan sendOutcome, 1)
		go func() {
			sum, err := snd.Run(sendCtx)
			sendDone <- sendOutcome{sum, err}
		}()
		log.Info("sending callbacks", "target", snd.Target, "senders", snd.Senders,
			"interval", max(snd.Interval, 0), "rate", snd.Rate, "initial_delay", snd.InitialDelay)
	}

	// Wait for a signal, the end of -duration or a failure. When the sender finishes by
	// itself (-max-sends), keep serving if we serve: the service may still be looking up.
	var sum *sim.Summary
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case err := <-serveErr:
			serveErr = nil
			errs = append(errs, fmt.Errorf("serve objects: %w", err))
			waiting = false
		case out := <-sendDone:
			sendDone = nil
			sum = &out.sum
			if out.err != nil {
				errs = append(errs, out.err)
			}
			waiting = out.err == nil && srv != nil
		}
	}
	stop() // from here on, a second signal kills the process the default way
	log.Info("stopping")

	// 1. Stop posting; posts in flight finish within -timeout.
	cancelSend()
	if sendDone != nil {
		out := <-sendDone
		sum = &out.sum
		if out.err != nil {
			errs = append(errs, out.err)
		}
	}
	// 2. Stop serving; lookups in flight finish within -max-latency.
	if srv != nil {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.upstream.MaxLatency+5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			log.Warn("shutdown objects server", "err", err)
		}
		if serveErr != nil {
			if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("serve objects: %w", err))
			}
		}
	}

	var line []string
	if sum != nil {
		line = append(line, sum.String())
	}
	if up != nil {
		line = append(line, fmt.Sprintf("lookups=%d lookup_errors=%d lookups_refused=%d max_in_flight=%d",
			up.Requests(), up.Errors(), up.Refused(), up.MaxInFlight()))
	}
	fmt.Fprintln(stdout, strings.Join(line, " "))
	return errors.Join(errs...)
}
