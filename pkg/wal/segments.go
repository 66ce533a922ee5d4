package wal

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// segment is one file of the log.
type segment struct {
	index     uint64 // its records' mark is index+1: mark 0 is none
	path      string
	size      int64
	oldest    time.Time // the oldest receipt in it; zero if none
	opened    time.Time // when this process opened it for writing; zero for older ones
	committed time.Time // the end of its last commit by this process; zero for older ones
	disk      int64     // the file's length, a former life's bytes included (see recycle)
	file      File      // open while it is being written
	replay    bool      // it was there at Open: it goes only once Replay has read it all
	legacy    bool      // it holds unstamped records (record.go), so it is never recycled
	failed    bool      // a write or sync to it failed, so it is never written again
	// owed counts the debts on its records not yet paid (see Owe): one per
	// record when it is committed or replayed, then one per ID whose newest
	// receipt one of them holds.
	owed int64
}

// Segment files are named by their index in hex, zero-padded so that names
// sort as indexes do; a reclaimed one kept for reuse has the suffix .free.
const (
	segmentSuffix = ".wal"
	spareSuffix   = ".free"
)

func (l *Log) pathOf(index uint64, suffix string) string {
	return filepath.Join(l.dir, fmt.Sprintf("%016x%s", index, suffix))
}

// list returns the segments in dir, oldest first, and the spares. A file
// named like either but not a regular file is an error: it could be a link
// the log would follow, or a FIFO that would block the start.
func list(fsys FS, dir string) (segments, spares []*segment, err error) {
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("wal: read %s: %w", dir, err)
	}
	for _, e := range entries {
		suffix := filepath.Ext(e.Name())
		if (suffix != segmentSuffix && suffix != spareSuffix) || e.IsDir() {
			continue
		}
		index, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), suffix), 16, 64)
		if err != nil {
			continue // not ours
		}
		if !e.Type().IsRegular() {
			return nil, nil, fmt.Errorf("wal: %s is named like a segment but is not a regular file (%v); remove it, or use another -wal-dir",
				filepath.Join(dir, e.Name()), e.Type())
		}
		s := &segment{index: index, path: filepath.Join(dir, e.Name())}
		if suffix == spareSuffix {
			if info, err := e.Info(); err == nil {
				s.disk = info.Size()
			}
			spares = append(spares, s)
			continue
		}
		segments = append(segments, s)
	}
	slices.SortFunc(segments, func(a, b *segment) int { return cmp.Compare(a.index, b.index) })
	return segments, spares, nil
}

// scan lists the segments and the spares, reads each segment to learn its
// size and oldest receipt, counts the records it must skip, and cuts a torn
// tail off the last one. The next index is past every name, spares' too: a
// spare holds records stamped with its own index or earlier ones, so a
// segment it becomes must have a later one.
func (l *Log) scan() error {
	var err error
	if l.segments, l.spares, err = list(l.opt.FS, l.dir); err != nil {
		return err
	}
	for _, s := range slices.Concat(l.segments, l.spares) {
		l.nextIndex = max(l.nextIndex, s.index+1)
	}
	for i, s := range l.segments {
		data, err := l.opt.FS.ReadFile(s.path)
		if err != nil {
			return fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		sum, err := readRecords(data, stamp(s.index), nil)
		if err != nil {
			return err
		}
		s.replay = true
		s.size, s.disk, s.oldest, s.legacy = int64(sum.end), int64(len(data)), sum.oldest, sum.legacy
		l.stats.Corrupt += int64(sum.corrupt)
		if sum.corrupt > 0 {
			l.logger.Warn("skipped corrupt records", "segment", s.path, "count", sum.corrupt)
		}
		if tail := len(data) - sum.end; tail > 0 && !sum.marked {
			if i < len(l.segments)-1 {
				// Not the last segment: no write was under way there, so
				// these bytes are damage, not a torn write. Keep the file as
				// it is; they are skipped like a corrupt record.
				l.stats.Corrupt++
				l.logger.Warn("segment ends in bytes that are no record", "segment", s.path, "bytes", tail)
			} else {
				if err := l.opt.FS.Truncate(s.path, int64(sum.end)); err != nil {
					return fmt.Errorf("wal: cut torn tail of %s: %w", s.path, err)
				}
				l.stats.TornBytes += int64(tail)
				l.logger.Warn("cut a torn record off the log", "segment", s.path, "bytes", tail)
				s.disk = int64(sum.end)
			}
		}
		l.total += s.size
	}
	l.replayed = len(l.segments) == 0
	return nil
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

// drop takes away the closed segments that may go, and reports the bytes
// freed: each one on which nothing is owed (if it was there at Open, once
// Replay has read them all), and any whose last commit is older than
// KeepFor. The segment being written stays, unless final: Run has ended and
// closed it. Each goes to the spares if recycle keeps it, else it is
// deleted.
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
		if !l.recycle(s) {
			if err := l.opt.FS.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("wal: remove %s: %w", s.path, err))
				continue
			}
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

// maxSpares is how many reclaimed segments are kept to be written again. A
// segment is opened every SegmentAge and one goes about as often, so a few
// cover the turnover; the rest are deleted.
const maxSpares = 4

// recycle keeps a reclaimed segment as a spare, renamed to index.free, for
// rotate to write again from its start: a sync of bytes that overwrite a
// file's blocks writes no metadata, where one that grows the file commits
// the file system's journal too (BENCHMARKS.md, "Durable intake with
// recycled segments"). It keeps none that failed or holds unstamped
// records, none beyond maxSpares, and none that would take the log and its
// spares past MaxBytes, nor an empty one, which has no blocks to overwrite,
// and none where a rename cannot be made durable (recycles).
// A crash before the directory is synced may leave the old name: the next
// start replays what was already settled, which is harmless.
func (l *Log) recycle(s *segment) bool {
	l.mu.Lock()
	var spare int64
	for _, sp := range l.spares {
		spare += sp.disk
	}
	keep := recycles && s.disk > 0 && !s.failed && !s.legacy && len(l.spares) < maxSpares && l.total+spare+s.disk <= l.opt.MaxBytes
	l.mu.Unlock()
	if !keep {
		return false
	}
	path := l.pathOf(s.index, spareSuffix)
	if err := l.opt.FS.Rename(s.path, path); err != nil {
		l.logger.Warn("keep a reclaimed segment for reuse", "segment", s.path, "err", err)
		return false
	}
	l.mu.Lock()
	l.spares = append(l.spares, &segment{index: s.index, path: path, disk: s.disk})
	l.mu.Unlock()
	return true
}

// Contents is what a log directory holds, as Inspect reads it.
type Contents struct {
	Segments int       // segment files (spares are not counted)
	Bytes    int64     // their bytes up to the last intact record of each
	Oldest   time.Time // the oldest receipt among them; zero if none
}

// Inspect reads the log in dir without locking it or changing a byte: what
// a crash would leave for the next start to replay. It may run while a
// process writes the log; a commit under way then reads as a torn tail, and
// a segment reclaimed meanwhile as gone.
func Inspect(dir string) (Contents, error) {
	segments, _, err := list(osFS{}, dir)
	if err != nil {
		return Contents{}, err
	}
	var c Contents
	for _, s := range segments {
		data, err := osFS{}.ReadFile(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Contents{}, fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		sum, _ := readRecords(data, stamp(s.index), nil) // fails only through fn
		c.Segments++
		c.Bytes += int64(sum.end)
		c.Oldest = earlier(c.Oldest, sum.oldest)
	}
	return c, nil
}
