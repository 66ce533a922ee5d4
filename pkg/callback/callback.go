// Package callback is the HTTP edge of the service: it decodes and validates
// POST /callback bodies, hands the IDs to an Enqueuer with their receipt time,
// and answers at once. It never waits on lookups or the database; that work
// happens after the 202, so a slow upstream cannot make a sender time out.
package callback

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"callback/pkg/ingest"
)

// MaxBodyBytes caps a callback body. 200 IDs take under 5 KiB; 1 MiB leaves
// room for far bigger senders while bounding what one request can cost.
const MaxBodyBytes = 1 << 20

// Enqueuer takes an accepted callback without blocking.
type Enqueuer interface {
	Enqueue(c ingest.Callback) error
}

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
	received := h.NowFunc() // the objects' seen time, whenever lookups finish
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed, use POST")
		return
	}
	ids, err := decode(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		status, msg, level := http.StatusBadRequest, err.Error(), slog.LevelDebug
		var (
			tooBig  *http.MaxBytesError
			timeout interface{ Timeout() bool }
		)
		switch {
		case errors.As(err, &tooBig):
			status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)
		case errors.Is(err, errRead) && errors.As(err, &timeout) && timeout.Timeout():
			status, msg, level = http.StatusRequestTimeout, "body not received in time", slog.LevelWarn
		case errors.Is(err, errRead):
			msg, level = errRead.Error(), slog.LevelWarn // the cause names sockets: log it only
		}
		h.log.Log(r.Context(), level, "bad callback", "status", status, "err", err)
		writeError(w, status, msg)
		return
	}

	if err := h.q.Enqueue(ingest.Callback{IDs: ids, Received: received}); err != nil {
		// The sender must retry, so say when rather than hold the request
		// open. A full or closed queue passes (it drains, or a restarted
		// instance takes over); any other error is a bug worth a look.
		level, msg := slog.LevelError, "enqueue callback"
		if errors.Is(err, ingest.ErrFull) || errors.Is(err, ingest.ErrClosed) {
			level, msg = slog.LevelWarn, "callback refused"
		}
		h.log.Log(r.Context(), level, msg, "count", len(ids), "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "busy, retry later")
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// Decode errors carry the short, fixed text the client gets.
var (
	errEmpty     = errors.New("empty body")
	errNotObject = errors.New(`body must be a JSON object like {"object_ids":[1,2,3]}`)
	errNoIDs     = errors.New("object_ids is required and must be an array")
	errBadID     = errors.New("object_ids must hold integers in int64 range")
	errTrailing  = errors.New("unexpected data after the JSON object")
	errRead      = errors.New("could not read the body") // a transport failure, not bad JSON
)

// decode reads one JSON object with an "object_ids" array of integers.
// Unknown keys are ignored so that senders may add fields.
func decode(body io.Reader) ([]int64, error) {
	var req struct {
		ObjectIDs *[]objectID `json:"object_ids"`
	}
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		if f := readFailed(err); f != nil {
			return nil, f
		}
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, errEmpty
		case errors.Is(err, errBadID):
			return nil, errBadID
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return nil, errNotObject
		case errors.As(err, &typeErr):
			return nil, errNoIDs
		default:
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
	}
	// Exactly one value: anything but white space after it is an error, and
	// reading to EOF also catches a body over the limit hidden after it.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if f := readFailed(err); f != nil {
			return nil, f
		}
		return nil, errTrailing
	}
	if req.ObjectIDs == nil {
		return nil, errNoIDs
	}
	ids := make([]int64, len(*req.ObjectIDs))
	for i, id := range *req.ObjectIDs {
		ids[i] = int64(id)
	}
	return ids, nil
}

// readFailed returns err if the body itself could not be read, nil if err is
// about its content. An oversized body stays a *http.MaxBytesError; a timeout
// or a reset is wrapped in errRead.
func readFailed(err error) error {
	var (
		tooBig  *http.MaxBytesError
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case err == nil, errors.As(err, &syntax), errors.As(err, &typeErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errBadID):
		return nil
	case errors.As(err, &tooBig):
		return err
	}
	return fmt.Errorf("%w: %w", errRead, err)
}

// objectID accepts only a JSON integer in int64 range. encoding/json alone
// would turn null into 0 (a real object), and a json.Number would let
// "12", 1.5 and 1e3 through.
type objectID int64

func (id *objectID) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errBadID
	}
	n, err := strconv.ParseInt(string(b), 10, 64) // refuses 1.5, 1.0, 1e3 and overflow
	if err != nil {
		return errBadID
	}
	*id = objectID(n)
	return nil
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
