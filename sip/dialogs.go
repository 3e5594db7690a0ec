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
	pbx, up flow
	slot    *capSlot
}

func newDialogTable() *dialogTable {
	t := &dialogTable{seed: maphash.MakeSeed()}
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
func (t *dialogTable) add(key string, expires time.Time, pbx, up flow, slot *capSlot) bool {
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
	sh.m[key] = dialogEntry{expires: expires.UnixNano(), pbx: pbx, up: up, slot: slot}
	return true
}

func (t *dialogTable) get(key string, now time.Time) (dialogEntry, bool) {
	sh := t.shard(key)
	sh.mu.Lock()
	e, ok := sh.m[key]
	sh.mu.Unlock()
	return e, ok && e.expires > now.UnixNano()
}

func (t *dialogTable) remove(key string) {
	sh := t.shard(key)
	sh.mu.Lock()
	if e, ok := sh.m[key]; ok {
		delete(sh.m, key)
		t.n.Add(-1)
		e.slot.release()
	}
	sh.mu.Unlock()
}

// releaseSlot ends the dialog's hold on its trunk's concurrency count, keeping the entry.
func (t *dialogTable) releaseSlot(key string) {
	sh := t.shard(key)
	sh.mu.Lock()
	if e, ok := sh.m[key]; ok {
		e.slot.release()
	}
	sh.mu.Unlock()
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
