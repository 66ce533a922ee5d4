// Package pgtest gives each test a fresh, empty database on a real PostgreSQL server.
//
// The server is the one named by TEST_DATABASE_URL when that is set. Otherwise the package
// starts a throwaway cluster from the installed server binaries the first time a test asks for
// a database, and Main stops it once the tests are done; each test binary gets its own cluster
// on its own port. Only when no PostgreSQL can be found at all are tests skipped, and under
// CI=true they fail instead, so a misconfigured CI machine cannot pass by skipping.
//
// The package creates and drops databases and nothing else: it applies no schema, runs no
// migrations, and never shares a database between two tests. Import it only from _test.go
// files.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// envDatabaseURL names the variable that points the tests at an existing server. Its value is
// an admin URL (postgres://user@host:port/postgres); the user must be allowed to create and
// drop databases.
const envDatabaseURL = "TEST_DATABASE_URL"

// adminTimeout bounds one CREATE or DROP DATABASE round trip, connect included.
const adminTimeout = 30 * time.Second

// shared is the throwaway cluster of this test binary. It is the package's one piece of mutable
// package-level state, on purpose: initdb and startup take seconds, so every test in the binary
// shares one cluster, and Main must find that cluster after m.Run to stop it.
var shared struct {
	once sync.Once
	srv  *Server // written inside once.Do and read only after it returns
	err  error   // likewise
}

// errNoPostgres means neither TEST_DATABASE_URL nor server binaries are available. It is the
// one startup failure that skips tests instead of failing them.
var errNoPostgres = errors.New("pgtest: no PostgreSQL server binaries found")

// Main runs the tests and then stops the throwaway cluster, if one was started, and removes its
// files. It ends the process with os.Exit, so it belongs at the end of TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// A test binary that dies without reaching the end of Main (Ctrl-C, a test timeout) still
// takes the server down with it, but leaves its temporary directory behind.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with its own clean-up: it runs the tests,
// stops the cluster and returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	// Mark the cluster as started if no test did, so nothing can start one after this point,
	// and so reading shared.srv below is ordered after any start that did happen.
	shared.once.Do(func() { shared.err = errors.New("pgtest: NewDB called after Main finished") })
	if shared.srv != nil {
		if err := shared.srv.shutdown(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// NewDB creates a new, empty database and returns its connection URL. The database is dropped
// in t.Cleanup, after terminating any connections the test left open.
//
// It skips the test when no PostgreSQL can be found, with a message that says how to get one,
// but fails it under CI=true. Any other problem (a cluster that will not start, a server that
// refuses CREATE DATABASE) fails the test.
func NewDB(t testing.TB) string {
	t.Helper()
	admin := adminURL(t)
	name, err := newDBName()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), adminTimeout)
	defer cancel()
	if err := createDB(ctx, admin, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		// t.Context() is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		if err := dropDB(ctx, admin, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dbURL
}

// Cluster returns the throwaway server so that a test can stop and restart it to simulate a
// database outage. It starts the server if no test has yet.
//
// The server is shared by every test in the binary, so a test that stops it must not run in
// parallel with other tests that use NewDB. Cluster skips the test, even under CI=true, when
// TEST_DATABASE_URL is set, because an external server is not ours to restart.
func Cluster(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(envDatabaseURL) != "" {
		t.Skipf("pgtest: %s is set, and an external server cannot be stopped and restarted by tests", envDatabaseURL)
	}
	return sharedServer(t)
}

// adminURL returns the URL of the maintenance database on the server the tests use.
func adminURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(envDatabaseURL); u != "" {
		return u
	}
	return sharedServer(t).AdminURL()
}

// sharedServer starts the throwaway cluster on first use and returns it. It skips or fails t
// when that is impossible.
func sharedServer(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = startCluster() })
	switch {
	case errors.Is(shared.err, errNoPostgres) && inCI():
		t.Fatalf("%v, and CI=true forbids skipping: install the postgresql package or set %s", shared.err, envDatabaseURL)
	case errors.Is(shared.err, errNoPostgres):
		t.Skipf("%v: install PostgreSQL (e.g. apt-get install postgresql, so that initdb is on PATH or in /usr/lib/postgresql/*/bin) "+
			"or set %s=postgres://user@host:5432/postgres?sslmode=disable", shared.err, envDatabaseURL)
	case shared.err != nil:
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.srv
}

// inCI reports whether CI=true (or 1), where a missing server must fail tests, not skip them.
func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// newDBName returns a name that is unique across test binaries running at the same time and
// needs no quoting: lowercase letters, digits and underscores, well under 63 bytes.
func newDBName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate database name: %w", err)
	}
	return fmt.Sprintf("test_%d_%s", os.Getpid(), hex.EncodeToString(b[:])), nil
}

// withDatabase returns admin with its database replaced by name, keeping user, host and
// parameters such as sslmode.
func withDatabase(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("parse admin URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("admin URL %q: want a postgres:// URL (%s takes no keyword/value DSN)", u.Redacted(), envDatabaseURL)
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), nil
}

func createDB(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("create database %s: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropDB drops the database, first terminating the connections a test left open (pools that
// were never closed, or clients still retrying), which would otherwise make DROP fail.
func dropDB(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("drop database %s: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("drop database %s: server version: %w", name, err)
	}
	if _, err := conn.Exec(ctx,
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
		name); err != nil {
		return fmt.Errorf("drop database %s: terminate connections: %w", name, err)
	}
	drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize()
	if version >= 130000 {
		// FORCE also terminates clients that reconnected after the statement above.
		drop += " WITH (FORCE)"
	}
	if _, err := conn.Exec(ctx, drop); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
