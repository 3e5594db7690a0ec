package store_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// redisPair is a writer node a and a watching node b (with metrics) on one data set.
type redisPair struct {
	a, b    *store.Store
	reg     *prometheus.Registry
	waitFor func(v uint64) *acl.Snapshot
	prefix  string
	ro      *redis.Options
}

func newRedisPair(t *testing.T, seed func(a *store.Store) uint64) *redisPair {
	t.Helper()
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	rp := &redisPair{reg: prometheus.NewRegistry(), prefix: p, ro: ro}
	rp.a = openRedisStore(t, ro, p, store.WithResync(time.Hour))
	rp.b = openRedisStore(t, ro, p, store.WithResync(time.Hour), store.WithMetrics(rp.reg))
	v := seed(rp.a)
	rp.waitFor, _ = storetest.StartWatch(t, rp.b)
	rp.waitFor(v)
	return rp
}

// compiled is a full compile of what b's store holds now.
func (rp *redisPair) compiled(t *testing.T) *acl.Snapshot {
	t.Helper()
	ds, err := rp.b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acl.Compile(ds)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestRedisIncrementalMatchesCompile: in Redis mode, a node applies another node's
// UpdateACL from the change notice by reading that one ACL; after every write its
// snapshot decides exactly like a full compile of the stored data set, and every one of
// those writes was applied incrementally.
func TestRedisIncrementalMatchesCompile(t *testing.T) {
	aclIDs := []string{"acl-1", "acl-2", "acl-3", "acl-unused"}
	var trunkIDs []acl.TrunkID
	rp := newRedisPair(t, func(a *store.Store) uint64 {
		ok := mustV(t)
		// (any prefix length: this test is about propagation, not the tenancy minimum)
		ok(a.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h", Limits: acl.Limits{MinPrefixV4: 1, MinPrefixV6: 1}}))
		for _, id := range aclIDs {
			ok(a.CreateACL(ctx, acl.IPACL{UUID: id, Account: acc}))
		}
		var v uint64
		for _, tr := range []acl.Trunk{
			{ID: "t1", ACLUUID: "acl-1", Status: acl.TrunkEnabled},
			{ID: "t2", ACLUUID: "acl-2", Status: acl.TrunkEnabled},
			{ID: "t3", ACLUUID: "acl-1", Status: acl.TrunkDisabled},
			{ID: "t4", ACLUUID: "acl-3", Status: acl.TrunkEnabled},
			{ID: "t5", Status: acl.TrunkEnabled},
		} {
			tr.Account, tr.Domain = acc, string(tr.ID)+".example.org"
			v = ok(a.CreateTrunk(ctx, tr))
			trunkIDs = append(trunkIDs, tr.ID)
		}
		return v
	})
	pool, probes := addressPool(t)

	steps := 80
	if testing.Short() {
		steps = 20
	}
	incr0, full0 := reloads(t, rp.reg, "incremental"), reloads(t, rp.reg, "full")
	rng := rand.New(rand.NewPCG(3, 4))
	for step := range steps {
		id := aclIDs[rng.IntN(len(aclIDs))]
		_, v, err := rp.a.UpdateACL(ctx, acc, id, func(a *acl.IPACL) error {
			switch op := rng.IntN(3); {
			case op == 0 || len(a.Entries) == 0:
				addr := pool[rng.IntN(len(pool))]
				if slices.ContainsFunc(a.Entries, func(e acl.Entry) bool { return e.IPAddress == addr }) {
					return nil
				}
				a.Entries = append(a.Entries, mkEntry(fmt.Sprintf("s%d", step), addr))
			case op == 1:
				i := rng.IntN(len(a.Entries))
				a.Entries = slices.Delete(a.Entries, i, i+1)
			default:
				i := rng.IntN(len(a.Entries))
				a.Entries[i].Enabled = !a.Entries[i].Enabled
			}
			return nil
		})
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		got := rp.waitFor(v)
		if got.Version() != v {
			t.Fatalf("step %d: snapshot %d, want %d", step, got.Version(), v)
		}
		sameDecisions(t, fmt.Sprintf("step %d", step), got, rp.compiled(t), trunkIDs, probes)
	}
	if n := reloads(t, rp.reg, "incremental") - incr0; n != float64(steps) {
		t.Fatalf("%v of %d ACL updates applied incrementally", n, steps)
	}
	if n := reloads(t, rp.reg, "full") - full0; n != 0 {
		t.Fatalf("%v full reloads during single-ACL updates", n)
	}
	// A write of another kind takes the full path.
	v := mustV(t)(rp.a.CreateCredential(ctx, acl.Credential{UUID: "c1", Account: acc, Username: "alice"}))
	rp.waitFor(v)
	if n := reloads(t, rp.reg, "full") - full0; n != 1 {
		t.Fatalf("a credential write gave %v full reloads, want 1", n)
	}
}

// TestRedisNoticeIsOnlyAHint: notices that lie, skip versions or come from another epoch
// never make a node apply less than what the store holds.
func TestRedisNoticeIsOnlyAHint(t *testing.T) {
	rp := newRedisPair(t, func(a *store.Store) uint64 { return seed(t, a) })
	pub := redis.NewClient(rp.ro)
	t.Cleanup(func() { _ = pub.Close() })
	forge := func(payload string) {
		t.Helper()
		if err := pub.Publish(ctx, rp.prefix+"changes", payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	head := func() store.Head {
		t.Helper()
		h, err := rp.b.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	addEntry := func(s *store.Store, id, addr string) uint64 {
		t.Helper()
		_, v, err := s.UpdateACL(ctx, acc, id, func(a *acl.IPACL) error {
			a.Entries = append(a.Entries, mkEntry("e-"+addr, addr))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	mustV(t)(rp.a.CreateACL(ctx, acl.IPACL{UUID: "acl-2", Account: acc, Entries: []acl.Entry{mkEntry("x", "198.51.100.1")}}))
	v := mustV(t)(rp.a.CreateTrunk(ctx, acl.Trunk{ID: "t2", Account: acc, Domain: "t2.example.org", Status: acl.TrunkEnabled, ACLUUID: "acl-2"}))
	rp.waitFor(v)

	cases := []struct {
		name   string
		write  func() (uint64, string) // a muted write; returns its version and the forged payload
		served func(*acl.Snapshot) bool
	}{
		{"a trunk write announced as an ACL write", func() (uint64, string) {
			_, v, err := rp.a.UpdateTrunk(ctx, acc, "t1", func(tr *acl.Trunk) error { tr.Domain = "moved.example.org"; return nil })
			if err != nil {
				t.Fatal(err)
			}
			return v, fmt.Sprintf("%d %s %s/acl-1", v, head().Epoch, acc)
		}, func(s *acl.Snapshot) bool { id, ok := s.TrunkByDomain("moved.example.org"); return ok && id == "t1" }},
		{"another ACL than the one written", func() (uint64, string) {
			v := addEntry(rp.a, "acl-2", "198.51.100.77")
			return v, fmt.Sprintf("%d %s %s/acl-1", v, head().Epoch, acc)
		}, func(s *acl.Snapshot) bool { return s.Allows("t2", netip.MustParseAddr("198.51.100.77")) }},
		{"another epoch", func() (uint64, string) {
			v := addEntry(rp.a, "acl-1", "203.0.113.5")
			return v, fmt.Sprintf("%d 00000000-0000-4000-8000-000000000000 %s/acl-1", v, acc)
		}, func(s *acl.Snapshot) bool { return s.Allows("t1", netip.MustParseAddr("203.0.113.5")) }},
		{"a gap of two ACL writes", func() (uint64, string) {
			addEntry(rp.a, "acl-1", "203.0.113.6")
			v := addEntry(rp.a, "acl-2", "198.51.100.78")
			return v, fmt.Sprintf("%d %s %s/acl-2", v, head().Epoch, acc)
		}, func(s *acl.Snapshot) bool {
			return s.Allows("t2", netip.MustParseAddr("198.51.100.78")) && s.Allows("t1", netip.MustParseAddr("203.0.113.6"))
		}},
		{"garbage", func() (uint64, string) {
			v := addEntry(rp.a, "acl-1", "203.0.113.8")
			return v, "not a notice"
		}, func(s *acl.Snapshot) bool { return s.Allows("t1", netip.MustParseAddr("203.0.113.8")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			incr := reloads(t, rp.reg, "incremental")
			unmute := store.Mute(rp.a)
			v, payload := tc.write()
			unmute()
			forge(payload)
			eventually(t, "the forged notice's version", func() bool { return rp.b.AppliedVersion() >= v })
			snap := rp.waitFor(v)
			if snap.Version() != v || !tc.served(snap) {
				t.Fatalf("snapshot %d does not serve the write of version %d", snap.Version(), v)
			}
			if n := reloads(t, rp.reg, "incremental") - incr; n != 0 {
				t.Fatalf("a notice that did not hold was applied incrementally (%v)", n)
			}
		})
	}
}

// TestRedisNoticePayload: what a write publishes: "<version> <epoch>", plus
// "<account>/<ipacl_uuid>" for an UpdateACL.
func TestRedisNoticePayload(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	s := openRedisStore(t, ro, p)
	sub := redis.NewClient(ro)
	t.Cleanup(func() { _ = sub.Close() })
	ps := sub.Subscribe(ctx, p+"changes")
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m.Payload
	}
	v := seed(t, s)
	for range v {
		next()
	}
	h, err := s.Head(ctx)
	if err != nil || h.Version != v || h.Epoch == "" {
		t.Fatalf("Head = %+v, %v", h, err)
	}
	_, v, err = s.UpdateACL(ctx, acc, "acl-1", func(a *acl.IPACL) error { a.Name = "n"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := next(), fmt.Sprintf("%d %s %s/acl-1", v, h.Epoch, acc); got != want {
		t.Fatalf("UpdateACL published %q, want %q", got, want)
	}
	v = mustV(t)(s.DeleteTrunk(ctx, acc, "t1"))
	if got, want := next(), fmt.Sprintf("%d %s", v, h.Epoch); got != want || strings.Count(got, " ") != 1 {
		t.Fatalf("DeleteTrunk published %q, want %q", got, want)
	}
}
