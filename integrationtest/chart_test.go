//go:build bench

package integrationtest

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// The report's charts: small hand-written SVG, so the benchmark needs no
// plotting dependency and the files diff as text.

type line struct {
	name string
	ys   []float64 // one value per second
}

type bar struct {
	name string
	v    float64
}

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

const (
	chartW, chartH = 720, 300
	padL, padR     = 60, 20
	padT, padB     = 36, 40
)

// lineChart plots each line against seconds.
func lineChart(title string, lines []line) string {
	var b strings.Builder
	n, top := 1, 1.0
	for _, l := range lines {
		n = max(n, len(l.ys))
		for _, y := range l.ys {
			top = max(top, y)
		}
	}
	top = niceCeil(top)
	x := func(i int) float64 { return padL + float64(i)*(chartW-padL-padR)/float64(max(n-1, 1)) }
	y := func(v float64) float64 { return chartH - padB - v/top*(chartH-padT-padB) }
	header(&b, title)
	axes(&b, top, fmt.Sprintf("seconds (0-%d)", n-1))
	for i, l := range lines {
		var pts []string
		for j, v := range l.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(j), y(v)))
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`+"\n", padL+10+i*110, padT-8, c, html.EscapeString(l.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// barChart draws one bar per value.
func barChart(title string, bars []bar) string {
	var b strings.Builder
	top := 1.0
	for _, br := range bars {
		top = max(top, br.v)
	}
	top = niceCeil(top)
	header(&b, title)
	axes(&b, top, "")
	w := float64(chartW-padL-padR) / float64(len(bars))
	for i, br := range bars {
		h := br.v / top * (chartH - padT - padB)
		x := padL + float64(i)*w + w*0.2
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n",
			x, chartH-padB-h, w*0.6, h, colors[i%len(colors)])
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" text-anchor="middle">%s: %.0f</text>`+"\n",
			x+w*0.3, chartH-padB+16, html.EscapeString(br.name), br.v)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func header(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">`+"\n", chartW, chartH)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))
}

func axes(b *strings.Builder, top float64, xlabel string) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", padL, padT, padL, chartH-padB)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", padL, chartH-padB, chartW-padR, chartH-padB)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		yy := chartH - padB - float64(i)/4*(chartH-padT-padB)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>`+"\n", padL-6, yy+4, fmtNum(v))
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, yy, chartW-padR, yy)
	}
	if xlabel != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11" text-anchor="middle">%s</text>`+"\n", (chartW+padL)/2, chartH-8, xlabel)
	}
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.3gk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}
