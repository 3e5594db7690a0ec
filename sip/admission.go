package sip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Admission: what happens to a datagram or a TCP read before sipgo parses it (the read
// filter: garbage, bans, per-source rate budgets, stray responses) and at TCP accept
// (listener.go). The cheapest refusals come first; nothing here allocates for a source
// seen before.

// readFilter runs on sipgo's read loop for every UDP datagram and every TCP read, before
// parsing. It must never return an error for UDP (that stops the listener): to drop a
// datagram it returns (nil, nil), and dropped datagrams never enter sipgo's connection
// pool (which otherwise grows by one entry per new source). For TCP an error closes that
// one connection.
//
// UDP: datagrams that cannot be SIP (and CRLF keep-alives) are dropped; requests from a
// banned source are dropped (BanAction "drop"); requests over the source's rate budget
// are dropped. TCP: a read from a banned source or over the budget closes the
// connection (reads, not messages, are counted: a stream has no message boundaries
// before parsing). Responses are never limited: the edge asked for them.
func (s *Server) readFilter(p sipmsg.TransportReadProps, data []byte) ([]byte, error) {
	if p.Transport != "UDP" {
		if p.Transport != "TCP" {
			return data, nil
		}
		// Each request in the chunk spends one unit of the source's budget (a stream has
		// no message boundaries before parsing; every request line ends " SIP/2.0" CRLF,
		// which no status line or Via does), so a source cannot pack many requests into
		// one read. A chunk holding none (a body, a split header) spends nothing.
		src := netAddrPort(p.RemoteAddr).Addr()
		for range bytes.Count(data, requestLineEnd) {
			switch s.admitSource(src) {
			case admitBanned:
				s.m.bannedDrop()
				return nil, errBannedSource
			case admitLimited:
				s.m.rateLimit()
				return nil, errRateLimited
			}
		}
		return data, nil
	}
	if !looksLikeSIP(data) {
		if !isKeepalive(data) {
			s.m.drop(dropGarbage)
		}
		return nil, nil
	}
	src := netAddrPort(p.RemoteAddr).Addr()
	if string(data[:8]) == "SIP/2.0 " {
		// A response is parsed only from an upstream or from an address the edge sent a
		// request to lately: stray responses from anywhere else are dropped before
		// parsing (and before sipgo pools their source).
		if !s.isUpstream(src) && !s.asked.has(sourceKey(src.Unmap())) {
			s.m.drop(dropStrayResponse)
			return nil, nil
		}
		if s.relayRawResponse(data, netAddrPort(p.RemoteAddr)) {
			return nil, nil // relayed (or dropped as stray) from the datagram itself
		}
		return data, nil
	}
	switch s.admitSource(src) {
	case admitBanned:
		s.m.bannedDrop()
		return nil, nil
	case admitLimited:
		s.m.rateLimit()
		return nil, nil
	}
	s.unparsable.remember(data, netAddrPort(p.RemoteAddr))
	return data, nil
}

// requestLineEnd ends every SIP request line.
var requestLineEnd = []byte(" SIP/2.0\r\n")

var (
	errBannedSource = errors.New("sip: source banned")
	errRateLimited  = errors.New("sip: source over its rate limit")
)

// admission is the pre-parse verdict on a source.
type admission uint8

const (
	admitOK      admission = iota
	admitBanned            // banned, and BanAction is "drop"
	admitLimited           // over its rate budget
)

// admitSource is the pre-parse gate: listed sources (any enabled ACL entry) are never
// banned and spend their own budget (RateLimitListedRequests; none by default), as do
// sources that passed digest authentication within the last BanTTL (not exempt from
// bans); the
// configured upstreams are not limited; every other source must not be banned and must
// be within its budget. It allocates nothing for a source seen before.
func (s *Server) admitSource(src netip.Addr) admission {
	if !src.IsValid() {
		return admitOK // the handler drops an unparsable source
	}
	src = src.Unmap()
	if s.isUpstream(src) {
		return admitOK // never banned, never limited
	}
	if s.listed(src) {
		if s.limitL.allow(sourceKey(src)) {
			return admitOK
		}
		return admitLimited
	}
	if s.cfg.BanAction == BanActionDrop && s.bans.Banned(src) {
		return admitBanned
	}
	if k := sourceKey(src); s.authed.has(k) {
		if s.limitL.allow(k) {
			return admitOK
		}
		return admitLimited
	}
	if s.limit.allow(sourceKey(src)) {
		return admitOK
	}
	return admitLimited
}

// isUpstream reports whether src is an address of the default upstream or of a trunk's.
func (s *Server) isUpstream(src netip.Addr) bool {
	src = src.Unmap()
	return s.coreIPs.has(src) || s.upIPs.has(src)
}

// listed reports whether src is a known PBX (inside an enabled entry of any ACL some
// trunk names) in the current snapshot.
func (s *Server) listed(src netip.Addr) bool {
	pol := s.policy()
	return !isNilPolicy(pol) && pol.Listed(src)
}

// banned reports whether requests from src are refused as banned before they are judged:
// upstreams never are; a listed source is judged first, since its ban holds only for the
// trunks that do not list it (see onInvite).
func (s *Server) banned(src netip.Addr) bool {
	return s.bans.Banned(src) && !s.listed(src) && !s.isUpstream(src)
}

// netAddrPort converts a *net.UDPAddr or *net.TCPAddr without allocating; anything else
// is the zero value.
func netAddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// addrSet is a small copy-on-write set of addresses: reads are one atomic load and a
// map lookup. The zero value is empty and ready.
type addrSet struct {
	mu sync.Mutex
	p  atomic.Pointer[map[netip.Addr]struct{}]
}

const maxAddrSet = 1024

func (a *addrSet) has(ip netip.Addr) bool {
	m := a.p.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[ip]
	return ok
}

func (a *addrSet) add(ip netip.Addr) {
	ip = ip.Unmap()
	if a.has(ip) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.p.Load()
	next := map[netip.Addr]struct{}{}
	if old != nil && len(*old) < maxAddrSet {
		for k := range *old {
			next[k] = struct{}{}
		}
	}
	next[ip] = struct{}{}
	a.p.Store(&next)
}

// looksLikeSIP accepts a datagram starting with "SIP/2.0 " (a response) or with a method
// token followed by a space (a request).
func looksLikeSIP(b []byte) bool {
	if len(b) < 16 {
		return false
	}
	if string(b[:8]) == "SIP/2.0 " {
		return true
	}
	i := 0
	for i < len(b) && i < 32 && isTokenChar(b[i]) {
		i++
	}
	return i > 0 && i < len(b) && b[i] == ' '
}

func isKeepalive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' && c != 0 {
			return false
		}
	}
	return true
}
