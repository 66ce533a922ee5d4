//go:build unix

package wal

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"callback/pkg/logtest"
)

// Something named like a segment that is not a regular file refuses the
// start with an error naming it, and is never followed: a symbolic link's
// target is neither read nor cut, and a FIFO does not block Open. (Before, a
// link to another file had its target truncated at start, and a FIFO named
// *.wal blocked the start for good.)
func TestOpenRefusesWhatIsNoSegment(t *testing.T) {
	t.Run("symlink", func(t *testing.T) {
		dir, outside := t.TempDir(), filepath.Join(t.TempDir(), "precious")
		const content = "not a log, and longer than any record header"
		if err := os.WriteFile(outside, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, "0000000000000001.wal")); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, logtest.Discard(), Options{})
		if err == nil {
			l.Close()
			t.Fatal("Open with a symlink for a segment = nil, want an error")
		}
		if !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open = %v, want it to say the segment is not a regular file", err)
		}
		if b, _ := os.ReadFile(outside); string(b) != content {
			t.Errorf("the link's target now holds %q, want it untouched", b)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		dir := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(dir, "0000000000000001.wal"), 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			l, err := Open(dir, logtest.Discard(), Options{})
			if err == nil {
				l.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("Open = %v, want it to say the segment is not a regular file", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Open blocked on a FIFO")
		}
	})
}

// The file layer itself refuses to follow a link, whatever lists it.
func TestOSFSDoesNotFollowLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.wal")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := (osFS{}).ReadFile(link); err == nil {
		t.Error("ReadFile through a link = nil, want an error")
	}
	if err := (osFS{}).Truncate(link, 0); err == nil {
		t.Error("Truncate through a link = nil, want an error")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("target holds %q, want it untouched", b)
	}
}
