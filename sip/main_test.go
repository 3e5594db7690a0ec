package sip

import (
	"log/slog"
	"os"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"
)

func TestMain(m *testing.M) {
	// sipgo logs through slog; keep its per-connection chatter (e.g. reference counts on
	// shutdown) out of test output.
	sipmsg.SetDefaultLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	os.Exit(m.Run())
}
