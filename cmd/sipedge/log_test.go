package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestSlogBridgeBoundsGarbage: sipgo logging a flood of unparsable datagrams (each with
// its whole payload) costs a bounded number of lines, each with the payload cut short.
func TestSlogBridgeBoundsGarbage(t *testing.T) {
	var buf bytes.Buffer
	l := newSlogBridge(zerolog.New(&buf), "debug")
	payload := strings.Repeat("A", 60000)
	for range 1000 {
		l.Error("parse failed", "data", payload)
	}
	lines := strings.Count(buf.String(), "\n")
	if lines < 10 || lines > 30 {
		t.Fatalf("1000 identical errors gave %d log lines, want the burst (10) plus 1 in 100", lines)
	}
	if buf.Len() > lines*(maxLogAttr+200) {
		t.Fatalf("log holds %d bytes for %d lines: payload not cut", buf.Len(), lines)
	}
	if !strings.Contains(buf.String(), "60000 bytes") {
		t.Fatal("a cut attribute does not say how long it was")
	}
}
