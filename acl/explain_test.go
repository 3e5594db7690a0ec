package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// explainDataset is exampleDataset plus trunks for the remaining verdicts and an ACL with
// nested entries:
//
//	pbx-in       inbound trunk on acl-b
//	pbx-nodomain enabled, no trunk_domain, acl-nest (10.0.0.0/8 e0, 10.1.0.0/16 e1)
//	pbx-both     acl-nest and credential cred-2 (Bob)
//	pbx-solo     enabled, no trunk_domain, acl-solo (172.16.0.0/12), which no other trunk uses
func explainDataset() *Dataset {
	ds := exampleDataset()
	ds.ACLs = append(ds.ACLs, mkACL("acl-nest", "10.0.0.0/8", "10.1.0.0/16"), mkACL("acl-solo", "172.16.0.0/12"))
	in := mkTrunk("pbx-in", "acl-b")
	in.Direction = DirectionInbound
	nd := mkTrunk("pbx-nodomain", "acl-nest")
	nd.Domain = ""
	both := mkTrunk("pbx-both", "acl-nest")
	both.CredentialUUID = "cred-2"
	solo := mkTrunk("pbx-solo", "acl-solo")
	solo.Domain = ""
	ds.Trunks = append(ds.Trunks, in, nd, both, solo)
	return ds
}

func TestExplain(t *testing.T) {
	s := mustCompile(t, explainDataset())
	tests := []struct {
		name    string
		trunk   TrunkID
		src     string
		verdict Verdict
		entry   EntryRef // zero: none matched
		reason  string   // substring
	}{
		{"allow by IP", "pbx-a", "192.0.2.1", VerdictAllowIP, EntryRef{"acl-a", "acl-a-e0", "192.0.2.0/24"}, "inside entry acl-a-e0 (192.0.2.0/24) of IP ACL acl-a"},
		// 192.0.2.0/25.. lies in acl-b's /25 too (longest match of the table): the trunk's own entry is named.
		{"own entry under another ACL's longer match", "pbx-a", "192.0.2.200", VerdictAllowIP, EntryRef{"acl-a", "acl-a-e0", "192.0.2.0/24"}, "allowed by IP"},
		{"other trunk on the same source", "pbx-b", "192.0.2.200", VerdictAllowIP, EntryRef{"acl-b", "acl-b-e0", "192.0.2.128/25"}, ""},
		{"IPv6", "pbx-a", "2001:db8:a::99", VerdictAllowIP, EntryRef{"acl-a", "acl-a-e1", "2001:db8:a::/48"}, ""},
		{"IPv4-mapped source", "pbx-a", "::ffff:192.0.2.9", VerdictAllowIP, EntryRef{"acl-a", "acl-a-e0", "192.0.2.0/24"}, "192.0.2.9 is inside"},
		{"most specific nested entry", "pbx-both", "10.1.2.3", VerdictAllowIP, EntryRef{"acl-nest", "acl-nest-e1", "10.1.0.0/16"}, ""},
		{"covering nested entry", "pbx-both", "10.2.0.1", VerdictAllowIP, EntryRef{"acl-nest", "acl-nest-e0", "10.0.0.0/8"}, ""},
		{"disabled entry does not match", "pbx-a", "198.51.100.7", VerdictNoCredential, EntryRef{}, "in no enabled entry of IP ACL acl-a, and the trunk has no credential"},
		{"challenge", "pbx-both", "192.0.2.1", VerdictChallenge, EntryRef{}, `digest required, answered 407 for credential "Bob"`},
		{"digest-only trunk", "pbx-digest", "192.0.2.1", VerdictChallenge, EntryRef{}, "trunk pbx-digest has no IP ACL"},
		{"empty ACL", "pbx-empty", "192.0.2.1", VerdictNoCredential, EntryRef{}, "in no enabled entry of IP ACL acl-empty"},
		{"missing ACL", "pbx-missing", "192.0.2.1", VerdictNoCredential, EntryRef{}, "acl-nope of trunk pbx-missing is missing or invalid"},
		{"disabled trunk", "pbx-off", "203.0.113.99", VerdictTrunkDisabled, EntryRef{"acl-off", "acl-off-e0", "203.0.113.99"}, "is disabled"},
		{"inbound-only trunk", "pbx-in", "203.0.113.5", VerdictTrunkDisabled, EntryRef{"acl-b", "acl-b-e1", "203.0.113.5"}, "inbound only"},
		{"no domain, reached by source", "pbx-solo", "172.16.0.1", VerdictAllowIP, EntryRef{"acl-solo", "acl-solo-e0", "172.16.0.0/12"}, "allowed by IP"},
		{"no domain, source shared with another trunk", "pbx-nodomain", "10.9.9.9", VerdictNone, EntryRef{"acl-nest", "acl-nest-e0", "10.0.0.0/8"}, "no trunk_domain"},
		{"no domain, other source", "pbx-nodomain", "192.0.2.1", VerdictNone, EntryRef{}, "no trunk_domain"},
		{"unknown trunk", "nope", "192.0.2.1", VerdictNone, EntryRef{}, "not in snapshot version 7"},
		{"invalid source", "pbx-both", "", VerdictChallenge, EntryRef{}, "the invalid address is in no enabled entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src netip.Addr
			if tt.src != "" {
				src = aa(tt.src)
			}
			e := s.Explain(tt.trunk, src)
			if e.Verdict != tt.verdict || e.MatchedEntry != tt.entry || e.Matched != (tt.entry != EntryRef{}) {
				t.Errorf("Explain(%s, %s) = %s, matched %v %+v; want %s, %+v\nreason: %s",
					tt.trunk, tt.src, e.Verdict, e.Matched, e.MatchedEntry, tt.verdict, tt.entry, e.Reason)
			}
			if !strings.Contains(e.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", e.Reason, tt.reason)
			}
			if e.Version != 7 || e.Trunk != tt.trunk || e.Source != src.Unmap() {
				t.Errorf("version %d, trunk %s, source %s", e.Version, e.Trunk, e.Source)
			}
			if e.DigestRequired() != (tt.verdict == VerdictChallenge) {
				t.Errorf("DigestRequired = %v", e.DigestRequired())
			}
			// The hot-path form agrees with the explanation.
			a, id, ok := s.MatchedEntry(tt.trunk, src)
			if ok != e.Matched || a != e.MatchedEntry.ACLUUID || id != e.MatchedEntry.EntryID {
				t.Errorf("MatchedEntry = %q %q %v, explanation %+v", a, id, ok, e.MatchedEntry)
			}
		})
	}
}

func TestExplainFacts(t *testing.T) {
	s := mustCompile(t, explainDataset())
	e := s.Explain("pbx-both", aa("10.1.0.1"))
	want := Explanation{Trunk: "pbx-both", Source: aa("10.1.0.1"), Version: 7, TrunkFound: true, Account: "MA1",
		TrunkEnabled: true, Outbound: true, ACLUUID: "acl-nest", HasACL: true, HasCredential: true, CredentialUsername: "Bob",
		Matched: true, MatchedEntry: EntryRef{"acl-nest", "acl-nest-e1", "10.1.0.0/16"},
		SourceTrunk: "", CandidateTrunks: []TrunkID{"pbx-both", "pbx-nodomain"}, Verdict: VerdictAllowIP}
	e.Reason = ""
	if fmt.Sprintf("%+v", e) != fmt.Sprintf("%+v", want) {
		t.Errorf("Explain:\n got %+v\nwant %+v", e, want)
	}
	// A source only one trunk accepts is what MatchSource finds.
	if e := s.Explain("pbx-a", aa("192.0.2.1")); e.SourceTrunk != "pbx-a" || !slices.Equal(e.CandidateTrunks, []TrunkID{"pbx-a"}) {
		t.Errorf("SourceTrunk %q, candidates %v", e.SourceTrunk, e.CandidateTrunks)
	}
	// Nil snapshot: not ready.
	var nilSnap *Snapshot
	if e := nilSnap.Explain("pbx-a", aa("192.0.2.1")); e.Verdict != VerdictNotReady || e.TrunkFound || e.Version != 0 {
		t.Errorf("nil snapshot: %+v", e)
	}
	if _, _, ok := nilSnap.MatchedEntry("pbx-a", aa("192.0.2.1")); ok {
		t.Error("nil snapshot matched an entry")
	}
	if p, _ := s.Trunk("pbx-a"); p.ACLUUID != "acl-a" {
		t.Errorf("TrunkPolicy.ACLUUID = %q", p.ACLUUID)
	}
}

func TestMatchedEntryZeroAllocs(t *testing.T) {
	s := mustCompile(t, explainDataset())
	for _, tt := range []struct {
		name  string
		trunk TrunkID
		src   netip.Addr
	}{
		{"hit", "pbx-a", aa("192.0.2.200")},
		{"nested", "pbx-both", aa("10.1.2.3")},
		{"v6 zone", "pbx-a", aa("2001:db8:a::1%eth0")},
		{"mapped", "pbx-a", aa("::ffff:192.0.2.1")},
		{"miss", "pbx-a", aa("192.0.3.1")},
		{"unknown trunk", "nope", aa("192.0.2.1")},
	} {
		if got := testing.AllocsPerRun(200, func() { s.MatchedEntry(tt.trunk, tt.src) }); got != 0 {
			t.Errorf("%s: MatchedEntry allocates %v times per run", tt.name, got)
		}
	}
}

// refMatchedEntry is the linear-scan answer: the most specific enabled entry of the
// trunk's valid, uniquely named ACL holding src.
func refMatchedEntry(ds *Dataset, ref *reference, id TrunkID, src netip.Addr) (string, string, bool) {
	tr, ok := ref.byID[id]
	if !ok || tr.ACLUUID == "" || !ref.acls[tr.ACLUUID].valid {
		return "", "", false
	}
	src = refNormal(src)
	best, bestBits := "", -1
	for _, a := range ds.ACLs {
		if a.UUID != tr.ACLUUID {
			continue
		}
		for _, e := range a.Entries {
			p, err := ParsePrefix(e.IPAddress)
			if e.Enabled && err == nil && p.Contains(src) && p.Bits() > bestBits {
				best, bestBits = e.ID, p.Bits()
			}
		}
	}
	return tr.ACLUUID, best, bestBits >= 0
}

// checkMatchedEntries compares MatchedEntry and the verdicts of Explain with the
// reference for every trunk and address.
func checkMatchedEntries(t *testing.T, s *Snapshot, ds *Dataset, ref *reference, addrs []netip.Addr) {
	t.Helper()
	for _, tr := range ref.trunks {
		for _, src := range addrs {
			wa, we, wok := refMatchedEntry(ds, ref, tr.ID, src)
			ga, ge, gok := s.MatchedEntry(tr.ID, src)
			if gok != wok || (wok && (ga != wa || ge != we)) {
				t.Fatalf("MatchedEntry(%s, %s) = %q %q %v, want %q %q %v", tr.ID, src, ga, ge, gok, wa, we, wok)
			}
			e := s.Explain(tr.ID, src)
			if tr.Status == TrunkEnabled && (e.Verdict == VerdictAllowIP) != ref.allows(tr.ID, src) {
				t.Fatalf("Explain(%s, %s) = %s, reference allows = %v", tr.ID, src, e.Verdict, ref.allows(tr.ID, src))
			}
		}
	}
}

func TestMatchedEntryVsReference(t *testing.T) {
	for seed := range uint64(workload(20)) {
		r := rand.New(rand.NewPCG(seed, 8))
		ds := randDataset(r, 20, 10, 12)
		ref := newReference(ds)
		s := mustCompile(t, ds)
		addrs := randAddrs(r, workload(300), datasetPrefixes(ds))
		checkMatchedEntries(t, s, ds, ref, addrs)

		// Entry ids follow incremental updates exactly as a fresh compile sees them.
		for step := range 5 {
			uuid := fmt.Sprintf("acl-%03d", r.IntN(10))
			a := randACL(r, uuid, 12, false)
			for i := range a.Entries {
				a.Entries[i].ID = fmt.Sprintf("%s-s%d-%d", uuid, step, i)
			}
			ns, err := s.WithACL(a, uint64(step+2))
			if err != nil {
				t.Fatal(err)
			}
			nds := withACLInDataset(ds, a, uint64(step+2))
			nref := newReference(nds)
			checkMatchedEntries(t, ns, nds, nref, randAddrs(r, workload(200), datasetPrefixes(nds)))
			s, ds = ns, nds
		}
	}
}

// BenchmarkMatchedEntry is the extra cost the SIP path pays per INVITE allowed by IP to
// count the hit against its entry.
func BenchmarkMatchedEntry(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			bs := newBenchSet(n)
			s := mustCompile(b, bs.ds)
			var hits []int
			for i, a := range bs.addrs {
				if s.Allows(bs.owner[i], a) {
					hits = append(hits, i)
				}
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				k := hits[i%len(hits)]
				if _, _, ok := s.MatchedEntry(bs.owner[k], bs.addrs[k]); !ok {
					b.Fatal("allowed source matched no entry")
				}
				i++
			}
		})
	}
}

// The exported API of explain.go other packages are written against.
var (
	_ func(*Snapshot, TrunkID, netip.Addr) Explanation            = (*Snapshot).Explain
	_ func(*Snapshot, TrunkID, netip.Addr) (string, string, bool) = (*Snapshot).MatchedEntry
	_ func(HitStat, Hit) HitStat                                  = HitStat.Add
	_                                                             = Hit{Account: "", ACLUUID: "", EntryID: "", Count: 0, LastMatchedAt: testTime}
	_                                                             = TrunkPolicy{ACLUUID: ""}
)

func TestHitStatAdd(t *testing.T) {
	st := HitStat{}.Add(Hit{Count: 2, LastMatchedAt: testTime})
	st = st.Add(Hit{Count: 3, LastMatchedAt: testTime.Add(-time.Hour)}) // an older report from a slow node
	if st.Count != 5 || !st.LastMatchedAt.Equal(testTime) {
		t.Errorf("HitStat = %+v", st)
	}
}
