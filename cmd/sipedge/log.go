package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// newLogger builds the one process logger; components get children with a "component" field.
func newLogger(c Config, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	if c.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// newSlogBridge routes sipgo's log/slog output into zerolog at its own level. sipgo nests
// With("caller", …) groups, which would repeat the key in JSON: the wrapper keeps only the
// innermost caller and writes it once as sipgo_caller.
func newSlogBridge(base zerolog.Logger, level string) *slog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.WarnLevel
	}
	zl := base.Level(lvl).With().Str("component", "sipgo").Logger()
	return slog.New(callerOnce{Handler: zerolog.NewSlogHandler(zl)})
}

type callerOnce struct {
	slog.Handler
	caller string
}

func (h callerOnce) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if a.Key == "caller" {
			h.caller = a.Value.String()
			continue
		}
		out = append(out, a)
	}
	h.Handler = h.Handler.WithAttrs(out)
	return h
}

func (h callerOnce) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

func (h callerOnce) Handle(ctx context.Context, r slog.Record) error {
	if h.caller != "" {
		r = r.Clone()
		r.AddAttrs(slog.String("sipgo_caller", h.caller))
	}
	return h.Handler.Handle(ctx, r)
}

// redisLog routes go-redis's own messages (reconnect attempts, pool dial failures) into
// zerolog at debug: the store already reports an outage once at warn and counts it, so
// these would only repeat it on stderr, once per attempt.
type redisLog struct{ log zerolog.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.log.Debug().Msgf(format, v...)
}
