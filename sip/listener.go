package sip

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// edgeListener wraps the TCP listener handed to sipgo. It
//
//   - honours a PROXY protocol v1/v2 header only from a peer inside Config.TrustedProxies:
//     the header's source then stands for the connection (sipgo reads RemoteAddr once,
//     at accept, as every message's source). A trusted peer that sends no header (or a
//     LOCAL one, a health check) is itself the source;
//   - refuses a PROXY header from any other peer: the connection is closed on its first
//     read, logged and counted, and nothing from it is parsed;
//   - reads trusted headers in a goroutine per connection (bounded, with
//     ProxyHeaderTimeout), never in the accept loop, so one silent peer cannot stall
//     every other accept;
//   - closes at once connections from banned sources (BanAction "drop") and from sources
//     over their rate budget (an accept spends one request of it);
//   - keeps accepting after temporary errors (EMFILE, ECONNABORTED) with a backoff
//     instead of ending sipgo's accept loop.
type edgeListener struct {
	raw     net.Listener
	s       *Server
	trusted []netip.Prefix
	timeout time.Duration

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	err       error // why done was closed; set before close(done)
	sem       chan struct{}
	pending   sync.Map // net.Conn → struct{}: trusted connections whose header is being read
}

// maxPendingHeaders bounds trusted connections whose PROXY header is still being read.
const maxPendingHeaders = 256

func newEdgeListener(raw net.Listener, s *Server) *edgeListener {
	l := &edgeListener{
		raw:     raw,
		s:       s,
		trusted: s.cfg.TrustedProxies,
		timeout: s.cfg.ProxyHeaderTimeout,
		conns:   make(chan net.Conn),
		done:    make(chan struct{}),
		sem:     make(chan struct{}, maxPendingHeaders),
	}
	go l.acceptLoop()
	return l
}

func (l *edgeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *edgeListener) Close() error {
	err := l.raw.Close()
	l.finish(net.ErrClosed)
	l.pending.Range(func(c, _ any) bool { // end header reads now, not at their timeout
		_ = c.(net.Conn).SetReadDeadline(time.Now())
		return true
	})
	return err
}

func (l *edgeListener) Addr() net.Addr { return l.raw.Addr() }

func (l *edgeListener) finish(err error) {
	l.closeOnce.Do(func() {
		l.err = &net.OpError{Op: "accept", Net: "tcp", Addr: l.raw.Addr(), Err: err}
		close(l.done)
	})
}

func (l *edgeListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.raw.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.finish(net.ErrClosed)
				return
			}
			// Out of descriptors, aborted handshakes, …: wait and go on, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		peer := netAddrPort(c.RemoteAddr())
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		if l.isTrusted(peer.Addr()) {
			select {
			case l.sem <- struct{}{}:
				go func() {
					defer func() { <-l.sem }()
					l.handshake(c, peer)
				}()
			default:
				l.s.m.proxyResult(proxyOverload)
				c.Close()
			}
			continue
		}
		l.admit(&guardConn{Conn: c, s: l.s, peer: peer}, peer.Addr())
	}
}

func (l *edgeListener) isTrusted(a netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admit hands c (whose source is src) to sipgo unless src is banned or over budget.
func (l *edgeListener) admit(c net.Conn, src netip.Addr) {
	switch l.s.admitSource(src) {
	case admitBanned:
		l.s.m.bannedDrop()
		c.Close()
		return
	case admitLimited:
		l.s.m.rateLimit()
		c.Close()
		return
	}
	if why := l.s.tcpConns.acquire(src, l.s.listed(src) || l.s.isUpstream(src)); why != "" {
		l.s.m.drop(dropTCPConns)
		if e := l.s.log.Debug(); e.Enabled() {
			e.Str("src", src.String()).Str("bound", why).Msg("TCP connection over its bound: closed")
		}
		c.Close()
		return
	}
	lc := &limitedConn{Conn: c, lim: l.s.tcpConns, src: src, headerTimeout: l.s.cfg.HeaderTimeout}
	select {
	case l.conns <- lc:
	case <-l.done:
		lc.Close()
	}
}

// handshake reads the PROXY header of a trusted peer's connection.
func (l *edgeListener) handshake(c net.Conn, peer netip.AddrPort) {
	br := bufio.NewReaderSize(c, 512)
	l.pending.Store(c, struct{}{})
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	hdr, err := proxyproto.Read(br)
	l.pending.Delete(c)
	select {
	case <-l.done:
		c.Close()
		return
	default:
	}
	_ = c.SetReadDeadline(time.Time{})
	src := peer
	var ne net.Error
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol),
		errors.As(err, &ne) && ne.Timeout() && onlyKeepalive(br):
		// No header: the peer itself is the source. (A timeout with nothing but CRLF
		// keep-alives buffered is no header either; they stay buffered for sipgo.)
		l.s.m.proxyResult(proxyAbsent)
	case err != nil:
		l.s.m.proxyResult(proxyInvalid)
		l.s.sec.Warn().Str("event", "proxy_protocol").Str("peer", peer.String()).Err(err).
			Msg("invalid PROXY header from a trusted proxy: connection closed")
		c.Close()
		return
	default:
		if a, ok := headerSource(hdr); ok {
			src = a
			l.s.m.proxyResult(proxyAccepted)
		} else {
			l.s.m.proxyResult(proxyLocal)
		}
	}
	pc := &guardConn{Conn: c, s: l.s, peer: peer, r: br, checked: true}
	if src != peer {
		pc.remote = &net.TCPAddr{IP: src.Addr().AsSlice(), Port: int(src.Port())}
	}
	l.admit(pc, src.Addr())
}

func onlyKeepalive(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return isKeepalive(b)
}

// headerSource is the original source a PROXY header names, for a TCP (v1 TCP4/TCP6, v2
// STREAM over INET/INET6) connection it proxied; false for LOCAL, UNKNOWN/UNSPEC and
// anything that is not a usable unicast address.
func headerSource(h *proxyproto.Header) (netip.AddrPort, bool) {
	if h == nil || h.Command.IsLocal() || !h.TransportProtocol.IsStream() {
		return netip.AddrPort{}, false
	}
	ta, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	ip := ap.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, ap.Port()), true
}

// Signatures of the PROXY protocol (haproxy's proxy-protocol.txt §2.1, §2.2).
var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

var errUntrustedProxy = errors.New("sip: PROXY protocol header from a peer that is not a trusted proxy")

// guardConn is a TCP connection as sipgo sees it. Its first read refuses a PROXY header
// from an untrusted peer (checked false); after a trusted handshake it first drains what
// the header reader buffered (r) and reports the header's source as RemoteAddr.
type guardConn struct {
	net.Conn
	s       *Server
	peer    netip.AddrPort
	remote  net.Addr // nil: the socket peer
	r       *bufio.Reader
	checked bool
}

func (c *guardConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *guardConn) Read(b []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(b)
		}
		c.r = nil
	}
	if c.checked {
		return c.Conn.Read(b)
	}
	c.checked = true
	n, err := c.Conn.Read(b)
	// A signature split over reads: wait for enough bytes to tell (v1 only; a v2
	// signature starts like a CRLF keep-alive, and a split one is garbage to the parser).
	for err == nil && n < len(proxyV1Sig) && n < len(b) && n > 0 && bytes.HasPrefix(proxyV1Sig, b[:n]) {
		var m int
		m, err = c.Conn.Read(b[n:])
		n += m
	}
	if isProxyHeader(b[:n]) {
		c.s.m.proxyResult(proxyUntrusted)
		c.s.sec.Warn().Str("event", "proxy_protocol").Str("peer", c.peer.String()).
			Msg("PROXY header from a peer that is not a trusted proxy: connection closed")
		return 0, errUntrustedProxy
	}
	return n, err
}

// isProxyHeader reports whether b starts with a PROXY v1 signature, or with enough of
// the v2 one to be nothing else (CRLF CRLF NUL never starts SIP).
func isProxyHeader(b []byte) bool {
	if bytes.HasPrefix(b, proxyV1Sig) {
		return true
	}
	const v2Distinct = 5 // "\r\n\r\n\x00"
	return len(b) >= v2Distinct && bytes.HasPrefix(b, proxyV2Sig[:min(len(b), len(proxyV2Sig))])
}
