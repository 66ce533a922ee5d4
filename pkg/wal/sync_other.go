//go:build !linux

package wal

import "os"

// dataSyncFile syncs with the system's full file sync, where there is no
// fdatasync: F_FULLFSYNC on macOS, FlushFileBuffers on Windows.
type dataSyncFile struct{ *os.File }
