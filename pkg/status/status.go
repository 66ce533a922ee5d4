// Package status is a page that shows the service at work without a
// Prometheus or a Grafana: charts of the last minutes of its own metrics,
// drawn as SVG. A Sampler reads the metrics registry every second into a
// window of samples (its Run is the only writer); ServeHTTP draws from it. It
// is served on the admin listener, beside pprof, never on the public one.
package status

import (
	"context"
	"fmt"
	"html"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Keep is how many samples the page draws: ten minutes at one a second.
const Keep = 600

// Sampler keeps the recent values of the service's callback_* counters and
// gauges.
type Sampler struct {
	gather prometheus.Gatherer
	every  time.Duration
	ttl    time.Duration // drawn beside the oldest unwritten work

	mu      sync.Mutex
	samples []sample // oldest first, at most Keep
}

// sample is every series' value at one time, by name{labels}.
type sample struct {
	at time.Time
	v  map[string]float64
}

// New returns a sampler of g's metrics, once a second.
func New(g prometheus.Gatherer, ttl time.Duration) *Sampler {
	return &Sampler{gather: g, every: time.Second, ttl: ttl}
}

// Run samples until ctx is done.
func (s *Sampler) Run(ctx context.Context) error {
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for {
		s.sample(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *Sampler) sample(now time.Time) {
	families, err := s.gather.Gather()
	if err != nil && len(families) == 0 {
		return // nothing to draw this second; the next one may do
	}
	v := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "callback_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var x float64
			switch {
			case m.GetCounter() != nil:
				x = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				x = m.GetGauge().GetValue()
			default:
				continue // histograms: the page draws counters and gauges
			}
			v[key(f.GetName(), m.GetLabel())] = x
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == Keep {
		s.samples = slices.Delete(s.samples, 0, 1)
	}
	s.samples = append(s.samples, sample{at: now, v: v})
}

func key(name string, labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name + "{")
	for i, l := range labels {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
	}
	b.WriteString("}")
	return b.String()
}

// chart is one picture: its series are the keys that start with prefix,
// drawn as per-second rates for counters.
type chart struct {
	title  string
	prefix []string
	rate   bool
	unit   string
}

var charts = []chart{
	{title: "Callbacks answered, by status (per second)", prefix: []string{"callback_requests_total"}, rate: true},
	{title: "Lookups finished, by outcome (per second)", prefix: []string{"callback_lookups_total"}, rate: true},
	{title: "Upstream requests in flight, and the adaptive limit", prefix: []string{"callback_lookups_in_flight", "callback_lookup_limit"}},
	{title: "IDs waiting for a lookup", prefix: []string{"callback_ids_waiting"}},
	{title: "Oldest unwritten work (seconds), against the TTL", prefix: []string{"callback_oldest_unwritten_seconds"}, unit: "s"},
	{title: "Intake log: bytes on disk", prefix: []string{"callback_wal_bytes"}, unit: "B"},
}

// ServeHTTP draws the charts. It refreshes itself every five seconds.
func (s *Sampler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	samples := slices.Clone(s.samples)
	s.mu.Unlock()
	var b strings.Builder
	b.WriteString(`<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>callback status</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}p{margin:0 0 16px;color:#666}
.grid{display:grid;grid-template-columns:repeat(2,560px);gap:16px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
figcaption{font-weight:600;margin-bottom:4px}
</style></head><body><h1>callback</h1>`)
	fmt.Fprintf(&b, "<p>The last %s of this replica's metrics, one sample a second (%d samples). Prometheus format at /metrics on the service's own address.</p><div class=\"grid\">",
		window(samples), len(samples))
	for _, c := range charts {
		b.WriteString("<figure><figcaption>" + html.EscapeString(c.title) + "</figcaption>")
		b.WriteString(s.svg(c, samples))
		b.WriteString("</figure>")
	}
	b.WriteString("</div></body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

func window(samples []sample) string {
	if len(samples) < 2 {
		return "moment"
	}
	return samples[len(samples)-1].at.Sub(samples[0].at).Round(time.Second).String()
}

// series is one line of a chart: its points, one per sample after the first.
type series struct {
	name   string
	points []float64
}

func (s *Sampler) lines(c chart, samples []sample) []series {
	names := map[string]bool{}
	for _, sm := range samples {
		for k := range sm.v {
			for _, p := range c.prefix {
				if k == p || strings.HasPrefix(k, p+"{") {
					names[k] = true
				}
			}
		}
	}
	var out []series
	for _, name := range slices.Sorted(maps.Keys(names)) {
		sr := series{name: name}
		for i := 1; i < len(samples); i++ {
			cur := samples[i].v[name]
			if c.rate {
				dt := samples[i].at.Sub(samples[i-1].at).Seconds()
				d := cur - samples[i-1].v[name]
				if dt <= 0 || d < 0 { // a restart of the counter
					d = 0
				}
				cur = d / max(dt, 1e-9)
			}
			sr.points = append(sr.points, cur)
		}
		out = append(out, sr)
	}
	if c.unit == "s" && s.ttl > 0 && len(samples) > 1 {
		ttl := series{name: "ttl"}
		for range len(samples) - 1 {
			ttl.points = append(ttl.points, s.ttl.Seconds())
		}
		out = append(out, ttl)
	}
	return out
}

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// svg draws c's lines over the sampled window, scaled to their largest
// value, with a legend of their newest values.
func (s *Sampler) svg(c chart, samples []sample) string {
	const w, h, top, bottom = 540.0, 150.0, 10.0, 130.0
	lines := s.lines(c, samples)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, w, h+20*float64((len(lines)+1)/2), w, h+20*float64((len(lines)+1)/2))
	fmt.Fprintf(&b, `<line x1="40" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#bbb"/>`, bottom, w, bottom)
	if len(lines) == 0 || len(lines[0].points) < 2 {
		fmt.Fprintf(&b, `<text x="50" y="70" fill="#999">no data yet</text></svg>`)
		return b.String()
	}
	peak := 0.0
	for _, l := range lines {
		peak = max(peak, slices.Max(l.points))
	}
	if peak == 0 {
		peak = 1
	}
	fmt.Fprintf(&b, `<text x="0" y="%.0f" font-size="11" fill="#666">%s</text><text x="0" y="%.0f" font-size="11" fill="#666">0</text>`, top+4, human(peak, c.unit), bottom)
	for i, l := range lines {
		color := colors[i%len(colors)]
		var pts strings.Builder
		for j, v := range l.points {
			x := 40 + (w-40)*float64(j)/float64(max(len(l.points)-1, 1))
			y := bottom - (bottom-top)*v/peak
			fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, pts.String())
		lx, ly := 40+float64(i%2)*250, h+20*float64(i/2)+5
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f" font-size="12">%s: %s</text>`,
			lx, ly-9, color, lx+14, ly, html.EscapeString(legend(l.name)), human(l.points[len(l.points)-1], c.unit))
	}
	b.WriteString("</svg>")
	return b.String()
}

// legend shortens name{label="v"} to v, or the metric's own name.
func legend(name string) string {
	if i := strings.IndexByte(name, '"'); i >= 0 {
		return strings.Trim(name[i:], `"}`)
	}
	return strings.TrimPrefix(name, "callback_")
}

func human(v float64, unit string) string {
	switch {
	case unit == "B" && v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case unit == "B" && v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	case v >= 100 || v == float64(int64(v)):
		return fmt.Sprintf("%.0f%s", v, unit)
	default:
		return fmt.Sprintf("%.2f%s", v, unit)
	}
}
