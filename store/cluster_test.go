package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/internal/testutil"
	"github.com/sipedge/sipedge/store"
)

// registryCase runs against one data set seen through two Stores: w writes heartbeats,
// r lists (the same Store in embedded mode, two Stores on one Redis otherwise).
type registryCase struct {
	name string
	opts []store.Option // of both Stores
	run  func(t *testing.T, w, r *store.Store)
}

var registryCases = []registryCase{
	{"list sorted, replace, invalid id", nil, func(t *testing.T, w, r *store.Store) {
		if nodes := mustNodes(t, r); len(nodes) != 0 {
			t.Fatalf("fresh registry lists %v", nodes)
		}
		at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		for _, st := range []store.NodeStatus{
			{NodeID: "edge-b", AppliedVersion: 7, AppliedAt: at, Address: "192.0.2.2:5060", StartedAt: at.Add(-time.Hour)},
			{NodeID: "edge-a", AppliedVersion: 5, Address: "192.0.2.1:5060"},
			{NodeID: "edge-b", AppliedVersion: 9, AppliedAt: at.Add(time.Second), Address: "192.0.2.2:5060", StartedAt: at.Add(-time.Hour)},
		} {
			if err := w.Heartbeat(ctx, st); err != nil {
				t.Fatalf("Heartbeat(%s): %v", st.NodeID, err)
			}
		}
		got := mustNodes(t, r)
		want := []store.NodeStatus{
			{NodeID: "edge-a", AppliedVersion: 5, Address: "192.0.2.1:5060"},
			{NodeID: "edge-b", AppliedVersion: 9, AppliedAt: at.Add(time.Second), Address: "192.0.2.2:5060", StartedAt: at.Add(-time.Hour)},
		}
		if !slices.EqualFunc(got, want, sameNode) {
			t.Fatalf("Nodes = %+v\nwant %+v", got, want)
		}
		for _, id := range []string{"", "a/b", "x\ny", strings.Repeat("n", 257)} {
			if err := w.Heartbeat(ctx, store.NodeStatus{NodeID: id}); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("Heartbeat(%q) = %v, want ErrInvalid", id, err)
			}
		}
	}},
	{"lease runs out", []store.Option{store.WithNodeTTL(500 * time.Millisecond)}, func(t *testing.T, w, r *store.Store) {
		if err := w.Heartbeat(ctx, store.NodeStatus{NodeID: "short", AppliedVersion: 1}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if ids := nodeIDs(mustNodes(t, r)); !slices.Equal(ids, []string{"short"}) {
			t.Fatalf("after heartbeat: %v", ids)
		}
		// Renewed within the lease: still listed after more than one TTL in total.
		time.Sleep(300 * time.Millisecond)
		if err := w.Heartbeat(ctx, store.NodeStatus{NodeID: "short", AppliedVersion: 2}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if nodes := mustNodes(t, r); len(nodes) != 1 || nodes[0].AppliedVersion != 2 {
			t.Fatalf("renewed node after %v: %+v", time.Since(start), nodes)
		}
		eventually(t, "the lease to run out", func() bool { return len(mustNodes(t, r)) == 0 })
		if d := time.Since(start); d < 700*time.Millisecond || d > 3*time.Second {
			t.Fatalf("node dropped after %v, want about 800ms", d)
		}
	}},
	{"Watch reports applies at once, RunHeartbeat leaves on stop", []store.Option{store.WithNodeTTL(time.Hour)}, func(t *testing.T, w, r *store.Store) {
		var holder acl.Holder
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		t.Cleanup(func() { stop(); wg.Wait() })
		// Watch itself reports every apply (no NotifyApplied in the callback).
		wg.Go(func() { _ = w.Watch(wctx, holder.Store) })
		hctx, stopBeat := context.WithCancel(ctx)
		beatDone := make(chan error, 1)
		started := time.Now().Add(-time.Minute)
		// An interval of an hour: only the first beat and the pokes can report versions.
		go func() { beatDone <- w.RunHeartbeat(hctx, w.SelfStatus("self", "192.0.2.9:5060", started), time.Hour) }()

		v := seed(t, w)
		eventually(t, "the seeded version in the registry", func() bool {
			nodes := mustNodes(t, r)
			return len(nodes) == 1 && nodes[0].AppliedVersion == v
		})
		for i := range 5 {
			v = mustV(t)(w.CreateCredential(ctx, acl.Credential{UUID: "rc" + string(rune('a'+i)), Account: acc, Username: "rc" + string(rune('a'+i))}))
			written := time.Now()
			eventually(t, "the write in the registry", func() bool {
				nodes := mustNodes(t, r)
				return len(nodes) == 1 && nodes[0].AppliedVersion == v
			})
			if d := time.Since(written); d > 500*time.Millisecond {
				t.Errorf("write %d reported after %v (the heartbeat was not poked)", i, d)
			}
		}
		n := mustNodes(t, r)[0]
		if n.NodeID != "self" || n.Address != "192.0.2.9:5060" || !n.StartedAt.Equal(started) ||
			n.AppliedAt.IsZero() || time.Since(n.AppliedAt) > 10*time.Second || holder.Load().Version() != v {
			t.Fatalf("node status %+v (holder at %d)", n, holder.Load().Version())
		}
		// The status carries the data set's epoch, so it serves v of this data set.
		head, err := r.Head(ctx)
		if err != nil || head.Version != v || head.Epoch == "" || n.Epoch != head.Epoch || !n.Serves(head, v) {
			t.Fatalf("Head = %+v, %v; node %+v", head, err, n)
		}
		// A no-op kept for old callers.
		w.NotifyApplied(nil)
		w.NotifyApplied(holder.Load())
		stopBeat()
		if err := <-beatDone; err != nil {
			t.Fatalf("RunHeartbeat returned %v", err)
		}
		if nodes := mustNodes(t, r); len(nodes) != 0 {
			t.Fatalf("a stopped node is still listed: %+v", nodes)
		}
	}},
}

func sameNode(a, b store.NodeStatus) bool {
	return a.NodeID == b.NodeID && a.AppliedVersion == b.AppliedVersion && a.AppliedAt.Equal(b.AppliedAt) &&
		a.Address == b.Address && a.StartedAt.Equal(b.StartedAt)
}

func mustNodes(t *testing.T, s *store.Store) []store.NodeStatus {
	t.Helper()
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	return nodes
}

func nodeIDs(nodes []store.NodeStatus) []string {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.NodeID
	}
	return ids
}

func TestRegistryEmbedded(t *testing.T) {
	for _, tc := range registryCases {
		t.Run(tc.name, func(t *testing.T) {
			s := openBoltDir(t, filepath.Join(t.TempDir(), "data"), tc.opts...)
			tc.run(t, s, s)
		})
	}
}

// TestRegistryEmbeddedPerStore: the embedded registry belongs to its Store; another
// process (Store) has its own.
func TestRegistryEmbeddedPerStore(t *testing.T) {
	a := openBoltDir(t, filepath.Join(t.TempDir(), "a"))
	b := openBoltDir(t, filepath.Join(t.TempDir(), "b"))
	if err := a.Heartbeat(ctx, store.NodeStatus{NodeID: "a"}); err != nil {
		t.Fatal(err)
	}
	if ids := nodeIDs(mustNodes(t, a)); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("a lists %v", ids)
	}
	if nodes := mustNodes(t, b); len(nodes) != 0 {
		t.Fatalf("b lists a's heartbeat: %v", nodes)
	}
}

// TestRegistryRedis: two Stores on one Redis see each other's heartbeats.
func TestRegistryRedis(t *testing.T) {
	ro := redisOptions(t)
	for _, tc := range registryCases {
		t.Run(tc.name, func(t *testing.T) {
			p := testPrefix(t, ro)
			opts := append([]store.Option{store.WithResync(time.Hour)}, tc.opts...)
			w := openRedisStore(t, ro, p, opts...)
			r := openRedisStore(t, ro, p, opts...)
			tc.run(t, w, r)
		})
	}
}

// TestRegistryRedisNodesSeeEachOther: three nodes heartbeating through their own Stores
// are listed identically by each.
func TestRegistryRedisNodesSeeEachOther(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	var stores []*store.Store
	for range 3 {
		stores = append(stores, openRedisStore(t, ro, p))
	}
	hctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	for i, s := range stores {
		id := "node-" + string(rune('a'+i))
		wg.Go(func() { _ = s.RunHeartbeat(hctx, s.SelfStatus(id, "", time.Now()), 50*time.Millisecond) })
	}
	for _, s := range stores {
		eventually(t, "all three nodes", func() bool {
			return slices.Equal(nodeIDs(mustNodes(t, s)), []string{"node-a", "node-b", "node-c"})
		})
	}
	// The index holds exactly the three ids; a stopped node leaves it.
	admin := redis.NewClient(ro)
	defer admin.Close()
	if n := admin.ZCard(ctx, p+"nodes").Val(); n != 3 {
		t.Fatalf("index %snodes has %d members", p, n)
	}
	stop()
	wg.Wait()
	if nodes := mustNodes(t, stores[0]); len(nodes) != 0 {
		t.Fatalf("stopped nodes still listed: %v", nodeIDs(nodes))
	}
	if n := admin.Exists(ctx, p+"node:node-a", p+"nodes").Val(); n != 0 {
		t.Fatalf("%d registry keys left after a clean stop", n)
	}
}

// TestRegistryRedisOutage: with Redis unreachable, Nodes is ErrUnavailable and the
// heartbeat loop keeps going, logging one warning per outage and one line when it is back.
func TestRegistryRedisOutage(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	px := newCutProxy(t, ro.Addr)
	pro := *ro
	pro.Addr = px.addr
	pro.MaxRetries = -1
	var logs testutil.SyncBuffer
	s := openRedisStore(t, &pro, p, store.WithTimeout(100*time.Millisecond), store.WithLogger(zerolog.New(&logs)),
		store.WithNodeTTL(time.Second))
	observer := openRedisStore(t, ro, p)

	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		_ = s.RunHeartbeat(hctx, s.SelfStatus("flaky", "", time.Now()), 20*time.Millisecond)
	}()
	eventually(t, "the node listed", func() bool { return len(mustNodes(t, observer)) == 1 })

	for outage := 1; outage <= 2; outage++ {
		px.cut()
		if _, err := s.Nodes(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Nodes with Redis cut: %v, want ErrUnavailable", err)
		}
		time.Sleep(400 * time.Millisecond) // many failed ticks
		if n := strings.Count(logs.String(), "node heartbeat failed"); n != outage {
			t.Fatalf("outage %d: %d warnings logged, want one per outage:\n%s", outage, n, logs.String())
		}
		px.restore()
		eventually(t, "the heartbeat restored", func() bool {
			return strings.Count(logs.String(), "node heartbeat restored") == outage
		})
		eventually(t, "the node listed again", func() bool { return len(mustNodes(t, observer)) == 1 })
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("the outage was not logged at warn:\n%s", logs.String())
	}
}
