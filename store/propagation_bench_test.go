package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// TestPropagationBench measures propagation in Redis mode: three Stores ("nodes") on one
// real Redis, each running Watch into its own acl.Holder and a heartbeat loop, as
// cmd/sipedge wires them. It is a measurement, not a check, so it runs only with
// SIPEDGE_BENCH_PROPAGATION=1 (and SIPEDGE_TEST_REDIS); `make bench-propagation` sets
// both.
//
//   - isolated: 1,000 writes (UpdateACL adding one entry), each waiting until every node
//     serves it: the time from the write's return to the last node's holder holding the
//     new version (the apply callback timestamps it), and to the registry showing it on
//     every node (what ?wait=all waits for);
//   - burst: 1,000 such writes back to back; per write, the time from its return to every
//     node serving it or a later version (reloads coalesce);
//   - 100k: a data set of 100,000 entries over 100 ACLs and trunks; one UpdateACL → every
//     node serving it (notice + the one ACL's read + incremental apply + swap; a full
//     load + compile when the notice cannot be applied incrementally), repeated, with the
//     build time alone from sipedge_snapshot_compile_seconds, and the cost of the full
//     path at that size for comparison.
func TestPropagationBench(t *testing.T) {
	if os.Getenv("SIPEDGE_BENCH_PROPAGATION") != "1" {
		t.Skip("set SIPEDGE_BENCH_PROPAGATION=1 (and SIPEDGE_TEST_REDIS) to run; see make bench-propagation")
	}
	ro := redisOptions(t)
	writes := 1000
	if testing.Short() {
		writes = 100
	}

	t.Run("small data set", func(t *testing.T) {
		p := testPrefix(t, ro)
		c := newBenchCluster(t, func(opts ...store.Option) *store.Store {
			return openRedisStore(t, ro, p, append(opts, store.WithResync(time.Hour))...)
		})
		w := c.nodes[0].s // the API runs on one of the nodes
		const acls = 10
		var v uint64
		mustV(t)(w.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h"}))
		for i := range acls {
			mustV(t)(w.CreateACL(ctx, benchACL(fmt.Sprintf("acl-%d", i), i*10, 10)))
			v = mustV(t)(w.CreateTrunk(ctx, acl.Trunk{ID: acl.TrunkID(fmt.Sprintf("t-%d", i)), Account: acc,
				Domain: fmt.Sprintf("t%d.example.org", i), Status: acl.TrunkEnabled, ACLUUID: fmt.Sprintf("acl-%d", i)}))
		}
		c.start(t)
		c.waitAll(t, v)

		next := 100_000
		add := func() uint64 {
			t.Helper()
			i := next
			next++
			_, v, err := w.UpdateACL(ctx, acc, fmt.Sprintf("acl-%d", i%acls), func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("e%d", i), IPAddress: benchAddr(i).String(), Enabled: true})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}

		// Isolated writes.
		compile0 := c.compileSeconds(t)
		var holders, registry []time.Duration
		for range writes {
			v := add()
			returned := time.Now()
			c.waitAll(t, v)
			reg := c.waitRegistry(t, w, v)
			holders = append(holders, max(c.servedAt(t, v).Sub(returned), 0))
			registry = append(registry, max(reg.Sub(returned), 0))
		}
		// A burst.
		type mark struct {
			v  uint64
			at time.Time
		}
		burst := make([]mark, 0, writes)
		start := time.Now()
		for range writes {
			v := add()
			burst = append(burst, mark{v, time.Now()})
		}
		elapsed := time.Since(start)
		c.waitAll(t, burst[len(burst)-1].v)
		var burstLat []time.Duration
		for _, m := range burst {
			burstLat = append(burstLat, max(c.servedAt(t, m.v).Sub(m.at), 0))
		}
		applies := c.applies()
		perCompile := meanCompile(compile0, c.compileSeconds(t))

		t.Logf("propagation, 3 nodes on one Redis, %d writes each (UpdateACL adding one entry; %d ACLs, up to %d entries):",
			writes, acls, acls*10+2*writes)
		t.Logf("  %-44s %8s %8s %8s", "", "p50", "p99", "max")
		t.Logf("  %-44s %s", "isolated: write return → every holder", row(holders))
		t.Logf("  %-44s %s", "isolated: write return → registry (wait=all)", row(registry))
		t.Logf("  %-44s %s", "burst: write return → every holder", row(burstLat))
		t.Logf("  burst: %d writes in %v (%.0f/s); snapshots applied per node over the whole run: %v",
			writes, elapsed.Round(time.Millisecond), float64(writes)/elapsed.Seconds(), applies)
		t.Logf("  mean snapshot build per node (full compile or one-ACL incremental, with its read): %v", perCompile)
		t.Logf("  applied incrementally per node: %v", c.incrementals(t))
	})

	t.Run("100k entries", func(t *testing.T) {
		p := testPrefix(t, ro)
		c := newBenchCluster(t, func(opts ...store.Option) *store.Store {
			return openRedisStore(t, ro, p, append(opts, store.WithResync(time.Hour))...)
		})
		w := c.nodes[0].s
		const acls, per = 100, 1000
		var v uint64
		mustV(t)(w.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h"}))
		seedStart := time.Now()
		for i := range acls {
			mustV(t)(w.CreateACL(ctx, benchACL(fmt.Sprintf("acl-%d", i), i*per, per)))
			v = mustV(t)(w.CreateTrunk(ctx, acl.Trunk{ID: acl.TrunkID(fmt.Sprintf("t-%d", i)), Account: acc,
				Domain: fmt.Sprintf("t%d.example.org", i), Status: acl.TrunkEnabled, ACLUUID: fmt.Sprintf("acl-%d", i)}))
		}
		seeded := time.Since(seedStart)
		bootStart := time.Now()
		c.start(t)
		c.waitAll(t, v)
		boot := time.Since(bootStart)
		if snap := c.nodes[1].holder.Load(); !snap.Allows("t-42", benchAddr(42*per+7)) {
			t.Fatal("100k snapshot does not allow a seeded address")
		}

		compile0 := c.compileSeconds(t)
		const rounds = 20
		var lat []time.Duration
		for i := range rounds {
			_, v, err := w.UpdateACL(ctx, acc, fmt.Sprintf("acl-%d", i%acls), func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("x%d", i), IPAddress: benchAddr(acls*per + i).String(), Enabled: true})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			returned := time.Now()
			c.waitAll(t, v)
			lat = append(lat, c.servedAt(t, v).Sub(returned))
		}
		perCompile := meanCompile(compile0, c.compileSeconds(t))
		if snap := c.nodes[2].holder.Load(); !snap.Allows(acl.TrunkID(fmt.Sprintf("t-%d", (rounds-1)%acls)), benchAddr(acls*per+rounds-1)) {
			t.Fatal("the last change is not served")
		}
		// What the full-reload path costs at this size (a gap, a resync, another kind of
		// write): one load and one compile.
		loadStart := time.Now()
		ds, err := w.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		loaded := time.Since(loadStart)
		compileStart := time.Now()
		if _, err := acl.Compile(ds); err != nil {
			t.Fatal(err)
		}
		compiled := time.Since(compileStart)
		t.Logf("100k entries (%d ACLs × %d, %d trunks), 3 nodes on one Redis; seeding took %v, first load+compile on 3 nodes %v",
			acls, per, acls, seeded.Round(time.Millisecond), boot.Round(time.Millisecond))
		t.Logf("  %-44s %8s %8s %8s", "", "p50", "p99", "max")
		t.Logf("  %-44s %s", "one UpdateACL → every node serving it", row(lat))
		t.Logf("  mean snapshot build per node (one-ACL incremental, with its read): %v; applied incrementally per node: %v",
			perCompile, c.incrementals(t))
		t.Logf("  full-reload path at this size, for comparison: load %v + acl.Compile %v",
			loaded.Round(time.Millisecond), compiled.Round(time.Millisecond))
	})
}

// benchACL is an ACL of n /32 entries starting at benchAddr(first).
func benchACL(id string, first, n int) acl.IPACL {
	a := acl.IPACL{UUID: id, Account: acc, Name: id}
	for i := first; i < first+n; i++ {
		a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("e%d", i), IPAddress: benchAddr(i).String(), Enabled: true})
	}
	return a
}

// benchAddr is the i-th address of 10.0.0.0/8.
func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

type benchNode struct {
	s      *store.Store
	reg    *prometheus.Registry
	holder acl.Holder

	mu      sync.Mutex
	applies []appliedAt // in apply order
}

type appliedAt struct {
	v  uint64
	at time.Time
}

type benchCluster struct {
	nodes []*benchNode
	kick  chan struct{} // poked after every apply
}

// newBenchCluster opens three nodes' Stores, each with its own metrics registry.
func newBenchCluster(t *testing.T, open func(...store.Option) *store.Store) *benchCluster {
	t.Helper()
	c := &benchCluster{kick: make(chan struct{}, 1)}
	for range 3 {
		reg := prometheus.NewRegistry()
		c.nodes = append(c.nodes, &benchNode{s: open(store.WithMetrics(reg)), reg: reg})
	}
	return c
}

// start runs Watch (into the node's holder, timestamping each apply) and the heartbeat
// loop of every node until the test ends.
func (c *benchCluster) start(t *testing.T) {
	wctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i, n := range c.nodes {
		wg.Go(func() {
			_ = n.s.Watch(wctx, func(snap *acl.Snapshot) {
				n.holder.Store(snap)
				at := time.Now() // from here on the node serves snap
				n.mu.Lock()
				n.applies = append(n.applies, appliedAt{snap.Version(), at})
				n.mu.Unlock()
				select {
				case c.kick <- struct{}{}:
				default:
				}
			})
		})
		wg.Go(func() {
			_ = n.s.RunHeartbeat(wctx, n.s.SelfStatus(fmt.Sprintf("node-%d", i), "", time.Now()), time.Second)
		})
	}
}

// recorded is the version of the last apply node n recorded (0 before any).
func (n *benchNode) recorded() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.applies) == 0 {
		return 0
	}
	return n.applies[len(n.applies)-1].v
}

// waitAll blocks until every node has recorded serving v or later.
func (c *benchCluster) waitAll(t *testing.T, v uint64) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		done := true
		for _, n := range c.nodes {
			if n.recorded() < v {
				done = false
				break
			}
		}
		if done {
			return
		}
		select {
		case <-c.kick:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatalf("nodes did not all reach version %d", v)
		}
	}
}

// waitRegistry polls the registry until every node reports v, returning when it did.
func (c *benchCluster) waitRegistry(t *testing.T, s *store.Store, v uint64) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		nodes, err := s.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) == len(c.nodes) && !slices.ContainsFunc(nodes, func(n store.NodeStatus) bool { return n.AppliedVersion < v }) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not show version %d on every node: %+v", v, nodes)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// servedAt is when the last node started serving v (or a later version); call it after
// waitAll(v).
func (c *benchCluster) servedAt(t *testing.T, v uint64) time.Time {
	t.Helper()
	var last time.Time
	for i, n := range c.nodes {
		at, ok := n.servedAt(v)
		if !ok {
			t.Fatalf("node %d recorded no snapshot at version %d or later", i, v)
		}
		if at.After(last) {
			last = at
		}
	}
	return last
}

func (n *benchNode) servedAt(v uint64) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	i := sort.Search(len(n.applies), func(i int) bool { return n.applies[i].v >= v })
	if i == len(n.applies) {
		return time.Time{}, false
	}
	return n.applies[i].at, true
}

// applies is the number of snapshots each node applied.
func (c *benchCluster) applies() []int {
	var out []int
	for _, n := range c.nodes {
		n.mu.Lock()
		out = append(out, len(n.applies))
		n.mu.Unlock()
	}
	return out
}

type histo struct {
	sum   float64
	count uint64
}

func (c *benchCluster) compileSeconds(t *testing.T) []histo {
	t.Helper()
	out := make([]histo, len(c.nodes))
	for i, n := range c.nodes {
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "sipedge_snapshot_compile_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				out[i] = histo{h.GetSampleSum(), h.GetSampleCount()}
			}
		}
	}
	return out
}

// incrementals is the number of snapshots each node applied incrementally.
func (c *benchCluster) incrementals(t *testing.T) []int {
	t.Helper()
	out := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = int(reloads(t, n.reg, "incremental"))
	}
	return out
}

// meanCompile is each node's mean compile time between two readings.
func meanCompile(before, after []histo) []time.Duration {
	out := make([]time.Duration, len(after))
	for i := range after {
		if n := after[i].count - before[i].count; n > 0 {
			out[i] = time.Duration((after[i].sum - before[i].sum) / float64(n) * float64(time.Second)).Round(time.Microsecond)
		}
	}
	return out
}

// row formats p50, p99 and max of ds in milliseconds.
func row(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
	return strings.Join([]string{fmt.Sprintf("%8s", ms(q(0.50))), fmt.Sprintf("%8s", ms(q(0.99))), fmt.Sprintf("%8s", ms(s[len(s)-1]))}, " ")
}
