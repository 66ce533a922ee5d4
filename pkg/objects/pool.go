package objects

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
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
	auth    string      // the Authorization header's value from the URL's user:password, or ""
	tls     *tls.Config // nil for plain http
	dialer  net.Dialer
	maxIdle int

	mu     sync.Mutex
	idle   []*conn // guarded by mu; the most recently used last, so old ones age out
	closed bool    // guarded by mu; put closes what it is given
}

// conn is one pooled connection. Only the goroutine that took it from the
// pool uses it.
type conn struct {
	nc        net.Conn
	br        *bufio.Reader // reads through counter
	req       []byte        // the last request written, kept for its capacity
	counter   *countingReader
	idleSince time.Time

	// For readable: the socket beneath nc (nil if it has none), and the peek
	// that runs on it with where its result goes, made once per connection
	// so that checking an idle connection allocates nothing.
	raw     syscall.RawConn
	peek    func(fd uintptr) bool
	peekErr error
	peekBuf [1]byte
}

// countingReader counts the bytes of the current answer, so a failure can
// tell a connection that was already gone (nothing came back) from an
// answer cut short, and refuses to read past limit (0: none) while the
// status line and headers are read.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	if c.limit > 0 {
		if c.n >= c.limit {
			return 0, errHeaderTooLong
		}
		b = b[:min(int64(len(b)), c.limit-c.n)]
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// maxHeader caps the status line and headers of an answer, interim (1xx)
// answers included; a real one is ~100 bytes. net/http's own default is
// 1 MB, and http.ReadResponse has none: a header that never ends would be
// read into memory until the request's timeout.
const maxHeader = 8 << 10

// max1xx is how many interim answers may come before the final one, as
// net/http's transport allows.
const max1xx = 5

var errHeaderTooLong = fmt.Errorf("objects: answer header over %d bytes", maxHeader)

// answer is what a request got: the status, the Retry-After and Location
// headers and up to maxBody bytes of the body.
type answer struct {
	status     int
	retryAfter string
	location   string
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
	// http://user:password@host sends Basic auth, as net/http's client does.
	if u.User != nil {
		pass, _ := u.User.Password()
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
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
// whether cn may carry another request: the answer was read to its end, the
// server did not ask to close, and nothing came after it. Bytes after an
// answer are an answer to no request (or the sign of a framing we read
// differently from the server): on a pooled connection they would be read
// as the next request's answer, so the connection is closed, as net/http's
// transport closes one it finds readable while idle.
func (p *pool) roundTrip(ctx context.Context, cn *conn, deadline time.Time, prefix string, id int64) (ans answer, keep bool, err error) {
	ans, keep, err = p.exchange(ctx, cn, deadline, prefix, id)
	return ans, keep && cn.br.Buffered() == 0, err
}

func (p *pool) exchange(ctx context.Context, cn *conn, deadline time.Time, prefix string, id int64) (ans answer, keep bool, err error) {
	cn.counter.n, cn.counter.limit = 0, maxHeader
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
	if p.auth != "" {
		req = append(req, "\r\nAuthorization: "...)
		req = append(req, p.auth...)
	}
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
	resp, err := readFinal(cn.br)
	if err != nil && cn.counter.n >= maxHeader {
		err = errHeaderTooLong // whatever the parser made of the cut
	}
	if err != nil {
		return answer{}, false, err
	}
	cn.counter.limit = 0 // the body has its own bound
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return answer{}, false, fmt.Errorf("read body: %w", err)
	}
	complete := len(body) <= maxBody
	if complete {
		_ = resp.Body.Close() // read to its end already: nothing left to drain
	}
	ans = answer{
		status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), location: resp.Header.Get("Location"),
		body: body[:min(len(body), maxBody)],
	}
	return ans, complete && !resp.Close, nil
}

// readFinal reads answers until a final one, skipping interim 1xx answers
// (103 Early Hints, an unasked-for 100 Continue) as RFC 9110 §15.2 asks of
// a client; a 101 switches protocols, which a GET never asks for.
func readFinal(br *bufio.Reader) (*http.Response, error) {
	for range max1xx + 1 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("objects: upstream switched protocols (101)")
		case resp.StatusCode >= 200:
			return resp, nil
		}
	}
	return nil, fmt.Errorf("objects: more than %d interim (1xx) answers", max1xx)
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
	cn := &conn{nc: nc, br: bufio.NewReaderSize(cr, 512), counter: cr}
	cn.watch(nc)
	return cn, nil
}

// take returns an idle connection, or nil if there is none young enough
// and quiet.
func (p *pool) take() *conn {
	for {
		p.mu.Lock()
		if len(p.idle) == 0 {
			p.mu.Unlock()
			return nil
		}
		cn := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		// Too old, the server may close it under us; readable while idle,
		// the server closed it or sent an answer no request asked for.
		if time.Since(cn.idleSince) < idleTimeout && !cn.readable() {
			return cn
		}
		_ = cn.nc.Close()
	}
}

// readable reports whether an idle connection has something to read (an
// unsolicited answer, or the server's FIN) or is broken, without blocking
// and without consuming anything: a peek at the socket, one system call.
// For TLS it peeks at the TCP connection beneath, where any byte while idle
// is as unasked-for.
func (cn *conn) readable() bool {
	if cn.raw == nil {
		return false
	}
	if err := cn.raw.Read(cn.peek); err != nil {
		return true
	}
	// A byte, the server's EOF (no error, nothing read), or an error.
	return !errors.Is(cn.peekErr, syscall.EAGAIN)
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
	if len(p.idle) < p.maxIdle && !p.closed {
		p.idle = append(p.idle, cn)
	} else {
		drop = append(drop, cn)
	}
	p.mu.Unlock()
	for _, d := range drop {
		_ = d.nc.Close()
	}
}

// close closes the idle connections, and from then on every connection put
// back.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, cn := range idle {
		_ = cn.nc.Close()
	}
}
