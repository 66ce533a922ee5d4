package pgtest

import "syscall"

// childAttr starts a program as u in a process group of its own, and has the
// kernel send it death when the thread that started it exits.
func childAttr(u *osUser, death syscall.Signal) *syscall.SysProcAttr {
	a := runAs(u)
	a.Setpgid = true
	a.Pdeathsig = death
	return a
}
