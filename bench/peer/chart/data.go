package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// row is one line of the harness's results.tsv, by column name.
type row map[string]string

// num is the column as a number; NaN when it is missing or "-".
func (r row) num(col string) float64 {
	v, err := strconv.ParseFloat(strings.TrimSpace(r[col]), 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// readTSV reads a tab-separated file whose first line names the columns. Lines starting with
// "#" are comments, except "#sustained<TAB>config<TAB>entries<TAB>cps": the harness's verdicts,
// returned as the map.
func readTSV(r io.Reader) ([]row, map[string]int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var head []string
	var rows []row
	sustained := map[string]int{}
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if strings.HasPrefix(line, "#") {
			if f[0] == "#sustained" && len(f) >= 4 {
				if v, err := strconv.Atoi(f[3]); err == nil {
					sustained[f[1]] = v
				}
			}
			continue
		}
		if head == nil {
			head = f
			continue
		}
		if f[0] == head[0] { // a second header, from concatenated files
			continue
		}
		m := make(row, len(head))
		for i, h := range head {
			if i < len(f) {
				m[h] = f[i]
			}
		}
		rows = append(rows, m)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if head == nil {
		return nil, nil, fmt.Errorf("no header line")
	}
	for _, want := range []string{"config", "rate", "phase", "fail_pct"} {
		found := false
		for _, h := range head {
			found = found || h == want
		}
		if !found {
			return nil, nil, fmt.Errorf("no %q column: not the harness's results.tsv", want)
		}
	}
	return rows, sustained, nil
}

// readSustained reads sustained.tsv ("config entries cps" per line, no header).
func readSustained(r io.Reader) (map[string]int, error) {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		v, err := strconv.Atoi(f[2])
		if err != nil {
			continue // a header or a broken line
		}
		out[f[0]] = v
	}
	return out, sc.Err()
}

// step is one ladder rate of one configuration: medians over its counted runs.
type step struct {
	Rate      int
	Runs      int
	FailPct   float64
	Offered   float64
	CPUPct    float64
	USPerCall float64
	PxDrop    float64
	RSSPeakKB float64
	RSSAfter  float64
	Pass      bool
}

// config is everything measured for one configuration, e.g. "kamailio-10".
type config struct {
	Name      string
	Product   string // "kamailio", "sipedge"
	Entries   int
	Steps     []step // ladder, by rate
	Sustained int    // highest rate passed; -1 when unknown
	// fixed-rate phase, medians
	FixedRate  int
	WireP50    float64
	WireP99    float64
	FixedCPUUS float64
	// memory, maxima over every run of the configuration
	Procs      int
	RSSPeakKB  float64
	PSSPeakKB  float64
	RSSAfterKB float64
	PSSAfterKB float64
}

// criteria decide whether a ladder rate passed, as the harness does.
type criteria struct {
	FailPct     float64 // a rate fails at >= this % of calls not completed
	OfferMinPct float64 // ... or when SIPp offered < this % of the rate
}

func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// maxOf is the largest non-NaN value (NaN when there is none).
func maxOf(cur, v float64) float64 {
	if math.IsNaN(cur) || v > cur {
		return v
	}
	return cur
}

// splitName turns "sipedge-10000" into ("sipedge", 10000).
func splitName(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name, -1
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil {
		return name, -1
	}
	return name[:i], n
}

// build groups the rows by configuration, in the order they first appear. Rows of redone
// (noisy) runs, phase "<phase>-noisy", are skipped, as in the harness's report.
func build(rows []row, sustained map[string]int, c criteria) []*config {
	var order []*config
	by := map[string]*config{}
	ladder := map[string]map[int][]row{}
	fixed := map[string][]row{}
	for _, r := range rows {
		name := r["config"]
		if name == "" || strings.HasSuffix(r["phase"], "-noisy") {
			continue
		}
		cf := by[name]
		if cf == nil {
			prod, n := splitName(name)
			cf = &config{Name: name, Product: prod, Entries: n, Sustained: -1,
				WireP50: math.NaN(), WireP99: math.NaN(), FixedCPUUS: math.NaN(),
				RSSPeakKB: math.NaN(), PSSPeakKB: math.NaN(), RSSAfterKB: math.NaN(), PSSAfterKB: math.NaN()}
			by[name] = cf
			order = append(order, cf)
			ladder[name] = map[int][]row{}
		}
		rate, err := strconv.Atoi(r["rate"])
		if err != nil {
			continue
		}
		switch r["phase"] {
		case "ladder":
			ladder[name][rate] = append(ladder[name][rate], r)
		case "fixed":
			fixed[name] = append(fixed[name], r)
			cf.FixedRate = rate
		default:
			continue
		}
		if p := r.num("mem_procs"); !math.IsNaN(p) && int(p) > cf.Procs {
			cf.Procs = int(p)
		}
		cf.RSSPeakKB = maxOf(cf.RSSPeakKB, r.num("rss_peak_kb"))
		cf.PSSPeakKB = maxOf(cf.PSSPeakKB, r.num("pss_peak_kb"))
		cf.RSSAfterKB = maxOf(cf.RSSAfterKB, r.num("rss_after_kb"))
		cf.PSSAfterKB = maxOf(cf.PSSAfterKB, r.num("pss_after_kb"))
	}
	col := func(rs []row, name string) float64 {
		v := make([]float64, 0, len(rs))
		for _, r := range rs {
			v = append(v, r.num(name))
		}
		return median(v)
	}
	for _, cf := range order {
		for rate, rs := range ladder[cf.Name] {
			s := step{Rate: rate, Runs: len(rs),
				FailPct: col(rs, "fail_pct"), Offered: col(rs, "offered_cps"),
				CPUPct: col(rs, "proxy_cpu_pct"), USPerCall: col(rs, "proxy_us_per_call"),
				PxDrop: col(rs, "proxy_sock_drops"), RSSPeakKB: col(rs, "rss_peak_kb"), RSSAfter: col(rs, "rss_after_kb")}
			s.Pass = s.FailPct < c.FailPct && s.Offered >= float64(rate)*c.OfferMinPct/100
			cf.Steps = append(cf.Steps, s)
		}
		sort.Slice(cf.Steps, func(i, j int) bool { return cf.Steps[i].Rate < cf.Steps[j].Rate })
		if fx := fixed[cf.Name]; len(fx) > 0 {
			cf.WireP50, cf.WireP99 = col(fx, "wire_p50_us"), col(fx, "wire_p99_us")
			cf.FixedCPUUS = col(fx, "proxy_us_per_call")
		}
		if v, ok := sustained[cf.Name]; ok {
			cf.Sustained = v
		} else if len(cf.Steps) > 0 { // no verdict file: the highest rate below the first failure
			cf.Sustained = 0
			for _, s := range cf.Steps {
				if !s.Pass {
					break
				}
				cf.Sustained = s.Rate
			}
		}
	}
	return order
}

// stepAt is the configuration's ladder step at rate, or nil.
func (cf *config) stepAt(rate int) *step {
	for i := range cf.Steps {
		if cf.Steps[i].Rate == rate {
			return &cf.Steps[i]
		}
	}
	return nil
}

// label is how a configuration is named for readers: "Kamailio, 10 entries".
func (cf *config) label() string {
	p := cf.Product
	switch p {
	case "kamailio":
		p = "Kamailio"
	case "no-proxy": // the harness's baseline: SIPp UAC straight to the UAS
		return "SIPp alone, no proxy"
	}
	if cf.Entries < 0 {
		return p
	}
	return fmt.Sprintf("%s, %s entries", p, thousands(cf.Entries))
}

// thousands writes 10000 as "10,000".
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}
