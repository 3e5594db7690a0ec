package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// Tenants (DESIGN §4a): what one account writes must not reach another account's calls
// or the core. The API enforces here what needs the deployment's configuration (trunk
// domains, upstream addresses) and the per-account write rate; the store enforces inside
// its transactions what needs every account's data (overlapping entries, minimum
// prefix, object quotas).

// DefaultResolveTimeout bounds resolving an upstream_uri host name at write time.
const DefaultResolveTimeout = 2 * time.Second

// maxTrunkDomainGrants and maxUpstreamGrants bound the admin's per-account lists.
const (
	maxTrunkDomainGrants = 100
	maxUpstreamGrants    = 100
)

// special are the address ranges a tenant's upstream needs the admin for: loopback,
// link-local, unspecified ("this network"), multicast and broadcast. An address inside one
// is allowed only by an admin grant on the account, or by a Config.UpstreamAllow prefix
// lying inside that range (an operator who lists 127.0.0.0/8 means it; 0.0.0.0/0 does
// not unlock loopback).
var special = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

func specialRange(a netip.Addr) (netip.Prefix, bool) {
	for _, p := range special {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// resolver resolves an upstream host name to its addresses.
type resolver func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// ---- trunk domains ----

// reservedDomain reports whether d is the SIP domain or one of the edge's advertised names.
func (s *Server) reservedDomain(d string) bool {
	return d == s.cfg.SIPDomain || slices.Contains(s.reserved, d)
}

// checkTrunkDomain enforces who may use trunk domain d (lowercase, valid): never a
// reserved name; "<label>.<SIPDomain>" for any account; anything else only when the
// admin granted it to the account. With no SIPDomain configured, only reserved names are
// refused.
func (s *Server) checkTrunkDomain(a *acl.Account, d string) error {
	if s.reservedDomain(d) {
		return invalid("trunk_domain %q is reserved for the edge itself", d)
	}
	if store.DomainGranted(a.TrunkDomains, d) || s.cfg.SIPDomain == "" {
		return nil
	}
	if label, ok := strings.CutSuffix(d, "."+s.cfg.SIPDomain); ok && label != "" && !strings.Contains(label, ".") {
		return nil
	}
	return invalid("trunk_domain %q: must be one DNS label under the SIP domain (<label>.%s) unless the admin grants this account the domain",
		d, s.cfg.SIPDomain)
}

// ---- upstreams ----

// checkUpstream enforces where a tenant's upstream_uri may point (see README, Tenants):
// sip: only (sips: is refused until the SIP layer supports it), and every address the
// host resolves to (now, with a timeout) inside Config.UpstreamAllow or the account's
// admin grant; loopback, link-local, unspecified, multicast and the edge's own addresses
// only by an admin grant (or an UpstreamAllow prefix inside that range).
func (s *Server) checkUpstream(ctx context.Context, a *acl.Account, uri string) error {
	scheme, rest, _ := strings.Cut(uri, ":")
	if scheme != "sip" {
		return invalid("upstream_uri %q: only sip: is supported (the SIP layer has no TLS towards upstreams yet)", uri)
	}
	host := rest
	if strings.HasPrefix(rest, "[") {
		host = rest[1:strings.IndexByte(rest, ']')]
	} else if h, _, ok := strings.Cut(rest, ":"); ok {
		host = h
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, s.resolveTimeout)
		defer cancel()
		addrs, err = s.resolve(rctx, host)
		if err != nil || len(addrs) == 0 {
			return invalid("upstream_uri %q: host %s does not resolve (within %s)", uri, host, s.resolveTimeout)
		}
	}
	grants := parseGrants(a.UpstreamAllow)
	for _, ip := range addrs {
		ip = ip.Unmap().WithZone("")
		if inAny(grants, ip) {
			continue
		}
		if slices.Contains(s.own, ip) {
			return invalid("upstream_uri %q: %s is this edge's own address (a loop); only the admin can allow it", uri, ip)
		}
		if r, isSpecial := specialRange(ip); isSpecial {
			if !s.operatorNamed(r, ip) {
				return invalid("upstream_uri %q: %s is a loopback, link-local, unspecified or multicast address; only the admin can allow it", uri, ip)
			}
			continue
		}
		if !inAny(s.cfg.UpstreamAllow, ip) {
			return invalid("upstream_uri %q: %s is outside the upstream addresses this deployment allows (--upstream-allow)", uri, ip)
		}
	}
	return nil
}

// operatorNamed reports whether a Config.UpstreamAllow prefix inside the special range r
// holds ip.
func (s *Server) operatorNamed(r netip.Prefix, ip netip.Addr) bool {
	for _, p := range s.cfg.UpstreamAllow {
		if p.Contains(ip) && p.Bits() >= r.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func parseGrants(in []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, v := range in {
		if p, err := acl.ParsePrefix(v); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ---- per-account write rate ----

// maxWriteBuckets bounds the write-rate table (keyed by authenticated auth_id, so by
// accounts the admin created; the bound is a backstop).
const maxWriteBuckets = 1 << 16

// writeLimiter is a token bucket per account. Safe for concurrent use.
type writeLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// take spends one token of account's bucket (rate per second, burst); when there is none
// it returns how long until there is one.
func (l *writeLimiter) take(account string, rate, burst int) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[account]
	if b == nil {
		if len(l.buckets) >= maxWriteBuckets {
			for k, o := range l.buckets { // drop buckets that refilled: they hold no state
				if o.tokens+now.Sub(o.at).Seconds()*float64(rate) >= float64(burst) {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxWriteBuckets {
				return time.Second
			}
		}
		b = &bucket{tokens: float64(burst), at: now}
		l.buckets[account] = b
	}
	b.tokens = math.Min(float64(burst), b.tokens+now.Sub(b.at).Seconds()*float64(rate))
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / float64(rate) * float64(time.Second))
}

// limitWrite answers 429 with Retry-After when the account has used up its writes.
func (s *Server) limitWrite(c *call, rt route) error {
	if c.r.Method == http.MethodGet || c.r.Method == http.MethodHead || c.acct == nil || strings.HasSuffix(rt.path, "/Explain/") {
		return nil // reads, and Explain (a POST that writes nothing)
	}
	lim := c.acct.Limits.Effective()
	wait := s.writes.take(c.account, lim.WritesPerSecond, lim.WriteBurst)
	if wait <= 0 {
		return nil
	}
	s.metrics.quota("writes")
	secs := strconv.Itoa(int(math.Ceil(wait.Seconds())))
	return &apiError{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {secs}},
		msg: fmt.Sprintf("too many writes: this account may write %d times a second (burst %d); retry in %s s",
			lim.WritesPerSecond, lim.WriteBurst, secs)}
}

// ---- admin: account settings and shared ACLs ----

// accountSettings is an account as GET/POST /v1/Admin/Account/{auth_id}/ shows it: the
// effective values (defaults filled in), never the token.
type accountSettings struct {
	APIID         string   `json:"api_id,omitempty"`
	AuthID        string   `json:"auth_id"`
	Name          string   `json:"name"`
	TrunkDomains  []string `json:"trunk_domains"`
	UpstreamAllow []string `json:"upstream_allow"`
	MinPrefixV4   int      `json:"min_prefix_v4"`
	MinPrefixV6   int      `json:"min_prefix_v6"`
	Quotas        quotas   `json:"quotas"`
	CreatedAt     string   `json:"created_at"`
}

type quotas struct {
	MaxACLs          int `json:"max_acls"`
	MaxEntriesPerACL int `json:"max_entries_per_acl"`
	MaxEntries       int `json:"max_entries"`
	MaxTrunks        int `json:"max_trunks"`
	MaxCredentials   int `json:"max_credentials"`
	WritesPerSecond  int `json:"writes_per_second"`
	WriteBurst       int `json:"write_burst"`
}

func toAccountSettings(a *acl.Account) accountSettings {
	l := a.Limits.Effective()
	return accountSettings{
		AuthID: a.AuthID, Name: a.Name,
		TrunkDomains:  append([]string{}, a.TrunkDomains...),
		UpstreamAllow: append([]string{}, a.UpstreamAllow...),
		MinPrefixV4:   l.MinPrefixV4, MinPrefixV6: l.MinPrefixV6,
		Quotas: quotas{MaxACLs: l.MaxACLs, MaxEntriesPerACL: l.MaxEntriesPerACL, MaxEntries: l.MaxEntries,
			MaxTrunks: l.MaxTrunks, MaxCredentials: l.MaxCredentials, WritesPerSecond: l.WritesPerSecond, WriteBurst: l.WriteBurst},
		CreatedAt: stamp(a.CreatedAt),
	}
}

// accountSettingsRequest is the body of POST /v1/Admin/Account/{auth_id}/. Every field
// is optional; a quota or minimum of 0 restores the default.
type accountSettingsRequest struct {
	Name          *string  `json:"name"`
	TrunkDomains  []string `json:"trunk_domains"`
	UpstreamAllow []string `json:"upstream_allow"`
	MinPrefixV4   *int     `json:"min_prefix_v4"`
	MinPrefixV6   *int     `json:"min_prefix_v6"`
	Quotas        *struct {
		MaxACLs          *int `json:"max_acls"`
		MaxEntriesPerACL *int `json:"max_entries_per_acl"`
		MaxEntries       *int `json:"max_entries"`
		MaxTrunks        *int `json:"max_trunks"`
		MaxCredentials   *int `json:"max_credentials"`
		WritesPerSecond  *int `json:"writes_per_second"`
		WriteBurst       *int `json:"write_burst"`
	} `json:"quotas"`
}

func (s *Server) adminGetAccount(c *call) error {
	id := c.r.PathValue("auth_id")
	a, err := s.st.Account(c.r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("account %q not found", id)
	}
	if err != nil {
		return err
	}
	o := toAccountSettings(&a)
	o.APIID = c.apiID
	c.writeJSON(http.StatusOK, o)
	return nil
}

// trunkDomainGrants validates the admin's trunk_domains: exact names or "*.suffix",
// lowercased, none covering a reserved name.
func (s *Server) trunkDomainGrants(in []string) ([]string, error) {
	if len(in) > maxTrunkDomainGrants {
		return nil, invalid("trunk_domains: more than %d", maxTrunkDomainGrants)
	}
	out := make([]string, 0, len(in))
	for i, v := range in {
		d := strings.ToLower(strings.TrimSpace(v))
		name, wild := strings.CutPrefix(d, "*.")
		if err := validDNSName(name); err != nil {
			return nil, invalid("trunk_domains[%d] %q: %s (give a name or *.suffix)", i, v, err)
		}
		for _, r := range append([]string{s.cfg.SIPDomain}, s.reserved...) {
			if r != "" && store.DomainGranted([]string{d}, r) {
				return nil, invalid("trunk_domains[%d] %q covers the reserved name %s", i, v, r)
			}
		}
		if wild && s.cfg.SIPDomain != "" && (name == s.cfg.SIPDomain || strings.HasSuffix(name, "."+s.cfg.SIPDomain)) {
			return nil, invalid("trunk_domains[%d] %q: names under the SIP domain belong to every account's default domains", i, v)
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func limitField(field string, v *int, lo, hi int, dst *int) error {
	if v == nil {
		return nil
	}
	if *v != 0 && (*v < lo || *v > hi) {
		return invalid("%s %d: must be 0 (the default) or %d to %d", field, *v, lo, hi)
	}
	*dst = *v
	return nil
}

func (s *Server) adminUpdateAccount(c *call) error {
	id := c.r.PathValue("auth_id")
	var req accountSettingsRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	var name string
	var err error
	if req.Name != nil {
		if name, err = text("name", *req.Name, maxNameLen, true); err != nil {
			return err
		}
	}
	var domains, ups []string
	if req.TrunkDomains != nil {
		if domains, err = s.trunkDomainGrants(req.TrunkDomains); err != nil {
			return err
		}
	}
	if req.UpstreamAllow != nil {
		if len(req.UpstreamAllow) > maxUpstreamGrants {
			return invalid("upstream_allow: more than %d", maxUpstreamGrants)
		}
		if ups, _, err = acl.CanonicalAddresses("upstream_allow", req.UpstreamAllow); err != nil {
			return err
		}
		if ups == nil {
			ups = []string{}
		}
	}
	var lim acl.Limits
	set := func(a *acl.Account) error {
		lim = a.Limits
		checks := []error{
			limitField("min_prefix_v4", req.MinPrefixV4, 1, 32, &lim.MinPrefixV4),
			limitField("min_prefix_v6", req.MinPrefixV6, 1, 128, &lim.MinPrefixV6),
		}
		if q := req.Quotas; q != nil {
			checks = append(checks,
				limitField("quotas.max_acls", q.MaxACLs, 1, maxLimitValue, &lim.MaxACLs),
				limitField("quotas.max_entries_per_acl", q.MaxEntriesPerACL, 1, maxEntries, &lim.MaxEntriesPerACL),
				limitField("quotas.max_entries", q.MaxEntries, 1, maxLimitValue, &lim.MaxEntries),
				limitField("quotas.max_trunks", q.MaxTrunks, 1, maxLimitValue, &lim.MaxTrunks),
				limitField("quotas.max_credentials", q.MaxCredentials, 1, maxLimitValue, &lim.MaxCredentials),
				limitField("quotas.writes_per_second", q.WritesPerSecond, 1, 10000, &lim.WritesPerSecond),
				limitField("quotas.write_burst", q.WriteBurst, 1, 10000, &lim.WriteBurst),
			)
		}
		if err := errors.Join(checks...); err != nil {
			var ae *apiError
			errors.As(err, &ae)
			return ae
		}
		a.Limits = lim
		if req.Name != nil {
			a.Name = name
		}
		if req.TrunkDomains != nil {
			a.TrunkDomains = domains
		}
		if req.UpstreamAllow != nil {
			a.UpstreamAllow = ups
		}
		return nil
	}
	a, v, err := s.st.UpdateAccount(c.r.Context(), id, set, c.opts...)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("account %q not found", id)
	}
	if err != nil {
		return err
	}
	c.version(v)
	o := toAccountSettings(&a)
	o.APIID = c.apiID
	c.writeJSON(http.StatusOK, o)
	return nil
}

// adminShareACL marks an ACL of an account shared (or not): POST
// /v1/Admin/Account/{auth_id}/IPAccessControlList/{ipacl_uuid}/ {"shared": true}.
// Unsharing an ACL whose entries overlap another account's is 409.
func (s *Server) adminShareACL(c *call) error {
	account, id := c.r.PathValue("auth_id"), c.r.PathValue("ipacl_uuid")
	var req struct {
		Shared *bool `json:"shared"`
	}
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Shared == nil {
		return invalid("shared is required (true or false)")
	}
	ans := c.expect(http.StatusAccepted, "IP access control list sharing updated", "ipacl_uuid", id)
	_, v, err := s.st.UpdateACL(c.r.Context(), account, id, func(a *acl.IPACL) error {
		a.Shared = *req.Shared
		return nil
	}, c.opts...)
	if err != nil {
		return notFoundACL(err, id)
	}
	return c.reply(ans, v)
}
