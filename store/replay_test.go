package store_test

import (
	"context"
	"testing"
	"time"
)

// TestReplayGuardAcrossNodes: a nonce-count accepted through one node is refused through
// another (two Stores on one Redis data set), and keys expire with the nonce.
func TestReplayGuardAcrossNodes(t *testing.T) {
	ro := redisOptions(t)
	prefix := testPrefix(t, ro)
	a, b := openRedisStore(t, ro, prefix), openRedisStore(t, ro, prefix)
	ctx := context.Background()
	if first, err := a.ReplayGuard().FirstUse(ctx, "nonce:cnonce:1", time.Second); err != nil || !first {
		t.Fatalf("first use through node a: %v %v", first, err)
	}
	if first, err := b.ReplayGuard().FirstUse(ctx, "nonce:cnonce:1", time.Second); err != nil || first {
		t.Fatalf("replay through node b: accepted=%v err=%v, want refused", first, err)
	}
	if first, err := b.ReplayGuard().FirstUse(ctx, "nonce:cnonce:2", time.Second); err != nil || !first {
		t.Fatalf("next nonce-count through node b: %v %v", first, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if first, err := a.ReplayGuard().FirstUse(ctx, "nonce:cnonce:1", time.Second); err != nil || !first {
		t.Fatalf("after the TTL the key is gone: %v %v", first, err)
	}
}
