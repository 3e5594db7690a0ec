package sip

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// fakePolicy is a minimal hand-written Policy, to pin the interface contract without the
// acl compiler (e.g. a domain naming a trunk the policy then cannot return).
type fakePolicy struct {
	domains map[string]acl.TrunkID
	sources map[netip.Addr]acl.TrunkID
	trunks  map[acl.TrunkID]*acl.TrunkPolicy
	creds   map[string]*acl.Credential
}

func (f *fakePolicy) Version() uint64 { return 1 }
func (f *fakePolicy) TrunkByDomain(h string) (acl.TrunkID, bool) {
	id, ok := f.domains[strings.ToLower(h)]
	return id, ok
}
func (f *fakePolicy) MatchSource(a netip.Addr) (acl.TrunkID, bool) {
	id, ok := f.sources[a]
	return id, ok
}
func (f *fakePolicy) Trunk(id acl.TrunkID) (*acl.TrunkPolicy, bool) {
	t, ok := f.trunks[id]
	return t, ok
}
func (f *fakePolicy) Allows(id acl.TrunkID, a netip.Addr) bool {
	got, ok := f.sources[a]
	return ok && got == id
}
func (f *fakePolicy) Credential(u string) (*acl.Credential, bool) {
	c, ok := f.creds[u]
	return c, ok
}
func (f *fakePolicy) CredentialTrunk(uuid string) (*acl.TrunkPolicy, int) {
	var taking, other *acl.TrunkPolicy
	n, takes := 0, 0
	for _, t := range f.trunks {
		if t.Credential == nil || t.Credential.UUID != uuid {
			continue
		}
		n++
		if t.TakesCalls() {
			taking, takes = t, takes+1
		} else {
			other = t
		}
	}
	switch takes {
	case 0:
		return other, n
	case 1:
		return taking, n
	}
	return nil, n
}
func (f *fakePolicy) Listed(a netip.Addr) bool {
	_, ok := f.sources[a]
	return ok
}

// digestFor answers a fresh challenge of auth for src with user/password.
func digestFor(t testing.TB, a *authenticator, src netip.Addr, alg, user, password string, nc int) string {
	t.Helper()
	chal := challengeValue(a.realm, a.newNonce(src), alg, false)
	return "Proxy-Authorization: " + answerChallenge(t, chal, "INVITE", "sip:127.0.0.1:5060", user, password, nc, "c0ffee")
}

func TestDecide(t *testing.T) {
	snap := mustCompile(t, func() *acl.Dataset {
		ds := testDataset("sip:127.0.0.1:5080")
		ds.Credentials = append(ds.Credentials, acl.Credential{UUID: "cred-2", Username: "other", Realm: testRealm,
			HA1MD5: ha1(acl.DigestMD5, "other", testRealm, "other-pass"), HA1SHA256: ha1(acl.DigestSHA256, "other", testRealm, "other-pass")})
		// cred-5 and cred-6 each belong to exactly one trunk, t5 enabled and t6 disabled.
		for _, u := range []string{"u5", "u6"} {
			ds.Credentials = append(ds.Credentials, acl.Credential{UUID: "cred-" + u[1:], Username: u, Realm: testRealm,
				HA1MD5: ha1(acl.DigestMD5, u, testRealm, "pw-"+u)})
		}
		ds.Trunks = append(ds.Trunks,
			acl.Trunk{ID: "t5", Name: "t5", Status: acl.TrunkEnabled, CredentialUUID: "cred-5", UpstreamURI: "sip:127.0.0.1:5090"},
			acl.Trunk{ID: "t6", Name: "t6", Status: acl.TrunkDisabled, CredentialUUID: "cred-6"})
		return ds
	}())
	auth := newAuthenticator(testRealm, time.Minute, testKey)
	listed, unlisted := aa("127.0.0.2"), aa("127.0.0.9")
	expired := newAuthenticator(testRealm, time.Minute, testKey)
	expired.now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	otherRealm := newAuthenticator("elsewhere", time.Minute, testKey)
	defAlgs := []string{acl.DigestMD5, acl.DigestSHA256}
	replayed := digestFor(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1)

	for _, tc := range []struct {
		name    string
		pol     Policy
		src     netip.Addr
		raw     []byte
		verdict acl.Verdict
		trunk   acl.TrunkID
		digest  digestResult
		algs    []string
		reason  string
		user    string
	}{
		{name: "listed source, trunk by domain", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org"), verdict: acl.VerdictAllowIP, trunk: "t1"},
		{name: "listed source, trunk by source", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:service@127.0.0.1:5060"), verdict: acl.VerdictAllowIP, trunk: "t1"},
		{name: "domain is case-insensitive", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@T1.Example.ORG"), verdict: acl.VerdictAllowIP, trunk: "t1"},
		{name: "unlisted, no credentials", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:service@127.0.0.1:5060"), verdict: acl.VerdictChallenge, algs: defAlgs},
		{name: "unlisted on trunk domain, no credentials", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:100@t1.example.org"), verdict: acl.VerdictChallenge, trunk: "t1", algs: defAlgs},
		{name: "spoofed Via and Contact claim the listed IP", pol: snap, src: unlisted,
			raw:     spoofed(rawRequest("INVITE", "sip:service@127.0.0.1:5060", "Contact: <sip:pbx@127.0.0.2:5060>")),
			verdict: acl.VerdictChallenge, algs: defAlgs},
		{name: "disabled trunk", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t2.example.org"), verdict: acl.VerdictTrunkDisabled, trunk: "t2"},
		{name: "trunk without credential", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:100@t3.example.org"), verdict: acl.VerdictNoCredential, trunk: "t3"},
		{name: "trunk algorithm order", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:100@t4.example.org"), verdict: acl.VerdictChallenge, trunk: "t4", algs: []string{acl.DigestSHA256}},
		{name: "digest MD5, no trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictAllowDigest, digest: digestOK, user: testUser},
		{name: "digest SHA-256, no trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestSHA256, testUser, testPassword, 1)),
			verdict: acl.VerdictAllowDigest, digest: digestOK, user: testUser},
		{name: "digest, no trunk, the credential's only trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "u5", "pw-u5", 1)),
			verdict: acl.VerdictAllowDigest, trunk: "t5", digest: digestOK, user: "u5"},
		{name: "digest, no trunk, the credential's only trunk is disabled", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "u6", "pw-u6", 1)),
			verdict: acl.VerdictTrunkDisabled, trunk: "t6", digest: digestOK, user: "u6"},
		{name: "digest, no trunk, a credential no trunk uses", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "other", "other-pass", 1)),
			verdict: acl.VerdictAllowDigest, digest: digestOK, user: "other"},
		{name: "digest on trunk domain", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t1.example.org", digestFor(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "trunk accepts only its own credential", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t1.example.org", digestFor(t, auth, unlisted, acl.DigestMD5, "other", "other-pass", 1)),
			verdict: acl.VerdictAuthFailed, trunk: "t1", digest: digestFailed, user: "other"},
		{name: "wrong password", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, testUser, "wrong", 1)),
			verdict: acl.VerdictAuthFailed, digest: digestFailed, user: testUser},
		{name: "unknown user", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "nobody", testPassword, 1)),
			verdict: acl.VerdictAuthFailed, digest: digestFailed, user: "nobody"},
		{name: "nonce issued to another source", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, aa("127.0.0.8"), acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictChallenge, digest: digestBadNonce, algs: defAlgs, user: testUser},
		{name: "expired nonce, right password", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, expired, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictStale, digest: digestStale, algs: defAlgs, user: testUser},
		{name: "expired nonce, wrong password", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, expired, unlisted, acl.DigestMD5, testUser, "wrong", 1)),
			verdict: acl.VerdictAuthFailed, digest: digestFailed, user: testUser},
		{name: "replay, first use", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:service@127.0.0.1:5060", replayed),
			verdict: acl.VerdictAllowDigest, digest: digestOK, user: testUser},
		{name: "replay, second use", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:service@127.0.0.1:5060", replayed),
			verdict: acl.VerdictChallenge, digest: digestReplay, algs: defAlgs, user: testUser},
		{name: "algorithm not offered by the trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t4.example.org", digestFor(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictChallenge, trunk: "t4", digest: digestUnsupported, algs: []string{acl.DigestSHA256}, user: testUser},
		{name: "other realm", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, otherRealm, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictChallenge, digest: digestUnsupported, algs: defAlgs},
		{name: "garbage Proxy-Authorization", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", `Proxy-Authorization: Digest username="x`),
			verdict: acl.VerdictMalformed, digest: digestMalformed, reason: "Bad Proxy-Authorization"},
		{name: "digest without qop", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", `Proxy-Authorization: Digest username="pbxuser", realm="sipedge", nonce="x", uri="sip:a", response="00"`),
			verdict: acl.VerdictMalformed, digest: digestMalformed, reason: "Bad Proxy-Authorization", user: testUser},
		{name: "nc zero", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", `Proxy-Authorization: Digest username="pbxuser", realm="sipedge", nonce="x", uri="sip:a", response="00", cnonce="c", qop=auth, nc=00000000`),
			verdict: acl.VerdictMalformed, digest: digestMalformed, reason: "Bad Proxy-Authorization", user: testUser},
		{name: "no snapshot", pol: nil, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org"), verdict: acl.VerdictNotReady},
		{name: "typed nil snapshot", pol: (*acl.Snapshot)(nil), src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org"), verdict: acl.VerdictNotReady},
		{name: "max-forwards 0", pol: snap, src: listed, raw: mfZero(rawRequest("INVITE", "sip:100@t1.example.org")), verdict: acl.VerdictTooManyHops},
		{name: "missing max-forwards", pol: snap, src: listed, raw: dropLine(rawRequest("INVITE", "sip:100@t1.example.org"), "Max-Forwards"), verdict: acl.VerdictMalformed, reason: "Missing or Repeated Max-Forwards"},
		{name: "cseq method mismatch", pol: snap, src: listed, raw: replace(rawRequest("INVITE", "sip:100@t1.example.org"), "CSeq: 1 INVITE", "CSeq: 1 BYE"), verdict: acl.VerdictMalformed, reason: "CSeq Method Mismatch"},
		{name: "missing from tag", pol: snap, src: listed, raw: replace(rawRequest("INVITE", "sip:100@t1.example.org"), ";tag=fromtag1", ""), verdict: acl.VerdictMalformed, reason: "Missing From Tag"},
		{name: "tel uri", pol: snap, src: listed, raw: rawRequest("INVITE", "tel:+4930123"), verdict: acl.VerdictMalformed, reason: "Unsupported URI Scheme"},
		{name: "sip version", pol: snap, src: listed, raw: replace(rawRequest("INVITE", "sip:100@t1.example.org"), "SIP/2.0\r\nVia", "SIP/3.0\r\nVia"), verdict: acl.VerdictMalformed, reason: "Unsupported SIP Version"},
		{name: "duplicate call-id", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org", "Call-ID: second"), verdict: acl.VerdictMalformed, reason: "Missing or Repeated Call-ID"},
		{name: "inbound-only trunk", pol: &fakePolicy{
			domains: map[string]acl.TrunkID{"in.example.org": "in"},
			sources: map[netip.Addr]acl.TrunkID{listed: "in"},
			trunks:  map[acl.TrunkID]*acl.TrunkPolicy{"in": {ID: "in", Enabled: true, HasACL: true, Direction: acl.DirectionInbound}}},
			src: listed, raw: rawRequest("INVITE", "sip:1@in.example.org"), verdict: acl.VerdictTrunkDisabled, trunk: "in"},
		{name: "fake: domain names a trunk the policy lacks", pol: &fakePolicy{domains: map[string]acl.TrunkID{"ghost.example.org": "ghost"}},
			src: listed, raw: rawRequest("INVITE", "sip:100@ghost.example.org"), verdict: acl.VerdictChallenge, algs: defAlgs},
		{name: "fake: listed IP on a trunk without ACL flag stays unlisted", pol: &fakePolicy{
			sources: map[netip.Addr]acl.TrunkID{listed: "x"},
			trunks:  map[acl.TrunkID]*acl.TrunkPolicy{"x": {ID: "x", Enabled: true, HasACL: false}}},
			src: listed, raw: rawRequest("INVITE", "sip:service@127.0.0.1"), verdict: acl.VerdictNoCredential, trunk: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, tc.raw, netip.AddrPortFrom(tc.src, 5099).String())
			d := decide(tc.pol, netip.AddrPortFrom(tc.src, 5099), req, auth, defAlgs)
			if d.verdict != tc.verdict {
				t.Fatalf("verdict %v, want %v (digest %v, reason %q)", d.verdict, tc.verdict, d.digest, d.reason)
			}
			if d.trunkID() != tc.trunk {
				t.Errorf("trunk %q, want %q", d.trunkID(), tc.trunk)
			}
			if d.digest != tc.digest {
				t.Errorf("digest %v, want %v", d.digest, tc.digest)
			}
			if tc.algs != nil && strings.Join(d.algs, ",") != strings.Join(tc.algs, ",") {
				t.Errorf("algorithms %v, want %v", d.algs, tc.algs)
			}
			if d.reason != tc.reason {
				t.Errorf("reason %q, want %q", d.reason, tc.reason)
			}
			if d.user != tc.user {
				t.Errorf("user %q, want %q", d.user, tc.user)
			}
			if (d.verdict == acl.VerdictAllowDigest) != (d.cred != nil) {
				t.Errorf("credential %v with verdict %v", d.cred, d.verdict)
			}
		})
	}
}

func spoofed(raw []byte) []byte {
	return replace(raw, "Via: SIP/2.0/UDP 127.0.0.9:5099;", "Via: SIP/2.0/UDP 127.0.0.2:5060;received=127.0.0.2;rport=5060;")
}

func mfZero(raw []byte) []byte { return replace(raw, "Max-Forwards: 70", "Max-Forwards: 0") }

func replace(raw []byte, old, new string) []byte {
	return []byte(strings.Replace(string(raw), old, new, 1))
}

func dropLine(raw []byte, name string) []byte {
	lines := strings.Split(string(raw), "\r\n")
	out := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(l, name+":") {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\r\n"))
}

// Decide must not allocate much: it runs for every INVITE.
func BenchmarkDecide(b *testing.B) {
	snap := mustCompile(b, testDataset("sip:127.0.0.1:5080"))
	auth := newAuthenticator(testRealm, time.Minute, testKey)
	algs := []string{acl.DigestMD5, acl.DigestSHA256}
	for _, bc := range []struct {
		name string
		src  netip.AddrPort
		raw  []byte
	}{
		{"allow_ip", ap("127.0.0.2:5060"), rawRequest("INVITE", "sip:service@127.0.0.1:5060")},
		{"challenge", ap("127.0.0.9:5060"), rawRequest("INVITE", "sip:service@127.0.0.1:5060")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := parseReq(b, bc.raw, bc.src.String())
			b.ReportAllocs()
			for b.Loop() {
				decide(snap, bc.src, req, auth, algs)
			}
		})
	}
}

// TestDecideAllocatesNothing: from the socket source string to the verdict, the per-INVITE
// path allocates nothing, for an allowed source and for a challenged one (the decision; the
// 407 it leads to is built afterwards).
func TestDecideAllocatesNothing(t *testing.T) {
	snap := mustCompile(t, testDataset("sip:127.0.0.1:5080"))
	auth := newAuthenticator(testRealm, time.Minute, testKey)
	algs := []string{acl.DigestMD5, acl.DigestSHA256}
	for _, tc := range []struct {
		name string
		src  string
		want acl.Verdict
	}{
		{"allow_ip", "127.0.0.2:5060", acl.VerdictAllowIP},
		{"challenge", "127.0.0.9:5060", acl.VerdictChallenge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, rawRequest("INVITE", "sip:service@127.0.0.1:5060"), tc.src)
			var v acl.Verdict
			allocs := testing.AllocsPerRun(1000, func() {
				src, err := netip.ParseAddrPort(req.MessageData.Source())
				if err != nil {
					t.Fatal(err)
				}
				v = decide(snap, src, req, auth, algs).verdict
			})
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if allocs != 0 {
				t.Fatalf("%v allocations per decision, want 0", allocs)
			}
		})
	}
}

// TestValidateAddresses: From/To that sipgo could only keep as raw, scheme-less text are
// refused (they would be written back as "sip:<raw>", which the next hop cannot parse);
// tel: and sip URIs, bracketed or not, pass.
func TestValidateAddresses(t *testing.T) {
	for _, tc := range []struct{ to, want string }{
		{"To: <sip:1@t1.example.org>", ""},
		{"To: sip:1@t1.example.org", ""},
		{"To: <tel:+15551234567>", ""},
		{"To: \"Bob\" <sips:bob@example.org>;tag=x", ""},
		{"To: :0:", "Bad To"},
	} {
		raw := replace(rawRequest("INVITE", "sip:1@t1.example.org"), "To: <sip:1@t1.example.org>", tc.to)
		msg, err := sipmsg.ParseMessage(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.to, err)
		}
		if got := validateRequest(msg.(*sipmsg.Request)); got != tc.want {
			t.Errorf("%s: validateRequest = %q, want %q", tc.to, got, tc.want)
		}
	}
}
