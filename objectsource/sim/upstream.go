package sim

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is an http.Handler that answers GET /objects/{id} like the customer's object
// service: after a uniform random delay it replies {"id":N,"online":B} with Content-Type
// application/json. An id that is not a base-10 int64 gets 400 at once (negative ids are
// fine), another path 404 and another method 405, each with a short JSON error.
//
// The zero value answers at once, never fails, and reports even ids (0 included) online.
// Set the fields before the first request and do not copy an Upstream after it; the
// counter methods are safe to call while it serves.
type Upstream struct {
	// MinLatency and MaxLatency bound the uniform delay before each answer. Zero means
	// none; a MaxLatency below MinLatency means exactly MinLatency. The customer's program
	// uses 300ms and 4.3s. The delay ends early when the client gives up.
	MinLatency, MaxLatency time.Duration

	// ErrorRate is the fraction of lookups, 0 to 1, answered 500 after the delay
	// instead of with the object.
	ErrorRate float64

	// OnlineFunc decides the online field. Nil means the customer's rule: id is even.
	OnlineFunc func(id int64) bool

	// Capacity, if positive, is the most requests served at once: a request beyond it
	// is answered 503 at once, as an upstream with a concurrency limit of its own does.
	Capacity int

	requests    atomic.Int64
	errors      atomic.Int64
	refused     atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64

	mu      sync.Mutex      // guards lookups
	lookups map[int64]int64 // requests per well-formed id
}

// object is the answer body, the same shape as the customer's.
type object struct {
	ID     int64 `json:"id"`
	Online bool  `json:"online"`
}

// errorBody is the body of every non-200 answer.
type errorBody struct {
	Error string `json:"error"`
}

// ServeHTTP answers one request as described on Upstream.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	n := u.inFlight.Add(1)
	defer u.inFlight.Add(-1)
	if u.Capacity > 0 && n > int64(u.Capacity) {
		u.refused.Add(1)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"over capacity"})
		return
	}
	for m := u.maxInFlight.Load(); n > m && !u.maxInFlight.CompareAndSwap(m, n); {
		m = u.maxInFlight.Load()
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/objects/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		writeJSON(w, http.StatusNotFound, errorBody{"not found"})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{"method not allowed"})
		return
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"invalid object id"})
		return
	}
	u.mu.Lock()
	if u.lookups == nil {
		u.lookups = make(map[int64]int64)
	}
	u.lookups[id]++
	u.mu.Unlock()

	if !sleep(r.Context(), u.latency()) {
		return // the client gave up, so nobody would read an answer
	}
	if u.ErrorRate > 0 && rand.Float64() < u.ErrorRate {
		u.errors.Add(1)
		writeJSON(w, http.StatusInternalServerError, errorBody{"injected failure"})
		return
	}
	online := id%2 == 0
	if u.OnlineFunc != nil {
		online = u.OnlineFunc(id)
	}
	writeJSON(w, http.StatusOK, object{ID: id, Online: online})
}

// Requests reports how many requests u has received, malformed ones included.
func (u *Upstream) Requests() int64 { return u.requests.Load() }

// Errors reports how many 500s u has answered because of ErrorRate.
func (u *Upstream) Errors() int64 { return u.errors.Load() }

// Refused reports how many requests u has answered 503 because of Capacity.
func (u *Upstream) Refused() int64 { return u.refused.Load() }

// InFlight reports the requests u is serving now.
func (u *Upstream) InFlight() int64 { return u.inFlight.Load() }

// Lookups reports how many requests u has received for id, answered or not.
func (u *Upstream) Lookups(id int64) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lookups[id]
}

// MaxInFlight reports the most requests u has served at the same time (not counting
// those refused beyond Capacity), which bounds from below the concurrency of the client
// under test.
func (u *Upstream) MaxInFlight() int64 { return u.maxInFlight.Load() }

func (u *Upstream) latency() time.Duration {
	if u.MaxLatency <= u.MinLatency {
		return u.MinLatency
	}
	return u.MinLatency + rand.N(u.MaxLatency-u.MinLatency+1)
}

// sleep waits for d and reports whether it did; it returns false as soon as ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Our fixed structs always encode, so an error here is a failed write: the client
	// left, and there is nobody to tell.
	json.NewEncoder(w).Encode(v)
}
