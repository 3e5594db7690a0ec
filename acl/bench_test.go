package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
)

// benchSet is a realistic large data set: n prefixes spread over min(n, 10000) trunks,
// each trunk with its own ACL; mostly IPv4 hosts and small blocks, some IPv6.
type benchSet struct {
	ds    *Dataset
	addrs []netip.Addr // half inside some entry, half random; len is a power of two
	owner []TrunkID    // per address: the trunk whose entry it was drawn from ("" for random ones)
	ids   []TrunkID
	repl  []IPACL // replacement ACLs for BenchmarkApplyOne, one trunk's ACL each
}

func randBenchPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(5) > 0 {
		a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		bits := 32
		switch x := r.IntN(10); {
		case x < 3:
			bits = 24 + r.IntN(8)
		case x < 4:
			bits = 16 + r.IntN(8)
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	var b [16]byte
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	b[0] = 0x20 | b[0]&0x1f // 2000::/3
	bits := 128
	if r.IntN(2) == 0 {
		bits = 48 + r.IntN(80)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
}

func benchACL(r *rand.Rand, uuid string, n int) IPACL {
	a := IPACL{UUID: uuid, Account: "MA1", Name: uuid, Entries: make([]Entry, 0, n)}
	seen := make(map[netip.Prefix]bool, n)
	for len(a.Entries) < n {
		p := randBenchPrefix(r)
		if seen[p] {
			continue
		}
		seen[p] = true
		a.Entries = append(a.Entries, Entry{ID: fmt.Sprintf("%s-%d", uuid, len(a.Entries)), IPAddress: CanonicalString(p), Enabled: true})
	}
	return a
}

func newBenchSet(n int) *benchSet {
	r := rand.New(rand.NewPCG(uint64(n), 5060))
	trunks := min(n, 10000)
	per := n / trunks
	bs := &benchSet{ds: &Dataset{Version: 1}}
	var prefixes []netip.Prefix
	var prefixTrunk []TrunkID
	for i := range trunks {
		uuid := fmt.Sprintf("acl-%05d", i)
		a := benchACL(r, uuid, per)
		for _, e := range a.Entries {
			prefixes = append(prefixes, netip.MustParsePrefix(e.IPAddress+suffix(e.IPAddress)))
			prefixTrunk = append(prefixTrunk, TrunkID(fmt.Sprintf("trunk-%05d", i)))
		}
		bs.ds.ACLs = append(bs.ds.ACLs, a)
		id := TrunkID(fmt.Sprintf("trunk-%05d", i))
		bs.ds.Trunks = append(bs.ds.Trunks, Trunk{ID: id, Account: "MA1", Status: TrunkEnabled,
			Domain: string(id) + ".example.org", ACLUUID: uuid})
		bs.ids = append(bs.ids, id)
	}
	for range 4096 {
		if r.IntN(2) == 0 {
			k := r.IntN(len(prefixes))
			bs.addrs = append(bs.addrs, randAddrIn(r, prefixes[k]))
			bs.owner = append(bs.owner, prefixTrunk[k])
		} else {
			bs.owner = append(bs.owner, bs.ids[r.IntN(len(bs.ids))])
			a := randBenchPrefix(r).Addr()
			bs.addrs = append(bs.addrs, randAddrIn(r, netip.PrefixFrom(a, 0)))
		}
	}
	for range 64 {
		bs.repl = append(bs.repl, benchACL(r, fmt.Sprintf("acl-%05d", r.IntN(trunks)), per))
	}
	return bs
}

// suffix makes a bare canonical address parseable by netip.ParsePrefix.
func suffix(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return ""
		}
	}
	if netip.MustParseAddr(s).Is4() {
		return "/32"
	}
	return "/128"
}

var benchSizes = []int{10, 1000, 100000}

var sinkBool bool

// BenchmarkMatch measures the per-INVITE source check of the SIP path (sip.decide), which
// walks the table once: half the requests name their trunk by Request-URI domain and are
// checked with Allows; the other half find their trunk by source with MatchSource, whose
// answer already means "allowed by IP". Addresses mix hits and misses, IPv4 and IPv6.
func BenchmarkMatch(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			bs := newBenchSet(n)
			s := mustCompile(b, bs.ds)
			mask := len(bs.addrs) - 1
			hits := 0
			i := 0
			runtime.GC() // not while measuring: the set-up leaves garbage behind
			b.ReportAllocs()
			for b.Loop() {
				a := bs.addrs[i&mask]
				var ok bool
				if i&1 == 0 {
					ok = s.Allows(bs.owner[i&mask], a) // the PBX names its own trunk's domain
				} else {
					_, ok = s.MatchSource(a)
				}
				if ok {
					hits++
				}
				i++
			}
			sinkBool = hits > 0
			b.ReportMetric(float64(hits)/float64(i), "hit-ratio")
		})
	}
}

// BenchmarkApplyOne replaces one trunk's ACL in a 100k-prefix snapshot.
func BenchmarkApplyOne(b *testing.B) {
	const n = 100000
	b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
		bs := newBenchSet(n)
		s := mustCompile(b, bs.ds)
		i := 0
		runtime.GC()
		b.ReportAllocs()
		for b.Loop() {
			ns, err := s.WithACL(bs.repl[i%len(bs.repl)], uint64(i+2))
			if err != nil || ns == nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkCompile builds a 100k-prefix snapshot from scratch and reports the heap it
// holds (heap-MiB).
func BenchmarkCompile(b *testing.B) {
	const n = 100000
	b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
		bs := newBenchSet(n)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(bs.ds); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(snapshotHeapMiB(b, bs.ds), "heap-MiB")
	})
}

// snapshotHeapMiB is the live heap a compiled snapshot of ds holds.
func snapshotHeapMiB(tb testing.TB, ds *Dataset) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := mustCompile(tb, ds)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	runtime.KeepAlive(ds) // else its collection hides the snapshot's growth
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)
}

func TestSnapshotHeap(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a 100k-prefix snapshot; the race detector distorts the heap")
	}
	mib := snapshotHeapMiB(t, newBenchSet(100000).ds)
	t.Logf("a 100k-prefix snapshot over 10k trunks holds %.1f MiB of heap", mib)
	if mib > 64 {
		t.Errorf("snapshot holds %.1f MiB, want < 64", mib)
	}
}

// BenchmarkMatchCrowded is the flat index's worst case: every entry in one /16 (IPv4) or
// one /16 of IPv6, so a lookup searches one long chunk by halves instead of scanning a
// short one.
func BenchmarkMatchCrowded(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(uint64(n), 16))
			a := IPACL{UUID: "crowd", Account: "MA1"}
			seen := make(map[netip.Prefix]bool)
			var addrs []netip.Addr
			for len(a.Entries) < n {
				var p netip.Prefix
				if r.IntN(5) > 0 {
					p = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(256)), byte(r.IntN(256))}), 28+r.IntN(5)).Masked()
				} else {
					var v [16]byte
					for i := range v {
						v[i] = byte(r.IntN(256))
					}
					v[0], v[1], v[2], v[3] = 0x20, 0x01, 0x0d, 0xb8
					p = netip.PrefixFrom(netip.AddrFrom16(v), 48+r.IntN(81)).Masked()
				}
				if seen[p] {
					continue
				}
				seen[p] = true
				a.Entries = append(a.Entries, Entry{ID: fmt.Sprint(len(a.Entries)), IPAddress: CanonicalString(p), Enabled: true})
				addrs = append(addrs, randAddrIn(r, p), randAddrIn(r, netip.PrefixFrom(p.Addr(), 16).Masked()))
			}
			s := mustCompile(b, &Dataset{ACLs: []IPACL{a}, Trunks: []Trunk{mkTrunk("t", "crowd")}})
			hits, i := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.MatchSource(addrs[i%len(addrs)]); ok {
					hits++
				}
				i++
			}
			sinkBool = hits > 0
		})
	}
}
