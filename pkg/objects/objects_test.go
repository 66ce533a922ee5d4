package objects_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callback/pkg/objects"
)

// newServer starts a test upstream that answers with h and is closed when t ends.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// answer replies with status, the given headers and body.
func answer(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func TestFetch(t *testing.T) {
	tests := []struct {
		name    string
		id      int64
		handler http.HandlerFunc
		want    objects.Object

		wantStatus     int           // non-zero: want a *StatusError with this Code
		wantRetry      bool          // for a *StatusError
		wantRetryAfter time.Duration // for a *StatusError
		wantIs         error         // non-nil: want errors.Is(err, wantIs)
		wantErr        bool          // any error that is not a *StatusError
	}{
		{name: "online", id: 7, handler: answer(200, `{"id":7,"online":true}`), want: objects.Object{ID: 7, Online: true}},
		{name: "offline", id: 8, handler: answer(200, `{"id":8,"online":false}`), want: objects.Object{ID: 8, Online: false}},
		{name: "id-zero", id: 0, handler: answer(200, `{"id":0,"online":true}`), want: objects.Object{ID: 0, Online: true}},
		{name: "negative-id", id: -5, handler: answer(200, `{"id":-5,"online":true}`), want: objects.Object{ID: -5, Online: true}},
		{name: "max-id", id: 9223372036854775807, handler: answer(200, `{"id":9223372036854775807,"online":true}`),
			want: objects.Object{ID: 9223372036854775807, Online: true}},
		{name: "extra-fields", id: 1, handler: answer(200, `{"name":"x","id":1,"online":true,"tags":[1]}`), want: objects.Object{ID: 1, Online: true}},
		{name: "reordered-fields-whitespace", id: 2, handler: answer(200, " {\n \"online\" : true , \"id\" : 2 }\n"), want: objects.Object{ID: 2, Online: true}},
		// encoding/json matches keys case-insensitively.
		{name: "key-case", id: 3, handler: answer(200, `{"ID":3,"Online":true}`), want: objects.Object{ID: 3, Online: true}},

		{name: "500", id: 1, handler: answer(500, "oops"), wantStatus: 500, wantRetry: true},
		{name: "502", id: 1, handler: answer(502, ""), wantStatus: 502, wantRetry: true},
		{name: "503-retry-after", id: 1, handler: answer(503, "", "Retry-After", "7"), wantStatus: 503, wantRetry: true, wantRetryAfter: 7 * time.Second},
		{name: "429-retry-after", id: 1, handler: answer(429, "slow down", "Retry-After", "3"), wantStatus: 429, wantRetry: true, wantRetryAfter: 3 * time.Second},
		{name: "429-retry-after-zero", id: 1, handler: answer(429, "", "Retry-After", "0"), wantStatus: 429, wantRetry: true},
		{name: "429-retry-after-date", id: 1, handler: answer(429, "", "Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"), wantStatus: 429, wantRetry: true},
		{name: "429-retry-after-negative", id: 1, handler: answer(429, "", "Retry-After", "-3"), wantStatus: 429, wantRetry: true},
		{name: "429-retry-after-garbage", id: 1, handler: answer(429, "", "Retry-After", "soon"), wantStatus: 429, wantRetry: true},
		{name: "429-no-retry-after", id: 1, handler: answer(429, ""), wantStatus: 429, wantRetry: true},
		{name: "408", id: 1, handler: answer(408, ""), wantStatus: 408, wantRetry: true},
		{name: "404", id: 1, handler: answer(404, `{"error":"not found"}`), wantStatus: 404, wantRetry: false},
		{name: "400", id: 1, handler: answer(400, ""), wantStatus: 400, wantRetry: false},
		{name: "410", id: 1, handler: answer(410, ""), wantStatus: 410, wantRetry: false},
		{name: "204", id: 1, handler: answer(204, ""), wantStatus: 204, wantRetry: false},

		{name: "malformed-json", id: 1, handler: answer(200, `{"id":1,"online":tru}`), wantErr: true},
		{name: "truncated-json", id: 1, handler: answer(200, `{"id":1,"onli`), wantErr: true},
		{name: "empty-body", id: 1, handler: answer(200, ``), wantErr: true},
		{name: "html", id: 1, handler: answer(200, `<html>hi</html>`), wantErr: true},
		{name: "id-as-string", id: 1, handler: answer(200, `{"id":"1","online":true}`), wantErr: true},
		{name: "id-as-float", id: 1, handler: answer(200, `{"id":1.0,"online":true}`), wantErr: true},
		{name: "online-as-string", id: 1, handler: answer(200, `{"id":1,"online":"true"}`), wantErr: true},
		{name: "array", id: 1, handler: answer(200, `[{"id":1,"online":true}]`), wantErr: true},
		{name: "body-over-cap", id: 1, handler: answer(200, strings.Repeat(" ", 64<<10)+`{"id":1,"online":true}`), wantErr: true},

		{name: "missing-online", id: 5, handler: answer(200, `{"id":5}`), wantIs: objects.ErrIncomplete},
		{name: "missing-id", id: 5, handler: answer(200, `{"online":true}`), wantIs: objects.ErrIncomplete},
		{name: "null-online", id: 5, handler: answer(200, `{"id":5,"online":null}`), wantIs: objects.ErrIncomplete},
		{name: "null-id", id: 0, handler: answer(200, `{"id":null,"online":true}`), wantIs: objects.ErrIncomplete},
		{name: "empty-object", id: 0, handler: answer(200, `{}`), wantIs: objects.ErrIncomplete},
		{name: "null", id: 0, handler: answer(200, `null`), wantIs: objects.ErrIncomplete},
		{name: "wrong-id", id: 5, handler: answer(200, `{"id":6,"online":true}`), wantIs: objects.ErrMismatch},
		{name: "wrong-sign", id: 5, handler: answer(200, `{"id":-5,"online":true}`), wantIs: objects.ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			c := objects.New(srv.URL, 1, 5*time.Second, nil)
			got, err := c.Fetch(t.Context(), tt.id)

			wantOK := tt.wantStatus == 0 && tt.wantIs == nil && !tt.wantErr
			if wantOK {
				if err != nil {
					t.Fatalf("Fetch(%d) error = %v, want nil", tt.id, err)
				}
				if got != tt.want {
					t.Errorf("Fetch(%d) = %+v, want %+v", tt.id, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Fetch(%d) = %+v, nil error; want an error", tt.id, got)
			}
			if got != (objects.Object{}) {
				t.Errorf("Fetch(%d) = %+v with error, want the zero Object", tt.id, got)
			}
			if want := fmt.Sprintf("fetch object %d", tt.id); !strings.Contains(err.Error(), want) {
				t.Errorf("error = %q, want it to name the ID (%q)", err, want)
			}
			var se *objects.StatusError
			isStatus := errors.As(err, &se)
			switch {
			case tt.wantStatus != 0:
				if !isStatus {
					t.Fatalf("error = %v (%T), want a *StatusError", err, err)
				}
				if se.Code != tt.wantStatus {
					t.Errorf("Code = %d, want %d", se.Code, tt.wantStatus)
				}
				if got := se.Permanent(); got == tt.wantRetry {
					t.Errorf("Permanent() = %v, want %v", got, !tt.wantRetry)
				}
				if got := se.RetryAfter(); got != tt.wantRetryAfter {
					t.Errorf("RetryAfter() = %v, want %v", got, tt.wantRetryAfter)
				}
			case isStatus:
				t.Errorf("error = %v is a *StatusError, want a decoding error", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error = %v, want errors.Is(err, %v)", err, tt.wantIs)
			}
			if tt.wantErr {
				for _, sentinel := range []error{objects.ErrIncomplete, objects.ErrMismatch} {
					if errors.Is(err, sentinel) {
						t.Errorf("error = %v, want a decoding error, not %v", err, sentinel)
					}
				}
			}
		})
	}
}

func TestStatusErrorPermanent(t *testing.T) {
	tests := []struct {
		code int
		want bool // temporary: may succeed if tried again
	}{
		{200, false}, {301, true}, {302, true}, {308, true}, {400, false}, {401, false}, {403, false}, {404, false},
		{407, false}, {408, true}, {409, false}, {422, false}, {429, true}, {499, false},
		{500, true}, {502, true}, {503, true}, {504, true}, {599, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := &objects.StatusError{Code: tt.code}
			if got := e.Permanent(); got == tt.want {
				t.Errorf("Permanent() for %d = %v, want %v", tt.code, got, !tt.want)
			}
			if got, want := e.Error(), fmt.Sprintf("upstream status %d", tt.code); tt.code/100 != 3 && got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestFetchRequest(t *testing.T) {
	tests := []struct {
		name     string
		suffix   string // appended to the server URL
		id       int64
		wantPath string
	}{
		{name: "plain", id: 42, wantPath: "/objects/42"},
		{name: "trailing-slash", suffix: "/", id: 42, wantPath: "/objects/42"},
		{name: "trailing-slashes", suffix: "//", id: 1, wantPath: "/objects/1"},
		{name: "negative", id: -9, wantPath: "/objects/-9"},
		{name: "zero", id: 0, wantPath: "/objects/0"},
		{name: "min-int64", id: -9223372036854775808, wantPath: "/objects/-9223372036854775808"},
		{name: "base-path", suffix: "/api", id: 3, wantPath: "/api/objects/3"},
		{name: "base-path-slash", suffix: "/api/", id: 3, wantPath: "/api/objects/3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type seen struct{ method, path, rawQuery, accept string }
			reqs := make(chan seen, 1)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				reqs <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Accept")}
				fmt.Fprintf(w, `{"id":%d,"online":true}`, tt.id)
			})
			c := objects.New(srv.URL+tt.suffix, 1, 5*time.Second, nil)
			if _, err := c.Fetch(t.Context(), tt.id); err != nil {
				t.Fatalf("Fetch(%d): %v", tt.id, err)
			}
			got := <-reqs
			want := seen{http.MethodGet, tt.wantPath, "", "application/json"}
			if got != want {
				t.Errorf("request = %+v, want %+v", got, want)
			}
		})
	}
}

// blockingServer starts an upstream whose handler never answers on its own:
// it returns when the client goes away or the test ends. Each request is
// announced on the returned channel.
func blockingServer(t *testing.T) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for handlers
	return srv, arrived
}

// fetchResult runs Fetch in a goroutine so that a test can act while it waits.
type fetchResult struct {
	obj     objects.Object
	err     error
	elapsed time.Duration
}

func goFetch(ctx context.Context, c *objects.Client, id int64) <-chan fetchResult {
	done := make(chan fetchResult, 1)
	go func() {
		start := time.Now()
		obj, err := c.Fetch(ctx, id)
		done <- fetchResult{obj, err, time.Since(start)}
	}()
	return done
}

// wait bounds how long a test waits for Fetch; far above any timeout used here.
func wait(t *testing.T, done <-chan fetchResult) fetchResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not return within 10s")
		return fetchResult{}
	}
}

func TestFetchTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := blockingServer(t)
	const timeout = 100 * time.Millisecond
	c := objects.New(srv.URL, 1, timeout, nil)

	r := wait(t, goFetch(t.Context(), c, 1))
	if r.err == nil {
		t.Fatalf("Fetch = %+v, nil error; want a timeout", r.obj)
	}
	var te interface{ Timeout() bool }
	if !errors.As(r.err, &te) || !te.Timeout() {
		t.Errorf("error = %v, want one whose Timeout() is true", r.err)
	}
	var se *objects.StatusError
	if errors.As(r.err, &se) {
		t.Errorf("error = %v is a *StatusError, want a transport error", r.err)
	}
	if r.elapsed < timeout {
		t.Errorf("Fetch returned after %v, want no earlier than the %v timeout", r.elapsed, timeout)
	}
	if limit := 2 * time.Second; r.elapsed > limit {
		t.Errorf("Fetch returned after %v, want promptly after the %v timeout (< %v)", r.elapsed, timeout, limit)
	}
}

// TestFetchSlowBody covers an upstream that sends headers at once and then
// stalls: the client timeout must cover the body too.
func TestFetchSlowBody(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":1,`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	const timeout = 100 * time.Millisecond
	c := objects.New(srv.URL, 1, timeout, nil)

	r := wait(t, goFetch(t.Context(), c, 1))
	if r.err == nil {
		t.Fatalf("Fetch = %+v, nil error; want a timeout", r.obj)
	}
	if limit := 2 * time.Second; r.elapsed > limit {
		t.Errorf("Fetch returned after %v, want promptly after the %v timeout (< %v)", r.elapsed, timeout, limit)
	}
}

func TestFetchContext(t *testing.T) {
	t.Run("cancelled-while-waiting", func(t *testing.T) {
		t.Parallel()
		srv, arrived := blockingServer(t)
		c := objects.New(srv.URL, 1, time.Minute, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()

		done := goFetch(ctx, c, 1)
		<-arrived
		cancel()
		r := wait(t, done)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("error = %v, want context.Canceled", r.err)
		}
	})

	t.Run("deadline-shorter-than-timeout", func(t *testing.T) {
		t.Parallel()
		srv, _ := blockingServer(t)
		c := objects.New(srv.URL, 1, time.Minute, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()

		r := wait(t, goFetch(ctx, c, 1))
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("error = %v, want context.DeadlineExceeded", r.err)
		}
	})

	t.Run("already-cancelled", func(t *testing.T) {
		t.Parallel()
		var hits atomic.Int32
		srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			_, _ = io.WriteString(w, `{"id":1,"online":true}`)
		})
		c := objects.New(srv.URL, 1, time.Minute, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()

		_, err := c.Fetch(ctx, 1)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error = %v, want context.Canceled", err)
		}
		if n := hits.Load(); n != 0 {
			t.Errorf("server saw %d requests, want 0", n)
		}
	})
}

func TestFetchConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	c := objects.New("http://"+addr, 1, 5*time.Second, nil)
	_, err = c.Fetch(t.Context(), 1)
	if err == nil {
		t.Fatal("Fetch error = nil, want a connection error")
	}
	var se *objects.StatusError
	if errors.As(err, &se) {
		t.Errorf("error = %v is a *StatusError, want a transport error", err)
	}
	// A refused connection passes. url.Error has a Temporary method that
	// says false here, which is why callers ask Permanent instead.
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		t.Errorf("error = %v reports Permanent, want a retryable error", err)
	}
}

func TestOnline(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/objects/4":
			fmt.Fprint(w, `{"id":4,"online":true}`)
		case "/objects/5":
			fmt.Fprint(w, `{"id":5,"online":false}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c := objects.New(srv.URL, 1, 5*time.Second, nil)
	tests := []struct {
		id            int64
		want, wantErr bool
	}{{4, true, false}, {5, false, false}, {6, false, true}}
	for _, tt := range tests {
		got, err := c.Online(t.Context(), tt.id)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("Online(%d) = %v, %v; want %v, error %v", tt.id, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestFetchReusesConnections proves that Fetch drains and closes every body,
// whatever the answer: otherwise each sequential lookup would open a socket.
func TestFetchReusesConnections(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{name: "ok", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"id":1,"online":true}`+"\n")
		}},
		{name: "ok-trailing-data", handler: answer(200, `{"id":1,"online":true}`+strings.Repeat(" ", 8<<10)+"tail")},
		{name: "status-with-body", handler: answer(500, strings.Repeat("error text ", 1000))},
		{name: "bad-json", handler: answer(200, `{"id":1,"online":`+strings.Repeat("x", 4<<10))},
		{name: "mismatch", handler: answer(200, `{"id":2,"online":true}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu    sync.Mutex
				conns int // guarded by mu
			)
			srv := httptest.NewUnstartedServer(tt.handler)
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					mu.Lock()
					conns++
					mu.Unlock()
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)

			c := objects.New(srv.URL, 4, 5*time.Second, nil)
			const fetches = 20
			for range fetches {
				_, _ = c.Fetch(t.Context(), 1) // the answer does not matter here, only the socket
			}
			mu.Lock()
			got := conns
			mu.Unlock()
			// One socket should serve them all; allow one more for a race between
			// returning a connection to the pool and the next request.
			if got > 2 {
				t.Errorf("%d sequential fetches opened %d connections, want at most 2", fetches, got)
			}
		})
	}
}

// TestFetchConcurrent checks that the client is safe for concurrent use and
// that every caller gets its own answer.
func TestFetchConcurrent(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /objects/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"id":%d,"online":%t}`, id, id%2 == 0)
	})
	srv := newServer(t, mux.ServeHTTP)
	c := objects.New(srv.URL, 8, 5*time.Second, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for id := range int64(64) {
		wg.Go(func() {
			got, err := c.Fetch(t.Context(), id)
			switch {
			case err != nil:
				errs <- err
			case got != objects.Object{ID: id, Online: id%2 == 0}:
				errs <- fmt.Errorf("Fetch(%d) = %+v, want {ID:%d Online:%t}", id, got, id, id%2 == 0)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The client pools its own connections; these cover what http.Transport
// used to: a connection the server closed while idle is retried on a new
// one, chunked bodies are read, and Connection: close is honoured.
func TestPoolServerClosesIdleConnections(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(answer(200, `{"id":1,"online":true}`))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	c := objects.New(srv.URL, 4, 5*time.Second, nil)
	for i := range 5 {
		if _, err := c.Fetch(t.Context(), 1); err != nil {
			t.Fatalf("fetch %d after the server closed the idle connection: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond) // longer than the server's idle timeout
	}
}

func TestPoolChunkedAndClose(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		wantConns int
	}{
		{name: "chunked", wantConns: 1, handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"id":1,`)
			w.(http.Flusher).Flush() // forces chunked encoding
			_, _ = io.WriteString(w, `"online":true}`)
		}},
		{name: "connection-close", wantConns: 3, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, `{"id":1,"online":true}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var conns atomic.Int64
			srv := httptest.NewUnstartedServer(tt.handler)
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)
			c := objects.New(srv.URL, 4, 5*time.Second, nil)
			for range 3 {
				got, err := c.Fetch(t.Context(), 1)
				if err != nil || got != (objects.Object{ID: 1, Online: true}) {
					t.Fatalf("Fetch = %+v, %v; want object 1 online", got, err)
				}
			}
			if got := conns.Load(); got != int64(tt.wantConns) {
				t.Errorf("connections = %d, want %d", got, tt.wantConns)
			}
		})
	}
}

// A base URL with a path prefix keeps it.
func TestPoolBasePath(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/objects/7" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"id":7,"online":false}`)
	})
	c := objects.New(srv.URL+"/api/v1/", 1, 5*time.Second, nil)
	if got, err := c.Fetch(t.Context(), 7); err != nil || got != (objects.Object{ID: 7}) {
		t.Errorf("Fetch = %+v, %v; want object 7 offline", got, err)
	}
}

// Close releases the pooled connection: the upstream sees it closed.
func TestClientClose(t *testing.T) {
	closed := make(chan struct{})
	srv := httptest.NewUnstartedServer(answer(http.StatusOK, `{"id":1,"online":true}`))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			close(closed)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := objects.New(srv.URL, 4, 5*time.Second, nil)
	if _, err := c.Fetch(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Fatal("the connection closed before Close")
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream still holds the connection 5 s after Close")
	}
}
