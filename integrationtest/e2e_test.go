package integrationtest

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
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
	up := &sim.Upstream{MinLatency: 50 * time.Millisecond, MaxLatency: 500 * time.Millisecond}
	svc, db, _ := startScenario(t, buildService(t), upstream(t, up), "-ttl", "30s")

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
		table, err := readTable(db) // the service may still be creating the table
		if err != nil {
			return err
		}
		if got := slices.Sorted(maps.Keys(table)); !slices.Equal(got, want) {
			return fmt.Errorf("ids = %v, want %v", got, want)
		}
		for id, lastSeen := range table {
			if d := lastSeen.Sub(sent); d < -time.Second || d > time.Second {
				return fmt.Errorf("id %d last_seen %v is %v from receipt, want within 1s", id, lastSeen, d)
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
	svc, db, _ := startScenario(t, buildService(t), upstream(t, &sim.Upstream{}),
		"-ttl", "2s", "-sweep-interval", "100ms")

	sent := time.Now()
	if got := svc.post(t, `{"object_ids":[2,4,6]}`); got != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", got)
	}
	eventually(t, 5*time.Second, func() error {
		table, err := readTable(db) // the service may still be creating the table
		if err != nil {
			return err
		}
		if n := len(table); n != 3 {
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

// TestUpstreamErrors: a third of lookups fail with 500; retries still store
// everything.
func TestUpstreamErrors(t *testing.T) {
	up := &sim.Upstream{MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond, ErrorRate: 0.33}
	svc, db, _ := startScenario(t, buildService(t), upstream(t, up), "-ttl", "30s")

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
	svc, db, _ := startScenario(t, buildService(t), upstream(t, &sim.Upstream{}), "-ttl", "30s")

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
		table, err := readTable(db) // the service may still be creating the table
		if err != nil {
			return err
		}
		if len(table) != 1 {
			return fmt.Errorf("table = %v, want only id 1000000", table)
		}
		return nil
	})
}

// TestFullIntakeAnswers503 fills the service's set of waiting IDs: the next
// callback gets 503 with Retry-After, never a blocked request, and once the
// backlog drains callbacks are accepted again and nothing accepted is lost.
func TestFullIntakeAnswers503(t *testing.T) {
	up := &sim.Upstream{MinLatency: 500 * time.Millisecond, MaxLatency: 500 * time.Millisecond}
	svc, db, _ := startScenario(t, buildService(t), upstream(t, up),
		"-ttl", "60s", "-workers", "1", "-max-pending", "5")

	l := newLedger()
	post := func(body string) *http.Response { return svc.postResp(t, body) }
	ids := []int64{2, 4, 6, 8, 10}
	sent := time.Now()
	if resp := post(`{"object_ids":[2,4,6,8,10]}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first POST = %d, want 202", resp.StatusCode)
	}
	l.record(sim.SendResult{IDs: ids, Sent: sent, Status: http.StatusAccepted})
	// One ID is in flight and four wait: two more would pass -max-pending 5
	// (a callback reserves room for all its IDs before it is accepted).
	var refused *http.Response
	eventually(t, 5*time.Second, func() error {
		refused = post(`{"object_ids":[16,18]}`)
		if refused.StatusCode != http.StatusServiceUnavailable {
			l.record(sim.SendResult{IDs: []int64{16, 18}, Sent: time.Now(), Status: refused.StatusCode})
			return fmt.Errorf("POST = %d, want 503", refused.StatusCode)
		}
		return nil
	})
	if got := refused.Header.Get("Retry-After"); got == "" {
		t.Error("503 without Retry-After")
	}
	// The backlog drains at two lookups a second; then the sender's retry is accepted.
	eventually(t, 10*time.Second, func() error {
		sent := time.Now()
		if resp := post(`{"object_ids":[16,18]}`); resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("retry POST = %d, want 202", resp.StatusCode)
		}
		l.record(sim.SendResult{IDs: []int64{16, 18}, Sent: sent, Status: http.StatusAccepted})
		return nil
	})
	checked := l.settle(t, db, even, 60*time.Second, 15*time.Second)
	t.Logf("503 with Retry-After %q while full; after the drain %d ids checked, lost 0", refused.Header.Get("Retry-After"), checked)
}

// TestWALDirLocked: a second instance on the same intake log refuses to
// start, and says why.
func TestWALDirLocked(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	src := upstream(t, &sim.Upstream{})
	dir := t.TempDir()
	startService(t, buildService(t), dbURL, src, "-wal-dir", dir)

	cmd := exec.Command(buildService(t), "-addr", freeAddr(t), "-src", src, "-db", dbURL, "-wal-dir", dir)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("second instance: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "in use by another process") {
		t.Errorf("second instance said %q, want it to name the locked directory", out)
	}
}

// TestReadyzOnSIGTERM: /readyz turns 503 at SIGTERM while the listener still
// takes callbacks, and stays 503 until the process exits.
func TestReadyzOnSIGTERM(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	svc := startService(t, buildService(t), dbURL, upstream(t, &sim.Upstream{}), "-shutdown-delay", "2s")
	ready := func() (int, error) {
		resp, err := http.Get(svc.URL + "/readyz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := ready(); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before SIGTERM = %d, %v; want 200", code, err)
	}
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var saw503, posted bool
	for {
		code, err := ready()
		if err != nil {
			break // the listener has closed
		}
		switch code {
		case http.StatusServiceUnavailable:
			saw503 = true
			if !posted { // still taking callbacks while not ready
				if got := svc.post(t, `{"object_ids":[2]}`); got != http.StatusAccepted {
					t.Errorf("POST during the shutdown delay = %d, want 202", got)
				}
				posted = true
			}
		default:
			if saw503 {
				t.Fatalf("/readyz = %d after it said 503, want 503 until exit", code)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !saw503 {
		t.Error("/readyz never answered 503 between SIGTERM and the listener closing")
	}
	if code := svc.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
