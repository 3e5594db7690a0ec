package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// pick chooses the reference (Kamailio with the fewest entries) and the subject (sipedge with
// the most entries) for the ratio column; either may be nil.
func pick(cfs []*config) (ref, subj *config) {
	for _, cf := range cfs {
		switch cf.Product {
		case "kamailio":
			if ref == nil || cf.Entries < ref.Entries {
				ref = cf
			}
		case "sipedge":
			if subj == nil || cf.Entries > subj.Entries {
				subj = cf
			}
		}
	}
	return ref, subj
}

func fmtNum(v float64, unit string) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// fmtMem writes kB as MiB, or GiB from 1 GiB on.
func fmtMem(kb float64) string {
	switch {
	case math.IsNaN(kb) || kb <= 0:
		return "–"
	case kb >= 1<<20:
		return fmt.Sprintf("%.1f GiB", kb/(1<<20))
	default:
		return fmt.Sprintf("%.0f MiB", kb/1024)
	}
}

func ratio(a, b float64, target string) string {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 || a < 0 {
		return "– (target " + target + ")"
	}
	return fmt.Sprintf("%.2f× (target %s)", a/b, target)
}

// figures are the rows of the summary table: one figure per row, one configuration per column.
type figure struct {
	name  string
	cell  func(*config) string
	value func(*config) float64 // for the ratio column; nil: no ratio
	limit func(*config) string  // the target, for the ratio column; "" = none
}

func figures(cpuRate, afterSecs int) []figure {
	// CPU per call at a rate the proxy did not sustain is no comparison: the failed calls'
	// work is spread over the few that succeeded. It is shown, marked, and left out of the ratio.
	us := func(cf *config) float64 {
		if s := cf.stepAt(cpuRate); s != nil && s.Pass {
			return s.USPerCall
		}
		return math.NaN()
	}
	usCell := func(cf *config) string {
		s := cf.stepAt(cpuRate)
		switch {
		case s == nil || math.IsNaN(s.USPerCall):
			return "–"
		case !s.Pass:
			return fmt.Sprintf("(%.0f µs: the rate failed)", s.USPerCall)
		}
		return fmtNum(s.USPerCall, "µs")
	}
	return []figure{
		{name: "highest sustained rate (< 1 % failed)",
			cell: func(cf *config) string {
				if cf.Sustained < 0 {
					return "–"
				}
				return fmt.Sprintf("%d cps", cf.Sustained)
			},
			value: func(cf *config) float64 { return float64(cf.Sustained) },
			limit: func(*config) string { return "≥ 2×" }},
		{name: fmt.Sprintf("proxy CPU per call at %d cps", cpuRate),
			cell:  usCell,
			value: us,
			limit: func(*config) string { return "≤ 0.6×" }},
		{name: "proxy CPU at the limit (% of one core)",
			cell: func(cf *config) string {
				if cf.Sustained <= 0 {
					return "–"
				}
				s := cf.stepAt(cf.Sustained)
				if s == nil || math.IsNaN(s.CPUPct) {
					return "–"
				}
				out := fmt.Sprintf("%.0f %% at %d cps", s.CPUPct, s.Rate)
				for _, n := range cf.Steps { // the first failing rate above it, if measured
					if n.Rate > s.Rate && !n.Pass && !math.IsNaN(n.CPUPct) {
						out += fmt.Sprintf(" (%.0f %% at %d, failing)", n.CPUPct, n.Rate)
						break
					}
				}
				return out
			}},
		{name: "INVITE→200 p99 at the fixed rate (wire)",
			cell: func(cf *config) string {
				if math.IsNaN(cf.WireP99) {
					return "–"
				}
				return fmt.Sprintf("%.0f µs at %d cps", cf.WireP99, cf.FixedRate)
			},
			value: func(cf *config) float64 { return cf.WireP99 },
			limit: func(*config) string { return "≤ 1×" }},
		{name: "peak RSS (largest process, whole run)",
			cell: func(cf *config) string {
				s := fmtMem(cf.RSSPeakKB)
				if cf.Procs > 1 {
					s += fmt.Sprintf(" (%d processes)", cf.Procs)
				}
				return s
			},
			limit: func(*config) string { return "≤ 512 MiB" }},
		{name: "peak memory of all its processes (sum of PSS)",
			cell: func(cf *config) string { return fmtMem(cf.PSSPeakKB) }},
		{name: fmt.Sprintf("RSS %d s after a step's load (largest process, worst step)", afterSecs),
			cell:  func(cf *config) string { return fmtMem(cf.RSSAfterKB) },
			limit: func(*config) string { return "≤ 128 MiB" }},
	}
}

// writeSummary writes the one table a reader needs: the figures of every configuration, and
// the subject against the reference with the targets.
func writeSummary(w io.Writer, cfs []*config, cpuRate, afterSecs int) {
	ref, subj := pick(cfs)
	cmp := ref != nil && subj != nil
	var b strings.Builder
	b.WriteString("| |")
	for _, cf := range cfs {
		fmt.Fprintf(&b, " %s |", cf.label())
	}
	if cmp {
		fmt.Fprintf(&b, " %s vs %s |", subj.label(), ref.label())
	}
	b.WriteString("\n|---|")
	for range cfs {
		b.WriteString("---|")
	}
	if cmp {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, f := range figures(cpuRate, afterSecs) {
		fmt.Fprintf(&b, "| %s |", f.name)
		for _, cf := range cfs {
			fmt.Fprintf(&b, " %s |", f.cell(cf))
		}
		if cmp {
			switch {
			case f.value != nil && f.limit != nil:
				fmt.Fprintf(&b, " %s |", ratio(f.value(subj), f.value(ref), f.limit(subj)))
			case f.limit != nil:
				fmt.Fprintf(&b, " %s: %s |", f.cell(subj), "target "+f.limit(subj))
			default:
				b.WriteString(" |")
			}
		}
		b.WriteString("\n")
	}
	io.WriteString(w, b.String())
}

// writeSteps writes every ladder step: the data behind the chart.
func writeSteps(w io.Writer, cfs []*config, afterSecs int) {
	var b strings.Builder
	fmt.Fprintf(&b, "| configuration | rate cps (offered) | runs | failed %% | proxy CPU %% | CPU µs/call | drops at proxy socket | peak RSS | RSS +%d s | verdict |\n", afterSecs)
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	f := func(v float64, format string) string {
		if math.IsNaN(v) {
			return "–"
		}
		return fmt.Sprintf(format, v)
	}
	for _, cf := range cfs {
		for _, s := range cf.Steps {
			verdict := "fail"
			if s.Pass {
				verdict = "pass"
			}
			fmt.Fprintf(&b, "| %s | %d (%s) | %d | %s | %s | %s | %s | %s | %s | %s |\n",
				cf.label(), s.Rate, f(s.Offered, "%.0f"), s.Runs, f(s.FailPct, "%.2f"), f(s.CPUPct, "%.0f"),
				f(s.USPerCall, "%.0f"), f(s.PxDrop, "%.0f"), fmtMem(s.RSSPeakKB), fmtMem(s.RSSAfter), verdict)
		}
	}
	io.WriteString(w, b.String())
}
