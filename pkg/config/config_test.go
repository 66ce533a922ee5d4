package config_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"callback/pkg/config"
)

// getenv returns a lookup over env, like os.Getenv over a fixed environment.
func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// defaults is what the field comments on Config promise.
func defaults() config.Config {
	return config.Config{
		Addr:          "localhost:9090",
		SourceURL:     "http://localhost:9010",
		DatabaseURL:   config.DefaultDatabaseURL,
		TTL:           30 * time.Second,
		WALDir:        "wal",
		WALMaxBytes:   4 << 30,
		WALLinger:     500 * time.Microsecond,
		Workers:       12_000,
		MinLookups:    64,
		QueueSize:     1024,
		MaxPending:    1_000_000,
		FetchTimeout:  6 * time.Second,
		BatchSize:     1000,
		FlushInterval: 100 * time.Millisecond,
		DBTimeout:     5 * time.Second,
		DBMaxConns:    4,
		SweepInterval: time.Second,
		SweepBatch:    5000,
		DrainTimeout:  30 * time.Second,
		ShutdownDelay: 5 * time.Second,
		IdleTimeout:   120 * time.Second,
		StatsInterval: 10 * time.Second,
		LogLevel:      slog.LevelInfo,
	}
}

// fullEnv sets every variable Load reads, each to a non-default value.
var fullEnv = map[string]string{
	"ADDR":              ":8080",
	"OBJECT_SOURCE_URL": "https://objects.example:9443",
	"DATABASE_URL":      "postgres://env@db/env",
	"OBJECT_TTL":        "45s",
	"WAL_DIR":           "/var/lib/callback/wal",
	"WAL_MAX_BYTES":     "1000000",
	"WAL_LINGER":        "1ms",
	"WORKERS":           "64",
	"MIN_LOOKUPS":       "16",
	"QUEUE_SIZE":        "10",
	"MAX_PENDING":       "2000",
	"FETCH_TIMEOUT":     "2s",
	"BATCH_SIZE":        "50",
	"FLUSH_INTERVAL":    "250ms",
	"DB_TIMEOUT":        "3s",
	"DB_MAX_CONNS":      "8",
	"SWEEP_INTERVAL":    "2s",
	"SWEEP_BATCH":       "100",
	"DRAIN_TIMEOUT":     "1m",
	"SHUTDOWN_DELAY":    "3s",
	"IDLE_TIMEOUT":      "90s",
	"STATS_INTERVAL":    "5s",
	"LOG_LEVEL":         "debug",
}

func fromEnv() config.Config {
	return config.Config{
		Addr:          ":8080",
		SourceURL:     "https://objects.example:9443",
		DatabaseURL:   "postgres://env@db/env",
		TTL:           45 * time.Second,
		WALDir:        "/var/lib/callback/wal",
		WALMaxBytes:   1_000_000,
		WALLinger:     time.Millisecond,
		Workers:       64,
		MinLookups:    16,
		QueueSize:     10,
		MaxPending:    2000,
		FetchTimeout:  2 * time.Second,
		BatchSize:     50,
		FlushInterval: 250 * time.Millisecond,
		DBTimeout:     3 * time.Second,
		DBMaxConns:    8,
		SweepInterval: 2 * time.Second,
		SweepBatch:    100,
		DrainTimeout:  time.Minute,
		ShutdownDelay: 3 * time.Second,
		IdleTimeout:   90 * time.Second,
		StatsInterval: 5 * time.Second,
		LogLevel:      slog.LevelDebug,
	}
}

// allFlags sets every flag, each to a value different from fullEnv's.
var allFlags = []string{
	"-addr", "127.0.0.1:7000",
	"-src", "http://flag:1",
	"-db", "postgres://flag@db/flag",
	"-ttl", "1m",
	"-wal-dir", "",
	"-wal-max-bytes", "2000",
	"-wal-linger", "0s",
	"-workers", "3",
	"-min-lookups", "2",
	"-queue-size", "4",
	"-max-pending", "5",
	"-fetch-timeout", "7s",
	"-batch-size", "6",
	"-flush-interval", "10ms",
	"-db-timeout", "9s",
	"-db-max-conns", "2",
	"-sweep-interval", "500ms",
	"-sweep-batch", "11",
	"-drain-timeout", "12s",
	"-shutdown-delay", "15s",
	"-idle-timeout", "13s",
	"-stats-interval", "14s",
	"-log-level", "error",
}

func fromFlags() config.Config {
	return config.Config{
		Addr:          "127.0.0.1:7000",
		SourceURL:     "http://flag:1",
		DatabaseURL:   "postgres://flag@db/flag",
		TTL:           time.Minute,
		WALDir:        "",
		WALMaxBytes:   2000,
		WALLinger:     0,
		Workers:       3,
		MinLookups:    2,
		QueueSize:     4,
		MaxPending:    5,
		FetchTimeout:  7 * time.Second,
		BatchSize:     6,
		FlushInterval: 10 * time.Millisecond,
		DBTimeout:     9 * time.Second,
		DBMaxConns:    2,
		SweepInterval: 500 * time.Millisecond,
		SweepBatch:    11,
		DrainTimeout:  12 * time.Second,
		ShutdownDelay: 15 * time.Second,
		IdleTimeout:   13 * time.Second,
		StatsInterval: 14 * time.Second,
		LogLevel:      slog.LevelError,
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want config.Config
	}{
		{name: "defaults", want: defaults()},
		{name: "env-overrides-defaults", env: fullEnv, want: fromEnv()},
		{name: "flags-override-defaults", args: allFlags, want: fromFlags()},
		{name: "flags-beat-env", args: allFlags, env: fullEnv, want: fromFlags()},
		{
			name: "mixed",
			args: []string{"-workers=7", "--ttl", "5s"},
			env:  map[string]string{"WORKERS": "100", "BATCH_SIZE": "20"},
			want: func() config.Config {
				c := defaults()
				c.Workers, c.TTL, c.BatchSize = 7, 5*time.Second, 20
				return c
			}(),
		},
		{
			name: "empty-env-means-unset",
			env:  map[string]string{"WORKERS": "", "OBJECT_TTL": "", "DATABASE_URL": ""},
			want: defaults(),
		},
		{
			name: "log-level-case-and-offset",
			env:  map[string]string{"LOG_LEVEL": "WARN"},
			want: func() config.Config { c := defaults(); c.LogLevel = slog.LevelWarn; return c }(),
		},
		{
			name: "log-level-offset",
			args: []string{"-log-level", "info+2"},
			want: func() config.Config { c := defaults(); c.LogLevel = slog.LevelInfo + 2; return c }(),
		},
		{
			name: "src-with-path-and-trailing-slash",
			args: []string{"-src", "http://h:1/api/"},
			want: func() config.Config { c := defaults(); c.SourceURL = "http://h:1/api/"; return c }(),
		},
		{
			name: "key-value-dsn",
			args: []string{"-db", "host=h user=u"},
			want: func() config.Config { c := defaults(); c.DatabaseURL = "host=h user=u"; return c }(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			got, err := config.Load(tt.args, getenv(tt.env), &out)
			if err != nil {
				t.Fatalf("Load: %v, want no error", err)
			}
			if got != tt.want {
				t.Errorf("Load =\n%+v\nwant\n%+v", got, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("output = %q, want nothing printed", out.String())
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantInErr []string
	}{
		{
			name: "bad-env-all-reported",
			env: map[string]string{
				"OBJECT_TTL": "soon", "FETCH_TIMEOUT": "5", "FLUSH_INTERVAL": "1 s",
				"WORKERS": "many", "QUEUE_SIZE": "1.5", "SWEEP_BATCH": "1e3",
			},
			wantInErr: []string{"OBJECT_TTL", "FETCH_TIMEOUT", "FLUSH_INTERVAL", "WORKERS", "QUEUE_SIZE", "SWEEP_BATCH"},
		},
		{
			// A bad variable is reported even when a flag would have replaced it.
			name:      "bad-env-under-flag",
			args:      []string{"-workers", "8"},
			env:       map[string]string{"WORKERS": "x"},
			wantInErr: []string{"WORKERS"},
		},
		{
			name: "env-and-check-errors-together",
			env:  map[string]string{"OBJECT_TTL": "x", "WORKERS": "0", "LOG_LEVEL": "loud"},
			wantInErr: []string{
				"OBJECT_TTL", "workers: 0 must be positive", "log level",
			},
		},
		{
			name: "zero-durations",
			args: []string{"-ttl", "0", "-fetch-timeout", "0s", "-flush-interval", "0",
				"-db-timeout", "0", "-sweep-interval", "0", "-drain-timeout", "0"},
			wantInErr: []string{"ttl:", "fetch-timeout:", "flush-interval:", "db-timeout:", "sweep-interval:", "drain-timeout:", "must be positive"},
		},
		{
			name:      "negative-durations",
			env:       map[string]string{"OBJECT_TTL": "-1s", "SWEEP_INTERVAL": "-5ms"},
			wantInErr: []string{"ttl: -1s must be positive", "sweep-interval: -5ms must be positive"},
		},
		{
			name: "zero-ints",
			args: []string{"-workers", "0", "-queue-size", "0", "-max-pending", "0",
				"-batch-size", "0", "-db-max-conns", "0", "-sweep-batch", "0"},
			wantInErr: []string{"workers: 0", "queue-size: 0", "max-pending: 0", "batch-size: 0", "db-max-conns: 0", "sweep-batch: 0"},
		},
		{
			name:      "negative-ints",
			env:       map[string]string{"WORKERS": "-1", "DB_MAX_CONNS": "-4"},
			wantInErr: []string{"workers: -1 must be positive", "db-max-conns: -4 must be positive"},
		},
		{name: "src-scheme", args: []string{"-src", "ftp://h:1"}, wantInErr: []string{`src "ftp://h:1"`}},
		{name: "src-no-scheme", args: []string{"-src", "localhost:9010"}, wantInErr: []string{"src"}},
		{name: "src-no-host", args: []string{"-src", "http://"}, wantInErr: []string{"src"}},
		{name: "src-unparsable", args: []string{"-src", "http://h:port"}, wantInErr: []string{"src"}},
		{name: "src-relative", env: map[string]string{"OBJECT_SOURCE_URL": "/objects"}, wantInErr: []string{"src"}},
		{name: "addr-no-port", args: []string{"-addr", "localhost"}, wantInErr: []string{`addr "localhost"`}},
		{name: "db-empty", args: []string{"-db", ""}, wantInErr: []string{"db: empty"}},
		{name: "log-level", args: []string{"-log-level", "verbose"}, wantInErr: []string{"log level"}},
		{name: "extra-args", args: []string{"-workers", "2", "serve"}, wantInErr: []string{"unexpected arguments", `"serve"`}},
		{name: "unknown-flag", args: []string{"-nope"}, wantInErr: []string{"nope"}},
		{name: "bad-flag-value", args: []string{"-workers", "x"}, wantInErr: []string{"workers"}},
		{name: "bad-flag-duration", args: []string{"-ttl", "1"}, wantInErr: []string{"ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			got, err := config.Load(tt.args, getenv(tt.env), &out)
			if err == nil {
				t.Fatalf("Load = %+v, nil error; want an error", got)
			}
			if got != (config.Config{}) {
				t.Errorf("Load = %+v on error, want the zero Config", got)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Errorf("Load error %v is flag.ErrHelp, want a config error", err)
			}
			for _, want := range tt.wantInErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "h", args: []string{"-h"}},
		{name: "help", args: []string{"--help"}},
		{name: "after-other-flags", args: []string{"-workers", "2", "-h"}},
		{name: "with-bad-env", args: []string{"-h"}, env: map[string]string{"WORKERS": "x"}},
	}
	flags := []string{
		"-addr", "-src", "-db", "-ttl", "-workers", "-queue-size", "-max-pending", "-fetch-timeout",
		"-batch-size", "-flush-interval", "-db-timeout", "-db-max-conns", "-sweep-interval",
		"-sweep-batch", "-drain-timeout", "-log-level",
	}
	envs := []string{
		"ADDR", "OBJECT_SOURCE_URL", "DATABASE_URL", "OBJECT_TTL", "WORKERS", "QUEUE_SIZE", "MAX_PENDING",
		"FETCH_TIMEOUT", "BATCH_SIZE", "FLUSH_INTERVAL", "DB_TIMEOUT", "DB_MAX_CONNS", "SWEEP_INTERVAL",
		"SWEEP_BATCH", "DRAIN_TIMEOUT", "LOG_LEVEL",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			_, err := config.Load(tt.args, getenv(tt.env), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Load error = %v, want flag.ErrHelp", err)
			}
			usage := out.String()
			for _, want := range append(flags, envs...) {
				if !strings.Contains(usage, want) {
					t.Errorf("usage lacks %q:\n%s", want, usage)
				}
			}
		})
	}
}

// TestLoadHelpShowsEnvDefaults checks that -h shows the value that would be
// used, which comes from the environment when a variable is set.
func TestLoadHelpShowsEnvDefaults(t *testing.T) {
	var out bytes.Buffer
	env := map[string]string{"WORKERS": "77", "OBJECT_TTL": "42s"}
	if _, err := config.Load([]string{"-h"}, getenv(env), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"(default 77)", "(default 42s)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if no := "(default 12000)"; strings.Contains(out.String(), no) {
		t.Errorf("usage shows %q although WORKERS=77:\n%s", no, out.String())
	}
}

func TestLogValueMasksPassword(t *testing.T) {
	tests := []struct {
		name     string
		dsn      string
		want     string // substring of the logged db value
		wantNots []string
	}{
		{name: "url-password", dsn: "postgres://u:secret@h/db", want: "postgres://u:xxxxx@h/db", wantNots: []string{"secret"}},
		{name: "url-escaped-password", dsn: "postgres://u:s%40cret@h:5432/db?sslmode=disable", want: "u:xxxxx@h:5432/db?sslmode=disable", wantNots: []string{"s%40cret", "s@cret"}},
		{name: "url-no-password", dsn: "postgres://u@h/db", want: "postgres://u@h/db"},
		{name: "query-password", dsn: "postgres://u@h/db?password=secret&sslmode=disable", want: "password=xxxxx", wantNots: []string{"secret"}},
		{name: "key-value-dsn", dsn: "host=h user=u password=secret", want: "(set)", wantNots: []string{"secret"}},
		{name: "unparsable-url", dsn: "postgres://u:sec ret@h/db", want: "(set)", wantNots: []string{"sec ret"}},
		{name: "default", dsn: config.DefaultDatabaseURL, want: "callback:xxxxx@localhost", wantNots: []string{"callback:callback"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := defaults()
			c.DatabaseURL = tt.dsn
			for _, h := range []struct {
				name string
				new  func(*bytes.Buffer) slog.Handler
			}{
				{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
				{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
			} {
				var buf bytes.Buffer
				slog.New(h.new(&buf)).Info("starting", "config", c)
				got := buf.String()
				if !strings.Contains(got, tt.want) {
					t.Errorf("%s log = %q, want it to contain %q", h.name, got, tt.want)
				}
				for _, no := range tt.wantNots {
					if strings.Contains(got, no) {
						t.Errorf("%s log = %q, want no %q in it", h.name, got, no)
					}
				}
				for _, key := range []string{"addr", "src", "ttl", "workers", "sweep_batch", "log_level"} {
					if !strings.Contains(got, key) {
						t.Errorf("%s log = %q, want key %q", h.name, got, key)
					}
				}
			}
			if c.DatabaseURL != tt.dsn {
				t.Errorf("DatabaseURL = %q after logging, want %q unchanged", c.DatabaseURL, tt.dsn)
			}
		})
	}
}

func TestHelpHidesDatabasePassword(t *testing.T) {
	getenv := func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://u:topsecret@db/x"}[k]
	}
	var out bytes.Buffer
	if _, err := config.Load([]string{"-h"}, getenv, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load -h = %v, want flag.ErrHelp", err)
	}
	if strings.Contains(out.String(), "topsecret") {
		t.Errorf("-h prints the password from DATABASE_URL:\n%s", out.String())
	}
	c, err := config.Load(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.DatabaseURL, "postgres://u:topsecret@db/x"; got != want {
		t.Errorf("DatabaseURL = %q, want %q from the environment", got, want)
	}
}

var update = flag.Bool("update", false, "rewrite the flag table in docs/operating.md from the settings")

// TestFlagTable keeps the flag table of docs/operating.md equal to the one the
// settings make. After changing a setting: go test ./pkg/config -update
func TestFlagTable(t *testing.T) {
	const (
		path  = "../../docs/operating.md"
		begin = "<!-- flags: made by `go test ./pkg/config -update`; do not edit -->\n"
		end   = "<!-- end of flags -->"
	)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	before, rest, ok1 := strings.Cut(readme, begin)
	table, after, ok2 := strings.Cut(rest, end)
	if !ok1 || !ok2 {
		t.Fatalf("docs/operating.md lacks the markers %q and %q around the flag table", begin, end)
	}
	want := config.MarkdownTable()
	if table == want {
		return
	}
	if !*update {
		t.Fatalf("docs/operating.md's flag table is out of date; run: go test ./pkg/config -update\ngot:\n%s\nwant:\n%s", table, want)
	}
	if err := os.WriteFile(path, []byte(before+begin+want+end+after), 0o644); err != nil {
		t.Fatal(err)
	}
}
