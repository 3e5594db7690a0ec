package sip

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// dialogTable holds the answered calls relayed by this node: an entry is added when a 2xx
// to an initial INVITE is relayed and removed by the BYE's final response or after
// DialogTimeout. It feeds sipedge_sip_active_dialogs and routes in-dialog requests of
// UAs that ignore Record-Route (they send ACK/BYE with no Route; see routeInDialog).
// Requests carrying our Record-Route token never need it. Safe for concurrent use.
type dialogTable struct {
	seed   maphash.Seed
	n      atomic.Int64
	shards [dialogShards]dialogShard
	gone   tombstones
}

const (
	dialogShards = 32
	maxDialogs   = 1 << 20 // beyond this, calls still work but are neither counted nor tracked
)

type dialogShard struct {
	mu sync.Mutex
	m  map[string]dialogEntry
}

// dialogEntry is both ends of an answered call, and the call's hold on its trunk's
// concurrency count (released when the entry goes: BYE, timeout, replacement).
type dialogEntry struct {
	expires int64 // unix ns
	grant   dialogGrant
	slot    *capSlot
}

func newDialogTable() *dialogTable {
	t := &dialogTable{seed: maphash.MakeSeed(), gone: newTombstones(maxTombstones)}
	for i := range t.shards {
		t.shards[i].m = map[string]dialogEntry{}
	}
	return t
}

func dialogKey(callID, fromTag string) string { return callID + "\x00" + fromTag }

func (t *dialogTable) shard(key string) *dialogShard {
	return &t.shards[maphash.String(t.seed, key)%dialogShards]
}

// add records a dialog, which then owns slot; false when the table is full (the caller
// keeps the slot).
func (t *dialogTable) add(key string, expires time.Time, g dialogGrant, slot *capSlot) bool {
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.m[key]; !ok {
		if t.n.Load() >= maxDialogs {
			return false
		}
		t.n.Add(1)
	} else if old.slot != slot {
		old.slot.release()
	}
	sh.m[key] = dialogEntry{expires: expires.UnixNano(), grant: g, slot: slot}
	return true
}

// renew extends a dialog's life (a re-INVITE was answered), recording it when this node
// did not know it yet (routed by token after a restart or through another node).
func (t *dialogTable) renew(key string, expires time.Time, g dialogGrant) {
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[key]; ok {
		e.expires = expires.UnixNano()
		sh.m[key] = e
		return
	}
	if t.n.Load() < maxDialogs {
		t.n.Add(1)
		sh.m[key] = dialogEntry{expires: expires.UnixNano(), grant: g}
	}
}

func (t *dialogTable) get(key string, now time.Time) (dialogEntry, bool) {
	sh := t.shard(key)
	sh.mu.Lock()
	e, ok := sh.m[key]
	sh.mu.Unlock()
	return e, ok && e.expires > now.UnixNano()
}

// end records that the dialog is over (its BYE was answered or timed out, or the edge
// hung it up): the entry goes, with the call's hold on its trunk's concurrency count, and
// the dialog's route token is refused from now on (see ended).
func (t *dialogTable) end(key string) {
	if key == "" {
		return
	}
	sh := t.shard(key)
	sh.mu.Lock()
	if e, ok := sh.m[key]; ok {
		delete(sh.m, key)
		t.n.Add(-1)
		e.slot.release()
	}
	sh.mu.Unlock()
	t.gone.add(maphash.String(t.seed, key))
}

// ended reports whether the dialog ended on this node (within the memory of the bounded
// tombstone set).
func (t *dialogTable) ended(key string) bool {
	return key != "" && t.gone.has(maphash.String(t.seed, key))
}

func (t *dialogTable) sweep(now time.Time) {
	ns := now.UnixNano()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.expires <= ns {
				delete(sh.m, k)
				t.n.Add(-1)
				e.slot.release()
			}
		}
		sh.mu.Unlock()
	}
}

func (t *dialogTable) len() int { return int(t.n.Load()) }

// sweepDialogs expires dialogs whose BYE was never seen, until ctx is done.
func (s *Server) sweepDialogs(ctx context.Context) {
	every := s.cfg.DialogTimeout / 8
	if every > time.Minute {
		every = time.Minute
	}
	if every < time.Second {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.dlg.sweep(now)
		}
	}
}

// maxTombstones bounds the memory of ended dialogs (8 bytes of hash and ~16 of map entry
// each: about 6 MiB). Past it the oldest are forgotten first; a forgotten dialog's token
// then works again only from its own PBX's address while its trunk takes calls, until
// the token expires.
const maxTombstones = 1 << 18

// tombstones is a bounded FIFO set of ended dialogs' key hashes. Safe for concurrent use.
type tombstones struct {
	mu   sync.Mutex
	m    map[uint64]struct{}
	ring []uint64
	next int
}

func newTombstones(capacity int) tombstones {
	return tombstones{m: make(map[uint64]struct{}), ring: make([]uint64, 0, min(capacity, 1024)), next: 0}
}

func (g *tombstones) add(h uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.m[h]; ok {
		return
	}
	if len(g.ring) < maxTombstones {
		g.ring = append(g.ring, h)
	} else {
		delete(g.m, g.ring[g.next])
		g.ring[g.next] = h
		g.next = (g.next + 1) % maxTombstones
	}
	g.m[h] = struct{}{}
}

func (g *tombstones) has(h uint64) bool {
	g.mu.Lock()
	_, ok := g.m[h]
	g.mu.Unlock()
	return ok
}
