package integrationtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// walFiles returns the intake log's segment files in dir and their bytes.
func walFiles(t *testing.T, dir string) (files int, bytes int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m {
		if st, err := os.Stat(f); err == nil {
			bytes += st.Size()
		}
	}
	return len(m), bytes
}

// logTime returns the time of the first log line whose msg is msg, and
// the line's fields.
func logTime(t *testing.T, logs, msg string) (time.Time, map[string]any) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != msg {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"]))
		if err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		return at, line
	}
	t.Fatalf("no %q in the logs", msg)
	return time.Time{}, nil
}

// Scenario 10a: a clean restart. SIGTERM while lookups are still in flight:
// the drain finishes them, the log says so by deleting what it held, and
// the next start on the same directory asks the upstream about nothing.
// (Before, the log kept every callback of the last TTL and the restart
// looked all of them up again.)
func TestScenarioCleanRestart(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := &sim.Upstream{MinLatency: 300 * time.Millisecond, MaxLatency: 2 * time.Second}
	src := upstream(t, up)
	bin := buildService(t)
	addr := freeAddr(t)
	walDir := t.TempDir()
	flags := []string{"-wal-dir", walDir, "-shutdown-delay", "0"}
	svc := startServiceAt(t, bin, addr, dbURL, src, flags...)
	db := connect(t, dbURL)

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	<-runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 2, Rate: 4, IDRange: 3000, MaxIDs: 100, OnSendFunc: l.record,
	})
	requireAllAccepted(t, l)
	if code, took := svc.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM (%v), want 0", code, took)
	}
	files, bytes := walFiles(t, walDir)
	if files != 0 {
		t.Errorf("the intake log holds %d segments (%d bytes) after a clean drain, want none", files, bytes)
	}

	looked := up.Requests()
	svc = startServiceAt(t, bin, addr, dbURL, src, flags...)
	time.Sleep(3 * time.Second) // a replay starts at once; give it time to show
	again := up.Requests() - looked
	if again != 0 {
		t.Errorf("the restart asked the upstream about %d ids, want 0: everything was settled before the exit", again)
	}
	if _, line := logTime(t, svc.logs.String(), "intake log replayed"); line["count"] != 0.0 {
		t.Errorf("the restart replayed %v callbacks, want 0", line["count"])
	}
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	sends, _, _, _ := l.counts()
	report(t, "clean-restart", fmt.Sprintf("%d callbacks in 4 s, SIGTERM with lookups in flight (0.3–2 s upstream)", sends),
		fmt.Sprintf("SIGTERM, exit 0, %d segment files left, restart on the same -wal-dir: %d ids looked up again", files, again), checked, 0)
}

// Scenario 10b: a replay of a full log under live traffic. The first
// instance takes callbacks flat out while its upstream refuses every
// connection, so nothing is settled and the log keeps all of it; SIGKILL;
// the restart replays that log while ten customer-like senders post.
// Not one live callback may be refused or time out. (Before, the replay
// kept the receipts buffer full and live callbacks got 503.)
func TestScenarioReplayUnderLiveTraffic(t *testing.T) {
	flood := 6 * time.Second
	if soak() {
		flood = 30 * time.Second // a TTL's worth at saturation
	}
	dbURL := pgtest.NewDB(t)
	bin := buildFast(t)
	addr := freeAddr(t)
	walDir := t.TempDir()
	flags := []string{"-wal-dir", walDir}
	svc := startServiceAt(t, bin, addr, dbURL, "http://"+freeAddr(t), flags...) // nobody listens there

	floodLedger := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), flood)
	defer cancel()
	<-runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 32, Interval: -1, MinIDs: 200, MaxIDs: 200, IDRange: 4000,
		OnSendFunc: floodLedger.record,
	})
	svc.stop(syscall.SIGKILL, 10*time.Second)
	_, accepted, _, _ := floodLedger.counts()
	files, bytes := walFiles(t, walDir)

	up := &sim.Upstream{MinLatency: 300 * time.Millisecond, MaxLatency: 4300 * time.Millisecond}
	src := upstream(t, up)
	svc = startServiceAt(t, bin, addr, dbURL, src, flags...)
	live := newLedger()
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	<-runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 10, Rate: 20, IDRange: 2000, IDBase: 100_000, MaxIDs: 100,
		OnSendFunc: live.record,
	})
	sends, ok, refused, failed := live.counts()
	if ok != sends {
		t.Errorf("%d of %d live callbacks during the replay refused (503) and %d failed: %v", refused, sends, failed, live.failures())
	}
	logs := svc.logs.String()
	listening, _ := logTime(t, logs, "listening")
	replayed, line := logTime(t, logs, "intake log replayed")
	took := replayed.Sub(listening)
	checked := live.settle(t, connect(t, dbURL), even, 30*time.Second, 30*time.Second)
	report(t, "replay-under-live-traffic",
		fmt.Sprintf("%d callbacks of 200 ids accepted in %v flat out (%d segments, %.1f MB), then 10 senders at 20/s during the replay", accepted, flood, files, float64(bytes)/1e6),
		fmt.Sprintf("SIGKILL with nothing settled, restart: %v callbacks replayed in %v; %d of %d live callbacks refused", line["count"], took.Round(time.Millisecond), sends-ok, sends),
		checked, 0)
}
