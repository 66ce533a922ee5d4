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

// get sends GET path and returns the answer. A pooled connection may have
// been closed by the server while it sat idle; a request that fails on one
// before any of the answer came back is sent again on another (GET is
// idempotent), as net/http's transport does.
func (p *pool) get(ctx context.Context, path string) (answer, error) {
	for {
		cn := p.take()
		reused := cn != nil
		if !reused {
			var err error
			if cn, err = p.dial(ctx); err != nil {
				return answer{}, p.ctxErr(ctx, err)
			}
		}
		ans, keep, err := p.roundTrip(ctx, cn, path)
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

// ctxErr reports a done ctx as itself (a cancellation, or the request's
// deadline, which answers Timeout() true), with what failed; other errors
// stay as they are. The connection's deadline is ctx's, so when it fires,
// ctx is done or about to be: wait the moment for it.
func (p *pool) ctxErr(ctx context.Context, err error) error {
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
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
func (p *pool) roundTrip(ctx context.Context, cn *conn, path string) (ans answer, keep bool, err error) {
	cn.counter.n = 0
	dl, _ := ctx.Deadline() // the zero time, if none, clears an earlier deadline
	if err := cn.nc.SetDeadline(dl); err != nil {
		return answer{}, false, err
	}
	// Cancelling ctx wakes a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := make([]byte, 0, 96+len(path)+len(p.host))
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, p.host...)
	req = append(req, "\r\nAccept: application/json\r\nUser-Agent: callback\r\n\r\n"...)
	if _, err := cn.nc.Write(req); err != nil {
		return answer{}, false, err
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

// dial opens a new connection.
func (p *pool) dial(ctx context.Context) (*conn, error) {
	var (
		nc  net.Conn
		err error
	)
	if p.tls != nil {
		nc, err = (&tls.Dialer{NetDialer: &p.dialer, Config: p.tls}).DialContext(ctx, "tcp", p.addr)
	} else {
		nc, err = p.dialer.DialContext(ctx, "tcp", p.addr)
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
