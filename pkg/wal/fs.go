package wal

import (
	"io/fs"
	"os"
)

// FS is what the log needs of the file system. The operating system's is the
// default; tests wrap it to fail on demand (ENOSPC, EIO on sync), which a
// real disk cannot do when asked.
type FS interface {
	MkdirAll(dir string, perm fs.FileMode) error
	ReadDir(dir string) ([]fs.DirEntry, error)
	ReadFile(name string) ([]byte, error)
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Truncate(name string, size int64) error
	Remove(name string) error
	// SyncDir makes the directory's entries (a new segment's name) durable.
	SyncDir(dir string) error
}

// File is an open segment.
type File interface {
	Write(p []byte) (int, error)
	// Sync makes what was written durable (fdatasync where the OS has it).
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) ReadDir(dir string) ([]fs.DirEntry, error)   { return os.ReadDir(dir) }
func (osFS) ReadFile(name string) ([]byte, error)        { return os.ReadFile(name) }
func (osFS) Truncate(name string, size int64) error      { return os.Truncate(name, size) }
func (osFS) Remove(name string) error                    { return os.Remove(name) }

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return dataSyncFile{f}, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
