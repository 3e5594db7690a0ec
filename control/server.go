// Package control is the sipedge control-plane HTTP API: Plivo Zentrunk–compatible IP
// access control lists (with Vobiz-style entries), digest credentials and trunks under
// /v1/Account/{auth_id}/Zentrunk/, an optional admin API that adds accounts, the cluster
// view under /v1/Cluster/ (which live node serves which data-set version; writes accept
// ?wait=all), and the OpenAPI document of all of it at /v1/openapi.json.
//
// Every request is validated here; every write becomes exactly one [store.API] call, so a
// failed request changes nothing; every error is rendered by one function as JSON
// {api_id, error}. The package never talks SIP: the data path sees the result of a write
// through the store's snapshots.
package control

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// DefaultMaxBodyBytes is the request body limit when [Config.MaxBodyBytes] is 0.
const DefaultMaxBodyBytes = 64 << 10

// DefaultRealm is the digest realm when neither [Config.Realm] nor [Config.SIPDomain] is set.
const DefaultRealm = "sipedge"

// Config is the user-facing configuration of the API. The zero value works: no default
// trunk domain, realm [DefaultRealm], no admin API, [DefaultMaxBodyBytes], no logging and
// no metrics.
type Config struct {
	// SIPDomain is the suffix of default trunk domains: a trunk created without
	// trunk_domain answers on "<trunk_id>.<SIPDomain>" (lowercased). Empty means
	// trunk_domain must be given when a trunk is created.
	SIPDomain string
	// Realm is the digest realm every credential's HA1s are computed over. There is one
	// per deployment because a credential can serve several trunks and with HA1-only
	// storage no other realm could be verified; changing it means passwords must be set
	// again. Empty defaults to SIPDomain, then [DefaultRealm].
	Realm string
	// AdminToken guards /v1/Admin/ (Authorization: Bearer <token>). Empty disables the
	// admin API: its routes answer 404.
	AdminToken string
	// MaxBodyBytes caps request bodies; larger ones get 413. 0 means [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// Logger receives one line per request (debug), per write (info) and per internal
	// error (error). Bodies, passwords and tokens are never logged. The server adds
	// component=control itself.
	Logger zerolog.Logger
	// Registerer receives the API metrics (see README.md). Nil records none.
	Registerer prometheus.Registerer

	// APIAllow, when not empty, admits only clients inside these prefixes to the API
	// (and to whatever [Server.Guard] wraps); others get 403. The client is the socket
	// peer, or — only when the peer is inside TrustedProxies — the right-most
	// X-Forwarded-For address that is not a trusted proxy.
	APIAllow []netip.Prefix
	// MetricsAllow, when not nil, replaces APIAllow for what [Server.Guard] wraps
	// (/metrics): --metrics-allow. Nil: the same clients as the API.
	MetricsAllow []netip.Prefix
	// TrustedProxies are the reverse proxies and load balancers whose X-Forwarded-For
	// is believed. Anyone else's is ignored (and counted). /0 is refused.
	TrustedProxies []netip.Prefix
	// AuthFailureLimit failed authentications (401) of one client (an IPv6 /64) within
	// AuthFailureWindow block it for AuthBlock: every request of it gets 429 with
	// Retry-After. 0 means [DefaultAuthFailureLimit], negative turns the limit off; 0
	// durations mean [DefaultAuthFailureWindow] and [DefaultAuthBlock].
	AuthFailureLimit  int
	AuthFailureWindow time.Duration
	AuthBlock         time.Duration

	// ReservedDomains are names no trunk may use besides SIPDomain: the edge's
	// advertised SIP names (--sip-advertise). Lowercased by New.
	ReservedDomains []string
	// OwnAddrs are the edge's own SIP addresses (listen and advertise): a tenant's
	// upstream_uri may not point there (a loop) without an admin grant.
	OwnAddrs []netip.Addr
	// UpstreamAllow are the prefixes a tenant's upstream_uri must resolve inside
	// (--upstream-allow). Empty: no tenant upstream is allowed without an admin grant.
	UpstreamAllow []netip.Prefix
	// Resolve resolves an upstream_uri host name at write time; nil: the system
	// resolver. ResolveTimeout bounds it (0: [DefaultResolveTimeout]).
	Resolve        func(ctx context.Context, host string) ([]netip.Addr, error)
	ResolveTimeout time.Duration
}

// Validate reports configuration errors: a SIPDomain that is not a DNS name, a negative
// MaxBodyBytes, an AdminToken shorter than [MinTokenLength].
func (c Config) Validate() error {
	if c.SIPDomain != "" {
		if err := validDNSName(strings.ToLower(c.SIPDomain)); err != nil {
			return fmt.Errorf("control: sip domain %q: %s", c.SIPDomain, err)
		}
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("control: max body bytes %d: must not be negative", c.MaxBodyBytes)
	}
	if c.AdminToken != "" && len(c.AdminToken) < MinTokenLength {
		return fmt.Errorf("control: admin token: must be at least %d characters", MinTokenLength)
	}
	if err := c.validateGuard(); err != nil {
		return err
	}
	return nil
}

// Option changes an optional knob of [New].
type Option func(*Server)

// WithClock sets the clock used for created_at/updated_at (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Server) {
		if now != nil {
			s.now = now
		}
	}
}

// Server serves the control API. Build it with [New]; the zero value is not usable. It is
// safe for concurrent use and holds no state besides its configuration: everything lives
// in the store, so any number of servers (nodes) can share one data set.
type Server struct {
	cfg      Config
	realm    string
	maxBody  int64
	st       store.API
	log      zerolog.Logger
	now      func() time.Time
	metrics  *metrics
	mux      *http.ServeMux
	routes   []route
	patterns map[string]string     // mux pattern → route label (the documented path)
	adminSum [32]byte              // SHA-256 of Config.AdminToken, compared in constant time
	cluster  Cluster               // node registry of /v1/Cluster/ and ?wait=all; nil: not configured
	snapshot func() *acl.Snapshot  // the SIP path's policy, for Explain; nil: not configured
	hits     HitCounts             // per-entry hit totals; nil: entries show 0/null
	bans     Bans                  // ban list of /v1/Admin/Ban/; nil: not configured
	guard    *guard                // client allow list, trusted proxies, failed-auth limit
	denials  *Denials              // live denials of the console; nil: not configured
	calls    func(acl.TrunkID) int // calls in progress per trunk on this node; nil: none
	nodeID   string                // this node's id, for /v1/Admin/Restore/
	restorer Restorer              // last good data set of /v1/Admin/Restore/; nil: not configured

	reserved       []string     // Config.ReservedDomains, lowercased
	own            []netip.Addr // Config.OwnAddrs, unmapped
	resolve        resolver
	resolveTimeout time.Duration
	writes         *writeLimiter // per-account write rate
}

// New builds the API over st. Call [Config.Validate] first to reject bad configuration.
func New(cfg Config, st store.API, opts ...Option) *Server {
	cfg.SIPDomain = strings.ToLower(cfg.SIPDomain)
	s := &Server{
		cfg:     cfg,
		realm:   cfg.Realm,
		maxBody: cfg.MaxBodyBytes,
		st:      st,
		log:     cfg.Logger.With().Str("component", "control").Logger(),
		now:     time.Now,
	}
	if s.realm == "" {
		s.realm = cfg.SIPDomain
	}
	if s.realm == "" {
		s.realm = DefaultRealm
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if cfg.AdminToken != "" {
		s.adminSum = sum256(cfg.AdminToken)
	}
	for _, d := range cfg.ReservedDomains {
		s.reserved = append(s.reserved, strings.ToLower(strings.TrimSuffix(d, ".")))
	}
	for _, a := range cfg.OwnAddrs {
		s.own = append(s.own, a.Unmap().WithZone(""))
	}
	s.cfg.UpstreamAllow = masked(cfg.UpstreamAllow)
	s.resolve, s.resolveTimeout = cfg.Resolve, cfg.ResolveTimeout
	if s.resolve == nil {
		s.resolve = defaultResolve
	}
	if s.resolveTimeout <= 0 {
		s.resolveTimeout = DefaultResolveTimeout
	}
	s.writes = &writeLimiter{buckets: map[string]*bucket{}, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if cfg.Registerer != nil {
		s.metrics = newMetrics(cfg.Registerer)
	}
	s.guard = newGuard(cfg, s.log)
	s.routes = s.table()
	s.mux = http.NewServeMux()
	s.patterns = make(map[string]string, 2*len(s.routes))
	for _, rt := range s.routes {
		h := s.wrap(s.withWait(s.withSafeWrites(rt)))
		for _, p := range muxPatterns(rt) {
			s.mux.Handle(p, h)
			s.patterns[p] = rt.path
		}
	}
	s.consoleRoutes()
	return s
}

// Handler returns the handler of everything under /v1/ (the Zentrunk API, the admin API
// and /v1/openapi.json) and /console/ (the web console). The caller mounts it at both,
// next to /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// authKind says how a route authenticates its caller.
type authKind uint8

const (
	authNone       authKind = iota // public (the OpenAPI document)
	authAccount                    // HTTP basic auth_id:auth_token matching the path's auth_id
	authAdmin                      // Bearer Config.AdminToken
	authAnyAccount                 // HTTP basic auth of any account (or the admin bearer token)
)

// route is one documented method+path. Paths ending in "/" are also served without the
// trailing slash.
type route struct {
	method string
	path   string
	auth   authKind
	h      func(*call) error
}

// muxPatterns are the ServeMux patterns serving rt: with and without the trailing slash.
func muxPatterns(rt route) []string {
	if strings.HasSuffix(rt.path, "/") {
		return []string{
			rt.method + " " + rt.path + "{$}",
			rt.method + " " + strings.TrimSuffix(rt.path, "/"),
		}
	}
	return []string{rt.method + " " + rt.path}
}

const zentrunk = "/v1/Account/{auth_id}/Zentrunk/"

// table lists every route. The OpenAPI test checks it against openapi.json both ways.
func (s *Server) table() []route {
	const (
		acls    = zentrunk + "IPAccessControlList/"
		acl     = acls + "{ipacl_uuid}/"
		entries = acl + "Entry/"
		entry   = entries + "{entry_id}/"
		creds   = zentrunk + "Credential/"
		cred    = creds + "{credential_uuid}/"
		trunks  = zentrunk + "Trunk/"
		trunk   = trunks + "{trunk_id}/"
	)
	rs := []route{
		{http.MethodGet, "/v1/openapi.json", authNone, s.openAPI},

		{http.MethodGet, acls, authAccount, s.listACLs},
		{http.MethodPost, acls, authAccount, s.createACL},
		{http.MethodGet, acl, authAccount, s.getACL},
		{http.MethodPost, acl, authAccount, s.updateACL},
		{http.MethodDelete, acl, authAccount, s.deleteACL},

		{http.MethodGet, entries, authAccount, s.listEntries},
		{http.MethodPost, entries, authAccount, s.addEntry},
		{http.MethodGet, entry, authAccount, s.getEntry},
		{http.MethodPost, entry, authAccount, s.updateEntry},
		{http.MethodDelete, entry, authAccount, s.deleteEntry},

		{http.MethodGet, creds, authAccount, s.listCredentials},
		{http.MethodPost, creds, authAccount, s.createCredential},
		{http.MethodGet, cred, authAccount, s.getCredential},
		{http.MethodPost, cred, authAccount, s.updateCredential},
		{http.MethodDelete, cred, authAccount, s.deleteCredential},

		{http.MethodGet, trunks, authAccount, s.listTrunks},
		{http.MethodPost, trunks, authAccount, s.createTrunk},
		{http.MethodGet, trunk, authAccount, s.getTrunk},
		{http.MethodPost, trunk, authAccount, s.updateTrunk},
		{http.MethodDelete, trunk, authAccount, s.deleteTrunk},
		{http.MethodPost, trunk + "Explain/", authAccount, s.explain},

		{http.MethodGet, zentrunk + "AuditLog/", authAccount, s.listAudit},

		{http.MethodGet, clusterPath, authAnyAccount, s.clusterNodes},
		{http.MethodGet, clusterPath + "Version/{version}/", authAnyAccount, s.clusterVersion},
	}
	if s.cfg.AdminToken != "" {
		rs = append(rs,
			route{http.MethodGet, adminAccounts, authAdmin, s.adminListAccounts},
			route{http.MethodPost, adminAccounts, authAdmin, s.adminCreateAccount},
			route{http.MethodGet, adminAccounts + "{auth_id}/", authAdmin, s.adminGetAccount},
			route{http.MethodPost, adminAccounts + "{auth_id}/", authAdmin, s.adminUpdateAccount},
			route{http.MethodPost, adminAccounts + "{auth_id}/IPAccessControlList/{ipacl_uuid}/", authAdmin, s.adminShareACL},
			route{http.MethodGet, adminBans, authAdmin, s.adminListBans},
			route{http.MethodGet, adminBans + "{ip}/", authAdmin, s.adminGetBan},
			route{http.MethodDelete, adminBans + "{ip}/", authAdmin, s.adminLiftBan},
			route{http.MethodPost, adminRestore, authAdmin, s.adminRestore},
		)
	}
	return rs
}

// call is the state of one request, shared by the router, the auth step, the handler and
// the renderers.
type call struct {
	s       *Server
	w       *statusWriter
	r       *http.Request
	apiID   string
	account string       // authenticated auth_id (account routes only)
	acct    *acl.Account // the authenticated account (account routes only)
	// overflow: the client is refused by the full failure table's shared record only
	// (see guard.check); its credentials are still checked, and only valid ones pass.
	overflow time.Duration
	client   netip.Addr // the client the guard judged (see guard.client); invalid: unknown
	wait     *waitSpec  // ?wait=all of a write; nil: answer without waiting
	ans      *answer    // the success answer a write declared (see safewrite.go)
	// opts are the store options of the request's write: actor, If-Match, idempotency
	// (see safewrite.go).
	opts []store.WriteOption
}

// writeOpts are the options of the request's write plus more.
func (c *call) writeOpts(more ...store.WriteOption) []store.WriteOption {
	return append(slices.Clip(c.opts), more...)
}

type callKey struct{}

// serveHTTP routes one request: unclean paths and unknown routes get 404, known paths
// with another method 405 with Allow; everything else goes through the mux to the route's
// wrapper. It records the metrics and the access log line.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := &call{s: s, w: &statusWriter{ResponseWriter: w}, r: r, apiID: uuid.NewString()}
	c.w.Header().Set("X-Api-Id", c.apiID)
	label := "unmatched"
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			c.fail(fmt.Errorf("control: panic: %v", v))
		}
		d := time.Since(start)
		if c.w.status() == http.StatusUnauthorized && r.Header.Get("Authorization") != "" {
			s.guard.authFailed(c.client) // wrong credentials; none at all is no guess
		}
		s.metrics.observe(label, r.Method, c.w.status(), d)
		ev := s.log.Debug()
		if r.Method != http.MethodGet && r.Method != http.MethodHead && c.w.status() < 300 {
			ev = s.log.Info()
		}
		ev.Str("api_id", c.apiID).Str("method", r.Method).Str("route", label).
			Str("auth_id", c.account).Stringer("client", c.client).Int("status", c.w.status()).Dur("duration", d).Msg("api request")
	}()

	var err error
	if c.client, c.overflow, err = s.guard.check(r); err != nil {
		c.fail(err)
		return
	}

	if cleanPath(r.URL.Path) != r.URL.Path {
		c.fail(notFound("no such resource: %s", r.URL.Path))
		return
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		if allow := s.allowed(r); len(allow) > 0 {
			c.w.Header().Set("Allow", strings.Join(allow, ", "))
			c.fail(&apiError{status: http.StatusMethodNotAllowed,
				msg: fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))})
			return
		}
		c.fail(notFound("no such resource: %s", r.URL.Path))
		return
	}
	label = s.patterns[pattern]
	s.mux.ServeHTTP(c.w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// allowed lists the methods the path of r is routed for (empty: unknown path).
func (s *Server) allowed(r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			out = append(out, m)
		}
	}
	return out
}

// wrap turns a route's handler into an http.Handler: authentication, then the handler,
// then one rendering of any error.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(callKey{}).(*call)
		c.r = r
		var err error
		switch rt.auth {
		case authAccount:
			err = s.authAccount(c)
		case authAdmin:
			err = s.authAdmin(c)
		case authAnyAccount:
			err = s.authAnyAccount(c)
		}
		if c.overflow > 0 {
			err = s.guard.overflowed(c, rt.auth, err)
		}
		if err == nil && rt.auth == authAccount {
			err = s.limitWrite(c, rt)
		}
		if err == nil {
			err = rt.h(c)
		}
		if err != nil {
			c.fail(err)
		}
	})
}

// cleanPath is path.Clean that keeps a trailing slash; paths it changes are not routed.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		return "/" + p
	}
	parts := strings.Split(p, "/")
	for _, seg := range parts[1 : len(parts)-1] {
		if seg == "" || seg == "." || seg == ".." {
			return ""
		}
	}
	if last := parts[len(parts)-1]; last == "." || last == ".." {
		return ""
	}
	return p
}

// statusWriter remembers the status code written, for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
