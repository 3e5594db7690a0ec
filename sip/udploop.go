package sip

import (
	"errors"
	"net"
	"net/netip"
)

// sipgo's UDP read loop remembers every source address it ever read from — in its
// connection pool and in a map local to the loop — until the loop ends, so a spray of
// datagrams from new addresses (spoofed, say) grows them without bound (DESIGN §4a). Each
// reader therefore serves a recyclingConn: once it has handed the loop
// MaxUDPLoopSources distinct sources, its next read ends the loop (sipgo then forgets
// them all) and the reader serves again at once, on the same socket. The edge writes UDP
// on its socket directly, so nothing it sends depends on those entries.

// DefaultMaxUDPLoopSources bounds the sources one sipgo UDP read loop remembers.
const DefaultMaxUDPLoopSources = 4096

var errRecycleLoop = errors.New("sip: UDP read loop ended to forget its sources (sipgo's per-source table); serving again")

// recyclingConn is the UDP listener as one sipgo read loop sees it. Close does nothing:
// the loop closes its connection when it ends, and the socket is the edge's to close.
type recyclingConn struct {
	*net.UDPConn
	max      int
	seen     map[netip.AddrPort]struct{}
	recycled bool
}

func newRecyclingConn(c *net.UDPConn, max int) *recyclingConn {
	return &recyclingConn{UDPConn: c, max: max, seen: make(map[netip.AddrPort]struct{}, min(max, 1024))}
}

func (c *recyclingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(c.seen) >= c.max {
		c.recycled = true
		return 0, nil, errRecycleLoop
	}
	n, a, err := c.UDPConn.ReadFrom(b)
	if ua, ok := a.(*net.UDPAddr); ok {
		c.seen[ua.AddrPort()] = struct{}{}
	}
	return n, a, err
}

func (c *recyclingConn) Close() error { return nil }

// serveUDP runs one reader until the socket closes, recycling its sipgo read loop.
func (s *Server) serveUDP(udp *net.UDPConn) error {
	for {
		rc := newRecyclingConn(udp, s.cfg.MaxUDPLoopSources)
		err := s.tp.ServeUDP(rc)
		if !rc.recycled || s.runCtx.Err() != nil {
			return err
		}
		s.m.drop(dropLoopRecycled)
	}
}
