package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
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
	return slog.New(callerOnce{Handler: zerolog.NewSlogHandler(zl), sample: newLogSampler(10, 10*time.Second)})
}

// callerOnce is the slog handler of the bridge. Besides the caller it bounds what an
// outsider can make sipgo log: every attribute is cut to maxLogAttr bytes (sipgo logs
// whole unparsable datagrams), and each message is sampled (the first few per window,
// then one in 100), so a flood of garbage costs log bytes in proportion to its rate, not
// its volume.
type callerOnce struct {
	slog.Handler
	caller string
	sample *logSampler
}

// maxLogAttr bounds one attribute of a sipgo log line.
const maxLogAttr = 256

// logSampler lets through, per message text, burst records per window and then one in
// every 100. It tracks at most maxSampledMessages texts (sipgo's are constants; others
// share one budget). Safe for concurrent use.
type logSampler struct {
	mu     sync.Mutex
	burst  int
	window time.Duration
	m      map[string]*sampleState
}

type sampleState struct {
	start time.Time
	n     int
}

const maxSampledMessages = 256

func newLogSampler(burst int, window time.Duration) *logSampler {
	return &logSampler{burst: burst, window: window, m: map[string]*sampleState{}}
}

func (l *logSampler) allow(msg string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[msg]
	if st == nil && len(l.m) >= maxSampledMessages {
		msg = "\x00other" // texts beyond the cap share one budget
		st = l.m[msg]
	}
	if st == nil {
		st = &sampleState{start: now}
		l.m[msg] = st
	}
	if now.Sub(st.start) > l.window {
		st.start, st.n = now, 0
	}
	st.n++
	return st.n <= l.burst || st.n%100 == 0
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
	if h.sample != nil && !h.sample.allow(r.Message, time.Now()) {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, clipLog(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(clipAttr(a))
		return true
	})
	if h.caller != "" {
		out.AddAttrs(slog.String("sipgo_caller", h.caller))
	}
	return h.Handler.Handle(ctx, out)
}

// clipAttr cuts a long attribute value (a datagram's payload, say) to maxLogAttr bytes.
func clipAttr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString, slog.KindAny:
		if v := a.Value.String(); len(v) > maxLogAttr {
			return slog.String(a.Key, clipLog(v))
		}
	}
	return a
}

func clipLog(v string) string {
	if len(v) <= maxLogAttr {
		return v
	}
	return strings.ToValidUTF8(v[:maxLogAttr], "") + "…(" + strconv.Itoa(len(v)) + " bytes)"
}

// redisLog routes go-redis's own messages (reconnect attempts, pool dial failures) into
// zerolog at debug: the store already reports an outage once at warn and counts it, so
// these would only repeat it on stderr, once per attempt.
type redisLog struct{ log zerolog.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.log.Debug().Msgf(format, v...)
}
