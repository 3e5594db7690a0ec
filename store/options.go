package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults of the knobs [Option]s change.
const (
	DefaultResync      = 30 * time.Second // Watch's periodic full resync (backstop)
	DefaultRedisPrefix = "{sipedge}:"     // Redis key prefix: one hash tag, so every write is one MULTI on one Cluster slot
	DefaultTimeout     = 5 * time.Second  // bound on one Redis store operation
	DefaultOpenTimeout = time.Second      // how long OpenBolt waits for the file lock

	DefaultAuditLimit     = 10_000         // audit entries kept per account (the newest)
	DefaultIdempotencyTTL = 24 * time.Hour // how long an Idempotency-Key is remembered
)

// Option configures [OpenBolt] and [OpenRedis].
type Option func(*options)

type options struct {
	log                      zerolog.Logger
	now                      func() time.Time
	resync                   time.Duration
	reg                      prometheus.Registerer
	prefix                   string
	prefixSet                bool // WithPrefix given: no legacy-prefix detection
	sentinelPassword         string
	probeEvery, probeTimeout time.Duration
	timeout                  time.Duration
	openTimeout              time.Duration
	lazy                     bool
	nodeTTL                  time.Duration
	auditLimit               int
	idemTTL                  time.Duration
}

func defaultOptions() options {
	return options{
		log:          zerolog.Nop(),
		now:          time.Now,
		resync:       DefaultResync,
		prefix:       DefaultRedisPrefix,
		timeout:      DefaultTimeout,
		openTimeout:  DefaultOpenTimeout,
		nodeTTL:      DefaultNodeTTL,
		auditLimit:   DefaultAuditLimit,
		idemTTL:      DefaultIdempotencyTTL,
		probeEvery:   DefaultProbeInterval,
		probeTimeout: DefaultProbeTimeout,
	}
}

// WithLogger sets the logger (default: discard). The caller names the component
// (log.With().Str("component", "store")).
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithClock sets the clock used for created_at/updated_at the store fills in
// (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithResync sets the period of Watch's full resync, the backstop for lost change
// notices (default [DefaultResync]). d <= 0 keeps the default.
func WithResync(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.resync = d
		}
	}
}

// WithMetrics registers the store's metrics (see README.md, "Metrics") with reg.
// Without it the store records nothing.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) { o.reg = reg }
}

// WithPrefix sets the Redis key prefix (default [DefaultRedisPrefix]); the change
// channel is prefix+"changes". Ignored by the embedded store.
func WithPrefix(p string) Option {
	return func(o *options) {
		if p != "" {
			o.prefix, o.prefixSet = p, true
		}
	}
}

// WithTimeout bounds each Redis store operation (default [DefaultTimeout]); a backend
// that does not answer in time yields [ErrUnavailable]. For the embedded store it is the
// file-lock wait of [OpenBolt] (default [DefaultOpenTimeout]).
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
			o.openTimeout = d
		}
	}
}

// WithLazyConnect lets [OpenRedis] succeed while Redis is unreachable: the failed first
// ping is logged, every operation answers [ErrUnavailable] until Redis is back, and
// [Store.Watch] applies the first snapshot once it can load one. A node can so start (and
// answer 503) during a Redis outage instead of exiting.
func WithLazyConnect() Option {
	return func(o *options) { o.lazy = true }
}

// WithNodeTTL sets how long one heartbeat keeps this node listed in the node registry
// (default [DefaultNodeTTL]); d <= 0 keeps the default. Keep it several heartbeat
// intervals long, so one slow or lost heartbeat does not drop the node.
func WithNodeTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.nodeTTL = d
		}
	}
}

// WithAuditLimit sets how many audit entries are kept per account, the newest (default
// [DefaultAuditLimit]); n <= 0 keeps the default.
func WithAuditLimit(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.auditLimit = n
		}
	}
}

// WithIdempotencyTTL sets how long a write's idempotency record is kept (default
// [DefaultIdempotencyTTL]); d <= 0 keeps the default. In Redis it is the key's PX, so
// it is rounded to milliseconds.
func WithIdempotencyTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.idemTTL = d
		}
	}
}

// WithSentinelPassword sets the password of the Sentinels of a redis+sentinel:// URL
// (SIPEDGE_SENTINEL_PASSWORD); empty means none. Other forms ignore it.
func WithSentinelPassword(p string) Option {
	return func(o *options) { o.sentinelPassword = p }
}

// WithProbe sets how often the Redis change-notice subscription publishes its liveness
// probe and how long its echo may take before the subscription counts as deaf (defaults
// [DefaultProbeInterval], [DefaultProbeTimeout]); values <= 0 keep the default. Ignored by
// the embedded store.
func WithProbe(every, timeout time.Duration) Option {
	return func(o *options) {
		if every > 0 {
			o.probeEvery = every
		}
		if timeout > 0 {
			o.probeTimeout = timeout
		}
	}
}
