package sip

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// The per-source request-rate limit (Kamailio's pike, done as a token bucket). It runs
// on sipgo's read loop for every UDP datagram and every TCP read and accept, before
// parsing, so it is built to cost a hash, one uncontended lock and a map lookup, and to
// allocate nothing once a source is known.

// sourceKey is what the defence counts, limits and bans by: the address itself for
// IPv4, its /64 for IPv6 (one subscriber usually holds a whole /64, so per-address state
// would be evaded by rotating addresses). The zone is dropped.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.Addr()
	}
	return a
}

// sourceKeyString is the printed form of a key: "192.0.2.10" or "2001:db8:1:2::/64".
func sourceKeyString(k netip.Addr) string {
	if k.Is6() {
		return netip.PrefixFrom(k, 64).String()
	}
	return k.String()
}

// parseSourceKey reads a key back from [sourceKeyString]'s form (or any address, which
// it maps to its key).
func parseSourceKey(s string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4() && p.Bits() == 32 || p.Addr().Is6() && p.Bits() == 64 {
			return sourceKey(p.Addr()), true
		}
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return sourceKey(a), true
}

// shardOf picks a shard for a key with a per-process seed, so a sender cannot aim all
// its sources at one shard.
func shardOf(seed maphash.Seed, k netip.Addr, n int) int {
	b := k.As16()
	return int(maphash.Bytes(seed, b[:]) % uint64(n))
}

// rateLimiter is a set of token buckets, one per source key, kept as GCRA (generic cell
// rate algorithm): each source holds only its "theoretical arrival time". A request is
// allowed while the source is not more than one window ahead of the clock; each allowed
// request moves it on by window/limit. So a source may send `limit` requests at once,
// then one per window/limit. Memory is bounded: a full shard first forgets sources whose
// bucket is full again (they behave exactly like unknown ones), then arbitrary ones.
// Safe for concurrent use.
type rateLimiter struct {
	seed     maphash.Seed
	interval int64 // ns of budget one request costs: window / limit
	tau      int64 // how far ahead of now a source may run: window - interval
	perShard int
	now      func() int64
	shards   [rateShards]rateShard
}

const (
	rateShards = 64
	// evictScan bounds the work of making room in a full shard.
	evictScan = 32
)

type rateShard struct {
	mu  sync.Mutex
	tat map[netip.Addr]int64
	_   [40]byte // keep shards on separate cache lines
}

// newRateLimiter allows limit requests per window per source and tracks at most
// capacity sources. limit <= 0 returns nil, which allows everything.
func newRateLimiter(limit int, window time.Duration, capacity int) *rateLimiter {
	if limit <= 0 || window <= 0 {
		return nil
	}
	per := max(capacity/rateShards, 1)
	iv := int64(window) / int64(limit)
	r := &rateLimiter{
		seed:     maphash.MakeSeed(),
		interval: iv,
		tau:      int64(window) - iv,
		perShard: per,
		now:      func() int64 { return time.Now().UnixNano() },
	}
	for i := range r.shards {
		r.shards[i].tat = make(map[netip.Addr]int64, min(per, 64))
	}
	return r
}

// allow spends one request of k's budget; false means over the limit (nothing spent).
func (r *rateLimiter) allow(k netip.Addr) bool {
	if r == nil {
		return true
	}
	now := r.now()
	sh := &r.shards[shardOf(r.seed, k, rateShards)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	tat, ok := sh.tat[k]
	if !ok || tat < now {
		tat = now
	}
	if tat-now > r.tau {
		return false
	}
	if !ok && len(sh.tat) >= r.perShard {
		r.evict(sh, now)
	}
	sh.tat[k] = tat + r.interval
	return true
}

// evict makes room for one source in a full shard (caller holds the lock): it forgets
// sources whose bucket has refilled among the first evictScan it meets, else the first.
func (r *rateLimiter) evict(sh *rateShard, now int64) {
	n := 0
	var first netip.Addr
	freed := false
	for k, tat := range sh.tat {
		if n == 0 {
			first = k
		}
		if tat <= now {
			delete(sh.tat, k)
			freed = true
		}
		if n++; n >= evictScan {
			break
		}
	}
	if !freed {
		delete(sh.tat, first)
	}
}

// len counts tracked sources (for tests).
func (r *rateLimiter) len() int {
	if r == nil {
		return 0
	}
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.tat)
		sh.mu.Unlock()
	}
	return n
}

// recentSet remembers sources for a while (those that just passed digest authentication):
// a PBX without a fixed address then spends the listed sources' rate budget, not the
// strangers' one, so a busy digest trunk is not rate-limited into failures. It grants
// nothing else: every INVITE is still authenticated. Bounded like [rateLimiter]; safe for
// concurrent use.
type recentSet struct {
	seed     maphash.Seed
	ttl      int64
	perShard int
	now      func() int64
	shards   [rateShards]rateShard // tat holds the expiry (unix ns)
}

func newRecentSet(ttl time.Duration, capacity int) *recentSet {
	per := max(capacity/rateShards, 1)
	r := &recentSet{seed: maphash.MakeSeed(), ttl: int64(ttl), perShard: per,
		now: func() int64 { return time.Now().UnixNano() }}
	for i := range r.shards {
		r.shards[i].tat = make(map[netip.Addr]int64, min(per, 64))
	}
	return r
}

// add remembers k for ttl from now.
func (r *recentSet) add(k netip.Addr) {
	now := r.now()
	sh := &r.shards[shardOf(r.seed, k, rateShards)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.tat[k]; !ok && len(sh.tat) >= r.perShard {
		// Forget an expired one among evictScan looked at, else the first of them.
		var victim netip.Addr
		n := 0
		for old, exp := range sh.tat {
			if n == 0 || exp <= now {
				victim = old
			}
			if n++; exp <= now || n >= evictScan {
				break
			}
		}
		delete(sh.tat, victim)
	}
	sh.tat[k] = now + r.ttl
}

// has reports whether k was added less than ttl ago.
func (r *recentSet) has(k netip.Addr) bool {
	sh := &r.shards[shardOf(r.seed, k, rateShards)]
	sh.mu.Lock()
	exp, ok := sh.tat[k]
	sh.mu.Unlock()
	return ok && exp > r.now()
}
