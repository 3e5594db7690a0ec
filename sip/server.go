package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// Server is the SIP edge: UDP and TCP listeners on one host:port, the per-INVITE
// decision and the stateful relay. Build it with [New], run it with [Server.Run]. All
// methods are safe for concurrent use. Must not be copied.
type Server struct {
	_ [0]sync.Mutex

	cfg    Config
	policy func() Policy
	log    zerolog.Logger
	sec    zerolog.Logger // security events (sampled under floods)
	m      *metrics
	auth   *authenticator
	rr     *routeSigner
	ups    *upstreamCache
	dlg    *dialogTable
	// tx is the relay's transaction table; hdrs the trust boundary's header policy.
	tx     *txTable
	hdrs   headerPolicy
	bans   *Bans
	hits   HitRecorder  // nil: no hit counting
	limit  *rateLimiter // unlisted sources; nil: off
	limitL *rateLimiter // listed sources; nil: exempt
	caps   *trunkCaps
	// coreIPs holds the default upstream's addresses, upIPs the trunks' upstreams': never
	// banned, never rate-limited. Tenant data fills upIPs only, so no number of trunk
	// upstreams can evict the core (coreIPs is never reset).
	coreIPs addrSet
	upIPs   addrSet
	authed  *recentSet // sources that passed digest lately: the listed sources' rate budget
	// asked holds the addresses the edge sent requests to (other than its upstreams)
	// within a transaction's lifetime: the only sources whose responses are parsed.
	asked *recentSet
	// tcpConns bounds TCP connections in all and per source.
	tcpConns *connLimiter
	// unparsable answers requests sipgo's parser rejects (unparsable.go).
	unparsable *unparsableRing

	// tp is sipgo's transport layer: listeners, parser, TCP connection pool. No sipgo
	// transaction layer runs; messages come to onMessage.
	tp  *sipmsg.TransportLayer
	udp *net.UDPConn // the UDP listener, which every UDP message leaves from

	serverHdr   sipmsg.Header // nil: no Server header
	allowHdr    sipmsg.Header
	retryAfter  sipmsg.Header
	retryAfter1 sipmsg.Header // Retry-After: 1, for max_cps

	// Set by Run before ready is closed; read-only afterwards.
	ready    chan struct{}
	addr     netip.AddrPort
	adv      advertised
	localIPs []netip.Addr // interface addresses, when listening on a wildcard
	runCtx   context.Context
	dialCtx  context.Context // runCtx with dials allowed (allowDial)

	started   atomic.Bool
	listening atomic.Bool
	draining  atomic.Bool
	invites   atomic.Int64 // INVITE relays waiting for their final response
	pending   atomic.Int64 // relays of any method in progress
	active    atomic.Int64 // handlers and background transactions running (shutdown waits)
}

// allowedMethods is the Allow header value: what the edge answers or relays.
const allowedMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE"

// New builds a server from cfg (zero fields take defaults; see [Config.Validate]).
//
// policy returns the current trunk policy; it is called once per out-of-dialog INVITE
// (and once per in-dialog request from a UA that ignored our Record-Route). A nil result
// (or a nil *acl.Snapshot) means "no snapshot yet": INVITEs get 503 + Retry-After.
//
// New sets sipgo's process-wide sip.UDPMTUSize and sip.TransportBufferReadSize high enough
// for MaxMessageBytes.
func New(cfg Config, policy func() Policy, opts ...Option) (*Server, error) {
	if policy == nil {
		return nil, fmt.Errorf("%w: nil policy func", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.DigestAlgorithms = canonicalAlgorithms(cfg.DigestAlgorithms)
	o := options{slog: cfg.SlogLogger}
	for _, opt := range opts {
		opt(&o)
	}

	s := &Server{
		cfg:         cfg,
		policy:      policy,
		log:         cfg.Logger,
		auth:        newAuthenticator(cfg.Realm, cfg.NonceTTL, cfg.NonceKey),
		rr:          newRouteSigner(cfg.NonceKey),
		ups:         newUpstreamCache(o.resolver),
		dlg:         newDialogTable(),
		tx:          newTxTable(linger(cfg.TransactionLinger), 4*cfg.MaxPendingTransactions+1024),
		hdrs:        newHeaderPolicy(cfg.IdentityHeaderPrefix, cfg.StripHeaders),
		allowHdr:    sipmsg.NewHeader("Allow", allowedMethods),
		retryAfter:  sipmsg.NewHeader("Retry-After", strconv.Itoa(int(cfg.RetryAfter/time.Second))),
		retryAfter1: sipmsg.NewHeader("Retry-After", "1"),
		ready:       make(chan struct{}),
		limit:       newRateLimiter(cfg.RateLimitRequests, cfg.RateLimitWindow, cfg.MaxRateSources),
		limitL:      newRateLimiter(cfg.RateLimitListedRequests, cfg.RateLimitWindow, cfg.MaxRateSources),
		caps:        newTrunkCaps(o.nodes),
		hits:        o.hits,
		authed:      newRecentSet(cfg.BanTTL, cfg.MaxRateSources),
		asked:       newRecentSet(cfg.InviteTimeout+64*sipmsg.T1, cfg.MaxRateSources),
		tcpConns:    newConnLimiter(cfg.MaxTCPConns, cfg.MaxTCPConnsPerSource, cfg.MaxTCPConnsListed),
		unparsable:  newUnparsableRing(),
	}
	s.ups.onResolve = func(raw string, ip netip.Addr) {
		if raw == cfg.Upstream {
			s.coreIPs.add(ip)
		} else {
			s.upIPs.add(ip)
		}
	}
	s.sec = s.log.Sample(&zerolog.BurstSampler{Burst: 100, Period: time.Second, NextSampler: &zerolog.BasicSampler{N: 100}})
	if cfg.UserAgent != "-" {
		s.serverHdr = sipmsg.NewHeader("Server", cfg.UserAgent)
	}
	m, err := newMetrics(cfg.Registerer, func() float64 { return float64(s.dlg.len()) },
		func() float64 { return float64(s.bans.count()) }, s.tx.counts)
	if err != nil {
		return nil, fmt.Errorf("sip: register metrics: %w", err)
	}
	s.m = m
	s.bans = newBans(cfg, o.bans, s.isUpstream, m, s.sec)
	if o.replay != nil {
		s.auth.guard, s.auth.guardErr = o.replay, func(err error) {
			m.drop(dropReplayGuard)
			if o.replayErr != nil {
				o.replayErr(err)
			}
		}
	}

	// sipgo globals (see notes: trap 17 UDP MTU guard, 32 KiB read buffer, trap B timers).
	if need := cfg.MaxMessageBytes + 1200; sipmsg.UDPMTUSize < need {
		sipmsg.UDPMTUSize = need
	}
	if cfg.MaxMessageBytes > int(sipmsg.TransportBufferReadSize) {
		sipmsg.TransportBufferReadSize = uint16(cfg.MaxMessageBytes)
	}

	parser := sipmsg.NewParser()
	parser.MaxMessageLength = cfg.MaxMessageBytes
	connectTimeout := cfg.UpstreamConnectTimeout
	tpOpts := []sipmsg.TransportLayerOption{
		// The read filter must come before the transports option: sipgo copies it into
		// each transport when that transport is installed.
		sipmsg.WithTransportLayerReadFilter(s.readFilter),
		sipmsg.WithTransportLayerTransports(sipmsg.TransportsConfig{TCP: &sipmsg.TransportTCP{
			ReadTimeout:  cfg.TCPReadIdleTimeout,
			WriteTimeout: cfg.TCPWriteTimeout,
			DialerCreate: func(laddr net.Addr) net.Dialer {
				return net.Dialer{Timeout: connectTimeout, LocalAddr: laddr, KeepAlive: 30 * time.Second,
					ControlContext: s.dialGuard}
			},
		}}),
	}
	tpOpts = append(tpOpts, sipmsg.WithTransportLayerLogger(s.parseFailLogger(o.slog)))
	resolver := o.resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	s.tp = sipmsg.NewTransportLayer(resolver, parser, nil, tpOpts...)
	s.tp.OnMessage(s.onMessage)
	return s, nil
}

// Run binds UDP and TCP on cfg.Listen, serves until ctx is done, then closes the
// listeners, terminates all transactions and connections, and waits (briefly) for
// in-flight handlers. It returns nil after a clean stop, or the error that stopped a
// listener. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sip: Run called twice")
	}
	udp, tcp, err := listenBoth(s.cfg.Listen)
	if err != nil {
		s.tp.Close()
		return err
	}
	if err := udp.SetReadBuffer(s.cfg.UDPReadBuffer); err != nil {
		s.log.Warn().Err(err).Int("bytes", s.cfg.UDPReadBuffer).Msg("cannot set UDP receive buffer")
	}
	ua := udp.LocalAddr().(*net.UDPAddr)
	bound := netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
	s.udp = udp
	s.addr = bound
	if bound.Addr().IsUnspecified() {
		s.localIPs = interfaceIPs()
	}
	s.adv = s.advertise(bound)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	// Learn the core's addresses now, so it is exempt from bans and rate limits before
	// its first call (a name that does not resolve yet is learnt on first use).
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := s.ups.get(rctx, s.cfg.Upstream); err != nil && s.cfg.Upstream != "" {
		s.log.Warn().Err(err).Str("upstream", s.cfg.Upstream).Msg("default upstream does not resolve yet")
	}
	rcancel()
	s.dialCtx = allowDial(ctx)

	pendingServe := s.cfg.UDPReaders + 1
	errc := make(chan error, pendingServe)
	edge := newEdgeListener(tcp, s)
	for range s.cfg.UDPReaders {
		go func() { errc <- s.serveUDP(udp) }()
	}
	go func() { errc <- s.tp.ServeTCP(edge) }()
	s.awaitServing(ctx, errc)
	timersDone := make(chan struct{})
	go func() { defer close(timersDone); s.runTimers(ctx.Done()) }()
	sweepDone := make(chan struct{})
	go func() { defer close(sweepDone); s.sweepDialogs(ctx) }()
	bansDone := make(chan struct{})
	go func() { defer close(bansDone); s.bans.run(ctx) }()
	if s.cfg.Upstream != "" { // learn the default upstream's address before its requests come
		go func() { _, _ = s.ups.get(ctx, s.cfg.Upstream) }()
	}

	s.log.Info().Str("listen", bound.String()).Str("advertise", s.adv.hostport()).
		Str("upstream", s.cfg.Upstream).Str("realm", s.cfg.Realm).Msg("SIP edge listening")
	s.listening.Store(true)
	close(s.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		pendingServe--
		if err != nil && !errors.Is(err, net.ErrClosed) {
			runErr = fmt.Errorf("sip: listener stopped: %w", err)
		} else {
			runErr = errors.New("sip: listener stopped")
		}
	}
	s.listening.Store(false)
	cancel()
	udp.Close()
	edge.Close()
	for ; pendingServe > 0; pendingServe-- {
		<-errc
	}
	s.tp.Close() // closes pooled connections
	<-timersDone
	s.tx.clear()
	<-sweepDone
	<-bansDone
	// Handlers see their transactions end and return; sipgo may still be starting a
	// handler for a message read just before the close, so poll rather than Wait.
	for deadline := time.Now().Add(5 * time.Second); s.active.Load() > 0; {
		if time.Now().After(deadline) {
			s.log.Warn().Int64("handlers", s.active.Load()).Msg("SIP handlers still running after shutdown")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.log.Info().Msg("SIP edge stopped")
	return runErr
}

// linger is how long finished transactions are kept: TransactionLinger, or the RFC's
// 64·T1 (Timers J, L, M, D).
func linger(l time.Duration) time.Duration {
	if l > 0 {
		return l
	}
	return timer64T1
}

// Ready is closed once both listeners are bound and [Server.Addr] is valid.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound address (valid after [Server.Ready] is closed): the listen IP
// (possibly a wildcard) and the port both UDP and TCP use.
func (s *Server) Addr() netip.AddrPort {
	select {
	case <-s.ready:
		return s.addr
	default:
		return netip.AddrPort{}
	}
}

// Listening reports whether both listeners are bound and serving (from Ready until Run
// starts shutting down), for readiness probes.
func (s *Server) Listening() bool { return s.listening.Load() }

// Drain stops accepting new calls: out-of-dialog INVITEs and OPTIONS get 503 +
// Retry-After, while calls being set up and established dialogs continue. Wait for
// [Server.ActiveCalls] to reach 0, then cancel Run's context. In-dialog routing is
// stateless, so another node sharing NonceKey (or this one restarted) keeps routing the
// BYEs of calls established here.
func (s *Server) Drain() { s.draining.Store(true) }

// ActiveCalls returns the INVITEs currently relayed upstream and waiting for their final
// response (calls being set up).
func (s *Server) ActiveCalls() int { return int(s.invites.Load()) }

// Bans returns the node's brute-force defence, to list and lift bans (control API).
func (s *Server) Bans() *Bans { return s.bans }

// ActiveDialogs returns calls answered through this edge and not yet ended by a BYE
// seen here (or expired after DialogTimeout).
func (s *Server) ActiveDialogs() int { return s.dlg.len() }

// dialKey marks contexts under which the edge itself opens TCP connections.
type dialKey struct{}

func allowDial(ctx context.Context) context.Context { return context.WithValue(ctx, dialKey{}, true) }

// awaitServing returns once sipgo has registered the UDP listener in its connection pool
// and the TCP listen port, which ServeUDP and ServeTCP do inside their goroutines. Until
// then a relay to a UDP upstream (from a TCP caller, say) finds no pooled socket for the
// edge's own address, tries to bind a new one there and fails: the call got 503 when it
// came in the first milliseconds. It also returns when a listener stopped (the error
// stays in errc for Run) or ctx ends.
func (s *Server) awaitServing(ctx context.Context, errc chan error) {
	tl := s.tp
	for {
		if c, _ := tl.GetConnection("udp", s.udp.LocalAddr().String()); c != nil && len(tl.ListenPorts("tcp")) > 0 {
			return
		}
		select {
		case err := <-errc:
			errc <- err // room: it was just taken out
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

var errDialRefused = errors.New("sip: outbound connection not requested by the edge")

// dialGuard lets sipgo open a TCP connection only for a send the edge asked for (to a
// resolved upstream or a token-verified flow). sipgo also dials on its own, to the host
// of a request's Via, when the TCP connection a request came on is already gone by the
// time its transaction is created; an attacker could use that to make the edge connect
// anywhere. Those dials are refused.
func (s *Server) dialGuard(ctx context.Context, _, _ string, _ syscall.RawConn) error {
	if ctx.Value(dialKey{}) == nil {
		s.m.drop(dropDialRefused)
		return errDialRefused
	}
	return nil
}

// listenBoth binds UDP and TCP on the same host:port; with port 0 it retries until one
// free port is free for both.
func listenBoth(listen string) (*net.UDPConn, *net.TCPListener, error) {
	ip, port, err := splitListen(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("sip: listen %q: %w", listen, err)
	}
	udpNet, tcpNet := "udp", "tcp"
	if ip.IsValid() && ip.Is4() {
		udpNet, tcpNet = "udp4", "tcp4"
	} else if ip.IsValid() {
		udpNet, tcpNet = "udp6", "tcp6"
	}
	var ipn net.IP
	if ip.IsValid() {
		ipn = net.IP(ip.AsSlice())
	}
	for attempt := 0; ; attempt++ {
		u, err := net.ListenUDP(udpNet, &net.UDPAddr{IP: ipn, Port: port})
		if err != nil {
			return nil, nil, fmt.Errorf("sip: listen udp %s: %w", listen, err)
		}
		p := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.ListenTCP(tcpNet, &net.TCPAddr{IP: ipn, Port: p})
		if err == nil {
			return u, t, nil
		}
		u.Close()
		if port != 0 || attempt >= 20 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("sip: listen tcp %s: %w", listen, err)
		}
	}
}

// advertise picks the host:port for Via and Record-Route.
func (s *Server) advertise(bound netip.AddrPort) advertised {
	if s.cfg.Advertise != "" {
		host, port, _ := splitAdvertise(s.cfg.Advertise)
		if port == 0 {
			port = int(bound.Port())
		}
		return advertised{host: host, port: port}
	}
	ip := bound.Addr()
	if ip.IsUnspecified() {
		ip = outboundIP(s.cfg.Upstream, s.localIPs)
	}
	return advertised{host: ip.String(), port: int(bound.Port())}
}

func (a advertised) hostport() string {
	return net.JoinHostPort(a.host, strconv.Itoa(a.port))
}

// outboundIP is the local address the kernel would use to reach the upstream (a UDP
// "connect" sends nothing), else the first global unicast interface address, else
// 127.0.0.1.
func outboundIP(upstream string, local []netip.Addr) netip.Addr {
	if spec, err := parseUpstream(upstream); err == nil {
		if ip, err := netip.ParseAddr(spec.host); err == nil {
			if c, err := net.Dial("udp", netip.AddrPortFrom(ip, uint16(spec.port)).String()); err == nil {
				la := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
				c.Close()
				if la.IsValid() && !la.IsUnspecified() {
					return la
				}
			}
		}
	}
	for _, ip := range local {
		if ip.Is4() && ip.IsGlobalUnicast() {
			return ip
		}
	}
	for _, ip := range local {
		if ip.IsGlobalUnicast() {
			return ip
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

func interfaceIPs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
