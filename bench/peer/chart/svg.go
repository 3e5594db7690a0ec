package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// Chart geometry (px). Two panels share the x axis: failed calls on top, CPU per call below.
const (
	width    = 960
	height   = 660
	left     = 84
	right    = 28
	topY0    = 104 // failed-% panel
	topY1    = 330
	botY0    = 378 // CPU panel
	botY1    = 590
	failMin  = 0.1 // the failed-% axis is linear below this and logarithmic above
	failMax  = 100
	passLine = 1.0
)

type style struct {
	color  string
	dash   string // stroke-dasharray, "" = solid
	marker string // circle, square, diamond, triangle
}

// styleFor gives Kamailio orange and sipedge blue: dark and solid for its largest list,
// light and dashed for the others. i counts the configurations of the same product before cf.
func styleFor(cf *config, subj *config, i int) style {
	switch {
	case cf.Product == "kamailio":
		if i%2 == 1 {
			return style{"#e6550d", "2 3", "triangle"}
		}
		return style{"#e6550d", "", "diamond"}
	case cf == subj:
		return style{"#08519c", "", "circle"}
	case cf.Product == "sipedge":
		return style{"#4a9ad8", "7 4", "square"}
	}
	grey := []string{"#636363", "#31a354", "#756bb1"}
	return style{grey[i%len(grey)], "3 3", "circle"}
}

type canvas struct{ b bytes.Buffer }

func (c *canvas) f(format string, a ...any) { fmt.Fprintf(&c.b, format, a...) }

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) //nolint:errcheck // a strings.Builder does not fail
	return b.String()
}

func (c *canvas) text(x, y float64, anchor, attrs, s string) {
	c.f(`<text x="%.1f" y="%.1f" text-anchor="%s"%s>%s</text>`+"\n", x, y, anchor, attrs, esc(s))
}

func (c *canvas) marker(kind string, x, y float64, st style, filled bool) {
	fill := "#ffffff"
	if filled {
		fill = st.color
	}
	a := fmt.Sprintf(`fill="%s" stroke="%s" stroke-width="1.8"`, fill, st.color)
	switch kind {
	case "square":
		c.f(`<rect x="%.1f" y="%.1f" width="8" height="8" %s/>`+"\n", x-4, y-4, a)
	case "diamond":
		c.f(`<path d="M%.1f %.1fl5 5l-5 5l-5 -5z" %s/>`+"\n", x, y-5, a)
	case "triangle":
		c.f(`<path d="M%.1f %.1fl5 9h-10z" %s/>`+"\n", x, y-5, a)
	default:
		c.f(`<circle cx="%.1f" cy="%.1f" r="4.5" %s/>`+"\n", x, y, a)
	}
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v-1e-9 {
			return m * p
		}
	}
	return 10 * p
}

// tickStep picks a step that gives at most max ticks up to v.
func tickStep(v float64, max int) float64 {
	return niceCeil(v / float64(max))
}

// failY maps a failed % to a fraction of the panel height (0 = bottom): linear up to failMin,
// logarithmic from there to failMax, so 0, 0.1, 1, 10 and 100 % are evenly spread.
func failY(v float64) float64 {
	if math.IsNaN(v) || v <= 0 {
		return 0
	}
	v = math.Min(v, failMax)
	seg := 1 / (math.Log10(failMax/failMin) + 1) // share of the axis per decade, and for [0, failMin]
	if v < failMin {
		return seg * v / failMin
	}
	return seg * (1 + math.Log10(v/failMin))
}

// chartInfo is the text around the plot.
type chartInfo struct {
	Title    string
	Subtitle string
	XLabel   string
}

// renderSVG draws the chart: offered calls per second against failed calls (top panel) and the
// proxy's CPU per call (bottom panel), one line per configuration, on shared axes.
func renderSVG(w io.Writer, cfs []*config, info chartInfo) error {
	_, subj := pick(cfs)
	var c canvas
	c.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">`+"\n",
		width, height, width, height)
	c.f("<title>%s</title>\n", esc(info.Title))
	c.f(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	c.text(left, 26, "start", ` font-size="17" font-weight="bold" fill="#222"`, info.Title)
	if info.Subtitle != "" {
		c.text(left, 46, "start", ` fill="#555"`, info.Subtitle)
	}

	// x range over every measured rate
	maxRate := 0.0
	for _, cf := range cfs {
		for _, s := range cf.Steps {
			maxRate = math.Max(maxRate, float64(s.Rate))
		}
	}
	xstep := tickStep(maxRate*1.05, 10)
	xmax := math.Ceil(maxRate*1.05/xstep) * xstep
	if xmax <= 0 {
		xmax, xstep = 1000, 100
	}
	px := func(rate float64) float64 { return left + (width-left-right)*rate/xmax }

	// CPU range: the passing points decide; a failing point far above is drawn at the top edge.
	pmax, amax := 0.0, 0.0
	for _, cf := range cfs {
		for _, s := range cf.Steps {
			if math.IsNaN(s.USPerCall) {
				continue
			}
			amax = math.Max(amax, s.USPerCall)
			if s.Pass {
				pmax = math.Max(pmax, s.USPerCall)
			}
		}
	}
	if pmax == 0 {
		pmax = amax
	}
	ymax := math.Min(amax, 2.5*pmax) * 1.08
	ystep := tickStep(ymax, 6)
	ymax = math.Max(ystep, math.Ceil(ymax/ystep)*ystep)
	pyCPU := func(v float64) float64 { return botY1 - (botY1-botY0)*math.Min(v, ymax)/ymax }
	pyFail := func(v float64) float64 { return topY1 - (topY1-topY0)*failY(v) }

	// panels: frames, grids, axes
	for _, p := range [][2]float64{{topY0, topY1}, {botY0, botY1}} {
		c.f(`<rect x="%d" y="%.0f" width="%d" height="%.0f" fill="#fbfbfb" stroke="#bbb"/>`+"\n", left, p[0], width-left-right, p[1]-p[0])
		for x := xstep; x < xmax+1e-9; x += xstep {
			c.f(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e3e3e3"/>`+"\n", px(x), p[0], px(x), p[1])
		}
	}
	for x := 0.0; x < xmax+1e-9; x += xstep {
		c.text(px(x), botY1+18, "middle", ` fill="#333"`, fmt.Sprintf("%.0f", x))
	}
	c.text(left+(width-left-right)/2.0, botY1+42, "middle", ` fill="#222"`, info.XLabel)

	for _, v := range []float64{0, 0.1, 1, 10, 100} {
		y := pyFail(v)
		if v > 0 && v < 100 {
			c.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>`+"\n", left, y, width-right, y)
		}
		c.text(left-8, y+4, "end", ` fill="#333"`, fmt.Sprintf("%g", v))
	}
	y := pyFail(passLine)
	c.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n", left, y, width-right, y)
	c.text(left+8, y-6, "start", ` fill="#d62728" font-size="12"`, "1 % failed: above this line a rate is not sustained")
	c.text(left+8, topY0+18, "start", ` font-weight="bold" fill="#222"`, "Failed calls (%, log scale) — lower is better")
	c.f(`<text transform="translate(22 %.0f) rotate(-90)" text-anchor="middle" fill="#222">failed calls %%</text>`+"\n", (topY0+topY1)/2.0)

	for v := 0.0; v < ymax+1e-9; v += ystep {
		y := pyCPU(v)
		if v > 0 && v < ymax-1e-9 {
			c.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>`+"\n", left, y, width-right, y)
		}
		c.text(left-8, y+4, "end", ` fill="#333"`, fmt.Sprintf("%.0f", v))
	}
	c.text(left+8, botY0+18, "start", ` font-weight="bold" fill="#222"`, "Proxy CPU per successful call (µs) — lower is better")
	c.f(`<text transform="translate(22 %.0f) rotate(-90)" text-anchor="middle" fill="#222">CPU µs per call</text>`+"\n", (botY0+botY1)/2.0)

	styles := make([]style, len(cfs))
	seen := map[string]int{}
	for i, cf := range cfs {
		styles[i] = styleFor(cf, subj, seen[cf.Product])
		seen[cf.Product]++
	}

	// series
	for i, cf := range cfs {
		st := styles[i]
		dash := ""
		if st.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		c.f(`<g id="series-%s">`+"\n", esc(cf.Name))
		var pf, pc []string
		for _, s := range cf.Steps {
			pf = append(pf, fmt.Sprintf("%.1f,%.1f", px(float64(s.Rate)), pyFail(s.FailPct)))
			if !math.IsNaN(s.USPerCall) {
				pc = append(pc, fmt.Sprintf("%.1f,%.1f", px(float64(s.Rate)), pyCPU(s.USPerCall)))
			}
		}
		for _, pts := range [][]string{pf, pc} {
			if len(pts) > 1 {
				c.f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2.2"%s/>`+"\n", strings.Join(pts, " "), st.color, dash)
			}
		}
		for _, s := range cf.Steps {
			x := px(float64(s.Rate))
			c.marker(st.marker, x, pyFail(s.FailPct), st, s.Pass)
			if math.IsNaN(s.USPerCall) {
				continue
			}
			c.marker(st.marker, x, pyCPU(s.USPerCall), st, s.Pass)
			if s.USPerCall > ymax {
				c.text(x+7, botY0+12, "start", fmt.Sprintf(` fill="%s" font-size="11"`, st.color), fmt.Sprintf("↑ %.0f", s.USPerCall))
			}
		}
		c.f("</g>\n")
	}

	// legend: one entry per configuration, with its highest sustained rate
	lx, ly := float64(left), 74.0
	for i, cf := range cfs {
		st := styles[i]
		dash := ""
		if st.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		label := cf.label()
		if cf.Sustained >= 0 {
			label += fmt.Sprintf(": %d cps sustained", cf.Sustained)
		}
		wtext := 7.2 * float64(len([]rune(label)))
		if lx+40+wtext > width-right && lx > left {
			lx, ly = left, ly+18
		}
		c.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.2"%s/>`+"\n", lx, ly, lx+28, ly, st.color, dash)
		c.marker(st.marker, lx+14, ly, st, true)
		c.text(lx+34, ly+4, "start", ` fill="#222"`, label)
		lx += 40 + wtext + 18
	}
	c.text(width-right, botY1+62, "end", ` fill="#555" font-size="12"`, "filled marker: rate passed (< 1 % failed, ≥ 95 % offered); hollow: failed")
	c.f("</svg>\n")
	_, err := w.Write(c.b.Bytes())
	return err
}
