// Package integrationtest runs the built service as a black box: callbacks in
// over HTTP, an in-process upstream (objectsource/sim), and rows out of a real
// PostgreSQL. Nothing here imports the service's packages.
package integrationtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"callback/objectsource/sim"
	"callback/pkg/logtest"
	"callback/pkg/pgtest"
)

// binaries holds the service binaries this test process has built, one per
// flavour, so each is linked once rather than once per test. Like pgtest's
// cluster it is package state on purpose: TestMain owns and removes the
// directory after the tests.
var binaries struct {
	dir  string
	mu   sync.Mutex      // guards path and tool, and serialises the builds
	path map[bool]string // race detector on → binary
	tool string          // objectsource, without the race detector
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "callback-itest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binaries.dir, binaries.path = dir, map[bool]string{}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildService compiles the service, with the race detector when the tests
// themselves run with it.
func buildService(t *testing.T) string {
	t.Helper()
	return build(t, raceEnabled)
}

// buildFast compiles the service without the race detector, for scenarios
// that measure load: the detector slows thousands of lookups down several times.
func buildFast(t *testing.T) string {
	t.Helper()
	return build(t, false)
}

func build(t *testing.T, race bool) string {
	t.Helper()
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if bin, ok := binaries.path[race]; ok {
		return bin
	}
	bin := filepath.Join(binaries.dir, fmt.Sprintf("callback-race-%t", race))
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "..")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binaries.path[race] = bin
	return bin
}

// load is a run of the load tool, objectsource, built without the race
// detector: an upstream or a flood of senders in a process of its own, so
// that a race-instrumented test process is not what limits the load.
type load struct {
	cmd  *exec.Cmd
	out  *logtest.Buffer
	done <-chan struct{} // closed when the process has exited
}

// startLoad runs objectsource with args. The process is stopped at cleanup
// if it is still running.
func startLoad(t *testing.T, args ...string) *load {
	t.Helper()
	binaries.mu.Lock()
	if binaries.tool == "" {
		bin := filepath.Join(binaries.dir, "objectsource")
		if out, err := exec.Command("go", "build", "-o", bin, "../objectsource").CombinedOutput(); err != nil {
			binaries.mu.Unlock()
			t.Fatalf("go build objectsource: %v\n%s", err, out)
		}
		binaries.tool = bin
	}
	bin := binaries.tool
	binaries.mu.Unlock()
	cmd := exec.Command(bin, append([]string{"-log-level", "error"}, args...)...)
	out, done := startProcess(t, "objectsource", cmd)
	return &load{cmd: cmd, out: out, done: done}
}

// startProcess starts cmd with its output in a buffer. At cleanup it stops
// the process by its PID if it still runs (SIGTERM, SIGKILL after 10 s),
// and prints its output if the test failed. done is closed once it exits.
func startProcess(t *testing.T, name string, cmd *exec.Cmd) (out *logtest.Buffer, done <-chan struct{}) {
	t.Helper()
	out = &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return out, exited
}

// startUpstream runs the load tool as the upstream alone, with args, and
// returns its base URL once it takes connections.
func startUpstream(t *testing.T, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	l := startLoad(t, append([]string{"-addr", addr, "-target", ""}, args...)...)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		select {
		case <-l.done:
			t.Fatalf("objectsource exited: %s", l.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("objectsource not listening after 10 s: %s", l.out.String())
		}
	}
}

// wait waits for the load tool to exit by itself, at most limit, and
// returns what it printed.
func (l *load) wait(t *testing.T, limit time.Duration) string {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(limit):
		t.Fatalf("objectsource still running after %v", limit)
	}
	return l.out.String()
}

// service is one running instance of the built binary.
type service struct {
	t    *testing.T
	cmd  *exec.Cmd
	URL  string // http://127.0.0.1:port
	logs *logtest.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

// startService runs the binary with the contract's flags and any extra ones,
// and waits until /healthz answers. The process is killed at cleanup if the
// test has not stopped it; its logs are printed if the test failed.
func startService(t *testing.T, bin, dbURL, srcURL string, extra ...string) *service {
	t.Helper()
	return startServiceAt(t, bin, freeAddr(t), dbURL, srcURL, extra...)
}

// startServiceAt is startService on a given address, to restart an instance
// where its senders expect it.
func startServiceAt(t *testing.T, bin, addr, dbURL, srcURL string, extra ...string) *service {
	t.Helper()
	args := append([]string{"-addr", addr, "-src", srcURL, "-db", dbURL}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir() // no .env from the repository
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	s := &service{t: t, cmd: cmd, URL: "http://" + addr, logs: &logtest.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start service: %v", err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", s.logs.String())
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("service exited before it was ready: %v\n%s", s.err, s.logs.String())
		case <-ctx.Done():
			t.Fatalf("service not ready after 30s\n%s", s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends sig and waits for the process to exit, at most limit.
func (s *service) stop(sig syscall.Signal, limit time.Duration) (exitCode int, took time.Duration) {
	s.t.Helper()
	start := time.Now()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal: %v", err)
	}
	code := s.wait(limit)
	return code, time.Since(start)
}

// wait waits for the process to exit, at most limit, and returns its exit
// code (-1 if a signal killed it).
func (s *service) wait(limit time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(limit):
		s.t.Fatalf("service still running after %v", limit)
	}
	return s.cmd.ProcessState.ExitCode()
}

// post sends one callback body and returns the status.
func (s *service) post(t *testing.T, body string) int {
	t.Helper()
	return s.postResp(t, body).StatusCode
}

// postResp sends one callback body and returns the answer, body closed.
func (s *service) postResp(t *testing.T, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(s.URL+"/callback", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	resp.Body.Close()
	return resp
}

// upstream hosts the simulator's object service in-process.
func upstream(t *testing.T, u http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return srv.URL
}

// objectsTable reads the whole table.
func objectsTable(t *testing.T, db *pgxpool.Pool) map[int64]time.Time {
	t.Helper()
	got, err := readTable(db)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func readTable(db *pgxpool.Pool) (map[int64]time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, "SELECT id, last_seen FROM objects")
	if err != nil {
		return nil, fmt.Errorf("read objects: %w", err)
	}
	got := map[int64]time.Time{}
	var id int64
	var lastSeen time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &lastSeen}, func() error {
		got[id] = lastSeen
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read objects: %w", err)
	}
	return got, nil
}

// startScenario is the prelude most scenarios share: a fresh database, the
// service built as bin running on it with the upstream at srcURL and args,
// and a pool on the database for the test's own reads.
func startScenario(t *testing.T, bin, srcURL string, args ...string) (svc *service, db *pgxpool.Pool, dbURL string) {
	t.Helper()
	dbURL = pgtest.NewDB(t)
	svc = startService(t, bin, dbURL, srcURL, args...)
	return svc, connect(t, dbURL), dbURL
}

func connect(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// eventually polls check until it returns nil or the timeout passes, and
// fails the test with check's last error.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ledger records every callback sent and, for each ID, the newest send time
// that the service accepted with a 2xx. A send's receipt time on the server
// lies between Sent and Sent+Duration.
type ledger struct {
	mu       sync.Mutex
	sends    int
	accepted int
	refused  int // 503 with Retry-After: allowed only where a test overloads on purpose
	failed   []sim.SendResult
	newest   map[int64]sim.SendResult // ID → newest accepted send naming it
	names    map[int64]int            // ID → accepted sends naming it
	// unknown: ID → the latest moment a send naming it got no answer at
	// all (a transport error, a timeout, a killed instance). Its fate is
	// unknown: with the intake log, a callback synced just before a kill is
	// replayed although its sender saw an error, so last_seen may come from
	// it. Such a send never makes an ID required, only allows a newer row.
	unknown map[int64]time.Time
}

func newLedger() *ledger {
	return &ledger{newest: map[int64]sim.SendResult{}, names: map[int64]int{}, unknown: map[int64]time.Time{}}
}

// newestSends returns, for each accepted ID, the newest send that named it.
func (l *ledger) newestSends() map[int64]sim.SendResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.newest)
}

// named returns, for each accepted ID, how many accepted sends named it.
func (l *ledger) named() map[int64]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.names)
}

// record is a sim.Sender OnSendFunc.
func (l *ledger) record(r sim.SendResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sends++
	switch {
	case r.Err == nil && r.Status/100 == 2:
		l.accepted++
		counted := map[int64]bool{}
		for _, id := range r.IDs {
			if old, ok := l.newest[id]; !ok || r.Sent.After(old.Sent) {
				l.newest[id] = r
			}
			if !counted[id] {
				counted[id] = true
				l.names[id]++
			}
		}
	case r.Err == nil && r.Status == http.StatusServiceUnavailable && r.RetryAfter != "":
		l.refused++
	default:
		l.failed = append(l.failed, r)
		if r.Err != nil {
			end := r.Sent.Add(r.Duration)
			for _, id := range r.IDs {
				if end.After(l.unknown[id]) {
					l.unknown[id] = end
				}
			}
		}
	}
}

// check compares the table with the ledger: every online ID accepted within
// the TTL is present with last_seen within 1 s of its newest receipt, no
// offline ID is present, and no row is older than ttl+2s. IDs received less
// than grace ago are not required yet (their lookup may be running), and IDs
// within a second of the TTL are not required any more (the sweep may have
// taken them). It returns how many IDs it checked, how many of them it
// required to be present, and a description of each violation.
func (l *ledger) check(table map[int64]time.Time, online func(int64) bool, ttl, grace time.Duration, now time.Time) (checked, required int, problems []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(l.newest)) {
		r := l.newest[id]
		lastSeen, present := table[id]
		age := now.Sub(r.Sent)
		if online(id) && age < ttl-time.Second && age >= grace {
			required++
		}
		switch {
		case !online(id) && present:
			problems = append(problems, fmt.Sprintf("offline id %d present", id))
		case online(id) && age < ttl-time.Second && age >= grace && !present:
			problems = append(problems, fmt.Sprintf("lost: online id %d accepted at %v is missing", id, r.Sent.Format(time.StampMicro)))
		case online(id) && present && (lastSeen.Before(r.Sent.Add(-time.Second)) || lastSeen.After(latest(r, l.unknown[id]).Add(time.Second))):
			problems = append(problems, fmt.Sprintf("id %d last_seen %v, want within 1s of receipt %v",
				id, lastSeen.Format(time.StampMicro), r.Sent.Format(time.StampMicro)))
		}
		checked++
	}
	for id, lastSeen := range table {
		if age := now.Sub(lastSeen); age > ttl+2*time.Second {
			problems = append(problems, fmt.Sprintf("id %d is %v old, past ttl+2s", id, age.Round(time.Millisecond)))
		}
	}
	return checked, required, problems
}

// latest is the last moment an ID's receipt can have been stamped: the end
// of its newest accepted send, or of a later send whose fate is unknown.
func latest(r sim.SendResult, unknown time.Time) time.Time {
	end := r.Sent.Add(r.Duration)
	if unknown.After(end) {
		return unknown
	}
	return end
}

// settle waits until the table satisfies the ledger, or fails the test with
// every violation it still sees. It also fails if, when the table matched,
// no ID was required to be present: a check that passes only because every
// receipt has outlived the TTL proves nothing.
func (l *ledger) settle(t *testing.T, db *pgxpool.Pool, online func(int64) bool, ttl, timeout time.Duration) int {
	t.Helper()
	var checked, required int
	eventually(t, timeout, func() error {
		table, err := readTable(db) // the table may not exist yet, or the database may be restarting
		if err != nil {
			return err
		}
		var problems []string
		checked, required, problems = l.check(table, online, ttl, 0, time.Now())
		if len(problems) > 0 {
			if len(problems) > 10 {
				problems = append(problems[:10], fmt.Sprintf("... and %d more", len(problems)-10))
			}
			return errors.New(strings.Join(problems, "\n"))
		}
		return nil
	})
	if required == 0 && checked > 0 {
		t.Fatalf("settled only after every one of %d ids outlived the ttl: nothing was verified", checked)
	}
	return checked
}

func (l *ledger) counts() (sends, accepted, refused, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sends, l.accepted, l.refused, len(l.failed)
}

func (l *ledger) failures() []sim.SendResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failed)
}

func even(id int64) bool { return id%2 == 0 }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
