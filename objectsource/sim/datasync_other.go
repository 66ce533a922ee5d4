//go:build !linux

package sim

import "os"

// dataSync is the system's full file sync where there is no fdatasync, as
// the service's log syncs there.
func dataSync(f *os.File) error { return f.Sync() }
