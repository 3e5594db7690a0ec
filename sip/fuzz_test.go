package sip

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/sipedge/sipedge/acl"
)

// FuzzDigestHeader: the Proxy-Authorization parser never panics, and whatever it accepts
// formats back to a header that parses to the same value.
func FuzzDigestHeader(f *testing.F) {
	for _, s := range []string{
		`Digest username="pbxuser", realm="sipedge", nonce="abc", uri="sip:127.0.0.1:5060", response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="6b8b4567", qop=auth, nc=00000001`,
		`Digest username="a\"b", realm=""`,
		"digest\tnc=1,,qop=\"auth\"",
		`Basic dXNlcjpwYXNz`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseDigestCredentials(s)
		if err != nil {
			return
		}
		out := c.String()
		back, err := parseDigestCredentials(out)
		if err != nil {
			t.Fatalf("formatted %q does not parse: %v (from %q)", out, err, s)
		}
		if back != c {
			t.Fatalf("round trip changed the value:\n in  %+v\n out %+v\n via %q", c, back, out)
		}
	})
}

// fuzzEpoch is the fixed clock of FuzzDecide, so seeds with digest answers stay fresh.
var fuzzEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var fuzzSources = []netip.AddrPort{
	ap("127.0.0.2:5060"),     // listed for trunk t1
	ap("127.0.0.9:5060"),     // unlisted
	ap("[::1]:5060"),         // unlisted, IPv6
	ap("192.0.2.10:5060"),    // unlisted
	ap("[2001:db8::1]:5060"), // unlisted
}

// FuzzDecide: raw bytes → sipgo parser → decide. It never panics, never allows an
// unlisted source by IP, and allows by digest only with a Proxy-Authorization that an
// independent digest implementation (icholy/digest) confirms for the real password.
func FuzzDecide(f *testing.F) {
	snap := mustCompile(f, testDataset("sip:127.0.0.1:5080"))
	auth := newAuthenticator(testRealm, time.Minute, testKey)
	auth.now = func() time.Time { return fuzzEpoch }
	algs := []string{acl.DigestMD5, acl.DigestSHA256}

	// Seeds with valid answers under the fixed clock (the static corpus is in
	// testdata/fuzz/FuzzDecide).
	for i, alg := range algs {
		src := fuzzSources[1+i]
		chal := challengeValue(testRealm, auth.newNonce(src.Addr()), alg, false)
		pa := "Proxy-Authorization: " + answerChallenge(f, chal, "INVITE", "sip:service@127.0.0.1:5060", testUser, testPassword, 1, "c0ffee")
		f.Add(rawRequest("INVITE", "sip:service@127.0.0.1:5060", pa), uint8(1+i))
		f.Add(rawRequest("INVITE", "sip:100@t1.example.org", pa), uint8(1+i))
	}
	f.Add(rawRequest("INVITE", "sip:service@127.0.0.1:5060"), uint8(0))
	f.Add(spoofed(rawRequest("INVITE", "sip:service@127.0.0.1:5060")), uint8(1))

	f.Fuzz(func(t *testing.T, raw []byte, which uint8) {
		msg, err := sipmsg.ParseMessage(raw)
		if err != nil {
			return
		}
		req, ok := msg.(*sipmsg.Request)
		if !ok {
			return
		}
		src := fuzzSources[int(which)%len(fuzzSources)]
		req.SetSource(src.String())
		req.SetTransport("UDP")
		d := decide(snap, src, req, auth, algs)
		listed := src.Addr() == aa("127.0.0.2")
		switch d.Verdict {
		case acl.VerdictAllowIP:
			if !listed {
				t.Fatalf("unlisted %v allowed by IP", src)
			}
		case acl.VerdictAllowDigest:
			if !validDigestOracle(req) {
				t.Fatalf("allowed by digest without a valid answer:\n%s", raw)
			}
		}
		if d.Verdict.Allowed() && validateRequest(req) != "" {
			t.Fatalf("malformed request allowed: %s", validateRequest(req))
		}
	})
}

// validDigestOracle recomputes, with icholy/digest (not our hashing code), whether some
// Proxy-Authorization of req answers for the test credential with the test password.
func validDigestOracle(req *sipmsg.Request) bool {
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "Proxy-Authorization") {
			continue
		}
		c, err := parseDigestCredentials(h.Value())
		if err != nil || c.Username != testUser || c.Realm != testRealm {
			continue
		}
		nc, ok := parseNC(c.NC)
		if !ok {
			continue
		}
		chal := &digest.Challenge{Realm: c.Realm, Nonce: c.Nonce, Algorithm: c.Algorithm, QOP: []string{"auth"}}
		want, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: c.URI,
			Username: testUser, Password: testPassword, Count: int(nc), Cnonce: c.Cnonce})
		if err == nil && strings.EqualFold(want.Response, c.Response) && strings.EqualFold(want.QOP, c.QOP) {
			return true
		}
	}
	return false
}

// FuzzRequestPath: raw bytes → sipgo's parser (as configured for the edge) → the server's
// request handler, with a siptest recorder standing in for the transaction, from a listed
// or an unlisted source. It never panics, answers with valid status codes, and relays
// nothing the edge's validation refuses: whatever reaches the upstream (a UDP socket of
// the test) parses, passes validation, carries no Proxy-Authorization and came from a
// request that passed validation itself.
func FuzzRequestPath(f *testing.F) {
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer up.Close()
	cfg := baseConfig()
	cfg.Upstream = "sip:" + up.LocalAddr().String()
	cfg.UpstreamTimeout = 20 * time.Millisecond
	cfg.BanThreshold = -1 // keep every source judged, not banned
	cfg.SlogLogger = slog.New(slog.DiscardHandler)
	s, err := New(cfg, policyOf(mustCompile(f, testDataset(""))))
	if err != nil {
		f.Fatal(err)
	}
	startUnit(f, s)
	parser := sipmsg.NewParser()
	parser.MaxMessageLength = s.cfg.MaxMessageBytes

	files, _ := filepath.Glob(filepath.Join("testdata", "torture", "*", "*.dat"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b, uint8(0))
		}
	}
	for _, m := range []string{"INVITE", "OPTIONS", "BYE", "ACK", "CANCEL", "REGISTER", "INFO"} {
		f.Add(rawRequest(m, "sip:service@127.0.0.1:5060"), uint8(0))
		f.Add(rawRequest(m, "sip:100@t1.example.org", "To: <sip:x@y>;tag=t"), uint8(1))
	}
	f.Add(rawRequest("INVITE", "sip:service@127.0.0.1:5060", "Proxy-Require: foo"), uint8(0))
	f.Add(rawRequest("INVITE", "sip:service@127.0.0.1:5060?Route=%3Csip:x%3E"), uint8(0))

	buf := make([]byte, 65535)
	f.Fuzz(func(t *testing.T, raw []byte, which uint8) {
		msg, err := parser.ParseSIP(raw)
		if err != nil {
			return
		}
		req, ok := msg.(*sipmsg.Request)
		if !ok {
			return
		}
		src := fuzzSources[int(which)%len(fuzzSources)]
		req.SetSource(src.String())
		req.SetTransport("UDP")
		valid := validateRequest(req) == ""
		rec := &recorder{}
		start := time.Now()
		s.handle(req, rec)
		if d := time.Since(start); d > 3*time.Second { // UpstreamTimeout is 20 ms: a hang
			t.Fatalf("handler took %v:\n%s", d, raw)
		}
		for _, res := range rec.Result() {
			if res.StatusCode < 100 || res.StatusCode > 699 {
				t.Fatalf("answered status %d", res.StatusCode)
			}
		}
		// The handler returns after the relay ended: anything sent is queued by now.
		for {
			_ = up.SetReadDeadline(time.Now().Add(time.Millisecond))
			n, err := up.Read(buf)
			if err != nil {
				break
			}
			fw, err := sipmsg.ParseMessage(buf[:n])
			if err != nil {
				t.Fatalf("relayed an unparsable message: %v\n%s", err, buf[:n])
			}
			fwReq, ok := fw.(*sipmsg.Request)
			if !ok {
				t.Fatalf("sent a response upstream:\n%s", buf[:n])
			}
			if !valid {
				t.Fatalf("relayed a request that failed validation (%s):\n%s", validateRequest(req), raw)
			}
			if r := validateRequest(fwReq); r != "" {
				t.Fatalf("relayed request fails validation (%s):\n%s", r, buf[:n])
			}
			if fwReq.GetHeader("Proxy-Authorization") != nil {
				t.Fatalf("relayed Proxy-Authorization:\n%s", buf[:n])
			}
		}
	})
}
