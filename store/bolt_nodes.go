package store

import (
	"context"
	"sync"
	"time"
)

// memRegistry is the embedded mode's node registry: it lives in the Store's memory (one
// process serves the data set), with the same lease rules as Redis.
type memRegistry struct {
	mu  sync.Mutex
	mem map[string]memNode // node_id → entry
}

type memNode struct {
	st      NodeStatus
	expires time.Time // monotonic
}

func (b *boltBackend) heartbeat(_ context.Context, st NodeStatus, ttl time.Duration) error {
	r := &b.registry
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem == nil {
		r.mem = make(map[string]memNode)
	}
	r.mem[st.NodeID] = memNode{st: st, expires: time.Now().Add(ttl)}
	return nil
}

func (b *boltBackend) nodes(context.Context) ([]NodeStatus, error) {
	r := &b.registry
	var out []NodeStatus
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.mem {
		if now.Before(n.expires) {
			out = append(out, n.st)
		} else {
			delete(r.mem, id)
		}
	}
	return out, nil
}

func (b *boltBackend) deregister(_ context.Context, id string) error {
	b.registry.mu.Lock()
	delete(b.registry.mem, id)
	b.registry.mu.Unlock()
	return nil
}
