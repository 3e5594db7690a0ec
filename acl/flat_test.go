package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// wideACL returns an ACL of n prefixes of any length anywhere in both families, so that
// prefixes span many buckets, fill a bucket (long chunks) or sit on bucket edges. A
// narrow one has only prefixes inside a few crowded buckets.
func wideACL(r *rand.Rand, uuid string, n int) IPACL { return randFlatACL(r, uuid, n, true) }

func randFlatACL(r *rand.Rand, uuid string, n int, wide bool) IPACL {
	a := mkACL(uuid)
	seen := make(map[netip.Prefix]bool)
	for len(a.Entries) < n {
		var p netip.Prefix
		switch x := r.IntN(10); {
		case x < 5: // hosts and small blocks in a few crowded /16s
			b := [4]byte{198, byte(18 + r.IntN(2)), byte(r.IntN(256)), byte(r.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom4(b), 20+r.IntN(13)).Masked()
		case x < 7 && wide: // anywhere, any length
			b := [4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom4(b), 1+r.IntN(32)).Masked()
		default:
			var b [16]byte
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			bits := 1 + r.IntN(128)
			if !wide || r.IntN(2) == 0 {
				b[0], b[1] = 0x20, 0x01 // crowd one bucket
				bits = 16 + r.IntN(113)
			}
			p = netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
		}
		if p.Bits() == 0 || seen[p] {
			continue
		}
		seen[p] = true
		a.Entries = append(a.Entries, Entry{ID: fmt.Sprintf("%s-%d", uuid, len(a.Entries)),
			IPAddress: CanonicalString(p), Enabled: r.IntN(8) > 0})
	}
	return a
}

// flatProbes returns addresses around every prefix of the table and every bucket edge
// they touch, plus random ones.
func flatProbes(r *rand.Rand, s *Snapshot) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() {
			out = append(out, a, a.Prev(), a.Next())
		}
	}
	for p := range s.table.All() {
		add(p.Addr())
		add(netipLast(p))
		add(randAddrIn(r, p))
		edge := netip.PrefixFrom(p.Addr(), bucketBits).Masked()
		add(edge.Addr())
		add(netipLast(edge))
	}
	for range 2000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		out = append(out, netip.AddrFrom16(b), netip.AddrFrom4([4]byte(b[:4])))
	}
	return append(out, netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"),
		netip.IPv6Unspecified(), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
}

// checkFlat checks that the flat index of s answers exactly what its table does at every
// probe, and that its chunks are well formed.
func checkFlat(t testing.TB, s *Snapshot, probes []netip.Addr) {
	t.Helper()
	for _, a := range probes {
		trunk, p := s.flat.find(s.table, a)
		v, _ := s.table.Lookup(a)
		if p != v || trunk != soleTrunk(v) {
			t.Fatalf("flat index at %s: trunk %d value %p, table has %p (%v)", a, trunk, p, v, v)
		}
	}
	checkChunks(t, &fam4, &s.flat.v4)
	checkChunks(t, &fam6, &s.flat.v6)
}

func checkChunks[E any](t testing.TB, f *family[E], ff *flatFamily[E]) {
	t.Helper()
	if len(ff.segs) > maxSegments {
		t.Fatalf("%d segments", len(ff.segs))
	}
	live := 0
	for b := uint32(0); b < 1<<bucketBits; b++ {
		off := ff.offset(b)
		if off == 0 {
			continue
		}
		c := ff.chunk(f, off)
		live += len(c)
		if len(c) == 0 {
			t.Fatalf("bucket %d: empty chunk", b)
		}
		// The entries after the first start inside the bucket, in increasing order.
		var prev u128
		for i := 1; i < len(c); i++ {
			var start u128
			switch e := any(c[i]).(type) {
			case ent4:
				start = u128{0, uint64(e.start)}
			case ent6:
				start = u128{e.hi, e.lo}
			}
			if f.bucket(start) != b || (i > 1 && !prev.less(start)) || !f.first(b).less(start) {
				t.Fatalf("bucket %d: entry %d starts at %x after %x", b, i, start, prev)
			}
			prev = start
		}
	}
	if live != ff.live {
		t.Fatalf("live = %d, the directory refers to %d entries", ff.live, live)
	}
}

func wideDataset(r *rand.Rand, acls, entries int) *Dataset {
	ds := &Dataset{Version: 1}
	for i := range acls {
		uuid := fmt.Sprintf("acl-%02d", i)
		ds.ACLs = append(ds.ACLs, wideACL(r, uuid, 1+r.IntN(entries)))
		ds.Trunks = append(ds.Trunks, mkTrunk(TrunkID(fmt.Sprintf("t%02d", i)), uuid))
		if i%3 == 0 { // shared ACLs: ranges accepted by several trunks
			ds.Trunks = append(ds.Trunks, mkTrunk(TrunkID(fmt.Sprintf("t%02d-b", i)), uuid))
		}
	}
	return ds
}

func TestFlatIndexMatchesTable(t *testing.T) {
	for seed := range uint64(workload(20)) {
		r := rand.New(rand.NewPCG(seed, 7))
		s := mustCompile(t, wideDataset(r, 1+r.IntN(20), 200))
		checkFlat(t, s, flatProbes(r, s))
	}
}

// TestFlatIndexIncremental applies a long chain of ACL changes, so that segments pile up
// and get compacted and short prefixes take the rebuild path, and derives siblings from
// one parent: every snapshot, old or new, keeps answering like its own table.
func TestFlatIndexIncremental(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 8))
	ds := wideDataset(r, 12, 60)
	s := mustCompile(t, ds)
	var keep []*Snapshot
	compactions := 0
	for step := range workload(300) {
		wide := r.IntN(20) == 0 // a short prefix rebuilds the index from scratch
		a := randFlatACL(r, fmt.Sprintf("acl-%02d", r.IntN(12)), r.IntN(30), wide)
		ns, err := s.WithACL(a, uint64(step+2))
		if err != nil {
			t.Fatal(err)
		}
		if !wide && len(ns.flat.v4.segs)+len(ns.flat.v6.segs) < len(s.flat.v4.segs)+len(s.flat.v6.segs) {
			compactions++
		}
		if step%7 == 0 { // a sibling of ns, from the same parent
			sib, err := s.WithACL(randFlatACL(r, a.UUID, 5, false), uint64(step+2))
			if err != nil {
				t.Fatal(err)
			}
			checkFlat(t, sib, flatProbes(r, sib))
		}
		checkFlat(t, ns, flatProbes(r, ns))
		if step%50 == 0 {
			keep = append(keep, ns)
		}
		s = ns
	}
	for _, old := range keep {
		checkFlat(t, old, flatProbes(r, old))
	}
	t.Logf("%d compactions", compactions)
	if !testing.Short() && compactions == 0 {
		t.Error("no compaction in the chain: the test does not reach that path")
	}
}

func TestFlatIndexAllocatesNothing(t *testing.T) {
	s := mustCompile(t, wideDataset(rand.New(rand.NewPCG(3, 9)), 10, 100))
	addrs := flatProbes(rand.New(rand.NewPCG(3, 10)), s)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		s.flat.find(s.table, addrs[i%len(addrs)])
		i++
	}); n != 0 {
		t.Fatalf("find allocates %.1f times", n)
	}
}
