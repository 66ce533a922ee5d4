package ingest

import "time"

// The defaults of Options. The service's flags use them too.
const (
	DefaultWorkers       = 12_000
	DefaultMinLookups    = 64
	DefaultQueueSize     = 1024
	DefaultMaxWaiting    = 1_000_000
	DefaultBatchSize     = 1000
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultDBTimeout     = 5 * time.Second
	DefaultTTL           = 30 * time.Second
	DefaultStatsInterval = 10 * time.Second
)

// Options tunes a Pipeline. A zero or negative field takes its Default.
type Options struct {
	// Workers is the size of the fixed pool of lookup workers, and so the
	// ceiling of the adaptive limit on upstream requests in flight.
	Workers int
	// MinLookups is the floor of that limit, where it starts and which no
	// overload pushes it below.
	MinLookups int
	QueueSize  int // callbacks buffered before Enqueue says ErrFull
	MaxWaiting int // distinct IDs waiting for a worker before Enqueue says ErrFull

	// ObserveLookupFunc, if set, is told how long each upstream request
	// took, and ObserveWriteFunc how long each batch upsert took (metrics).
	ObserveLookupFunc, ObserveWriteFunc func(time.Duration)
	// ObserveRowAgeFunc, if set, is told how long each written row had been
	// owed, from the oldest callback that asked for it while unwritten, when
	// its batch was stored (the freshness SLO).
	ObserveRowAgeFunc func(time.Duration)

	// IntakeLog, if set, makes every callback durable before Enqueue returns.
	// Nil keeps callbacks in memory only: a crash loses what is not written.
	IntakeLog IntakeLog

	BatchSize     int           // rows per upsert
	FlushInterval time.Duration // longest wait of a partial batch
	DBTimeout     time.Duration // bound of one upsert

	// TTL is how long a sighting matters: a lookup is retried until its
	// receipt time is older than TTL, because by then its row would be
	// deleted anyway.
	TTL time.Duration
	// StatsInterval is how often a summary is logged when anything happened.
	StatsInterval time.Duration
}

func (o *Options) setDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.Workers, DefaultWorkers)
	def(&o.MinLookups, DefaultMinLookups)
	def(&o.QueueSize, DefaultQueueSize)
	def(&o.MaxWaiting, DefaultMaxWaiting)
	def(&o.BatchSize, DefaultBatchSize)
	defd(&o.FlushInterval, DefaultFlushInterval)
	defd(&o.DBTimeout, DefaultDBTimeout)
	defd(&o.TTL, DefaultTTL)
	defd(&o.StatsInterval, DefaultStatsInterval)
}

// Retry timing, which no caller has needed to change.
const (
	// retryBase and retryMax bound the exponential backoff of failed lookups
	// and writes.
	retryBase = 100 * time.Millisecond
	retryMax  = 5 * time.Second
	// writeRetryMax caps the backoff of failed writes, below retryMax: the
	// writer is one statement, so retrying it every second costs nothing,
	// and once the database is back (a failover, a restart) the rows go
	// within that second instead of up to retryMax later.
	writeRetryMax = time.Second
	// finalFlushTimeout bounds the last write attempt after Run's context
	// is cancelled.
	finalFlushTimeout = 5 * time.Second
)
