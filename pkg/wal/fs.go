package wal

import (
	"errors"
	"fmt"
	"io"
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
	// Rename makes a reclaimed segment a spare, and a spare a segment.
	Rename(from, to string) error
	// SyncDir makes the directory's entries (a new segment's name) durable.
	SyncDir(dir string) error
}

// File is an open segment.
type File interface {
	// WriteAt writes at an offset: a commit overwrites the end mark of the
	// one before it, and a recycled segment's former bytes.
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes what was written durable (fdatasync where the OS has it).
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) ReadDir(dir string) ([]fs.DirEntry, error)   { return os.ReadDir(dir) }
func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) Rename(from, to string) error                { return os.Rename(from, to) }

// ReadFile and Truncate open a segment without following a symbolic link
// and refuse anything but a regular file: a link named like a segment would
// have its target read and cut, and a FIFO would block the start for good.
// O_NONBLOCK lets the open of a FIFO return, to be refused.
func (osFS) ReadFile(name string) ([]byte, error) {
	f, err := openRegular(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func (osFS) Truncate(name string, size int64) error {
	f, err := openRegular(name, os.O_WRONLY)
	if err != nil {
		return err
	}
	return errors.Join(f.Truncate(size), f.Close())
}

func openRegular(name string, flag int) (*os.File, error) {
	f, err := os.OpenFile(name, flag|noFollow, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%v)", name, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return dataSyncFile{f}, nil
}

func (osFS) SyncDir(dir string) error { return syncDir(dir) }
