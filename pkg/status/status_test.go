package status

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The page draws a counter as its per-second rate, a gauge as its value,
// and keeps no more than Keep samples.
func TestPage(t *testing.T) {
	reg := prometheus.NewRegistry()
	answers := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "callback_requests_total"}, []string{"code"})
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "callback_ids_waiting"})
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "go_threads"})
	reg.MustRegister(answers, waiting, other)
	s := New(reg, 30*time.Second)

	now := time.Unix(1000, 0)
	for i := range Keep + 5 {
		answers.WithLabelValues("202").Add(5) // 5 a second
		waiting.Set(float64(i))
		s.sample(now.Add(time.Duration(i) * time.Second))
	}
	if len(s.samples) != Keep {
		t.Errorf("%d samples kept, want %d", len(s.samples), Keep)
	}
	if _, ok := s.samples[0].v["go_threads"]; ok {
		t.Error("sampled go_threads, want callback_* only")
	}

	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	for _, want := range []string{
		"Callbacks answered, by status",
		"202: 5<", // the rate, not the counter's total
		"ids_waiting: 604<",
		"<polyline",
		"ttl: 30s<",
		"9m59s", // the window drawn: 600 samples a second apart
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
}

// Before two samples there is nothing to draw, and the page says so.
func TestPageEmpty(t *testing.T) {
	rec := httptest.NewRecorder()
	New(prometheus.NewRegistry(), 0).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if !strings.Contains(rec.Body.String(), "no data yet") {
		t.Errorf("empty page = %q, want it to say no data yet", rec.Body.String())
	}
}
