package sip

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
	"time"
)

// Stateless nonces: minted and checked with a key every node shares, bound to the
// source address and the realm, expiring without state (see digest.go).

// macPool hands out keyed HMAC-SHA256 states: hmac.New precomputes the padded key, so
// reusing one saves two allocations and a key schedule per use. A state carries its own
// scratch space, so writing strings and taking the sum allocate nothing.
type macPool struct{ p sync.Pool }

type macState struct {
	h       hash.Hash
	sum     [sha256.Size]byte
	scratch [128]byte
}

func newMacPool(key []byte) *macPool {
	k := append([]byte(nil), key...)
	return &macPool{p: sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, k)} }}}
}

func (m *macPool) get() *macState   { st := m.p.Get().(*macState); st.h.Reset(); return st }
func (m *macPool) put(st *macState) { m.p.Put(st) }

// writeString feeds s to the MAC through the scratch space (no []byte conversion).
func (st *macState) writeString(s string) {
	for len(s) > 0 {
		n := copy(st.scratch[:], s)
		st.h.Write(st.scratch[:n])
		s = s[n:]
	}
}

// write feeds b to the MAC.
func (st *macState) write(b []byte) { st.h.Write(b) }

// final returns the MAC, in the state's own space: valid until put.
func (st *macState) final() []byte { return st.h.Sum(st.sum[:0]) }

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

func (a *authenticator) nonceMAC(dst *[nonceMACBytes]byte, payload []byte, src netip.Addr) {
	st := a.mac.get()
	ip := src.Unmap().As16()
	st.write(payload)
	copy(st.scratch[:16], ip[:])
	st.write(st.scratch[:16])
	st.writeString(a.realm)
	copy(dst[:], st.final())
	a.mac.put(st)
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
	var mac [nonceMACBytes]byte
	a.nonceMAC(&mac, raw[:noncePayload], src)
	copy(raw[noncePayload:], mac[:])
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
	var mac [nonceMACBytes]byte
	a.nonceMAC(&mac, raw[:noncePayload], src)
	if !hmac.Equal(raw[noncePayload:], mac[:]) {
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
