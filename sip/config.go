package sip

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Defaults applied by [New] to zero fields of [Config].
const (
	DefaultListen                 = "0.0.0.0:5060"
	DefaultRealm                  = "sipedge"
	DefaultNonceTTL               = 300 * time.Second
	DefaultUpstreamTimeout        = 32 * time.Second  // RFC 3261 Timer B = 64*T1
	DefaultInviteTimeout          = 180 * time.Second // RFC 3261 Timer C (> 3 min is RFC, 180 s is common)
	DefaultUpstreamConnectTimeout = 5 * time.Second
	DefaultMaxMessageBytes        = 32 << 10
	DefaultMaxPending             = 10000
	DefaultUserAgent              = "sipedge"
	DefaultUDPReadBuffer          = 4 << 20
	DefaultTCPReadIdleTimeout     = 5 * time.Minute
	DefaultTCPWriteTimeout        = 30 * time.Second
	DefaultDialogTimeout          = 4 * time.Hour
	DefaultRetryAfter             = 5 * time.Second

	// Brute-force and scanner defence, call caps, trusted proxies (see README.md).
	DefaultBanThreshold       = 5
	DefaultBanWindow          = 60 * time.Second
	DefaultBanTTL             = 10 * time.Minute
	DefaultBanAction          = BanActionDrop
	DefaultMaxBans            = 1 << 16
	DefaultBanRefresh         = time.Second
	DefaultBanStoreTimeout    = 250 * time.Millisecond
	DefaultRateLimitRequests  = 30
	DefaultRateLimitWindow    = 2 * time.Second
	DefaultMaxRateSources     = 1 << 16
	DefaultConcurrentCapCode  = 486
	DefaultProxyHeaderTimeout = 5 * time.Second

	// MinNonceKeyBytes is the shortest accepted [Config.NonceKey].
	MinNonceKeyBytes = 32
	// maxMessageCap is the largest [Config.MaxMessageBytes]: sipgo's read buffer is a uint16.
	maxMessageCap = 65535
)

// Values of [Config.BanAction].
const (
	BanActionDrop = "drop" // banned sources get no answer at all (UDP dropped before parsing, TCP closed)
	BanAction403  = "403"  // banned sources get 403 Forbidden (costs a parse and an answer per request)
)

// ErrInvalidConfig is wrapped by every error [Config.Validate] returns.
var ErrInvalidConfig = errors.New("sip: invalid config")

// Config is the SIP edge configuration. The zero value of every field but NonceKey means
// "the default" (see the Default* constants); NonceKey is required.
type Config struct {
	// Listen is the host:port both UDP and TCP bind. Port 0 picks one free port that both
	// transports then share. Default "0.0.0.0:5060".
	Listen string

	// Advertise is the host[:port] written into our Via and Record-Route. Default: the
	// listen IP, or, when that is a wildcard, the local address the kernel would use to
	// reach the default upstream (else the first non-loopback interface address). The
	// port defaults to the bound port.
	Advertise string

	// Upstream is the default next hop for allowed INVITEs, "sip:host[:port][;transport=tcp]".
	// A trunk's upstream_uri overrides it. Host names are resolved by the app (A/AAAA,
	// cached for a minute), never per request by sipgo.
	Upstream string

	// Realm is the digest realm every 407 names. Credentials carry HA1s computed over it.
	Realm string

	// DigestAlgorithms is the default set and order of Proxy-Authenticate challenges
	// ("MD5", "SHA-256"). The default is one MD5 challenge (DESIGN §4.5): deployed UAs
	// (libre/baresip 1.x, older Asterisk) give up on a 407 that offers an algorithm they
	// do not know, even next to MD5. A trunk's digest_algorithms overrides it (one
	// challenge per algorithm, most preferred first, RFC 8760).
	DigestAlgorithms []string

	// IdentityHeaderPrefix names the headers the edge adds to an initial INVITE for the
	// core: <prefix>Trunk, <prefix>Account, <prefix>Auth (ip or digest) and, for digest,
	// <prefix>User. Every header a PBX sends with this prefix is removed. Default
	// DefaultIdentityHeaderPrefix ("X-Sipedge-").
	IdentityHeaderPrefix string
	// StripHeaders are removed from initial INVITEs from PBXs (default
	// DefaultStripHeaders: P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID).
	StripHeaders []string

	// NonceKey signs digest nonces and Record-Route tokens. At least 32 bytes; every node
	// of a deployment must share it, so a nonce or a route issued by one node verifies on
	// another. Never logged.
	NonceKey []byte

	// NonceTTL is how long a nonce stays fresh; a correct answer to an older one gets
	// 407 stale=true. Default 300 s.
	NonceTTL time.Duration

	// UpstreamTimeout bounds the wait for the first response from upstream (RFC 3261
	// Timer B); when it fires the PBX gets 408. Default 32 s.
	UpstreamTimeout time.Duration

	// InviteTimeout bounds the wait for a final response once upstream has sent a
	// provisional one (RFC 3261 Timer C); when it fires the edge CANCELs upstream and
	// answers 408. Default 180 s.
	InviteTimeout time.Duration

	// UpstreamConnectTimeout bounds opening a TCP connection to the upstream; failure
	// answers 503. Default 5 s.
	UpstreamConnectTimeout time.Duration

	// MaxMessageBytes caps a SIP message (parser limit; larger TCP messages close the
	// connection, larger datagrams are dropped). Default 32 KiB, at most 65535.
	MaxMessageBytes int

	// MaxPendingTransactions caps requests being relayed at once; beyond it new INVITEs
	// get 503 + Retry-After. Default 10000.
	MaxPendingTransactions int
	// MaxUDPLoopSources bounds the source addresses one sipgo UDP read loop remembers
	// before it is restarted to forget them (udploop.go). Default 4096.
	MaxUDPLoopSources int

	// HeaderTimeout is how long a TCP peer may take to deliver one message header, from
	// its first byte (a slowloris bound). Default DefaultHeaderTimeout (10 s).
	HeaderTimeout time.Duration

	// MaxTCPConns bounds accepted TCP connections in all (and never above three quarters
	// of RLIMIT_NOFILE); MaxTCPConnsPerSource per source address (IPv6: per /64), and
	// MaxTCPConnsListed for a source an ACL lists (or an upstream). Defaults 20000, 32, 512.
	MaxTCPConns          int
	MaxTCPConnsPerSource int
	MaxTCPConnsListed    int

	// MaxPendingPerTrunk and MaxPendingPerAccount are each trunk's and each account's
	// share of MaxPendingTransactions (INVITEs being set up), so one trunk whose upstream
	// answers 180 and goes silent cannot starve every other tenant (DESIGN §4a). Beyond
	// it that trunk's INVITEs get 503 + Retry-After. Defaults: a tenth and a quarter of
	// MaxPendingTransactions.
	MaxPendingPerTrunk   int
	MaxPendingPerAccount int

	// UserAgent is the Server header of responses the edge generates. Default "sipedge",
	// never a version. "-" sends no Server header.
	UserAgent string

	// UDPReadBuffer is SO_RCVBUF of the UDP socket (capped by net.core.rmem_max).
	// Default 4 MiB: a UDP reader drops datagrams with the kernel default.
	UDPReadBuffer int

	// UDPReaders is how many goroutines read the UDP socket. Each reads a datagram, has
	// sipgo parse it and runs the edge's handling inline (admission, the transaction
	// table, the decision, the relay), so readers are the edge's parallelism for UDP: one
	// per core the edge may use, at most (their reads of the one socket take turns; the
	// parsing and handling run in parallel). Datagrams of one flow may then be handled
	// slightly out of order, as UDP allows anyway. Default GOMAXPROCS (at most 16): on 2
	// vCPUs shared with SIPp, 2 readers passed 4000 calls/s where 1 failed (README).
	UDPReaders int

	// TCPReadIdleTimeout closes a TCP connection that sent nothing for this long
	// (slowloris guard; pick minutes, it also cuts quiet trunks). Default 5 min.
	TCPReadIdleTimeout time.Duration
	// TCPWriteTimeout bounds one TCP write. Default 30 s.
	TCPWriteTimeout time.Duration

	// TransactionLinger, when > 0, shortens how long the relay's transaction table keeps a
	// finished transaction to absorb retransmissions (RFC 3261 Timers J, L, M, D: 64·T1 =
	// 32 s). A finished transaction is about 340 bytes (its keys, flows and last response),
	// so the RFC window costs little; a shorter linger deviates from RFC 3261/6026 and is not
	// needed for speed. 0 keeps the RFC value.
	TransactionLinger time.Duration

	// DialogTimeout is how long an answered call counts in sipedge_sip_active_dialogs
	// when no BYE is seen. Routing of in-dialog requests is stateless and does not
	// depend on it. Default 4 h.
	DialogTimeout time.Duration

	// RetryAfter is the Retry-After of 503 answers (not ready, draining, overload).
	// Default 5 s.
	RetryAfter time.Duration

	// BanThreshold is how many failures (wrong digest answers, unknown users, INVITEs to a
	// trunk the source may not use) within BanWindow ban a source for BanTTL. A plain
	// first 407 challenge is never a failure. Sources inside an enabled entry of any ACL
	// are never banned. Default 5; -1 turns the defence off.
	BanThreshold int
	// BanWindow is the period failures are counted over. Default 60 s.
	BanWindow time.Duration
	// BanTTL is how long a ban lasts. Default 10 min.
	BanTTL time.Duration
	// BanAction is what a banned source gets: "drop" (default: nothing; UDP datagrams are
	// dropped before parsing, TCP connections closed) or "403" (Forbidden to every
	// request; costs a parse and an answer each).
	BanAction string
	// MaxBans bounds the node's ban table and failure counters (each). Default 65536.
	MaxBans int
	// BanRefresh is how often the node re-reads the shared ban list ([WithBanStore],
	// Redis mode), so bans set and lifted on other nodes apply here. Default 1 s.
	BanRefresh time.Duration
	// BanStoreTimeout bounds one call to the shared ban store. The SIP path never waits
	// for it: calls run in the background. Default 250 ms.
	BanStoreTimeout time.Duration
	// NodeName is recorded in the bans this node sets (acl.Ban.Node). Optional.
	NodeName string

	// RateLimitRequests is the per-source request budget over RateLimitWindow for sources
	// not listed in any ACL (token bucket; bursts up to the budget). Requests beyond it
	// are dropped before parsing (UDP) or close the connection (TCP). Responses and the
	// configured upstreams are not limited. Default 30 per 2 s (Kamailio pike's scale);
	// -1 turns it off.
	RateLimitRequests int
	// RateLimitWindow is the period of RateLimitRequests. Default 2 s.
	RateLimitWindow time.Duration
	// RateLimitListedRequests is the budget per RateLimitWindow of sources listed in an
	// enabled ACL entry: 0 (default) exempts them, so a flood from unlisted sources can
	// never starve known PBXs of their budget.
	RateLimitListedRequests int
	// MaxRateSources bounds the sources tracked by the rate limiter; when full, idle
	// ones are evicted first. Default 65536.
	MaxRateSources int

	// ConcurrentCapCode is the answer to an INVITE beyond its trunk's max_concurrent:
	// 486 Busy Here (default) or 503 Service Unavailable (with Retry-After). An INVITE
	// beyond max_cps always gets 503 with Retry-After: 1.
	ConcurrentCapCode int

	// TrustedProxies are the load balancers whose PROXY protocol v1/v2 header (TCP only)
	// names the original source, which then stands for the connection in every decision.
	// A PROXY header from any other peer is refused: the connection is closed, logged
	// and counted. A trusted peer that sends no header is itself the source. UDP carries
	// no PROXY protocol.
	TrustedProxies []netip.Prefix
	// ProxyHeaderTimeout bounds the wait for a trusted proxy's PROXY header. Default 5 s.
	ProxyHeaderTimeout time.Duration

	// Logger receives the edge's own log lines; the caller names the component
	// (log.With().Str("component", "sip")). The zero value logs nothing.
	Logger zerolog.Logger

	// SlogLogger, when set, receives sipgo's own logging (transport and transaction
	// layers). Keep it at Warn or above: below that sipgo logs per packet. Nil leaves
	// sipgo on its default logger (sip.SetDefaultLogger). [WithSIPLogger] overrides it.
	SlogLogger *slog.Logger

	// Registerer, when set, receives the sipedge_sip_* metrics.
	Registerer prometheus.Registerer

	// OnDenied, when set, is called with every request the security log records as
	// `sip_denied` (also those its sampling skips), on the SIP path: it must not block.
	OnDenied func(DenialEvent)
}

// Option configures optional collaborators of a [Server].
type Option func(*options)

type options struct {
	slog     *slog.Logger
	resolver *net.Resolver
	bans     BanStore
	nodes    func() int
	hits     HitRecorder
	// replay is the cluster-wide digest replay guard; replayErr counts its failures.
	replay    ReplayGuard
	replayErr func(error)
}

// WithSIPLogger routes sipgo's own logging (transport and transaction layers) to l, like
// [Config.SlogLogger].
func WithSIPLogger(l *slog.Logger) Option { return func(o *options) { o.slog = l } }

// WithResolver sets the resolver for upstream host names (default net.DefaultResolver).
func WithResolver(r *net.Resolver) Option { return func(o *options) { o.resolver = r } }

// WithBanStore shares failure counts and bans with other nodes through bs (the Redis
// implementation is store.(*Store).BanStore). The SIP path never waits for it: the node
// keeps its own ban table, consults bs in the background and re-reads its bans every
// [Config.BanRefresh]. Without it bans are local to the node.
func WithBanStore(bs BanStore) Option { return func(o *options) { o.bans = bs } }

// WithReplayGuard makes digest nonce-counts single-use across the cluster (the Redis
// implementation is store.(*Store).ReplayGuard); onErr (may be nil) is told of each
// failure, after which the node's own replay cache alone decides.
func WithReplayGuard(g ReplayGuard, onErr func(error)) Option {
	return func(o *options) { o.replay, o.replayErr = g, onErr }
}

// WithNodeCount reports how many edge nodes share the load (Redis mode); each enforces
// a trunk's max_cps and max_concurrent divided by it (rounded up), so the cluster-wide
// limit holds approximately. It is called per capped INVITE and must be cheap and
// non-blocking (e.g. an atomic the heartbeat loop updates). Default: 1.
func WithNodeCount(n func() int) Option { return func(o *options) { o.nodes = n } }

// HitRecorder counts which ACL entry let an INVITE in (hits.Recorder implements it).
// Record is called on the SIP path: it must be cheap, lock-free and allocation-free.
type HitRecorder interface {
	Record(account, aclUUID, entryID string)
}

// WithHitRecorder makes every INVITE allowed by IP count a hit on the entry that matched,
// as the decision names it ([acl.Decision] EntryACL, EntryID).
func WithHitRecorder(r HitRecorder) Option { return func(o *options) { o.hits = r } }

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.Listen = cmp.Or(c.Listen, DefaultListen)
	c.Realm = cmp.Or(c.Realm, DefaultRealm)
	c.IdentityHeaderPrefix = cmp.Or(c.IdentityHeaderPrefix, DefaultIdentityHeaderPrefix)
	if c.StripHeaders == nil {
		c.StripHeaders = DefaultStripHeaders
	}
	if len(c.DigestAlgorithms) == 0 {
		c.DigestAlgorithms = []string{acl.DigestMD5}
	}
	c.NonceTTL = cmp.Or(c.NonceTTL, DefaultNonceTTL)
	c.UpstreamTimeout = cmp.Or(c.UpstreamTimeout, DefaultUpstreamTimeout)
	c.InviteTimeout = cmp.Or(c.InviteTimeout, DefaultInviteTimeout)
	c.UpstreamConnectTimeout = cmp.Or(c.UpstreamConnectTimeout, DefaultUpstreamConnectTimeout)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MaxPendingTransactions = cmp.Or(c.MaxPendingTransactions, DefaultMaxPending)
	c.MaxTCPConns = cmp.Or(c.MaxTCPConns, DefaultMaxTCPConns)
	c.HeaderTimeout = cmp.Or(c.HeaderTimeout, DefaultHeaderTimeout)
	c.MaxUDPLoopSources = cmp.Or(c.MaxUDPLoopSources, DefaultMaxUDPLoopSources)
	c.MaxTCPConnsPerSource = cmp.Or(c.MaxTCPConnsPerSource, DefaultMaxTCPConnsPerSource)
	c.MaxTCPConnsListed = cmp.Or(c.MaxTCPConnsListed, DefaultMaxTCPConnsListed)
	c.MaxPendingPerTrunk = cmp.Or(c.MaxPendingPerTrunk, max(c.MaxPendingTransactions/10, 1))
	c.MaxPendingPerAccount = cmp.Or(c.MaxPendingPerAccount, max(c.MaxPendingTransactions/4, 1))
	c.UserAgent = cmp.Or(c.UserAgent, DefaultUserAgent)
	c.UDPReadBuffer = cmp.Or(c.UDPReadBuffer, DefaultUDPReadBuffer)
	c.UDPReaders = cmp.Or(c.UDPReaders, min(runtime.GOMAXPROCS(0), 16))
	c.TCPReadIdleTimeout = cmp.Or(c.TCPReadIdleTimeout, DefaultTCPReadIdleTimeout)
	c.TCPWriteTimeout = cmp.Or(c.TCPWriteTimeout, DefaultTCPWriteTimeout)
	c.DialogTimeout = cmp.Or(c.DialogTimeout, DefaultDialogTimeout)
	c.RetryAfter = cmp.Or(c.RetryAfter, DefaultRetryAfter)
	c.BanThreshold = cmp.Or(c.BanThreshold, DefaultBanThreshold)
	c.BanWindow = cmp.Or(c.BanWindow, DefaultBanWindow)
	c.BanTTL = cmp.Or(c.BanTTL, DefaultBanTTL)
	c.BanAction = cmp.Or(c.BanAction, DefaultBanAction)
	c.MaxBans = cmp.Or(c.MaxBans, DefaultMaxBans)
	c.BanRefresh = cmp.Or(c.BanRefresh, DefaultBanRefresh)
	c.BanStoreTimeout = cmp.Or(c.BanStoreTimeout, DefaultBanStoreTimeout)
	c.RateLimitRequests = cmp.Or(c.RateLimitRequests, DefaultRateLimitRequests)
	c.RateLimitWindow = cmp.Or(c.RateLimitWindow, DefaultRateLimitWindow)
	c.MaxRateSources = cmp.Or(c.MaxRateSources, DefaultMaxRateSources)
	c.ConcurrentCapCode = cmp.Or(c.ConcurrentCapCode, DefaultConcurrentCapCode)
	c.ProxyHeaderTimeout = cmp.Or(c.ProxyHeaderTimeout, DefaultProxyHeaderTimeout)
	return c
}

// Validate reports every problem of c (after defaults) at once. Errors wrap
// [ErrInvalidConfig]. It never prints NonceKey.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if _, _, err := splitListen(c.Listen); err != nil {
		bad("listen %q: %v", c.Listen, err)
	}
	if c.Advertise != "" {
		if _, _, err := splitAdvertise(c.Advertise); err != nil {
			bad("advertise %q: %v", c.Advertise, err)
		}
	}
	if c.Upstream != "" {
		if _, err := parseUpstream(c.Upstream); err != nil {
			bad("upstream %q: %v", c.Upstream, err)
		}
	}
	if !validHeaderText(c.Realm) || strings.ContainsAny(c.Realm, `"\`) {
		bad("realm %q: must be printable and contain no quote or backslash", c.Realm)
	}
	if err := checkAlgorithms(c.DigestAlgorithms); err != nil {
		bad("digest algorithms: %v", err)
	}
	if len(c.NonceKey) < MinNonceKeyBytes {
		bad("nonce key: %d bytes, need at least %d", len(c.NonceKey), MinNonceKeyBytes)
	}
	if c.MaxMessageBytes < 1024 || c.MaxMessageBytes > maxMessageCap {
		bad("max message bytes %d: must be within 1024..%d", c.MaxMessageBytes, maxMessageCap)
	}
	if c.UserAgent != "-" && !validHeaderText(c.UserAgent) {
		bad("user agent %q: must be printable", c.UserAgent)
	}
	for name, d := range map[string]time.Duration{
		"nonce TTL": c.NonceTTL, "upstream timeout": c.UpstreamTimeout,
		"invite timeout": c.InviteTimeout, "upstream connect timeout": c.UpstreamConnectTimeout,
		"TCP read idle timeout": c.TCPReadIdleTimeout, "TCP write timeout": c.TCPWriteTimeout,
		"dialog timeout": c.DialogTimeout, "retry after": c.RetryAfter,
		"ban window": c.BanWindow, "ban TTL": c.BanTTL, "ban refresh": c.BanRefresh,
		"ban store timeout": c.BanStoreTimeout, "rate limit window": c.RateLimitWindow,
		"proxy header timeout": c.ProxyHeaderTimeout,
	} {
		if d < 0 {
			bad("%s %v: must not be negative", name, d)
		}
	}
	if c.RetryAfter < time.Second {
		bad("retry after %v: must be at least 1s", c.RetryAfter)
	}
	if c.TransactionLinger < 0 {
		bad("transaction linger %v: must not be negative", c.TransactionLinger)
	}
	if c.UDPReaders < 0 || c.UDPReaders > 64 {
		bad("UDP readers %d: must be 1 to 64", c.UDPReaders)
	}
	if c.MaxPendingTransactions < 0 || c.UDPReadBuffer < 0 {
		bad("max pending transactions and UDP read buffer must not be negative")
	}
	if c.BanThreshold < -1 || c.RateLimitRequests < -1 {
		bad("ban threshold %d, rate limit %d: use a positive number, or -1 for off", c.BanThreshold, c.RateLimitRequests)
	}
	if c.RateLimitListedRequests < 0 {
		bad("rate limit for listed sources %d: must not be negative (0 exempts them)", c.RateLimitListedRequests)
	}
	if c.BanAction != BanActionDrop && c.BanAction != BanAction403 {
		bad("ban action %q: must be %q or %q", c.BanAction, BanActionDrop, BanAction403)
	}
	if c.MaxBans < 0 || c.MaxRateSources < 0 {
		bad("max bans and max rate sources must not be negative")
	}
	if c.ConcurrentCapCode != 486 && c.ConcurrentCapCode != 503 {
		bad("concurrent cap code %d: must be 486 or 503", c.ConcurrentCapCode)
	}
	if !validHeaderText(c.NodeName) && c.NodeName != "" {
		bad("node name %q: must be printable", c.NodeName)
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() {
			bad("trusted proxy %v: must be a canonical prefix (e.g. %v)", p, p.Masked())
		} else if p.Bits() == 0 {
			bad("trusted proxy %v: /0 would trust every peer", p)
		}
	}
	return errors.Join(errs...)
}

// checkAlgorithms accepts a non-empty list of distinct "MD5" / "SHA-256" (any case).
func checkAlgorithms(algs []string) error {
	if len(algs) == 0 {
		return errors.New("empty list")
	}
	seen := map[string]bool{}
	for _, a := range algs {
		ca, ok := canonicalAlgorithm(a)
		if !ok {
			return fmt.Errorf("%q: only %s and %s are supported", a, acl.DigestMD5, acl.DigestSHA256)
		}
		if seen[ca] {
			return fmt.Errorf("%q listed twice", a)
		}
		seen[ca] = true
	}
	return nil
}

// canonicalAlgorithms returns algs in canonical spelling, dropping unknown and repeated
// names; nil when nothing usable is left.
func canonicalAlgorithms(algs []string) []string {
	var out []string
	for _, a := range algs {
		if ca, ok := canonicalAlgorithm(a); ok && !containsString(out, ca) {
			out = append(out, ca)
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validHeaderText reports whether s is non-empty printable ASCII (space allowed) without
// CR/LF, so it can be written into a header value as is.
func validHeaderText(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// splitListen parses "host:port" (host may be empty or a wildcard; it must be an IP
// literal, as binding a name is ambiguous).
func splitListen(s string) (netip.Addr, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("bad port %q", ps)
	}
	if host == "" {
		return netip.Addr{}, port, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("host must be an IP address: %v", err)
	}
	return ip.Unmap(), port, nil
}

// splitAdvertise parses "host", "host:port", "[v6]" or "[v6]:port". Port 0 = unset.
func splitAdvertise(s string) (string, int, error) {
	if !validHeaderText(s) || strings.ContainsAny(s, " ;,<>\"") {
		return "", 0, errors.New("must be a bare host or host:port")
	}
	host, port := s, 0
	if h, ps, err := net.SplitHostPort(s); err == nil {
		p, err := strconv.Atoi(ps)
		if err != nil || p <= 0 || p > 65535 {
			return "", 0, fmt.Errorf("bad port %q", ps)
		}
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if host == "" {
		return "", 0, errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return "", 0, errors.New("wildcard address cannot be advertised")
		}
		return ip.Unmap().String(), port, nil
	}
	if strings.Contains(host, ":") {
		return "", 0, errors.New("bad host")
	}
	return strings.ToLower(host), port, nil
}
