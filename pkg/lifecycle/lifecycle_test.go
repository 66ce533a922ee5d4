package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"callback/pkg/lifecycle"
	"callback/pkg/logtest"
)

// journal records events from several goroutines.
type journal struct {
	mu     sync.Mutex
	events []string // guarded by mu
}

func (j *journal) add(e string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, e)
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

// untilCancelled is a Run that records when it returns.
func untilCancelled(j *journal, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		j.add(name + " returned")
		return nil
	}
}

func TestStopReverseOrderAndDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var j journal
		g := lifecycle.New(logtest.Discard())
		drained := make(chan struct{})
		g.Start(t.Context(), lifecycle.Part{Name: "first", Run: untilCancelled(&j, "first")})
		g.Start(t.Context(), lifecycle.Part{
			Name: "second",
			Run: func(ctx context.Context) error {
				select {
				case <-drained: // finishes its work, as a drained queue does
					time.Sleep(time.Second)
					j.add("second returned")
					return nil
				case <-ctx.Done():
					return errors.New("second cancelled, want drained")
				}
			},
			Drain: func(context.Context) error {
				j.add("second drained")
				close(drained)
				return nil
			},
		})
		g.Start(t.Context(), lifecycle.Part{Name: "third", Run: untilCancelled(&j, "third")})

		if err := g.Stop(t.Context()); err != nil {
			t.Fatalf("Stop = %v, want nil", err)
		}
		want := []string{"third returned", "second drained", "second returned", "first returned"}
		if got := j.get(); !slices.Equal(got, want) {
			t.Errorf("events = %q, want %q", got, want)
		}
	})
}

// A part that ends on its own closes Ended; Stop still stops the others and
// returns that part's error with its name.
func TestEndedOnFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var j journal
		g := lifecycle.New(logtest.Discard())
		boom := errors.New("listener died")
		g.Start(t.Context(), lifecycle.Part{Name: "worker", Run: untilCancelled(&j, "worker")})
		g.Start(t.Context(), lifecycle.Part{Name: "http", Run: func(context.Context) error {
			time.Sleep(time.Second)
			return boom
		}})
		select {
		case <-g.Ended():
		case <-time.After(time.Minute):
			t.Fatal("Ended not closed after a part returned")
		}
		err := g.Stop(t.Context())
		if !errors.Is(err, boom) || err.Error() != "http: listener died" {
			t.Errorf("Stop = %v, want %q", err, "http: listener died")
		}
		if got := j.get(); !slices.Equal(got, []string{"worker returned"}) {
			t.Errorf("events = %q, want the worker stopped", got)
		}
	})
}

// A Once step that finishes does not end the group; one that fails does.
func TestOnceStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New(logtest.Discard())
		done := make(chan struct{})
		g.Start(t.Context(), lifecycle.Part{Name: "schema", Once: true, Run: func(context.Context) error {
			defer close(done)
			time.Sleep(time.Second)
			return nil
		}})
		<-done
		synctest.Wait()
		select {
		case <-g.Ended():
			t.Fatal("Ended closed after a Once step succeeded")
		default:
		}
		boom := errors.New("cannot read the log")
		g.Start(t.Context(), lifecycle.Part{Name: "replay", Once: true, Run: func(context.Context) error { return boom }})
		select {
		case <-g.Ended():
		case <-time.After(time.Minute):
			t.Fatal("Ended not closed after a Once step failed")
		}
		if err := g.Stop(t.Context()); err == nil || err.Error() != "replay: cannot read the log" {
			t.Errorf("Stop = %v, want %q", err, "replay: cannot read the log")
		}
	})
}

// The parent context's cancellation (a signal) does not stop a part: only
// Stop does, in order.
func TestParentCancelDoesNotStopParts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var j journal
		g := lifecycle.New(logtest.Discard())
		ctx, cancel := context.WithCancel(t.Context())
		g.Start(ctx, lifecycle.Part{Name: "p", Run: untilCancelled(&j, "p")})
		cancel()
		synctest.Wait()
		if got := j.get(); len(got) != 0 {
			t.Fatalf("events = %q after the parent was cancelled, want none", got)
		}
		if err := g.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := j.get(); !slices.Equal(got, []string{"p returned"}) {
			t.Errorf("events = %q, want p stopped by Stop", got)
		}
	})
}

// At Stop's deadline a draining part is cancelled; Abandon cancels at once.
func TestDeadlineAndAbandonCancel(t *testing.T) {
	for _, abandon := range []bool{false, true} {
		name := map[bool]string{false: "deadline", true: "abandon"}[abandon]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := lifecycle.New(logtest.Discard())
				start := time.Now()
				g.Start(t.Context(), lifecycle.Part{
					Name:  "queue",
					Run:   func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) },
					Drain: func(context.Context) error { return nil }, // never finishes by itself
				})
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				if abandon {
					time.AfterFunc(time.Second, g.Abandon)
				}
				err := g.Stop(ctx)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Stop = %v, want the part's cancellation", err)
				}
				want := 10 * time.Second
				if abandon {
					want = time.Second
				}
				if got := time.Since(start); got != want {
					t.Errorf("Stop took %v, want %v", got, want)
				}
			})
		})
	}
}
