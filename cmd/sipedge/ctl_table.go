package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// defaultWidth is the terminal width tables are fitted into unless $COLUMNS says more.
const defaultWidth = 80

// column is one column of a table. Columns with min > 0 may be shrunk down to min runes
// (in the order given by shrink) when the table is wider than the terminal; ids are never
// shrunk, so what a table shows can be pasted into the next command.
type column struct {
	name   string
	min    int  // 0: never truncated
	shrink int  // order in which shrinkable columns give way (lower first)
	tail   bool // truncate from the left, keeping the end (domain names)
	items  bool // a ", "-separated list: cut between items ("a, b, …"), not inside one
}

// cellPad is the gap between columns.
const cellPad = 2

// writeTable writes rows as aligned columns under upper-case headers, fitted into width
// by truncating shrinkable columns ("…" marks a cut). Cells are cleaned of control
// characters, so data cannot move the cursor or break the alignment.
func writeTable(w io.Writer, width int, cols []column, rows [][]string) error {
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = utf8.RuneCountInString(c.name)
	}
	for r := range rows {
		for i := range cols {
			rows[r][i] = clean(rows[r][i])
			widths[i] = max(widths[i], utf8.RuneCountInString(rows[r][i]))
		}
	}
	total := cellPad * (len(cols) - 1)
	for _, n := range widths {
		total += n
	}
	for order := 0; total > width && order < len(cols); order++ {
		for i, c := range cols {
			if c.min == 0 || c.shrink != order || widths[i] <= max(c.min, utf8.RuneCountInString(c.name)) {
				continue
			}
			cut := min(total-width, widths[i]-max(c.min, utf8.RuneCountInString(c.name)))
			widths[i] -= cut
			total -= cut
		}
	}
	tw := tabwriter.NewWriter(w, 0, 8, cellPad, ' ', 0)
	line := func(cells []string) {
		for i, s := range cells {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			if cols[i].items {
				fmt.Fprint(tw, truncateItems(s, widths[i]))
			} else {
				fmt.Fprint(tw, truncate(s, widths[i], cols[i].tail))
			}
		}
		fmt.Fprint(tw, "\n")
	}
	hdr := make([]string, len(cols))
	for i, c := range cols {
		hdr[i] = c.name
	}
	line(hdr)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

// truncate shortens s to n runes, marking the cut with "…" (at the start when tail).
func truncate(s string, n int, tail bool) string {
	r := []rune(s)
	if len(r) <= n || n <= 0 {
		return s
	}
	if n == 1 {
		return "…"
	}
	if tail {
		return "…" + string(r[len(r)-(n-1):])
	}
	return string(r[:n-1]) + "…"
}

// truncateItems shortens a ", "-separated list to n runes by dropping whole items from
// the end ("192.0.2.10, …"); when not even one item fits it cuts like truncate.
func truncateItems(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	items := strings.Split(s, ", ")
	for k := len(items) - 1; k > 0; k-- {
		if out := strings.Join(items[:k], ", ") + ", …"; utf8.RuneCountInString(out) <= n {
			return out
		}
	}
	return truncate(s, n, false)
}

// clean replaces control characters (tabs, newlines, escape sequences) with spaces or
// "?", so a value cannot break a table or drive the terminal.
func clean(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError }) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case unicode.IsControl(r) || r == utf8.RuneError:
			return '?'
		}
		return r
	}, s)
}

// field is one line of a key/value listing.
type field struct{ key, value string }

// writeFields writes one object as "key  value" lines, values wrapped at word
// boundaries to width and continued under the value column.
func writeFields(w io.Writer, width int, fields []field) error {
	kw := 0
	for _, f := range fields {
		kw = max(kw, utf8.RuneCountInString(f.key))
	}
	kw += cellPad
	var b strings.Builder
	for _, f := range fields {
		lines := wrap(clean(f.value), max(width-kw, 20))
		for i, l := range lines {
			k := ""
			if i == 0 {
				k = f.key
			}
			fmt.Fprintf(&b, "%-*s%s\n", kw, k, l)
		}
	}
	_, err := io.WriteString(w, strings.ReplaceAll(b.String(), " \n", "\n"))
	return err
}

// wrap splits s into lines of at most n runes at spaces; a longer word gets a line of
// its own (never cut: it may be an id).
func wrap(s string, n int) []string {
	words := strings.Fields(s)
	if len(words) == 0 {
		return []string{"-"}
	}
	var out []string
	cur := ""
	for _, wd := range words {
		switch {
		case cur == "":
			cur = wd
		case utf8.RuneCountInString(cur)+1+utf8.RuneCountInString(wd) <= n:
			cur += " " + wd
		default:
			out = append(out, cur)
			cur = wd
		}
	}
	return append(out, cur)
}

// orDash shows an unset value as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
