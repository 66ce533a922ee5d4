package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// errorSharingViolation is Windows' ERROR_SHARING_VIOLATION, which package
// syscall does not export.
const errorSharingViolation syscall.Errno = 32

// lockDir opens dir/LOCK with no sharing, so that no other process can open
// it until this handle closes, as the closest Windows has to an flock with no
// dependency: the system closes the handle when the process dies.
func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, "LOCK")
	p, err := syscall.UTF16PtrFromString(name)
	if err != nil {
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ|syscall.GENERIC_WRITE, 0, nil,
		syscall.OPEN_ALWAYS, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		if errors.Is(err, errorSharingViolation) {
			return nil, errInUse(dir)
		}
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	return os.NewFile(uintptr(h), name), nil
}
