package objects

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// pool holds the keep-alive connections to one upstream and sends GET
// requests over them from the calling goroutine (see Client for why).
type pool struct {
	addr    string      // host:port to dial
	host    string      // the Host header
	tls     *tls.Config // nil for plain http
	dialer  net.Dialer
	maxIdle int

	mu   sync.Mutex
	idle []*conn // guarded by mu; the most recently used last, so old ones age out
}

// conn is one pooled connection. Only the goroutine that took it from the
// pool uses it.
type conn struct {
	nc        net.Conn
	br        *bufio.Reader // reads through counter
	req       []byte        // the last request written, kept for its capacity
	counter   *countingReader
	idleSince time.Time
}

// countingReader counts the bytes of the current answer, so a failure can
// tell a connection that was already gone (nothing came back) from an
// answer cut short.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// answer is what a request got: the status, the Retry-After header and up
// to maxBody bytes of the body.
type answer struct {
	status     int
	retryAfter string
	body       []byte
}

// idleTimeout drops connections idle for longer, before the server is likely
// to: Go's servers default to closing them after their read timeout or, if
// set, their idle timeout, often a minute or two.
const idleTimeout = 50 * time.Second

func newPool(u *url.URL, maxIdle int) *pool {
	p := &pool{
		addr: u.Host, host: u.Host, maxIdle: maxIdle,
		// A refused or unreachable upstream shows fast; the request's own
		// deadline bounds the rest.
		dialer: net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second},
	}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		p.addr = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Scheme == "https" {
		p.tls = &tls.Config{ServerName: u.Hostname()}
	}
	return p
}

// get sends GET prefix+id and returns the answer, giving up at deadline or
// when ctx is done. A pooled connection may have been closed by the server
// while it sat idle; a request that fails on one before any of the answer
// came back is sent again on another (GET is idempotent), as net/http's
// transport does.
//
// The deadline is passed in rather than set on ctx: context.WithTimeout per
// request costs a timer, a goroutine-safe child registration and their
// garbage, thousands of times a second; the connection's own deadline does
// the same job.
func (p *pool) get(ctx context.Context, deadline time.Time, prefix string, id int64) (answer, error) {
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for {
		cn := p.take()
		reused := cn != nil
		if !reused {
			var err error
			if cn, err = p.dial(ctx, deadline); err != nil {
				return answer{}, p.ctxErr(ctx, err)
			}
		}
		ans, keep, err := p.roundTrip(ctx, cn, deadline, prefix, id)
		if keep {
			p.put(cn)
		} else {
			_ = cn.nc.Close() // nothing to report: the connection is done either way
		}
		if err != nil && reused && ctx.Err() == nil && cn.counter.n == 0 && stale(err) {
			continue
		}
		if err != nil {
			return answer{}, p.ctxErr(ctx, err)
		}
		return ans, nil
	}
}

// ctxErr reports a done ctx as itself (a cancellation, or ctx's deadline),
// with what failed; other errors, our own timeout among them (which answers
// Timeout() true), stay as they are. When the connection's deadline was
// ctx's, ctx is done or about to be: wait the moment for it.
func (p *pool) ctxErr(ctx context.Context, err error) error {
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// stale reports whether err, on a connection that returned no byte of the
// answer, says the connection was gone: the server closed it while idle.
func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// roundTrip writes one request on cn and reads its answer. keep reports
// whether cn may carry another request: the answer was read to its end and
// the server did not ask to close.
func (p *pool) roundTrip(ctx context.Context, cn *conn, deadline time.Time, prefix string, id int64) (ans answer, keep bool, err error) {
	cn.counter.n = 0
	if err := cn.nc.SetDeadline(deadline); err != nil {
		return answer{}, false, err
	}
	// Cancelling ctx wakes a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := append(cn.req[:0], "GET "...)
	req = append(req, prefix...)
	req = strconv.AppendInt(req, id, 10)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, p.host...)
	req = append(req, "\r\nAccept: application/json\r\nUser-Agent: callback\r\n\r\n"...)
	cn.req = req
	if _, err := cn.nc.Write(req); err != nil {
		return answer{}, false, err
	}
	if _, err := cn.br.Peek(1); err == nil { // wait for the answer to begin
		if ans, keep, ok := quickAnswer(cn.br); ok {
			return ans, keep, nil
		}
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		return answer{}, false, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return answer{}, false, fmt.Errorf("read body: %w", err)
	}
	complete := len(body) <= maxBody
	if complete {
		_ = resp.Body.Close() // read to its end already: nothing left to drain
	}
	ans = answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: body[:min(len(body), maxBody)]}
	return ans, complete && !resp.Close, nil
}

// dial opens a new connection, giving up at deadline at the latest.
func (p *pool) dial(ctx context.Context, deadline time.Time) (*conn, error) {
	var (
		nc  net.Conn
		err error
	)
	d := p.dialer
	d.Deadline = deadline
	if p.tls != nil {
		nc, err = (&tls.Dialer{NetDialer: &d, Config: p.tls}).DialContext(ctx, "tcp", p.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", p.addr)
	}
	if err != nil {
		return nil, err
	}
	// An answer is ~100 bytes with its headers: a small buffer keeps the
	// memory of thousands of connections small.
	cr := &countingReader{r: nc}
	return &conn{nc: nc, br: bufio.NewReaderSize(cr, 512), counter: cr}, nil
}

// take returns an idle connection, or nil if there is none young enough.
func (p *pool) take() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		cn := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(cn.idleSince) < idleTimeout {
			return cn
		}
		_ = cn.nc.Close() // too old: the server may close it under us
	}
	return nil
}

// put returns cn to the pool, or closes it if the pool is full. It also
// closes the oldest idle connection if that has aged out, so connections
// that take never reaches (it takes the newest) do not linger.
func (p *pool) put(cn *conn) {
	now := time.Now()
	cn.idleSince = now
	var drop []*conn
	p.mu.Lock()
	if len(p.idle) > 0 && now.Sub(p.idle[0].idleSince) >= idleTimeout {
		drop = append(drop, p.idle[0])
		p.idle = p.idle[1:]
	}
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, cn)
	} else {
		drop = append(drop, cn)
	}
	p.mu.Unlock()
	for _, d := range drop {
		_ = d.nc.Close()
	}
}
