package integrationtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// Slow and idle clients against the built binary. The server's timeouts
// (ReadHeaderTimeout 2s, ReadTimeout 10s, IdleTimeout 120s in main.go) must
// cut a client that trickles, while everyone else keeps getting 202 at once.

// TestSlowHeaderTrickle sends request headers one byte a second: the server
// must drop the connection after its 2 s header timeout, and answer other
// clients meanwhile.
func TestSlowHeaderTrickle(t *testing.T) {
	svc, db, _ := startScenario(t, buildService(t), upstream(t, &sim.Upstream{}), "-ttl", "30s")
	client := slowClient(t)
	l := newLedger()

	header := "POST /callback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n"
	// Other clients post every 200 ms for as long as the trickler lasts.
	end, cut, sentBytes, latencies, _ := trickle(t, svc, client, l, "", []byte(header), time.Second, 200*time.Millisecond, 10*time.Second)
	how := end.describe()
	switch {
	case !end.closedByServer():
		t.Errorf("trickled connection: %s after %v, want the server to close it", how, cut)
	case cut > 5*time.Second:
		t.Errorf("trickled connection closed after %v, want within ~5s (ReadHeaderTimeout 2s)", cut)
	}
	if len(latencies) == 0 {
		t.Fatal("no post was sent while the trickler was connected: the test proved nothing")
	}

	checked := l.settle(t, db, even, 30*time.Second, 15*time.Second)
	report(t, "header-trickle",
		fmt.Sprintf("%d posts of 5 ids (max latency %v) beside 1 conn sending headers at 1 B/s",
			len(latencies), slices.Max(latencies).Round(time.Microsecond)),
		fmt.Sprintf("conn cut after %v with %d header bytes sent (%s)", cut.Round(time.Millisecond), sentBytes, how),
		checked, 0)
}

// trickle is what both slow-client tests do: on a raw connection to svc it
// writes prefix at once, then data one byte every every, while other
// clients post beside it every postEvery (see postBeside), until the server
// ends the connection or limit passes. It returns how the connection ended,
// how long after the first trickled byte, the bytes trickled, and the other
// posts' latencies and IDs.
func trickle(t *testing.T, svc *service, client *http.Client, l *ledger, prefix string, data []byte, every, postEvery, limit time.Duration) (end rawEnd, cut time.Duration, trickled int, latencies []time.Duration, ids map[int64]bool) {
	t.Helper()
	conn := dialRaw(t, svc)
	if _, err := io.WriteString(conn, prefix); err != nil {
		t.Fatalf("write %q: %v", prefix, err)
	}
	start := time.Now()
	ended := make(chan rawEnd, 1)
	go func() { ended <- readUntilClosed(conn, limit) }()
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() { sent <- trickleBytes(conn, data, every, stop) }()
	end, latencies, ids = postBeside(t, client, svc.URL, l, postEvery, ended)
	close(stop)
	return end, end.at.Sub(start), <-sent, latencies, ids
}

// postBeside posts 5 new IDs every interval until ended yields how the
// trickled connection ended, and returns that, each post's latency and the
// IDs posted. Every post must get a 202.
func postBeside(t *testing.T, client *http.Client, url string, l *ledger, every time.Duration, ended <-chan rawEnd) (rawEnd, []time.Duration, map[int64]bool) {
	t.Helper()
	var latencies []time.Duration
	sent := map[int64]bool{}
	next := int64(1000)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case end := <-ended:
			return end, latencies, sent
		case <-tick.C:
			ids := idsFrom(next, 5)
			next += 5
			r := slowPost(client, url, ids)
			l.record(r)
			latencies = append(latencies, r.Duration)
			for _, id := range ids {
				sent[id] = true
			}
			if r.Err != nil || r.Status != http.StatusAccepted {
				t.Errorf("post beside the trickler: status %d, err %v, want 202", r.Status, r.Err)
			}
		}
	}
}

// TestSlowBodyTrickle sends full headers with Content-Length 1000, then the
// body one byte every 500 ms: the server must give up at its 10 s ReadTimeout
// without a 202, store nothing from that body, and answer other clients
// meanwhile.
func TestSlowBodyTrickle(t *testing.T) {
	svc, db, _ := startScenario(t, buildService(t), upstream(t, &sim.Upstream{}), "-ttl", "30s")
	client := slowClient(t)
	l := newLedger()

	// A valid body, IDs first, padded to exactly 1000 bytes; none of its IDs
	// is ever sent another way.
	trickleIDs := idsFrom(900_000, 20)
	body := []byte(`{"object_ids":[` + joinIDs(trickleIDs) + `]}`)
	body = append(body, bytes.Repeat([]byte(" "), 1000-len(body))...)
	header := "POST /callback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
	end, cut, sentBytes, latencies, sent := trickle(t, svc, client, l, header, body, 500*time.Millisecond, 500*time.Millisecond, 20*time.Second)
	how := end.describe()
	switch {
	case end.status == http.StatusAccepted:
		t.Errorf("trickled body answered 202 after %d of 1000 bytes, want a refusal or a cut", sentBytes)
	case !end.closedByServer():
		t.Errorf("trickled connection: %s after %v, want the server to end it", how, cut)
	case cut > 15*time.Second:
		t.Errorf("trickled connection ended after %v, want within ~15s (ReadTimeout 10s)", cut)
	}
	if len(latencies) == 0 {
		t.Fatal("no post was sent while the trickler was connected: the test proved nothing")
	}

	checked := l.settle(t, db, even, 30*time.Second, 15*time.Second)
	for id := range objectsTable(t, db) {
		if !sent[id] {
			t.Errorf("id %d stored, but only the trickled body named it", id)
		}
	}
	report(t, "body-trickle",
		fmt.Sprintf("%d posts of 5 ids (max latency %v) beside 1 conn sending a 1000-byte body at 2 B/s",
			len(latencies), slices.Max(latencies).Round(time.Microsecond)),
		fmt.Sprintf("conn ended after %v with %d body bytes sent (%s)", cut.Round(time.Millisecond), sentBytes, how),
		checked, 0)
}

// TestIdleConnections holds 1,000 TCP connections open to the service (half
// of them kept alive after a request, a quarter silent, a quarter stopped in
// the middle of a header) and then sends 50 ordinary callbacks: each must be
// answered 202. Latencies are reported, not asserted, beyond the client's 1 s
// timeout: this machine is shared.
func TestIdleConnections(t *testing.T) {
	const (
		keptAlive = 500
		silent    = 250
		partial   = 250
		posts     = 50
	)
	dbURL := pgtest.NewDB(t)
	// Without the race detector: the posts must be answered within the
	// sender's second, and a binary five to ten times slower on a shared
	// 2-core machine missed that once for no fault of the service.
	svc := startService(t, buildFast(t), dbURL, upstream(t, &sim.Upstream{}), "-ttl", "30s")
	db := connect(t, dbURL)
	client := slowClient(t)
	l := newLedger()

	kinds := slices.Concat(
		slices.Repeat([]string{"kept-alive"}, keptAlive),
		slices.Repeat([]string{"silent"}, silent),
		slices.Repeat([]string{"partial"}, partial))
	conns := make([]net.Conn, len(kinds))
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	start := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards openErrs
		openErrs []error
		slots    = make(chan struct{}, 32) // dials in flight
	)
	for i, kind := range kinds {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			c, err := openIdle(svc, kind)
			conns[i] = c // each goroutine writes only its own slot
			if err != nil {
				mu.Lock()
				openErrs = append(openErrs, fmt.Errorf("conn %d (%s): %w", i, kind, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	opened := time.Since(start)
	if len(openErrs) > 0 {
		t.Fatalf("%d of %d connections failed to open, first: %v", len(openErrs), len(kinds), openErrs[0])
	}

	latencies := make([]time.Duration, 0, posts)
	for i := range posts {
		r := slowPost(client, svc.URL, idsFrom(int64(1000+20*i), 20))
		l.record(r)
		if r.Err != nil || r.Status != http.StatusAccepted {
			t.Errorf("post %d with %d idle connections: status %d, err %v, want 202", i, len(kinds), r.Status, r.Err)
			continue
		}
		latencies = append(latencies, r.Duration)
	}
	postsDone := time.Since(start)
	open := stillOpen(conns, kinds)

	checked := l.settle(t, db, even, 30*time.Second, 15*time.Second)
	if len(latencies) == 0 {
		t.Fatal("no post was answered 202")
	}
	slices.Sort(latencies)
	report(t, "idle-connections",
		fmt.Sprintf("%d posts of 20 ids, p50 %v p99 %v max %v",
			posts, durationQuantile(latencies, 0.50), durationQuantile(latencies, 0.99), latencies[len(latencies)-1]),
		fmt.Sprintf("%d idle conns (%d kept-alive, %d silent, %d partial header) opened in %v, posts done %v after the first dial, "+
			"still open after the posts: kept-alive %d, silent %d, partial %d",
			len(kinds), keptAlive, silent, partial, opened.Round(time.Millisecond), postsDone.Round(time.Millisecond),
			open["kept-alive"], open["silent"], open["partial"]),
		checked, 0)
}

// slowClient is a client with the customer's 1 s timeout and its own
// transport, so the posts of one test never share connections with another.
func slowClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Second}
}

// slowPost sends ids as one callback and returns the outcome in the form
// the ledger records.
func slowPost(client *http.Client, baseURL string, ids []int64) sim.SendResult {
	r := sim.SendResult{IDs: ids, Sent: time.Now()}
	resp, err := client.Post(baseURL+"/callback", "application/json",
		strings.NewReader(`{"object_ids":[`+joinIDs(ids)+`]}`))
	r.Duration = time.Since(r.Sent)
	if err != nil {
		r.Err = err
		return r
	}
	_, _ = io.Copy(io.Discard, resp.Body) // a fully read answer keeps the connection
	resp.Body.Close()
	r.Status, r.RetryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	return r
}

// idsFrom returns n consecutive IDs starting at first.
func idsFrom(first int64, n int) []int64 {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = first + int64(i)
	}
	return ids
}

func joinIDs(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ",")
}

// dialRaw opens a plain TCP connection to the service; it is closed at
// cleanup.
func dialRaw(t *testing.T, svc *service) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(svc.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial service: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// trickleBytes writes b to c one byte per every, until all is written, a
// write fails (the server hung up) or stop is closed. It returns how many
// bytes were written.
func trickleBytes(c net.Conn, b []byte, every time.Duration, stop <-chan struct{}) int {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := range b {
		if err := c.SetWriteDeadline(time.Now().Add(every)); err != nil {
			return n
		}
		if _, err := c.Write(b[n : n+1]); err != nil {
			return n
		}
		select {
		case <-stop:
			return n + 1
		case <-tick.C:
		}
	}
	return len(b)
}

// rawEnd is how a raw connection ended, as its reader saw it.
type rawEnd struct {
	at     time.Time // when the read ended
	data   []byte    // everything the server sent
	status int       // status of the first response in data, 0 if none
	err    error     // the error that ended the read; io.EOF for a clean close
}

// readUntilClosed reads c until the server closes it or limit passes.
func readUntilClosed(c net.Conn, limit time.Duration) rawEnd {
	var e rawEnd
	if e.err = c.SetReadDeadline(time.Now().Add(limit)); e.err != nil {
		e.at = time.Now()
		return e
	}
	var buf bytes.Buffer
	_, e.err = io.Copy(&buf, c) // returns nil at EOF
	e.at = time.Now()
	if e.err == nil {
		e.err = io.EOF
	}
	e.data = buf.Bytes()
	if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(e.data)), nil); err == nil {
		e.status = resp.StatusCode
		resp.Body.Close()
	}
	return e
}

// closedByServer reports whether the server ended the connection: a clean
// close or a reset, and nothing sent before it but an optional 4xx. As of Go
// 1.26, net/http answers a header timeout that follows some bytes with a
// plain-text 400 (not 408) before closing, and a body timeout usually ends in
// a reset, because the write deadline passes with the read deadline.
func (e rawEnd) closedByServer() bool {
	if !errors.Is(e.err, io.EOF) && !errors.Is(e.err, syscall.ECONNRESET) {
		return false
	}
	return len(e.data) == 0 || (e.status >= 400 && e.status <= 499)
}

func (e rawEnd) describe() string {
	how := "EOF"
	switch {
	case errors.Is(e.err, os.ErrDeadlineExceeded):
		how = "still open at the test's deadline"
	case errors.Is(e.err, syscall.ECONNRESET):
		how = "reset"
	case !errors.Is(e.err, io.EOF):
		how = e.err.Error()
	}
	if len(e.data) == 0 {
		return how + ", no answer"
	}
	first, _, _ := strings.Cut(string(e.data), "\r\n")
	_, body, _ := strings.Cut(string(e.data), "\r\n\r\n")
	return fmt.Sprintf("%s after %q with body %.120q", how, first, strings.TrimSpace(body))
}

// openIdle opens one connection of the given kind: "kept-alive" completes a
// GET /healthz and then idles like a sender between callbacks, "silent" sends
// nothing, "partial" stops in the middle of a request header.
func openIdle(svc *service, kind string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(svc.URL, "http://"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "kept-alive":
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return c, err
		}
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			return c, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return c, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return c, fmt.Errorf("healthz = %d, want 200", resp.StatusCode)
		}
		return c, c.SetDeadline(time.Time{})
	case "partial":
		_, err := io.WriteString(c, "POST /callback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
		return c, err
	default:
		return c, nil
	}
}

// stillOpen counts, per kind, the connections the server has not closed: a
// read that times out means the connection is still there.
func stillOpen(conns []net.Conn, kinds []string) map[string]int {
	var mu sync.Mutex // guards open
	open := map[string]int{}
	var wg sync.WaitGroup
	slots := make(chan struct{}, 64)
	for i, c := range conns {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
				return
			}
			var b [1]byte
			if _, err := c.Read(b[:]); errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				open[kinds[i]]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

// durationQuantile returns the q-quantile (nearest rank) of sorted d.
func durationQuantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
