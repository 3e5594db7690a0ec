package sip

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"
)

func TestMain(m *testing.M) {
	// sipgo logs through slog; keep its per-connection chatter (e.g. reference counts on
	// shutdown) out of test output.
	// Tests that send garbage on purpose (torture, fuzz seeds) would print every message
	// sipgo cannot parse, whole: drop those lines.
	sipmsg.SetDefaultLogger(slog.New(dropMessages{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}),
		[]string{"failed to parse"}}))
	// New raises sipgo's process-wide UDP MTU guard and read buffer. Do it once before any
	// test starts a peer, so no peer's goroutine reads those globals while a test's New
	// writes them.
	if s, err := New(Config{NonceKey: testKey}, func() Policy { return nil }); err == nil {
		s.tp.Close()
	}
	os.Exit(m.Run())
}

// dropMessages is a slog.Handler that discards records with one of the given messages.
type dropMessages struct {
	slog.Handler
	msgs []string
}

func (d dropMessages) Handle(ctx context.Context, r slog.Record) error {
	if slices.Contains(d.msgs, r.Message) {
		return nil
	}
	return d.Handler.Handle(ctx, r)
}

func (d dropMessages) WithAttrs(as []slog.Attr) slog.Handler {
	return dropMessages{d.Handler.WithAttrs(as), d.msgs}
}

func (d dropMessages) WithGroup(name string) slog.Handler {
	return dropMessages{d.Handler.WithGroup(name), d.msgs}
}
