package sip

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// digestFor answers a fresh challenge of auth for src with user/password.
// The answer's uri is sip:service@127.0.0.1:5060, the Request-URI of most cases here.
func digestFor(t testing.TB, a *authenticator, src netip.Addr, alg, user, password string, nc int) string {
	t.Helper()
	return digestForURI(t, a, src, alg, user, password, nc, "sip:service@127.0.0.1:5060")
}

// digestForURI is digestFor with the answer's uri.
func digestForURI(t testing.TB, a *authenticator, src netip.Addr, alg, user, password string, nc int, uri string) string {
	t.Helper()
	chal := challengeValue(a.realm, a.newNonce(src), alg, false)
	return "Proxy-Authorization: " + answerChallenge(t, chal, "INVITE", uri, user, password, nc, "c0ffee")
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
	shared := mustCompile(t, func() *acl.Dataset {
		ds := testDataset("sip:127.0.0.1:5080")
		ds.Trunks = append(ds.Trunks, acl.Trunk{ID: "t7", Name: "t7", Status: acl.TrunkEnabled, CredentialUUID: "cred-1"})
		return ds
	}())
	inbound := mustCompile(t, func() *acl.Dataset {
		ds := testDataset("sip:127.0.0.1:5080")
		ds.Trunks = append(ds.Trunks, acl.Trunk{ID: "in", Name: "in", Status: acl.TrunkEnabled, Direction: acl.DirectionInbound,
			Domain: "in.example.org", ACLUUID: "acl-pbx"})
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
		code    int
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
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "digest SHA-256, no trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestSHA256, testUser, testPassword, 1)),
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "digest, no trunk, the credential's only trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "u5", "pw-u5", 1)),
			verdict: acl.VerdictAllowDigest, trunk: "t5", digest: digestOK, user: "u5"},
		{name: "digest, no trunk, the credential's only trunk is disabled", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "u6", "pw-u6", 1)),
			verdict: acl.VerdictTrunkDisabled, trunk: "t6", digest: digestOK, user: "u6"},
		{name: "digest, no trunk, a credential no trunk uses: 403", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "other", "other-pass", 1)),
			verdict: acl.VerdictNoCredential, digest: digestOK, user: "other", reason: "credential takes no single trunk's calls"},
		{name: "digest, no trunk, a credential two trunks take calls with: 403", pol: shared, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1)),
			verdict: acl.VerdictNoCredential, digest: digestOK, user: testUser, reason: "credential takes no single trunk's calls"},
		{name: "digest uri is another number: not this request's answer", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:+19005550199@t1.example.org", digestForURI(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1, "sip:100@t1.example.org")),
			verdict: acl.VerdictChallenge, trunk: "t1", digest: digestWrongURI, user: testUser, algs: defAlgs},
		{name: "digest uri equal after normalisation", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t1.example.org", digestForURI(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1, "SIP:100@T1.Example.org:5060")),
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "digest answer in MD5, the credential's trunk is SHA-256 only: asked again in SHA-256", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestMD5, "shauser", testPassword, 1)),
			verdict: acl.VerdictChallenge, trunk: "t4", digest: digestOK, user: "shauser", algs: []string{acl.DigestSHA256}},
		{name: "digest answer in SHA-256 for the SHA-256-only trunk found by credential", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:service@127.0.0.1:5060", digestFor(t, auth, unlisted, acl.DigestSHA256, "shauser", testPassword, 1)),
			verdict: acl.VerdictAllowDigest, trunk: "t4", digest: digestOK, user: "shauser"},
		{name: "digest on trunk domain", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t1.example.org", digestForURI(t, auth, unlisted, acl.DigestMD5, testUser, testPassword, 1, "sip:100@t1.example.org")),
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "trunk accepts only its own credential", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t1.example.org", digestForURI(t, auth, unlisted, acl.DigestMD5, "other", "other-pass", 1, "sip:100@t1.example.org")),
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
			verdict: acl.VerdictAllowDigest, trunk: "t1", digest: digestOK, user: testUser},
		{name: "replay, second use", pol: snap, src: unlisted, raw: rawRequest("INVITE", "sip:service@127.0.0.1:5060", replayed),
			verdict: acl.VerdictChallenge, digest: digestReplay, algs: defAlgs, user: testUser},
		{name: "algorithm not offered by the trunk", pol: snap, src: unlisted,
			raw:     rawRequest("INVITE", "sip:100@t4.example.org", digestForURI(t, auth, unlisted, acl.DigestMD5, "shauser", testPassword, 1, "sip:100@t4.example.org")),
			verdict: acl.VerdictChallenge, trunk: "t4", digest: digestUnsupported, algs: []string{acl.DigestSHA256}, user: "shauser"},
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
		{name: "sip version", pol: snap, src: listed, raw: replace(rawRequest("INVITE", "sip:100@t1.example.org"), "SIP/2.0\r\nVia", "SIP/3.0\r\nVia"), verdict: acl.VerdictMalformed, reason: "Unsupported SIP Version"},
		{name: "duplicate call-id", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org", "Call-ID: second"), verdict: acl.VerdictMalformed, reason: "Missing or Repeated Call-ID"},
		{name: "inbound-only trunk", pol: inbound, src: listed, raw: rawRequest("INVITE", "sip:1@in.example.org"), verdict: acl.VerdictTrunkDisabled, trunk: "in"},
		{name: "tel uri: 416", pol: snap, src: listed, raw: rawRequest("INVITE", "tel:+4930123"), verdict: acl.VerdictMalformed, reason: "Unsupported URI Scheme", code: 416},
		{name: "Date in GMT passes", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org", "Date: Thu, 21 Feb 2002 13:02:03 GMT"), verdict: acl.VerdictAllowIP, trunk: "t1"},
		{name: "Date not in GMT: 400", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org", "Date: Thu, 21 Feb 2002 13:02:03 PST"), verdict: acl.VerdictMalformed, reason: "Date Not In GMT", code: 400},
		{name: "Date unparsable: 400", pol: snap, src: listed, raw: rawRequest("INVITE", "sip:100@t1.example.org", "Date: yesterday GMT"), verdict: acl.VerdictMalformed, reason: "Bad Date", code: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, tc.raw, netip.AddrPortFrom(tc.src, 5099).String())
			d := decide(tc.pol, netip.AddrPortFrom(tc.src, 5099), req, auth, defAlgs)
			if d.Verdict != tc.verdict {
				t.Fatalf("verdict %v, want %v (digest %v, reason %q)", d.Verdict, tc.verdict, d.Digest, d.reason)
			}
			if tc.code != 0 && d.code != tc.code {
				t.Errorf("code %d, want %d", d.code, tc.code)
			}
			if d.trunkID() != tc.trunk {
				t.Errorf("trunk %q, want %q", d.trunkID(), tc.trunk)
			}
			if d.Digest != tc.digest {
				t.Errorf("digest %v, want %v", d.Digest, tc.digest)
			}
			if tc.algs != nil && strings.Join(d.Algorithms, ",") != strings.Join(tc.algs, ",") {
				t.Errorf("algorithms %v, want %v", d.Algorithms, tc.algs)
			}
			if d.reason != tc.reason {
				t.Errorf("reason %q, want %q", d.reason, tc.reason)
			}
			if d.User != tc.user {
				t.Errorf("user %q, want %q", d.User, tc.user)
			}
			if (d.Verdict == acl.VerdictAllowDigest) != (d.Credential != nil) {
				t.Errorf("credential %v with verdict %v", d.Credential, d.Verdict)
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
				v = decide(snap, src, req, auth, algs).Verdict
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
