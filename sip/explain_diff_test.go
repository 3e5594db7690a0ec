package sip

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// TestExplainAgreesWithTheLivePath: over random data sets and sources, what Explain says
// of an INVITE without Proxy-Authorization addressed to a trunk's domain is what the SIP
// path decides for that very INVITE (DESIGN §4: one decision), including which entry let
// the source in.
func TestExplainAgreesWithTheLivePath(t *testing.T) {
	rounds, sources := 40, 200
	if testing.Short() {
		rounds = 5
	}
	auth := newAuthenticator(testRealm, time.Minute, testKey)
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		ds := randomDataset(rng)
		snap, err := acl.Compile(ds)
		if err != nil {
			t.Fatalf("round %d: compile: %v", round, err)
		}
		for range sources {
			src := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(256))})
			tr := ds.Trunks[rng.IntN(len(ds.Trunks))]
			if tr.Domain == "" {
				continue // reachable by source only; Explain says so, the live path has no domain to aim at
			}
			ex := snap.Explain(tr.ID, src)
			req := parseReq(t, rawRequest("INVITE", "sip:100@"+tr.Domain), netip.AddrPortFrom(src, 5060).String())
			d := decide(snap, netip.AddrPortFrom(src, 5060), req, auth, []string{acl.DigestMD5})
			if d.Verdict != ex.Verdict || d.trunkID() != tr.ID {
				t.Fatalf("round %d, trunk %s, source %s: live %v (trunk %q), Explain %v (%s)",
					round, tr.ID, src, d.Verdict, d.trunkID(), ex.Verdict, ex.Reason)
			}
			if d.Verdict == acl.VerdictAllowIP && (d.EntryID != ex.MatchedEntry.EntryID || d.EntryACL != ex.MatchedEntry.ACLUUID) {
				t.Fatalf("round %d: entry live %s/%s, Explain %s/%s", round, d.EntryACL, d.EntryID,
					ex.MatchedEntry.ACLUUID, ex.MatchedEntry.EntryID)
			}
		}
	}
}

// randomDataset makes a small data set with overlapping prefixes in 10.0.0.0/14, disabled
// entries and trunks, inbound trunks, trunks without ACL or credential or domain.
func randomDataset(rng *rand.Rand) *acl.Dataset {
	ds := &acl.Dataset{Version: 1}
	ds.Credentials = []acl.Credential{{UUID: "c1", Name: "c1", Username: "u1", Realm: testRealm,
		HA1MD5: ha1(acl.DigestMD5, "u1", testRealm, "p")}}
	for a := range 4 {
		ip := acl.IPACL{UUID: fmt.Sprintf("acl-%d", a), Name: "a"}
		for e := range 1 + rng.IntN(6) {
			bits := []int{14, 16, 20, 24, 28, 32}[rng.IntN(6)]
			addr := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(256))})
			p := netip.PrefixFrom(addr, bits).Masked()
			dup := false
			for _, x := range ip.Entries {
				if x.IPAddress == acl.CanonicalString(p) {
					dup = true
				}
			}
			if dup {
				continue
			}
			ip.Entries = append(ip.Entries, acl.Entry{ID: fmt.Sprintf("e%d-%d", a, e), IPAddress: acl.CanonicalString(p), Enabled: rng.IntN(5) != 0})
		}
		ds.ACLs = append(ds.ACLs, ip)
	}
	for i := range 6 {
		tr := acl.Trunk{ID: acl.TrunkID(fmt.Sprintf("t%d", i)), Name: "t", Status: acl.TrunkEnabled, Direction: acl.DirectionOutbound}
		if rng.IntN(5) == 0 {
			tr.Status = acl.TrunkDisabled
		}
		if rng.IntN(8) == 0 {
			tr.Direction = acl.DirectionInbound
		}
		if rng.IntN(4) != 0 {
			tr.Domain = fmt.Sprintf("t%d.example.org", i)
		}
		if rng.IntN(5) != 0 {
			tr.ACLUUID = fmt.Sprintf("acl-%d", rng.IntN(5)) // acl-4 does not exist
		}
		if rng.IntN(2) == 0 {
			tr.CredentialUUID = "c1"
		}
		ds.Trunks = append(ds.Trunks, tr)
	}
	return ds
}
