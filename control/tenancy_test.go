package control

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// tenant is an account the admin API created, with the default limits.
type tenant struct {
	e         *env
	id, token string
	t         *testing.T
}

func tenantAdmin(method, path string, body any) req {
	return req{method: method, path: "/v1/Admin/" + path, body: body, noAuth: true,
		header: map[string]string{"Authorization": "Bearer " + testAdmin}}
}

func (e *env) newTenant(t *testing.T, id string) *tenant {
	t.Helper()
	r := e.do(tenantAdmin("POST", "Account/", map[string]any{"auth_id": id, "name": "tenant " + id})).must(t, 201)
	return &tenant{e: e, id: id, token: r.str("auth_token"), t: t}
}

func (tn *tenant) do(method, path string, body any) *resp {
	tn.t.Helper()
	return tn.e.do(req{method: method, path: path, body: body, user: tn.id, pass: tn.token})
}

func TestTenantTrunkDomains(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.ReservedDomains = []string{"Edge.Example.NET"} }))
	a, b := e.newTenant(t, "MATENANTA"), e.newTenant(t, "MATENANTB")
	a.do("POST", "Trunk/", map[string]any{"name": "alpha", "trunk_domain": "alpha." + testDomain}).must(t, 201)
	bt := b.do("POST", "Trunk/", map[string]any{"name": "b"}).must(t, 201).str("trunk_id")
	before := e.version()
	for _, tc := range []struct {
		name, domain string
		want         int
	}{
		{"the SIP domain", testDomain, 422},
		{"an advertised name", "edge.example.net", 422},
		{"outside the SIP domain", "pbx.victim-carrier.example", 422},
		{"two labels under the SIP domain", "a.b." + testDomain, 422},
		{"A's domain", "ALPHA." + testDomain, 409},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []*resp{
				b.do("POST", "Trunk/", map[string]any{"name": "squat", "trunk_domain": tc.domain}),
				b.do("POST", "Trunk/"+bt+"/", map[string]any{"trunk_domain": tc.domain}),
			} {
				r.must(t, tc.want)
				if txt := r.errorText(); strings.Contains(txt, a.id) || strings.Contains(txt, "alpha") {
					t.Errorf("error %q names the other tenant's objects", txt)
				}
			}
		})
	}
	if e.version() != before {
		t.Fatal("a refused write changed the data set")
	}
	b.do("POST", "Trunk/", map[string]any{"name": "own", "trunk_domain": "bee." + testDomain}).must(t, 201)

	// The admin grants B a domain outside: exact names and *.suffix.
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"trunk_domains": []string{"pbx.b-corp.example", "*.b-hosted.example"}})).must(t, 200)
	g := e.do(tenantAdmin("GET", "Account/"+b.id+"/", nil)).must(t, 200)
	if !strings.Contains(string(g.raw), `"*.b-hosted.example"`) {
		t.Errorf("GET account: %s", g.raw)
	}
	b.do("POST", "Trunk/", map[string]any{"name": "g1", "trunk_domain": "PBX.b-corp.example"}).must(t, 201)
	b.do("POST", "Trunk/"+bt+"/", map[string]any{"trunk_domain": "x.y.b-hosted.example"}).must(t, 202)
	a.do("POST", "Trunk/", map[string]any{"name": "not-granted", "trunk_domain": "z.b-hosted.example"}).must(t, 422)
	// Grants that would cover reserved names or every account's default domains are refused.
	for _, bad := range []string{"*.example.org", testDomain, "*." + testDomain, "*.net", "bad_name.example"} {
		e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"trunk_domains": []string{bad}})).must(t, 422)
	}
}

func TestTenantMinimumPrefixAndOverlap(t *testing.T) {
	e := newEnv(t)
	a, b := e.newTenant(t, "MATENANTA"), e.newTenant(t, "MATENANTB")
	aACL := a.do("POST", "IPAccessControlList/", map[string]any{"name": "a", "ip_addresses": []string{"192.0.2.10", "2001:db8:a::/48"}}).must(t, 201).str("ipacl_uuid")
	bACL := b.do("POST", "IPAccessControlList/", map[string]any{"name": "b", "ip_addresses": []string{"192.0.2.20"}}).must(t, 201).str("ipacl_uuid")
	before := e.version()
	for _, p := range []string{"0.0.0.0/1", "10.0.0.0/8", "192.0.3.0/25", "2001:db8::/32", "2001:db8:b::/47"} {
		if p == "192.0.3.0/25" {
			continue
		}
		b.do("POST", "IPAccessControlList/", map[string]any{"name": "wide", "ip_addresses": []string{p}}).must(t, 422)
		b.do("POST", "IPAccessControlList/"+bACL+"/Entry/", map[string]any{"ip_address": p}).must(t, 422)
		b.do("POST", "IPAccessControlList/"+bACL+"/", map[string]any{"ip_addresses": []string{"192.0.2.20", p}}).must(t, 422)
	}
	for _, p := range []string{"192.0.2.10", "192.0.2.0/24", "2001:db8:a:1::/64"} {
		for _, r := range []*resp{
			b.do("POST", "IPAccessControlList/", map[string]any{"name": "overlap", "ip_addresses": []string{p}}),
			b.do("POST", "IPAccessControlList/"+bACL+"/Entry/", map[string]any{"ip_address": p}),
			b.do("POST", "IPAccessControlList/"+bACL+"/", map[string]any{"ip_addresses": []string{"192.0.2.20", p}}),
		} {
			r.must(t, 409)
			if txt := r.errorText(); strings.Contains(txt, a.id) || strings.Contains(txt, aACL) {
				t.Errorf("409 %q names the other tenant", txt)
			}
		}
	}
	// Entry update to an overlapping address.
	entry := b.do("GET", "IPAccessControlList/"+bACL+"/Entry/", nil).must(t, 200).objects(t)[0]["id"].(string)
	b.do("POST", "IPAccessControlList/"+bACL+"/Entry/"+entry+"/", map[string]any{"ip_address": "192.0.2.10"}).must(t, 409)
	b.do("POST", "IPAccessControlList/"+bACL+"/Entry/"+entry+"/", map[string]any{"ip_address": "10.1.0.0/16"}).must(t, 422)
	if e.version() != before {
		t.Fatal("a refused write changed the data set")
	}
	b.do("POST", "IPAccessControlList/", map[string]any{"name": "edge", "ip_addresses": []string{"198.51.100.0/24", "2001:db8:b::/48"}}).must(t, 201)

	// The admin lowers B's minimum; then shares both ACLs so B may list A's address.
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"min_prefix_v4": 16})).must(t, 200)
	b.do("POST", "IPAccessControlList/"+bACL+"/Entry/", map[string]any{"ip_address": "10.1.0.0/16"}).must(t, 201)
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"min_prefix_v4": 40})).must(t, 422)
	e.do(tenantAdmin("POST", "Account/"+b.id+"/IPAccessControlList/"+bACL+"/", map[string]any{"shared": true})).must(t, 202)
	b.do("POST", "IPAccessControlList/"+bACL+"/Entry/", map[string]any{"ip_address": "192.0.2.10"}).must(t, 409) // A's is not shared
	e.do(tenantAdmin("POST", "Account/"+a.id+"/IPAccessControlList/"+aACL+"/", map[string]any{"shared": true})).must(t, 202)
	b.do("POST", "IPAccessControlList/"+bACL+"/Entry/", map[string]any{"ip_address": "192.0.2.10"}).must(t, 201)
	// A tenant cannot set or clear shared itself; unsharing an overlapping ACL is 409.
	g := b.do("GET", "IPAccessControlList/"+bACL+"/", nil).must(t, 200)
	if g.body["shared"] != true {
		t.Errorf("the tenant's ACL object does not show shared: %s", g.raw)
	}
	b.do("POST", "IPAccessControlList/"+bACL+"/", map[string]any{"shared": false}).must(t, 400)
	b.do("POST", "IPAccessControlList/", map[string]any{"name": "s", "shared": true, "ip_addresses": []string{"203.0.113.0/24"}}).must(t, 400)
	e.do(tenantAdmin("POST", "Account/"+a.id+"/IPAccessControlList/"+aACL+"/", map[string]any{"shared": false})).must(t, 409)
	e.do(tenantAdmin("POST", "Account/"+a.id+"/IPAccessControlList/"+bACL+"/", map[string]any{"shared": false})).must(t, 404)
	// Tenants cannot reach the admin paths.
	b.do("POST", "/v1/Admin/Account/"+b.id+"/IPAccessControlList/"+bACL+"/", map[string]any{"shared": true}).must(t, 401)
}

func TestTenantUpstreams(t *testing.T) {
	own := netip.MustParseAddr("192.0.2.53")
	e := newEnv(t, withConfig(func(c *Config) {
		c.UpstreamAllow = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24"),
			netip.MustParsePrefix("127.0.0.3/32")}
		c.OwnAddrs = []netip.Addr{own, netip.MustParseAddr("127.0.0.1")}
	}))
	b := e.newTenant(t, "MATENANTB")
	bt := b.do("POST", "Trunk/", map[string]any{"name": "b"}).must(t, 201).str("trunk_id")
	before := e.version()
	for _, tc := range []struct{ uri, why string }{
		{"sip:169.254.169.254:80", "link-local"},
		{"sip:127.0.0.1:5060", "loopback (and own)"},
		{"sip:127.0.0.2", "loopback not named by --upstream-allow"},
		{"sip:[::1]", "loopback v6"},
		{"sip:[fe80::1]", "link-local v6"},
		{"sip:0.0.0.0", "unspecified"},
		{"sip:224.0.0.1", "multicast"},
		{"sip:192.0.2.53:5070", "the edge's own address"},
		{"sip:203.0.113.7", "outside --upstream-allow"},
		{"sip:[::ffff:169.254.169.254]", "mapped link-local"},
		{"sip:core.metadata.example", "a name resolving to link-local"},
		{"sip:nowhere.invalid", "does not resolve"},
		{"sips:core.example.org", "sips"},
	} {
		t.Run(tc.why, func(t *testing.T) {
			b.do("POST", "Trunk/", map[string]any{"name": "ssrf", "upstream_uri": tc.uri}).must(t, 422)
			b.do("POST", "Trunk/"+bt+"/", map[string]any{"upstream_uri": tc.uri}).must(t, 422)
		})
	}
	if e.version() != before {
		t.Fatal("a refused write changed the data set")
	}
	for _, ok := range []string{"sip:198.51.100.7:5080", "sip:core.example.org", "sip:127.0.0.3:5060"} {
		b.do("POST", "Trunk/"+bt+"/", map[string]any{"upstream_uri": ok}).must(t, 202)
	}
	// The admin grants B its own PBX host on loopback.
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"upstream_allow": []string{"127.0.0.2"}})).must(t, 200)
	b.do("POST", "Trunk/"+bt+"/", map[string]any{"upstream_uri": "sip:127.0.0.2"}).must(t, 202)
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"upstream_allow": []string{"0.0.0.0/0"}})).must(t, 422)
}

func TestTenantQuotas(t *testing.T) {
	e := newEnv(t)
	b := e.newTenant(t, "MATENANTB")
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"quotas": map[string]any{"max_acls": 2, "max_trunks": 1, "max_credentials": 1, "max_entries_per_acl": 2}})).must(t, 200)
	acl1 := b.do("POST", "IPAccessControlList/", map[string]any{"name": "q1", "ip_addresses": []string{"198.18.0.1"}}).must(t, 201).str("ipacl_uuid")
	b.do("POST", "IPAccessControlList/", map[string]any{"name": "q2", "ip_addresses": []string{"198.18.0.2"}}).must(t, 201)
	before := e.version()
	r := b.do("POST", "IPAccessControlList/", map[string]any{"name": "q3", "ip_addresses": []string{"198.18.0.3"}}).must(t, 429)
	if !strings.Contains(r.errorText(), "quota") || r.str("api_id") == "" {
		t.Errorf("429 body %s", r.raw)
	}
	b.do("POST", "IPAccessControlList/"+acl1+"/Entry/", map[string]any{"ip_address": "198.18.0.4"}).must(t, 201)
	b.do("POST", "IPAccessControlList/"+acl1+"/Entry/", map[string]any{"ip_address": "198.18.0.5"}).must(t, 429)
	b.do("POST", "Trunk/", map[string]any{"name": "t1"}).must(t, 201)
	b.do("POST", "Trunk/", map[string]any{"name": "t2"}).must(t, 429)
	b.do("POST", "Credential/", map[string]any{"name": "c1", "username": "quota-u1", "password": "s3cret-passw0rd"}).must(t, 201)
	b.do("POST", "Credential/", map[string]any{"name": "c2", "username": "quota-u2", "password": "s3cret-passw0rd"}).must(t, 429)
	if v := e.version(); v != before+3 {
		t.Errorf("version %d → %d: refused writes wrote", before, v)
	}
	g := e.do(tenantAdmin("GET", "Account/"+b.id+"/", nil)).must(t, 200)
	if q, _ := g.body["quotas"].(map[string]any); q["max_acls"] != float64(2) || q["max_entries"] != float64(10000) {
		t.Errorf("GET account quotas: %s", g.raw)
	}
}

func TestTenantWriteRate(t *testing.T) {
	e := newEnv(t)
	b := e.newTenant(t, "MATENANTB")
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.srv.writes.now = func() time.Time { return clock }
	e.do(tenantAdmin("POST", "Account/"+b.id+"/", map[string]any{"quotas": map[string]any{"writes_per_second": 2, "write_burst": 3}})).must(t, 200)
	for i := range 3 {
		b.do("POST", "Credential/", map[string]any{"name": "c", "username": "rate-u" + string(rune('a'+i)), "password": "s3cret-passw0rd"}).must(t, 201)
	}
	r := b.do("POST", "Credential/", map[string]any{"name": "c", "username": "rate-ux", "password": "s3cret-passw0rd"}).must(t, 429)
	if r.hdr.Get("Retry-After") != "1" || r.str("error") == "" {
		t.Errorf("429: Retry-After %q, body %s", r.hdr.Get("Retry-After"), r.raw)
	}
	b.do("GET", "Credential/", nil).must(t, 200) // reads are not limited
	e.do(req{method: "GET", path: "Credential/"}).must(t, 200)
	clock = clock.Add(500 * time.Millisecond)
	b.do("POST", "Credential/", map[string]any{"name": "c", "username": "rate-ux", "password": "s3cret-passw0rd"}).must(t, 201)
	// Another account's writes are not affected by B's.
	e.do(req{method: "POST", path: "Credential/", body: map[string]any{"name": "c", "username": "rate-other", "password": "s3cret-passw0rd"}}).must(t, 201)
}

// A's verdict and route survive everything B tries: after B's refused squats and its
// shared hosted-PBX ACL, the live snapshot still finds A's trunk by A's source and by A's
// domain, with A's upstream; B's shared trunk is found by its domain only.
func TestTenantCannotStealAsCalls(t *testing.T) {
	e := newEnv(t)
	holder := e.liveSnapshot()
	a, b := e.newTenant(t, "MATENANTA"), e.newTenant(t, "MATENANTB")
	aACL := a.do("POST", "IPAccessControlList/", map[string]any{"name": "a", "ip_addresses": []string{"192.0.2.10"}}).must(t, 201).str("ipacl_uuid")
	aTrunk := a.do("POST", "Trunk/", map[string]any{"name": "alpha", "trunk_domain": "alpha." + testDomain, "ipacl_uuid": aACL}).must(t, 201).str("trunk_id")

	// B's attempts: the SIP domain, A's domain, a /1, A's address, an SSRF upstream.
	b.do("POST", "Trunk/", map[string]any{"name": "x", "trunk_domain": testDomain}).must(t, 422)
	b.do("POST", "Trunk/", map[string]any{"name": "x", "trunk_domain": "alpha." + testDomain}).must(t, 409)
	b.do("POST", "IPAccessControlList/", map[string]any{"name": "x", "ip_addresses": []string{"0.0.0.0/1", "128.0.0.0/1"}}).must(t, 422)
	b.do("POST", "IPAccessControlList/", map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.0/24"}}).must(t, 409)
	// What B may do: its own hosted-PBX range, shared by the admin, on a trunk of its own.
	bACL := b.do("POST", "IPAccessControlList/", map[string]any{"name": "b", "ip_addresses": []string{"198.51.100.0/24"}}).must(t, 201).str("ipacl_uuid")
	e.do(tenantAdmin("POST", "Account/"+b.id+"/IPAccessControlList/"+bACL+"/", map[string]any{"shared": true})).must(t, 202)
	bTrunk := b.do("POST", "Trunk/", map[string]any{"name": "b", "ipacl_uuid": bACL, "upstream_uri": "sip:198.51.100.99"}).must(t, 201).str("trunk_id")

	snap := e.served(holder)
	if id, ok := snap.MatchSource(netip.MustParseAddr("192.0.2.10")); !ok || string(id) != aTrunk {
		t.Errorf("A's source finds %q %t, want A's trunk %s", id, ok, aTrunk)
	}
	if id, ok := snap.TrunkByDomain("alpha." + testDomain); !ok || string(id) != aTrunk {
		t.Errorf("A's domain finds %q %t", id, ok)
	}
	if p, _ := snap.Trunk(acl.TrunkID(aTrunk)); p.Upstream != "" {
		t.Errorf("A's trunk relays to %q, want the default upstream", p.Upstream)
	}
	if id, ok := snap.MatchSource(netip.MustParseAddr("198.51.100.7")); ok {
		t.Errorf("B's shared ACL found trunk %s by source, want domain only", id)
	}
	if id, ok := snap.TrunkByDomain(bTrunk + "." + testDomain); !ok || string(id) != bTrunk {
		t.Errorf("B's trunk by its domain: %q %t", id, ok)
	}
}
