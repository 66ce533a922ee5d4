//go:build unix

package objects

import (
	"crypto/tls"
	"net"
	"syscall"
)

// watch prepares cn.readable for the socket beneath nc.
func (cn *conn) watch(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	cn.raw = raw
	cn.peek = func(fd uintptr) bool {
		_, _, cn.peekErr = syscall.Recvfrom(int(fd), cn.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness
	}
}
