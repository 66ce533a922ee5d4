package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Sender posts callbacks the way the customer's program does: a body {"object_ids":[...]}
// holding a random number of random IDs, Content-Type application/json, a client timeout,
// no retries, and the answer closed without reading it. Go's transport reuses such a
// keep-alive connection only when the answer had no body, just as for the customer.
//
// Each of Senders loops on its own. By default it waits Interval after each answer or error
// (fixed delay, like the customer); with Rate set it posts on a fixed schedule whether or
// not earlier posts were answered (open loop), so a slow service gets more concurrent posts
// instead of fewer, which is what a load test wants.
//
// Zero fields mean the customer's values, as each field says. Set the fields before Run;
// Run does not modify them.
type Sender struct {
	// Target is the callback URL, e.g. http://localhost:9090/callback. Required.
	Target string

	// Interval is the delay after each answer or error before a sender's next post.
	// Zero means 5s, like the customer; negative means none. Ignored when Rate > 0.
	Interval time.Duration

	// Rate, if positive, is posts per second per sender on a fixed schedule (open loop).
	Rate float64

	// Senders is how many senders run concurrently. Zero means 1. Their first posts are
	// staggered evenly over one period (Interval or 1/Rate) so they do not fire in lockstep.
	Senders int

	// MinIDs and MaxIDs bound the uniform number of IDs in each body. Zero MaxIDs means
	// 199, like the customer; negative MaxIDs means every body is {"object_ids":[]}.
	MinIDs, MaxIDs int

	// IDRange is how many distinct IDs there are: each ID is drawn uniformly from
	// IDBase to IDBase+IDRange-1, repeats within a body included. Zero means 100, like
	// the customer, whose bodies therefore hold about 57 distinct IDs on average.
	IDRange int64

	// IDBase is added to every drawn ID, e.g. to keep test runs on disjoint IDs.
	IDBase int64

	// FreshRate, if positive, slides the range of IDs forward by FreshRate IDs per second
	// since Run started, so that about FreshRate new distinct IDs a second appear (with
	// IDRange small enough that each ID is named only a few times): a load of new objects
	// rather than of the same ones again.
	FreshRate float64

	// Timeout bounds each post until the response headers arrive; a slower answer is an
	// error, which for the customer means a missed callback. Zero means 1s, like the
	// customer. It applies to a caller's Client too.
	Timeout time.Duration

	// InitialDelay is how long each sender waits before its first post. The customer
	// waits 5s; zero means no wait.
	InitialDelay time.Duration

	// MaxSends, if positive, ends Run after that many posts in total across senders.
	MaxSends int

	// Client sends the posts. Nil means a client with Timeout and a keep-alive transport
	// like Go's default one, but with an idle connection per host for every sender (and
	// every post a Rate can have in flight), so that senders reuse connections too.
	Client *http.Client

	// Log gets one record per post: Info when answered 2xx, Warn otherwise.
	// Nil means no logging.
	Log *slog.Logger

	// OnSendFunc, if set, is called after every post with its outcome, from several
	// goroutines at once when there are several senders or a Rate. Run waits for it.
	OnSendFunc func(SendResult)
}

// SendResult is the outcome of one post.
type SendResult struct {
	Sender   int           // which sender posted, 0 to Senders-1
	IDs      []int64       // the body's object_ids in order, possibly empty; read only
	Sent     time.Time     // when the post started
	Duration time.Duration // from Sent until the response headers or the error
	// Latency is Duration measured from when the post was due rather than when it
	// started: the same in closed loop, longer in open loop when the sender fell behind
	// (a slow service must not hide its queueing by slowing the load down).
	Latency    time.Duration
	Status     int    // the answer's HTTP status, or 0 when Err is set
	RetryAfter string // the answer's Retry-After header, if any
	Reused     bool   // whether the post went over a reused keep-alive connection
	Err        error  // transport error or timeout: no answer at all
}

// Run posts until ctx is done or MaxSends posts have started. Then it waits for the posts
// in flight, which ctx does not cancel (each is bounded by Timeout), so that every post
// has an outcome in the Summary and in OnSendFunc. Run returns an error only for an
// invalid configuration, before it posts anything; failed posts are counted and logged.
func (s *Sender) Run(ctx context.Context) (Summary, error) {
	r, err := s.runner()
	if err != nil {
		return Summary{}, err
	}
	if s.Client == nil {
		defer r.client.CloseIdleConnections()
	}
	var wg sync.WaitGroup
	r.started = time.Now()
	for i := range r.Senders {
		wg.Go(func() { r.loop(ctx, i) })
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := r.tally.summary()
	sum.Elapsed = time.Since(r.started)
	return sum, nil
}

// runner is one Run's state: a copy of the Sender with defaults applied.
type runner struct {
	Sender
	client  *http.Client
	log     *slog.Logger
	period  time.Duration // between a sender's posts with Rate, else Interval; for staggering
	started time.Time

	claimed atomic.Int64  // posts started or about to be, against MaxSends
	full    chan struct{} // closed when MaxSends posts are claimed; nil without MaxSends

	mu    sync.Mutex // guards tally
	tally tally
}

// runner checks s, applies the defaults and builds the client.
func (s *Sender) runner() (*runner, error) {
	r := &runner{Sender: *s}
	var errs []error
	if u, err := url.Parse(r.Target); err != nil {
		errs = append(errs, fmt.Errorf("target: %w", err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("target %q: want an http or https URL", r.Target))
	}
	switch {
	case r.Interval == 0:
		r.Interval = 5 * time.Second
	case r.Interval < 0:
		r.Interval = 0
	}
	r.period = r.Interval
	switch {
	case !(r.Rate >= 0):
		errs = append(errs, fmt.Errorf("rate %v: want >= 0", r.Rate))
	case r.Rate > 0:
		r.period = time.Duration(float64(time.Second) / r.Rate)
		if r.period <= 0 {
			errs = append(errs, fmt.Errorf("rate %v: too high", r.Rate))
		}
	}
	if r.Senders == 0 {
		r.Senders = 1
	}
	if r.Senders < 0 {
		errs = append(errs, fmt.Errorf("senders %d: want >= 0", r.Senders))
	}
	switch {
	case r.MaxIDs == 0:
		r.MaxIDs = 199
	case r.MaxIDs < 0:
		r.MaxIDs = 0
	}
	if r.MinIDs < 0 || r.MinIDs > r.MaxIDs {
		errs = append(errs, fmt.Errorf("min ids %d: want 0 to max ids %d", r.MinIDs, r.MaxIDs))
	}
	if r.IDRange == 0 {
		r.IDRange = 100
	}
	if r.IDRange < 0 || r.IDBase > math.MaxInt64-(r.IDRange-1) {
		errs = append(errs, fmt.Errorf("id range %d from %d: want a positive range within int64", r.IDRange, r.IDBase))
	}
	if r.Timeout == 0 {
		r.Timeout = time.Second
	}
	if r.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: want >= 0", r.Timeout))
	}
	if r.InitialDelay < 0 {
		errs = append(errs, fmt.Errorf("initial delay %v: want >= 0", r.InitialDelay))
	}
	if r.MaxSends < 0 {
		errs = append(errs, fmt.Errorf("max sends %d: want >= 0", r.MaxSends))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sim: invalid sender: %w", err)
	}

	if r.MaxSends > 0 {
		r.full = make(chan struct{})
	}
	r.log = r.Log
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.client = r.Client
	if r.client == nil {
		idle := max(r.Senders, 2) // 2 is Go's default per host
		if r.Rate > 0 {
			// Posts in flight at once when every one takes the full Timeout.
			idle = max(idle, int(math.Ceil(r.Rate*float64(r.Senders)*r.Timeout.Seconds())))
		}
		r.client = &http.Client{Timeout: r.Timeout, Transport: newTransport(idle)}
	}
	return r, nil
}

// newTransport returns a transport configured like http.DefaultTransport, except that it
// keeps up to idle connections per host.
func newTransport(idle int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, idle),
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// loop is one sender: it waits out InitialDelay and its stagger, then posts until ctx is
// done or MaxSends is reached, and returns only when its own posts have finished.
func (r *runner) loop(ctx context.Context, sender int) {
	if !r.wait(ctx, r.InitialDelay+time.Duration(sender)*r.period/time.Duration(r.Senders)) {
		return
	}
	if r.Rate > 0 {
		r.openLoop(ctx, sender)
		return
	}
	for r.claim() {
		r.send(ctx, sender, time.Now())
		if !r.wait(ctx, r.Interval) {
			return
		}
	}
}

// openLoop posts every r.period without waiting for answers; posts still in flight when
// it stops are waited for before it returns. Each post's latency counts from the moment
// it was due, on the schedule, not from when a busy machine got round to it.
func (r *runner) openLoop(ctx context.Context, sender int) {
	tick := time.NewTicker(r.period)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	due := time.Now()
	for r.claim() {
		thisDue := due
		wg.Go(func() { r.send(ctx, sender, thisDue) })
		due = due.Add(r.period)
		select {
		case <-ctx.Done():
			return
		case <-r.full:
			return
		case <-tick.C:
		}
	}
}

// claim reserves one post under MaxSends and reports whether there was one left.
// Whoever takes the last one closes r.full, which wakes every waiting sender.
func (r *runner) claim() bool {
	if r.MaxSends <= 0 {
		return true
	}
	n := r.claimed.Add(1)
	if n == int64(r.MaxSends) {
		close(r.full)
	}
	return n <= int64(r.MaxSends)
}

// wait sleeps for d and reports whether the sender should go on: false as soon as ctx is
// done or every post under MaxSends has been claimed.
func (r *runner) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ctx.Done():
			return false
		case <-r.full:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-r.full:
		return false
	case <-t.C:
		return true
	}
}

// send makes one post, due at due, and reports it to the log, the tally and OnSendFunc.
func (r *runner) send(ctx context.Context, sender int, due time.Time) {
	ids := make([]int64, r.MinIDs+rand.IntN(r.MaxIDs-r.MinIDs+1)) // never nil: [] not null
	base := r.IDBase
	if r.FreshRate > 0 {
		base += int64(time.Since(r.started).Seconds() * r.FreshRate)
	}
	for i := range ids {
		ids[i] = base + rand.Int64N(r.IDRange)
	}
	res := r.post(ctx, ids)
	res.Sender = sender
	res.Latency = res.Sent.Sub(due) + res.Duration
	if res.Sent.IsZero() { // not sent: the body could not be built
		res.Latency = res.Duration
	}

	switch {
	case res.Err != nil:
		r.log.LogAttrs(ctx, slog.LevelWarn, "callback failed",
			slog.Int("sender", sender), slog.Int("count", len(ids)),
			slog.Duration("duration", res.Duration), slog.Any("err", res.Err))
	case res.Status/100 == 2:
		r.log.LogAttrs(ctx, slog.LevelInfo, "callback sent",
			slog.Int("sender", sender), slog.Int("status", res.Status), slog.Int("count", len(ids)),
			slog.Duration("duration", res.Duration), slog.Bool("reused", res.Reused))
	default:
		r.log.LogAttrs(ctx, slog.LevelWarn, "callback rejected",
			slog.Int("sender", sender), slog.Int("status", res.Status), slog.Int("count", len(ids)),
			slog.Duration("duration", res.Duration), slog.String("retry_after", res.RetryAfter))
	}
	r.mu.Lock()
	r.tally.add(res)
	r.mu.Unlock()
	if r.OnSendFunc != nil {
		r.OnSendFunc(res)
	}
}

// post sends ids and closes the answer unread, like the customer's program. It runs on
// its own deadline, detached from ctx, so that stopping Run does not turn posts the
// service may already have taken into errors.
func (r *runner) post(ctx context.Context, ids []int64) SendResult {
	res := SendResult{IDs: ids}
	body, err := json.Marshal(struct {
		ObjectIDs []int64 `json:"object_ids"`
	}{ids})
	if err != nil {
		res.Err = fmt.Errorf("encode body: %w", err)
		return res
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout)
	defer cancel()
	var reused atomic.Bool // written by the transport, which may use another goroutine
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Target, bytes.NewReader(body))
	if err != nil {
		res.Err = fmt.Errorf("build request: %w", err)
		return res
	}
	req.Header.Set("Content-Type", "application/json")

	res.Sent = time.Now()
	resp, err := r.client.Do(req)
	res.Duration = time.Since(res.Sent)
	res.Reused = reused.Load()
	if err != nil {
		res.Err = err
		return res
	}
	// Closing an unread body cannot fail in a way that matters to the sender; an unread
	// non-empty body just costs the connection, as it does for the customer.
	resp.Body.Close()
	res.Status = resp.StatusCode
	res.RetryAfter = resp.Header.Get("Retry-After")
	return res
}
