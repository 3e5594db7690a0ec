// Command chart turns the peer benchmark's results (bench/peer: harness results.tsv and
// sustained.tsv) into the chart and the tables of bench/results/peer-*.md: offered calls per
// second against failed calls and the proxy's CPU per call, sipedge and Kamailio on the same axes.
//
//	go run ./bench/peer/chart -results results.tsv -sustained sustained.tsv \
//		-svg bench/results/peer.svg -md summary.md -title "sipedge vs Kamailio"
//
// Standard library only, so `go run` needs nothing else.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
)

type options struct {
	results, sustained string
	svg, md            string
	info               chartInfo
	crit               criteria
	cpuRate            int
	afterSecs          int
}

func main() {
	var o options
	flag.StringVar(&o.results, "results", "", "the harness's results.tsv, or bench/results/peer-*.tsv (with #sustained lines)")
	flag.StringVar(&o.sustained, "sustained", "", "the harness's sustained.tsv (optional: else #sustained lines, else the pass rule decides)")
	flag.StringVar(&o.svg, "svg", "", "write the chart here")
	flag.StringVar(&o.md, "md", "", "write the summary and per-rate tables (Markdown) here")
	flag.StringVar(&o.info.Title, "title", "sipedge vs Kamailio: calls per second on one machine", "chart title")
	flag.StringVar(&o.info.Subtitle, "subtitle", "", "line under the title")
	flag.StringVar(&o.info.XLabel, "xlabel", "offered load (calls per second)", "x axis label")
	flag.Float64Var(&o.crit.FailPct, "fail-pct", 1, "a rate fails at >= this % of calls failed")
	flag.Float64Var(&o.crit.OfferMinPct, "offer-min-pct", 95, "a rate fails when less than this % of it was offered")
	flag.IntVar(&o.cpuRate, "cpu-rate", 2000, "rate (cps) whose CPU per call the summary compares")
	flag.IntVar(&o.afterSecs, "after-secs", 10, "seconds after the load at which the harness sampled memory (AFTER_SECS)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.results == "" || (o.svg == "" && o.md == "") {
		return errors.New("need -results and at least one of -svg, -md")
	}
	cfs, err := load(o)
	if err != nil {
		return err
	}
	if o.svg != "" {
		var b bytes.Buffer
		if err := renderSVG(&b, cfs, o.info); err != nil {
			return err
		}
		if err := os.WriteFile(o.svg, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if o.md != "" {
		var b bytes.Buffer
		writeSummary(&b, cfs, o.cpuRate, o.afterSecs)
		b.WriteString("\n")
		writeSteps(&b, cfs, o.afterSecs)
		if err := os.WriteFile(o.md, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func load(o options) ([]*config, error) {
	f, err := os.Open(o.results)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, sus, err := readTSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.results, err)
	}
	if o.sustained != "" {
		data, err := os.ReadFile(o.sustained)
		if err != nil {
			return nil, err
		}
		more, err := readSustained(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		for k, v := range more {
			sus[k] = v
		}
	}
	cfs := build(rows, sus, o.crit)
	if len(cfs) == 0 {
		return nil, fmt.Errorf("%s: no counted runs", o.results)
	}
	return cfs, nil
}
