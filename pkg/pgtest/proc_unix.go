//go:build unix

package pgtest

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// osUser is an OS user to run a program as.
type osUser = syscall.Credential

// serverUser returns the OS user to run initdb and postgres as (nil: this one). Both refuse
// to run as root, so as root we switch to the "postgres" user that the distribution packages
// create. Switching in the child via SysProcAttr rather than through runuser keeps the
// postmaster our direct child: runuser would sit in between, turn any signal it gets into
// SIGTERM followed by SIGKILL two seconds later, and hide the postmaster from Pdeathsig.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so postgres must run as OS user postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of user postgres: %w", err)
	}
	// An empty Groups drops root's supplementary groups.
	return &osUser{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// runAs starts a program as u.
func runAs(u *osUser) *syscall.SysProcAttr { return &syscall.SysProcAttr{Credential: u} }

// chownTo gives dir to u, if u is another user.
func chownTo(dir string, u *osUser) error {
	if u == nil {
		return nil
	}
	return os.Chown(dir, int(u.Uid), int(u.Gid))
}
