package sim

import (
	"os"
	"syscall"
)

// dataSync is fdatasync, as the service's log syncs.
func dataSync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
