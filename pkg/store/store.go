// Package store keeps the objects table in PostgreSQL: it applies the schema,
// upserts batches of sightings and deletes stale rows. It is the only package
// besides main that imports pgx; its errors carry the operation but no pgx
// types. It does not retry: callers own their retry policy.
//
// It speaks the ingest pipeline's types (ingest.Sighting), as a store serves
// the business package that declares what it needs, never the reverse.
package store

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"callback/pkg/ingest"
)

// schema is init.sql, the one schema of the service. The file lives here so
// that the package applying it can embed it (go:embed cannot reach up the
// tree); the repository's top-level init.sql, which docker compose mounts,
// is a symbolic link to it.
//
//go:embed init.sql
var schema string

// DB is what Postgres needs of a connection. *pgxpool.Pool, *pgx.Conn and
// pgx.Tx all satisfy it, so a test can hand in a transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Postgres is the objects table. It is safe for concurrent use if db is.
type Postgres struct {
	db DB
}

// resetter is a pool that can close all its connections (*pgxpool.Pool).
type resetter interface{ Reset() }

// readOnly is SQLSTATE 25006, read_only_sql_transaction: the connection is
// on a standby, typically a primary demoted by a switchover while a proxy
// (HAProxy without shutdown-sessions, a VIP, a cloud balancer) kept the
// session. pgx keeps such a connection, as for any statement error, and
// every write on it would fail until its lifetime ends.
const readOnly = "25006"

// undefinedTable is SQLSTATE 42P01: the table is gone (dropped, or the
// database restored from a backup older than the schema).
const undefinedTable = "42P01"

// recreateIfGone applies the schema again after an answer that the table
// does not exist, so that the caller's next try, within a second, finds it
// instead of failing until the service restarts. Its own failure is left
// for that next try to meet.
func (p *Postgres) recreateIfGone(ctx context.Context, err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedTable {
		_ = p.EnsureSchema(ctx)
	}
}

// dropIfReadOnly closes every pooled connection after a read-only answer,
// so the next statement connects again and reaches the primary wherever it
// is now. Connections in use close when they are released.
func (p *Postgres) dropIfReadOnly(err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == readOnly {
		if r, ok := p.db.(resetter); ok {
			r.Reset()
		}
	}
}

// New returns a store over db.
func New(db DB) *Postgres {
	if db == nil {
		panic("store: nil DB")
	}
	return &Postgres{db: db}
}

// schemaLock is an arbitrary advisory-lock key that serialises schema setup,
// because two instances running CREATE TABLE IF NOT EXISTS at the same moment
// can still collide on the catalog's unique indexes.
const schemaLock = 0x63616c6c // "call"

// EnsureSchema runs the idempotent schema script (init.sql).
func (p *Postgres) EnsureSchema(ctx context.Context) error {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("ensure schema: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
		return fmt.Errorf("ensure schema: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, schema); err != nil {
		p.dropIfReadOnly(err)
		return fmt.Errorf("ensure schema: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("ensure schema: commit: %w", err)
	}
	return nil
}

// upsertSQL writes a whole batch in one statement. The WHERE on the update
// makes last_seen monotonic: a lookup that finishes late with an older receipt
// time cannot move a row backwards, and replaying a batch changes nothing.
const upsertSQL = `
INSERT INTO objects (id, last_seen)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[])
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen
WHERE objects.last_seen < excluded.last_seen`

// UpsertObjects stores the sightings in one statement, each receipt time as
// its row's last_seen. It deduplicates them by ID, keeping the newest time,
// because one INSERT ... ON CONFLICT may not touch a row twice; and it sorts
// them by ID so that concurrent writers (other instances) lock rows in the
// same order and cannot deadlock. It sorts a copy: s is left as it was.
func (p *Postgres) UpsertObjects(ctx context.Context, s []ingest.Sighting) error {
	if len(s) == 0 {
		return nil
	}
	sorted := slices.SortedFunc(slices.Values(s), func(a, b ingest.Sighting) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), b.Received.Compare(a.Received)) // newest first per ID
	})
	sorted = slices.CompactFunc(sorted, func(a, b ingest.Sighting) bool { return a.ID == b.ID })
	ids := make([]int64, len(sorted))
	received := make([]time.Time, len(sorted))
	for i, x := range sorted {
		ids[i], received[i] = x.ID, x.Received
	}
	if _, err := p.db.Exec(ctx, upsertSQL, ids, received); err != nil {
		p.dropIfReadOnly(err)
		p.recreateIfGone(ctx, err)
		return fmt.Errorf("upsert %d objects: %w", len(sorted), err)
	}
	return nil
}

// deleteSQL removes at most $2 rows older than $1. SKIP LOCKED lets several
// instances sweep at once without waiting on each other or on a writer that
// is refreshing a row; the outer condition is checked again on the row
// version that is finally deleted.
const deleteSQL = `
DELETE FROM objects
WHERE id IN (
	SELECT id FROM objects WHERE last_seen < $1
	LIMIT $2 FOR UPDATE SKIP LOCKED
) AND last_seen < $1`

// DeleteStale deletes up to limit rows whose last_seen is before the given
// time and returns how many it deleted. The cutoff comes from the caller's
// clock, not the database's, so expiry follows the same clock as receipt times.
func (p *Postgres) DeleteStale(ctx context.Context, before time.Time, limit int) (int64, error) {
	tag, err := p.db.Exec(ctx, deleteSQL, before, limit)
	if err != nil {
		p.dropIfReadOnly(err)
		p.recreateIfGone(ctx, err)
		return 0, fmt.Errorf("delete stale objects: %w", err)
	}
	return tag.RowsAffected(), nil
}
