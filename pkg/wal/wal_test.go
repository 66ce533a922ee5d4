package wal

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"callback/pkg/logtest"
)

// running opens dir and runs the log until the test ends; stop ends it early.
func running(t *testing.T, dir string, opt Options) (l *Log, stop func()) {
	t.Helper()
	l, err := Open(dir, logtest.Discard(), opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return l, stop
}

func appendRec(ctx context.Context, l *Log, r Record) error {
	_, err := l.Append(ctx, r.IDs, r.Received)
	return err
}

func rec(sec int64, ids ...int64) Record {
	return Record{Received: time.Unix(sec, 123), IDs: ids}
}

func replay(t *testing.T, dir string) ([]Record, Stats) {
	t.Helper()
	l, err := Open(dir, logtest.Discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []Record
	if err := l.Replay(func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return got, l.Stats()
}

func equal(a, b []Record) bool {
	return slices.EqualFunc(a, b, func(x, y Record) bool {
		return x.Received.Equal(y.Received) && slices.Equal(x.IDs, y.IDs)
	})
}

func TestAppendReplay(t *testing.T) {
	dir := t.TempDir()
	l, stop := running(t, dir, Options{})
	want := []Record{rec(1, 0, 1, 2), rec(2), rec(3, -1<<63, 1<<63-1, -5)}
	for _, r := range want {
		if err := appendRec(t.Context(), l, r); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	got, _ := replay(t, dir)
	if !equal(got, want) {
		t.Errorf("replayed %v, want %v", got, want)
	}
}

// Callbacks that arrive together share a sync, and each returns only after
// its own.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, stop := running(t, dir, Options{})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if err := appendRec(t.Context(), l, rec(int64(i), int64(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s := l.Stats()
	stop()
	if s.Appended != 200 || s.Syncs >= 200 {
		t.Errorf("appended %d in %d syncs, want 200 in fewer", s.Appended, s.Syncs)
	}
	got, _ := replay(t, dir)
	if len(got) != 200 {
		t.Errorf("replayed %d records, want 200", len(got))
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// A crash mid-write leaves part of a record at the end of the last segment:
// Open cuts it off, the complete records before it replay, and what is
// appended next replays too.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	l, stop := running(t, dir, Options{})
	want := []Record{rec(1, 1), rec(2, 2), rec(3, 3)}
	for _, r := range want {
		if err := appendRec(t.Context(), l, r); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	segs := segmentFiles(t, dir)
	last := segs[len(segs)-1]
	torn := encode(nil, rec(4, 4, 4, 4))
	f, err := os.OpenFile(last, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	// The next commit would have overwritten the end mark.
	if _, err := f.WriteAt(torn[:len(torn)-3], fi.Size()-headerLen); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l, stop = running(t, dir, Options{})
	if got := l.Stats().TornBytes; got != int64(len(torn)-3) {
		t.Errorf("TornBytes = %d, want %d", got, len(torn)-3)
	}
	if err := appendRec(t.Context(), l, rec(5, 5)); err != nil {
		t.Fatal(err)
	}
	stop()
	got, st := replay(t, dir)
	if want := append(want, rec(5, 5)); !equal(got, want) {
		t.Errorf("replayed %v, want %v", got, want)
	}
	if st.Corrupt != 0 {
		t.Errorf("Corrupt = %d after the cut, want 0", st.Corrupt)
	}
}

// A flipped bit is caught by the checksum: that record is skipped and
// counted, every other record replays, whether the bit is in a payload or in
// a length.
func TestFlippedBit(t *testing.T) {
	for _, where := range []string{"payload", "length"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			l, stop := running(t, dir, Options{})
			all := []Record{rec(1, 1, 2), rec(2, 3, 4), rec(3, 5, 6)}
			for _, r := range all {
				if err := appendRec(t.Context(), l, r); err != nil {
					t.Fatal(err)
				}
			}
			stop()
			seg := segmentFiles(t, dir)[0]
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			second := len(encode(nil, all[0]))
			switch where {
			case "payload":
				data[second+headerLen+2] ^= 0x10
			case "length":
				data[second+1] ^= 0x01
			}
			if err := os.WriteFile(seg, data, 0o640); err != nil {
				t.Fatal(err)
			}
			got, st := replay(t, dir)
			if want := []Record{all[0], all[2]}; !equal(got, want) {
				t.Errorf("replayed %v, want %v", got, want)
			}
			if st.Corrupt != 1 {
				t.Errorf("Corrupt = %d, want 1", st.Corrupt)
			}
		})
	}
}

func TestDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, logtest.Discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, logtest.Discard(), Options{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second Open = %v, want an error saying the directory is in use", err)
	}
	l.Close()
	l2, err := Open(dir, logtest.Discard(), Options{})
	if err != nil {
		t.Fatalf("Open after Close = %v, want the lock released", err)
	}
	l2.Close()
}

// mustAppend appends r and returns its mark.
func mustAppend(t *testing.T, l *Log, r Record) uint64 {
	t.Helper()
	mark, err := l.Append(t.Context(), r.IDs, r.Received)
	if err != nil {
		t.Fatal(err)
	}
	return mark
}

// A segment goes once nothing is owed on it; the one being written stays.
func TestReclaim(t *testing.T) {
	dir := t.TempDir()
	l, _ := running(t, dir, Options{SegmentBytes: 1}) // a segment per commit
	var marks []uint64
	for i := range 4 {
		marks = append(marks, mustAppend(t, l, rec(int64(i+1), int64(i))))
	}
	files := func() int { return len(segmentFiles(t, dir)) }
	drop := func(want int, why string) {
		t.Helper()
		before := l.Stats().OnDisk
		freed, err := l.drop(false)
		if err != nil {
			t.Fatal(err)
		}
		if got := files(); got != want {
			t.Errorf("%s: %d segment files, want %d", why, got, want)
		}
		if after := l.Stats().OnDisk; after != before-freed {
			t.Errorf("%s: freed %d, on disk %d -> %d", why, freed, before, after)
		}
	}
	drop(5, "all owed") // 4 closed, 1 being written
	l.Owe(marks[1], -1)
	drop(4, "the second paid")
	l.Owe(marks[2], 2) // two IDs of it not settled yet
	l.Owe(marks[2], -1)
	drop(4, "the third with its record paid, two IDs still owed")
	l.Owe(marks[2], -2)
	drop(3, "the third paid")
	l.Owe(marks[0], -1)
	l.Owe(marks[3], -1)
	drop(1, "everything paid")
	l.Owe(marks[0], -1) // a gone mark owes nothing
	if err := appendRec(t.Context(), l, rec(60, 6)); err != nil {
		t.Fatalf("Append after reclaiming everything = %v, want the current segment kept", err)
	}
}

// A segment older than KeepFor goes however much is owed on it. Stepping
// the clock back lets nothing go.
func TestReclaimAged(t *testing.T) {
	dir := t.TempDir()
	var nowNS atomic.Int64
	nowNS.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNS.Load()) }
	l, _ := running(t, dir, Options{SegmentBytes: 1, KeepFor: 30 * time.Second, NowFunc: clock})
	files := func(want int, why string) {
		t.Helper()
		if _, err := l.drop(false); err != nil {
			t.Fatal(err)
		}
		if got := len(segmentFiles(t, dir)); got != want {
			t.Fatalf("%s: %d segment files, want %d", why, got, want)
		}
	}
	m1 := mustAppend(t, l, rec(1, 1))
	nowNS.Add(int64(-time.Hour)) // the wall clock steps back
	files(2, "after a clock step back")
	nowNS.Add(int64(time.Hour + 20*time.Second))
	m2 := mustAppend(t, l, rec(2, 2))
	l.Owe(m2, -1)
	files(2, "20 s on: the first is owed and not yet aged, the second paid")
	nowNS.Add(int64(11 * time.Second))
	files(1, "31 s on: the aged first one gone")
	l.Owe(m1, -1) // paid on a gone mark: nothing happens
}

// Run's end deletes every segment once nothing is owed, so a clean restart
// replays nothing; with a debt left, everything stays for the next start.
func TestCloseDeletesWhatIsPaid(t *testing.T) {
	dir := t.TempDir()
	l, stop := running(t, dir, Options{})
	m := mustAppend(t, l, rec(1, 1, 2))
	mustAppend(t, l, rec(2, 3))
	l.Owe(m, -1)
	stop()
	if got, _ := replay(t, dir); len(got) != 2 {
		t.Fatalf("replayed %d records with one still owed, want 2", len(got))
	}

	l, stop = running(t, dir, Options{})
	if err := l.Replay(func(r Record) error { l.Owe(r.Mark, -1); return nil }); err != nil {
		t.Fatal(err)
	}
	m = mustAppend(t, l, rec(3, 4))
	l.Owe(m, -1)
	stop()
	if got := segmentFiles(t, dir); len(got) != 0 {
		t.Errorf("segments %v left after a close with nothing owed, want none", got)
	}
}

// withSpare returns a log directory holding one spare, as a clean stop
// leaves it: a segment of 50 settled records.
func withSpare(t *testing.T) string {
	t.Helper()
	if !recycles {
		t.Skip("segments are not recycled on this platform")
	}
	dir := t.TempDir()
	l, stop := running(t, dir, Options{})
	for i := range 50 {
		l.Owe(mustAppend(t, l, rec(int64(i), 100, 200, 300, int64(i))), -1)
	}
	stop()
	return dir
}

// A settled segment is kept as a spare and written again from its start by
// a later segment; what its former life left beyond the new records never
// replays, whether the new records' end mark is there or was lost with a
// torn write, because those records carry the former segment's stamp.
func TestRecycledSegment(t *testing.T) {
	dir := withSpare(t)
	spares, err := filepath.Glob(filepath.Join(dir, "*"+spareSuffix))
	if err != nil || len(spares) != 1 || len(segmentFiles(t, dir)) != 0 {
		t.Fatalf("after a close with nothing owed: spares %v (%v), segments %v; want one spare and no segment", spares, err, segmentFiles(t, dir))
	}

	l, stop := running(t, dir, Options{})
	want := []Record{rec(100, 7)}
	mustAppend(t, l, want[0])
	if got := l.Stats().Recycled; got != 1 {
		t.Errorf("Recycled = %d, want 1", got)
	}
	stop() // owed: it stays, as after a crash
	segs := segmentFiles(t, dir)
	if len(segs) != 1 || filepath.Base(segs[0]) != "0000000000000001.wal" {
		t.Fatalf("segments %v, want the spare written again as the next index, 0000000000000001.wal", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	end := len(encode(nil, want[0]))
	if len(data) <= end+headerLen {
		t.Fatalf("the recycled segment is %d bytes, want its former records after the new one's %d", len(data), end)
	}
	got, st := replay(t, dir)
	if !equal(got, want) || st.Corrupt != 0 || st.TornBytes != 0 {
		t.Errorf("replayed %v (corrupt %d, torn %d bytes), want %v and nothing skipped", got, st.Corrupt, st.TornBytes, want)
	}

	copy(data[end:], "\xff\xff\xff\xff\xff\xff\xff\xff") // the end mark, lost
	if err := os.WriteFile(segs[0], data, 0o640); err != nil {
		t.Fatal(err)
	}
	got, st = replay(t, dir)
	if !equal(got, want) || st.TornBytes == 0 {
		t.Errorf("with the end mark lost: replayed %d records (torn %d bytes), want %v and the rest cut as torn", len(got), st.TornBytes, want)
	}
}

// Inspect reads what a crash would leave, while the log runs: its segments'
// records, not the spares, nor a recycled file's former bytes.
func TestInspect(t *testing.T) {
	dir := withSpare(t)
	l, _ := running(t, dir, Options{})
	r := rec(100, 7)
	mustAppend(t, l, r)
	got, err := Inspect(dir)
	if want := (Contents{Segments: 1, Bytes: int64(len(encode(nil, r))), Oldest: r.Received}); err != nil || got != want {
		t.Errorf("Inspect = %+v, %v; want %+v", got, err, want)
	}
}

// A crash after a spare became the new segment but before its first commit
// leaves a segment with no records: it reads as empty, not as a torn tail
// the size of the file's former records. (Before, the whole file was
// searched byte by byte and cut as torn.)
func TestCrashBeforeFirstCommitOnASpare(t *testing.T) {
	dir := withSpare(t)
	l, err := Open(dir, logtest.Discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.rotateOrDegrade() // what Run does first, and a crash right after
	if got := l.Stats().Recycled; got != 1 {
		t.Fatalf("Recycled = %d, want the spare taken", got)
	}
	l.segments[len(l.segments)-1].file.Close()
	l.lock.Close()
	got, st := replay(t, dir)
	if len(got) != 0 || st.TornBytes != 0 || st.Corrupt != 0 {
		t.Errorf("replayed %d records, cut %d torn bytes, skipped %d; want an empty segment", len(got), st.TornBytes, st.Corrupt)
	}
}

// At most maxSpares settled segments are kept for reuse, and none that
// would take the log past MaxBytes: the rest are deleted.
func TestSparesBounded(t *testing.T) {
	if !recycles {
		t.Skip("segments are not recycled on this platform")
	}
	for _, c := range []struct {
		name     string
		maxBytes int64 // 10 records of 33 bytes, each file 41 with its end mark
		want     int   // spares, at most
	}{{"count", 0, maxSpares}, {"bytes", 400, 1}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			l, stop := running(t, dir, Options{SegmentBytes: 1, MaxBytes: c.maxBytes}) // a segment per commit
			for i := range 10 {
				l.Owe(mustAppend(t, l, rec(int64(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)), -1)
			}
			stop()
			spares, _ := filepath.Glob(filepath.Join(dir, "*"+spareSuffix))
			if len(spares) != c.want || len(segmentFiles(t, dir)) != 0 {
				t.Errorf("%d spares and segments %v after 10 settled segments, want %d spares and no segment", len(spares), segmentFiles(t, dir), c.want)
			}
		})
	}
}

// A segment written before segments were recycled (unstamped records, no
// end mark) still replays, and is deleted once settled, never recycled:
// its records could not be told from a new life's.
func TestLegacySegment(t *testing.T) {
	dir := t.TempDir()
	want := []Record{rec(1, 1, 2), rec(2, 3)}
	old := filepath.Join(dir, "0000000000000005.wal")
	if err := os.WriteFile(old, encode(encode(nil, want[0]), want[1]), 0o640); err != nil {
		t.Fatal(err)
	}
	l, stop := running(t, dir, Options{})
	var got []Record
	if err := l.Replay(func(r Record) error { got = append(got, r); l.Owe(r.Mark, -1); return nil }); err != nil {
		t.Fatal(err)
	}
	if !equal(got, want) {
		t.Errorf("replayed %v, want %v", got, want)
	}
	stop()
	if left, _ := filepath.Glob(filepath.Join(dir, "0000000000000005*")); len(left) != 0 {
		t.Errorf("the settled legacy segment is still there as %v, want it deleted", left)
	}
}

// A sender that leaves while its record is being synced does not undo the
// record: Append waits for the sync and returns the mark, so the caller
// queues what is on disk instead of leaving it to a crash to replay.
// (Before, Append returned ctx's error here and the callback sat in the log
// unprocessed.)
func TestAppendOutlivesItsContext(t *testing.T) {
	gate := &faultFS{entered: make(chan struct{}, 1)}
	l, _ := running(t, t.TempDir(), Options{FS: gate})
	release := make(chan struct{})
	gate.held.Store(&release)
	var once sync.Once
	unblock := func() { once.Do(func() { gate.held.Store(nil); close(release) }) }
	t.Cleanup(unblock) // before the log's stop, which waits for the held sync
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		mark uint64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		mark, err := l.Append(ctx, []int64{7}, time.Unix(1, 0))
		done <- result{mark, err}
	}()
	<-gate.entered // the writer is syncing it
	cancel()
	select {
	case r := <-done:
		t.Fatalf("Append returned %v before its sync ended", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	unblock()
	if r := <-done; r.err != nil || r.mark == 0 {
		t.Errorf("Append = %d, %v after its sender left mid-sync, want its mark and nil", r.mark, r.err)
	}
}

func TestMaxBytes(t *testing.T) {
	l, _ := running(t, t.TempDir(), Options{MaxBytes: 20})
	if err := appendRec(t.Context(), l, rec(1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)); err != nil {
		t.Fatal(err)
	}
	if err := appendRec(t.Context(), l, rec(2, 1)); !errors.Is(err, ErrFull) {
		t.Errorf("Append past MaxBytes = %v, want ErrFull", err)
	}
}

// faultFS fails on demand: writes with ENOSPC, syncs with EIO, opens with
// EACCES. It records which files got writes. While held is set, it also
// holds every sync until the test closes the channel, and says so on
// entered.
type faultFS struct {
	osFS
	failWrite, failSync, failOpen atomic.Int32 // failures left to inject; -1: always
	mu                            sync.Mutex
	written                       map[string]int // guarded by mu: successful writes per file
	held                          atomic.Pointer[chan struct{}]
	entered                       chan struct{}
	opens                         atomic.Int32 // OpenFile calls
}

func take(n *atomic.Int32) bool {
	for {
		v := n.Load()
		if v == 0 {
			return false
		}
		if v < 0 || n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (f *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f.opens.Add(1)
	if take(&f.failOpen) {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EACCES}
	}
	file, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

type faultFile struct {
	File
	fs   *faultFS
	name string
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if take(&f.fs.failWrite) {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	n, err := f.File.WriteAt(p, off)
	if err == nil {
		f.fs.mu.Lock()
		if f.fs.written == nil {
			f.fs.written = map[string]int{}
		}
		f.fs.written[f.name]++
		f.fs.mu.Unlock()
	}
	return n, err
}

func (f *faultFile) Sync() error {
	if ch := f.fs.held.Load(); ch != nil {
		f.fs.entered <- struct{}{}
		<-*ch
	}
	if take(&f.fs.failSync) {
		return &os.PathError{Op: "fdatasync", Path: f.name, Err: syscall.EIO}
	}
	return f.File.Sync()
}

// A failed fsync is never retried on the same file: the batch goes to a new
// segment, and the caller gets success only from there.
func TestFailedSyncMovesToNewSegment(t *testing.T) {
	dir := t.TempDir()
	ffs := &faultFS{}
	l, stop := running(t, dir, Options{FS: ffs})
	if err := appendRec(t.Context(), l, rec(1, 1)); err != nil {
		t.Fatal(err)
	}
	ffs.failSync.Store(1)
	if err := appendRec(t.Context(), l, rec(2, 2)); err != nil {
		t.Fatalf("Append after one failed sync = %v, want it written to a new segment", err)
	}
	if err := appendRec(t.Context(), l, rec(3, 3)); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	stop()
	if st.Failures != 1 || st.Degraded {
		t.Errorf("stats %+v, want one failure and not degraded", st)
	}
	ffs.mu.Lock()
	written := ffs.written
	ffs.mu.Unlock()
	segs := segmentFiles(t, dir)
	if len(segs) != 2 || written[segs[0]] != 2 || written[segs[1]] != 2 {
		t.Errorf("writes per segment %v, want 2 to the first (1, then the batch that failed to sync) and 2 to the second", written)
	}
	got, _ := replay(t, dir)
	// Record 2 was written to the first file too; its sync failed, so it
	// may or may not be there: replay must show 1, 2, 3 in order, with 2
	// possibly twice (the upsert makes that harmless).
	var ids []int64
	for _, r := range got {
		ids = append(ids, r.IDs...)
	}
	if ids = slices.Compact(ids); !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Errorf("replayed ids %v, want 1, 2, 3", ids)
	}
}

// Disk full on every write: the log degrades and says so fast; once the disk
// has room again, Run's retry timer opens a new segment after RetryInterval,
// not before, and Append works. On synctest, so the timer is what is tested.
func TestDiskFullDegradesAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const retry = 5 * time.Second
		ffs := &faultFS{}
		l, _ := running(t, t.TempDir(), Options{FS: ffs, RetryInterval: retry})
		ffs.failWrite.Store(-1)
		if err := appendRec(t.Context(), l, rec(1, 1)); !errors.Is(err, ErrDegraded) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append on a full disk = %v, want ErrDegraded with ENOSPC", err)
		}
		if !l.Degraded() {
			t.Error("Degraded = false on a full disk")
		}
		start := time.Now()
		if err := appendRec(t.Context(), l, rec(2, 2)); !errors.Is(err, ErrDegraded) || time.Since(start) > 0 {
			t.Errorf("Append while degraded = %v after %v, want ErrDegraded at once", err, time.Since(start))
		}
		ffs.failWrite.Store(0)
		time.Sleep(retry - time.Millisecond)
		synctest.Wait()
		if !l.Degraded() {
			t.Errorf("recovered %v after degrading, want not before RetryInterval (%v)", time.Since(start), retry)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if l.Degraded() {
			t.Errorf("still degraded %v after degrading, with the disk writable again", time.Since(start))
		}
		if err := appendRec(t.Context(), l, rec(3, 3)); err != nil {
			t.Errorf("Append after the disk has room = %v, want nil", err)
		}
	})
}

// A directory where no segment can be created: Run starts degraded, and
// Append says so instead of hanging.
func TestUnwritableDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ffs := &faultFS{}
		ffs.failOpen.Store(-1)
		l, _ := running(t, t.TempDir(), Options{FS: ffs, RetryInterval: time.Hour})
		synctest.Wait() // Run has tried its first segment
		if !l.Degraded() {
			t.Fatal("Degraded = false with no segment open")
		}
		if err := appendRec(t.Context(), l, rec(1, 1)); !errors.Is(err, ErrDegraded) || !errors.Is(err, syscall.EACCES) {
			t.Errorf("Append = %v, want ErrDegraded with EACCES", err)
		}
		time.Sleep(59 * time.Minute) // retries only after RetryInterval
		synctest.Wait()
		if got := ffs.opens.Load(); got != 1 {
			t.Errorf("%d segment opens within RetryInterval, want 1", got)
		}
	})
}

// Segments from before Open go only once Replay has read them all and what
// it handed out is paid; this process's segments need not wait for that.
func TestReclaimReplayed(t *testing.T) {
	dir := t.TempDir()
	l, stop := running(t, dir, Options{SegmentAge: time.Nanosecond}) // a segment per commit
	for i := range 3 {
		mustAppend(t, l, rec(int64(i+1), int64(i)))
	}
	stop()
	old := len(segmentFiles(t, dir)) // the replayable ones; counted before Run opens its own

	l, _ = running(t, dir, Options{SegmentAge: time.Nanosecond})
	m := mustAppend(t, l, rec(10, 10))
	l.Owe(m, -1)
	if err := l.reclaim(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentFiles(t, dir)); got != old+1 {
		t.Errorf("files = %d, want %d: the replayable ones kept, this process's paid one gone, the current one kept", got, old+1)
	}
	var marks []uint64
	if err := l.Replay(func(r Record) error { marks = append(marks, r.Mark); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.reclaim(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentFiles(t, dir)); got != old+1 {
		t.Errorf("files = %d after Replay with its records owed, want %d", got, old+1)
	}
	for _, m := range marks {
		l.Owe(m, -1)
	}
	if err := l.reclaim(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentFiles(t, dir)); got != 1 {
		t.Errorf("files = %d after the replay is paid, want only the one being written", got)
	}
}

// A lone sender never waits for company; once group commits have had more
// than one record, a commit waits up to Linger for more, so records that
// arrive apart share one sync.
func TestLinger(t *testing.T) {
	gate := &faultFS{entered: make(chan struct{}, 1)}
	l, _ := running(t, t.TempDir(), Options{FS: gate, Linger: time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// One at a time: each is a batch of one, synced at once (were they
	// made to linger, 20 of them would take 20 s and hit ctx's deadline).
	for i := range 20 {
		if err := appendRec(ctx, l, rec(int64(i), 1)); err != nil {
			t.Fatalf("lone append %d: %v", i, err)
		}
	}
	if s := l.Stats(); s.Syncs != 20 {
		t.Fatalf("20 lone appends took %d syncs, want 20", s.Syncs)
	}

	// Hold a sync so that two records queue behind it and commit together.
	release := make(chan struct{})
	gate.held.Store(&release)
	var wg sync.WaitGroup
	wg.Go(func() { _ = appendRec(ctx, l, rec(100, 1)) })
	<-gate.entered // the writer is syncing it
	for range 2 {
		wg.Go(func() { _ = appendRec(ctx, l, rec(101, 2)) })
	}
	for len(l.requests) < 2 {
		time.Sleep(time.Millisecond)
	}
	gate.held.Store(nil)
	close(release)
	wg.Wait()
	before := l.Stats().Syncs

	// Now two records 20 ms apart share one sync.
	errs := make(chan error, 2)
	go func() { errs <- appendRec(ctx, l, rec(200, 3)) }()
	time.Sleep(20 * time.Millisecond)
	go func() { errs <- appendRec(ctx, l, rec(201, 4)) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Stats().Syncs - before; got != 1 {
		t.Errorf("two appends 20 ms apart under load took %d syncs, want 1 (Linger 1 s)", got)
	}
}

// TestStatsLineSyncMax: the stats line's sync_max is the longest sync of its
// own interval, so a slow sync drops out of the next line. The clock moves
// by step on every reading, so a sync takes about step.
func TestStatsLineSyncMax(t *testing.T) {
	var step, clock atomic.Int64
	now := func() time.Time { return time.Unix(0, clock.Add(step.Load())) }
	log, buf := logtest.Text()
	l, err := Open(t.TempDir(), log, Options{NowFunc: now, StatsInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	// lines returns the sync_max of each stats line so far, once there are n.
	lines := func(n int) []string {
		t.Helper()
		re := regexp.MustCompile(`msg="intake log stats".* sync_max=(\S+)`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var got []string
			for _, m := range re.FindAllStringSubmatch(buf.String(), -1) {
				got = append(got, m[1])
			}
			if len(got) >= n || time.Now().After(deadline) {
				return got
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	step.Store(int64(time.Second))
	if err := appendRec(t.Context(), l, rec(1, 1)); err != nil {
		t.Fatal(err)
	}
	if got := lines(1); len(got) != 1 || got[0] == "0s" {
		t.Fatalf("after a slow sync, stats lines' sync_max = %q, want one non-zero", got)
	}
	slow := lines(1)[0]
	step.Store(int64(time.Millisecond))
	if err := appendRec(t.Context(), l, rec(2, 2)); err != nil {
		t.Fatal(err)
	}
	got := lines(2)
	if len(got) != 2 {
		t.Fatalf("stats lines' sync_max = %q, want two lines", got)
	}
	if d, err := time.ParseDuration(got[1]); err != nil || d >= time.Second {
		t.Errorf("second line's sync_max = %s (first %s), want the second sync's own, under 1s", got[1], slow)
	}
}

// encode sizes its record exactly, so a record costs one allocation.
func TestEncodeGrowsOnce(t *testing.T) {
	for _, ids := range [][]int64{nil, {0}, {1, -1, 63, -64, 64, 8191, -8192, 8192}, {-1 << 63, 1<<63 - 1}} {
		r := Record{Received: time.Unix(1, 2), IDs: ids}
		if n := testing.AllocsPerRun(10, func() { encode(nil, r) }); n != 1 && !raceEnabled {
			t.Errorf("encode(%v): %v allocations, want 1", ids, n)
		}
		got := encode(nil, r)
		if rec, n, _, ok := decodeAt(got, 0, 0); !ok || n != len(got) || !slices.Equal(rec.IDs, ids) {
			t.Errorf("encode(%v) decodes to %v (%d of %d bytes, ok %v)", ids, rec.IDs, n, len(got), ok)
		}
	}
}
