package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callback/pkg/ingest"
)

// batch returns n sightings with IDs from base, all received at at.
func batch(base int64, n int, at time.Time) []ingest.Sighting {
	s := make([]ingest.Sighting, n)
	for i := range s {
		s[i] = ingest.Sighting{ID: base + int64(i), Received: at}
	}
	return s
}

// BenchmarkUpsert is the writer's statement: 1,000-row batches, half of them
// new rows and half updates of existing ones, as a steady load brings, in
// the query exec mode the service uses (exec: unnamed statements, which a
// pooler in transaction mode can carry) and in pgx's default (cached
// prepared statements). BenchmarkCopyFrom loads the same rows with COPY into
// an empty copy of the table (COPY cannot upsert), the fastest way in: the
// writer's reference. Both report rows/s.
func BenchmarkUpsert(b *testing.B) {
	for _, mode := range []string{"exec", "cache_statement"} {
		b.Run(mode, func(b *testing.B) {
			s, _ := newStoreWith(b, "default_query_exec_mode="+mode)
			ctx := context.Background()
			const n = 1000
			at := time.Now()
			var next int64
			for b.Loop() {
				at = at.Add(time.Millisecond)
				// Half the batch refreshes the previous batch's second half.
				if err := s.UpsertObjects(ctx, batch(max(next-n/2, 0), n, at)); err != nil {
					b.Fatal(err)
				}
				next += n / 2
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func BenchmarkCopyFrom(b *testing.B) {
	_, pool := newStore(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE objects_copy (LIKE objects INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	const n = 1000
	at := time.Now()
	var next int64
	for b.Loop() {
		rows := make([][]any, n)
		for i := range rows {
			rows[i] = []any{next + int64(i), at}
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"objects_copy"}, []string{"id", "last_seen"}, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		next += n
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkSweep deletes 1,000,000 stale rows the way the sweeper does:
// 5,000-row statements until one comes back short.
func BenchmarkSweep(b *testing.B) {
	s, pool := newStore(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if _, err := pool.Exec(ctx, `INSERT INTO objects SELECT g, now() - interval '1 hour' FROM generate_series(1, 1000000) g`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var total int64
		for {
			n, err := s.DeleteStale(ctx, time.Now().Add(-30*time.Second), 5000)
			if err != nil {
				b.Fatal(err)
			}
			total += n
			if n < 5000 {
				break
			}
		}
		if total != 1_000_000 {
			b.Fatalf("deleted %d rows, want 1,000,000", total)
		}
	}
	b.ReportMetric(1e6*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
