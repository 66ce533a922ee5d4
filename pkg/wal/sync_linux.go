package wal

import (
	"os"
	"syscall"
)

// dataSyncFile syncs with fdatasync: the segment's data, and its size, but
// not its timestamps, which replay does not need.
type dataSyncFile struct{ *os.File }

func (f dataSyncFile) Sync() error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
