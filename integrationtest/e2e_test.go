package integrationtest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// TestStoresExactlyTheOnlineIDs is the mission in one test: callbacks in,
// every object looked up, exactly the online ones in the table with their
// receipt time.
func TestStoresExactlyTheOnlineIDs(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 50 * time.Millisecond, MaxLatency: 500 * time.Millisecond}
	svc := startService(t, buildService(t), dbURL, upstream(t, up), "-ttl", "30s")
	db := connect(t, dbURL)

	// Hand-made bodies first: ID 0 is a real object, so are negative IDs and
	// the int64 extremes; duplicates are one object.
	sent := time.Now()
	for _, body := range []string{
		`{"object_ids":[0,1,2,2,2,3]}`,
		`{"object_ids":[-4,-3,9223372036854775806,-9223372036854775808,9223372036854775807]}`,
		`{"object_ids":[]}`,
	} {
		if got := svc.post(t, body); got != http.StatusAccepted {
			t.Fatalf("POST %s = %d, want 202", body, got)
		}
	}
	want := []int64{-9223372036854775808, -4, 0, 2, 9223372036854775806}
	eventually(t, 10*time.Second, func() error {
		table := objectsTable(t, db)
		if got := slices.Sorted(maps.Keys(table)); !slices.Equal(got, want) {
			return fmt.Errorf("ids = %v, want %v", got, want)
		}
		for id, seen := range table {
			if d := seen.Sub(sent); d < -time.Second || d > time.Second {
				return fmt.Errorf("id %d last_seen %v is %v from receipt, want within 1s", id, seen, d)
			}
		}
		return nil
	})
	if n := up.Lookups(2); n != 1 {
		t.Errorf("lookups of id 2 = %d, want 1 (duplicates coalesced)", n)
	}

	// Then the customer's kind of traffic, faster: many bodies of 0..199 IDs
	// from 0..999, two senders.
	l := newLedger()
	s := &sim.Sender{
		Target: svc.URL + "/callback", Interval: 100 * time.Millisecond, Senders: 2,
		IDRange: 1000, IDBase: 1000, MaxSends: 40, OnSendFunc: l.record,
	}
	if _, err := s.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if sends, accepted, _, failed := l.counts(); accepted != sends || failed != 0 {
		t.Fatalf("accepted %d of %d sends, %d failed: %v", accepted, sends, failed, l.failures())
	}
	checked := l.settle(t, db, even, 30*time.Second, 15*time.Second)
	table := objectsTable(t, db)
	for id := range table {
		if id >= 1000 && !even(id) {
			t.Errorf("offline id %d stored", id)
		}
	}
	t.Logf("checked %d ids from %d callbacks, %d rows, %d upstream lookups", checked, 40, len(table), up.Requests())
}

func TestDeletesStaleRows(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	svc := startService(t, buildService(t), dbURL, upstream(t, &sim.Upstream{}),
		"-ttl", "2s", "-sweep-interval", "100ms")
	db := connect(t, dbURL)

	sent := time.Now()
	if got := svc.post(t, `{"object_ids":[2,4,6]}`); got != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", got)
	}
	eventually(t, 5*time.Second, func() error {
		if n := len(objectsTable(t, db)); n != 3 {
			return fmt.Errorf("rows = %d, want 3", n)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		if n := len(objectsTable(t, db)); n != 0 {
			return fmt.Errorf("rows = %d, want 0", n)
		}
		return nil
	})
	if gone := time.Since(sent); gone > 2*time.Second+2*time.Second {
		t.Errorf("rows deleted %v after receipt, want within ttl+2s", gone)
	} else {
		t.Logf("rows deleted %v after receipt (ttl 2s)", gone.Round(10*time.Millisecond))
	}
}

// TestSurvivesDatabaseRestart stops PostgreSQL for five seconds while
// callbacks keep coming: every callback is still answered 202, and every
// online ID is written once the database is back.
func TestSurvivesDatabaseRestart(t *testing.T) {
	cluster := pgtest.Cluster(t)
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 10 * time.Millisecond, MaxLatency: 200 * time.Millisecond}
	svc := startService(t, buildService(t), dbURL, upstream(t, up),
		"-ttl", "60s", "-db-timeout", "2s")
	db := connect(t, dbURL)

	l := newLedger()
	s := &sim.Sender{
		Target: svc.URL + "/callback", Rate: 20, IDRange: 5000, MaxIDs: 50,
		OnSendFunc: l.record,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Second)
	defer cancel()
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		if _, err := s.Run(ctx); err != nil {
			t.Error(err)
		}
	}()

	time.Sleep(3 * time.Second)
	if err := cluster.Stop(); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	down := time.Now()
	time.Sleep(5 * time.Second)
	if err := cluster.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Logf("postgres was down for %v", time.Since(down).Round(time.Millisecond))
	<-senderDone

	sends, accepted, refused, failed := l.counts()
	if accepted != sends {
		t.Errorf("accepted %d of %d sends (%d refused, %d failed): %v", accepted, sends, refused, failed, l.failures())
	}
	checked := l.settle(t, db, even, 60*time.Second, 30*time.Second)
	t.Logf("sends %d, ids checked %d, lost 0", sends, checked)
	if !strings.Contains(svc.logs.String(), "write failed, keeping rows for retry") {
		t.Error("no failed write logged: the outage did not reach the writer, so this test proved nothing")
	}
}

// TestSIGTERMDrains stops the service while most lookups are still queued:
// it must exit 0 only after every accepted ID is written.
func TestSIGTERMDrains(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 200 * time.Millisecond, MaxLatency: 600 * time.Millisecond}
	svc := startService(t, buildService(t), dbURL, upstream(t, up),
		"-ttl", "60s", "-workers", "64", "-drain-timeout", "60s")
	db := connect(t, dbURL)

	l := newLedger()
	s := &sim.Sender{
		Target: svc.URL + "/callback", Interval: -1, IDRange: 1000, MinIDs: 150, MaxIDs: 199,
		MaxSends: 30, OnSendFunc: l.record,
	}
	if _, err := s.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, accepted, _, _ := l.counts()
	if accepted != 30 {
		t.Fatalf("accepted %d of 30 sends: %v", accepted, l.failures())
	}
	queued := int64(len(l.newest)) - up.Requests()
	code, took := svc.stop(syscall.SIGTERM, 90*time.Second)
	if code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	t.Logf("SIGTERM with about %d ids not yet looked up; exit %d after %v", queued, code, took.Round(time.Millisecond))
	if queued < 100 {
		t.Errorf("only %d ids queued at SIGTERM, want a real backlog", queued)
	}
	// The process is gone: whatever it wrote is all there will be.
	checked, problems := l.check(objectsTable(t, db), even, 60*time.Second, time.Now())
	if len(problems) > 0 {
		t.Errorf("%d of %d ids wrong after drain:\n%s", len(problems), checked, strings.Join(problems, "\n"))
	}
	if !strings.Contains(svc.logs.String(), `"msg":"drained"`) {
		t.Error(`no "drained" log line`)
	}
}

// TestUpstreamErrors: a third of lookups fail with 500; retries still store
// everything.
func TestUpstreamErrors(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond, ErrorRate: 0.33}
	svc := startService(t, buildService(t), dbURL, upstream(t, up), "-ttl", "30s")
	db := connect(t, dbURL)

	l := newLedger()
	s := &sim.Sender{
		Target: svc.URL + "/callback", Interval: 50 * time.Millisecond, IDRange: 500,
		MaxSends: 20, OnSendFunc: l.record,
	}
	if _, err := s.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	checked := l.settle(t, db, even, 30*time.Second, 20*time.Second)
	if up.Errors() == 0 {
		t.Fatal("upstream served no errors: the test proved nothing")
	}
	t.Logf("ids checked %d, upstream requests %d of which 500: %d, lost 0", checked, up.Requests(), up.Errors())
}

// TestBadInputGets4xx sends every kind of malformed request to the real
// binary: each gets a 4xx JSON error, never a 5xx, and nothing is stored.
func TestBadInputGets4xx(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	svc := startService(t, buildService(t), dbURL, upstream(t, &sim.Upstream{}), "-ttl", "30s")
	db := connect(t, dbURL)

	huge := `{"object_ids":[` + strings.Repeat("2,", 600_000) + `2]}`
	tests := []struct {
		name, method, body string
		want               int
	}{
		{"malformed", "POST", `{"object_ids":[2,`, 400},
		{"empty", "POST", ``, 400},
		{"not-object", "POST", `[2,4]`, 400},
		{"missing-key", "POST", `{"ids":[2]}`, 400},
		{"null-list", "POST", `{"object_ids":null}`, 400},
		{"null-id", "POST", `{"object_ids":[null]}`, 400},
		{"string-id", "POST", `{"object_ids":["2"]}`, 400},
		{"fraction", "POST", `{"object_ids":[2.5]}`, 400},
		{"exponent", "POST", `{"object_ids":[2e2]}`, 400},
		{"bool", "POST", `{"object_ids":[true]}`, 400},
		{"nested", "POST", `{"object_ids":[[2]]}`, 400},
		{"too-big-number", "POST", `{"object_ids":[9223372036854775808]}`, 400},
		{"too-small-number", "POST", `{"object_ids":[-9223372036854775809]}`, 400},
		{"trailing-garbage", "POST", `{"object_ids":[2]}xyz`, 400},
		{"invalid-utf8", "POST", "{\"object_ids\":[2],\"x\":\"\xff\"}\xff", 400},
		{"body-too-large", "POST", huge, 413},
		{"get", "GET", ``, 405},
		{"put", "PUT", `{"object_ids":[2]}`, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, svc.URL+"/callback", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
		})
	}
	// Give a wrongly accepted body time to reach the table before checking.
	if got := svc.post(t, `{"object_ids":[1000000]}`); got != http.StatusAccepted {
		t.Fatalf("valid POST = %d, want 202", got)
	}
	eventually(t, 10*time.Second, func() error {
		if table := objectsTable(t, db); len(table) != 1 {
			return fmt.Errorf("table = %v, want only id 1000000", table)
		}
		return nil
	})
}

// TestCustomerRhythm runs our simulator with the customer's settings (a post
// 5 s after each answer, a 1 s client timeout, keep-alive connections, lookups
// of 0.3 to 4.3 s) against the service: no send may fail. The idle-connection
// race of earlier teams shows up as a failed post on a reused connection.
func TestCustomerRhythm(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 30s")
	}
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 300 * time.Millisecond, MaxLatency: 4300 * time.Millisecond}
	svc := startService(t, buildService(t), dbURL, upstream(t, up))
	db := connect(t, dbURL)

	l := newLedger()
	s := &sim.Sender{Target: svc.URL + "/callback", Senders: 2, OnSendFunc: l.record}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sum, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Errors != 0 || sum.Non2xx != 0 {
		t.Errorf("summary %v: want no errors and no non-2xx: %v", sum, l.failures())
	}
	checked := l.settle(t, db, even, 30*time.Second, 15*time.Second)
	t.Logf("customer rhythm for 30s: %v; %d ids checked, lost 0", sum, checked)
}
