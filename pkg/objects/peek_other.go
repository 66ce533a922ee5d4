//go:build !unix

package objects

import "net"

// watch leaves cn.readable always false: without a non-blocking peek at the
// socket, a connection the server closed while idle is found out by the next
// request on it, which get then sends again on another.
func (cn *conn) watch(net.Conn) {}
