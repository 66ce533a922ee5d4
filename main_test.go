package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callback/objectsource/sim"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", addr, "-src", up.URL, "-db", dbURL, "-ttl", "30s"}, noEnv, logs, io.Discard)
	}()

	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Post("http://"+addr+"/callback", "application/json", strings.NewReader(`{"object_ids":[0,1,2]}`))
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("service never answered: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", resp.StatusCode)
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

	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), "SELECT id FROM objects ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != 0 || ids[1] != 2 {
		t.Errorf("ids = %v, want [0 2]", ids)
	}
	for _, msg := range []string{`"msg":"starting"`, `"msg":"listening"`, `"msg":"shutting down"`, `"msg":"drained"`} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("logs lack %s", msg)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", addr, "-src", up.URL, "-db", dbURL, "-drain-timeout", "2m"}, noEnv, logs, io.Discard)
	}()
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Post("http://"+addr+"/callback", "application/json", strings.NewReader(`{"object_ids":[4,5]}`))
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("service never answered: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", resp.StatusCode)
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
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ids []int64
	rows, err := conn.Query(context.Background(), "SELECT id FROM objects")
	if err != nil {
		t.Fatal(err)
	}
	if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != 4 {
		t.Errorf("ids = %v, want [4]", ids)
	}
}
