package sip

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/sipedge/sipedge/acl"
)

// RFC 7616 §3.9.1: the same request answered with MD5 and SHA-256.
func TestDigestResponseRFC7616Vectors(t *testing.T) {
	const (
		user   = "Mufasa"
		realm  = "http-auth@example.org"
		pass   = "Circle of Life"
		nonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
		uri    = "/dir/index.html"
	)
	for _, tc := range []struct {
		alg, want string
	}{
		{acl.DigestMD5, "8ca523f5e9506fed4657c9700eebdbec"},
		{acl.DigestSHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			got := digestResponse(tc.alg, ha1(tc.alg, user, realm, pass), nonce, "00000001", cnonce, "auth", "GET", uri)
			if string(got) != tc.want {
				t.Fatalf("response = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseDigestCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want digestCredentials
		err  bool
	}{
		{name: "rfc7616 example", in: `Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
			want: digestCredentials{Username: "Mufasa", Realm: "http-auth@example.org", URI: "/dir/index.html", Algorithm: "SHA-256",
				Nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", NC: "00000001", Cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
				QOP: "auth", Response: "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", Opaque: "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"}},
		{name: "sipp style", in: `Digest username="pbxuser",realm="sipedge",cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:127.0.0.1:5060",nonce="abc",response="0123",algorithm=MD5`,
			want: digestCredentials{Username: "pbxuser", Realm: "sipedge", Cnonce: "6b8b4567", NC: "00000001", QOP: "auth", URI: "sip:127.0.0.1:5060", Nonce: "abc", Response: "0123", Algorithm: "MD5"}},
		{name: "case and whitespace", in: "digest\tUserName = \"a\" ,\tREALM=\"r\"", want: digestCredentials{Username: "a", Realm: "r"}},
		{name: "escapes", in: `Digest username="a\"b\\c"`, want: digestCredentials{Username: `a"b\c`}},
		{name: "empty elements", in: `Digest ,username="a",, realm="r",`, want: digestCredentials{Username: "a", Realm: "r"}},
		{name: "unknown param skipped", in: `Digest foo=bar, username="a"`, want: digestCredentials{Username: "a"}},
		{name: "basic scheme", in: `Basic dXNlcjpwYXNz`, err: true},
		{name: "no space after scheme", in: `Digestusername="a"`, err: true},
		{name: "duplicate", in: `Digest username="a", username="b"`, err: true},
		{name: "unterminated", in: `Digest username="a`, err: true},
		{name: "missing comma", in: `Digest username="a" realm="r"`, err: true},
		{name: "missing value", in: `Digest username=`, err: true},
		{name: "control char", in: "Digest username=\"a\x01\"", err: true},
		{name: "escaped CR", in: "Digest username=\"a\\\r\"", err: true},
		{name: "bare key", in: `Digest username`, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDigestCredentials(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("want error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			back, err := parseDigestCredentials(got.String())
			if err != nil || back != got {
				t.Fatalf("round trip: %v\n%q\n%+v", err, got.String(), back)
			}
		})
	}
}

func TestParseDigestTooManyParams(t *testing.T) {
	var b strings.Builder
	b.WriteString("Digest ")
	for i := 0; i <= maxDigestParams; i++ {
		fmt.Fprintf(&b, "p%d=x,", i)
	}
	if _, err := parseDigestCredentials(b.String()); err == nil {
		t.Fatal("accepted more than maxDigestParams parameters")
	}
}

func TestNonce(t *testing.T) {
	a := newAuthenticator(testRealm, 10*time.Second, testKey)
	now := time.Unix(1_800_000_000, 0)
	a.now = func() time.Time { return now }
	src := aa("192.0.2.10")
	n := a.newNonce(src)

	if v, exp := a.checkNonce(n, src); !v || exp {
		t.Fatalf("fresh nonce: valid=%v expired=%v", v, exp)
	}
	if v, _ := a.checkNonce(n, aa("192.0.2.11")); v {
		t.Fatal("nonce valid for another source IP")
	}
	if v, _ := a.checkNonce(n, aa("::ffff:192.0.2.10")); !v {
		t.Fatal("mapped form of the same IP refused")
	}
	other := newAuthenticator("other-realm", 10*time.Second, testKey)
	other.now = a.now
	if v, _ := other.checkNonce(n, src); v {
		t.Fatal("nonce valid for another realm")
	}
	otherKey := newAuthenticator(testRealm, 10*time.Second, []byte("another key that is 32 bytes long!!"))
	otherKey.now = a.now
	if v, _ := otherKey.checkNonce(n, src); v {
		t.Fatal("nonce valid under another key")
	}
	// Another node with the same key (and a different configured TTL) verifies it, and the
	// TTL bound into the nonce wins.
	node2 := newAuthenticator(testRealm, time.Hour, testKey)
	node2.now = func() time.Time { return now.Add(11 * time.Second) }
	if v, exp := node2.checkNonce(n, src); !v || !exp {
		t.Fatalf("node 2 after the nonce's TTL: valid=%v expired=%v", v, exp)
	}
	now = now.Add(10 * time.Second)
	if v, exp := a.checkNonce(n, src); !v || !exp {
		t.Fatalf("after TTL: valid=%v expired=%v", v, exp)
	}
	// Tampering with any byte breaks the MAC.
	for i := range n {
		b := []byte(n)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		if v, _ := a.checkNonce(string(b), src); v {
			t.Fatalf("tampered nonce (byte %d) accepted", i)
		}
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", 38), n + "A", "!!!!"} {
		if v, _ := a.checkNonce(bad, src); v {
			t.Fatalf("nonce %q accepted", bad)
		}
	}
	// From the future (beyond clock skew): refused.
	future := newAuthenticator(testRealm, 10*time.Second, testKey)
	future.now = func() time.Time { return now.Add(time.Hour) }
	fn := future.newNonce(src)
	if v, _ := a.checkNonce(fn, src); v {
		t.Fatal("nonce from the future accepted")
	}
}

func TestNCCache(t *testing.T) {
	c := newNCCache(ncShards * 2) // two per shard
	if !c.use("n1", "c1", 1) {
		t.Fatal("first use refused")
	}
	if c.use("n1", "c1", 1) {
		t.Fatal("repeated nc accepted")
	}
	if !c.use("n1", "c1", 2) {
		t.Fatal("higher nc refused")
	}
	if c.use("n1", "c1", 1) {
		t.Fatal("lower nc accepted")
	}
	if !c.use("n1", "c2", 1) {
		t.Fatal("other cnonce refused")
	}
	// Bounded: many keys keep each shard at its capacity.
	for i := 0; i < 10000; i++ {
		c.use(fmt.Sprintf("n%d", i), "c", 1)
	}
	for i := range c.shards {
		if n := len(c.shards[i].m); n > c.perShard {
			t.Fatalf("shard %d holds %d entries, cap %d", i, n, c.perShard)
		}
	}
}

func TestNCCacheConcurrentReplay(t *testing.T) {
	c := newNCCache(1024)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.use("nonce", "cnonce", 1) {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent uses of one nc accepted, want 1", wins.Load())
	}
}

func TestChallengeValueParsesWithClient(t *testing.T) {
	a := newAuthenticator(testRealm, time.Minute, testKey)
	vals := a.challenges(aa("192.0.2.1"), []string{acl.DigestMD5, acl.DigestSHA256}, true)
	if len(vals) != 2 {
		t.Fatalf("%d challenges", len(vals))
	}
	for i, alg := range []string{"MD5", "SHA-256"} {
		v := vals[i]
		for _, want := range []string{`Digest realm="sipedge"`, `algorithm=` + alg, `qop="auth"`, `stale=true`} {
			if !strings.Contains(v, want) {
				t.Fatalf("challenge %q lacks %q", v, want)
			}
		}
		// The icholy client (used by sipgo) can answer it.
		_ = answerChallenge(t, v, "INVITE", "sip:x@example.org", "u", "p", 1, "c")
	}
}

// memGuard is a ReplayGuard shared by "nodes" in one process (Redis's SET NX in production).
type memGuard struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (g *memGuard) FirstUse(_ context.Context, key string, _ time.Duration) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[key] {
		return false, nil
	}
	g.seen[key] = true
	return true, nil
}

// TestReplayRefusedByAnotherNode: an answer accepted by one node is refused when replayed
// to another node sharing the nonce key, through the cluster's replay guard (each node's
// own cache has never seen it).
func TestReplayRefusedByAnotherNode(t *testing.T) {
	snap := mustCompile(t, testDataset(""))
	g := &memGuard{seen: map[string]bool{}}
	a, b := newAuthenticator(testRealm, time.Minute, testKey), newAuthenticator(testRealm, time.Minute, testKey)
	a.guard, b.guard = g, g
	src := aa("127.0.0.9")
	pa := digestFor(t, a, src, acl.DigestMD5, testUser, testPassword, 1)
	req := func() *sipmsg.Request {
		return parseReq(t, rawRequest("INVITE", "sip:service@127.0.0.1:5060", pa), netip.AddrPortFrom(src, 5099).String())
	}
	algs := []string{acl.DigestMD5}
	if d := decide(snap, netip.AddrPortFrom(src, 5099), req(), a, algs); d.Digest != digestOK {
		t.Fatalf("first use on node a: %v", d.Digest)
	}
	if d := decide(snap, netip.AddrPortFrom(src, 5099), req(), b, algs); d.Digest != digestReplay || d.Verdict.Allowed() {
		t.Fatalf("replay on node b: %v %v, want replay, not allowed", d.Digest, d.Verdict)
	}
}
