// Package objects is the client of the upstream object service, which answers
// GET /objects/{id} with {"id":N,"online":B} after 0.3 to 4.3 s. It makes one
// request per call and reports what went wrong as an error the caller can
// classify; it does not retry, because the retry policy (how long an ID is
// still worth looking up) belongs to the pipeline that knows receipt times.
package objects

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Object is the upstream's answer for one ID.
type Object struct {
	ID     int64 `json:"id"`
	Online bool  `json:"online"`
}

// StatusError is a non-200 answer. Callers that retry ask it Permanent and
// RetryAfter rather than reading Code.
type StatusError struct {
	Code       int
	retryAfter time.Duration // from the Retry-After header, or 0
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream status %d", e.Code)
}

// Permanent reports whether the same request will never succeed: a 4xx says
// the ID itself is wrong, except 408 (request timeout) and 429 (rate
// limited), which pass, as do 5xx.
func (e *StatusError) Permanent() bool {
	return e.Code < 500 && e.Code != http.StatusTooManyRequests && e.Code != http.StatusRequestTimeout
}

// Overloaded reports whether the answer says the upstream is over its
// capacity: 429 (too many requests) or 503 (unavailable). The caller's
// concurrency limit backs off on it.
func (e *StatusError) Overloaded() bool {
	return e.Code == http.StatusTooManyRequests || e.Code == http.StatusServiceUnavailable
}

// RetryAfter is the delay the upstream asked for with Retry-After, or 0.
func (e *StatusError) RetryAfter() time.Duration { return e.retryAfter }

// Errors for well-formed JSON that is not a valid answer.
var (
	// ErrMismatch means the upstream answered for another ID than the one asked.
	ErrMismatch = errors.New("objects: answer for another id")
	// ErrIncomplete means the answer lacks "id" or "online".
	ErrIncomplete = errors.New("objects: answer lacks id or online")
)

// maxBody caps how much of an answer is read; a real one is ~30 bytes.
const maxBody = 64 << 10

// Client fetches objects from the upstream. It is safe for concurrent use.
type Client struct {
	base    string
	hc      *http.Client
	timeout time.Duration
}

// New returns a client for the service at baseURL (e.g. http://localhost:9010).
// conns is the most requests that will be in flight at once (the caller's
// concurrency ceiling): HTTP/1.1 needs a connection per request in flight,
// so the transport may open and keep that many, because Go's default of two
// idle per host would close and reopen sockets for nearly every lookup.
// timeout bounds one request, headers and body included.
func New(baseURL string, conns int, timeout time.Duration) *Client {
	tr := &http.Transport{
		Proxy: nil, // the upstream is a sibling service; never route it through a proxy
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second, // a refused or unreachable upstream shows fast
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxConnsPerHost:     conns,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		// The upstream sleeps before it answers, so headers may take the whole
		// request timeout; the client's Timeout bounds the rest.
		ResponseHeaderTimeout: timeout,
		// An answer is ~100 bytes with its headers and a request less: the
		// default 4 KiB buffers per connection would be most of the memory
		// a lookup in flight costs, at thousands of connections.
		ReadBufferSize:  1 << 10,
		WriteBufferSize: 1 << 10,
	}
	return &Client{
		base:    strings.TrimRight(baseURL, "/"),
		hc:      &http.Client{Transport: tr, Timeout: timeout},
		timeout: timeout,
	}
}

// Fetch looks up one object. Errors are *StatusError for a non-200 answer,
// ErrMismatch for an answer about another ID, or a transport, timeout or
// decoding error; all are wrapped with the ID.
func (c *Client) Fetch(ctx context.Context, id int64) (Object, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := c.base + "/objects/" + strconv.FormatInt(id, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Object{}, fmt.Errorf("fetch object %d: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return Object{}, fmt.Errorf("fetch object %d: %w", id, err)
	}
	defer func() {
		// Drain what is left so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		_ = resp.Body.Close()
	}()

	if resp.StatusCode != http.StatusOK {
		return Object{}, fmt.Errorf("fetch object %d: %w", id, &StatusError{
			Code:       resp.StatusCode,
			retryAfter: retryAfter(resp.Header.Get("Retry-After")),
		})
	}
	// Pointers tell a missing field from a zero one: {"id":4} must not read
	// as "offline", and a missing id must not read as object 0.
	var body struct {
		ID     *int64 `json:"id"`
		Online *bool  `json:"online"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&body); err != nil {
		return Object{}, fmt.Errorf("fetch object %d: decode: %w", id, err)
	}
	if body.ID == nil || body.Online == nil {
		return Object{}, fmt.Errorf("fetch object %d: decode: %w", id, ErrIncomplete)
	}
	if *body.ID != id {
		return Object{}, fmt.Errorf("fetch object %d: got id %d: %w", id, *body.ID, ErrMismatch)
	}
	return Object{ID: id, Online: *body.Online}, nil
}

// Online reports whether object id is online: Fetch for callers that need
// only that, such as the ingest pipeline.
func (c *Client) Online(ctx context.Context, id int64) (bool, error) {
	obj, err := c.Fetch(ctx, id)
	return obj.Online, err
}

// retryAfter parses the delay-seconds form of Retry-After; an HTTP date or
// garbage yields 0, and the caller's own backoff applies.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
