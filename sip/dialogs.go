package sip

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// dialogTable counts answered calls for sipedge_sip_active_dialogs: an entry is added
// when a 2xx to an initial INVITE is relayed and removed by the BYE's final response or
// after DialogTimeout. Routing never reads it. Safe for concurrent use.
type dialogTable struct {
	seed   maphash.Seed
	n      atomic.Int64
	shards [dialogShards]dialogShard
}

const dialogShards = 32

type dialogShard struct {
	mu sync.Mutex
	m  map[string]int64 // key → expiry (unix ns)
}

func newDialogTable() *dialogTable {
	t := &dialogTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[string]int64{}
	}
	return t
}

func dialogKey(callID, fromTag string) string { return callID + "\x00" + fromTag }

func (t *dialogTable) shard(key string) *dialogShard {
	return &t.shards[maphash.String(t.seed, key)%dialogShards]
}

func (t *dialogTable) add(key string, expires time.Time) {
	sh := t.shard(key)
	sh.mu.Lock()
	if _, ok := sh.m[key]; !ok {
		t.n.Add(1)
	}
	sh.m[key] = expires.UnixNano()
	sh.mu.Unlock()
}

func (t *dialogTable) remove(key string) {
	sh := t.shard(key)
	sh.mu.Lock()
	if _, ok := sh.m[key]; ok {
		delete(sh.m, key)
		t.n.Add(-1)
	}
	sh.mu.Unlock()
}

func (t *dialogTable) sweep(now time.Time) {
	ns := now.UnixNano()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, exp := range sh.m {
			if exp <= ns {
				delete(sh.m, k)
				t.n.Add(-1)
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
