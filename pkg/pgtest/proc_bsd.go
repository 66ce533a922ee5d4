//go:build unix && !linux

package pgtest

import "syscall"

// childAttr starts a program as u in a process group of its own. Without
// Linux's Pdeathsig, a program whose test binary was killed keeps running.
func childAttr(u *osUser, _ syscall.Signal) *syscall.SysProcAttr {
	a := runAs(u)
	a.Setpgid = true
	return a
}
