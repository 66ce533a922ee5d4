package pgtest_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"callback/pkg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// connect opens a connection that is closed when t ends.
func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect %s: %v", dbURL, err)
	}
	t.Cleanup(func() {
		if err := conn.Close(context.Background()); err != nil {
			t.Errorf("close connection: %v", err)
		}
	})
	return conn
}

func dbName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestNewDB(t *testing.T) {
	url1, url2 := pgtest.NewDB(t), pgtest.NewDB(t)
	if url1 == url2 {
		t.Fatalf("two NewDB calls returned the same URL %s", url1)
	}
	if !strings.HasPrefix(url1, "postgres://") {
		t.Errorf("NewDB = %s, want a postgres:// URL", url1)
	}

	conn1, conn2 := connect(t, url1), connect(t, url2)
	for _, c := range []struct {
		conn *pgx.Conn
		url  string
	}{{conn1, url1}, {conn2, url2}} {
		var got string
		if err := c.conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&got); err != nil {
			t.Fatalf("current_database: %v", err)
		}
		if want := dbName(t, c.url); got != want {
			t.Errorf("current_database() = %q, want %q", got, want)
		}
		var tables int
		if err := c.conn.QueryRow(t.Context(),
			"SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
		).Scan(&tables); err != nil {
			t.Fatalf("count tables: %v", err)
		}
		if tables != 0 {
			t.Errorf("new database has %d user tables, want 0", tables)
		}
	}

	// A table in the first database must not show up in the second.
	if _, err := conn1.Exec(t.Context(), "CREATE TABLE t (id int)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var found bool
	if err := conn2.QueryRow(t.Context(), "SELECT to_regclass('public.t') IS NOT NULL").Scan(&found); err != nil {
		t.Fatalf("look up table: %v", err)
	}
	if found {
		t.Error("table created in the first database is visible in the second")
	}
}

// TestNewDBDropped checks that the database is gone after its test ends, even though a
// connection to it is still open then.
func TestNewDBDropped(t *testing.T) {
	var dbURL string
	var leftOpen *pgx.Conn
	if !t.Run("inner", func(t *testing.T) {
		dbURL = pgtest.NewDB(t)
		var err error
		leftOpen, err = pgx.Connect(t.Context(), dbURL)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
	}) {
		t.FailNow()
	}
	if leftOpen == nil {
		t.Skip("the inner test was skipped, so there is no database to check")
	}
	// The drop terminated this connection, so Close may report that; only the drop matters.
	t.Cleanup(func() { _ = leftOpen.Close(context.Background()) })

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("connect after cleanup succeeded, want the database %s dropped", dbName(t, dbURL))
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		t.Errorf("connect after cleanup: %v, want SQLSTATE 3D000 (database does not exist)", err)
	}
}

func TestClusterStopStart(t *testing.T) {
	srv := pgtest.Cluster(t)
	dbURL := pgtest.NewDB(t)
	// Runs before NewDB's cleanup, which needs the server up, even if the test fails midway.
	t.Cleanup(func() {
		if err := srv.Start(); err != nil {
			t.Errorf("restart in cleanup: %v", err)
		}
	})

	admin, err := pgx.Connect(t.Context(), srv.AdminURL())
	if err != nil {
		t.Fatalf("connect to AdminURL: %v", err)
	}
	var got string
	if err := admin.QueryRow(t.Context(), "SELECT current_database()").Scan(&got); err != nil {
		t.Fatalf("query admin database: %v", err)
	}
	if got != "postgres" {
		t.Errorf("AdminURL database = %q, want %q", got, "postgres")
	}
	if err := admin.Close(t.Context()); err != nil {
		t.Errorf("close admin connection: %v", err)
	}

	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (id int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatalf("write before stop: %v", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v, want nil", err)
	}
	if err := conn.Ping(t.Context()); err == nil {
		t.Error("old connection still works after Stop")
	}
	if err := conn.Close(t.Context()); err != nil {
		t.Errorf("close broken connection: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, dbURL); err == nil {
		c.Close(ctx)
		t.Fatal("connect while stopped succeeded")
	}

	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	conn = connect(t, dbURL) // same URL as before the outage
	var id int
	if err := conn.QueryRow(t.Context(), "SELECT id FROM t").Scan(&id); err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if id != 42 {
		t.Errorf("id after restart = %d, want 42", id)
	}
}
