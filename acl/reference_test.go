package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// reference is the slow, obviously correct model of a snapshot: a linear scan over the
// data set. It shares only ValidateACL with the code under test (tested on its own).
type reference struct {
	trunks []Trunk // sorted by id
	byID   map[TrunkID]*Trunk
	acls   map[string]refACL
}

type refACL struct {
	valid   bool
	enabled []netip.Prefix
}

func newReference(ds *Dataset) *reference {
	r := &reference{trunks: slices.Clone(ds.Trunks), byID: make(map[TrunkID]*Trunk), acls: make(map[string]refACL)}
	slices.SortFunc(r.trunks, func(a, b Trunk) int { return strings.Compare(string(a.ID), string(b.ID)) })
	for i := range r.trunks {
		r.byID[r.trunks[i].ID] = &r.trunks[i]
	}
	count := make(map[string]int)
	for _, a := range ds.ACLs {
		count[a.UUID]++
	}
	for _, a := range ds.ACLs {
		ra := refACL{}
		if _, err := ValidateACL(&a); err == nil && count[a.UUID] == 1 {
			ra.valid = true
			for _, e := range a.Entries {
				if !e.Enabled {
					continue
				}
				p, err := netip.ParsePrefix(e.IPAddress)
				if err != nil {
					ip := netip.MustParseAddr(e.IPAddress)
					p = netip.PrefixFrom(ip, ip.BitLen())
				}
				ra.enabled = append(ra.enabled, p)
			}
		}
		r.acls[a.UUID] = ra
	}
	return r
}

func refNormal(src netip.Addr) netip.Addr { return src.Unmap().WithZone("") }

// inACL reports whether src is in an enabled entry of the valid ACL uuid.
func (r *reference) inACL(uuid string, src netip.Addr) bool {
	a, ok := r.acls[uuid]
	if !ok || !a.valid {
		return false
	}
	src = refNormal(src)
	for _, p := range a.enabled {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (r *reference) allows(id TrunkID, src netip.Addr) bool {
	t, ok := r.byID[id]
	return ok && t.Status == TrunkEnabled && t.ACLUUID != "" && r.inACL(t.ACLUUID, src)
}

func (r *reference) accepting(src netip.Addr) []TrunkID {
	var out []TrunkID
	for _, t := range r.trunks {
		if r.allows(t.ID, src) {
			out = append(out, t.ID)
		}
	}
	return out
}

func (r *reference) listed(src netip.Addr) bool {
	for _, t := range r.trunks {
		if t.ACLUUID != "" && r.inACL(t.ACLUUID, src) {
			return true
		}
	}
	return false
}

// checkAgainstReference compares every query on every address with the reference.
func checkAgainstReference(t testing.TB, s *Snapshot, ref *reference, addrs []netip.Addr) {
	t.Helper()
	ids := make([]TrunkID, 0, len(ref.trunks)+1)
	for _, tr := range ref.trunks {
		ids = append(ids, tr.ID)
	}
	ids = append(ids, "no-such-trunk")
	fails := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		if fails++; fails > 20 {
			t.Fatalf("too many differences")
		}
	}
	var got []TrunkID
	for _, a := range addrs {
		want := ref.accepting(a)
		got = s.AcceptingTrunks(a, got[:0])
		if !slices.Equal(got, want) {
			fail("AcceptingTrunks(%v) = %q, want %q", a, got, want)
		}
		id, ok := s.MatchSource(a)
		if wantOK := len(want) == 1; ok != wantOK || (ok && id != want[0]) {
			fail("MatchSource(%v) = %q, %v; want one of %q", a, id, ok, want)
		}
		if got, want := s.Listed(a), ref.listed(a); got != want {
			fail("Listed(%v) = %v, want %v", a, got, want)
		}
		for _, tr := range ids {
			if got, want := s.Allows(tr, a), ref.allows(tr, a); got != want {
				fail("Allows(%s, %v) = %v, want %v", tr, a, got, want)
			}
		}
	}
}

// --- random data sets -------------------------------------------------------------------

// randPrefix draws from a small address space so that nesting, sharing and duplicates
// are frequent: 10.0-3.0-3.x/8-32 and 2001:db8:0-3::0-3:x/32-128.
func randPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(4) > 0 {
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(256))})
		bits := 32 - r.IntN(25)
		if r.IntN(2) == 0 {
			bits = 32
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	var b [16]byte
	b[0], b[1], b[2], b[3], b[5] = 0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4))
	b[13], b[15] = byte(r.IntN(4)), byte(r.IntN(256))
	bits := 128 - r.IntN(97)
	if r.IntN(2) == 0 {
		bits = 128
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
}

// randAddrIn returns a random address inside p.
func randAddrIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if r.IntN(2) == 0 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randAddrs returns n addresses: inside the given prefixes, around them, in the small
// space, and in the forms a socket can hand over (IPv4-mapped, with a zone).
func randAddrs(r *rand.Rand, n int, prefixes []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, n+1)
	out = append(out, netip.Addr{})
	for len(out) < n {
		var a netip.Addr
		switch x := r.IntN(8); {
		case x < 3 && len(prefixes) > 0:
			a = randAddrIn(r, prefixes[r.IntN(len(prefixes))])
		case x < 4 && len(prefixes) > 0:
			p := prefixes[r.IntN(len(prefixes))]
			a = p.Addr().Prev()
			if r.IntN(2) == 0 {
				a = netipLast(p).Next()
			}
			if !a.IsValid() {
				continue
			}
		default:
			a = randAddrIn(r, randPrefix(r))
		}
		switch r.IntN(10) {
		case 0:
			if a.Is4() {
				a = netip.AddrFrom16(a.As16())
			}
		case 1:
			if a.Is6() {
				a = a.WithZone("eth0")
			}
		}
		out = append(out, a)
	}
	return out
}

func netipLast(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randACL returns an ACL of up to max entries; about one in ten is invalid when allowed.
func randACL(r *rand.Rand, uuid string, max int, allowInvalid bool) IPACL {
	a := mkACL(uuid)
	seen := make(map[netip.Prefix]bool)
	for n := r.IntN(max + 1); len(a.Entries) < n; {
		p := randPrefix(r)
		if seen[p] {
			if len(seen) > 40 {
				break
			}
			continue
		}
		seen[p] = true
		a.Entries = append(a.Entries, Entry{ID: fmt.Sprintf("%s-e%d", uuid, len(a.Entries)),
			IPAddress: CanonicalString(p), Enabled: r.IntN(7) > 0, CreatedAt: testTime, UpdatedAt: testTime})
	}
	if allowInvalid && len(a.Entries) > 0 && r.IntN(10) == 0 {
		e := &a.Entries[r.IntN(len(a.Entries))]
		if r.IntN(2) == 0 {
			e.IPAddress += "/" + fmt.Sprint(netip.MustParseAddr(strings.Split(e.IPAddress, "/")[0]).BitLen()) // non-canonical
			if strings.Count(e.IPAddress, "/") > 1 {
				e.IPAddress = "garbage"
			}
		} else {
			a.Entries = append(a.Entries, Entry{ID: "dup", IPAddress: a.Entries[0].IPAddress, Enabled: true})
		}
	}
	return a
}

// randDataset builds a data set with shared, nested, missing, invalid and unused ACLs,
// disabled trunks and disabled entries.
func randDataset(r *rand.Rand, trunks, acls, maxEntries int) *Dataset {
	ds := &Dataset{Version: 1}
	for i := range acls {
		ds.ACLs = append(ds.ACLs, randACL(r, fmt.Sprintf("acl-%03d", i), maxEntries, true))
	}
	if acls > 2 && r.IntN(2) == 0 {
		ds.ACLs = append(ds.ACLs, randACL(r, ds.ACLs[0].UUID, maxEntries, false)) // duplicate uuid
	}
	for i := range trunks {
		tr := mkTrunk(TrunkID(fmt.Sprintf("t%03d", i)), "")
		switch x := r.IntN(10); {
		case x < 7 && acls > 0:
			tr.ACLUUID = fmt.Sprintf("acl-%03d", r.IntN(acls))
		case x < 8:
			tr.ACLUUID = fmt.Sprintf("acl-missing-%d", r.IntN(3))
		}
		if r.IntN(5) == 0 {
			tr.Status = TrunkDisabled
		}
		ds.Trunks = append(ds.Trunks, tr)
	}
	r.Shuffle(len(ds.Trunks), func(i, j int) { ds.Trunks[i], ds.Trunks[j] = ds.Trunks[j], ds.Trunks[i] })
	return ds
}

func datasetPrefixes(ds *Dataset) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range ds.ACLs {
		for _, e := range a.Entries {
			if p, err := ParsePrefix(e.IPAddress); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// withACLInDataset returns a copy of ds in which every ACL a.UUID is replaced by a.
func withACLInDataset(ds *Dataset, a IPACL, version uint64) *Dataset {
	out := *ds
	out.Version = version
	out.ACLs = slices.DeleteFunc(slices.Clone(ds.ACLs), func(x IPACL) bool { return x.UUID == a.UUID })
	out.ACLs = append(out.ACLs, a)
	return &out
}

// workload scales a count for -short and for the race detector.
func workload(n int) int {
	switch {
	case testing.Short():
		return max(n/10, 1)
	case raceEnabled:
		return max(n/4, 1)
	}
	return n
}

func TestSnapshotVsReference(t *testing.T) {
	for _, size := range []struct{ trunks, acls, entries int }{
		{3, 2, 4}, {20, 10, 8}, {60, 30, 30}, {40, 60, 3},
	} {
		t.Run(fmt.Sprintf("trunks=%d,acls=%d,entries=%d", size.trunks, size.acls, size.entries), func(t *testing.T) {
			for seed := range uint64(workload(20)) {
				r := rand.New(rand.NewPCG(seed, 1))
				ds := randDataset(r, size.trunks, size.acls, size.entries)
				s := mustCompile(t, ds)
				checkAgainstReference(t, s, newReference(ds), randAddrs(r, workload(2000), datasetPrefixes(ds)))
			}
		})
	}
}

func TestWithACLVsCompileAndReference(t *testing.T) {
	for seed := range uint64(workload(8)) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 2))
			ds := randDataset(r, 30, 15, 20)
			s := mustCompile(t, ds)
			ref := newReference(ds)
			for step := range workload(60) {
				var uuid string
				switch x := r.IntN(10); {
				case x < 7:
					uuid = ds.ACLs[r.IntN(len(ds.ACLs))].UUID
				case x < 9:
					uuid = fmt.Sprintf("acl-missing-%d", r.IntN(3))
				default:
					uuid = fmt.Sprintf("acl-new-%d", step)
				}
				a := randACL(r, uuid, 1+r.IntN(40), false)
				version := uint64(step + 2)
				ns, err := s.WithACL(a, version)
				if err != nil {
					t.Fatalf("step %d: WithACL(%s): %v", step, uuid, err)
				}
				nds := withACLInDataset(ds, a, version)
				nref := newReference(nds)
				addrs := randAddrs(r, workload(300), append(datasetPrefixes(ds), datasetPrefixes(nds)...))
				checkSameSnapshot(t, ns, mustCompile(t, nds))
				checkAgainstReference(t, ns, nref, addrs)
				checkAgainstReference(t, s, ref, addrs) // the old snapshot is untouched
				if t.Failed() {
					t.Fatalf("step %d: WithACL(%s) differs", step, uuid)
				}
				s, ds, ref = ns, nds, nref
			}
		})
	}
}

// checkSameSnapshot compares two snapshots structure by structure.
func checkSameSnapshot(t testing.TB, got, want *Snapshot) {
	t.Helper()
	if got.Version() != want.Version() || got.Empty() != want.Empty() {
		t.Errorf("Version, Empty = %d, %v; want %d, %v", got.Version(), got.Empty(), want.Version(), want.Empty())
	}
	if g, w := got.Problems(), want.Problems(); !slices.Equal(g, w) {
		t.Errorf("Problems:\n got %q\nwant %q", g, w)
	}
	if len(got.trunks) != len(want.trunks) {
		t.Fatalf("%d trunks, want %d", len(got.trunks), len(want.trunks))
	}
	for i := range got.trunks {
		g, w := *got.trunks[i], *want.trunks[i]
		if (g.Credential == nil) != (w.Credential == nil) || (g.Credential != nil && *g.Credential != *w.Credential) {
			t.Errorf("trunk %s: credential %v, want %v", g.ID, g.Credential, w.Credential)
		}
		g.Credential, w.Credential = nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("trunk:\n got %+v\nwant %+v", g, w)
		}
	}
	acl := func(a *aclState) string { return fmt.Sprint(a.uuid, a.valid, a.prefixes, a.self) }
	var ga, wa []string
	for _, a := range got.acls {
		ga = append(ga, acl(a))
	}
	for _, a := range want.acls {
		wa = append(wa, acl(a))
	}
	if !slices.Equal(ga, wa) {
		t.Errorf("acls:\n got %v\nwant %v", ga, wa)
	}
	if g, w := dumpTable(got), dumpTable(want); !slices.Equal(g, w) {
		t.Errorf("table:\n got %q\nwant %q", g, w)
	}
}

// dumpTable renders the prefix table as "prefix owners → trunks" lines.
func dumpTable(s *Snapshot) []string {
	var out []string
	for p, tv := range s.table.AllSorted() {
		v := tv
		var ids []string
		for _, i := range v.trunks {
			ids = append(ids, string(s.trunks[i].ID))
		}
		out = append(out, fmt.Sprintf("%s %v → %v", p, v.owners, ids))
	}
	return out
}
