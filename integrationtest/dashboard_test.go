package integrationtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"callback/objectsource/sim"
)

// TestDashboardOnRealPrometheus: Debian's Prometheus server scrapes the real
// service, with the alert rules loaded, under a little traffic; then every
// query of the Grafana dashboard (deploy/grafana) runs against it. Each must
// parse and evaluate, and name only metrics the service's scrape has, and the
// intake panel must show the traffic. The rules must load and evaluate too.
func TestDashboardOnRealPrometheus(t *testing.T) {
	bin := needTool(t, "prometheus", "prometheus")
	up := &sim.Upstream{MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond}
	svc, _, _ := startScenario(t, buildFast(t), upstream(t, up))

	// Prometheus on loopback, scraping every second, the rules loaded.
	dir := t.TempDir()
	rules, err := filepath.Abs("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: callback
    static_configs:
      - targets: [%q]
`, rules, strings.TrimPrefix(svc.URL, "http://"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	startProcess(t, "prometheus", cmd)
	prom := "http://" + addr

	// Traffic, once Prometheus scrapes, so that rate() sees it rise.
	eventually(t, 30*time.Second, func() error {
		v, err := query(prom, `up{job="callback"}`)
		if err == nil && (len(v) == 0 || v[0] != 1) {
			err = fmt.Errorf("up = %v, want 1", v)
		}
		return err
	})
	if _, err := (&sim.Sender{Target: svc.URL + "/callback", Interval: 50 * time.Millisecond, MaxSends: 60, IDRange: 200}).Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		v, err := query(prom, `sum(callback_requests_total{code="202"})`)
		if err == nil && (len(v) == 0 || v[0] < 60) {
			err = fmt.Errorf("Prometheus has %v accepted callbacks, want 60", v)
		}
		return err
	})
	time.Sleep(3 * time.Second) // a few more scrapes, for rate()

	resp, err := http.Get(svc.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	scrape := "\n" + string(raw)
	metricName := regexp.MustCompile(`\b(?:callback|go|process)_[a-z0-9_]+\b`)

	b, err := os.ReadFile("../deploy/grafana/dashboards/callback.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/dashboards/callback.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	var queries int
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			// Grafana's own variable: the query's rate window.
			expr := strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m")
			for _, name := range metricName.FindAllString(expr, -1) {
				if !strings.Contains(scrape, "\n"+name+" ") && !strings.Contains(scrape, "\n"+name+"{") {
					t.Errorf("panel %q: %s is not in the service's scrape", p.Title, name)
				}
			}
			if _, err := query(prom, expr); err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, expr, err)
			}
		}
	}
	intake := strings.ReplaceAll(dash.Panels[0].Targets[0].Expr, "$__rate_interval", "1m")
	if v, err := query(prom, intake); err != nil || len(v) == 0 || v[0] <= 0 {
		t.Errorf("panel %q shows %v (%v), want the traffic", dash.Panels[0].Title, v, err)
	}

	// The rules loaded, and every group evaluated without an error.
	var rulesResp struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
					Error  string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	getJSON(t, prom+"/api/v1/rules", &rulesResp)
	var groups []string
	for _, g := range rulesResp.Data.Groups {
		groups = append(groups, g.Name)
		for _, r := range g.Rules {
			if r.Health == "err" {
				t.Errorf("rule %s: %s", r.Name, r.Error)
			}
		}
	}
	if !slices.Contains(groups, "callback") || !slices.Contains(groups, "callback-slo") {
		t.Errorf("rule groups %v, want callback and callback-slo", groups)
	}
	report(t, "dashboard", fmt.Sprintf("%d panels, %d queries on a real Prometheus scraping the service", len(dash.Panels), queries),
		"every query parsed and named only scraped metrics; the rules loaded", 0, 0)
}

// query runs an instant query and returns its sample values; a parse or
// evaluation error is an error.
func query(prom, expr string) ([]float64, error) {
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		var f float64
		if str, ok := s.Value[1].(string); ok {
			_, _ = fmt.Sscan(str, &f)
		}
		out = append(out, f)
	}
	return out, nil
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
