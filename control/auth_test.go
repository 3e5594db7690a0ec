package control

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/store"
)

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T) *store.Store {
		st, err := store.OpenBolt(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	t.Run("given id and token", func(t *testing.T) {
		st := open(t)
		created, gen, err := Bootstrap(ctx, st, testAuthID, testToken)
		if err != nil || !created || gen != "" {
			t.Fatalf("Bootstrap: %v %q %v", created, gen, err)
		}
		a, err := st.Account(ctx, testAuthID)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(a.TokenHash, testToken) || !strings.HasPrefix(a.TokenHash, "hmac-sha256:") {
			t.Errorf("token stored as %q", a.TokenHash)
		}
		if !verifyToken(a.TokenHash, testToken) || verifyToken(a.TokenHash, testToken+"x") || verifyToken(a.TokenHash, "") {
			t.Error("verifyToken")
		}
		// Second start: an account exists, nothing happens (even with other values).
		created, gen, err = Bootstrap(ctx, st, "MAANOTHER", "")
		if err != nil || created || gen != "" {
			t.Fatalf("second Bootstrap: %v %q %v", created, gen, err)
		}
		if all, _ := st.Accounts(ctx); len(all) != 1 {
			t.Errorf("%d accounts", len(all))
		}
	})
	t.Run("generated", func(t *testing.T) {
		st := open(t)
		created, gen, err := Bootstrap(ctx, st, "", "")
		if err != nil || !created {
			t.Fatalf("Bootstrap: %v %v", created, err)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9]{40}$`).MatchString(gen) {
			t.Errorf("generated token %q", gen)
		}
		all, _ := st.Accounts(ctx)
		if len(all) != 1 || !regexp.MustCompile(`^MA[A-Z0-9]{18}$`).MatchString(all[0].AuthID) {
			t.Fatalf("accounts %+v", all)
		}
		if !verifyToken(all[0].TokenHash, gen) {
			t.Error("generated token does not verify")
		}
	})
	t.Run("rejected", func(t *testing.T) {
		st := open(t)
		for _, tc := range []struct{ id, token string }{{testAuthID, "short"}, {"bad id", testToken}, {"a/b", testToken}} {
			if _, _, err := Bootstrap(ctx, st, tc.id, tc.token); err == nil {
				t.Errorf("Bootstrap(%q, %q) accepted", tc.id, tc.token)
			}
		}
		if all, _ := st.Accounts(ctx); len(all) != 0 {
			t.Errorf("rejected bootstrap stored %+v", all)
		}
	})
	t.Run("salted", func(t *testing.T) {
		if h1, h2 := hashToken(testToken), hashToken(testToken); h1 == h2 {
			t.Error("equal tokens hash equally")
		}
		for _, bad := range []string{"", "sha256:abc", "hmac-sha256:zz:yy", "hmac-sha256::"} {
			if verifyToken(bad, "") {
				t.Errorf("%q verifies", bad)
			}
		}
	})
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t)
	admin := map[string]string{"Authorization": "Bearer " + testAdmin}
	const path = "/v1/Admin/Account/"

	for name, h := range map[string]map[string]string{
		"no token":    nil,
		"wrong token": {"Authorization": "Bearer nope"},
		"basic":       {"Authorization": "Basic " + testAdmin},
	} {
		r := e.do(req{method: "GET", path: path, noAuth: true, header: h}).must(t, 401)
		if r.hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", name)
		}
	}
	// An account's basic auth is no admin token.
	e.do(req{method: "GET", path: path}).must(t, 401)

	r := e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"name":"customer"}`}).must(t, 201)
	id, token := r.str("auth_id"), r.str("auth_token")
	if !regexp.MustCompile(`^MA[A-Z0-9]{18}$`).MatchString(id) || len(token) != 40 || r.hdr.Get("X-Sipedge-Version") == "" {
		t.Fatalf("create: %s", r.raw)
	}
	// The new account works at once, on its own path only.
	e.do(req{method: "POST", path: "IPAccessControlList/", user: id, pass: token, body: `{"name":"n","ip_addresses":["192.0.2.1"]}`}).must(t, 201)
	hr, _ := newJSONRequest("GET", e.url(id, "Trunk/"), "")
	e.send(hr).must(t, 401)

	e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"auth_id":"MACHOSEN","name":"chosen"}`}).must(t, 201)
	e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"auth_id":"MACHOSEN","name":"again"}`}).must(t, 409)
	e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"auth_id":"bad id","name":"x"}`}).must(t, 422)
	e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"auth_id":"MAX"}`}).must(t, 422)
	e.do(req{method: "POST", path: path, noAuth: true, header: admin, body: `{"name":"x","auth_token":"mine"}`}).must(t, 400)

	l := e.do(req{method: "GET", path: path + "?limit=2", noAuth: true, header: admin}).must(t, 200)
	if m := l.meta(t); m["total_count"] != 4.0 || m["next"] != path+"?limit=2&offset=2" {
		t.Errorf("meta %v", m)
	}
	all := e.do(req{method: "GET", path: strings.TrimSuffix(path, "/"), noAuth: true, header: admin}).must(t, 200)
	if strings.Contains(string(all.raw), "token") || strings.Contains(string(all.raw), token) {
		t.Errorf("list shows tokens: %s", all.raw)
	}
	ids := map[string]bool{}
	for _, o := range all.objects(t) {
		ids[o["auth_id"].(string)] = true
	}
	for _, want := range []string{testAuthID, otherAuthID, id, "MACHOSEN"} {
		if !ids[want] {
			t.Errorf("%s not listed", want)
		}
	}
	if strings.Contains(e.logText(), token) {
		t.Error("generated token logged")
	}
}

func TestAdminAPIDisabled(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.AdminToken = "" }))
	for _, m := range []string{"GET", "POST"} {
		e.do(req{method: m, path: "/v1/Admin/Account/", noAuth: true, body: `{"name":"x"}`,
			header: map[string]string{"Authorization": "Bearer "}}).must(t, 404)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{SIPDomain: "sip.example.org", AdminToken: strings.Repeat("a", 16)}, true},
		{Config{SIPDomain: "SIP.example.org"}, true},
		{Config{SIPDomain: "sip_x.example.org"}, false},
		{Config{SIPDomain: "bad domain"}, false},
		{Config{MaxBodyBytes: -1}, false},
		{Config{AdminToken: "short"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.cfg, err)
		}
	}
}

// TestMetricsShared: two servers on one registry share the collectors instead of panicking.
func TestMetricsShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(Config{Registerer: reg}, nil)
	New(Config{Registerer: reg}, nil)
}
