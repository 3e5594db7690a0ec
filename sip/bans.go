package sip

import (
	"cmp"
	"context"
	"hash/maphash"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Brute-force and scanner defence: failures per source within a window ban the source
// for a TTL. The node always decides from its own table (sharded, bounded, no allocation
// to ask whether a source is banned); a shared [BanStore] (Redis) is only consulted in
// the background, so the SIP path never waits for it.

// Reasons of a ban (acl.Ban.Reason, label of sipedge_sip_bans_total).
const (
	BanReasonDigest       = "digest_failures" // wrong digest answers, unknown users
	BanReasonUnknownTrunk = "unknown_trunk"   // INVITEs to a trunk the source may not use (no credential, disabled)
)

// BanStore shares failure counts and bans between the nodes of a deployment. The Redis
// implementation lives in the store package; the SIP layer calls it only from its
// background loop, with [Config.BanStoreTimeout] per call. Sources are given in the form
// of acl.Ban.IP: an IPv4 address ("192.0.2.10") or an IPv6 /64 ("2001:db8::/64").
type BanStore interface {
	// AddFailure counts one failure of source in the current window (which starts with
	// the first failure and lasts window) and returns the count so far.
	AddFailure(ctx context.Context, source string, window time.Duration) (int64, error)
	// Ban stores b until b.Until, replacing a ban of the same source.
	Ban(ctx context.Context, b acl.Ban) error
	// List returns the bans in force.
	List(ctx context.Context) ([]acl.Ban, error)
	// Lift removes the ban and the failure count of source; false if it was not banned.
	Lift(ctx context.Context, source string) (bool, error)
}

// banEntry is one ban in the node's table. Times are unix ns.
type banEntry struct {
	since, until int64
	synced       int64 // when the shared store last confirmed it; 0: this node's only
	failures     int32
	reason, node string
}

type failEntry struct {
	start int64
	count int32
}

// banTable holds the bans and failure counters of one node. Bounded: each shard keeps
// at most perShard bans and perShard counters; a full shard drops expired entries, then
// the ban closest to its end (or an arbitrary counter). Safe for concurrent use.
type banTable struct {
	seed      maphash.Seed
	threshold int32
	window    int64
	ttl       int64
	node      string
	perShard  int
	active    atomic.Int64 // bans held (expired ones count until swept)
	shards    [banShards]banShard
}

const banShards = 32

type banShard struct {
	mu    sync.RWMutex
	bans  map[netip.Addr]banEntry
	fails map[netip.Addr]failEntry
}

func newBanTable(threshold int, window, ttl time.Duration, capacity int, node string) *banTable {
	t := &banTable{
		seed:      maphash.MakeSeed(),
		threshold: int32(threshold),
		window:    int64(window),
		ttl:       int64(ttl),
		node:      node,
		perShard:  max(capacity/banShards, 1),
	}
	for i := range t.shards {
		t.shards[i].bans = map[netip.Addr]banEntry{}
		t.shards[i].fails = map[netip.Addr]failEntry{}
	}
	return t
}

func (t *banTable) shard(k netip.Addr) *banShard { return &t.shards[shardOf(t.seed, k, banShards)] }

// banned reports whether key k is banned at now. It takes a read lock only while some
// ban exists and allocates nothing.
func (t *banTable) banned(k netip.Addr, now int64) bool {
	if t.active.Load() == 0 {
		return false
	}
	sh := t.shard(k)
	sh.mu.RLock()
	e, ok := sh.bans[k]
	sh.mu.RUnlock()
	return ok && e.until > now
}

// failure counts one failure of k at now. When it reaches the threshold the counter is
// cleared and a ban set; the ban is returned with true. A source already banned is not
// counted.
func (t *banTable) failure(k netip.Addr, reason string, now int64) (acl.Ban, bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.bans[k]; ok && e.until > now {
		return acl.Ban{}, false
	}
	f, ok := sh.fails[k]
	if !ok || now-f.start >= t.window {
		if !ok && len(sh.fails) >= t.perShard {
			t.evictFail(sh, now)
		}
		f = failEntry{start: now}
	}
	f.count++
	if f.count < t.threshold {
		sh.fails[k] = f
		return acl.Ban{}, false
	}
	delete(sh.fails, k)
	e := banEntry{since: now, until: now + t.ttl, failures: f.count, reason: reason, node: t.node}
	t.put(sh, k, e, now)
	return e.ban(k), true
}

// put stores e for k (caller holds the lock), making room in a full shard.
func (t *banTable) put(sh *banShard, k netip.Addr, e banEntry, now int64) {
	if _, ok := sh.bans[k]; !ok {
		if len(sh.bans) >= t.perShard {
			t.evictBan(sh, now)
		}
		t.active.Add(1)
	}
	sh.bans[k] = e
}

func (t *banTable) evictBan(sh *banShard, now int64) {
	var victim netip.Addr
	soonest := int64(-1)
	for k, e := range sh.bans {
		if e.until <= now {
			delete(sh.bans, k)
			t.active.Add(-1)
			return
		}
		if soonest < 0 || e.until < soonest {
			victim, soonest = k, e.until
		}
	}
	if soonest >= 0 {
		delete(sh.bans, victim)
		t.active.Add(-1)
	}
}

func (t *banTable) evictFail(sh *banShard, now int64) {
	n := 0
	var first netip.Addr
	for k, f := range sh.fails {
		if n == 0 {
			first = k
		}
		if now-f.start >= t.window {
			delete(sh.fails, k)
			return
		}
		if n++; n >= evictScan {
			break
		}
	}
	delete(sh.fails, first)
}

// set stores a ban (from the shared store, or confirmed by it at synced), keeping the
// later end when k is banned already.
func (t *banTable) set(k netip.Addr, e banEntry, now int64) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.bans[k]; ok && old.until > e.until {
		e.until = old.until
	}
	delete(sh.fails, k)
	t.put(sh, k, e, now)
}

// markSynced records that the shared store holds k's ban as of at.
func (t *banTable) markSynced(k netip.Addr, at int64) {
	sh := t.shard(k)
	sh.mu.Lock()
	if e, ok := sh.bans[k]; ok {
		e.synced = at
		sh.bans[k] = e
	}
	sh.mu.Unlock()
}

// lift removes k's ban and failure count; false if k was not banned.
func (t *banTable) lift(k netip.Addr, now int64) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.fails, k)
	e, ok := sh.bans[k]
	if ok {
		delete(sh.bans, k)
		t.active.Add(-1)
	}
	return ok && e.until > now
}

// sweep drops expired bans and counters.
func (t *banTable) sweep(now int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.bans {
			if e.until <= now {
				delete(sh.bans, k)
				t.active.Add(-1)
			}
		}
		for k, f := range sh.fails {
			if now-f.start >= t.window {
				delete(sh.fails, k)
			}
		}
		sh.mu.Unlock()
	}
}

// reconcile applies the shared list read at fetched: every listed ban is set (confirmed
// at fetched); a ban the store had confirmed before fetched but no longer lists was
// lifted or expired there and is dropped. Bans only this node knows (never confirmed)
// are returned, to be pushed.
func (t *banTable) reconcile(list map[netip.Addr]banEntry, fetched, now int64) (unsynced []acl.Ban) {
	for k, e := range list {
		e.synced = fetched
		t.set(k, e, now)
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.bans {
			if _, listed := list[k]; listed || e.until <= now {
				continue
			}
			if e.synced == 0 {
				unsynced = append(unsynced, e.ban(k))
			} else if e.synced < fetched {
				delete(sh.bans, k)
				t.active.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return unsynced
}

// list returns the bans in force, sorted by source.
func (t *banTable) list(now int64) []acl.Ban {
	var out []acl.Ban
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for k, e := range sh.bans {
			if e.until > now {
				out = append(out, e.ban(k))
			}
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b acl.Ban) int { return cmp.Compare(a.IP, b.IP) })
	return out
}

// count returns the bans in force (for the gauge).
func (t *banTable) count(now int64) int {
	if t.active.Load() == 0 {
		return 0
	}
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, e := range sh.bans {
			if e.until > now {
				n++
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

func (e banEntry) ban(k netip.Addr) acl.Ban {
	return acl.Ban{
		IP: sourceKeyString(k), Reason: e.reason, Failures: int(e.failures),
		Since: time.Unix(0, e.since).UTC(), Until: time.Unix(0, e.until).UTC(), Node: e.node,
	}
}

func entryOf(b acl.Ban) banEntry {
	return banEntry{since: b.Since.UnixNano(), until: b.Until.UnixNano(), failures: int32(min(b.Failures, 1<<30)),
		reason: b.Reason, node: b.Node}
}

// Bans is a node's brute-force defence: its ban table and, in Redis mode, the link to
// the shared [BanStore]. Get it from [Server.Bans]; the control API lists and lifts bans
// through it. Safe for concurrent use.
type Bans struct {
	table   *banTable
	shared  BanStore
	exempt  func(netip.Addr) bool // sources never banned: the upstreams
	timeout time.Duration
	refresh time.Duration
	window  time.Duration
	ttl     time.Duration
	thresh  int64
	node    string
	now     func() time.Time
	events  chan banEvent
	m       *metrics
	log     zerolog.Logger
	down    atomic.Bool // the shared store failed last time (log once per outage)
	off     bool        // BanThreshold -1
}

type banEvent struct {
	key    netip.Addr
	reason string
	push   *acl.Ban // a ban set locally, to store; nil: one failure to count
}

const banEventQueue = 4096

func newBans(cfg Config, shared BanStore, exempt func(netip.Addr) bool, m *metrics, log zerolog.Logger) *Bans {
	b := &Bans{
		table:   newBanTable(max(cfg.BanThreshold, 1), cfg.BanWindow, cfg.BanTTL, cfg.MaxBans, cfg.NodeName),
		shared:  shared,
		exempt:  exempt,
		timeout: cfg.BanStoreTimeout,
		refresh: cfg.BanRefresh,
		window:  cfg.BanWindow,
		ttl:     cfg.BanTTL,
		thresh:  int64(cfg.BanThreshold),
		node:    cfg.NodeName,
		now:     time.Now,
		m:       m,
		log:     log,
		off:     cfg.BanThreshold < 0,
	}
	if shared != nil {
		b.events = make(chan banEvent, banEventQueue)
	}
	return b
}

// Banned reports whether ip (its /64 for IPv6) is banned on this node. It allocates
// nothing and never waits for the shared store.
func (b *Bans) Banned(ip netip.Addr) bool {
	return b.table.banned(sourceKey(ip), b.now().UnixNano())
}

// failure records one failure of ip. Listed sources are counted too (their ban holds for
// the trunks that do not list them); upstreams never are. It never blocks: the shared
// store is told in the background (or not at all when its queue is full).
func (b *Bans) failure(ip netip.Addr, reason string) {
	if b.off || b.exempt(ip) {
		return
	}
	k := sourceKey(ip)
	ban, set := b.table.failure(k, reason, b.now().UnixNano())
	if set {
		b.banned(ban, "local")
	}
	if b.shared == nil {
		return
	}
	ev := banEvent{key: k, reason: reason}
	if set {
		ev.push = &ban
	}
	select {
	case b.events <- ev:
	default: // the local table decided; the cluster count misses this one
	}
}

func (b *Bans) banned(ban acl.Ban, by string) {
	b.m.ban(ban.Reason)
	b.log.Warn().Str("event", "sip_ban").Str("src", ban.IP).Str("reason", ban.Reason).
		Int("failures", ban.Failures).Time("until", ban.Until).Str("counted", by).Msg("source banned")
}

// List returns the bans in force, sorted by source: with a shared store the cluster's
// (plus any this node could not store yet), else this node's. When the shared store
// fails it returns this node's view and the error.
func (b *Bans) List(ctx context.Context) ([]acl.Ban, error) {
	now := b.now().UnixNano()
	if b.shared == nil {
		return b.table.list(now), nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(b.timeout, time.Second))
	defer cancel()
	shared, err := b.shared.List(ctx)
	local := b.table.list(now)
	if err != nil {
		return local, err
	}
	seen := make(map[string]bool, len(shared))
	out := make([]acl.Ban, 0, len(shared))
	for _, x := range shared {
		if x.Until.UnixNano() > now {
			seen[x.IP] = true
			out = append(out, x)
		}
	}
	for _, x := range local {
		if !seen[x.IP] {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, b acl.Ban) int { return cmp.Compare(a.IP, b.IP) })
	return out, nil
}

// Lift ends the ban of ip (its /64 for IPv6) and clears its failure count, on this node
// at once and, with a shared store, for the cluster (other nodes drop it within
// [Config.BanRefresh]). It reports whether ip was banned.
func (b *Bans) Lift(ctx context.Context, ip netip.Addr) (bool, error) {
	if !ip.IsValid() {
		return false, nil
	}
	k := sourceKey(ip)
	lifted := b.table.lift(k, b.now().UnixNano())
	if b.shared == nil {
		return lifted, nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(b.timeout, time.Second))
	defer cancel()
	ok, err := b.shared.Lift(ctx, sourceKeyString(k))
	if err != nil {
		return lifted, err
	}
	if lifted || ok {
		b.log.Info().Str("event", "sip_ban_lifted").Str("src", sourceKeyString(k)).Msg("ban lifted")
	}
	return lifted || ok, nil
}

// count is the sipedge_sip_banned_sources gauge.
func (b *Bans) count() int { return b.table.count(b.now().UnixNano()) }

// run sweeps the table and, with a shared store, counts failures there, stores bans and
// re-reads the shared list every refresh, until ctx is done.
func (b *Bans) run(ctx context.Context) {
	sweep := time.NewTicker(max(min(b.ttl, b.window)/4, time.Second))
	defer sweep.Stop()
	var refresh <-chan time.Time
	if b.shared != nil {
		t := time.NewTicker(b.refresh)
		defer t.Stop()
		refresh = t.C
		b.sync(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			b.table.sweep(now.UnixNano())
		case <-refresh:
			b.sync(ctx)
		case ev := <-b.events:
			b.apply(ctx, ev)
		}
	}
}

// apply hands one event to the shared store.
func (b *Bans) apply(ctx context.Context, ev banEvent) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	src := sourceKeyString(ev.key)
	if ev.push != nil {
		if b.storeErr(b.shared.Ban(ctx, *ev.push)) == nil {
			b.table.markSynced(ev.key, b.now().UnixNano())
		}
		return
	}
	n, err := b.shared.AddFailure(ctx, src, b.window)
	if b.storeErr(err) != nil || n < b.thresh {
		return
	}
	// The cluster-wide count reached the threshold (failures spread over nodes).
	now := b.now()
	ban := acl.Ban{IP: src, Reason: ev.reason, Failures: int(n), Since: now.UTC(),
		Until: now.Add(b.ttl).UTC(), Node: b.node}
	if b.storeErr(b.shared.Ban(ctx, ban)) != nil {
		return
	}
	e := entryOf(ban)
	e.synced = now.UnixNano()
	b.table.set(ev.key, e, now.UnixNano())
	b.banned(ban, "cluster")
}

// sync re-reads the shared list into the table and stores bans the store is missing
// (set while it was unreachable).
func (b *Bans) sync(ctx context.Context) {
	fetched := b.now().UnixNano()
	lctx, cancel := context.WithTimeout(ctx, b.timeout)
	list, err := b.shared.List(lctx)
	cancel()
	if b.storeErr(err) != nil {
		return
	}
	m := make(map[netip.Addr]banEntry, len(list))
	for _, x := range list {
		if k, ok := parseSourceKey(x.IP); ok && !b.exempt(k) {
			m[k] = entryOf(x)
		}
	}
	now := b.now().UnixNano()
	for i, x := range b.table.reconcile(m, fetched, now) {
		if i >= 64 { // the rest on the next round
			break
		}
		k, _ := parseSourceKey(x.IP)
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := b.storeErr(b.shared.Ban(pctx, x))
		cancel()
		if err != nil {
			return
		}
		b.table.markSynced(k, b.now().UnixNano())
	}
}

// storeErr counts and logs (once per outage) a shared-store failure; it returns err.
func (b *Bans) storeErr(err error) error {
	if err == nil {
		if b.down.CompareAndSwap(true, false) {
			b.log.Info().Msg("shared ban store reachable again")
		}
		return nil
	}
	b.m.banStoreError()
	if b.down.CompareAndSwap(false, true) {
		b.log.Warn().Err(err).Msg("shared ban store failing: counting and banning on this node only")
	}
	return err
}
