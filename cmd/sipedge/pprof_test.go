package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

func TestServePprof(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	addr, err := servePprof(gctx, g, "127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + addr.String() + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("GET /debug/pprof/cmdline: %d %q", res.StatusCode, body)
	}
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("pprof server did not stop cleanly: %v", err)
	}
	if _, err := servePprof(context.Background(), new(errgroup.Group), "not-an-address", zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "--pprof-listen") {
		t.Fatalf("bad address: err = %v, want one naming --pprof-listen", err)
	}
}

// Profiles are served on loopback only: any other address refuses the start.
func TestPprofLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", "[::]:6060", "192.0.2.1:6060", ":6060"} {
		if _, err := servePprof(context.Background(), new(errgroup.Group), addr, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("servePprof(%s): %v, want a loopback refusal", addr, err)
		}
		if _, err := parseConfig([]string{"--pprof-listen", addr}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--pprof-listen") {
			t.Errorf("--pprof-listen %s: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:6060"} {
		if _, err := parseConfig([]string{"--pprof-listen", addr}, env(nil), io.Discard); err != nil {
			t.Errorf("--pprof-listen %s: %v", addr, err)
		}
	}
}
