//go:build unix && !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package wal

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir only opens dir/LOCK: this system has no flock in package syscall,
// so nothing keeps two processes off one directory. Give each its own.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	return f, nil
}
