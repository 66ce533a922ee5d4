package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// callbackBody decodes a post strictly: object_ids must be present and an array.
func callbackBody(t *testing.T, r io.Reader) []int64 {
	t.Helper()
	var body struct {
		ObjectIDs *[]int64 `json:"object_ids"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Errorf("decode body: %v", err)
		return nil
	}
	if body.ObjectIDs == nil {
		t.Errorf("body has no object_ids array")
		return nil
	}
	return *body.ObjectIDs
}

// ledger collects what OnSendFunc reports.
type ledger struct {
	mu      sync.Mutex
	results []SendResult
}

func (l *ledger) add(res SendResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.results = append(l.results, res)
}

func (l *ledger) all() []SendResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

func TestSenderPosts(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies [][]int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/callback" {
			t.Errorf("request = %s %s, want POST /callback", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		ids := callbackBody(t, r.Body)
		mu.Lock()
		bodies = append(bodies, ids)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)

	var l ledger
	s := &Sender{
		Target:     srv.URL + "/callback",
		Interval:   time.Millisecond,
		Senders:    3,
		MinIDs:     5,
		MaxIDs:     20,
		IDRange:    10,
		IDBase:     1000,
		MaxSends:   30,
		OnSendFunc: l.add,
	}
	sum, err := s.Run(t.Context())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	if len(bodies) != 30 {
		t.Fatalf("server got %d posts, want 30", len(bodies))
	}
	var ids int
	for _, b := range bodies {
		ids += len(b)
		if len(b) < 5 || len(b) > 20 {
			t.Errorf("body has %d ids, want 5 to 20", len(b))
		}
		for _, id := range b {
			if id < 1000 || id >= 1010 {
				t.Errorf("id %d, want 1000 to 1009", id)
			}
		}
	}
	want := [5]int{30, 30, 0, 0, ids} // sent, ok, non-2xx, errors, ids
	if got := [5]int{sum.Sent, sum.OK, sum.Non2xx, sum.Errors, sum.IDs}; got != want {
		t.Errorf("sent, ok, non-2xx, errors, ids = %v, want %v", got, want)
	}
	if got := sum.ByStatus[http.StatusAccepted]; got != 30 {
		t.Errorf("ByStatus[202] = %d, want 30", got)
	}
	if sum.Max <= 0 || sum.P50 > sum.P99 || sum.P99 > sum.Max {
		t.Errorf("latencies p50=%v p99=%v max=%v, want 0 < p50 <= p99 <= max", sum.P50, sum.P99, sum.Max)
	}

	results := l.all()
	if len(results) != 30 {
		t.Fatalf("OnSendFunc called %d times, want 30", len(results))
	}
	senders := map[int]bool{}
	var reused int
	var sent, got []string // each body's ids, as posted and as reported
	for _, res := range results {
		if res.Status != http.StatusAccepted || res.Err != nil {
			t.Errorf("result status %d err %v, want 202 and no error", res.Status, res.Err)
		}
		if res.Sent.IsZero() || res.Duration <= 0 {
			t.Errorf("result sent %v after %v, want both set", res.Sent, res.Duration)
		}
		senders[res.Sender] = true
		if res.Reused {
			reused++
		}
		got = append(got, idsKey(res.IDs))
	}
	for _, b := range bodies {
		sent = append(sent, idsKey(b))
	}
	slices.Sort(sent)
	slices.Sort(got)
	if !slices.Equal(got, sent) {
		t.Errorf("OnSendFunc ids differ from the posted bodies")
	}
	if len(senders) != 3 {
		t.Errorf("posts came from senders %v, want 0, 1 and 2", senders)
	}
	// Each sender reuses its keep-alive connection, since 202 has no body to leave unread.
	if reused == 0 {
		t.Errorf("no post reused a connection")
	}
}

func idsKey(ids []int64) string { return fmt.Sprint(ids) }

func TestSenderEmptyBodies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var bodies []string
		s := &Sender{
			Target:   "http://service/callback",
			MaxIDs:   -1,
			MaxSends: 3,
			Client: fakeClient(0, func(r *http.Request) *http.Response {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					t.Error(err)
				}
				bodies = append(bodies, string(b))
				return answer(r, http.StatusAccepted)
			}),
		}
		sum, err := s.Run(t.Context())
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if want := []string{`{"object_ids":[]}`, `{"object_ids":[]}`, `{"object_ids":[]}`}; !slices.Equal(bodies, want) {
			t.Errorf("bodies = %q, want %q", bodies, want)
		}
		if sum.Sent != 3 || sum.IDs != 0 {
			t.Errorf("summary = %+v, want 3 sent, 0 ids", sum)
		}
	})
}

// TestSenderCustomerTiming checks the defaults against the customer's program: 5s before the
// first post, then 5s after each answer (fixed delay), 0 to 199 ids from 0 to 99.
func TestSenderCustomerTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var l ledger
		s := &Sender{
			Target:       "http://service/callback",
			InitialDelay: 5 * time.Second,
			MaxSends:     4,
			OnSendFunc:   l.add,
			Client: fakeClient(300*time.Millisecond, func(r *http.Request) *http.Response {
				ids := callbackBody(t, r.Body)
				if len(ids) > 199 {
					t.Errorf("body has %d ids, want at most 199", len(ids))
				}
				for _, id := range ids {
					if id < 0 || id > 99 {
						t.Errorf("id %d, want 0 to 99", id)
					}
				}
				return answer(r, http.StatusAccepted)
			}),
		}
		if _, err := s.Run(t.Context()); err != nil {
			t.Fatalf("Run: %v", err)
		}
		var got []time.Duration
		for _, res := range l.all() {
			got = append(got, res.Sent.Sub(start))
			if res.Duration != 300*time.Millisecond {
				t.Errorf("duration = %v, want 300ms", res.Duration)
			}
		}
		want := []time.Duration{5 * time.Second, 10300 * time.Millisecond, 15600 * time.Millisecond, 20900 * time.Millisecond}
		if !slices.Equal(got, want) {
			t.Errorf("posts at %v, want %v", got, want)
		}
		// Run returns once the last post is answered, not after another interval.
		if d := time.Since(start); d != 21200*time.Millisecond {
			t.Errorf("Run returned after %v, want 21.2s", d)
		}
	})
}

func TestSenderRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l ledger
		s := &Sender{
			Target:     "http://service/callback",
			Interval:   -1,
			MaxSends:   3,
			OnSendFunc: l.add,
			Client: fakeClient(0, func(r *http.Request) *http.Response {
				resp := answer(r, http.StatusServiceUnavailable)
				resp.Header.Set("Retry-After", "1")
				return resp
			}),
		}
		sum, err := s.Run(t.Context())
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if sum.Sent != 3 || sum.Non2xx != 3 || sum.OK != 0 || sum.Errors != 0 {
			t.Errorf("summary = %+v, want 3 sent, all non-2xx", sum)
		}
		for _, res := range l.all() {
			if res.Status != http.StatusServiceUnavailable || res.RetryAfter != "1" || res.Err != nil {
				t.Errorf("result status %d retry-after %q err %v, want 503, 1, nil", res.Status, res.RetryAfter, res.Err)
			}
		}
	})
}

func TestSenderTransportError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	target := srv.URL + "/callback"
	srv.Close() // nothing listens there any more

	var l ledger
	s := &Sender{Target: target, Interval: -1, MaxSends: 3, OnSendFunc: l.add}
	sum, err := s.Run(t.Context())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.Sent != 3 || sum.Errors != 3 || sum.OK != 0 {
		t.Errorf("summary = %+v, want 3 sent, 3 errors", sum)
	}
	for _, res := range l.all() {
		if res.Err == nil || res.Status != 0 {
			t.Errorf("result status %d err %v, want 0 and an error", res.Status, res.Err)
		}
	}
}

// TestSenderTimeout checks the customer's 1s limit: a slower answer is an error.
func TestSenderTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l ledger
		s := &Sender{
			Target:     "http://service/callback",
			MaxSends:   1,
			OnSendFunc: l.add,
			Client:     fakeClient(2*time.Second, func(r *http.Request) *http.Response { return answer(r, http.StatusAccepted) }),
		}
		sum, err := s.Run(t.Context())
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if sum.Errors != 1 {
			t.Errorf("summary = %+v, want 1 error", sum)
		}
		res := l.all()[0]
		if res.Err == nil || res.Duration != time.Second {
			t.Errorf("result err %v after %v, want an error after 1s", res.Err, res.Duration)
		}
	})
}

// TestSenderStops cancels Run while a post is in flight: Run lets it finish, then returns.
func TestSenderStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 11200*time.Millisecond)
		defer cancel()
		s := &Sender{
			Target: "http://service/callback",
			Client: fakeClient(500*time.Millisecond, func(r *http.Request) *http.Response { return answer(r, http.StatusAccepted) }),
		}
		sum, err := s.Run(ctx) // posts at 0s, 5.5s and 11s
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if sum.Sent != 3 || sum.OK != 3 {
			t.Errorf("summary = %+v, want 3 sent, 3 ok", sum)
		}
		if d := time.Since(start); d != 11500*time.Millisecond {
			t.Errorf("Run returned after %v, want 11.5s, when the last post was answered", d)
		}
	})
}

// TestSenderRate checks the open loop: posts keep their schedule although each takes
// longer than the period.
func TestSenderRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 1020*time.Millisecond)
		defer cancel()
		var l ledger
		s := &Sender{
			Target:     "http://service/callback",
			Rate:       10,
			Senders:    2,
			OnSendFunc: l.add,
			Client:     fakeClient(350*time.Millisecond, func(r *http.Request) *http.Response { return answer(r, http.StatusAccepted) }),
		}
		sum, err := s.Run(ctx)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		// Sender 0 posts at 0, 100ms, ... 1s; sender 1, staggered, at 50ms, 150ms, ... 950ms.
		if sum.Sent != 21 || sum.OK != 21 {
			t.Errorf("summary = %+v, want 21 sent, 21 ok", sum)
		}
		var got []time.Duration
		for _, res := range l.all() {
			if res.Sender == 1 {
				got = append(got, res.Sent.Sub(start))
			}
		}
		slices.Sort(got)
		var want []time.Duration
		for at := 50 * time.Millisecond; at < time.Second; at += 100 * time.Millisecond {
			want = append(want, at)
		}
		if !slices.Equal(got, want) {
			t.Errorf("sender 1 posted at %v, want %v", got, want)
		}
		if d := time.Since(start); d != 1350*time.Millisecond {
			t.Errorf("Run returned after %v, want 1.35s, when the last post was answered", d)
		}
	})
}

func TestSenderRateMaxSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Sender{
			Target:   "http://service/callback",
			Rate:     100,
			Senders:  3,
			MaxSends: 7,
			Client:   fakeClient(time.Second, func(r *http.Request) *http.Response { return answer(r, http.StatusAccepted) }),
			Timeout:  2 * time.Second,
		}
		sum, err := s.Run(t.Context())
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if sum.Sent != 7 || sum.OK != 7 {
			t.Errorf("summary = %+v, want 7 sent, 7 ok", sum)
		}
	})
}

func TestSenderInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    Sender
		want string
	}{
		{name: "no-target", s: Sender{}, want: "target"},
		{name: "relative-target", s: Sender{Target: "/callback"}, want: "target"},
		{name: "negative-rate", s: Sender{Target: "http://x/", Rate: -1}, want: "rate"},
		{name: "min-over-max", s: Sender{Target: "http://x/", MinIDs: 10, MaxIDs: 5}, want: "min ids"},
		{name: "negative-range", s: Sender{Target: "http://x/", IDRange: -1}, want: "id range"},
		{name: "range-overflow", s: Sender{Target: "http://x/", IDBase: math.MaxInt64 - 5, IDRange: 10}, want: "id range"},
		{name: "negative-senders", s: Sender{Target: "http://x/", Senders: -1}, want: "senders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A cancelled ctx makes a Run that wrongly accepts tt.s return at once.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err := tt.s.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run error = %v, want one about %s", err, tt.want)
			}
		})
	}
}

// fakeClient answers every post after delay on synctest's fake clock, with what answer
// returns, and fails with the request's context error if that ends first.
func fakeClient(delay time.Duration, answer func(*http.Request) *http.Response) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			return answer(r), nil
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func answer(r *http.Request, status int) *http.Response {
	return &http.Response{
		StatusCode: status,
		Header:     http.Header{},
		Body:       io.NopCloser(bytes.NewReader(nil)),
		Request:    r,
	}
}
