// Command sipedge runs the SIP edge proxy: SIP on UDP and TCP, the control API over HTTP,
// and the store (embedded bbolt by default, Redis with --redis-url).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ctl" { // the operator CLI (ctl.go), a client of the API
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := runCtl(ctx, os.Args[2:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can drive it.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sipedge:", err)
		return 2
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, "sipedge", version)
		return 0
	}
	log := newLogger(cfg, stderr)

	// SIGINT stops at once; SIGTERM drains first (stop new INVITEs, let calls finish).
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	drain := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		draining := false
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM && !draining {
					draining = true
					log.Info().Str("signal", s.String()).Dur("drain_timeout", cfg.DrainTimeout).Msg("draining")
					close(drain)
					continue
				}
				log.Info().Str("signal", s.String()).Msg("stopping")
				stop()
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	if err := serve(ctx, cfg, log, stdout, drain); err != nil {
		log.Error().Err(err).Msg("sipedge stopped with an error")
		return 1
	}
	log.Info().Msg("sipedge stopped")
	return 0
}
