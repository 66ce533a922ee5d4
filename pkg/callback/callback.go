// Package callback is the HTTP edge of the service: it decodes and validates
// POST /callback bodies, hands the IDs to an Enqueuer with their receipt time,
// and answers at once. It never waits on lookups or the database; that work
// happens after the 202, so a slow upstream cannot make a sender time out.
package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// MaxBodyBytes caps a callback body. 200 IDs take under 5 KiB; 1 MiB leaves
// room for far bigger senders while bounding what one request can cost.
const MaxBodyBytes = 1 << 20

// Enqueuer takes the IDs of an accepted callback and its receipt time. It
// may wait, within ctx (the request's), until they are durable, but never on
// lookups or the database. An error that reports Temporary() == true (a full
// or closing queue, a full intake log) is the normal way of saying "not
// now"; any other is a bug.
type Enqueuer interface {
	Enqueue(ctx context.Context, ids []int64, received time.Time) error
}

// What the handler asks of an error, anywhere in its chain (errors.As).
type (
	// temporaryError is an Enqueue error that means "not now": either way
	// the sender gets 503 and Retry-After, but only any other error is
	// logged as a bug. pkg/ingest's refusals answer true.
	temporaryError interface{ Temporary() bool }
	// timeoutError is a body read that ran out of time: 408.
	timeoutError interface{ Timeout() bool }
)

// Handler serves POST /callback.
type Handler struct {
	log *slog.Logger
	q   Enqueuer
	// NowFunc stamps each callback's receipt time; tests replace it.
	NowFunc func() time.Time
}

// NewHandler returns a handler that enqueues on q.
func NewHandler(log *slog.Logger, q Enqueuer) *Handler {
	if log == nil || q == nil {
		panic("callback: nil dependency")
	}
	return &Handler{log: log.With("component", "callback"), q: q, NowFunc: time.Now}
}

// ServeHTTP answers 202 Accepted with an empty body once the IDs are queued.
// The empty body matters: the customer's sender closes responses without
// reading them, and only a fully read response lets Go reuse the connection.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := h.NowFunc() // the objects' last_seen, whenever lookups finish
	if r.Method != http.MethodPost {
		h.fail(w, r, &httpError{
			status: http.StatusMethodNotAllowed, msg: "method not allowed, use POST",
			header: http.Header{"Allow": {http.MethodPost}},
			log:    "bad callback", level: slog.LevelDebug, err: fmt.Errorf("method %s", r.Method),
		})
		return
	}
	ids, err := decode(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// The request's context bounds only the wait for durability: the
	// pipeline keeps nothing of it once Enqueue returns.
	if err := h.q.Enqueue(r.Context(), ids, received); err != nil {
		h.fail(w, r, refused(err), "count", len(ids))
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// httpError is every answer but 202, decided where the problem is found (as
// tailscale's tsweb.HTTPError): the status and headers, the short fixed
// message the client gets, and the cause, which goes to the log only, so no
// socket address or internal detail leaks to a sender.
type httpError struct {
	status int
	msg    string      // for the client
	header http.Header // extra response headers, or nil

	log   string     // the log message
	level slog.Level // Debug for a sender's bad input, Warn for trouble that passes, Error for a bug
	err   error      // the cause
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %v", e.status, e.msg, e.err) }

// fail logs err and answers with it. err is an *httpError; anything else
// would be a bug here, answered 500.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error, attrs ...any) {
	var e *httpError
	if !errors.As(err, &e) {
		e = &httpError{status: http.StatusInternalServerError, msg: "internal error", log: "unclassified error", level: slog.LevelError, err: err}
	}
	h.log.Log(r.Context(), e.level, e.log, append(attrs, "status", e.status, "err", e.err)...)
	for k, v := range e.header {
		w.Header()[k] = v
	}
	writeError(w, e.status, e.msg)
}

// refused is the answer when Enqueue fails: 503, so the sender retries rather
// than waits. A temporary refusal (the queue is full, or this instance is
// closing and another takes over) is a warning; anything else is a bug worth
// a look.
func refused(err error) error {
	e := &httpError{
		status: http.StatusServiceUnavailable, msg: "busy, retry later",
		header: http.Header{"Retry-After": {"1"}},
		log:    "enqueue callback", level: slog.LevelError, err: err,
	}
	var t temporaryError
	if errors.As(err, &t) && t.Temporary() {
		e.log, e.level = "callback refused", slog.LevelWarn
	}
	return e
}

// writeError answers with a small JSON body: {"error":"..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg}) // cannot fail for a string field
	_, _ = w.Write(append(b, '\n'))
}

// Recover turns a panic in next into a logged 500, so one bad request cannot
// take the process down. http.ErrAbortHandler is passed on: it is how a
// handler deliberately aborts a response.
func Recover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler {
				panic(rec)
			}
			log.ErrorContext(r.Context(), "handler panicked", "method", r.Method, "path", r.URL.Path,
				"panic", rec, "stack", string(debug.Stack()))
			writeError(w, http.StatusInternalServerError, "internal error")
		}()
		next.ServeHTTP(w, r)
	})
}
