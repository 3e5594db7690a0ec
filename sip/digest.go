package sip

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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

// digestCredentials is a parsed Proxy-Authorization (or Authorization) Digest value. NC is
// kept as sent, because the response hash covers its exact spelling.
type digestCredentials struct {
	Username, Realm, Nonce, URI, Response string
	Algorithm, Cnonce, Opaque, QOP, NC    string
	Userhash                              string
}

var (
	errNotDigest      = errors.New("digest: not a Digest header")
	errDigestSyntax   = errors.New("digest: syntax error")
	errDigestDupParam = errors.New("digest: repeated parameter")
)

const maxDigestParams = 32

// parseDigestCredentials parses `Digest k=v, k="quoted", …` (RFC 7616 §3.4 / RFC 7235
// auth-param list). Parameter names are case-insensitive; a repeated known parameter, an
// unterminated quoted string or a control character is an error. Unknown parameters are
// skipped.
func parseDigestCredentials(s string) (digestCredentials, error) {
	var c digestCredentials
	s = strings.TrimLeft(s, " \t")
	if len(s) < 7 || !strings.EqualFold(s[:6], "digest") || (s[6] != ' ' && s[6] != '\t') {
		return c, errNotDigest
	}
	s = s[7:]
	var seen uint16
	n := 0
	i := 0
	for {
		i = skipLWS(s, i)
		// #rule: empty list elements ("a=1,,b=2") are allowed.
		for i < len(s) && s[i] == ',' {
			i = skipLWS(s, i+1)
		}
		if i == len(s) {
			break
		}
		if n > 0 && !afterComma(s, i) {
			return c, errDigestSyntax
		}
		if n++; n > maxDigestParams {
			return c, errDigestSyntax
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		if i == start {
			return c, errDigestSyntax
		}
		key := strings.ToLower(s[start:i])
		i = skipLWS(s, i)
		if i == len(s) || s[i] != '=' {
			return c, errDigestSyntax
		}
		i = skipLWS(s, i+1)
		var val string
		var err error
		if i < len(s) && s[i] == '"' {
			val, i, err = readQuoted(s, i)
			if err != nil {
				return c, err
			}
		} else {
			vs := i
			for i < len(s) && isTokenChar(s[i]) {
				i++
			}
			if i == vs {
				return c, errDigestSyntax
			}
			val = s[vs:i]
		}
		var dst *string
		var bit uint16
		switch key {
		case "username":
			dst, bit = &c.Username, 1<<0
		case "realm":
			dst, bit = &c.Realm, 1<<1
		case "nonce":
			dst, bit = &c.Nonce, 1<<2
		case "uri":
			dst, bit = &c.URI, 1<<3
		case "response":
			dst, bit = &c.Response, 1<<4
		case "algorithm":
			dst, bit = &c.Algorithm, 1<<5
		case "cnonce":
			dst, bit = &c.Cnonce, 1<<6
		case "opaque":
			dst, bit = &c.Opaque, 1<<7
		case "qop":
			dst, bit = &c.QOP, 1<<8
		case "nc":
			dst, bit = &c.NC, 1<<9
		case "userhash":
			dst, bit = &c.Userhash, 1<<10
		}
		if dst != nil {
			if seen&bit != 0 {
				return c, errDigestDupParam
			}
			seen |= bit
			*dst = val
		}
	}
	return c, nil
}

// afterComma reports whether the last non-LWS byte before s[i] is a comma.
func afterComma(s string, i int) bool {
	for j := i - 1; j >= 0; j-- {
		switch s[j] {
		case ' ', '\t':
			continue
		case ',':
			return true
		default:
			return false
		}
	}
	return false
}

func skipLWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// readQuoted reads the quoted-string starting at s[i] == '"' and returns its unescaped
// content and the index after the closing quote.
func readQuoted(s string, i int) (string, int, error) {
	i++ // opening quote
	var b strings.Builder
	plain := true // no escapes seen: return a substring, no allocation
	start := i
	for i < len(s) {
		ch := s[i]
		switch {
		case ch == '"':
			if plain {
				return s[start:i], i + 1, nil
			}
			return b.String(), i + 1, nil
		case ch == '\\':
			// quoted-pair; an escaped control character is refused like a raw one, so
			// values never hold control characters.
			if i+1 >= len(s) || isCtl(s[i+1]) {
				return "", 0, errDigestSyntax
			}
			if plain {
				plain = false
				b.WriteString(s[start:i])
			}
			b.WriteByte(s[i+1])
			i += 2
			continue
		case isCtl(ch):
			return "", 0, errDigestSyntax
		}
		if !plain {
			b.WriteByte(ch)
		}
		i++
	}
	return "", 0, errDigestSyntax
}

// isCtl reports control characters other than horizontal tab.
func isCtl(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// isTokenChar is RFC 3261 token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// String formats c as a Digest header value that parseDigestCredentials reads back to c.
// Empty fields are left out.
func (c digestCredentials) String() string {
	var b strings.Builder
	b.WriteString("Digest ")
	first := true
	put := func(k, v string, quote bool) {
		if v == "" {
			return
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		if quote || !isToken(v) {
			writeQuoted(&b, v)
		} else {
			b.WriteString(v)
		}
	}
	put("username", c.Username, true)
	put("realm", c.Realm, true)
	put("nonce", c.Nonce, true)
	put("uri", c.URI, true)
	put("response", c.Response, true)
	put("algorithm", c.Algorithm, false)
	put("cnonce", c.Cnonce, true)
	put("opaque", c.Opaque, true)
	put("qop", c.QOP, false)
	put("nc", c.NC, false)
	put("userhash", c.Userhash, false)
	return b.String()
}

func writeQuoted(b *strings.Builder, v string) {
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
}

// challengeValue is one Proxy-Authenticate value. realm and nonce never need escaping
// (the realm is validated, the nonce is base64url).
func challengeValue(realm, nonce, alg string, stale bool) string {
	var b strings.Builder
	b.Grow(96 + len(realm) + len(nonce))
	b.WriteString(`Digest realm="`)
	b.WriteString(realm)
	b.WriteString(`", nonce="`)
	b.WriteString(nonce)
	b.WriteString(`", algorithm=`)
	b.WriteString(alg)
	b.WriteString(`, qop="auth"`)
	if stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}

// macPool hands out keyed HMAC-SHA256 states: hmac.New precomputes the padded key, so
// reusing one saves two allocations and a key schedule per use.
type macPool struct{ p sync.Pool }

func newMacPool(key []byte) *macPool {
	k := append([]byte(nil), key...)
	return &macPool{p: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

func (m *macPool) get() hash.Hash  { h := m.p.Get().(hash.Hash); h.Reset(); return h }
func (m *macPool) put(h hash.Hash) { m.p.Put(h) }

// deriveKey derives a purpose-specific key from the configured NonceKey, so a nonce can
// never be replayed as a Record-Route token or the other way round.
func deriveKey(master []byte, purpose string) []byte {
	h := hmac.New(sha256.New, master)
	h.Write([]byte(purpose))
	return h.Sum(nil)
}

// b64 is unpadded base64url that refuses non-canonical input: with a lenient decoder two
// spellings of one nonce would decode alike and slip past the nonce-count cache.
var b64 = base64.RawURLEncoding.Strict()

const (
	noncePayload  = 12 // issue unix ns (8) || ttl s (4)
	nonceMACBytes = 16
	nonceBytes    = noncePayload + nonceMACBytes
	maxClockSkew  = 5 * time.Second // nodes' clocks may differ this much
)

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

func (a *authenticator) nonceMAC(payload []byte, src netip.Addr) []byte {
	h := a.mac.get()
	ip := src.Unmap().As16()
	h.Write(payload)
	h.Write(ip[:])
	h.Write([]byte(a.realm))
	var sum [sha256.Size]byte
	out := h.Sum(sum[:0])
	a.mac.put(h)
	return out[:nonceMACBytes]
}

// newNonce returns a fresh nonce bound to src, the realm, now and the configured TTL.
func (a *authenticator) newNonce(src netip.Addr) string {
	var raw [nonceBytes]byte
	binary.BigEndian.PutUint64(raw[0:8], uint64(a.now().UnixNano()))
	ttl := a.ttl / time.Second
	if ttl < 1 {
		ttl = 1
	}
	binary.BigEndian.PutUint32(raw[8:12], uint32(ttl))
	copy(raw[noncePayload:], a.nonceMAC(raw[:noncePayload], src))
	return b64.EncodeToString(raw[:])
}

// checkNonce reports whether nonce was issued by a node holding our key, for src and our
// realm, and whether it has expired.
func (a *authenticator) checkNonce(nonce string, src netip.Addr) (valid, expired bool) {
	if b64.DecodedLen(len(nonce)) != nonceBytes {
		return false, false
	}
	var raw [nonceBytes]byte
	if n, err := b64.Decode(raw[:], []byte(nonce)); err != nil || n != nonceBytes {
		return false, false
	}
	if !hmac.Equal(raw[noncePayload:], a.nonceMAC(raw[:noncePayload], src)) {
		return false, false
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[0:8])))
	ttl := time.Duration(binary.BigEndian.Uint32(raw[8:12])) * time.Second
	now := a.now()
	if issued.After(now.Add(maxClockSkew)) {
		return false, false
	}
	return true, !now.Before(issued.Add(ttl))
}

// challenges returns one Proxy-Authenticate value per algorithm, in order, sharing one
// fresh nonce.
func (a *authenticator) challenges(src netip.Addr, algs []string, stale bool) []string {
	nonce := a.newNonce(src)
	out := make([]string, len(algs))
	for i, alg := range algs {
		out[i] = challengeValue(a.realm, nonce, alg, stale)
	}
	return out
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

// firstUse asks the cluster-wide replay guard, when there is one, whether this
// nonce-count of (nonce, cnonce) is used for the first time in the cluster. A guard that
// cannot answer (store down) leaves the node's own cache as the only check: the call is
// not refused for the store's sake, and the failure is counted.
func (a *authenticator) firstUse(nonce, cnonce string, nc uint32) bool {
	if a.guard == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), replayGuardTimeout)
	defer cancel()
	first, err := a.guard.FirstUse(ctx, replayKey(nonce, cnonce, nc), a.ttl+maxClockSkew)
	if err != nil {
		if a.guardErr != nil {
			a.guardErr(err)
		}
		return true
	}
	return first
}

// replayGuardTimeout bounds the wait for the cluster-wide replay guard.
const replayGuardTimeout = 250 * time.Millisecond

// replayKey names one nonce-count of one (nonce, cnonce) in the replay guard.
func replayKey(nonce, cnonce string, nc uint32) string {
	return nonce + ":" + cnonce + ":" + strconv.FormatUint(uint64(nc), 16)
}

// ReplayGuard is a set shared by every node of a cluster that remembers the digest
// nonce-counts already accepted, so a captured answer replayed to another node is refused
// too (DESIGN §4: a nonce-count is accepted once per cluster). In Redis mode it is one
// SET NX with the nonce's lifetime as TTL.
type ReplayGuard interface {
	// FirstUse records key and reports whether it was not recorded before.
	FirstUse(ctx context.Context, key string, ttl time.Duration) (bool, error)
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

// ncCache remembers, per (nonce, cnonce), the highest nonce-count accepted, so a replayed
// or lower nc is refused. It is bounded: each shard keeps at most perShard entries and
// evicts the oldest insert first. All entries share one TTL, so insertion order is
// expiry order; an entry is only ever evicted early when more than the whole capacity
// of fresh nonces was answered within one TTL. Safe for concurrent use.
type ncCache struct {
	seed     maphash.Seed
	perShard int
	shards   [ncShards]ncShard
}

const ncShards = 64

type ncShard struct {
	mu   sync.Mutex
	m    map[string]uint32
	ring []string
	next int
}

func newNCCache(capacity int) *ncCache {
	per := capacity / ncShards
	if per < 1 {
		per = 1
	}
	c := &ncCache{seed: maphash.MakeSeed(), perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]uint32)
	}
	return c
}

// use records nc for (nonce, cnonce) and reports whether it is higher than any nc seen
// for that pair.
func (c *ncCache) use(nonce, cnonce string, nc uint32) bool {
	key := nonce + "\x00" + cnonce
	sh := &c.shards[maphash.String(c.seed, key)%ncShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if prev, ok := sh.m[key]; ok {
		if nc <= prev {
			return false
		}
		sh.m[key] = nc
		return true
	}
	if len(sh.ring) < c.perShard {
		sh.ring = append(sh.ring, key)
	} else {
		delete(sh.m, sh.ring[sh.next])
		sh.ring[sh.next] = key
		sh.next = (sh.next + 1) % c.perShard
	}
	sh.m[key] = nc
	return true
}
