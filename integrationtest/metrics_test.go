package integrationtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"callback/objectsource/sim"
)

// scrape reads the service's /metrics into name{labels} → value.
func scrape(t *testing.T, url string) (map[string]float64, []byte) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, raw
}

// TestMetrics runs a known load and checks what /metrics says about it:
// every callback counted as a 202, every ID received, at least every
// distinct online ID written, nothing in flight once it settled; and
// promtool finds nothing to complain about in the scrape.
func TestMetrics(t *testing.T) {
	up := &sim.Upstream{MinLatency: 10 * time.Millisecond, MaxLatency: 200 * time.Millisecond}
	svc, db, _ := startScenario(t, buildService(t), upstream(t, up))

	l := newLedger()
	sum, err := (&sim.Sender{
		Target: svc.URL + "/callback", Interval: 20 * time.Millisecond, IDRange: 300, MaxSends: 30, OnSendFunc: l.record,
	}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sends := requireAllAccepted(t, l)
	l.settle(t, db, even, 30*time.Second, 30*time.Second)
	distinctOnline := 0
	for id := range l.named() {
		if even(id) {
			distinctOnline++
		}
	}

	var m map[string]float64
	var raw []byte
	eventually(t, 10*time.Second, func() error {
		m, raw = scrape(t, svc.URL)
		if got := m["callback_lookups_in_flight"]; got != 0 {
			return fmt.Errorf("callback_lookups_in_flight = %v, want 0 once settled", got)
		}
		if got := m["callback_oldest_unwritten_seconds"]; got != 0 { // refreshed every second
			return fmt.Errorf("callback_oldest_unwritten_seconds = %v, want 0 once settled", got)
		}
		return nil
	})
	checks := []struct {
		name      string
		got, want float64
		atLeast   bool
	}{
		{name: `callback_requests_total{code="202"}`, got: m[`callback_requests_total{code="202"}`], want: float64(sends)},
		{name: "callback_ids_received_total", got: m["callback_ids_received_total"], want: float64(sum.IDs)},
		{name: "callback_rows_written_total", got: m["callback_rows_written_total"], want: float64(distinctOnline), atLeast: true},
		{name: `callback_lookups_total{outcome="online"}`, got: m[`callback_lookups_total{outcome="online"}`], want: float64(distinctOnline), atLeast: true},
		{name: "callback_lookup_duration_seconds_count", got: m["callback_lookup_duration_seconds_count"], want: float64(len(l.named())), atLeast: true},
		{name: "callback_wal_syncs_total", got: m["callback_wal_syncs_total"], want: 1, atLeast: true},
		// Every written row is observed once, and here each within 10 s of its receipt.
		{name: "callback_row_age_seconds_count", got: m["callback_row_age_seconds_count"], want: m["callback_rows_written_total"]},
		{name: `callback_row_age_seconds_bucket{le="10"}`, got: m[`callback_row_age_seconds_bucket{le="10"}`], want: m["callback_rows_written_total"]},
	}
	for _, c := range checks {
		if (c.atLeast && c.got < c.want) || (!c.atLeast && c.got != c.want) {
			op := "="
			if c.atLeast {
				op = ">="
			}
			t.Errorf("%s = %v, want %s %v", c.name, c.got, op, c.want)
		}
	}
	for _, name := range []string{"callback_lookup_limit", "callback_ids_waiting", "callback_write_errors_total",
		"callback_rows_deleted_total", "callback_lookup_retries_total", "callback_wal_bytes", "go_goroutines",
		"process_resident_memory_bytes", "callback_db_pool_max_connections"} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	promtool := needTool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(raw)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
