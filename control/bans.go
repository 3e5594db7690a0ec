package control

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/sipedge/sipedge/acl"
)

// Ban management (issue 8, part 1). Bans are global: one source address (an IPv6 /64)
// is refused by every trunk of every account, and the list shows scanners' and other
// tenants' addresses. So only the operator sees and lifts them, under the admin token:
// GET /v1/Admin/Ban/, GET and DELETE /v1/Admin/Ban/{ip}/. A tenant's PBX whose address
// is in an enabled entry of one of its ACLs is never banned in the first place.

// Bans is the brute-force defence's ban list. *sip.Bans implements it.
type Bans interface {
	// List returns the bans in force. When state shared between nodes cannot be read
	// it may return what this node knows together with the error.
	List(ctx context.Context) ([]acl.Ban, error)
	// Lift ends the ban of ip (for IPv6, of its /64) and reports whether it was banned.
	// With an error the ban may be lifted on this node only.
	Lift(ctx context.Context, ip netip.Addr) (bool, error)
}

// WithBans enables the ban endpoints under /v1/Admin/Ban/ (which also need
// [Config.AdminToken]) over b. Without it they answer 404.
func WithBans(b Bans) Option {
	return func(s *Server) { s.bans = b }
}

const adminBans = "/v1/Admin/Ban/"

// banObject is a ban as the API shows it.
type banObject struct {
	APIID    string  `json:"api_id,omitempty"`
	IP       string  `json:"ip"`
	Reason   string  `json:"reason"`
	Failures int     `json:"failures"`
	Since    string  `json:"since"`
	Until    string  `json:"until"`
	Node     *string `json:"node"`
}

func toBanObject(b acl.Ban) banObject {
	return banObject{IP: b.IP, Reason: b.Reason, Failures: b.Failures, Since: stamp(b.Since), Until: stamp(b.Until), Node: nullable(b.Node)}
}

// partialHeader marks a ban list that holds only this node's bans.
const partialHeader = "X-Sipedge-Partial"

func (s *Server) banList() (Bans, error) {
	if s.bans == nil {
		return nil, notFound("ban management is not configured on this server")
	}
	return s.bans, nil
}

// listBans returns the bans, this node's only (marked by X-Sipedge-Partial) when the
// shared list cannot be read.
func (s *Server) listBans(c *call) ([]acl.Ban, error) {
	b, err := s.banList()
	if err != nil {
		return nil, err
	}
	bans, err := b.List(c.r.Context())
	if err != nil {
		s.log.Warn().Err(err).Str("api_id", c.apiID).Msg("shared ban list unavailable; answering with this node's bans")
		c.w.Header().Set(partialHeader, "shared ban store unavailable: this node's bans only")
	}
	slices.SortFunc(bans, func(a, b acl.Ban) int { return strings.Compare(a.IP, b.IP) })
	return bans, nil
}

func (s *Server) adminListBans(c *call) error {
	p, err := c.page()
	if err != nil {
		return err
	}
	bans, err := s.listBans(c)
	if err != nil {
		return err
	}
	var out []banObject
	for _, b := range window(bans, p) {
		out = append(out, toBanObject(b))
	}
	return list(c, adminBans, p, len(bans), out)
}

func (s *Server) adminGetBan(c *call) error {
	raw := c.r.PathValue("ip")
	ip, err := banIP(raw)
	if err != nil {
		return err
	}
	bans, err := s.listBans(c)
	if err != nil {
		return err
	}
	k := banKey(ip)
	for _, b := range bans {
		if b.IP == k {
			o := toBanObject(b)
			o.APIID = c.apiID
			c.writeJSON(http.StatusOK, o)
			return nil
		}
	}
	return notFound("%s is not banned", k)
}

// adminLiftBan lifts a ban on every node: at once on this one, within the ban refresh
// interval on the others.
func (s *Server) adminLiftBan(c *call) error {
	ip, err := banIP(c.r.PathValue("ip"))
	if err != nil {
		return err
	}
	b, err := s.banList()
	if err != nil {
		return err
	}
	lifted, err := b.Lift(c.r.Context(), ip)
	if err != nil {
		s.log.Warn().Err(err).Str("api_id", c.apiID).Str("src", banKey(ip)).Msg("lifting a ban in the shared ban store failed")
		msg := "shared ban store unavailable, retry later"
		if lifted {
			msg = "the ban was lifted on this node only: the shared ban store is unavailable, retry later"
		}
		return &apiError{status: http.StatusServiceUnavailable, msg: msg, header: http.Header{"Retry-After": {"1"}}}
	}
	if !lifted {
		return notFound("%s is not banned", banKey(ip))
	}
	s.log.Info().Str("api_id", c.apiID).Str("src", banKey(ip)).Msg("ban lifted through the API")
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// banIP parses the {ip} of a ban path: an IPv4 or IPv6 address (any address of a banned
// IPv6 /64 names it), or the /64 itself as the list shows it, with its slash escaped
// (2001:db8:1:2::%2F64).
func banIP(raw string) (netip.Addr, error) {
	s, err := url.PathUnescape(raw)
	if err != nil {
		s = raw
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil && (p.Addr().Is4() && p.Bits() == 32 || p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() == 64) {
		return p.Addr(), nil
	}
	return netip.Addr{}, badRequest("ip %q: not an IPv4 address, an IPv6 address or an IPv6 /64", raw)
}

// banKey is the form bans name a source in: the IPv4 address, or the IPv6 /64.
func banKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
