package expiry_test

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"callback/pkg/expiry"
	"callback/pkg/logtest"
)

type fakeDeleter struct {
	DeleteStaleFunc func(ctx context.Context, before time.Time, limit int) (int64, error)
}

func (f *fakeDeleter) DeleteStale(ctx context.Context, before time.Time, limit int) (int64, error) {
	return f.DeleteStaleFunc(ctx, before, limit)
}

// deleteCall is what one DeleteStale call saw.
type deleteCall struct {
	at       time.Time // when it was called
	before   time.Time
	limit    int
	deadline time.Duration // ctx deadline minus the call time; -1 if none
}

// recorder records DeleteStale calls and answers each with the next of its
// results, then with (0, nil) once they run out. It is safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	results []result     // guarded by mu
	calls   []deleteCall // guarded by mu
}

type result struct {
	n   int64
	err error
}

func (r *recorder) deleter() *fakeDeleter {
	return &fakeDeleter{DeleteStaleFunc: func(ctx context.Context, before time.Time, limit int) (int64, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		c := deleteCall{at: time.Now(), before: before, limit: limit, deadline: -1}
		if dl, ok := ctx.Deadline(); ok {
			c.deadline = dl.Sub(c.at)
		}
		r.calls = append(r.calls, c)
		if len(r.results) == 0 {
			return 0, nil
		}
		res := r.results[0]
		r.results = r.results[1:]
		return res.n, res.err
	}}
}

// stopRun cancels a Run inside a synctest bubble and checks that it returned
// nil at once.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	synctest.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	default:
		t.Fatal("Run did not return after cancel")
	}
}

func (r *recorder) Calls() []deleteCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]deleteCall(nil), r.calls...)
}

func TestSweep(t *testing.T) {
	const (
		batch   = 100
		ttl     = 30 * time.Second
		timeout = 2 * time.Second
	)
	errDB := errors.New("db down")
	tests := []struct {
		name      string
		results   []result
		wantTotal int64
		wantErr   error
		wantCalls int
	}{
		{name: "nothing-stale", results: []result{{0, nil}}, wantTotal: 0, wantCalls: 1},
		{name: "one-short-batch", results: []result{{3, nil}}, wantTotal: 3, wantCalls: 1},
		{name: "one-below-full-is-short", results: []result{{batch - 1, nil}, {batch, nil}}, wantTotal: batch - 1, wantCalls: 1},
		{name: "loops-until-short", results: []result{{batch, nil}, {batch, nil}, {3, nil}}, wantTotal: 2*batch + 3, wantCalls: 3},
		{name: "exact-multiple-ends-on-empty", results: []result{{batch, nil}, {batch, nil}, {0, nil}}, wantTotal: 2 * batch, wantCalls: 3},
		{name: "error-first", results: []result{{0, errDB}}, wantTotal: 0, wantErr: errDB, wantCalls: 1},
		{name: "error-midway-keeps-partial-total", results: []result{{batch, nil}, {batch, nil}, {0, errDB}, {batch, nil}},
			wantTotal: 2 * batch, wantErr: errDB, wantCalls: 3},
		{name: "error-with-count", results: []result{{batch, nil}, {7, errDB}}, wantTotal: batch + 7, wantErr: errDB, wantCalls: 2},
		{name: "full-batch-with-error-stops", results: []result{{batch, errDB}, {batch, nil}}, wantTotal: batch, wantErr: errDB, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The bubble's clock stands still while the sweep runs, so the
			// deadline each call sees is exactly the timeout.
			synctest.Test(t, func(t *testing.T) {
				rec := &recorder{results: tt.results}
				s := expiry.New(logtest.Discard(), rec.deleter(), expiry.Options{TTL: ttl, Interval: time.Minute, Batch: batch, Timeout: timeout})
				now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
				nowCalls := 0
				s.NowFunc = func() time.Time {
					nowCalls++
					now = now.Add(time.Hour) // a clock that moves on every read
					return now
				}

				total, err := s.Sweep(t.Context())
				if total != tt.wantTotal {
					t.Errorf("Sweep total = %d, want %d", total, tt.wantTotal)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Sweep error = %v, want %v", err, tt.wantErr)
				}
				calls := rec.Calls()
				if len(calls) != tt.wantCalls {
					t.Fatalf("DeleteStale called %d times, want %d", len(calls), tt.wantCalls)
				}
				if nowCalls != 1 {
					t.Errorf("NowFunc called %d times in one sweep, want 1", nowCalls)
				}
				wantBefore := now.Add(-ttl)
				for i, c := range calls {
					if !c.before.Equal(wantBefore) {
						t.Errorf("call %d: before = %v, want %v (NowFunc - ttl, same for the whole sweep)", i, c.before, wantBefore)
					}
					if c.limit != batch {
						t.Errorf("call %d: limit = %d, want %d", i, c.limit, batch)
					}
					if c.deadline != timeout {
						t.Errorf("call %d: ctx deadline in %v, want %v", i, c.deadline, timeout)
					}
				}
			})
		})
	}
}

// TestSweepTimeoutCancelsStatement checks that a statement that hangs is
// cut off by the per-statement timeout rather than blocking the sweep.
func TestSweepTimeoutCancelsStatement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 5 * time.Second
		del := &fakeDeleter{DeleteStaleFunc: func(ctx context.Context, _ time.Time, _ int) (int64, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}}
		s := expiry.New(logtest.Discard(), del, expiry.Options{TTL: time.Minute, Interval: time.Minute, Batch: 10, Timeout: timeout})
		start := time.Now()
		_, err := s.Sweep(t.Context())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Sweep error = %v, want context.DeadlineExceeded", err)
		}
		if got := time.Since(start); got != timeout {
			t.Errorf("Sweep took %v, want the %v statement timeout", got, timeout)
		}
	})
}

func TestSweepParentContext(t *testing.T) {
	// Each statement's context must derive from the caller's, so cancelling
	// the caller reaches the statement.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var gotErr error
	del := &fakeDeleter{DeleteStaleFunc: func(ctx context.Context, _ time.Time, _ int) (int64, error) {
		gotErr = ctx.Err()
		return 0, ctx.Err()
	}}
	s := expiry.New(logtest.Discard(), del, expiry.Options{TTL: time.Minute, Interval: time.Minute, Batch: 10, Timeout: time.Minute})
	if _, err := s.Sweep(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sweep error = %v, want context.Canceled", err)
	}
	if !errors.Is(gotErr, context.Canceled) {
		t.Errorf("statement ctx.Err() = %v, want context.Canceled", gotErr)
	}
}

func TestRun(t *testing.T) {
	const (
		ttl      = 30 * time.Second
		interval = time.Second
		batch    = 10
		timeout  = 500 * time.Millisecond
	)
	errDB := errors.New("db down")

	synctest.Test(t, func(t *testing.T) {
		// Sweep 1: one short batch. Sweep 2: fails midway. Sweep 3: deletes
		// nothing. Sweep 4: two batches.
		rec := &recorder{results: []result{
			{4, nil},
			{batch, nil}, {0, errDB},
			{0, nil},
			{batch, nil}, {1, nil},
		}}
		log, logs := logtest.Text()
		s := expiry.New(log, rec.deleter(), expiry.Options{TTL: ttl, Interval: interval, Batch: batch, Timeout: timeout})

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		// wantCalls checks when each DeleteStale call so far happened, relative to
		// start, and that each cutoff was the clock at that time minus the TTL.
		wantCalls := func(step string, want ...time.Duration) {
			t.Helper()
			calls := rec.Calls()
			if len(calls) != len(want) {
				t.Fatalf("%s: DeleteStale called %d times, want %d", step, len(calls), len(want))
			}
			for i, c := range calls {
				if got := c.at.Sub(start); got != want[i] {
					t.Errorf("%s: call %d at %v, want %v", step, i, got, want[i])
				}
				if wantBefore := c.at.Add(-ttl); !c.before.Equal(wantBefore) {
					t.Errorf("%s: call %d before = %v, want now-ttl = %v", step, i, c.before, wantBefore)
				}
			}
		}

		synctest.Wait()
		wantCalls("at start", 0)

		time.Sleep(interval)
		synctest.Wait()
		wantCalls("after 1 interval", 0, interval, interval)

		time.Sleep(interval)
		synctest.Wait()
		wantCalls("after 2 intervals, despite the error", 0, interval, interval, 2*interval)

		time.Sleep(interval / 2)
		synctest.Wait()
		wantCalls("between ticks", 0, interval, interval, 2*interval)

		time.Sleep(interval / 2)
		synctest.Wait()
		wantCalls("after 3 intervals", 0, interval, interval, 2*interval, 3*interval, 3*interval)

		stopRun(t, cancel, done)

		time.Sleep(10 * interval)
		synctest.Wait()
		if got := len(rec.Calls()); got != 6 {
			t.Errorf("DeleteStale called %d times after Run returned, want 6 as before", got)
		}

		got := logs.String()
		for _, want := range []string{
			`level=WARN msg=sweep component=expiry count=10 err="db down"`,
			`level=INFO msg="deleted stale objects" component=expiry count=4`,
			`level=INFO msg="deleted stale objects" component=expiry count=11`,
		} {
			if !strings.Contains(got, want) {
				t.Errorf("log = %q, want a line with %q", got, want)
			}
		}
		if n := strings.Count(got, "\n"); n != 3 {
			t.Errorf("log has %d lines, want 3 (a sweep that deleted nothing logs nothing):\n%s", n, got)
		}
	})
}

// TestRunCancelDuringSweep cancels while a statement is running: Run returns
// nil and does not log the cancellation as a failed sweep.
func TestRunCancelDuringSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		del := &fakeDeleter{DeleteStaleFunc: func(ctx context.Context, _ time.Time, _ int) (int64, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		}}
		log, logs := logtest.Text()
		s := expiry.New(log, del, expiry.Options{TTL: time.Minute, Interval: time.Second, Batch: 10, Timeout: time.Hour})

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		select {
		case <-started:
		default:
			cancel()
			t.Fatal("Run did not sweep at start")
		}
		stopRun(t, cancel, done)
		if got := logs.String(); got != "" {
			t.Errorf("log = %q, want nothing logged for a cancelled sweep", got)
		}
	})
}

// TestRunCancelledBeforeStart: Run with a done context still returns nil
// promptly (after at most the one initial sweep).
func TestRunCancelledBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := expiry.New(logtest.Discard(), rec.deleter(), expiry.Options{TTL: time.Minute, Interval: time.Second, Batch: 10, Timeout: time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if got := len(rec.Calls()); got > 1 {
			t.Errorf("DeleteStale called %d times, want at most 1", got)
		}
	})
}

func TestNewNilDependency(t *testing.T) {
	tests := []struct {
		name string
		log  *slog.Logger
		del  expiry.Deleter
		ttl  time.Duration // 0 means a minute
	}{
		{name: "nil-logger", del: &fakeDeleter{}},
		{name: "nil-deleter", log: logtest.Discard()},
		{name: "no-ttl", log: logtest.Discard(), del: &fakeDeleter{}, ttl: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil {
					t.Error("recover() = nil, want a panic")
				}
			}()
			ttl := cmp.Or(tt.ttl, time.Minute)
			expiry.New(tt.log, tt.del, expiry.Options{TTL: ttl, Interval: time.Second, Batch: 10, Timeout: time.Second})
		})
	}
}

// TestRunPaused skips sweeps while PauseFunc says the writer is behind, and
// resumes at the next tick after it catches up.
func TestRunPaused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := expiry.New(logtest.Discard(), rec.deleter(), expiry.Options{TTL: 30 * time.Second, Interval: time.Second, Batch: 10, Timeout: time.Second})
		var mu sync.Mutex
		behind := true
		s.PauseFunc = func() bool {
			mu.Lock()
			defer mu.Unlock()
			return behind
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		time.Sleep(3500 * time.Millisecond) // the start sweep and three ticks, all paused
		synctest.Wait()
		if got := len(rec.Calls()); got != 0 {
			t.Fatalf("DeleteStale called %d times while paused, want 0", got)
		}
		mu.Lock()
		behind = false
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := len(rec.Calls()); got != 1 {
			t.Fatalf("DeleteStale called %d times after resuming, want 1", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

// Options left zero take the named defaults.
func TestNewDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := expiry.New(logtest.Discard(), rec.deleter(), expiry.Options{TTL: time.Minute})
		if _, err := s.Sweep(t.Context()); err != nil {
			t.Fatal(err)
		}
		calls := rec.Calls()
		if len(calls) != 1 {
			t.Fatalf("DeleteStale called %d times, want 1", len(calls))
		}
		if got := calls[0].limit; got != expiry.DefaultBatch {
			t.Errorf("limit = %d, want DefaultBatch %d", got, expiry.DefaultBatch)
		}
		if got := calls[0].deadline; got != expiry.DefaultTimeout {
			t.Errorf("statement deadline = %v, want DefaultTimeout %v", got, expiry.DefaultTimeout)
		}
	})
}
