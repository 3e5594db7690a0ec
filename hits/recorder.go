// Package hits counts, per IP ACL entry, the SIP requests allowed by IP through it, and
// reports the counts to a store in periodic deltas, so the control API can show each
// entry's hit_count and last_matched_at.
//
// The SIP path calls [Recorder.Record] for every INVITE allowed by IP (with the entry
// [acl.Snapshot.MatchedEntry] names); it costs an atomic add and allocates nothing once
// an entry has been seen. [Recorder.Run] flushes the deltas every few seconds through a
// function the caller wires to the store, which adds them up across nodes.
package hits

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Defaults of [New] and [Recorder.Run].
const (
	// DefaultFlushInterval is how often Run reports deltas when its every is 0. Hit
	// counts and last_matched_at shown by the API lag by up to this much.
	DefaultFlushInterval = 10 * time.Second
	// DefaultIdleFlushes is how many flushes without a hit an entry's counter survives
	// before it is dropped (an hour at the default interval), so counters of deleted
	// entries do not pile up. A dropped counter is recreated by the next hit.
	DefaultIdleFlushes = 360
	// DefaultMaxEntries bounds the counters held. Keys come from snapshot entries, so
	// the bound is only reached by misuse; hits of further entries are dropped and counted.
	DefaultMaxEntries = 1 << 20

	// finalFlushTimeout bounds the flush Run makes after its context is done.
	finalFlushTimeout = 5 * time.Second
)

// Option changes an optional knob of [New].
type Option func(*Recorder)

// WithClock sets the clock of last_matched_at (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(r *Recorder) {
		if now != nil {
			r.now = now
		}
	}
}

// WithLogger sets the logger of flush failures (default: none). The caller adds the
// component field.
func WithLogger(l zerolog.Logger) Option { return func(r *Recorder) { r.log = l } }

// WithRegisterer registers the recorder's metrics (see README.md) with reg.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(r *Recorder) { r.reg = reg }
}

// WithIdleFlushes sets how many flushes without hits a counter survives (default
// [DefaultIdleFlushes]; values below 1 mean 1).
func WithIdleFlushes(n int) Option { return func(r *Recorder) { r.idleFlushes = max(n, 1) } }

// WithMaxEntries bounds the counters held (default [DefaultMaxEntries]).
func WithMaxEntries(n int) Option { return func(r *Recorder) { r.maxEntries = int64(max(n, 1)) } }

// Recorder counts hits per entry. Build it with [New]; a nil *Recorder records nothing.
// Record is safe for concurrent use and lock-free once an entry has been seen; Flush and
// Run serialise among themselves. Must not be copied.
type Recorder struct {
	_      [0]sync.Mutex
	seed   maphash.Seed
	shards [nShards]shard
	// clock is the coarse time (unix ns) Record stamps last_matched_at with: reading
	// the wall clock per request would cost more than the count itself. Run advances it
	// every second and at each flush.
	clock   atomic.Int64
	entries atomic.Int64 // counters held, for the bound and the gauge

	now         func() time.Time
	idleFlushes int
	maxEntries  int64
	log         zerolog.Logger
	reg         prometheus.Registerer
	m           *metrics

	flushMu sync.Mutex
	pending map[key]acl.Hit // deltas of failed flushes, sent again with the next one
}

// New returns a recorder with the options applied.
func New(opts ...Option) *Recorder {
	r := &Recorder{
		seed:        maphash.MakeSeed(),
		now:         time.Now,
		idleFlushes: DefaultIdleFlushes,
		maxEntries:  DefaultMaxEntries,
		log:         zerolog.Nop(),
		pending:     map[key]acl.Hit{},
	}
	for _, o := range opts {
		o(r)
	}
	if r.reg != nil {
		r.m = newMetrics(r.reg, r)
	}
	r.tick()
	return r
}

// tick advances the coarse clock.
func (r *Recorder) tick() { r.clock.Store(r.now().UnixNano()) }

// Flush reports every delta recorded since the last successful flush through flush, in
// one call (nothing when there is none). When flush fails the deltas are kept and sent
// again with the next flush, so a store outage loses no hit. It also drops the counters
// idle for too long.
func (r *Recorder) Flush(ctx context.Context, flush func(context.Context, []acl.Hit) error) error {
	if r == nil {
		return nil
	}
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.tick()
	r.collect()
	if len(r.pending) == 0 {
		return nil
	}
	hs := make([]acl.Hit, 0, len(r.pending))
	for _, h := range r.pending {
		hs = append(hs, h)
	}
	slices.SortFunc(hs, func(a, b acl.Hit) int {
		return cmp.Or(cmp.Compare(a.Account, b.Account), cmp.Compare(a.ACLUUID, b.ACLUUID), cmp.Compare(a.EntryID, b.EntryID))
	})
	if err := flush(ctx, hs); err != nil {
		r.m.flushed(false)
		return err
	}
	r.m.flushed(true)
	clear(r.pending)
	return nil
}

// Run advances the coarse clock every second and flushes every every (0 means
// [DefaultFlushInterval]) until ctx is done, then flushes once more within a few
// seconds and returns nil. A failed flush is logged and retried with the next one. Each
// flush gets a context bounded by every.
func (r *Recorder) Run(ctx context.Context, flush func(context.Context, []acl.Hit) error, every time.Duration) error {
	if every <= 0 {
		every = DefaultFlushInterval
	}
	t := time.NewTicker(min(every, time.Second))
	defer t.Stop()
	next := r.now().Add(every)
	failing := false
	once := func(ctx context.Context, timeout time.Duration) {
		fctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := r.Flush(fctx, flush)
		switch {
		case err != nil && !failing:
			failing = true
			r.log.Warn().Err(err).Int("pending", r.pendingLen()).Msg("entry hit flush failed; keeping the counts for the next one")
		case err == nil && failing:
			failing = false
			r.log.Info().Msg("entry hit flush works again")
		}
	}
	for {
		select {
		case <-ctx.Done():
			once(context.WithoutCancel(ctx), finalFlushTimeout)
			return nil
		case <-t.C:
			r.tick()
			if now := r.now(); !now.Before(next) {
				next = now.Add(every)
				once(ctx, every)
			}
		}
	}
}

func (r *Recorder) pendingLen() int {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	return len(r.pending)
}

// collect moves every counter's delta into r.pending and retires idle counters. The
// caller holds flushMu.
func (r *Recorder) collect() {
	for i := range r.shards {
		sh := &r.shards[i]
		var idle []key
		for k, c := range sh.load() {
			if d := c.n.Swap(0); d > 0 {
				c.idle = 0
				r.addPending(k, d, c.last.Load())
			} else if c.idle++; c.idle >= r.idleFlushes {
				idle = append(idle, k)
			}
		}
		if len(idle) > 0 {
			for _, x := range sh.retire(idle) {
				r.entries.Add(-1)
				if x.n > 0 {
					r.addPending(x.k, x.n, x.last)
				}
			}
		}
	}
}

func (r *Recorder) addPending(k key, n int64, last int64) {
	h, ok := r.pending[k]
	if !ok {
		h = acl.Hit{Account: k.account, ACLUUID: k.acl, EntryID: k.entry}
	}
	h.Count += uint64(n)
	if t := time.Unix(0, last).UTC(); t.After(h.LastMatchedAt) {
		h.LastMatchedAt = t
	}
	r.pending[k] = h
}

// metrics are the recorder's collectors; a nil *metrics records nothing.
type metrics struct {
	flushes *prometheus.CounterVec
	dropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Recorder) *metrics {
	m := &metrics{
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_entry_hit_flushes_total",
			Help: "Flushes of per-entry hit counts to the store, by result (ok, error).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_entry_hits_dropped_total",
			Help: "Hits not counted because the recorder holds its maximum of entries.",
		}),
	}
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_entry_hit_counters",
		Help: "Entries the hit recorder holds a counter for.",
	}, func() float64 { return float64(r.entries.Load()) })
	reg.MustRegister(m.flushes, m.dropped, entries)
	return m
}

func (m *metrics) flushed(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.flushes.WithLabelValues("ok").Inc()
	} else {
		m.flushes.WithLabelValues("error").Inc()
	}
}

func (m *metrics) drop() {
	if m != nil {
		m.dropped.Inc()
	}
}
