package control

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Control-API protection (issue 8, part 5): an optional allow list of client addresses,
// X-Forwarded-For believed only from trusted proxies, and a per-client limit on failed
// authentication.

// Defaults of the failed-authentication limit (see [Config.AuthFailureLimit]).
const (
	DefaultAuthFailureLimit  = 10
	DefaultAuthFailureWindow = time.Minute
	DefaultAuthBlock         = 5 * time.Minute

	// maxAuthTracked bounds the clients whose failures are counted. When the table is
	// full, expired records are swept (at most once a second: a sweep reads them all),
	// then a record that is not blocking anyone gives way (among authEvictScan looked
	// at); failing both, the failure counts against one shared overflow record, whose
	// block refuses every client the table does not hold while it stays full. So a
	// client is never left uncounted: an attacker who first fills the table from many
	// addresses (65,536 IPv6 /64s are one /48) gains no unlimited guesses.
	maxAuthTracked = 1 << 16
	authEvictScan  = 64

	// While the overflow record blocks, clients beyond the full table still have their
	// credentials checked (valid ones pass), but only overflowChecksPerSecond times a
	// second among all of them (burst overflowCheckBurst); a valid credential gives its
	// check back. So filling the table buys an attacker at most that many guesses a
	// second, not an unlimited oracle.
	overflowChecksPerSecond = 5
	overflowCheckBurst      = 20
)

// Reasons of sipedge_api_denied_total.
const (
	denyNotAllowed   = "not_allowed"       // client outside Config.APIAllow
	denyBadForwarded = "bad_forwarded"     // a trusted proxy sent an unusable X-Forwarded-For
	denyAuthLimited  = "auth_rate_limited" // too many failed authentications
)

// ParsePrefixes reads a comma-separated list of IPv4/IPv6 addresses and CIDR blocks (as
// --api-allow and --trusted-proxies take them) into canonical prefixes. Empty input is
// an empty list; /0 and host bits are rejected, as in ACLs.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		p, err := acl.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// guard judges every request by its client address before it is routed.
type guard struct {
	allow   []netip.Prefix // empty: everyone
	metrics []netip.Prefix // what Guard wraps (/metrics); empty: everyone
	trusted []netip.Prefix
	limit   int // failures per window; 0: no limit
	window  time.Duration
	block   time.Duration
	now     func() time.Time // real time; a test may replace it
	log     zerolog.Logger

	mu       sync.Mutex
	fails    map[netip.Addr]*authRecord
	swept    time.Time  // last sweep of a full table
	overflow authRecord // failures of clients a full table could not take
	ovTokens float64    // credential checks left for clients under the overflow block
	ovAt     time.Time  // when ovTokens was last refilled

	ignoredLogged atomic.Int64 // unix ns of the last "XFF ignored" log line
	m             *guardMetrics
}

// authRecord counts the failed authentications of one client in a fixed window.
type authRecord struct {
	start   time.Time // window start
	n       int
	blocked time.Time // blocked until (zero: not blocked)
}

func newGuard(cfg Config, log zerolog.Logger) *guard {
	g := &guard{
		allow:   masked(cfg.APIAllow),
		metrics: masked(cfg.APIAllow),
		trusted: masked(cfg.TrustedProxies),
		limit:   cfg.AuthFailureLimit,
		window:  cfg.AuthFailureWindow,
		block:   cfg.AuthBlock,
		now:     time.Now,
		log:     log,
		fails:   map[netip.Addr]*authRecord{},
	}
	if cfg.MetricsAllow != nil {
		g.metrics = masked(cfg.MetricsAllow)
	}
	switch {
	case g.limit == 0:
		g.limit = DefaultAuthFailureLimit
	case g.limit < 0:
		g.limit = 0
	}
	if g.window <= 0 {
		g.window = DefaultAuthFailureWindow
	}
	if g.block <= 0 {
		g.block = DefaultAuthBlock
	}
	if cfg.Registerer != nil {
		g.m = newGuardMetrics(cfg.Registerer, g)
	}
	return g
}

// masked returns the valid prefixes of ps in canonical form (IPv4-mapped ones as IPv4),
// the way client addresses are compared.
func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		a, bits := p.Addr().WithZone(""), p.Bits()
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// client returns the address a request is judged by: the socket peer, or, when the peer
// is a trusted proxy, the right-most X-Forwarded-For address that is not a trusted proxy
// (everything left of it was written by the client and proves nothing). ok is false when
// the peer is unparsable or a trusted proxy sent an unusable header; peer is then what
// the socket says, for counting.
func (g *guard) client(r *http.Request) (client netip.Addr, ok bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	peer := ap.Addr().Unmap().WithZone("")
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return peer, true
	}
	if !inAny(g.trusted, peer) {
		g.m.ignored()
		g.logIgnored(peer)
		return peer, true
	}
	var hops []string
	for _, v := range xff {
		hops = append(hops, strings.Split(v, ",")...)
	}
	var left netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := forwardedAddr(hops[i])
		if !ok {
			return peer, false
		}
		if !inAny(g.trusted, a) {
			return a, true
		}
		left = a
	}
	return left, true // every hop is a trusted proxy: the left-most is the origin
}

// forwardedAddr parses one X-Forwarded-For element: an address, or ip:port / [ipv6]:port
// as some proxies write it.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// logIgnored logs an ignored X-Forwarded-For at most once a minute (it is counted always).
func (g *guard) logIgnored(peer netip.Addr) {
	now := g.now().UnixNano()
	last := g.ignoredLogged.Load()
	if now-last < int64(time.Minute) || !g.ignoredLogged.CompareAndSwap(last, now) {
		return
	}
	g.log.Warn().Str("event", "api_xff_ignored").Str("peer", peer.String()).
		Msg("X-Forwarded-For from a peer outside the trusted proxies ignored (logged once a minute, counted always)")
}

// check admits or refuses a request; it returns the client it judged by (invalid when
// unknown) and, for a refusal, the error to render (403 or 429). A client refused only by
// the shared overflow record of a full failure table is not refused here: overflow is
// how long that block lasts, and the caller lets the request through only with valid
// credentials (see [guard.overflowed]), so an operator is never locked out by someone
// else's failures while a wrong guess is still counted and refused.
func (g *guard) check(r *http.Request) (client netip.Addr, overflow time.Duration, err error) {
	return g.checkAllow(r, g.allow)
}

// checkAllow is check with the allow list allow.
func (g *guard) checkAllow(r *http.Request, allow []netip.Prefix) (client netip.Addr, overflow time.Duration, err error) {
	client, ok := g.client(r)
	if !ok {
		if len(allow) > 0 {
			g.m.denied(denyBadForwarded)
			return netip.Addr{}, 0, errorf(http.StatusForbidden, "forbidden: the client address cannot be determined")
		}
		peer, _ := netip.ParseAddrPort(r.RemoteAddr) // count failures against the peer
		client = peer.Addr().Unmap()
	}
	if ok && len(allow) > 0 && !inAny(allow, client) {
		g.m.denied(denyNotAllowed)
		return client, 0, errorf(http.StatusForbidden, "forbidden: %s may not use this API", client)
	}
	wait, shared := g.blocked(client)
	switch {
	case wait > 0 && shared && g.takeOverflowCheck():
		return client, wait, nil
	case wait > 0:
		g.m.denied(denyAuthLimited)
		return client, 0, tooManyFailures(client, wait)
	}
	return client, 0, nil
}

// takeOverflowCheck reserves one credential check for a client under the overflow block.
func (g *guard) takeOverflowCheck() bool {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ovAt.IsZero() {
		g.ovTokens = overflowCheckBurst
	} else {
		g.ovTokens = math.Min(overflowCheckBurst, g.ovTokens+now.Sub(g.ovAt).Seconds()*overflowChecksPerSecond)
	}
	g.ovAt = now
	if g.ovTokens < 1 {
		return false
	}
	g.ovTokens--
	return true
}

// returnOverflowCheck gives a reserved check back (the credentials were valid).
func (g *guard) returnOverflowCheck() {
	g.mu.Lock()
	g.ovTokens = math.Min(overflowCheckBurst, g.ovTokens+1)
	g.mu.Unlock()
}

func tooManyFailures(client netip.Addr, wait time.Duration) error {
	secs := strconv.Itoa(int(math.Ceil(wait.Seconds())))
	return &apiError{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {secs}},
		msg: fmt.Sprintf("too many failed authentications from %s: retry in %s s", client, secs)}
}

// overflowed judges a request of a client under the overflow block (c.overflow > 0) after
// its authentication step (authErr): valid credentials pass; anything else — a wrong or
// missing credential, a public route — gets the block's 429, and a wrong credential is
// counted (against the overflow record, extending its block).
func (g *guard) overflowed(c *call, auth authKind, authErr error) error {
	if auth != authNone && authErr == nil {
		g.returnOverflowCheck()
		return nil
	}
	var ae *apiError
	if errors.As(authErr, &ae) && ae.status == http.StatusUnauthorized && c.r.Header.Get("Authorization") != "" {
		g.authFailed(c.client)
	} else if authErr != nil && !errors.As(authErr, &ae) {
		return authErr // the store failed: 503/500, not a verdict on the client
	}
	g.m.denied(denyAuthLimited)
	return tooManyFailures(c.client, c.overflow)
}

// limitKey is the unit of the failure limit: the address, or the /64 for IPv6 (one host
// easily owns a whole /64).
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// blocked returns how long client stays blocked (0: not blocked) and whether the block is
// the shared overflow record's rather than the client's own.
func (g *guard) blocked(client netip.Addr) (time.Duration, bool) {
	if g.limit == 0 || !client.IsValid() {
		return 0, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := g.fails[limitKey(client)]
	if rec == nil {
		if len(g.fails) < maxAuthTracked {
			return 0, false
		}
		rec = &g.overflow
	}
	return rec.blocked.Sub(g.now()), rec == &g.overflow
}

// authFailed counts one failed authentication of client; the limit-th within the window
// blocks it.
func (g *guard) authFailed(client netip.Addr) {
	if g.limit == 0 || !client.IsValid() {
		return
	}
	k := limitKey(client)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := g.fails[k]
	switch {
	case rec != nil:
	case len(g.fails) < maxAuthTracked || g.makeRoom(now):
		rec = &authRecord{start: now}
		g.fails[k] = rec
	default:
		rec = &g.overflow
	}
	if now.Sub(rec.start) >= g.window {
		rec.start, rec.n = now, 0
	}
	rec.n++
	if rec.n >= g.limit && !rec.blocked.After(now) {
		rec.blocked = now.Add(g.block)
		rec.start, rec.n = now, 0
		who := client.String()
		if rec == &g.overflow {
			who = "every client beyond the full failure table"
		}
		g.log.Warn().Str("event", "api_auth_blocked").Str("client", who).Int("failures", g.limit).
			Dur("block", g.block).Msg("client blocked after failed API authentications")
	}
}

// makeRoom frees one place in the full failure table (the caller holds g.mu): a sweep
// of expired records, at most once a second, else a record not blocking anyone.
func (g *guard) makeRoom(now time.Time) bool {
	if now.Sub(g.swept) >= time.Second {
		g.swept = now
		if g.sweep(now) {
			return true
		}
	}
	n := 0
	for k, rec := range g.fails {
		if !rec.blocked.After(now) {
			delete(g.fails, k)
			return true
		}
		if n++; n >= authEvictScan {
			break
		}
	}
	return false
}

// sweep drops records whose window and block are over; false if none was.
func (g *guard) sweep(now time.Time) bool {
	n := len(g.fails)
	for k, rec := range g.fails {
		if now.Sub(rec.start) >= g.window && !rec.blocked.After(now) {
			delete(g.fails, k)
		}
	}
	return len(g.fails) < n
}

// blockedCount is the sipedge_api_auth_blocked_clients gauge.
func (g *guard) blockedCount() int {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, rec := range g.fails {
		if rec.blocked.After(now) {
			n++
		}
	}
	if g.overflow.blocked.After(now) {
		n++
	}
	return n
}

// Guard wraps next (e.g. /metrics) in the API's client checks: the [Config.MetricsAllow]
// list (by default [Config.APIAllow]), X-Forwarded-For only from [Config.TrustedProxies], and the block of clients
// with too many failed authentications. Refusals are JSON {api_id, error} like the API's.
// The API's own handler ([Server.Handler]) is guarded already.
func (s *Server) Guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, overflow, err := s.guard.checkAllow(r, s.guard.metrics)
		if err == nil && overflow > 0 {
			err = tooManyFailures(client, overflow) // what Guard wraps takes no credentials
		}
		if err != nil {
			c := &call{s: s, w: &statusWriter{ResponseWriter: w}, r: r, apiID: uuid.NewString()}
			c.w.Header().Set("X-Api-Id", c.apiID)
			c.fail(err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// guardMetrics are the guard's collectors; nil records nothing.
type guardMetrics struct {
	deniedVec *prometheus.CounterVec
	ignoredC  prometheus.Counter
}

func newGuardMetrics(reg prometheus.Registerer, g *guard) *guardMetrics {
	m := &guardMetrics{
		deniedVec: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_api_denied_total",
			Help: "Control API requests refused before routing, by reason (not_allowed, bad_forwarded, auth_rate_limited).",
		}, []string{"reason"})),
		ignoredC: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_api_forwarded_ignored_total",
			Help: "Control API requests whose X-Forwarded-For was ignored because the peer is not a trusted proxy.",
		})),
	}
	// A second server on the same registry keeps the first one's gauge.
	_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_api_auth_blocked_clients",
		Help: "Clients currently blocked (429) after too many failed control API authentications.",
	}, func() float64 { return float64(g.blockedCount()) }))
	for _, r := range []string{denyNotAllowed, denyBadForwarded, denyAuthLimited} {
		m.deniedVec.WithLabelValues(r)
	}
	return m
}

func (m *guardMetrics) denied(reason string) {
	if m != nil {
		m.deniedVec.WithLabelValues(reason).Inc()
	}
}

func (m *guardMetrics) ignored() {
	if m != nil {
		m.ignoredC.Inc()
	}
}

// validateGuard checks the guard's part of the configuration.
func (c Config) validateGuard() error {
	for _, p := range c.APIAllow {
		if !p.IsValid() {
			return fmt.Errorf("control: api allow list: invalid prefix %s", p)
		}
	}
	for _, p := range c.TrustedProxies {
		switch {
		case !p.IsValid():
			return fmt.Errorf("control: trusted proxies: invalid prefix %s", p)
		case p.Bits() == 0:
			return fmt.Errorf("control: trusted proxies: %s would let every client choose its address", p)
		}
	}
	if c.AuthFailureWindow < 0 || c.AuthBlock < 0 {
		return fmt.Errorf("control: auth failure window and block must not be negative")
	}
	return nil
}
