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
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
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
	Location   string        // where a 3xx points, or ""
	retryAfter time.Duration // from the Retry-After header, or 0
}

func (e *StatusError) Error() string {
	if e.redirect() {
		return fmt.Sprintf("upstream status %d, redirect to %q not followed", e.Code, e.Location)
	}
	return fmt.Sprintf("upstream status %d", e.Code)
}

// Permanent reports whether the same request will never succeed: a 4xx says
// the ID itself is wrong, and so does a 2xx other than 200, which has no
// answer to give; 408 (request timeout), 429 (rate limited) and 5xx pass.
// So does a 3xx: a redirect says the upstream has moved, not that the ID is
// wrong, so it is retried (and logged, see Client) until -src names the new
// place, rather than lose every ID.
func (e *StatusError) Permanent() bool {
	return !e.redirect() && e.Code < 500 && e.Code != http.StatusTooManyRequests && e.Code != http.StatusRequestTimeout
}

// Overloaded reports whether the answer says the upstream is over its
// capacity: 429 (too many requests) or 503 (unavailable). The caller's
// concurrency limit backs off on it.
func (e *StatusError) Overloaded() bool {
	return e.Code == http.StatusTooManyRequests || e.Code == http.StatusServiceUnavailable
}

// redirect reports whether the answer is a 3xx.
func (e *StatusError) redirect() bool { return e.Code >= 300 && e.Code < 400 }

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
//
// It speaks HTTP/1.1 over keep-alive connections it pools itself (pool.go)
// rather than through http.Transport, because of what a lookup in flight
// costs at the concurrency ceiling (12,000 by default): the transport runs
// two goroutines per connection beside the caller's and hands every request
// and answer between them over channels, and at that ceiling the garbage
// collector's scans of three goroutines per lookup delayed the callback
// handler by up to a second (BENCHMARKS.md, "Memory"). Here the calling goroutine writes the request and reads the
// answer itself: a plainly framed one with quickAnswer, anything else with
// net/http's own http.ReadResponse (chunked bodies, odd headers), so the
// general parser still decides every case the short path is not sure of.
//
// A redirect (3xx) is not followed: -src names the service to ask, and
// following would send every lookup twice, to a host the operator never
// named. It is an error the caller retries, and the client logs it at most
// every redirectLogEvery, with its Location, for the operator to fix -src.
type Client struct {
	pool    *pool
	path    string // the base URL's path, then /objects/
	timeout time.Duration
	log     *slog.Logger

	lastRedirectLog atomic.Int64 // Unix ns of the last redirect logged
}

// redirectLogEvery spaces the redirect errors in the log: every lookup gets
// one while the upstream redirects.
const redirectLogEvery = 10 * time.Second

// New returns a client for the service at baseURL (e.g. http://localhost:9010).
// conns is the most requests that will be in flight at once (the caller's
// concurrency ceiling): HTTP/1.1 needs a connection per request in flight,
// and the client keeps up to that many idle, because closing and reopening a
// socket for nearly every lookup would waste both sides' time. timeout
// bounds one request, connecting, headers and body included. A user and
// password in baseURL are sent as Basic auth. log gets the redirect errors;
// nil discards them.
func New(baseURL string, conns int, timeout time.Duration, log *slog.Logger) *Client {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// config.Load checks the URL; anything else is a wiring bug.
		panic(fmt.Sprintf("objects: base URL %q: want an http(s) URL", baseURL))
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		pool:    newPool(u, conns),
		path:    u.EscapedPath() + "/objects/",
		timeout: timeout,
		log:     log,
	}
}

// Fetch looks up one object. Errors are *StatusError for a non-200 answer,
// ErrMismatch for an answer about another ID, or a transport, timeout or
// decoding error; all are wrapped with the ID. A timeout answers Timeout()
// true; a cancelled ctx gives its own error.
func (c *Client) Fetch(ctx context.Context, id int64) (Object, error) {
	ans, err := c.pool.get(ctx, time.Now().Add(c.timeout), c.path, id)
	if err != nil {
		return Object{}, fmt.Errorf("fetch object %d: %w", id, err)
	}
	if ans.status != http.StatusOK {
		e := &StatusError{Code: ans.status, retryAfter: retryAfter(ans.retryAfter)}
		if e.redirect() {
			e.Location = ans.location
			c.logRedirect(ctx, e)
		}
		return Object{}, fmt.Errorf("fetch object %d: %w", id, e)
	}
	got, online, ok := quickObject(ans.body)
	if !ok {
		// Pointers tell a missing field from a zero one: {"id":4} must not
		// read as "offline", and a missing id must not read as object 0.
		var body struct {
			ID     *int64 `json:"id"`
			Online *bool  `json:"online"`
		}
		// Unmarshal, not a Decoder: trailing data ({"id":5,"online":true}<html>)
		// is an error, not an answer.
		if err := json.Unmarshal(ans.body, &body); err != nil {
			return Object{}, fmt.Errorf("fetch object %d: decode: %w", id, err)
		}
		if body.ID == nil || body.Online == nil {
			return Object{}, fmt.Errorf("fetch object %d: decode: %w", id, ErrIncomplete)
		}
		got, online = *body.ID, *body.Online
	}
	if got != id {
		return Object{}, fmt.Errorf("fetch object %d: got id %d: %w", id, got, ErrMismatch)
	}
	return Object{ID: id, Online: online}, nil
}

// logRedirect logs a redirect, unless one was logged within
// redirectLogEvery.
func (c *Client) logRedirect(ctx context.Context, e *StatusError) {
	now, last := time.Now().UnixNano(), c.lastRedirectLog.Load()
	if now-last < int64(redirectLogEvery) || !c.lastRedirectLog.CompareAndSwap(last, now) {
		return
	}
	c.log.ErrorContext(ctx, "upstream redirects, not followed: lookups fail until -src names where it points",
		"status", e.Code, "location", e.Location, "every", redirectLogEvery.String())
}

// Close releases the client's idle connections (up to conns of them). A
// lookup still in flight closes its own when it ends; one made after Close
// still works, on a connection of its own.
func (c *Client) Close() { c.pool.close() }

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
