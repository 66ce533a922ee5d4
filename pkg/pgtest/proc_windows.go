package pgtest

import "syscall"

// osUser is nothing on Windows: PostgreSQL runs as this user there.
type osUser struct{}

func serverUser() (*osUser, error)                           { return nil, nil }
func runAs(*osUser) *syscall.SysProcAttr                     { return nil }
func chownTo(string, *osUser) error                          { return nil }
func childAttr(*osUser, syscall.Signal) *syscall.SysProcAttr { return nil }
