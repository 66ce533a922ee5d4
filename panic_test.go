package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"callback/objectsource/sim"
	"callback/pkg/callback"
	"callback/pkg/config"
	"callback/pkg/ingest"
	"callback/pkg/logtest"
	"callback/pkg/pgtest"
)

// Panics in the real wiring: a panic after a callback was enqueued must
// cost the sender a 500 but no IDs, and a panic in a lookup must cost
// nothing at all. The panics come from test wrappers injected through the
// constructors; production code has no hook for them.

// TestHandlerPanicAfterEnqueue panics in the handler after the real pipeline
// has taken the callback: that request gets a JSON 500, the server keeps
// answering 202, and the panicking request's IDs are written anyway.
func TestHandlerPanicAfterEnqueue(t *testing.T) {
	const marker = 4242 // the request naming this ID panics
	rig := newPanicRig(t, nil, func(ids []int64) bool { return slices.Contains(ids, marker) })

	bodies := []struct {
		body string
		want int
	}{
		{`{"object_ids":[10,11,12]}`, http.StatusAccepted},
		{`{"object_ids":[4240,4241,4242]}`, http.StatusInternalServerError},
		{`{"object_ids":[20,21,22]}`, http.StatusAccepted},
		{`{"object_ids":[30,31,32]}`, http.StatusAccepted},
		{`{"object_ids":[40,41,42]}`, http.StatusAccepted},
	}
	for _, b := range bodies {
		resp, err := rig.client.Post(rig.url+"/callback", "application/json", strings.NewReader(b.body))
		if err != nil {
			t.Fatalf("POST %s: %v", b.body, err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("POST %s: read answer: %v", b.body, err)
		}
		if resp.StatusCode != b.want {
			t.Errorf("POST %s: status = %d, want %d (body %q)", b.body, resp.StatusCode, b.want, raw)
		}
		if b.want != http.StatusInternalServerError {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("POST %s: Content-Type = %q, want application/json", b.body, got)
		}
		var answer struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil || answer.Error == "" {
			t.Errorf("POST %s: body %q, want {\"error\":\"...\"} (%v)", b.body, raw, err)
		}
	}

	// 4240 and 4242 came only in the panicking request.
	want := []int64{10, 12, 20, 22, 30, 32, 40, 42, 4240, 4242}
	rig.waitForIDs(t, want, 15*time.Second)
	if n := strings.Count(rig.logs.String(), `"msg":"handler panicked"`); n != 1 {
		t.Errorf("logged %d handler panics, want 1", n)
	}
	rig.stop(t)
	if s := rig.pipe.Stats(); s.Panics != 0 || s.Abandoned != 0 {
		t.Errorf("pipeline stats %+v, want no panics and nothing abandoned: the panic was the handler's", s)
	}
}

// TestWorkerPanicRequeues panics in the Source the first time it is asked
// for one ID: the worker recovers, the ID is looked up again and written with
// its original receipt time, and the pipeline counts exactly one panic.
func TestWorkerPanicRequeues(t *testing.T) {
	const victim = 7002
	var panicked atomic.Bool
	rig := newPanicRig(t, func(next ingest.Source) ingest.Source {
		return &panicSource{OnlineFunc: func(ctx context.Context, id int64) (bool, error) {
			if id == victim && panicked.CompareAndSwap(false, true) {
				panic(fmt.Sprintf("test panic on first lookup of %d", id))
			}
			return next.Online(ctx, id)
		}}
	}, nil)

	received := time.Now()
	if err := rig.pipe.Enqueue(t.Context(), []int64{7000, 7001, 7002, 7003, 7004}, received); err != nil {
		t.Fatalf("Enqueue = %v, want nil", err)
	}
	table := rig.waitForIDs(t, []int64{7000, 7002, 7004}, 15*time.Second)
	if !panicked.Load() {
		t.Fatal("the Source never panicked: the test proved nothing")
	}
	if d := table[victim].Sub(received).Abs(); d > time.Millisecond {
		t.Errorf("last_seen of %d = %v, want its receipt time %v", victim, table[victim], received)
	}
	if n := rig.up.Lookups(victim); n != 1 {
		t.Errorf("upstream lookups of %d = %d, want 1 (the first attempt panicked before fetching)", victim, n)
	}
	rig.stop(t)
	s := rig.pipe.Stats()
	if s.Panics != 1 {
		t.Errorf("Stats().Panics = %d, want 1", s.Panics)
	}
	if s.Abandoned != 0 || s.GaveUp != 0 {
		t.Errorf("stats %+v, want nothing abandoned or given up", s)
	}
	if !strings.Contains(rig.logs.String(), `"msg":"lookup panicked"`) {
		t.Error(`no "lookup panicked" log line`)
	}
}

// panicEnqueuer hands each callback to next and then panics if PanicFunc
// picks it, as a bug after a successful enqueue would.
type panicEnqueuer struct {
	next      callback.Enqueuer
	PanicFunc func(ids []int64) bool
}

func (p *panicEnqueuer) Enqueue(ctx context.Context, ids []int64, received time.Time) error {
	if err := p.next.Enqueue(ctx, ids, received); err != nil {
		return err
	}
	if p.PanicFunc != nil && p.PanicFunc(ids) {
		panic(fmt.Sprintf("test panic after enqueueing %v", ids))
	}
	return nil
}

// panicSource is a Source made of a function, to wrap the real client.
type panicSource struct {
	OnlineFunc func(ctx context.Context, id int64) (bool, error)
}

func (f *panicSource) Online(ctx context.Context, id int64) (bool, error) {
	return f.OnlineFunc(ctx, id)
}

// panicRig is the real pipeline (objects client, simulated upstream, store
// on a fresh PostgreSQL database) behind the real callback handler and
// Recover, served by httptest.
type panicRig struct {
	pipe   *ingest.Pipeline
	up     *sim.Upstream
	pool   *pgxpool.Pool
	url    string // base URL of the callback server
	client *http.Client
	logs   *logtest.Buffer // the JSON logs of handler and pipeline

	stopOnce sync.Once
	cancel   context.CancelFunc // abandons Run's work if Close does not drain in time
	runDone  chan error         // Run's result
}

// newPanicRig builds the service with newService, as run does. wrapSource, if set, wraps
// the real objects client; panicIf, if set, makes the handler's Enqueuer
// panic after enqueueing the callbacks it picks. The pipeline's Run goroutine
// is stopped at cleanup if the test did not stop it.
func newPanicRig(t *testing.T, wrapSource func(ingest.Source) ingest.Source, panicIf func(ids []int64) bool) *panicRig {
	t.Helper()
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))

	up := &sim.Upstream{MinLatency: 5 * time.Millisecond, MaxLatency: 50 * time.Millisecond}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	cfg, err := config.Load([]string{"-src", upSrv.URL, "-db", pgtest.NewDB(t), "-wal-dir", "",
		"-workers", "8", "-min-lookups", "8", "-flush-interval", "20ms", "-ttl", "30s"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := newService(t.Context(), cfg, log, wrap{
		source:   wrapSource,
		enqueuer: func(q callback.Enqueuer) callback.Enqueuer { return &panicEnqueuer{next: q, PanicFunc: panicIf} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := svc.db.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	pipe, pool := svc.pipe, svc.pool

	srv := httptest.NewServer(svc.srv.Handler)
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 5 * time.Second

	runCtx, cancelRun := context.WithCancel(context.Background())
	rig := &panicRig{
		pipe: pipe, up: up, pool: pool, url: srv.URL, client: client, logs: logs,
		cancel: cancelRun, runDone: make(chan error, 1),
	}
	go func() { rig.runDone <- pipe.Run(runCtx) }()
	// Registered last, so it runs first: the pipeline stops before the
	// upstream and the pool it uses are closed.
	t.Cleanup(func() { rig.stop(t) })
	return rig
}

// stop closes the pipeline and waits for Run to drain and return, which must
// be nil. After 30 s it cancels the remaining work and fails the test.
func (r *panicRig) stop(t *testing.T) {
	t.Helper()
	r.stopOnce.Do(func() {
		defer r.cancel()
		r.pipe.Close()
		select {
		case err := <-r.runDone:
			if err != nil {
				t.Errorf("Run = %v, want nil after Close", err)
			}
		case <-time.After(30 * time.Second):
			r.cancel()
			t.Errorf("Run still running 30s after Close; cancelled: %v", <-r.runDone)
		}
	})
}

// waitForIDs polls the objects table until it holds exactly want, and
// returns it; after timeout it fails the test with what it last saw.
func (r *panicRig) waitForIDs(t *testing.T, want []int64, timeout time.Duration) map[int64]time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		table := r.table(t)
		got := slices.Sorted(maps.Keys(table))
		if slices.Equal(got, want) {
			return table
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: ids = %v, want %v\nlogs:\n%s", timeout, got, want, r.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *panicRig) table(t *testing.T) map[int64]time.Time {
	t.Helper()
	return readObjects(t, r.pool)
}
