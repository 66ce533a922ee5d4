// Package metrics serves the service's state on /metrics in Prometheus's text
// format, with prometheus/client_golang. Counters and gauges are read at
// scrape time from the counters the parts already keep (ingest.Stats,
// wal.Stats, the sweeper's, the database pool's), so the stats log lines and
// the metrics can never disagree; only the histograms are fed as things
// happen, through the parts' Observe…Func hooks. Names follow Prometheus's
// rules (base units, _total for counters, no ID labels); the callback_
// names below are a contract other checks rely on.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"callback/pkg/expiry"
	"callback/pkg/ingest"
	"callback/pkg/wal"
)

// PoolStats is what the database pool reports; main reads it from pgxpool,
// so that this package does not depend on the driver.
type PoolStats struct {
	Acquired, Idle, Total, Max int32
	Acquires                   int64
	AcquireWait                time.Duration
}

// Sources are the parts the metrics read at scrape time. IntakeLog may be nil
// (no intake log).
type Sources struct {
	Pipeline  *ingest.Pipeline
	IntakeLog *wal.Log
	Sweeper   *expiry.Sweeper
	Pool      func() PoolStats
}

// Metrics is the registries and the metrics fed as things happen: reg holds
// the service's own, runtime the Go and process collectors, which read the
// runtime and /proc and which only a scrape needs.
type Metrics struct {
	reg, runtime *prometheus.Registry
	requests     *prometheus.CounterVec

	// LookupDuration, WriteDuration, WALSync and RowAge are the
	// histograms: pass their Observe to the parts' hooks through ObserveFunc.
	LookupDuration, WriteDuration, WALSync, RowAge prometheus.Histogram
}

// New returns the metrics with the Go and process collectors registered;
// Watch adds the parts once they exist.
func New() *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		runtime: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_requests_total", Help: "Answers to POST /callback, by HTTP status.",
		}, []string{"code"}),
		LookupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callback_lookup_duration_seconds", Help: "One upstream request, answered or failed.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10},
		}),
		WriteDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callback_write_duration_seconds", Help: "One batch upsert, written or failed.",
			Buckets: prometheus.DefBuckets,
		}),
		// The freshness SLO's indicator: its 10 s bucket is the objective.
		RowAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callback_row_age_seconds", Help: "How long a row had been owed when it was written: from the arrival of the oldest callback that asked for it while unwritten (newer ones do not reset it).",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30},
		}),
		WALSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callback_wal_sync_duration_seconds", Help: "One group commit of the intake log: its write and fdatasync.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}),
	}
	m.runtime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.requests, m.LookupDuration, m.WriteDuration, m.WALSync, m.RowAge)
	return m
}

// ObserveFunc adapts a histogram to the parts' hooks, in seconds.
func ObserveFunc(h prometheus.Histogram) func(time.Duration) {
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// Watch registers the collector that reads src at every scrape.
func (m *Metrics) Watch(src Sources) {
	m.reg.MustRegister(&collector{src: src})
}

// Gatherer is the service's own metrics, without the runtime's, for what
// reads them in process every second (the status page).
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, m.runtime}, promhttp.HandlerOpts{Registry: m.reg})
}

// CountRequests counts next's answers by status in callback_requests_total.
func (m *Metrics) CountRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				// Recover, outside, answers 500 for a panic.
				m.requests.WithLabelValues("500").Inc()
				panic(p)
			}
			m.requests.WithLabelValues(strconv.Itoa(rec.status)).Inc()
		}()
		next.ServeHTTP(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// The metrics read at scrape time.
var (
	idsReceived      = desc("callback_ids_received_total", "IDs in accepted callbacks, duplicates included.")
	lookups          = desc("callback_lookups_total", "Finished lookups by outcome: online, offline, rejected (4xx for good), gave_up (receipt older than the TTL), abandoned (shutdown).", "outcome")
	retries          = desc("callback_lookup_retries_total", "Failed lookup attempts that were retried.")
	inFlight         = desc("callback_lookups_in_flight", "Upstream requests now.")
	limit            = desc("callback_lookup_limit", "The adaptive limit on upstream requests in flight.")
	waiting          = desc("callback_ids_waiting", "Distinct IDs waiting for a lookup.")
	rowsWritten      = desc("callback_rows_written_total", "Rows upserted.")
	rowsExpired      = desc("callback_rows_expired_total", "Rows dropped unwritten because their receipt outlived the TTL while the database failed.")
	writeErrors      = desc("callback_write_errors_total", "Failed batch writes; their rows were kept and retried.")
	rowsDeleted      = desc("callback_rows_deleted_total", "Rows removed by the sweeper.")
	oldestUnwritten  = desc("callback_oldest_unwritten_seconds", "How long the oldest work not yet written has been owed: the oldest receipt waiting or in a lookup, or how long the writer has held rows (0 when none).")
	restored         = desc("callback_ids_restored_total", "Distinct IDs of callbacks replayed from the intake log at start.")
	notDurable       = desc("callback_not_durable_total", "Callbacks answered 202 from memory because the intake log could not write.")
	walBytes         = desc("callback_wal_bytes", "Bytes of records the intake log holds on disk (up to 4 reclaimed segments kept for reuse come on top).")
	walOldest        = desc("callback_wal_oldest_seconds", "Age of the oldest callback the intake log holds: the seconds of intake a crash would replay (0 when empty).")
	walDegraded      = desc("callback_wal_degraded", "1 while the intake log cannot write (202s are then in memory only).")
	walRecords       = desc("callback_wal_records_total", "Callbacks synced to the intake log.")
	walSyncs         = desc("callback_wal_syncs_total", "Group commits of the intake log.")
	walFailures      = desc("callback_wal_failures_total", "Failed writes or syncs of the intake log.")
	walCorrupt       = desc("callback_wal_corrupt_records_total", "Records skipped for a bad checksum when the log was opened.")
	poolAcquired     = desc("callback_db_pool_acquired_connections", "Database connections in use.")
	poolIdle         = desc("callback_db_pool_idle_connections", "Idle database connections.")
	poolTotal        = desc("callback_db_pool_connections", "Database connections open.")
	poolMax          = desc("callback_db_pool_max_connections", "The pool's size.")
	poolAcquires     = desc("callback_db_pool_acquires_total", "Connections taken from the pool.")
	poolAcquireWaits = desc("callback_db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	p := c.src.Pipeline
	s := p.Stats()
	counter(idsReceived, float64(s.Accepted))
	counter(lookups, float64(s.Online), "online")
	counter(lookups, float64(s.Lookups-s.Online), "offline")
	counter(lookups, float64(s.Rejected), "rejected")
	counter(lookups, float64(s.GaveUp), "gave_up")
	counter(lookups, float64(s.Abandoned), "abandoned")
	counter(retries, float64(s.Retries))
	n, lim := p.LookupsInFlight()
	gauge(inFlight, float64(n))
	gauge(limit, float64(lim))
	gauge(waiting, float64(p.Waiting()))
	counter(rowsWritten, float64(s.Written))
	counter(rowsExpired, float64(s.Expired))
	counter(writeErrors, float64(s.WriteErrs))
	counter(restored, float64(s.Restored))
	counter(notDurable, float64(s.NotDurable))
	var age float64
	if t := p.OldestUnwritten(); !t.IsZero() {
		age = max(time.Since(t).Seconds(), 0)
	}
	gauge(oldestUnwritten, age)
	if c.src.Sweeper != nil {
		counter(rowsDeleted, float64(c.src.Sweeper.Deleted()))
	}
	if j := c.src.IntakeLog; j == nil { // memory only: nothing on disk, nothing degraded
		gauge(walBytes, 0)
		gauge(walOldest, 0)
		gauge(walDegraded, 0)
	} else {
		w := j.Stats()
		gauge(walBytes, float64(w.OnDisk))
		var held float64
		if !w.Oldest.IsZero() {
			held = max(time.Since(w.Oldest).Seconds(), 0)
		}
		gauge(walOldest, held)
		var degraded float64
		if w.Degraded {
			degraded = 1
		}
		gauge(walDegraded, degraded)
		counter(walRecords, float64(w.Appended))
		counter(walSyncs, float64(w.Syncs))
		counter(walFailures, float64(w.Failures))
		counter(walCorrupt, float64(w.Corrupt))
	}
	if c.src.Pool != nil {
		ps := c.src.Pool()
		gauge(poolAcquired, float64(ps.Acquired))
		gauge(poolIdle, float64(ps.Idle))
		gauge(poolTotal, float64(ps.Total))
		gauge(poolMax, float64(ps.Max))
		counter(poolAcquires, float64(ps.Acquires))
		counter(poolAcquireWaits, ps.AcquireWait.Seconds())
	}
}
