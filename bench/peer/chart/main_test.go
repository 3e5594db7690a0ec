package main

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The sample is the harness's results.tsv layout with Kamailio and sipedge rows, a redone
// (noisy) run that must not count, and the harness's sustained.tsv.
func TestChartAndTablesFromSample(t *testing.T) {
	dir := t.TempDir()
	o := options{
		results:   "testdata/results.tsv",
		sustained: "testdata/sustained.tsv",
		svg:       filepath.Join(dir, "peer.svg"),
		md:        filepath.Join(dir, "peer.md"),
		info:      chartInfo{Title: "test & chart", XLabel: "offered calls per second"},
		crit:      criteria{FailPct: 1, OfferMinPct: 95},
		cpuRate:   2000,
		afterSecs: 10,
	}
	if err := run(o); err != nil {
		t.Fatal(err)
	}

	svg, err := os.ReadFile(o.svg)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(string(svg))) // well-formed, or a browser shows nothing
	groups := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "g" {
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					groups[a.Value]++
				}
			}
		}
	}
	for _, id := range []string{"series-kamailio-10", "series-sipedge-10000"} {
		if groups[id] != 1 {
			t.Errorf("SVG has %d groups %q, want 1 (groups: %v)", groups[id], id, groups)
		}
	}
	for _, want := range []string{`viewBox="0 0 960 660"`, "Kamailio, 10 entries: 2250 cps sustained",
		"sipedge, 10,000 entries: 3000 cps sustained", "test &amp; chart", "<polyline"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if n := strings.Count(string(svg), "<polyline"); n != 4 { // 2 series × 2 panels
		t.Errorf("SVG has %d polylines, want 4", n)
	}

	md, err := os.ReadFile(o.md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| highest sustained rate (< 1 % failed) | 2250 cps | 3000 cps | 1.33× (target ≥ 2×) |",
		"| proxy CPU per call at 2000 cps | 546 µs | 471 µs | 0.86× (target ≤ 0.6×) |", // the noisy 900 µs run is skipped
		"| INVITE→200 p99 at the fixed rate (wire) | 2654 µs at 500 cps | 2841 µs at 500 cps | 1.07× (target ≤ 1×) |",
		"| peak RSS (largest process, whole run) | 86 MiB (12 processes) | 2.3 GiB |",
		"| proxy CPU at the limit (% of one core) | 125 % at 2250 cps (128 % at 2500, failing) |",
		"| sipedge, 10,000 entries | 3250 (3250) | 1 | 1.50 |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("tables lack %q:\n%s", want, md)
		}
	}
}

func TestFailAxisIsMonotonic(t *testing.T) {
	prev := -1.0
	for _, v := range []float64{0, 0.01, 0.1, 0.5, 1, 2, 10, 50, 100, 150} {
		y := failY(v)
		if y < prev || y > 1 {
			t.Fatalf("failY(%g) = %g after %g", v, y, prev)
		}
		prev = y
	}
	if failY(100) != 1 {
		t.Errorf("failY(100) = %g, want 1", failY(100))
	}
}

// bench/results/peer-*.tsv carries the verdicts as "#sustained" lines after the rows.
func TestSustainedLinesInTSV(t *testing.T) {
	data, err := os.ReadFile("testdata/results.tsv")
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, "#sustained\tkamailio-10\t10\t2250\n#sustained\tsipedge-10000\t10000\t3000\n# a comment\n"...)
	rows, sus, err := readTSV(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 14 || sus["kamailio-10"] != 2250 || sus["sipedge-10000"] != 3000 {
		t.Fatalf("got %d rows, sustained %v", len(rows), sus)
	}
}
