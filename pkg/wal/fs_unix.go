//go:build unix

package wal

import (
	"os"
	"syscall"
)

// noFollow makes openRegular refuse a symbolic link and not block on a FIFO.
const noFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// syncDir makes dir's entries durable: a new segment's name survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// recycles: a rename is made durable by syncing the directory, so a spare's
// new name, under which records are then acknowledged, outlives a crash.
const recycles = true
