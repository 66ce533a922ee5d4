// Package wal is the durable intake log: the IDs and receipt time of every
// accepted callback are appended and synced to disk before the service
// answers 202, and read back after a crash, so a callback that was
// acknowledged is never lost to a restart.
//
// The log is a directory of segment files, written by one goroutine (Run).
// Each record is framed as
//
//	length  uint32, little-endian: the payload's length
//	crc     uint32, little-endian: CRC32C (Castagnoli) of length and payload
//	payload receipt time (int64 Unix ns), ID count (uvarint), IDs (varints)
//
// as Prometheus's WAL and Vector's disk buffers frame theirs. Callbacks that
// arrive together share one write and one fdatasync (group commit), and each
// Append returns only once its own bytes are synced.
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
//     whose last commit is older than KeepFor goes anyway. When Run ends
//     with nothing owed, the log deletes every segment, so a clean restart
//     replays nothing. A size cap turns a full log into ErrFull rather than
//     an unbounded disk.
//   - The directory is locked (flock) for the life of the Log, so two
//     processes never share it.
package wal

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	// for 40, about 150-200 µs on a virtual disk, and at thousands of
	// callbacks a second the syncs, not the records, are what the log
	// costs. A lone sender never waits. 0 syncs at once, always.
	Linger time.Duration
}

// DefaultLinger is Options.Linger's value in the service. Measured at
// saturation on this project's virtual disk (64 senders, alternating runs,
// medians of 5): no linger, 10.9 records per sync and 0.89x the bare
// read+decode handler's requests/s; 500 µs, 19 and 0.98x; 1 ms, 26 and
// 0.96x; longer lingers batch more but leave the senders waiting, and
// throughput falls (4 ms: 0.81x).
const DefaultLinger = 500 * time.Microsecond

// DefaultSegmentAge is Options.SegmentAge's default. A segment can go only
// once it is closed, so its age adds to how long the log holds a callback
// beyond the seconds its lookup and write take; a new file every 2 s costs
// one directory sync each.
const DefaultSegmentAge = 2 * time.Second

const (
	maxBatchBytes = 4 << 20 // a group commit closes at this size
	headerLen     = 8
	maxPayload    = 16 << 20 // a record claiming more is corrupt: a body is at most 1 MiB
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is an open intake log. Open it, Replay what it holds, then run Run in
// its own goroutine and Append from any number of others.
type Log struct {
	dir  string
	opt  Options
	log  *slog.Logger
	lock *os.File // holds the directory's flock

	requests chan *request // Append to Run; buffered, so a sender never waits for the writer to come round
	stopped  chan struct{} // closed once Run has returned (or the log was closed without it)

	mu        sync.Mutex // guards the fields below
	segments  []*segment // oldest first; the last one is being written, once Run has started
	replayed  bool       // Replay has handed out every record of the segments there at Open
	openedAt  time.Time  // when Open ran (monotonic): every replayable record is older
	total     int64      // bytes in all segments
	degraded  error      // the last write failure while degraded, or nil
	closed    bool
	stats     Stats
	recentMax time.Duration // the longest write+fdatasync since the last stats line
	nextIndex uint64
}

// segment is one file of the log.
type segment struct {
	index     uint64 // its records' mark is index+1: mark 0 is none
	path      string
	size      int64
	oldest    time.Time // the oldest receipt in it; zero if none
	opened    time.Time // when this process opened it for writing; zero for older ones
	committed time.Time // the end of its last commit by this process; zero for older ones
	file      File      // open while it is being written
	replay    bool      // it was there at Open: it goes only once Replay has read it all
	// owed counts the debts on its records not yet paid (see Owe): one per
	// record when it is committed or replayed, then one per ID whose newest
	// receipt one of them holds.
	owed int64
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
	Reclaimed int64         // segments deleted
	OnDisk    int64         // bytes the log holds now
	Oldest    time.Time     // the oldest receipt it holds now; zero if none
	Degraded  bool          // writes are failing and Append fails fast
}

type request struct {
	payload  []byte
	received time.Time
	done     chan result
}

// result is a group commit's answer to each of its requests.
type result struct {
	mark uint64
	err  error
}

// Open locks dir (creating it if needed), cuts a torn tail off its last
// segment and returns the log, ready for Replay and Run. A directory another
// process holds is an error that says so.
func Open(dir string, log *slog.Logger, opt Options) (*Log, error) {
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = 64 << 20
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 4 << 30
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
	l := &Log{dir: dir, opt: opt, log: log.With("component", "wal"), lock: lock, requests: make(chan *request, 4096),
		stopped: make(chan struct{}), openedAt: opt.NowFunc()}
	if err := l.scan(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return l, nil
}

// errInUse is the answer when another process holds dir's lock.
func errInUse(dir string) error {
	return fmt.Errorf("wal: %s is in use by another process; give each instance its own -wal-dir", dir)
}

// scan lists the segments, reads each to learn its size and oldest receipt,
// counts the records it must skip, and cuts a torn tail off the last one.
func (l *Log) scan() error {
	entries, err := l.opt.FS.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("wal: read %s: %w", l.dir, err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok || e.IsDir() {
			continue
		}
		index, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue // not ours
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("wal: %s is named like a segment but is not a regular file (%v); remove it, or use another -wal-dir",
				filepath.Join(l.dir, e.Name()), e.Type())
		}
		l.segments = append(l.segments, &segment{index: index, path: filepath.Join(l.dir, e.Name()), replay: true})
	}
	slices.SortFunc(l.segments, func(a, b *segment) int { return cmp.Compare(a.index, b.index) })
	for i, s := range l.segments {
		data, err := l.opt.FS.ReadFile(s.path)
		if err != nil {
			return fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		sum, err := readRecords(data, nil)
		if err != nil {
			return err
		}
		s.size, s.oldest = int64(len(data)), sum.oldest
		l.stats.Corrupt += int64(sum.corrupt)
		if sum.corrupt > 0 {
			l.log.Warn("skipped corrupt records", "segment", s.path, "count", sum.corrupt)
		}
		if tail := len(data) - sum.end; tail > 0 {
			if i < len(l.segments)-1 {
				// Not the last segment: no write was under way there, so
				// these bytes are damage, not a torn write. Keep the file as
				// it is; they are skipped like a corrupt record.
				l.stats.Corrupt++
				l.log.Warn("segment ends in bytes that are no record", "segment", s.path, "bytes", tail)
			} else {
				if err := l.opt.FS.Truncate(s.path, int64(sum.end)); err != nil {
					return fmt.Errorf("wal: cut torn tail of %s: %w", s.path, err)
				}
				l.stats.TornBytes += int64(tail)
				l.log.Warn("cut a torn record off the log", "segment", s.path, "bytes", tail)
				s.size = int64(sum.end)
			}
		}
		l.total += s.size
		l.nextIndex = s.index + 1
	}
	l.replayed = len(l.segments) == 0
	return nil
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
		if _, err := readRecords(data, func(r Record) error {
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

// earlier returns the earlier of two receipt times, where the zero time
// means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// summary is what reading a segment found.
type summary struct {
	oldest  time.Time // the oldest receipt
	corrupt int       // damaged stretches skipped
	end     int       // the offset just after the last intact record
}

// readRecords calls fn (if set) for each intact record in data. A record
// that fails its checksum is skipped and reading resumes at the next offset
// where an intact record starts; bytes after the last intact record are left
// for the caller to judge (a torn write, or damage).
func readRecords(data []byte, fn func(Record) error) (summary, error) {
	var sum summary
	for off := 0; off < len(data); {
		rec, n, ok := decodeAt(data, off)
		if !ok {
			next := resync(data, off+1)
			if next < 0 {
				break
			}
			sum.corrupt++
			off = next
			continue
		}
		sum.oldest = earlier(sum.oldest, rec.Received)
		if fn != nil {
			if err := fn(rec); err != nil {
				return sum, err
			}
		}
		off += n
		sum.end = off
	}
	return sum, nil
}

// decodeAt decodes the record at data[off:], reporting its framed length and
// whether it is intact.
func decodeAt(data []byte, off int) (Record, int, bool) {
	if len(data)-off < headerLen {
		return Record{}, 0, false
	}
	n := binary.LittleEndian.Uint32(data[off:])
	if n > maxPayload || int(n) > len(data)-off-headerLen {
		return Record{}, 0, false
	}
	want := binary.LittleEndian.Uint32(data[off+4:])
	crc := crc32.Update(crc32.Checksum(data[off:off+4], castagnoli), castagnoli, data[off+headerLen:off+headerLen+int(n)])
	if crc != want {
		return Record{}, 0, false
	}
	rec, ok := decodePayload(data[off+headerLen : off+headerLen+int(n)])
	return rec, headerLen + int(n), ok
}

// resync returns the first offset at or after from where an intact record
// starts, or -1. It only runs past damage, so its cost does not matter.
func resync(data []byte, from int) int {
	for off := from; off+headerLen <= len(data); off++ {
		if _, _, ok := decodeAt(data, off); ok {
			return off
		}
	}
	return -1
}

// encode frames a record.
func encode(dst []byte, r Record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerLen)...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Received.UnixNano()))
	dst = binary.AppendUvarint(dst, uint64(len(r.IDs)))
	for _, id := range r.IDs {
		dst = binary.AppendVarint(dst, id)
	}
	n := len(dst) - start - headerLen
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	crc := crc32.Update(crc32.Checksum(dst[start:start+4], castagnoli), castagnoli, dst[start+headerLen:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

func decodePayload(p []byte) (Record, bool) {
	if len(p) < 9 {
		return Record{}, false
	}
	r := Record{Received: time.Unix(0, int64(binary.LittleEndian.Uint64(p)))}
	p = p[8:]
	count, n := binary.Uvarint(p)
	if n <= 0 || count > uint64(len(p)) {
		return Record{}, false
	}
	p = p[n:]
	r.IDs = make([]int64, 0, count)
	for range count {
		id, n := binary.Varint(p)
		if n <= 0 {
			return Record{}, false
		}
		r.IDs = append(r.IDs, id)
		p = p[n:]
	}
	return r, len(p) == 0
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

// Run is the writer: it takes every waiting Append, writes them with one
// write and one fdatasync, and answers each, until ctx is done. It starts a
// new segment first, so nothing is ever appended after a replayed tail.
func (l *Log) Run(ctx context.Context) error {
	defer l.close()
	l.rotateOrDegrade()
	var (
		batch []*request
		buf   []byte
	)
	reclaimTick := time.NewTicker(time.Second)
	defer reclaimTick.Stop()
	statsTick := time.NewTicker(l.opt.StatsInterval)
	defer statsTick.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var (
		last      Stats
		lastBatch int // records in the last group commit
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-statsTick.C:
			if s := l.Stats(); s.Appended != last.Appended || s.Degraded || s.Reclaimed != last.Reclaimed {
				l.logStats(ctx, s, last)
				last = s
			}
			continue
		case <-reclaimTick.C:
			if err := l.reclaim(); err != nil {
				l.log.WarnContext(ctx, "reclaim intake log", "err", err)
			}
			continue
		case req := <-l.requests:
			batch = append(batch[:0], req)
		}
		// Group commit: everything that is waiting now joins this write,
		// and under concurrent load what arrives within Linger too.
		var until <-chan time.Time
		if l.opt.Linger > 0 && lastBatch > 1 {
			linger.Reset(l.opt.Linger)
			until = linger.C
		}
		batch = l.gather(batch, until)
		linger.Stop() // since Go 1.23 a stopped timer's channel never delivers a stale tick
		lastBatch = len(batch)
		buf = buf[:0]
		var oldest time.Time
		for _, r := range batch {
			buf = append(buf, r.payload...)
			oldest = earlier(oldest, r.received)
		}
		mark, err := l.commit(buf, oldest, len(batch))
		for _, r := range batch {
			r.done <- result{mark, err}
		}
		clear(batch)
	}
}

// gather adds to batch the requests waiting now and, until until fires
// (nil: no wait), those that arrive, up to maxBatchBytes of records.
func (l *Log) gather(batch []*request, until <-chan time.Time) []*request {
	size := 0
	for _, r := range batch {
		size += len(r.payload)
	}
	for size < maxBatchBytes {
		var req *request
		if until != nil {
			select {
			case req = <-l.requests:
			case <-until:
				until = nil // take what is waiting now, then stop
				continue
			}
		} else {
			select {
			case req = <-l.requests:
			default:
				return batch
			}
		}
		batch = append(batch, req)
		size += len(req.payload)
	}
	return batch
}

// commit writes and syncs buf to the current segment and returns its mark,
// with one debt owed on it per record. On failure it never retries that
// file: it opens a new segment and writes the batch there once; if that
// fails too, the log is degraded until RetryInterval has passed.
func (l *Log) commit(buf []byte, oldest time.Time, records int) (uint64, error) {
	l.mu.Lock()
	degraded := l.degraded
	l.mu.Unlock()
	if degraded != nil {
		return 0, fmt.Errorf("%w: %w", ErrDegraded, degraded)
	}
	start := l.opt.NowFunc()
	err := l.writeSync(buf)
	if err != nil {
		l.countFailure(err)
		if err = l.rotate(); err == nil {
			err = l.writeSync(buf)
		}
		if err != nil {
			l.countFailure(err)
			l.setDegraded(err)
			return 0, fmt.Errorf("%w: %w", ErrDegraded, err)
		}
	}
	took := l.opt.NowFunc().Sub(start)
	if f := l.opt.ObserveSyncFunc; f != nil {
		f(took)
	}
	l.mu.Lock()
	cur := l.segments[len(l.segments)-1]
	cur.size += int64(len(buf))
	cur.oldest = earlier(cur.oldest, oldest)
	l.total += int64(len(buf))
	l.stats.Appended += int64(records)
	l.stats.Syncs++
	l.stats.Bytes += int64(len(buf))
	l.stats.SyncTime += took
	l.recentMax = max(l.recentMax, took)
	cur.committed = l.opt.NowFunc()
	cur.owed += int64(records)
	mark := cur.index + 1
	full := cur.size >= l.opt.SegmentBytes || cur.committed.Sub(cur.opened) >= l.opt.SegmentAge
	l.mu.Unlock()
	if full {
		l.rotateOrDegrade()
	}
	return mark, nil
}

// rotateOrDegrade starts a new segment; if it cannot, the log is degraded.
func (l *Log) rotateOrDegrade() {
	if err := l.rotate(); err != nil {
		l.setDegraded(err)
	}
}

// writeSync writes buf to the current segment and syncs it.
func (l *Log) writeSync(buf []byte) error {
	l.mu.Lock()
	cur := l.segments[len(l.segments)-1]
	l.mu.Unlock()
	if cur.file == nil {
		return errors.New("no open segment")
	}
	if _, err := cur.file.Write(buf); err != nil {
		return fmt.Errorf("write %s: %w", cur.path, err)
	}
	if err := cur.file.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", cur.path, err)
	}
	return nil
}

// rotate closes the current segment (keeping its file: what was synced in
// it still counts) and opens a new one, syncing the directory so the new
// file's name is durable too.
func (l *Log) rotate() error {
	l.mu.Lock()
	var prev *segment
	if n := len(l.segments); n > 0 {
		prev = l.segments[n-1]
	}
	index := l.nextIndex
	l.nextIndex++
	l.mu.Unlock()
	if prev != nil && prev.file != nil {
		_ = prev.file.Close() // its data is synced, or its failure already reported
		prev.file = nil
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%016x.wal", index))
	f, err := l.opt.FS.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	if err := l.opt.FS.SyncDir(l.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", l.dir, err)
	}
	l.mu.Lock()
	l.segments = append(l.segments, &segment{index: index, path: path, file: f, opened: l.opt.NowFunc()})
	l.mu.Unlock()
	return nil
}

func (l *Log) countFailure(err error) {
	l.mu.Lock()
	l.stats.Failures++
	l.mu.Unlock()
	l.log.Error("intake log write failed", "err", err)
}

// setDegraded makes Append fail fast, and schedules a fresh try.
func (l *Log) setDegraded(err error) {
	l.mu.Lock()
	already := l.degraded != nil
	l.degraded = err
	l.mu.Unlock()
	if !already {
		l.log.Error("intake log degraded: callbacks are not durable until it recovers", "err", err)
	}
	time.AfterFunc(l.opt.RetryInterval, l.recover)
}

// recover tries a new segment; on success the log writes again.
func (l *Log) recover() {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	if err := l.rotate(); err != nil {
		l.setDegraded(err)
		return
	}
	l.mu.Lock()
	l.degraded = nil
	l.mu.Unlock()
	l.log.Info("intake log recovered")
}

// reclaim starts a new segment if the current one has held data for
// SegmentAge with no commit to close it (a lull), so that it can go too,
// then deletes the segments that may go (see drop). Run calls it every second.
func (l *Log) reclaim() error {
	l.mu.Lock()
	var idle bool
	if n := len(l.segments); n > 0 && l.degraded == nil {
		cur := l.segments[n-1]
		idle = cur.file != nil && cur.size > 0 && l.opt.NowFunc().Sub(cur.opened) >= l.opt.SegmentAge
	}
	l.mu.Unlock()
	if idle {
		l.rotateOrDegrade()
	}
	_, err := l.drop(false)
	return err
}

// drop deletes the closed segments that may go, and reports the bytes
// freed: each one on which nothing is owed (if it was there at Open, once
// Replay has read them all), and any whose last commit is older than
// KeepFor. The segment being written stays, unless final: Run has ended and
// closed it.
func (l *Log) drop(final bool) (int64, error) {
	now := l.opt.NowFunc()
	l.mu.Lock()
	var drop []*segment
	keep := l.segments[:0]
	for i, s := range l.segments {
		closed := s.file == nil && (i < len(l.segments)-1 || final)
		settled := s.owed == 0 && (!s.replay || l.replayed)
		if closed && (settled || l.aged(s, now)) {
			drop = append(drop, s)
			continue
		}
		keep = append(keep, s)
	}
	clear(l.segments[len(keep):]) // let the dropped go
	l.segments = keep
	l.mu.Unlock()
	var freed int64
	var errs []error
	for _, s := range drop {
		if err := l.opt.FS.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("wal: remove %s: %w", s.path, err))
			continue
		}
		freed += s.size
	}
	l.mu.Lock()
	l.total -= freed
	l.stats.Reclaimed += int64(len(drop) - len(errs))
	l.mu.Unlock()
	return freed, errors.Join(errs...)
}

// aged reports whether s's last commit is older than KeepFor. Both times
// carry a monotonic reading, so a stepped wall clock changes nothing; a
// segment from before Open is as old as the time since Open at least.
func (l *Log) aged(s *segment, now time.Time) bool {
	if l.opt.KeepFor <= 0 {
		return false
	}
	last := s.committed
	if last.IsZero() {
		last = l.openedAt
	}
	return now.Sub(last) > l.opt.KeepFor
}

// logStats logs what happened since last: the group commits, their mean
// size, their mean and longest sync time, and what the log holds. Every
// figure but the totals is for the interval, the longest sync too: one slow
// sync long ago must not hide how the disk is doing now.
func (l *Log) logStats(ctx context.Context, s, last Stats) {
	l.mu.Lock()
	longest := l.recentMax
	l.recentMax = 0
	l.mu.Unlock()
	syncs := s.Syncs - last.Syncs
	var perSync float64
	var mean time.Duration
	if syncs > 0 {
		perSync = float64(s.Appended-last.Appended) / float64(syncs)
		mean = (s.SyncTime - last.SyncTime) / time.Duration(syncs)
	}
	var held time.Duration // how much intake a crash now would replay
	if !s.Oldest.IsZero() {
		held = l.opt.NowFunc().Sub(s.Oldest).Round(time.Millisecond)
	}
	l.log.InfoContext(ctx, "intake log stats",
		"appended", s.Appended, "syncs", s.Syncs, "per_sync", perSync, "sync_mean", mean, "sync_max", longest,
		"bytes", s.Bytes, "on_disk", s.OnDisk, "held", held, "reclaimed", s.Reclaimed, "failures", s.Failures, "degraded", s.Degraded)
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
		l.log.Warn("reclaim intake log at close", "err", err)
	}
	if err := l.opt.FS.SyncDir(l.dir); err != nil {
		l.log.Warn("sync intake log directory at close", "err", err)
	}
	if s := l.Stats(); s.OnDisk > 0 {
		l.log.Info("intake log closed with callbacks still owed; the next start replays them", "on_disk", s.OnDisk)
	}
	_ = l.lock.Close() // releases the flock
}

// Close releases the directory's lock if Run never ran.
func (l *Log) Close() { l.close() }
