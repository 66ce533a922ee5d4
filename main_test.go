package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callback/objectsource/sim"
	"callback/pkg/ingest"
	"callback/pkg/logtest"
	"callback/pkg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func noEnv(string) string { return "" }

func TestRunHelpAndBadConfig(t *testing.T) {
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"-h"}, noEnv, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run -h = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"-addr", "-src", "-db", "-ttl", "-workers", "-drain-timeout"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("usage lacks %s", f)
		}
	}

	getenv := func(k string) string { return map[string]string{"OBJECT_TTL": "soon"}[k] }
	err = run(t.Context(), []string{"-workers", "0"}, getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "OBJECT_TTL") || !strings.Contains(err.Error(), "workers") {
		t.Errorf("run with bad config = %v, want both problems reported", err)
	}
}

// TestRun wires the whole service in-process: a callback goes in, its online
// IDs come out in the table, and cancelling the context (what a signal does)
// drains and returns nil.
func TestRun(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := httptest.NewServer(&sim.Upstream{})
	t.Cleanup(up.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, logs, done := startRun(t, ctx, "-src", up.URL, "-db", dbURL, "-ttl", "30s")
	if got := postWhenUp(t, addr, `{"object_ids":[0,1,2]}`, logs); got != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", got)
	}

	cancel() // SIGTERM: drain, then return
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}

	if ids := objectIDs(t, dbURL); len(ids) != 2 || ids[0] != 0 || ids[1] != 2 {
		t.Errorf("ids = %v, want [0 2]", ids)
	}
	for _, msg := range []string{`"msg":"starting"`, `"msg":"listening"`, `"msg":"shutting down"`, `"msg":"drained"`} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("logs lack %s", msg)
		}
	}
}

// startRun runs the service in-process on a free port, with args after
// -addr, and returns its address, its logs and a channel for run's result.
func startRun(t *testing.T, ctx context.Context, args ...string) (addr string, logs *logtest.Buffer, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	logs = &logtest.Buffer{}
	walDir := t.TempDir() // each run its own intake log; a later flag in args wins
	result := make(chan error, 1)
	go func() {
		// No shutdown delay: no balancer is watching these runs.
		result <- run(ctx, append([]string{"-addr", addr, "-wal-dir", walDir, "-shutdown-delay", "0"}, args...), noEnv, logs, io.Discard)
	}()
	return addr, logs, result
}

// postWhenUp posts body to the service at addr, retrying for 5 s until it
// listens, and returns the status.
func postWhenUp(t *testing.T, addr, body string, logs *logtest.Buffer) int {
	t.Helper()
	for i := 0; ; i++ {
		resp, err := http.Post("http://"+addr+"/callback", "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode
		}
		if i == 100 {
			t.Fatalf("service never answered: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readObjects returns the objects table read through db.
func readObjects(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) map[int64]time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, "SELECT id, last_seen FROM objects")
	if err != nil {
		t.Fatalf("read objects: %v", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ingest.Sighting])
	if err != nil {
		t.Fatalf("read objects: %v", err)
	}
	table := make(map[int64]time.Time, len(list))
	for _, x := range list {
		table[x.ID] = x.Received
	}
	return table
}

// objectIDs returns the IDs in the objects table of the database at dbURL, sorted.
func objectIDs(t *testing.T, dbURL string) []int64 {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	return slices.Sorted(maps.Keys(readObjects(t, conn)))
}

// TestRunDrainsBeforeSchema shuts down before the schema could be applied
// (the database is down): the drain must still create the table once the
// database is back, and write what was accepted. Stopping schema set-up with
// the signal, as an earlier version did, left the writer failing until the
// drain timeout.
func TestRunDrainsBeforeSchema(t *testing.T) {
	cluster := pgtest.Cluster(t)
	dbURL := pgtest.NewDB(t)
	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Start(); err != nil {
			t.Error(err)
		}
	})
	up := httptest.NewServer(&sim.Upstream{})
	t.Cleanup(up.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, logs, done := startRun(t, ctx, "-src", up.URL, "-db", dbURL, "-drain-timeout", "2m")
	if got := postWhenUp(t, addr, `{"object_ids":[4,5]}`, logs); got != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", got)
	}
	cancel() // SIGTERM while the table does not exist yet
	time.Sleep(time.Second)
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("run did not return 60 s after the database came back\n%s", logs.String())
	}
	if ids := objectIDs(t, dbURL); len(ids) != 1 || ids[0] != 4 {
		t.Errorf("ids = %v, want [4]", ids)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-version"}, noEnv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "callback ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("-version printed %q, want the module, its version and the Go version", out.String())
	}
}

// TestAdminListener: pprof and the status page answer on -admin-addr and
// never on the public listener.
func TestAdminListener(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := httptest.NewServer(&sim.Upstream{})
	t.Cleanup(up.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	addr, logs, done := startRun(t, ctx, "-src", up.URL, "-db", dbURL, "-admin-addr", admin)
	postWhenUp(t, addr, `{"object_ids":[]}`, logs)
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("http://" + admin + "/debug/pprof/"); got != http.StatusOK {
		t.Errorf("admin /debug/pprof/ = %d, want 200", got)
	}
	if got := get("http://" + addr + "/debug/pprof/"); got != http.StatusNotFound {
		t.Errorf("public /debug/pprof/ = %d, want 404", got)
	}
	// The status page: on the admin listener only, drawing this replica's
	// answers once it has two samples.
	eventually := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "202: ") {
			break
		}
		if time.Now().After(eventually) {
			t.Fatalf("admin / = %d, want 200 and a chart of the 202s:\n%s", resp.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := get("http://" + addr + "/"); got != http.StatusNotFound {
		t.Errorf("public / = %d, want 404", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
}

// With the intake log on, a service given one P gets a second, so that a
// sync in progress does not stop the handlers; more are left alone.
func TestAtLeastTwoProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	atLeastTwoProcs(logtest.Discard())
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("GOMAXPROCS = %d after atLeastTwoProcs from 1, want 2", got)
	}
	runtime.GOMAXPROCS(3)
	atLeastTwoProcs(logtest.Discard())
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("GOMAXPROCS = %d after atLeastTwoProcs from 3, want 3", got)
	}
}

// With -auth-token, /callback answers 401 to a post without the token and
// 202 with it, and the startup log does not show the token. The src
// password is masked there too.
func TestRunAuthToken(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := httptest.NewServer(&sim.Upstream{})
	t.Cleanup(up.Close)
	ctx, cancel := context.WithCancel(t.Context())
	src := strings.Replace(up.URL, "http://", "http://cb:src-pass@", 1)
	addr, logs, done := startRun(t, ctx, "-src", src, "-db", dbURL, "-auth-token", "tok-123")
	if got := postWhenUp(t, addr, `{"object_ids":[2]}`, logs); got != http.StatusUnauthorized {
		t.Errorf("POST without the token = %d, want 401", got)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/callback", strings.NewReader(`{"object_ids":[2]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST with the token = %d, want 202", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
	for _, secret := range []string{"tok-123", "src-pass"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs show %q:\n%s", secret, logs)
		}
	}
}
