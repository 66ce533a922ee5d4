// Package config reads the service's settings from flags and the environment.
// Every setting is one row of a table (settings, below): its flag, its
// environment variable, its default, its unit and what it means. -h, the
// startup log line, the validation and the flag table of docs/operating.md are all made
// from that table, so a setting is written down once.
//
// A flag beats an environment variable, which beats the built-in default.
// (main loads .env into the environment first without overriding variables
// that are already set, so .env sits just above the defaults.) Load does no
// I/O beyond calling getenv and writing usage to its output.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"callback/pkg/expiry"
	"callback/pkg/ingest"
	"callback/pkg/wal"
)

// DefaultDatabaseURL is the database that docker-compose.yml and .env describe.
const DefaultDatabaseURL = "postgres://callback:callback@localhost:5432/callback?sslmode=disable"

// Config is every setting of the service. The table in settings gives each
// field's flag, environment variable, default and unit.
type Config struct {
	Addr        string        // listen address
	AdminAddr   string        // listen address of the admin (pprof) listener; empty: none
	AuthToken   string        // the bearer token /callback requires; empty: none
	SourceURL   string        // base URL of the object service
	DatabaseURL string        // PostgreSQL connection string
	TTL         time.Duration // how long an object stays after the newest callback naming it
	WALDir      string        // the intake log's directory; empty: memory only
	WALMaxBytes int           // the intake log's size cap
	WALLinger   time.Duration // how long a group commit waits for company under load

	Workers      int           // lookup workers: the ceiling of the adaptive limit
	MinLookups   int           // the floor of the adaptive limit
	QueueSize    int           // callbacks buffered between handler and dispatcher
	MaxPending   int           // distinct IDs waiting for a lookup before 503
	FetchTimeout time.Duration // one upstream request

	BatchSize     int           // rows per upsert statement
	FlushInterval time.Duration // longest wait of a partial batch
	DBTimeout     time.Duration // one database statement
	DBMaxConns    int           // database pool size

	SweepInterval time.Duration // time between sweeps
	SweepBatch    int           // rows per delete statement

	DrainTimeout  time.Duration // bound of the shutdown drain
	ShutdownDelay time.Duration // /readyz says 503 this long before the listener closes
	IdleTimeout   time.Duration // how long a kept-alive connection may idle
	StatsInterval time.Duration // how often the pipeline stats line is logged
	LogLevel      slog.Level

	// Commands: each makes the binary do one thing instead of serving.
	Version     bool   // print the version and exit
	Healthcheck string // GET this URL and exit 0 only if it answers 200
}

// setting is one row of the table. field binds it to its Config field, whose
// type decides how values parse and are checked: every int and duration must
// be positive; check adds what a type cannot say.
type setting struct {
	flag, env string
	def       any    // the default, of the field's type
	unit      string // what the value counts or is, for -h and docs/operating.md
	usage     string
	secret    bool // masked in -h and in logs
	zeroOK    bool // 0 is allowed (an int or duration must be positive otherwise)
	command   bool // a command, not a setting: no environment variable, not in the log line
	field     func(*Config) any
	check     func(*Config) error
}

// settings is the table. Defaults that belong to a package are its named
// constants, so the numbers live in one place.
var settings = []setting{
	{flag: "addr", env: "ADDR", def: "localhost:9090", unit: "host:port",
		usage: "listen address",
		field: func(c *Config) any { return &c.Addr },
		check: func(c *Config) error {
			if _, _, err := net.SplitHostPort(c.Addr); err != nil {
				return fmt.Errorf("addr %q: %w", c.Addr, err)
			}
			return nil
		}},
	{flag: "admin-addr", env: "ADMIN_ADDR", def: "", unit: "host:port",
		usage: "listen address for the status page (/, charts of the last minutes) and net/http/pprof, never on the public listener; empty: off",
		field: func(c *Config) any { return &c.AdminAddr },
		check: func(c *Config) error {
			if c.AdminAddr == "" {
				return nil
			}
			if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
				return fmt.Errorf("admin-addr %q: %w", c.AdminAddr, err)
			}
			return nil
		}},
	{flag: "auth-token", env: "CALLBACK_AUTH_TOKEN", def: "", unit: "secret", secret: true,
		usage: "bearer token POST /callback requires (Authorization: Bearer …; 401 without it); empty: none, as the customer's program sends none. Prefer the environment: a flag shows in ps",
		field: func(c *Config) any { return &c.AuthToken }},
	{flag: "src", env: "OBJECT_SOURCE_URL", def: "http://localhost:9010", unit: "URL", secret: true,
		usage: "base URL of the object service; user:password@ in it is sent as Basic auth (and masked in logs)",
		field: func(c *Config) any { return &c.SourceURL },
		check: func(c *Config) error {
			if u, err := url.Parse(c.SourceURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("src %q: want an http(s) URL", maskPassword(c.SourceURL))
			}
			return nil
		}},
	{flag: "db", env: "DATABASE_URL", def: DefaultDatabaseURL, unit: "URL", secret: true,
		usage: "PostgreSQL connection URL (the compose database by default)",
		field: func(c *Config) any { return &c.DatabaseURL },
		check: func(c *Config) error {
			if c.DatabaseURL == "" {
				return errors.New("db: empty")
			}
			return nil
		}},
	{flag: "ttl", env: "OBJECT_TTL", def: ingest.DefaultTTL, unit: "duration",
		usage: "delete objects not seen for longer than this",
		field: func(c *Config) any { return &c.TTL }},
	{flag: "wal-dir", env: "WAL_DIR", def: "wal", unit: "dir",
		usage: "directory of the intake log, where every callback is synced before its 202; one per instance, locked; empty runs from memory only, and a crash then loses the callbacks not yet written",
		field: func(c *Config) any { return &c.WALDir }},
	{flag: "wal-max-bytes", env: "WAL_MAX_BYTES", def: wal.DefaultMaxBytes, unit: "bytes",
		usage: "size cap of the intake log: beyond it callbacks get 503 with Retry-After",
		field: func(c *Config) any { return &c.WALMaxBytes }},
	{flag: "wal-linger", env: "WAL_LINGER", def: wal.DefaultLinger, unit: "duration", zeroOK: true,
		usage: "under concurrent load, how long a group commit waits for more callbacks before its sync: fewer syncs for that much more latency; 0 syncs at once (a disk whose fdatasync is cheap)",
		field: func(c *Config) any { return &c.WALLinger }},
	{flag: "workers", env: "WORKERS", def: ingest.DefaultWorkers, unit: "lookups",
		usage: "lookup workers: the most upstream requests in flight, ceiling of the adaptive limit",
		field: func(c *Config) any { return &c.Workers }},
	{flag: "min-lookups", env: "MIN_LOOKUPS", def: ingest.DefaultMinLookups, unit: "lookups",
		usage: "floor of the adaptive limit on upstream requests in flight, and where it starts (at most -workers)",
		field: func(c *Config) any { return &c.MinLookups }},
	{flag: "queue-size", env: "QUEUE_SIZE", def: ingest.DefaultQueueSize, unit: "callbacks",
		usage: "callbacks buffered between handler and dispatcher before answering 503",
		field: func(c *Config) any { return &c.QueueSize }},
	{flag: "max-pending", env: "MAX_PENDING", def: ingest.DefaultMaxWaiting, unit: "IDs",
		usage: "distinct IDs waiting for a lookup before answering 503",
		field: func(c *Config) any { return &c.MaxPending }},
	{flag: "fetch-timeout", env: "FETCH_TIMEOUT", def: 6 * time.Second, unit: "duration",
		usage: "timeout of one upstream request (above the 4.3 s worst case)",
		field: func(c *Config) any { return &c.FetchTimeout }},
	{flag: "batch-size", env: "BATCH_SIZE", def: ingest.DefaultBatchSize, unit: "rows",
		usage: "rows per upsert statement",
		field: func(c *Config) any { return &c.BatchSize }},
	{flag: "flush-interval", env: "FLUSH_INTERVAL", def: ingest.DefaultFlushInterval, unit: "duration",
		usage: "longest a looked-up object waits for its batch",
		field: func(c *Config) any { return &c.FlushInterval }},
	{flag: "db-timeout", env: "DB_TIMEOUT", def: ingest.DefaultDBTimeout, unit: "duration",
		usage: "timeout of one database statement",
		field: func(c *Config) any { return &c.DBTimeout }},
	{flag: "db-max-conns", env: "DB_MAX_CONNS", def: 4, unit: "connections",
		usage: "database pool size (only the writer and the sweeper use it)",
		field: func(c *Config) any { return &c.DBMaxConns }},
	{flag: "sweep-interval", env: "SWEEP_INTERVAL", def: expiry.DefaultInterval, unit: "duration",
		usage: "how often stale objects are deleted",
		field: func(c *Config) any { return &c.SweepInterval }},
	{flag: "sweep-batch", env: "SWEEP_BATCH", def: expiry.DefaultBatch, unit: "rows",
		usage: "rows per delete statement",
		field: func(c *Config) any { return &c.SweepBatch }},
	{flag: "shutdown-delay", env: "SHUTDOWN_DELAY", def: 5 * time.Second, unit: "duration", zeroOK: true,
		usage: "on SIGTERM, how long /readyz answers 503 while callbacks are still taken, before the listener closes: at least what the load balancer takes to stop sending (HAProxy: check interval × fall count, 1 s with deploy/haproxy; Kubernetes: endpoint propagation, 5-10 s), plus a margin; 0 for none",
		field: func(c *Config) any { return &c.ShutdownDelay }},
	{flag: "drain-timeout", env: "DRAIN_TIMEOUT", def: 30 * time.Second, unit: "duration",
		usage: "how long shutdown may spend finishing queued work",
		field: func(c *Config) any { return &c.DrainTimeout }},
	{flag: "idle-timeout", env: "IDLE_TIMEOUT", def: 120 * time.Second, unit: "duration",
		usage: "how long an idle keep-alive connection stays open (keep it far above the senders' 5 s)",
		field: func(c *Config) any { return &c.IdleTimeout }},
	{flag: "stats-interval", env: "STATS_INTERVAL", def: ingest.DefaultStatsInterval, unit: "duration",
		usage: "how often the pipeline stats and intake log stats lines are logged, when anything happened",
		field: func(c *Config) any { return &c.StatsInterval }},
	{flag: "log-level", env: "LOG_LEVEL", def: slog.LevelInfo, unit: "level",
		usage: "log level: debug, info, warn or error",
		field: func(c *Config) any { return &c.LogLevel }},
	{flag: "version", def: false, unit: "", command: true,
		usage: "print the module version and VCS revision, and exit",
		field: func(c *Config) any { return &c.Version }},
	{flag: "healthcheck", def: "", unit: "URL", command: true,
		usage: "GET the URL and exit 0 if it answers 200 within 2 s, 1 otherwise, without serving: the container's probe, on an image with no shell or curl",
		field: func(c *Config) any { return &c.Healthcheck }},
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
	for _, s := range settings {
		v := value{p: s.field(&c), secret: s.secret}
		if err := v.Set(fmt.Sprint(s.def)); err != nil {
			panic(fmt.Sprintf("config: default of -%s: %v", s.flag, err)) // a bug in the table
		}
		// The environment replaces the default, so -h shows the value that
		// would be used.
		if e := getenv(s.env); s.env != "" && e != "" {
			if err := v.Set(e); err != nil {
				errs = append(errs, fmt.Errorf("env %s: %w", s.env, err))
			}
		}
		fs.Var(v, s.flag, s.usage)
	}
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return Config{}, err // already printed by fs, with the usage
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	for _, s := range settings {
		if err := s.validate(&c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// usage prints the flags in the table's order, each with its unit, its
// environment variable and the value it has before the command line (its
// default, or the value of its environment variable).
func usage(fs *flag.FlagSet) {
	w := tabwriter.NewWriter(fs.Output(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "Usage: callback [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag can also be set by its environment variable; a flag beats the")
	fmt.Fprintln(w, "environment, which beats .env, which beats the default.")
	fmt.Fprintln(w)
	for _, s := range settings {
		if s.command {
			fmt.Fprintf(w, "  -%s %s\t%s\n", s.flag, s.unit, s.usage)
			continue
		}
		fmt.Fprintf(w, "  -%s %s\t%s (env %s) (default %s)\n", s.flag, s.unit, s.usage, s.env, orNone(fs.Lookup(s.flag).Value.String()))
	}
	_ = w.Flush() // nowhere to report a failed write of the usage
}

// validate applies the checks of the setting's type, then its own.
func (s setting) validate(c *Config) error {
	switch p := s.field(c).(type) {
	case *int:
		if *p <= 0 {
			return fmt.Errorf("%s: %d must be positive", s.flag, *p)
		}
	case *time.Duration:
		if *p < 0 || (*p == 0 && !s.zeroOK) {
			return fmt.Errorf("%s: %v must be positive", s.flag, *p)
		}
	}
	if s.check != nil {
		return s.check(c)
	}
	return nil
}

// LogValue logs every setting under its flag's name (with _ for -), secrets
// masked.
func (c Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(settings))
	for _, s := range settings {
		if s.command {
			continue
		}
		v := value{p: s.field(&c), secret: s.secret}
		attrs = append(attrs, slog.String(strings.ReplaceAll(s.flag, "-", "_"), v.String()))
	}
	return slog.GroupValue(attrs...)
}

// MarkdownTable is the flag table of docs/operating.md, made from the settings.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| flag | env | default | unit | meaning |\n|---|---|---|---|---|\n")
	for _, s := range settings {
		var c Config
		v := value{p: s.field(&c)}
		_ = v.Set(fmt.Sprint(s.def)) // checked by Load
		def, env := "none", "none"
		if v.String() != "" && !s.command {
			def = "`" + v.String() + "`"
		}
		if s.env != "" {
			env = "`" + s.env + "`"
		}
		fmt.Fprintf(&b, "| `-%s` | %s | %s | %s | %s |\n", s.flag, env, def, s.unit, s.usage)
	}
	return b.String()
}

// orNone shows an empty default as "none".
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// value is a flag.Value over one Config field.
type value struct {
	p      any  // *string, *int, *time.Duration, *slog.Level or *bool
	secret bool // String masks a password
}

func (v value) String() string {
	switch p := v.p.(type) {
	case nil: // the flag package probes a zero Value
		return ""
	case *string:
		if v.secret && *p != "" {
			return maskPassword(*p)
		}
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *time.Duration:
		return p.String()
	case *slog.Level:
		return strings.ToLower(p.String())
	case *bool:
		return strconv.FormatBool(*p)
	}
	panic(fmt.Sprintf("config: no value for %T", v.p))
}

func (v value) Set(s string) error {
	switch p := v.p.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	case *slog.Level:
		if err := p.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("log level %q: want debug, info, warn or error", s)
		}
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		*p = b
	default:
		panic(fmt.Sprintf("config: no value for %T", v.p))
	}
	return nil
}

// IsBoolFlag lets a bool be given as -version, with no value.
func (v value) IsBoolFlag() bool { _, ok := v.p.(*bool); return ok }

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
