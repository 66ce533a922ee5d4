//go:build unix && !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package wal

import "os"

// lockDir only opens dir/LOCK: this system has no flock in package syscall,
// so nothing keeps two processes off one directory. Give each its own.
func lockDir(dir string) (*os.File, error) { return openLock(dir) }
