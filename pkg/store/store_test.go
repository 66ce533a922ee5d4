package store_test

import (
	"context"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"callback/pkg/ingest"
	"callback/pkg/pgtest"
	"callback/pkg/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newStore returns a store on a fresh database with the real schema applied.
func newStore(t testing.TB) (*store.Postgres, *pgxpool.Pool) {
	t.Helper()
	return newStoreWith(t, "")
}

// newStoreWith is newStore with extra URL parameters, such as
// "default_query_exec_mode=exec".
func newStoreWith(t testing.TB, params string) (*store.Postgres, *pgxpool.Pool) {
	t.Helper()
	dbURL := pgtest.NewDB(t)
	if params != "" {
		dbURL += "&" + params // pgtest's URLs carry a query already
	}
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := store.New(pool)
	if err := s.EnsureSchema(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureSchema(t.Context()); err != nil {
		t.Fatalf("second EnsureSchema = %v, want nil (idempotent)", err)
	}
	return s, pool
}

func rows(t *testing.T, pool *pgxpool.Pool) map[int64]time.Time {
	t.Helper()
	r, err := pool.Query(t.Context(), "SELECT id, last_seen FROM objects")
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(r, pgx.RowToStructByPos[ingest.Sighting])
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]time.Time{}
	for _, x := range all {
		got[x.ID] = x.Received
	}
	return got
}

func TestUpsertObjects(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	// Microseconds: PostgreSQL's precision, so round trips compare equal.
	t0 := time.Now().Truncate(time.Microsecond)
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)

	// Duplicates inside one batch: the newest time wins, and PostgreSQL does
	// not reject the statement for touching a row twice.
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: 3, Received: t0}, {ID: 1, Received: t1}, {ID: 3, Received: t2}, {ID: 0, Received: t0}, {ID: 3, Received: t1}}))
	want := map[int64]time.Time{0: t0, 1: t1, 3: t2}
	if got := rows(t, pool); !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Fatalf("rows = %v, want %v", got, want)
	}

	// An older sighting (a slow lookup finishing late) never moves last_seen back.
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: 3, Received: t0}, {ID: 1, Received: t2}}))
	want = map[int64]time.Time{0: t0, 1: t2, 3: t2}
	if got := rows(t, pool); !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Fatalf("rows = %v, want %v", got, want)
	}

	// Replaying a batch is a no-op, and an empty batch does nothing.
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: 3, Received: t0}, {ID: 1, Received: t2}}))
	must(t, s.UpsertObjects(ctx, nil))
	if got := rows(t, pool); !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Fatalf("rows after replay = %v, want %v", got, want)
	}

	// The int64 extremes are real objects.
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: -1 << 63, Received: t0}, {ID: 1<<63 - 1, Received: t0}}))
	if got := len(rows(t, pool)); got != 5 {
		t.Fatalf("rows = %d, want 5", got)
	}
}

func TestUpsertObjectsConcurrentWritersDoNotDeadlock(t *testing.T) {
	s, pool := newStore(t)
	// Overlapping batches in opposite orders from several goroutines: sorted
	// statements lock rows in one order, so none of them may fail.
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for w := range 8 {
		wg.Go(func() {
			for i := range 20 {
				batch := make([]ingest.Sighting, n)
				now := time.Now()
				for k := range n {
					id := int64(k)
					if (w+i)%2 == 1 {
						id = int64(n - 1 - k)
					}
					batch[k] = ingest.Sighting{ID: id, Received: now}
				}
				errs <- s.UpsertObjects(t.Context(), batch)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent upsert: %v", err)
		}
	}
	if got := len(rows(t, pool)); got != n {
		t.Fatalf("rows = %d, want %d", got, n)
	}
}

func TestDeleteStale(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now().Truncate(time.Microsecond)
	var batch []ingest.Sighting
	for id := range int64(25) {
		batch = append(batch, ingest.Sighting{ID: id, Received: now.Add(-time.Minute)}) // stale
	}
	batch = append(batch, ingest.Sighting{ID: 100, Received: now}) // fresh
	must(t, s.UpsertObjects(ctx, batch))

	cutoff := now.Add(-30 * time.Second)
	var total int64
	for _, want := range []int64{10, 10, 5, 0} { // bounded batches until a short one
		n, err := s.DeleteStale(ctx, cutoff, 10)
		must(t, err)
		if n != want {
			t.Fatalf("DeleteStale = %d, want %d", n, want)
		}
		total += n
	}
	if got := rows(t, pool); len(got) != 1 || !got[100].Equal(now) {
		t.Fatalf("rows = %v, want only id 100", got)
	}

	// A row exactly at the cutoff is not older than it: kept.
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: 200, Received: cutoff}}))
	n, err := s.DeleteStale(ctx, cutoff, 10)
	must(t, err)
	if n != 0 {
		t.Fatalf("deleted %d rows at the cutoff, want 0", n)
	}
}

func TestDeleteStaleSkipsLockedRows(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	old := time.Now().Add(-time.Hour)
	must(t, s.UpsertObjects(ctx, []ingest.Sighting{{ID: 1, Received: old}, {ID: 2, Received: old}}))

	// Another instance's sweep (or a writer) holds row 1: this sweep must not
	// wait for it, and deletes what it can.
	tx, err := pool.Begin(ctx)
	must(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // cleanup
	_, err = tx.Exec(ctx, "SELECT 1 FROM objects WHERE id = 1 FOR UPDATE")
	must(t, err)

	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n, err := s.DeleteStale(sctx, time.Now(), 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("deleted %d, want 1 (row 2; row 1 is locked)", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The schema docker compose mounts (the top-level init.sql) is the one the
// service embeds and applies.
func TestComposeSchemaIsEmbeddedSchema(t *testing.T) {
	top, err := os.ReadFile("../../init.sql")
	if err != nil {
		t.Fatal(err)
	}
	here, err := os.ReadFile("init.sql")
	if err != nil {
		t.Fatal(err)
	}
	if string(top) != string(here) {
		t.Error("init.sql differs from pkg/store/init.sql, want the top-level file to be a link to it")
	}
}

// UpsertObjects sorts and deduplicates a copy: the caller's slice is left as it was.
func TestUpsertObjectsKeepsInput(t *testing.T) {
	s, _ := newStore(t)
	t0 := time.Now().Truncate(time.Microsecond)
	in := []ingest.Sighting{{ID: 9, Received: t0}, {ID: 1, Received: t0}, {ID: 9, Received: t0.Add(time.Second)}}
	want := slices.Clone(in)
	must(t, s.UpsertObjects(t.Context(), in))
	if !slices.Equal(in, want) {
		t.Errorf("input after UpsertObjects = %v, want it unchanged %v", in, want)
	}
}

// A connection left on a node that turned read-only (a demoted primary
// behind a proxy that kept the session) answers every write with SQLSTATE
// 25006. The store drops the pool's connections then, so the next write
// connects again. Here the one pooled connection is made read-only for its
// session only, as a demotion leaves it while new connections reach a
// writable primary. (Before, the second write failed on the same
// connection, and so would every one until the connection's lifetime ended.)
func TestReadOnlyConnectionIsDropped(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := store.New(pool)
	if err := s.EnsureSchema(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), "SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Microsecond)
	batch := []ingest.Sighting{{ID: 1, Received: now}}
	if err := s.UpsertObjects(t.Context(), batch); err == nil {
		t.Fatal("upsert on a read-only connection = nil, want 25006")
	}
	if err := s.UpsertObjects(t.Context(), batch); err != nil {
		t.Fatalf("upsert after a read-only answer = %v, want it on a new connection", err)
	}
	if got := rows(t, pool); !got[1].Equal(now) {
		t.Errorf("rows = %v, want 1 at %v", got, now)
	}
}

// A table that vanished (dropped, or a restore from a backup older than the
// schema) is created again by the write that finds it missing, so the
// writer's next try, within a second, succeeds. (Before, every write failed
// until the service restarted and applied the schema.)
func TestVanishedTableIsRecreated(t *testing.T) {
	s, pool := newStore(t)
	if _, err := pool.Exec(t.Context(), "DROP TABLE objects"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Microsecond)
	batch := []ingest.Sighting{{ID: 7, Received: now}}
	if err := s.UpsertObjects(t.Context(), batch); err == nil {
		t.Fatal("upsert without the table = nil, want an error")
	}
	if err := s.UpsertObjects(t.Context(), batch); err != nil {
		t.Fatalf("second upsert = %v, want the table created again", err)
	}
	if _, err := pool.Exec(t.Context(), "DROP TABLE objects"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteStale(t.Context(), now, 10); err == nil {
		t.Fatal("sweep without the table = nil, want an error")
	}
	if _, err := s.DeleteStale(t.Context(), now, 10); err != nil {
		t.Fatalf("second sweep = %v, want the table created again", err)
	}
}
