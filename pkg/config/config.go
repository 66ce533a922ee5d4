// Package config reads the service's settings from flags and the environment,
// in one place, with every default and check. A flag beats an environment
// variable, which beats the built-in default. (main loads .env into the
// environment first without overriding variables that are already set, so
// .env sits just above the defaults.) Load does no I/O beyond calling getenv.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"
)

// DefaultDatabaseURL is the database that docker-compose.yml and .env describe.
const DefaultDatabaseURL = "postgres://callback:callback@localhost:5432/callback?sslmode=disable"

// Config is every setting of the service. The comment on each field names its
// flag, its environment variable and its default.
type Config struct {
	// Addr is the listen address. -addr, ADDR, default localhost:9090.
	Addr string
	// SourceURL is the base URL of the object service. -src, OBJECT_SOURCE_URL,
	// default http://localhost:9010.
	SourceURL string
	// DatabaseURL is the PostgreSQL connection string. -db, DATABASE_URL,
	// default DefaultDatabaseURL.
	DatabaseURL string
	// TTL is how long an object stays in the table after the newest callback
	// that named it. -ttl, OBJECT_TTL, default 30s.
	TTL time.Duration

	// Workers is the number of concurrent upstream lookups. Lookups take 0.3 to
	// 4.3 s, so throughput is about Workers/2.3 lookups per second. -workers,
	// WORKERS, default 512.
	Workers int
	// QueueSize is how many callbacks may wait between the handler and the
	// coalescer before the handler answers 503. -queue-size, QUEUE_SIZE,
	// default 1024.
	QueueSize int
	// MaxPending caps the distinct IDs waiting for a worker; above it the
	// handler answers 503. -max-pending, MAX_PENDING, default 1000000.
	MaxPending int
	// FetchTimeout bounds one upstream request (retries get their own).
	// -fetch-timeout, FETCH_TIMEOUT, default 6s, above the 4.3 s worst case.
	FetchTimeout time.Duration

	// BatchSize is the most rows one upsert statement writes. -batch-size,
	// BATCH_SIZE, default 1000.
	BatchSize int
	// FlushInterval is the longest a looked-up object waits for its batch.
	// -flush-interval, FLUSH_INTERVAL, default 100ms.
	FlushInterval time.Duration
	// DBTimeout bounds each database statement. -db-timeout, DB_TIMEOUT,
	// default 5s.
	DBTimeout time.Duration
	// DBMaxConns is the pool size; only the writer and the sweeper use it.
	// -db-max-conns, DB_MAX_CONNS, default 4.
	DBMaxConns int

	// SweepInterval is how often stale rows are deleted. -sweep-interval,
	// SWEEP_INTERVAL, default 1s.
	SweepInterval time.Duration
	// SweepBatch is the most rows one delete statement removes, so a huge
	// delete never holds long locks. -sweep-batch, SWEEP_BATCH, default 5000.
	SweepBatch int

	// DrainTimeout bounds the shutdown drain: queued IDs not looked up and
	// written by then are logged as abandoned. -drain-timeout, DRAIN_TIMEOUT,
	// default 30s.
	DrainTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may sit idle. It must be
	// well above the senders' 5 s rhythm, or the server may close a connection
	// at the moment a sender reuses it. -idle-timeout, IDLE_TIMEOUT, default 120s.
	IdleTimeout time.Duration
	// LogLevel is debug, info, warn or error. -log-level, LOG_LEVEL, default info.
	LogLevel slog.Level
}

// Load parses args (without the program name) over the environment read by
// getenv. It returns every problem at once. With -h it prints the usage to
// output and returns an error wrapping flag.ErrHelp.
func Load(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	var (
		c    Config
		errs []error
		fs   = flag.NewFlagSet("callback", flag.ContinueOnError)
	)
	fs.SetOutput(output)

	// Each helper registers a flag whose default comes from the environment
	// when the variable is set, so -h shows the value that would be used.
	str := func(p *string, name, env, def, usage string) {
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, fmt.Sprintf("%s (env %s)", usage, env))
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		if v := getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("env %s: %w", env, err))
			} else {
				def = d
			}
		}
		fs.DurationVar(p, name, def, fmt.Sprintf("%s (env %s)", usage, env))
	}
	num := func(p *int, name, env string, def int, usage string) {
		if v := getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("env %s: %w", env, err))
			} else {
				def = n
			}
		}
		fs.IntVar(p, name, def, fmt.Sprintf("%s (env %s)", usage, env))
	}

	str(&c.Addr, "addr", "ADDR", "localhost:9090", "listen address")
	str(&c.SourceURL, "src", "OBJECT_SOURCE_URL", "http://localhost:9010", "base URL of the object service")
	c.DatabaseURL = cmp.Or(getenv("DATABASE_URL"), DefaultDatabaseURL)
	fs.Var(secretURL{&c.DatabaseURL}, "db", "PostgreSQL connection `URL` (env DATABASE_URL)")
	dur(&c.TTL, "ttl", "OBJECT_TTL", 30*time.Second, "delete objects not seen for longer than this")
	num(&c.Workers, "workers", "WORKERS", 512, "concurrent upstream lookups")
	num(&c.QueueSize, "queue-size", "QUEUE_SIZE", 1024, "callbacks buffered before answering 503")
	num(&c.MaxPending, "max-pending", "MAX_PENDING", 1_000_000, "distinct IDs waiting for a lookup before answering 503")
	dur(&c.FetchTimeout, "fetch-timeout", "FETCH_TIMEOUT", 6*time.Second, "timeout of one upstream request")
	num(&c.BatchSize, "batch-size", "BATCH_SIZE", 1000, "rows per upsert statement")
	dur(&c.FlushInterval, "flush-interval", "FLUSH_INTERVAL", 100*time.Millisecond, "longest wait before a partial batch is written")
	dur(&c.DBTimeout, "db-timeout", "DB_TIMEOUT", 5*time.Second, "timeout of one database statement")
	num(&c.DBMaxConns, "db-max-conns", "DB_MAX_CONNS", 4, "database pool size")
	dur(&c.SweepInterval, "sweep-interval", "SWEEP_INTERVAL", time.Second, "how often stale objects are deleted")
	num(&c.SweepBatch, "sweep-batch", "SWEEP_BATCH", 5000, "rows per delete statement")
	dur(&c.DrainTimeout, "drain-timeout", "DRAIN_TIMEOUT", 30*time.Second, "how long shutdown may spend finishing queued work")
	dur(&c.IdleTimeout, "idle-timeout", "IDLE_TIMEOUT", 120*time.Second, "how long an idle keep-alive connection stays open")

	level := "info"
	str(&level, "log-level", "LOG_LEVEL", level, "log level: debug, info, warn or error")

	if err := fs.Parse(args); err != nil {
		return Config{}, err // already printed by fs, with the usage
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		errs = append(errs, fmt.Errorf("log level: %w", err))
	}
	errs = append(errs, c.check()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func (c Config) check() []error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %w", c.Addr, err))
	}
	if u, err := url.Parse(c.SourceURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("src %q: want an http(s) URL", c.SourceURL))
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("db: empty"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ttl", c.TTL}, {"fetch-timeout", c.FetchTimeout}, {"flush-interval", c.FlushInterval},
		{"db-timeout", c.DBTimeout}, {"sweep-interval", c.SweepInterval}, {"drain-timeout", c.DrainTimeout},
		{"idle-timeout", c.IdleTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %v must be positive", d.name, d.v))
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"workers", c.Workers}, {"queue-size", c.QueueSize}, {"max-pending", c.MaxPending},
		{"batch-size", c.BatchSize}, {"db-max-conns", c.DBMaxConns}, {"sweep-batch", c.SweepBatch},
	} {
		if n.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %d must be positive", n.name, n.v))
		}
	}
	return errs
}

// LogValue logs the configuration with the database password masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("src", c.SourceURL),
		slog.String("db", maskPassword(c.DatabaseURL)),
		slog.Duration("ttl", c.TTL),
		slog.Int("workers", c.Workers),
		slog.Int("queue_size", c.QueueSize),
		slog.Int("max_pending", c.MaxPending),
		slog.Duration("fetch_timeout", c.FetchTimeout),
		slog.Int("batch_size", c.BatchSize),
		slog.Duration("flush_interval", c.FlushInterval),
		slog.Duration("db_timeout", c.DBTimeout),
		slog.Int("db_max_conns", c.DBMaxConns),
		slog.Duration("sweep_interval", c.SweepInterval),
		slog.Int("sweep_batch", c.SweepBatch),
		slog.Duration("drain_timeout", c.DrainTimeout),
		slog.Duration("idle_timeout", c.IdleTimeout),
		slog.String("log_level", c.LogLevel.String()),
	)
}

// secretURL is a string flag that -h shows with its password masked: its
// default may come from DATABASE_URL.
type secretURL struct{ p *string }

func (s secretURL) String() string {
	if s.p == nil { // the flag package probes a zero value
		return ""
	}
	return maskPassword(*s.p)
}

func (s secretURL) Set(v string) error {
	*s.p = v
	return nil
}

// maskPassword hides the password of a URL-form connection string. A
// key=value DSN is hidden whole, since it cannot be parsed safely here.
func maskPassword(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "(set)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	if q := u.Query(); q.Has("password") { // libpq also takes ?password=
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
