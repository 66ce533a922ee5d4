package integrationtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"callback/objectsource/sim"
)

// haBase is HA_PORT_BASE for the test's cluster: away from scripts/ha.sh's
// default, so that a developer's own cluster may run beside it.
const haBase = 35000

// haCluster is scripts/ha.sh's etcd, three Patroni nodes and HAProxy, for
// a test of its own.
type haCluster struct {
	dir   string
	DBURL string // the primary, through HAProxy
}

// startHA brings the cluster up with scripts/ha.sh and down, by the PIDs
// it keeps, at cleanup. It runs only with HA=1: it takes 15–30 s and needs
// Patroni and etcd, which .ci/run does not install.
func startHA(t *testing.T) *haCluster {
	t.Helper()
	if os.Getenv("HA") != "1" {
		t.Skip("HA=1 runs the Patroni scenarios (scripts/ha.sh installs what they need when run as root)")
	}
	c := &haCluster{dir: filepath.Join(os.TempDir(), fmt.Sprintf("callback-ha-test-%d", os.Getpid()))}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if out, err := c.script(context.Background(), "down"); err != nil {
			t.Errorf("scripts/ha.sh down: %v\n%s", err, out)
		}
	})
	out, err := c.script(ctx, "up")
	if err != nil {
		t.Fatalf("scripts/ha.sh up: %v\n%s", err, out)
	}
	lines := strings.Fields(out)
	c.DBURL = lines[len(lines)-1] // up prints the URL last, on stdout
	return c
}

func (c *haCluster) script(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{"../scripts/ha.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "HA_DIR="+c.dir, "HA_PORT_BASE="+strconv.Itoa(haBase))
	cmd.Stderr = os.Stderr // ha.sh's progress, for the test's output
	out, err := cmd.Output()
	return string(out), err
}

// member is one node as Patroni's GET /cluster lists it.
type member struct {
	Name  string `json:"name"`
	Role  string `json:"role"` // leader, sync_standby, replica
	State string `json:"state"`
	Port  int    `json:"port"`
}

// members asks the REST API of any node that answers.
func (c *haCluster) members() ([]member, error) {
	var last error
	for i := 1; i <= 3; i++ {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/cluster", haBase+30+i))
		if err != nil {
			last = err
			continue
		}
		var body struct{ Members []member }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		return body.Members, nil
	}
	return nil, fmt.Errorf("no Patroni REST API answers: %w", last)
}

// leader waits for a running leader other than not, and returns it.
func (c *haCluster) leader(t *testing.T, not string) member {
	t.Helper()
	var l member
	eventually(t, 60*time.Second, func() error {
		ms, err := c.members()
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Role == "leader" && m.State == "running" && m.Name != not {
				l = m
				return nil
			}
		}
		return fmt.Errorf("no running leader but %q yet: %+v", not, ms)
	})
	return l
}

// crash kills a node as a power cut would: its Patroni and its postmaster,
// with SIGKILL. Patroni's leader key then expires, and a synchronous
// standby takes over.
func (c *haCluster) crash(t *testing.T, name string) {
	t.Helper()
	for _, pidFile := range []string{name + ".pid", filepath.Join(name, "data", "postmaster.pid")} {
		b, err := os.ReadFile(filepath.Join(c.dir, pidFile))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.Fields(string(b))[0])
		if err != nil {
			t.Fatal(err)
		}
		p, err := os.FindProcess(pid)
		if err == nil {
			err = p.Kill() // SIGKILL
		}
		if err != nil {
			t.Fatalf("kill %s (%d): %v", pidFile, pid, err)
		}
	}
}

// Scenario 16 (HA=1): the service on Patroni behind HAProxy, as
// scripts/ha.sh runs it, under paced load: a switchover, then the new
// leader's node crashes (Patroni and postmaster SIGKILLed) and Patroni
// fails over to the synchronous standby. Every post must get its 202,
// nothing may be lost, and the test reports how long after each trigger
// the first new row was written.
func TestScenarioPatroni(t *testing.T) {
	ha := startHA(t)
	up := &sim.Upstream{MinLatency: 100 * time.Millisecond, MaxLatency: time.Second}
	svc := startService(t, buildFast(t), ha.DBURL, upstream(t, up))
	db := connect(t, ha.DBURL)

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	sums := runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 4, Rate: 5, IDRange: 2000, MaxIDs: 50, OnSendFunc: l.record,
	})

	time.Sleep(5 * time.Second)
	first := ha.leader(t, "")
	switched := time.Now()
	if out, err := ha.script(ctx, "ctl", "switchover", "--force", "--leader", first.Name); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	second := ha.leader(t, first.Name)
	switchRow := firstRowAfter(t, db, switched)

	time.Sleep(5 * time.Second)
	crashed := time.Now()
	ha.crash(t, second.Name)
	third := ha.leader(t, second.Name)
	failoverRow := firstRowAfter(t, db, crashed)

	time.Sleep(5 * time.Second)
	cancel()
	sum := <-sums
	sends := requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	report(t, "patroni",
		fmt.Sprintf("4 senders at 5/s for %v: %d callbacks, %d ids; p99 %v", time.Since(began).Round(time.Second), sends, sum.IDs, sum.P99.Round(100*time.Microsecond)),
		fmt.Sprintf("scripts/ha.sh (Patroni synchronous_mode, HAProxy on /primary): switchover %s→%s, first new row %v after the command; "+
			"%s crashed (Patroni and postmaster SIGKILLed), %s took over, first new row %v after the crash; every post 202",
			first.Name, second.Name, switchRow.Round(10*time.Millisecond), second.Name, third.Name, failoverRow.Round(10*time.Millisecond)),
		checked, 0)
}
