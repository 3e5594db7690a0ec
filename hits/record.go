package hits

import (
	"hash/maphash"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// nShards spreads the counter maps so that adding an entry copies only a small map.
const nShards = 64

// retired is added to a counter's count when it is dropped from its shard: a Record that
// still holds the old map and adds to it sees a negative result and counts again in a
// fresh counter, so no hit is lost or counted twice.
const retired = math.MinInt64 / 2

// key names one entry.
type key struct{ account, acl, entry string }

// counter is one entry's hits since the last flush.
type counter struct {
	n    atomic.Int64 // hits not yet collected; negative once retired
	last atomic.Int64 // unix ns of the latest hit (coarse, see Recorder.clock)
	idle int          // flushes without hits; owned by collect
	_    [40]byte     // keep two counters off one cache line
}

// shard is a copy-on-write map: readers load it atomically and never lock; writers
// (first sight of an entry, retirement) copy it under mu.
type shard struct {
	mu sync.Mutex
	m  atomic.Pointer[map[key]*counter]
	_  [48]byte
}

func (sh *shard) load() map[key]*counter {
	if p := sh.m.Load(); p != nil {
		return *p
	}
	return nil
}

// Record counts one request allowed by IP through entry entryID of IP ACL aclUUID of
// account. It is safe for concurrent use, takes no lock and allocates nothing once the
// entry has been seen (the first hit of an entry copies one shard's map). A nil
// Recorder records nothing.
func (r *Recorder) Record(account, aclUUID, entryID string) {
	if r == nil {
		return
	}
	k := key{account, aclUUID, entryID}
	sh := &r.shards[maphash.String(r.seed, entryID)%nShards]
	now := r.clock.Load()
	for {
		if c := sh.load()[k]; c != nil {
			if c.last.Load() < now {
				c.last.Store(now)
			}
			if c.n.Add(1) > 0 {
				return
			}
			// Retired after we loaded the map: count in its successor.
		}
		if !r.add(sh, k) {
			r.m.drop()
			return
		}
	}
}

// add puts a fresh counter for k into sh unless a live one is there; false when the
// recorder is full.
func (r *Recorder) add(sh *shard, k key) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.load()
	if _, ok := old[k]; ok {
		return true // added concurrently (retired counters are never in the map)
	}
	if r.entries.Load() >= r.maxEntries {
		return false
	}
	m := make(map[key]*counter, len(old)+1)
	maps.Copy(m, old)
	// Cloned: the caller's strings may share memory with something large.
	m[key{strings.Clone(k.account), strings.Clone(k.acl), strings.Clone(k.entry)}] = &counter{}
	sh.m.Store(&m)
	r.entries.Add(1)
	return true
}

// retiredCount is what a retired counter still held.
type retiredCount struct {
	k       key
	n, last int64
}

// retire drops the counters of keys from sh and returns the hits they still held.
func (sh *shard) retire(keys []key) []retiredCount {
	sh.mu.Lock()
	old := sh.load()
	m := maps.Clone(old)
	var gone []*counter
	for _, k := range keys {
		gone = append(gone, m[k])
		delete(m, k)
	}
	sh.m.Store(&m)
	sh.mu.Unlock()
	out := make([]retiredCount, len(keys))
	for i, c := range gone {
		// From here every Add lands on a negative count and is redone elsewhere.
		out[i] = retiredCount{k: keys[i], n: c.n.Swap(retired), last: c.last.Load()}
	}
	return out
}
