package sip

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"net/netip"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// Server-side proxy digest authentication (RFC 2617, RFC 7616, RFC 8760), qop=auth only.
//
// Nonces are stateless: b64url(issue[8] || ttl[4] || HMAC-SHA256(k, issue||ttl||srcIP||realm)[:16]),
// so any node sharing the key verifies a nonce another node issued, a nonce answered from
// another source IP is refused, and "expired" is known without state. Nonce-count replay is
// caught by a bounded in-memory cache of (nonce, cnonce) → highest nc; nodes do not share it.

// digestResult is acl.DigestResult under the names this package has always used.
type digestResult = acl.DigestResult

const (
	digestNone        = acl.DigestNone
	digestOK          = acl.DigestOK
	digestStale       = acl.DigestStale
	digestFailed      = acl.DigestFailed
	digestBadNonce    = acl.DigestBadNonce
	digestReplay      = acl.DigestReplay
	digestMalformed   = acl.DigestMalformed
	digestUnsupported = acl.DigestUnsupported
	digestWrongURI    = acl.DigestWrongURI
)

// canonicalAlgorithm maps a digest algorithm name (any case) to acl.DigestMD5 or
// acl.DigestSHA256.
func canonicalAlgorithm(a string) (string, bool) {
	switch {
	case strings.EqualFold(a, acl.DigestMD5):
		return acl.DigestMD5, true
	case strings.EqualFold(a, acl.DigestSHA256):
		return acl.DigestSHA256, true
	}
	return "", false
}

// authenticator issues and verifies digest challenges for one realm.
type authenticator struct {
	realm  string
	ttl    time.Duration
	mac    *macPool
	replay *ncCache
	// guard is the cluster-wide replay guard (nil: this node's cache only); guardErr
	// counts its failures.
	guard    ReplayGuard
	guardErr func(error)
	now      func() time.Time
	// dummyHA1 stands in for the HA1 of an unknown user, so a wrong password and an
	// unknown user cost the same work and get the same answer.
	dummyHA1 map[string]string
}

func newAuthenticator(realm string, ttl time.Duration, key []byte) *authenticator {
	k := deriveKey(key, "sipedge nonce v1")
	d := deriveKey(key, "sipedge dummy ha1 v1")
	return &authenticator{
		realm:  realm,
		ttl:    ttl,
		mac:    newMacPool(k),
		replay: newNCCache(128 << 10),
		now:    time.Now,
		dummyHA1: map[string]string{
			acl.DigestMD5:    hex.EncodeToString(d[:md5.Size]),
			acl.DigestSHA256: hex.EncodeToString(d[:sha256.Size]),
		},
	}
}

// VerifyDigest implements [acl.DigestVerifier] for a *sipmsg.Request.
func (a *authenticator) VerifyDigest(msg any, src netip.Addr, fixed *acl.Credential, algs []string, lookup acl.CredentialLookup) acl.DigestAnswer {
	req, ok := msg.(*sipmsg.Request)
	if !ok {
		return acl.DigestAnswer{}
	}
	r, user, alg, cred := a.verify(req, src, algs, fixed, lookup)
	return acl.DigestAnswer{Result: r, User: user, Credential: cred, Algorithm: alg}
}

// verify checks the Proxy-Authorization headers of req for our realm against fixed (the
// trunk's credential) or, without one, the credential lookup finds for the username. The
// answer must be for this very request: its uri is the Request-URI (RFC 7616 §3.4.6), so
// an answer seen on the wire for one number authorises no other, and its nonce-count is
// accepted once (per cluster with a shared replay guard). It returns the result, the
// username named (for logs; "" if none), the answer's algorithm and the credential that
// matched (only with digestOK or digestStale).
func (a *authenticator) verify(req *sipmsg.Request, src netip.Addr, algs []string, fixed *acl.Credential, lookup acl.CredentialLookup) (digestResult, string, string, *acl.Credential) {
	var (
		pick      digestCredentials
		found     bool
		malformed bool
		otherRlm  bool
	)
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "Proxy-Authorization") {
			continue
		}
		c, err := parseDigestCredentials(h.Value())
		if err != nil {
			if err != errNotDigest {
				malformed = true
			}
			continue
		}
		if c.Realm != a.realm {
			otherRlm = true
			continue
		}
		pick, found = c, true
		break
	}
	if !found {
		switch {
		case malformed:
			return digestMalformed, "", "", nil
		case otherRlm:
			return digestUnsupported, "", "", nil
		}
		return digestNone, "", "", nil
	}
	c := pick
	user := c.Username
	if c.Username == "" || c.Nonce == "" || c.URI == "" || c.Response == "" || c.Cnonce == "" || c.NC == "" || c.QOP == "" {
		return digestMalformed, user, "", nil
	}
	if !strings.EqualFold(c.QOP, "auth") || (c.Userhash != "" && !strings.EqualFold(c.Userhash, "false")) {
		return digestUnsupported, user, "", nil
	}
	alg := acl.DigestMD5
	if c.Algorithm != "" {
		ca, ok := canonicalAlgorithm(c.Algorithm)
		if !ok {
			return digestUnsupported, user, "", nil
		}
		alg = ca
	}
	if !containsString(algs, alg) {
		return digestUnsupported, user, "", nil
	}
	nc, ok := parseNC(c.NC)
	if !ok {
		return digestMalformed, user, "", nil
	}
	valid, expired := a.checkNonce(c.Nonce, src)
	if !valid {
		return digestBadNonce, user, alg, nil
	}

	var cred *acl.Credential
	switch {
	case fixed != nil:
		if fixed.Username == c.Username {
			cred = fixed
		}
	case lookup != nil:
		cred, _ = lookup.Credential(c.Username)
	}
	ha1, known := a.dummyHA1[alg], false
	if cred != nil && cred.Realm == a.realm {
		h := cred.HA1MD5
		if alg == acl.DigestSHA256 {
			h = cred.HA1SHA256
		}
		if len(h) == len(ha1) {
			ha1, known = strings.ToLower(h), true
		}
	}
	want := digestResponse(alg, ha1, c.Nonce, c.NC, c.Cnonce, "auth", string(req.Method), c.URI)
	got := []byte(c.Response)
	lowerHexInPlace(got)
	match := subtle.ConstantTimeCompare(want, got) == 1
	if !match || !known {
		return digestFailed, user, alg, nil
	}
	if !sameURI(c.URI, &req.Recipient) {
		return digestWrongURI, user, alg, nil
	}
	if expired {
		return digestStale, user, alg, cred
	}
	if !a.replay.use(c.Nonce, c.Cnonce, nc) || !a.firstUse(c.Nonce, c.Cnonce, nc) {
		return digestReplay, user, alg, nil
	}
	return digestOK, user, alg, cred
}

// sameURI reports whether the digest uri names the Request-URI (RFC 7616 §3.4.6),
// compared as RFC 3261 §19.1.4 compares SIP URIs: scheme and host case-insensitively, user
// exactly, an absent port as the scheme's default, and the user, transport, maddr, method
// and ttl parameters (present in either) equal.
func sameURI(raw string, ruri *sipmsg.Uri) bool {
	if len(raw) > 2048 {
		return false
	}
	var u sipmsg.Uri
	if err := sipmsg.ParseUri(raw, &u); err != nil {
		return false
	}
	if !strings.EqualFold(u.Scheme, ruri.Scheme) || u.User != ruri.User || u.Password != ruri.Password ||
		!strings.EqualFold(strings.Trim(u.Host, "[]"), strings.Trim(ruri.Host, "[]")) ||
		uriPort(&u) != uriPort(ruri) {
		return false
	}
	for _, k := range [...]string{"user", "transport", "maddr", "method", "ttl"} {
		a, aok := uriParam(&u, k)
		b, bok := uriParam(ruri, k)
		if aok != bok || !strings.EqualFold(a, b) {
			return false
		}
	}
	return true
}

func uriPort(u *sipmsg.Uri) int {
	if u.Port != 0 {
		return u.Port
	}
	if strings.EqualFold(u.Scheme, "sips") {
		return 5061
	}
	return 5060
}

func uriParam(u *sipmsg.Uri, k string) (string, bool) {
	if u.UriParams == nil {
		return "", false
	}
	return u.UriParams.Get(k)
}

// parseNC accepts exactly 8 hex digits, not all zero (RFC 7616 §3.4).
func parseNC(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint32(v), true
}

func lowerHexInPlace(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + ('a' - 'A')
		}
	}
}

// digestResponse computes the qop=auth response: H(HA1:nonce:nc:cnonce:qop:H(method:uri))
// in lower-case hex.
func digestResponse(alg, ha1, nonce, nc, cnonce, qop, method, uri string) []byte {
	var h hash.Hash
	if alg == acl.DigestSHA256 {
		h = sha256.New()
	} else {
		h = md5.New()
	}
	var sum [sha256.Size]byte
	h.Write([]byte(method))
	h.Write([]byte{':'})
	h.Write([]byte(uri))
	ha2 := h.Sum(sum[:0])
	var ha2hex [2 * sha256.Size]byte
	n := hex.Encode(ha2hex[:], ha2)

	h.Reset()
	for i, p := range []string{ha1, nonce, nc, cnonce, qop} {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	h.Write([]byte{':'})
	h.Write(ha2hex[:n])
	out := h.Sum(sum[:0])
	dst := make([]byte, hex.EncodedLen(len(out)))
	hex.Encode(dst, out)
	return dst
}

// ha1 computes H(user:realm:password) in hex; used by tests and tools, never on the
// request path (credentials hold HA1s only).
func ha1(alg, user, realm, password string) string {
	s := user + ":" + realm + ":" + password
	if alg == acl.DigestSHA256 {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
