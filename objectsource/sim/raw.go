package sim

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// RawUpstream answers each GET /objects/{id} by writing, on the raw
// connection, whatever Respond writes: what a broken or hostile upstream (or
// a proxy in front of one) sends and net/http's server never would, such as
// an answer no request asked for, interim answers, or a header that never
// ends. Respond returns false to close the connection; a request for
// anything else closes it too. Requests are read with net/http's parser.
type RawUpstream struct {
	Respond func(w io.Writer, id int64) bool

	conns atomic.Int64
}

// Serve accepts connections on ln until ln is closed, closes every one it
// serves when ctx ends, and returns once they are all done.
func (u *RawUpstream) Serve(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u.conns.Add(1)
		wg.Go(func() { u.serve(ctx, c) })
	}
}

func (u *RawUpstream) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		id, err := strconv.ParseInt(strings.TrimPrefix(req.URL.Path, "/objects/"), 10, 64)
		if err != nil || !u.Respond(c, id) {
			return
		}
	}
}

// Connections returns how many connections it has accepted.
func (u *RawUpstream) Connections() int { return int(u.conns.Load()) }
