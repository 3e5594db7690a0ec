package sip

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
)

// Nonce-count replay: the node's bounded cache and the cluster-wide guard.

// firstUse asks the cluster-wide replay guard, when there is one, whether this
// nonce-count of (nonce, cnonce) is used for the first time in the cluster. A guard that
// cannot answer (store down) leaves the node's own cache as the only check: the call is
// not refused for the store's sake, and the failure is counted.
func (a *authenticator) firstUse(nonce, cnonce string, nc uint32) bool {
	if a.guard == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), replayGuardTimeout)
	defer cancel()
	first, err := a.guard.FirstUse(ctx, replayKey(nonce, cnonce, nc), a.ttl+maxClockSkew)
	if err != nil {
		if a.guardErr != nil {
			a.guardErr(err)
		}
		return true
	}
	return first
}

// replayGuardTimeout bounds the wait for the cluster-wide replay guard.
const replayGuardTimeout = 250 * time.Millisecond

// replayKey names one nonce-count of one (nonce, cnonce) in the replay guard.
func replayKey(nonce, cnonce string, nc uint32) string {
	return nonce + ":" + cnonce + ":" + strconv.FormatUint(uint64(nc), 16)
}

// ReplayGuard is a set shared by every node of a cluster that remembers the digest
// nonce-counts already accepted, so a captured answer replayed to another node is refused
// too (DESIGN §4: a nonce-count is accepted once per cluster). In Redis mode it is one
// SET NX with the nonce's lifetime as TTL.
type ReplayGuard interface {
	// FirstUse records key and reports whether it was not recorded before.
	FirstUse(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// ncCache remembers, per (nonce, cnonce), the highest nonce-count accepted, so a replayed
// or lower nc is refused. It is bounded: each shard keeps at most perShard entries and
// evicts the oldest insert first. All entries share one TTL, so insertion order is
// expiry order; an entry is only ever evicted early when more than the whole capacity
// of fresh nonces was answered within one TTL. Safe for concurrent use.
type ncCache struct {
	seed     maphash.Seed
	perShard int
	shards   [ncShards]ncShard
}

const ncShards = 64

type ncShard struct {
	mu   sync.Mutex
	m    map[string]uint32
	ring []string
	next int
}

func newNCCache(capacity int) *ncCache {
	per := capacity / ncShards
	if per < 1 {
		per = 1
	}
	c := &ncCache{seed: maphash.MakeSeed(), perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]uint32)
	}
	return c
}

// use records nc for (nonce, cnonce) and reports whether it is higher than any nc seen
// for that pair.
func (c *ncCache) use(nonce, cnonce string, nc uint32) bool {
	key := nonce + "\x00" + cnonce
	sh := &c.shards[maphash.String(c.seed, key)%ncShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if prev, ok := sh.m[key]; ok {
		if nc <= prev {
			return false
		}
		sh.m[key] = nc
		return true
	}
	if len(sh.ring) < c.perShard {
		sh.ring = append(sh.ring, key)
	} else {
		delete(sh.m, sh.ring[sh.next])
		sh.ring[sh.next] = key
		sh.next = (sh.next + 1) % c.perShard
	}
	sh.m[key] = nc
	return true
}
