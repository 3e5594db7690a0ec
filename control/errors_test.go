package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

func TestAuth(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("mine", "192.0.2.1")
	cases := []struct {
		name       string
		r          req
		wantSubstr string
	}{
		{"no auth", req{method: "GET", path: "IPAccessControlList/", noAuth: true}, "basic auth"},
		{"wrong token", req{method: "GET", path: "IPAccessControlList/", user: testAuthID, pass: "wrong"}, "invalid"},
		{"unknown account", req{method: "GET", path: "IPAccessControlList/", user: "MANOSUCHACCOUNT00000", pass: testToken}, "invalid"},
		{"empty token", req{method: "GET", path: "IPAccessControlList/", user: testAuthID, pass: ""}, ""},
		{"other account's token", req{method: "GET", path: "IPAccessControlList/" + id + "/", user: testAuthID, pass: otherToken}, "invalid"},
		{"no auth on write", req{method: "POST", path: "IPAccessControlList/", noAuth: true, body: `{"name":"x","ip_addresses":["192.0.2.1"]}`}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.r).must(t, 401)
			if got := r.hdr.Get("WWW-Authenticate"); got != `Basic realm="sipedge"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if !strings.Contains(r.errorText(), tc.wantSubstr) {
				t.Errorf("error %q", r.errorText())
			}
		})
	}
	// Valid credentials on another account's path: 401 too (documented choice).
	hr, _ := newJSONRequest("GET", e.url(otherAuthID, "IPAccessControlList/"), "")
	if r := e.send(hr); r.code != 401 || r.hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("other account's path: %d %s", r.code, r.raw)
	}
	hr, _ = newJSONRequest("GET", e.url("OTHER", "IPAccessControlList/"), "")
	e.send(hr).must(t, 401)
	if got := e.metric("sipedge_api_auth_failures_total", nil); got != float64(len(cases)+2) {
		t.Errorf("auth failures counted %v, want %d", got, len(cases)+2)
	}
	// Nothing was created by the unauthenticated write.
	if _, total, _ := e.st.ListACLs(context.Background(), testAuthID, store.Page{Limit: 20}); total != 1 {
		t.Errorf("total %d after rejected write", total)
	}
}

func TestErrorCodes(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("x", "192.0.2.1")
	big := `{"name":"` + strings.Repeat("x", maxBodyBytes) + `","ip_addresses":["192.0.2.1"]}`
	cases := []struct {
		name string
		r    req
		code int
		want string
	}{
		{"unknown route", req{method: "GET", path: "Nope/"}, 404, "no such resource"},
		{"unknown route outside the account", req{method: "GET", path: "/v1/nothing"}, 404, "no such resource"},
		{"unclean path", req{method: "GET", path: "IPAccessControlList//"}, 404, "no such resource"},
		{"dot segment", req{method: "GET", path: "/v1/Account/" + testAuthID + "/Zentrunk/./IPAccessControlList/"}, 404, ""},
		{"unknown object", req{method: "GET", path: "IPAccessControlList/00000000-0000-4000-8000-000000000000/"}, 404, "not found"},
		{"limit 0", req{method: "GET", path: "IPAccessControlList/?limit=0"}, 400, "limit"},
		{"limit 21", req{method: "GET", path: "IPAccessControlList/?limit=21"}, 400, "limit"},
		{"limit abc", req{method: "GET", path: "IPAccessControlList/?limit=abc"}, 400, "limit"},
		{"limit empty", req{method: "GET", path: "IPAccessControlList/?limit="}, 400, "limit"},
		{"limit twice", req{method: "GET", path: "IPAccessControlList/?limit=1&limit=2"}, 400, "limit"},
		{"limit signed", req{method: "GET", path: "IPAccessControlList/?limit=+5"}, 400, "limit"},
		{"negative offset", req{method: "GET", path: "IPAccessControlList/?offset=-1"}, 400, "offset"},
		{"offset abc", req{method: "GET", path: "Trunk/?offset=abc"}, 400, "offset"},
		{"huge offset", req{method: "GET", path: "Credential/?offset=99999999999999999999"}, 400, "offset"},
		{"bad query escape", req{method: "GET", path: "IPAccessControlList/?limit=%zz"}, 400, "query"},
		{"entry list limit", req{method: "GET", path: "IPAccessControlList/" + id + "/Entry/?limit=21"}, 400, "limit"},
		{"body too large", req{method: "POST", path: "IPAccessControlList/", body: big}, 413, "larger than"},
		{"text/plain", req{method: "POST", path: "IPAccessControlList/", body: `{"name":"x","ip_addresses":["192.0.2.1"]}`,
			header: map[string]string{"Content-Type": "text/plain"}}, 415, "Content-Type"},
		{"xml", req{method: "POST", path: "Trunk/", body: `<trunk/>`, header: map[string]string{"Content-Type": "application/xml"}}, 415, "application/json"},
		{"garbage content type", req{method: "POST", path: "Trunk/", body: `{}`, header: map[string]string{"Content-Type": ";;"}}, 415, ""},
		{"json with charset", req{method: "POST", path: "Trunk/", body: `{"name":"cs"}`,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, 201, ""},
		{"no content type is JSON", req{method: "POST", path: "Trunk/", body: `{"name":"nct"}`,
			header: map[string]string{"Content-Type": ""}}, 201, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.r).must(t, tc.code)
			if !strings.Contains(r.errorText(), tc.want) {
				t.Errorf("error %q does not contain %q", r.errorText(), tc.want)
			}
		})
	}
	t.Run("405 with Allow", func(t *testing.T) {
		for path, allow := range map[string]string{
			"IPAccessControlList/":                  "GET, HEAD, POST",
			"IPAccessControlList/" + id + "/":       "GET, HEAD, POST, DELETE",
			"IPAccessControlList/" + id + "/Entry":  "GET, HEAD, POST",
			"/v1/openapi.json":                      "GET, HEAD",
			"Trunk/00000000-0000-4000-8000-0000000": "GET, HEAD, POST, DELETE",
		} {
			for _, m := range []string{"PUT", "PATCH", "DELETE", "OPTIONS"} {
				if strings.Contains(allow, m) {
					continue
				}
				r := e.do(req{method: m, path: path}).must(t, 405)
				if got := r.hdr.Get("Allow"); got != allow {
					t.Errorf("%s %s: Allow %q, want %q", m, path, got, allow)
				}
			}
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		e.do(req{method: "FOO", path: "Trunk/"}).must(t, 405)
		if got := e.metric("sipedge_api_requests_total", map[string]string{"method": "other", "code": "405"}); got != 1 {
			t.Errorf("method label: %v requests counted as other", got)
		}
	})
	t.Run("404 before auth for unknown routes", func(t *testing.T) {
		e.do(req{method: "GET", path: "Nope/", noAuth: true}).must(t, 404)
	})
	if got := e.metric("sipedge_api_requests_total", map[string]string{"route": "unmatched", "code": "404"}); got < 4 {
		t.Errorf("unmatched 404s counted %v", got)
	}
	if got := e.metric("sipedge_api_requests_total", map[string]string{"route": zentrunk + "IPAccessControlList/", "method": "GET", "code": "400"}); got < 8 {
		t.Errorf("400s on the ACL list route counted %v", got)
	}
	if got := e.metric("sipedge_api_request_duration_seconds", map[string]string{"route": zentrunk + "IPAccessControlList/"}); got < 10 {
		t.Errorf("durations observed %v", got)
	}
}

// failing wraps the real store and fails chosen calls.
type failing struct {
	store.API
	err error
}

func (f failing) ListACLs(context.Context, string, store.Page) ([]acl.IPACL, int, error) {
	return nil, 0, f.err
}

func (f failing) CreateACL(context.Context, acl.IPACL, ...store.WriteOption) (uint64, error) {
	return 0, f.err
}

func TestStoreFailures(t *testing.T) {
	t.Run("unavailable is 503", func(t *testing.T) {
		e := newEnv(t, withAPI(func(a store.API) store.API {
			return failing{API: a, err: errors.Join(errors.New("redis: dial tcp: refused"), store.ErrUnavailable)}
		}))
		for _, r := range []req{
			{method: "GET", path: "IPAccessControlList/"},
			{method: "POST", path: "IPAccessControlList/", body: `{"name":"x","ip_addresses":["192.0.2.1"]}`},
		} {
			res := e.do(r).must(t, 503)
			if res.hdr.Get("Retry-After") == "" || strings.Contains(res.errorText(), "redis") {
				t.Errorf("503: Retry-After %q, error %q", res.hdr.Get("Retry-After"), res.errorText())
			}
		}
	})
	t.Run("other errors are 500, logged once, not shown", func(t *testing.T) {
		e := newEnv(t, withAPI(func(a store.API) store.API {
			return failing{API: a, err: errors.New("disk on fire")}
		}))
		r := e.do(req{method: "GET", path: "IPAccessControlList/"}).must(t, 500)
		if strings.Contains(r.errorText(), "disk") {
			t.Errorf("internal error shown: %q", r.errorText())
		}
		logs := e.logText()
		if n := strings.Count(logs, "disk on fire"); n != 1 {
			t.Errorf("internal error logged %d times: %s", n, logs)
		}
		if !strings.Contains(logs, r.str("api_id")) {
			t.Error("log line does not carry the api_id")
		}
	})
	t.Run("a panic is a 500 and the server lives on", func(t *testing.T) {
		e := newEnv(t, withAPI(func(a store.API) store.API { return panicky{a} }))
		e.do(req{method: "GET", path: "Trunk/"}).must(t, 500)
		if !strings.Contains(e.logText(), "bug in a store") {
			t.Error("panic not logged")
		}
		e.do(req{method: "GET", path: "Credential/"}).must(t, 200)
	})
	t.Run("auth lookup unavailable is 503", func(t *testing.T) {
		e := newEnv(t, withAPI(func(a store.API) store.API { return accountDown{a} }))
		e.do(req{method: "GET", path: "Trunk/"}).must(t, 503)
	})
}

type panicky struct{ store.API }

func (panicky) ListTrunks(context.Context, string, store.Page) ([]acl.Trunk, int, error) {
	panic("bug in a store")
}

type accountDown struct{ store.API }

func (accountDown) Account(context.Context, string) (acl.Account, error) {
	return acl.Account{}, store.ErrUnavailable
}
