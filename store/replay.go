package store

import (
	"context"
	"fmt"
	"time"
)

// ReplayGuard is the cluster-wide memory of digest nonce-counts already accepted
// (DESIGN §4: a nonce-count is accepted once per cluster), so an answer captured on the
// wire and replayed to another node is refused there too. One SET NX per accepted digest
// answer, with the nonce's lifetime as TTL: the keys expire on their own. Redis mode
// only: the embedded store serves one node, whose own cache is the whole cluster.
type ReplayGuard struct{ r *redisBackend }

// ReplayGuard returns the store's replay guard, nil for the embedded store.
func (s *Store) ReplayGuard() *ReplayGuard {
	if r, ok := s.b.(*redisBackend); ok {
		return &ReplayGuard{r: r}
	}
	return nil
}

// FirstUse records key for ttl and reports whether no node recorded it before.
func (g *ReplayGuard) FirstUse(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := g.r.c.SetNX(ctx, g.r.prefix+"nc:"+key, 1, max(ttl, time.Second)).Result()
	if err != nil {
		return false, fmt.Errorf("store: replay guard: %w", err)
	}
	return ok, nil
}
