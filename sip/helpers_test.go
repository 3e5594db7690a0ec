package sip

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/internal/testutil"
)

const (
	testRealm    = "sipedge"
	testUser     = "pbxuser"
	testPassword = "S3cure-pass-123"
	testCallee   = "service"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-test-key")

// aa and ap are netip literals for tests; they panic on bad input.
func aa(s string) netip.Addr          { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort      { return netip.MustParseAddrPort(s) }
func policyOf(p Policy) func() Policy { return func() Policy { return p } }

// testDataset is the trunk set most tests run against:
//
//	t1  enabled, domain t1.example.org, ACL 127.0.0.2, credential pbxuser, upstream given
//	t2  disabled, domain t2.example.org, credential pbxuser
//	t3  enabled, domain t3.example.org, neither ACL nor credential
//	t4  enabled, domain t4.example.org, credential pbxuser, SHA-256 only
func testDataset(upstream string) *acl.Dataset {
	return &acl.Dataset{
		Version: 7,
		ACLs: []acl.IPACL{{
			UUID: "acl-pbx", Name: "pbx",
			Entries: []acl.Entry{{ID: "e1", IPAddress: "127.0.0.2", Enabled: true}},
		}},
		Credentials: []acl.Credential{{
			UUID: "cred-1", Name: "pbx-cred", Username: testUser, Realm: testRealm,
			HA1MD5:    ha1(acl.DigestMD5, testUser, testRealm, testPassword),
			HA1SHA256: ha1(acl.DigestSHA256, testUser, testRealm, testPassword),
		}, {
			// t4's own: a credential serves one call-taking trunk (DESIGN §4 step 4).
			UUID: "cred-4", Name: "sha-cred", Username: "shauser", Realm: testRealm,
			HA1MD5:    ha1(acl.DigestMD5, "shauser", testRealm, testPassword),
			HA1SHA256: ha1(acl.DigestSHA256, "shauser", testRealm, testPassword),
		}},
		Trunks: []acl.Trunk{
			{ID: "t1", Name: "t1", Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled,
				Domain: "t1.example.org", ACLUUID: "acl-pbx", CredentialUUID: "cred-1", UpstreamURI: upstream},
			{ID: "t2", Name: "t2", Direction: acl.DirectionOutbound, Status: acl.TrunkDisabled,
				Domain: "t2.example.org", CredentialUUID: "cred-1"},
			{ID: "t3", Name: "t3", Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled,
				Domain: "t3.example.org"},
			{ID: "t4", Name: "t4", Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled,
				Domain: "t4.example.org", CredentialUUID: "cred-4", DigestAlgorithms: []string{"SHA-256"}},
		},
	}
}

func mustCompile(t testing.TB, ds *acl.Dataset) *acl.Snapshot {
	t.Helper()
	s, err := acl.Compile(ds)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return s
}

// rawRequest builds a SIP request as bytes. extra lines are added before Content-Length.
func rawRequest(method, ruri string, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	b.WriteString("Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bK-test-" + sipmsg.GenerateTagN(8) + "\r\n")
	b.WriteString("From: <sip:pbx@127.0.0.9>;tag=fromtag1\r\n")
	b.WriteString("To: <" + ruri + ">\r\n")
	b.WriteString("Call-ID: call-" + sipmsg.GenerateTagN(10) + "\r\n")
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", method)
	b.WriteString("Max-Forwards: 70\r\n")
	for _, l := range extra {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

func parseReq(t testing.TB, raw []byte, src string) *sipmsg.Request {
	t.Helper()
	m, err := sipmsg.ParseMessage(raw)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	req, ok := m.(*sipmsg.Request)
	if !ok {
		t.Fatalf("not a request")
	}
	req.SetSource(src)
	req.SetTransport("UDP")
	return req
}

// answerChallenge computes a Proxy-Authorization value for one challenge with the
// icholy/digest client (an implementation independent of ours).
func answerChallenge(t testing.TB, chalValue, method, uri, user, password string, nc int, cnonce string) string {
	t.Helper()
	chal, err := digest.ParseChallenge(chalValue)
	if err != nil {
		t.Fatalf("parse challenge %q: %v", chalValue, err)
	}
	cred, err := digest.Digest(chal, digest.Options{
		Method: method, URI: uri, Username: user, Password: password, Count: nc, Cnonce: cnonce,
	})
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return cred.String()
}

func baseConfig() Config {
	return Config{
		Listen:          "127.0.0.1:0",
		NonceKey:        testKey,
		Realm:           testRealm,
		UpstreamTimeout: 2 * time.Second,
		InviteTimeout:   5 * time.Second,
		Logger:          zerolog.Nop(),
	}
}

// startServer runs a server until the test ends.
func startServer(t testing.TB, cfg Config, policy func() Policy, opts ...Option) *Server {
	t.Helper()
	if cfg.Logger.GetLevel() == zerolog.Disabled {
		// The edge's own log is kept and shown when the test fails, so a wrong answer
		// comes with the edge's reason for it. A buffer, not t.Log: goroutines that
		// outlive the test may still write. This cleanup runs after the server's.
		var buf testutil.SyncBuffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("edge log:\n%s", buf.String())
			}
		})
		cfg.Logger = zerolog.New(&buf).Level(zerolog.DebugLevel)
	}
	s, err := New(cfg, policy, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return s
}

// eventually polls f until it is true or d passes.
func eventually(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
