package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

var ctx = context.Background()

const acc = "MAAAAAAAAAAAAAAAAAAA"

// metricValue reads one sample from reg: a counter or gauge value, or a histogram's count.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func reloads(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	return metricValue(t, reg, "sipedge_store_reloads_total", "result", result)
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openMetered(t *testing.T, opts ...store.Option) (*store.Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := openBoltDir(t, filepath.Join(t.TempDir(), "data"), append([]store.Option{store.WithMetrics(reg)}, opts...)...)
	return s, reg
}

func mustV(t *testing.T) func(v uint64, err error) uint64 {
	return func(v uint64, err error) uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func mkEntry(id, addr string) acl.Entry {
	return acl.Entry{ID: id, IPAddress: addr, Enabled: true}
}

func seed(t *testing.T, s *store.Store) uint64 {
	t.Helper()
	ok := mustV(t)
	ok(s.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h"}))
	ok(s.CreateACL(ctx, acl.IPACL{UUID: "acl-1", Account: acc, Entries: []acl.Entry{mkEntry("e1", "192.0.2.0/24")}}))
	ok(s.CreateCredential(ctx, acl.Credential{UUID: "cred-1", Account: acc, Name: "c", Username: "alice"}))
	return ok(s.CreateTrunk(ctx, acl.Trunk{ID: "t1", Account: acc, Domain: "t1.example.org", Status: acl.TrunkEnabled,
		ACLUUID: "acl-1", CredentialUUID: "cred-1"}))
}

func TestWatchFreshStore(t *testing.T) {
	s, reg := openMetered(t)
	waitFor, _ := storetest.StartWatch(t, s)
	snap := waitFor(0)
	if snap == nil || !snap.Empty() || snap.Version() != 0 {
		t.Fatalf("fresh store snapshot: %v", snap)
	}
	if got := metricValue(t, reg, "sipedge_store_up"); got != 1 {
		t.Fatalf("sipedge_store_up = %v", got)
	}
}

// TestWatchIncrementalMatchesCompile changes ACL entries at random and checks, after each
// write, that the snapshot Watch derived incrementally decides exactly like a full
// compile of the stored data set.
func TestWatchIncrementalMatchesCompile(t *testing.T) {
	s, reg := openMetered(t)
	ok := mustV(t)
	ok(s.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h"}))
	aclIDs := []string{"acl-1", "acl-2", "acl-3", "acl-unused"}
	for _, id := range aclIDs {
		ok(s.CreateACL(ctx, acl.IPACL{UUID: id, Account: acc}))
	}
	trunks := []acl.Trunk{
		{ID: "t1", ACLUUID: "acl-1", Status: acl.TrunkEnabled},
		{ID: "t2", ACLUUID: "acl-2", Status: acl.TrunkEnabled},
		{ID: "t3", ACLUUID: "acl-1", Status: acl.TrunkDisabled},
		{ID: "t4", ACLUUID: "acl-3", Status: acl.TrunkEnabled},
		{ID: "t5", Status: acl.TrunkEnabled},
	}
	var trunkIDs []acl.TrunkID
	for _, tr := range trunks {
		tr.Account, tr.Domain = acc, string(tr.ID)+".example.org"
		ok(s.CreateTrunk(ctx, tr))
		trunkIDs = append(trunkIDs, tr.ID)
	}
	waitFor, versions := storetest.StartWatch(t, s)
	waitFor(ok(s.Version(ctx)))

	pool, probes := addressPool(t)

	steps := 120
	if testing.Short() {
		steps = 30
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range steps {
		id := aclIDs[rng.IntN(len(aclIDs))]
		_, v, err := s.UpdateACL(ctx, acc, id, func(a *acl.IPACL) error {
			switch op := rng.IntN(3); {
			case op == 0 || len(a.Entries) == 0: // add
				addr := pool[rng.IntN(len(pool))]
				if slices.ContainsFunc(a.Entries, func(e acl.Entry) bool { return e.IPAddress == addr }) {
					return nil
				}
				a.Entries = append(a.Entries, mkEntry(fmt.Sprintf("s%d", step), addr))
			case op == 1: // remove
				i := rng.IntN(len(a.Entries))
				a.Entries = slices.Delete(a.Entries, i, i+1)
			default: // toggle
				i := rng.IntN(len(a.Entries))
				a.Entries[i].Enabled = !a.Entries[i].Enabled
			}
			return nil
		})
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		got := waitFor(v)
		if got.Version() != v {
			t.Fatalf("step %d: snapshot %d, want %d", step, got.Version(), v)
		}
		ds, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := acl.Compile(ds)
		if err != nil {
			t.Fatal(err)
		}
		sameDecisions(t, fmt.Sprintf("step %d", step), got, want, trunkIDs, probes)
	}
	if n := reloads(t, reg, "incremental"); n != float64(steps) {
		t.Fatalf("%v incremental reloads for %d ACL updates (applied %v)", n, steps, versions())
	}
	if n := reloads(t, reg, "full"); n != 1 {
		t.Fatalf("%v full reloads, want only the first", n)
	}
	v := ok(s.Version(ctx))
	if got := metricValue(t, reg, "sipedge_snapshot_version"); got != float64(v) {
		t.Fatalf("sipedge_snapshot_version = %v, want %d", got, v)
	}
	if got := metricValue(t, reg, "sipedge_snapshot_compile_seconds"); got != float64(steps+1) {
		t.Fatalf("compile histogram has %v samples, want %d", got, steps+1)
	}
}

// addressPool returns nested IPv4 and IPv6 prefixes (so closures matter) for random ACL
// changes, and the addresses to probe: each prefix's edges and their neighbours.
func addressPool(t *testing.T) (pool []string, probes []netip.Addr) {
	t.Helper()
	pool = []string{
		"192.0.2.0/24", "192.0.2.0/25", "192.0.2.128/26", "192.0.2.7", "192.0.2.200",
		"198.51.100.0/24", "198.51.100.10", "203.0.113.0/28", "203.0.113.9",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::1", "2001:db8:ffff::/48",
	}
	for _, p := range pool {
		pf, err := acl.ParsePrefix(p)
		if err != nil {
			t.Fatal(err)
		}
		probes = append(probes, pf.Addr(), lastAddr(pf), pf.Addr().Prev(), lastAddr(pf).Next())
	}
	probes = append(probes, netip.MustParseAddr("::ffff:192.0.2.7"), netip.MustParseAddr("10.1.2.3"))
	return pool, probes
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for b := range 8 {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

func sameDecisions(t *testing.T, where string, got, want *acl.Snapshot, trunks []acl.TrunkID, probes []netip.Addr) {
	t.Helper()
	for _, id := range trunks {
		g, gok := got.Trunk(id)
		w, wok := want.Trunk(id)
		if gok != wok || (gok && (g.HasACL != w.HasACL || g.Enabled != w.Enabled)) {
			t.Fatalf("%s: Trunk(%s) = %+v, compile says %+v", where, id, g, w)
		}
	}
	for _, p := range probes {
		gi, gok := got.MatchSource(p)
		wi, wok := want.MatchSource(p)
		if gi != wi || gok != wok {
			t.Fatalf("%s: MatchSource(%v) = %q %t, compile says %q %t", where, p, gi, gok, wi, wok)
		}
		if g, w := got.Listed(p), want.Listed(p); g != w {
			t.Fatalf("%s: Listed(%v) = %t, compile says %t", where, p, g, w)
		}
		if g, w := got.AcceptingTrunks(p, nil), want.AcceptingTrunks(p, nil); !slices.Equal(g, w) {
			t.Fatalf("%s: AcceptingTrunks(%v) = %v, compile says %v", where, p, g, w)
		}
		for _, id := range trunks {
			if g, w := got.Allows(id, p), want.Allows(id, p); g != w {
				t.Fatalf("%s: Allows(%s, %v) = %t, compile says %t", where, id, p, g, w)
			}
		}
	}
}

func TestWatchKeepsSnapshotOnCompileError(t *testing.T) {
	var fail atomic.Bool
	store.ReplaceCompile(t, func(ds *acl.Dataset) (*acl.Snapshot, error) {
		if fail.Load() {
			return nil, errors.New("compile broke")
		}
		return acl.Compile(ds)
	})
	s, reg := openMetered(t)
	v := seed(t, s)
	waitFor, _ := storetest.StartWatch(t, s)
	before := waitFor(v)

	fail.Store(true)
	ok := mustV(t)
	bad := ok(s.CreateCredential(ctx, acl.Credential{UUID: "cred-2", Account: acc, Username: "bob"}))
	eventually(t, "a counted compile error", func() bool { return reloads(t, reg, "error") >= 1 })
	if s.AppliedVersion() != v {
		t.Fatalf("applied %d after a failed compile of %d, want %d kept", s.AppliedVersion(), bad, v)
	}
	if got := waitFor(v); got != before {
		t.Fatal("snapshot replaced although compile failed")
	}
	fail.Store(false)
	v = ok(s.CreateCredential(ctx, acl.Credential{UUID: "cred-3", Account: acc, Username: "carol"}))
	if snap := waitFor(v); snap.Version() != v {
		t.Fatalf("no recovery: snapshot %d, want %d", snap.Version(), v)
	}
}

func TestWatchRefusesAccidentalEmpty(t *testing.T) {
	s, reg := openMetered(t)
	v := seed(t, s)
	waitFor, _ := storetest.StartWatch(t, s)
	before := waitFor(v)

	wiped, err := store.WipeObjects(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Load(ctx); !ds.Empty() || ds.Emptied {
		t.Fatalf("wipe left %+v", ds)
	}
	eventually(t, "the empty data set to be refused", func() bool { return reloads(t, reg, "kept_empty") >= 1 })
	if s.AppliedVersion() != v || waitFor(v) != before || before.Empty() {
		t.Fatalf("empty data set at %d replaced the snapshot (applied %d)", wiped, s.AppliedVersion())
	}
	ok := mustV(t)
	v = ok(s.CreateACL(ctx, acl.IPACL{UUID: "acl-9", Account: acc, Entries: []acl.Entry{mkEntry("e", "198.51.100.1")}}))
	if snap := waitFor(v); snap.Version() != v || snap.Empty() {
		t.Fatalf("non-empty data set not applied after the refusal: %d", snap.Version())
	}
}

func TestWatchVersionReset(t *testing.T) {
	s, reg := openMetered(t)
	v := seed(t, s)
	waitFor, versions := storetest.StartWatch(t, s)
	waitFor(v)
	if v < 3 {
		t.Fatalf("seed ended at version %d", v)
	}

	// An older copy of the data set (new epoch, lower version) is applied.
	if err := store.BoltRewind(ctx, s, 2, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rewound version to be applied", func() bool { return s.AppliedVersion() == 2 })
	// Versions go on from there.
	ok := mustV(t)
	v = ok(s.CreateCredential(ctx, acl.Credential{UUID: "cred-2", Account: acc, Username: "bob"}))
	if v != 3 {
		t.Fatalf("write after rewind got version %d", v)
	}
	if snap := waitFor(v); snap.Version() != 3 {
		t.Fatalf("snapshot %d after rewind + write", snap.Version())
	}
	// The same epoch going backwards is a reset too.
	if err := store.BoltRewind(ctx, s, 1, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "version 1 to be applied", func() bool { return s.AppliedVersion() == 1 })
	if reloads(t, reg, "error") != 0 {
		t.Fatal("reset counted as an error")
	}
	t.Logf("applied %v", versions())
}

func TestWatchCoalesces(t *testing.T) {
	var compiles atomic.Int32
	store.ReplaceCompile(t, func(ds *acl.Dataset) (*acl.Snapshot, error) {
		compiles.Add(1)
		time.Sleep(100 * time.Millisecond)
		return acl.Compile(ds)
	})
	s, _ := openMetered(t)
	v := seed(t, s)
	waitFor, versions := storetest.StartWatch(t, s)
	waitFor(v)
	ok := mustV(t)
	const writes = 30
	for i := range writes {
		v = ok(s.CreateCredential(ctx, acl.Credential{UUID: fmt.Sprintf("c%d", i), Account: acc, Username: fmt.Sprintf("u%d", i)}))
	}
	waitFor(v)
	vs := versions()
	if n := compiles.Load(); n > 10 {
		t.Fatalf("%d compiles for %d writes, want coalescing (applied %v)", n, writes, vs)
	}
	if !slices.IsSorted(vs) || vs[len(vs)-1] != v {
		t.Fatalf("applied %v, want increasing up to %d", vs, v)
	}
}

func TestWatchResyncCatchesLostNotice(t *testing.T) {
	s, reg := openMetered(t, store.WithResync(100*time.Millisecond))
	v := seed(t, s)
	waitFor, _ := storetest.StartWatch(t, s)
	waitFor(v)
	v, err := store.SilentRename(ctx, s, acc, "cred-1", "renamed quietly")
	if err != nil {
		t.Fatal(err)
	}
	snap := waitFor(v)
	if c, ok := snap.Credential("alice"); !ok || c.Name != "renamed quietly" {
		t.Fatalf("resync did not pick up the change: %+v", c)
	}
	eventually(t, "idle resyncs", func() bool { return reloads(t, reg, "unchanged") >= 1 })
}
