// Package wal is the durable intake log: the IDs and receipt time of every
// accepted callback are appended and synced to disk before the service
// answers 202, and read back after a crash, so a callback that was
// acknowledged is never lost to a restart.
//
// The log is a directory of segment files, written by one goroutine (Run).
// Each record is one callback, framed with its length and a checksum
// stamped with its segment (record.go). Callbacks that arrive together share
// one write and one fdatasync (group commit, writer.go), and each Append
// returns only once its own bytes are synced. Segments are scanned, replayed
// and reclaimed whole (segments.go), and a reclaimed one is written again
// from its start rather than deleted, because a sync that overwrites a
// file's blocks is cheaper than one that grows it.
//
// What it deliberately does and does not do:
//   - A failed write or fsync is never retried on the same file: after a
//     failed fsync the page cache cannot be trusted (PostgreSQL's
//     "fsyncgate"). The batch is written again to a new segment; if that
//     fails too the log reports itself degraded and Append fails fast until
//     a new segment can be opened again.
//   - On Open, a torn record at the end of the last segment (the crash came
//     mid-write) is cut off; a record whose checksum fails anywhere is
//     skipped and counted, and reading resumes at the next intact record, so
//     one flipped bit never costs the records after it.
//   - Space is reclaimed a whole segment at a time. Append and Replay
//     give each record a mark (its segment's number), and the log keeps,
//     per segment, what is still owed on the records it handed out: the
//     caller takes a debt for each ID whose newest receipt a record holds
//     and pays it once that ID is settled (Owe). A segment goes once nothing
//     is owed on it, so reclaiming compares counts, never clocks; a segment
//     whose last commit is older than KeepFor goes anyway. A few that went
//     are kept as spares (index.free) for new segments to overwrite; the
//     stamp and the end mark keep their former records from replaying.
//     When Run ends with nothing owed, every segment goes, so a clean
//     restart replays nothing. A size cap turns a full log into ErrFull
//     rather than an unbounded disk.
//   - The directory is locked (flock) for the life of the Log, so two
//     processes never share it.
package wal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Errors returned by Append.
var (
	// ErrFull means the log holds MaxBytes already: the caller should refuse
	// the callback (503) rather than accept what it cannot make durable. It
	// answers Full() true.
	ErrFull error = fullError{}
	// ErrDegraded means the log could not write or sync lately; the caller
	// decides whether to go on without durability.
	ErrDegraded = errors.New("wal: degraded, not writing")
	// ErrClosed means Run has returned.
	ErrClosed = errors.New("wal: closed")
)

type fullError struct{}

func (fullError) Error() string { return "wal: log full" }

// Full reports true: the log is at its size cap.
func (fullError) Full() bool { return true }

// Record is one accepted callback.
type Record struct {
	Received time.Time
	IDs      []int64
	// Mark is the segment Replay read it from (see Append); Append ignores it.
	Mark uint64
}

// Options tunes a Log. Zero fields take the defaults named on each.
type Options struct {
	// SegmentBytes starts a new segment once the current one is this big;
	// default 64 MiB.
	SegmentBytes int64
	// MaxBytes caps what the log holds on disk; Append says ErrFull beyond
	// it. Default 4 GiB.
	MaxBytes int64
	// RetryInterval is how long a degraded log waits before it tries a new
	// segment again; default 5s.
	RetryInterval time.Duration
	// ObserveSyncFunc, if set, is told how long each group commit's write
	// and sync took (metrics).
	ObserveSyncFunc func(time.Duration)
	// StatsInterval is how often Run logs what it did, when it did anything;
	// default 10s.
	StatsInterval time.Duration
	// SegmentAge starts a new segment once the current one has held data
	// this long, so that what is settled can be deleted within seconds;
	// default DefaultSegmentAge.
	SegmentAge time.Duration
	// KeepFor, if positive, is the longest a segment is kept after its last
	// commit, however much is still owed on it (measured on the monotonic
	// clock, so a stepped wall clock moves nothing). The service passes
	// its TTL, after which the rows those callbacks would write are deleted
	// anyway, so replaying them could only write rows to be swept.
	KeepFor time.Duration
	// FS is the file layer; tests inject failures through it. Default: the
	// operating system's.
	FS FS
	// NowFunc is the clock; default time.Now.
	NowFunc func() time.Time
	// Linger is how long a group commit waits for more records once it has
	// its first, when the one before it had more than one (so others are
	// sending at the same time): a sync costs the same CPU for 1 record as
	// for 40, so at thousands of callbacks a second the syncs, not the
	// records, are what the log costs (BENCHMARKS.md, "What a sync costs").
	// A lone sender never waits. 0 syncs at once, always.
	Linger time.Duration
}

// DefaultLinger is Options.Linger's value in the service: long enough to
// gather the callbacks that arrive meanwhile, short enough that senders in a
// closed loop do not spend it waiting (BENCHMARKS.md, "Linger").
const DefaultLinger = 500 * time.Microsecond

// DefaultMaxBytes is the size cap Open uses when Options.MaxBytes is 0.
const DefaultMaxBytes = 4 << 30

// DefaultSegmentAge is Options.SegmentAge's default. A segment can go only
// once it is closed, so its age adds to how long the log holds a callback
// beyond the seconds its lookup and write take; a new file every 2 s costs
// one directory sync each.
const DefaultSegmentAge = 2 * time.Second

// Log is an open intake log. Open it, Replay what it holds, then run Run in
// its own goroutine and Append from any number of others.
type Log struct {
	dir    string
	opt    Options
	logger *slog.Logger
	lock   *os.File // holds the directory's flock

	requests chan *request // Append to Run; buffered, so a sender never waits for the writer to come round
	stopped  chan struct{} // closed once Run has returned (or the log was closed without it)
	// retry is armed by setDegraded and read by Run, which then tries a new
	// segment: the writer's goroutine is the only one that opens segments.
	retry *time.Timer

	mu        sync.Mutex // guards the fields below
	segments  []*segment // oldest first; the last one is being written, once Run has started
	spares    []*segment // reclaimed files kept for rotate to write again (see recycle)
	replayed  bool       // Replay has handed out every record of the segments there at Open
	openedAt  time.Time  // when Open ran (monotonic): every replayable record is older
	total     int64      // bytes in all segments
	degraded  error      // the last write failure while degraded, or nil
	closed    bool
	stats     Stats
	recentMax time.Duration // the longest write+fdatasync since the last stats line
	nextIndex uint64
}

// Stats counts what the log has done since Open.
type Stats struct {
	Appended  int64         // records synced
	Syncs     int64         // group commits (one write and one fdatasync each)
	Bytes     int64         // bytes synced
	SyncTime  time.Duration // time spent in write+fdatasync
	Failures  int64         // failed writes or syncs
	Replayed  int64         // records read back by Replay
	Corrupt   int64         // records skipped for a bad checksum or length
	TornBytes int64         // bytes cut off the end of the last segment by Open
	Reclaimed int64         // segments deleted or kept as spares
	Recycled  int64         // segments written in a spare's file rather than a new one
	OnDisk    int64         // bytes the log holds now
	Oldest    time.Time     // the oldest receipt it holds now; zero if none
	Degraded  bool          // writes are failing and Append fails fast
}

// Open locks dir (creating it if needed), cuts a torn tail off its last
// segment and returns the log, ready for Replay and Run. A directory another
// process holds is an error that says so.
func Open(dir string, log *slog.Logger, opt Options) (*Log, error) {
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = 64 << 20
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.RetryInterval <= 0 {
		opt.RetryInterval = 5 * time.Second
	}
	if opt.FS == nil {
		opt.FS = osFS{}
	}
	if opt.StatsInterval <= 0 {
		opt.StatsInterval = 10 * time.Second
	}
	if opt.SegmentAge <= 0 {
		opt.SegmentAge = DefaultSegmentAge
	}
	if opt.NowFunc == nil {
		opt.NowFunc = time.Now
	}
	if err := opt.FS.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, opt: opt, logger: log.With("component", "wal"), lock: lock, requests: make(chan *request, requestQueue),
		stopped: make(chan struct{}), openedAt: opt.NowFunc(), retry: time.NewTimer(time.Hour)}
	l.retry.Stop()
	if err := l.scan(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return l, nil
}

// openLock opens dir/LOCK, creating it, for lockDir to lock.
func openLock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	return f, nil
}

// requestQueue is how many Appends may wait for the writer before a sender
// blocks on the channel: more than a group commit ever gathers (a few hundred
// at saturation), so a sender never waits for the writer to come round.
const requestQueue = 4096

// errInUse is the answer when another process holds dir's lock.
func errInUse(dir string) error {
	return fmt.Errorf("wal: %s is in use by another process; give each instance its own -wal-dir", dir)
}

// Replay calls fn for every intact record of the segments that were there at
// Open, oldest first, with its Mark set. It may run while Run writes new
// ones. Each record handed to fn is owed once, as a committed one is, unless
// fn fails; those segments cannot be reclaimed by what is owed until Replay
// has returned nil.
func (l *Log) Replay(fn func(Record) error) error {
	l.mu.Lock()
	var segs []*segment // the segments there at Open, which reclaiming may have thinned since
	for _, s := range l.segments {
		if s.replay {
			segs = append(segs, s)
		}
	}
	l.mu.Unlock()
	for _, s := range segs {
		data, err := l.opt.FS.ReadFile(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // reclaimed meanwhile
		}
		if err != nil {
			return fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		if _, err := readRecords(data, stamp(s.index), func(r Record) error {
			r.Mark = s.index + 1
			l.mu.Lock()
			l.stats.Replayed++
			l.mu.Unlock()
			l.Owe(r.Mark, 1)
			if err := fn(r); err != nil {
				l.Owe(r.Mark, -1)
				return err
			}
			return nil
		}); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.replayed = true
	l.mu.Unlock()
	return nil
}

// Owe adds n to what is owed on the records of mark, as returned by Append
// or set by Replay; a negative n pays. The caller keeps one debt on a record
// for as long as something it holds may still need that record after a
// crash: the record itself, until it is taken apart, then each ID whose
// newest receipt it holds, until that ID is settled. A segment goes once
// nothing is owed on it. Mark 0 is no record, and a mark whose segment is
// gone (it outlived KeepFor) owes nothing.
func (l *Log) Owe(mark uint64, n int) {
	if mark == 0 || n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The newest segments are asked for most, so search from the end.
	index := mark - 1
	for i := len(l.segments) - 1; i >= 0 && l.segments[i].index >= index; i-- {
		if l.segments[i].index == index {
			l.segments[i].owed += int64(n)
			return
		}
	}
}

// Append writes the callback's IDs and receipt time and returns once they
// are synced, with the other records of the same group commit, and the
// record's mark, on which one debt is owed from then on (see Owe). It fails
// fast with ErrFull when the log holds MaxBytes, ErrDegraded while writes
// are failing, and ErrClosed after Run has returned. ctx bounds only the
// wait to queue the record for the writer: once queued, Append waits for its
// sync however ctx ends, so a record on disk is never left unowned (its
// sender's leaving does not undo it); if Run stops before it took the
// record, Append says ErrClosed and nothing was written.
func (l *Log) Append(ctx context.Context, ids []int64, received time.Time) (mark uint64, err error) {
	r := Record{Received: received, IDs: ids}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return 0, ErrClosed
	case l.degraded != nil:
		err := l.degraded
		l.mu.Unlock()
		return 0, fmt.Errorf("%w: %w", ErrDegraded, err)
	case l.total >= l.opt.MaxBytes:
		l.mu.Unlock()
		return 0, ErrFull
	}
	l.mu.Unlock()
	req := &request{payload: encode(nil, r), received: r.Received, done: make(chan result, 1)}
	select {
	case l.requests <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-l.stopped:
		return 0, ErrClosed
	}
	select {
	case res := <-req.done:
		return res.mark, res.err
	case <-l.stopped: // Run has returned; it answered every request it took
		select {
		case res := <-req.done:
			return res.mark, res.err
		default:
			return 0, ErrClosed
		}
	}
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.OnDisk = l.total
	s.Degraded = l.degraded != nil
	for _, seg := range l.segments {
		s.Oldest = earlier(s.Oldest, seg.oldest)
	}
	return s
}

// Degraded reports whether writes are failing.
func (l *Log) Degraded() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.degraded != nil
}

// close ends the log: Append says ErrClosed, the segment and the lock close.
// Run's end and main's deferred Close both call it; the second does nothing.
func (l *Log) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	var cur *segment
	if n := len(l.segments); n > 0 {
		cur = l.segments[n-1]
	}
	l.mu.Unlock()
	if cur != nil && cur.file != nil {
		_ = cur.file.Close()
		cur.file = nil
	}
	close(l.stopped)
	// After a drain that settled everything nothing is owed, and every
	// segment goes: the next start has nothing to replay. The directory is
	// synced so that the deletions outlive a crash; if they did not, the
	// next start would only replay what is already written, which is
	// harmless.
	if _, err := l.drop(true); err != nil {
		l.logger.Warn("reclaim intake log at close", "err", err)
	}
	if err := l.opt.FS.SyncDir(l.dir); err != nil {
		l.logger.Warn("sync intake log directory at close", "err", err)
	}
	if s := l.Stats(); s.OnDisk > 0 {
		l.logger.Info("intake log closed with callbacks still owed; the next start replays them", "on_disk", s.OnDisk)
	}
	_ = l.lock.Close() // releases the flock
}

// Close releases the directory's lock if Run never ran.
func (l *Log) Close() { l.close() }

// earlier returns the earlier of two receipt times, where the zero time
// means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
