// Package lifecycle starts the service's parts in dependency order, the
// long-running ones and the one-shot steps (Once) between them, and stops
// them in reverse, whatever made the service stop: a signal,
// a part that failed, a test that cancelled its context. It is River's
// startstop cut down to what main needs: a goroutine per part, owned by the
// Group, with one way to start it and one to stop it. It does not restart
// parts or supervise them beyond telling main that one has ended.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Part is one long-running piece of the service.
type Part struct {
	// Name labels the part in logs and errors.
	Name string
	// Run does the part's work and blocks until it is done: until its
	// context is cancelled or, for a part with Drain, until Drain has asked
	// it to finish.
	Run func(ctx context.Context) error
	// Drain, if set, asks Run to finish what it holds and return, within
	// ctx: Shutdown for an HTTP server, Close for a queue. Without Drain,
	// stopping the part cancels Run's context.
	Drain func(ctx context.Context) error
	// Once marks a step that ends when its work is done (apply the schema,
	// replay the log) rather than when it is stopped: its Run returning nil
	// does not close Ended. An error still does.
	Once bool
}

// Group runs parts. The zero value is not usable; call New.
type Group struct {
	log *slog.Logger

	mu    sync.Mutex // guards parts, which Abandon may read from another goroutine
	parts []*running // in start order

	ended     chan struct{} // closed when the first Run returns
	endedOnce sync.Once
}

type running struct {
	Part
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned; err is set before
	err    error
}

// New returns an empty group that logs through log.
func New(log *slog.Logger) *Group {
	if log == nil {
		panic("lifecycle: nil logger")
	}
	return &Group{log: log.With("component", "lifecycle"), ended: make(chan struct{})}
}

// Start runs p.Run in a goroutine of its own and returns at once. Run's
// context keeps ctx's values but not its cancellation: only Stop and Abandon
// end a part, so no part stops early just because a signal cancelled ctx.
// Call Start from one goroutine, and not after Stop.
func (g *Group) Start(ctx context.Context, p Part) {
	if p.Run == nil {
		panic("lifecycle: part " + p.Name + " has no Run")
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &running{Part: p, cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.parts = append(g.parts, r)
	g.mu.Unlock()
	go func() {
		defer close(r.done)
		r.err = r.Run(ctx)
		if !p.Once || r.err != nil {
			g.endedOnce.Do(func() { close(g.ended) })
		}
	}()
}

// Ended is closed as soon as any part's Run has returned, except a Once
// step's that succeeded. Before Stop that means a part gave up on its own (a
// listener died, say) and the service should stop.
func (g *Group) Ended() <-chan struct{} { return g.ended }

// Stop stops the parts in the reverse order of Start, each only once the
// part started after it has returned, so a part never loses what it depends
// on while it drains. Once ctx is done, the parts not yet stopped have their
// contexts cancelled: they abandon what is left and return quickly. Stop
// returns the errors of every Run, each prefixed with its part's name.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	parts := g.parts
	g.mu.Unlock()
	var errs []error
	for i := len(parts) - 1; i >= 0; i-- {
		r := parts[i]
		abandon := context.AfterFunc(ctx, r.cancel)
		if r.Drain == nil {
			r.cancel()
		} else if err := r.Drain(ctx); err != nil {
			g.log.WarnContext(ctx, "drain", "part", r.Name, "err", err)
		}
		<-r.done
		abandon()
		r.cancel()
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, r.err))
		}
	}
	return errors.Join(errs...)
}

// Abandon cancels every part's context at once, so each gives up what it
// still holds; a Stop in progress then finishes quickly. A second signal
// calls it. It is safe to call from any goroutine, at any time.
func (g *Group) Abandon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.parts {
		r.cancel()
	}
}
