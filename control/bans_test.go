package control

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// fakeBans is a ban list in memory with the semantics of sip.Bans: IPv4 sources by
// address, IPv6 by /64; failures of the shared store are switchable.
type fakeBans struct {
	mu       sync.Mutex
	bans     map[string]acl.Ban
	down     bool // the shared store fails: List returns this node's view (here: all) with an error
	liftDown bool // Lift lifts locally, then fails
}

func (f *fakeBans) List(context.Context) ([]acl.Ban, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []acl.Ban
	for _, b := range f.bans {
		out = append(out, b)
	}
	if f.down {
		return out, errors.New("redis: connection refused")
	}
	return out, nil
}

func (f *fakeBans) Lift(_ context.Context, ip netip.Addr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := banKey(ip)
	_, ok := f.bans[k]
	delete(f.bans, k)
	if f.liftDown {
		return ok, errors.New("redis: connection refused")
	}
	return ok, nil
}

var banTime = time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)

func newFakeBans() *fakeBans {
	f := &fakeBans{bans: map[string]acl.Ban{}}
	for _, b := range []acl.Ban{
		{IP: "198.51.100.23", Reason: "digest_failures", Failures: 5, Since: banTime, Until: banTime.Add(10 * time.Minute), Node: "edge-a"},
		{IP: "2001:db8:1:2::/64", Reason: "unknown_trunk", Failures: 7, Since: banTime, Until: banTime.Add(time.Hour)},
		{IP: "192.0.2.99", Reason: "digest_failures", Failures: 5, Since: banTime, Until: banTime.Add(time.Minute), Node: "edge-b"},
	} {
		f.bans[b.IP] = b
	}
	return f
}

func adminReq(method, path string) req {
	return req{method: method, path: path, noAuth: true, header: map[string]string{"Authorization": "Bearer " + testAdmin}}
}

func TestBans(t *testing.T) {
	e := newEnv(t)
	bans := newFakeBans()
	e.restartWith(nil, WithBans(bans))

	r := e.do(adminReq("GET", "/v1/Admin/Ban/")).must(t, 200)
	objs := r.objects(t)
	want := []map[string]any{
		{"ip": "192.0.2.99", "reason": "digest_failures", "failures": 5, "since": "2025-05-06T07:08:09Z", "until": "2025-05-06T07:09:09Z", "node": "edge-b"},
		{"ip": "198.51.100.23", "reason": "digest_failures", "failures": 5, "since": "2025-05-06T07:08:09Z", "until": "2025-05-06T07:18:09Z", "node": "edge-a"},
		{"ip": "2001:db8:1:2::/64", "reason": "unknown_trunk", "failures": 7, "since": "2025-05-06T07:08:09Z", "until": "2025-05-06T08:08:09Z", "node": nil},
	}
	if !equalJSON(objs, want) {
		t.Errorf("bans:\n got %s\nwant %v", r.raw, want)
	}
	if m := r.meta(t); m["total_count"] != float64(3) || r.hdr.Get(partialHeader) != "" {
		t.Errorf("meta %v, partial %q", m, r.hdr.Get(partialHeader))
	}
	r = e.do(adminReq("GET", "/v1/Admin/Ban/?limit=1&offset=1")).must(t, 200)
	if objs := r.objects(t); len(objs) != 1 || objs[0]["ip"] != "198.51.100.23" || r.meta(t)["next"] == nil {
		t.Errorf("page 2: %s", r.raw)
	}

	// One ban: IPv4 by address, IPv6 by any address of the /64 or by the /64 escaped.
	for path, ip := range map[string]string{
		"/v1/Admin/Ban/198.51.100.23/":            "198.51.100.23",
		"/v1/Admin/Ban/::ffff:198.51.100.23":      "198.51.100.23",
		"/v1/Admin/Ban/2001:db8:1:2::beef/":       "2001:db8:1:2::/64",
		"/v1/Admin/Ban/2001:db8:1:2::%2F64/":      "2001:db8:1:2::/64",
		"/v1/Admin/Ban/2001:db8:1:2:0:0:0:0%2f64": "2001:db8:1:2::/64",
	} {
		r := e.do(adminReq("GET", path)).must(t, 200)
		if r.str("ip") != ip {
			t.Errorf("GET %s: %s", path, r.raw)
		}
	}
	e.do(adminReq("GET", "/v1/Admin/Ban/203.0.113.1/")).must(t, 404)
	for _, bad := range []string{"nope", "198.51.100.0%2F24", "2001:db8::%2F48", "fe80::1%25eth0"} {
		r := e.do(adminReq("GET", "/v1/Admin/Ban/"+bad+"/")).must(t, 400)
		if !strings.Contains(r.errorText(), "not an IPv4 address, an IPv6 address or an IPv6 /64") {
			t.Errorf("%s: %s", bad, r.errorText())
		}
		e.do(adminReq("DELETE", "/v1/Admin/Ban/"+bad+"/")).must(t, 400)
	}

	// Lift: 204, then the source is no longer banned (404 on a second lift).
	r = e.do(adminReq("DELETE", "/v1/Admin/Ban/198.51.100.23/")).must(t, 204)
	if len(r.raw) != 0 {
		t.Errorf("204 with body %q", r.raw)
	}
	e.do(adminReq("DELETE", "/v1/Admin/Ban/198.51.100.23")).must(t, 404)
	e.do(adminReq("DELETE", "/v1/Admin/Ban/2001:db8:1:2::1/")).must(t, 204)
	if objs := e.do(adminReq("GET", "/v1/Admin/Ban/")).must(t, 200).objects(t); len(objs) != 1 || objs[0]["ip"] != "192.0.2.99" {
		t.Errorf("after lifting two: %v", objs)
	}
	if !strings.Contains(e.logText(), "ban lifted through the API") {
		t.Error("lifting is not logged")
	}

	// Admin only: account credentials and a wrong token are 401.
	for _, r := range []req{
		{method: "GET", path: "/v1/Admin/Ban/"},
		{method: "DELETE", path: "/v1/Admin/Ban/192.0.2.99/"},
		{method: "GET", path: "/v1/Admin/Ban/", noAuth: true, header: map[string]string{"Authorization": "Bearer wrong-wrong-wrong-wrong"}},
	} {
		e.do(r).must(t, 401)
	}
	if len(bans.bans) != 1 {
		t.Error("an unauthenticated DELETE lifted a ban")
	}
}

func TestBansSharedStoreDown(t *testing.T) {
	e := newEnv(t)
	bans := newFakeBans()
	e.restartWith(nil, WithBans(bans))
	bans.down = true
	r := e.do(adminReq("GET", "/v1/Admin/Ban/")).must(t, 200)
	if len(r.objects(t)) != 3 || !strings.Contains(r.hdr.Get(partialHeader), "this node's bans only") {
		t.Errorf("partial list: %s (header %q)", r.raw, r.hdr.Get(partialHeader))
	}
	if strings.Contains(string(r.raw), "redis") {
		t.Error("the store error leaked into the answer")
	}
	bans.liftDown = true
	r = e.do(adminReq("DELETE", "/v1/Admin/Ban/192.0.2.99/")).must(t, 503)
	if r.hdr.Get("Retry-After") == "" || !strings.Contains(r.errorText(), "lifted on this node only") {
		t.Errorf("503 %s (Retry-After %q)", r.raw, r.hdr.Get("Retry-After"))
	}
	r = e.do(adminReq("DELETE", "/v1/Admin/Ban/192.0.2.99/")).must(t, 503) // retry while still down
	if strings.Contains(r.errorText(), "lifted on this node") {
		t.Errorf("second attempt: %s", r.raw)
	}
}

func TestBansNotConfigured(t *testing.T) {
	e := newEnv(t) // no WithBans
	r := e.do(adminReq("GET", "/v1/Admin/Ban/")).must(t, 404)
	if !strings.Contains(r.errorText(), "not configured") {
		t.Errorf("%s", r.raw)
	}
	e.do(adminReq("DELETE", "/v1/Admin/Ban/192.0.2.1/")).must(t, 404)
	// Without an admin token the routes do not exist.
	e.restartWith(func(c *Config) { c.AdminToken = "" }, WithBans(newFakeBans()))
	e.do(adminReq("GET", "/v1/Admin/Ban/")).must(t, 404)
}
