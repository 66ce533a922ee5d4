package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// tool finds a command the deployment checks need, or skips the test with
// how to get it; under CI=true a missing tool fails instead (.ci/run
// installs them).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		path, err = exec.LookPath("/usr/sbin/" + name) // outside a non-root PATH
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; .ci/run installs Debian's %s package", name, pkg)
		}
		t.Skipf("%s not found: apt-get install %s to run this check", name, pkg)
	}
	return path
}

func runTool(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", path, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAlertRules: the alert rules are valid, and their unit tests (series in,
// alerts out) pass; so does the Prometheus config of the compose stack.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	runTool(t, promtool, "check", "rules", "deploy/prometheus/alerts.yml")
	runTool(t, promtool, "test", "rules", "deploy/prometheus/alerts_test.yml")
	runTool(t, promtool, "check", "config", "deploy/prometheus/prometheus.yml")
}

// TestHAProxyConfigs: both HAProxy configs are valid with their addresses
// set, as the README and scripts/ha.sh set them.
func TestHAProxyConfigs(t *testing.T) {
	haproxy := tool(t, "haproxy", "haproxy")
	for file, env := range map[string][]string{
		"deploy/haproxy/haproxy.cfg": {"CALLBACK_LISTEN=127.0.0.1:9090", "HAPROXY_STATS=127.0.0.1:9099",
			"CALLBACK_REPLICA1=127.0.0.1:9191", "CALLBACK_REPLICA2=127.0.0.1:9192", "CALLBACK_REPLICA3=127.0.0.1:9193"},
		"deploy/haproxy/postgres.cfg": {"PG_PRIMARY_LISTEN=127.0.0.1:5000", "HAPROXY_STATS=127.0.0.1:5002",
			"PG_NODE1=127.0.0.1:5432", "PG_NODE1_API_PORT=8008", "PG_NODE2=127.0.0.1:5433", "PG_NODE2_API_PORT=8009",
			"PG_NODE3=127.0.0.1:5434", "PG_NODE3_API_PORT=8010"},
	} {
		cmd := exec.Command(haproxy, "-c", "-f", file)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("haproxy -c -f %s: %v\n%s", file, err, out)
		}
	}
}

// TestComposeFile: docker-compose.yml parses, with no daemon, for `docker
// compose up` and for the full stack's profile; every service but
// PostgreSQL belongs to the "full" profile, so a plain `up` starts
// PostgreSQL alone.
func TestComposeFile(t *testing.T) {
	compose := tool(t, "docker-compose", "docker-compose")
	profiles := map[string]bool{} // service -> in the full profile
	var svc string
	inProfiles := false
	for line := range strings.Lines(runTool(t, compose, "config")) {
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && strings.HasSuffix(line, ":"):
			svc, inProfiles = strings.TrimSuffix(strings.TrimSpace(line), ":"), false
			profiles[svc] = false
		case strings.TrimSpace(line) == "profiles:":
			inProfiles = true
		case inProfiles && strings.TrimSpace(line) == "- full":
			profiles[svc] = true
		case !strings.HasPrefix(line, "    -"):
			inProfiles = false
		}
		if !strings.HasPrefix(line, " ") { // a new top-level key: services are over
			svc = ""
		}
	}
	want := map[string]bool{"postgres": false, "objectsource": true, "callback": true, "prometheus": true}
	for name, full := range want {
		if got, ok := profiles[name]; !ok || got != full {
			t.Errorf("service %s: in the full profile = %v (listed %v), want %v", name, got, ok, full)
		}
	}
	out := runTool(t, compose, "--profile", "full", "config", "--services")
	for name := range want {
		if !strings.Contains(out, name) {
			t.Errorf("full profile services = %q, want %s among them", out, name)
		}
	}
}

func TestHealthcheckCommand(t *testing.T) {
	if err := run(t.Context(), []string{"-healthcheck", "http://127.0.0.1:1/readyz"}, noEnv, os.Stdout, os.Stderr); err == nil {
		t.Error("-healthcheck against nothing = nil, want an error")
	}
}

// TestEveryAlertHasARunbook: each alert's runbook_url (see
// deploy/kubernetes) points at a section of docs/runbooks.md.
func TestEveryAlertHasARunbook(t *testing.T) {
	alerts, runbooks := readFile(t, "deploy/prometheus/alerts.yml"), readFile(t, "docs/runbooks.md")
	var n int
	for line := range strings.Lines(alerts) {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: ")
		if !ok {
			continue
		}
		n++
		if !strings.Contains(runbooks, "\n## "+name+"\n") {
			t.Errorf("alert %s has no section \"## %s\" in docs/runbooks.md", name, name)
		}
	}
	if n == 0 {
		t.Fatal("no alerts found in deploy/prometheus/alerts.yml")
	}
}

// TestEveryAlertIsTested: alerts_test.yml makes every alert fire at least
// once (and promtool test rules, in TestAlertRules, checks it does).
func TestEveryAlertIsTested(t *testing.T) {
	alerts, tests := readFile(t, "deploy/prometheus/alerts.yml"), readFile(t, "deploy/prometheus/alerts_test.yml")
	fires := map[string]bool{}
	var current string
	for line := range strings.Lines(tests) {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "alertname: "); ok {
			current = name
		}
		if line == "exp_alerts:" { // not "exp_alerts: []": a list of alerts follows
			fires[current] = true
		}
	}
	for line := range strings.Lines(alerts) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: "); ok && !fires[name] {
			t.Errorf("alert %s never fires in deploy/prometheus/alerts_test.yml", name)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
