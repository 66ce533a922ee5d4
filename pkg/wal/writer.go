package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// maxBatchBytes closes a group commit at this size.
const maxBatchBytes = 4 << 20

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

// Run is the writer: it takes every waiting Append, writes them with one
// write and one fdatasync, and answers each, until ctx is done. It starts a
// new segment first, so nothing is ever appended after a replayed tail.
func (l *Log) Run(ctx context.Context) error {
	defer l.close()
	defer l.retry.Stop()
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
		case <-l.retry.C:
			l.reopen()
			continue
		case <-reclaimTick.C:
			if err := l.reclaim(); err != nil {
				l.logger.WarnContext(ctx, "reclaim intake log", "err", err)
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
		buf = append(buf, endMark[:]...)
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

// commit writes and syncs buf, records then an end mark, to the current
// segment and returns its mark, with one debt owed on it per record. On
// failure it never retries that file: it opens a new segment and writes the
// batch there once; if that fails too, the log is degraded until
// RetryInterval has passed.
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
	n := int64(len(buf) - len(endMark)) // the next commit overwrites the mark
	l.mu.Lock()
	cur := l.segments[len(l.segments)-1]
	cur.disk = max(cur.disk, cur.size+int64(len(buf)))
	cur.size += n
	cur.oldest = earlier(cur.oldest, oldest)
	l.total += n
	l.stats.Appended += int64(records)
	l.stats.Syncs++
	l.stats.Bytes += n
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

// writeSync writes buf, stamped for the current segment, where that
// segment's records end, and syncs it. It leaves buf unstamped, as it found
// it, for a retry on another segment.
func (l *Log) writeSync(buf []byte) error {
	l.mu.Lock()
	cur := l.segments[len(l.segments)-1]
	l.mu.Unlock()
	if cur.file == nil {
		return errors.New("no open segment")
	}
	recs := buf[:len(buf)-len(endMark)]
	restamp(recs, stamp(cur.index))
	_, err := cur.file.WriteAt(buf, cur.size)
	restamp(recs, stamp(cur.index))
	if err != nil {
		cur.failed = true
		return fmt.Errorf("write %s: %w", cur.path, err)
	}
	if err := cur.file.Sync(); err != nil {
		cur.failed = true
		return fmt.Errorf("sync %s: %w", cur.path, err)
	}
	return nil
}

// rotate closes the current segment (keeping its file: what was synced in
// it still counts) and opens a new one, a spare if there is one, syncing
// the directory so the new name is durable before a record is written under
// it.
func (l *Log) rotate() error {
	l.mu.Lock()
	var prev, spare *segment
	if n := len(l.segments); n > 0 {
		prev = l.segments[n-1]
	}
	if n := len(l.spares); n > 0 {
		spare = l.spares[n-1]
		l.spares = l.spares[:n-1]
	}
	index := l.nextIndex
	l.nextIndex++
	l.mu.Unlock()
	if prev != nil && prev.file != nil {
		_ = prev.file.Close() // its data is synced, or its failure already reported
		prev.file = nil
	}
	next := &segment{index: index, path: l.pathOf(index, segmentSuffix)}
	var f File
	if spare != nil {
		var err error
		if f, err = l.reuse(spare, next.path); err != nil {
			l.logger.Warn("reuse a reclaimed segment", "err", err)
		} else {
			next.disk = spare.disk
			l.mu.Lock()
			l.stats.Recycled++
			l.mu.Unlock()
		}
	}
	if f == nil {
		var err error
		if f, err = l.opt.FS.OpenFile(next.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640); err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
	}
	if err := l.opt.FS.SyncDir(l.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", l.dir, err)
	}
	next.file, next.opened = f, l.opt.NowFunc()
	l.mu.Lock()
	l.segments = append(l.segments, next)
	l.mu.Unlock()
	return nil
}

// reuse renames a spare to path and opens it to be written from its start,
// where it writes and syncs an end mark first: until its first commit the
// file holds only its former records, and after a crash it must read as the
// empty segment it is, not as one long torn tail. If it cannot, the spare
// is deleted under both names, so that path is free for a new file.
func (l *Log) reuse(spare *segment, path string) (File, error) {
	err := l.opt.FS.Rename(spare.path, path)
	if err == nil {
		var f File
		if f, err = l.opt.FS.OpenFile(path, os.O_WRONLY, 0); err == nil {
			if _, err = f.WriteAt(endMark[:], 0); err == nil {
				err = f.Sync()
			}
			if err == nil {
				return f, nil
			}
			_ = f.Close()
		}
	}
	_ = l.opt.FS.Remove(spare.path)
	_ = l.opt.FS.Remove(path)
	return nil, fmt.Errorf("reuse %s: %w", spare.path, err)
}

func (l *Log) countFailure(err error) {
	l.mu.Lock()
	l.stats.Failures++
	l.mu.Unlock()
	l.logger.Error("intake log write failed", "err", err)
}

// setDegraded makes Append fail fast, and has Run try a new segment after
// RetryInterval. Only Run's goroutine calls it.
func (l *Log) setDegraded(err error) {
	l.mu.Lock()
	already := l.degraded != nil
	l.degraded = err
	l.mu.Unlock()
	if !already {
		l.logger.Error("intake log degraded: callbacks are not durable until it recovers", "err", err)
	}
	l.retry.Reset(l.opt.RetryInterval)
}

// reopen tries a new segment; on success the log writes again. Run calls it
// when the retry timer fires, so it never runs once the log is closed.
func (l *Log) reopen() {
	if err := l.rotate(); err != nil {
		l.setDegraded(err)
		return
	}
	l.mu.Lock()
	l.degraded = nil
	l.mu.Unlock()
	l.logger.Info("intake log recovered")
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
	l.logger.InfoContext(ctx, "intake log stats",
		"appended", s.Appended, "syncs", s.Syncs, "per_sync", perSync, "sync_mean", mean, "sync_max", longest,
		"bytes", s.Bytes, "on_disk", s.OnDisk, "held", held, "reclaimed", s.Reclaimed, "recycled", s.Recycled,
		"failures", s.Failures, "degraded", s.Degraded)
}
