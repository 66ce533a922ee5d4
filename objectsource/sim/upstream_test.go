package sim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestUpstreamAnswers(t *testing.T) {
	t.Parallel()
	u := &Upstream{}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)

	tests := []struct {
		name   string
		method string
		path   string
		status int
		body   string // compact JSON; "" skips the check
	}{
		{name: "even-online", path: "/objects/42", status: 200, body: `{"id":42,"online":true}`},
		{name: "odd-offline", path: "/objects/7", status: 200, body: `{"id":7,"online":false}`},
		{name: "zero-online", path: "/objects/0", status: 200, body: `{"id":0,"online":true}`},
		{name: "negative-even", path: "/objects/-4", status: 200, body: `{"id":-4,"online":true}`},
		{name: "negative-odd", path: "/objects/-3", status: 200, body: `{"id":-3,"online":false}`},
		{name: "max-int64", path: "/objects/9223372036854775807", status: 200, body: `{"id":9223372036854775807,"online":false}`},
		{name: "not-integer", path: "/objects/abc", status: 400},
		{name: "fraction", path: "/objects/1.5", status: 400},
		{name: "overflow", path: "/objects/9223372036854775808", status: 400},
		{name: "empty-id", path: "/objects/", status: 404},
		{name: "nested", path: "/objects/1/x", status: 404},
		{name: "other-path", path: "/callback", status: 404},
		{name: "post", method: http.MethodPost, path: "/objects/1", status: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), cmp.Or(tt.method, http.MethodGet), srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			var got json.RawMessage
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if tt.body != "" && string(got) != tt.body {
				t.Errorf("body = %s, want %s", got, tt.body)
			}
			if tt.status != 200 && !strings.Contains(string(got), `"error"`) {
				t.Errorf("body = %s, want a JSON error", got)
			}
		})
	}
	if got, want := u.Requests(), int64(len(tests)); got != want {
		t.Errorf("Requests() = %d, want %d", got, want)
	}
	if got := u.Lookups(42); got != 1 {
		t.Errorf("Lookups(42) = %d, want 1", got)
	}
	if got := u.Lookups(1); got != 0 {
		t.Errorf("Lookups(1) = %d, want 0 (only a POST asked)", got)
	}
}

func TestUpstreamOnlineFunc(t *testing.T) {
	t.Parallel()
	u := &Upstream{OnlineFunc: func(id int64) bool { return id == 3 }}
	for id, want := range map[string]string{"3": `{"id":3,"online":true}`, "4": `{"id":4,"online":false}`} {
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/objects/"+id, nil))
		if got := strings.TrimSpace(rec.Body.String()); got != want {
			t.Errorf("GET /objects/%s = %s, want %s", id, got, want)
		}
	}
}

func TestUpstreamErrorRate(t *testing.T) {
	t.Parallel()
	u := &Upstream{ErrorRate: 1}
	for range 5 {
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/objects/2", nil))
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("status = %d, want 500", rec.Code)
		}
	}
	if got := u.Errors(); got != 5 {
		t.Errorf("Errors() = %d, want 5", got)
	}
}

// TestUpstreamLatency runs on synctest's fake clock, so the bounds can be exact.
func TestUpstreamLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := &Upstream{MinLatency: 300 * time.Millisecond, MaxLatency: 4300 * time.Millisecond}
		for range 50 {
			start := time.Now()
			rec := httptest.NewRecorder()
			u.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/objects/1", nil))
			if d := time.Since(start); d < u.MinLatency || d > u.MaxLatency {
				t.Errorf("latency = %v, want %v to %v", d, u.MinLatency, u.MaxLatency)
			}
			if rec.Code != http.StatusOK {
				t.Errorf("status = %d, want 200", rec.Code)
			}
		}
		// A bad id is answered without the delay.
		start := time.Now()
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/objects/x", nil))
		if d := time.Since(start); d != 0 || rec.Code != http.StatusBadRequest {
			t.Errorf("bad id: status %d after %v, want 400 at once", rec.Code, d)
		}
	})
}

func TestUpstreamClientGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := &Upstream{MinLatency: time.Hour}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/objects/2", nil))
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("handler returned after %v, want 100ms", d)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("body = %q, want none", rec.Body)
		}
		if got := u.Lookups(2); got != 1 {
			t.Errorf("Lookups(2) = %d, want 1", got)
		}
	})
}

// TestUpstreamClientGivesUpOverNetwork checks the same through a real connection: the
// handler must notice the closed connection and return long before its delay.
func TestUpstreamClientGivesUpOverNetwork(t *testing.T) {
	t.Parallel()
	returned := make(chan struct{})
	u := &Upstream{MinLatency: time.Hour}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.ServeHTTP(w, r)
		close(returned)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/objects/2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("status = %d, want the client's deadline to cut the request", resp.StatusCode)
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // a generous bound, not a synchronization
		t.Fatal("handler still sleeping 10s after the client gave up")
	}
}

func TestUpstreamMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := &Upstream{MinLatency: time.Second}
		for range 3 {
			go u.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/objects/1", nil))
		}
		synctest.Wait() // all three are asleep in the handler
		if got := u.MaxInFlight(); got != 3 {
			t.Errorf("MaxInFlight() = %d, want 3", got)
		}
		time.Sleep(time.Second) // fake clock: lets the handlers finish
		synctest.Wait()
		if got := u.inFlight.Load(); got != 0 {
			t.Errorf("in flight after the delay = %d, want 0", got)
		}
	})
}

// TestUpstreamCapacity: beyond Capacity requests in flight, the answer is 503 at once.
func TestUpstreamCapacity(t *testing.T) {
	u := &Upstream{MinLatency: 300 * time.Millisecond, Capacity: 2}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	codes := make(chan int, 3)
	for i := range 3 {
		go func() {
			resp, err := srv.Client().Get(srv.URL + "/objects/" + strconv.Itoa(i))
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	got := map[int]int{}
	for range 3 {
		got[<-codes]++
	}
	if got[200] != 2 || got[503] != 1 {
		t.Errorf("answers = %v, want two 200 and one 503", got)
	}
	if u.Refused() != 1 {
		t.Errorf("Refused = %d, want 1", u.Refused())
	}
}

// The durable baseline answers 202 once the body is in its file, synced.
func TestDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "durable")
	d, err := NewDurable(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			resp, err := http.Post(srv.URL, "application/json", strings.NewReader(fmt.Sprintf(`{"object_ids":[%d]}`, i)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("status %d, want 202", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	srv.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "object_ids"); n != 20 {
		t.Errorf("file holds %d bodies, want 20", n)
	}
}
