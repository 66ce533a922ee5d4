//go:build linux

package wal

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkSync is one group commit's write and fdatasync of 4 KiB, on a
// segment that grows with each write (as the log's are), on one whose
// space fallocate reserved first, and on one written with zeros and synced
// first: what preallocating segments would save per sync on this disk. The
// log does not preallocate; it recycles segments, and "zeroed" stands for
// one (a file whose blocks were all written before).
func BenchmarkSync(b *testing.B) {
	const segment = 64 << 20
	buf := make([]byte, 4<<10)
	for _, mode := range []string{"append", "fallocate", "zeroed"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(b.TempDir(), "seg"), os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			switch mode {
			case "fallocate":
				if err := syscall.Fallocate(int(f.Fd()), 0, 0, segment); err != nil {
					b.Skipf("fallocate: %v", err)
				}
			case "zeroed":
				zeros := make([]byte, 1<<20)
				for range segment / len(zeros) {
					if _, err := f.Write(zeros); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			var off int64
			for b.Loop() {
				if off+int64(len(buf)) > segment {
					off = 0
				}
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				off += int64(len(buf))
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
