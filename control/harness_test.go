package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

const (
	testAuthID   = "MATESTACCOUNT0000001"
	testToken    = "test-secret-token-0000000001"
	testDomain   = "sip.example.org"
	testAdmin    = "admin-secret-token-000001"
	otherAuthID  = "MAOTHERACCOUNT000002"
	otherToken   = "other-secret-token-000000002"
	maxBodyBytes = 4096
)

// env is one real server: the bbolt store in a temp dir, the API on an httptest server
// (127.0.0.1:0) and two accounts.
type env struct {
	t    *testing.T
	dir  string
	st   *store.Store
	api  store.API // what the server uses (st, or a wrapper around it)
	srv  *Server
	hs   *httptest.Server
	reg  *prometheus.Registry
	logs *bytes.Buffer
}

type envOption func(*env, *Config)

func withAPI(wrap func(store.API) store.API) envOption {
	return func(e *env, _ *Config) { e.api = wrap(e.api) }
}

func withConfig(f func(*Config)) envOption { return func(_ *env, c *Config) { f(c) } }

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.open(opts...)
	return e
}

// open opens the store in e.dir (again, after close) and starts a server on it.
func (e *env) open(opts ...envOption) {
	t := e.t
	t.Helper()
	// Leases of an hour: no node drops out of the registry during a test.
	st, err := store.OpenBolt(e.dir, store.WithNodeTTL(time.Hour))
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	e.st, e.api = st, st
	if _, _, err := Bootstrap(context.Background(), st, testAuthID, testToken); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if _, err := st.Account(context.Background(), otherAuthID); err != nil {
		if _, err := st.CreateAccount(context.Background(), acl.Account{AuthID: otherAuthID, Name: "other",
			TokenHash: hashToken(otherToken), CreatedAt: time.Now()}); err != nil {
			t.Fatalf("CreateAccount: %v", err)
		}
	}
	allowances(t, st)
	e.reg = prometheus.NewRegistry()
	e.logs = &bytes.Buffer{}
	cfg := testConfig(e)
	for _, o := range opts {
		o(e, &cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	e.srv = New(cfg, e.api)
	e.hs = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.close)
}

// testConfig is the server configuration of the tests.
func testConfig(e *env) Config {
	return Config{SIPDomain: testDomain, AdminToken: testAdmin, MaxBodyBytes: maxBodyBytes,
		Logger: zerolog.New(syncWriter{e.logs}), Registerer: e.reg,
		// Upstreams: any documentation address, names resolved without DNS.
		UpstreamAllow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
			netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		Resolve: fakeResolve}
}

// allowances: the tests of the API's mechanics write faster than the default write rate,
// use the documentation prefix 2001:db8::/32, short IPv4 prefixes and trunk domains under
// example.org, so the two test accounts have the admin's allowances for them (the tenancy
// tests use accounts with the defaults).
func allowances(t *testing.T, st *store.Store) {
	t.Helper()
	for _, id := range []string{testAuthID, otherAuthID} {
		if a, err := st.Account(context.Background(), id); err != nil || a.Limits.WriteBurst != 0 {
			continue // set at the first open
		}
		if _, _, err := st.UpdateAccount(context.Background(), id, func(a *acl.Account) error {
			a.Limits = acl.Limits{WritesPerSecond: 100000, WriteBurst: 100000, MinPrefixV4: 8, MinPrefixV6: 32, MaxACLs: 1000}
			if id == testAuthID {
				a.TrunkDomains = []string{"*.example.org"}
			}
			return nil
		}); err != nil {
			t.Fatalf("UpdateAccount: %v", err)
		}
	}
}

// fakeResolve resolves every name under example.org/.com/.net to 198.51.100.5 and
// "*.metadata.example" to 169.254.169.254; anything else does not resolve.
func fakeResolve(_ context.Context, host string) ([]netip.Addr, error) {
	switch {
	case strings.HasSuffix(host, ".metadata.example"):
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	case strings.HasSuffix(host, ".example.org"), strings.HasSuffix(host, ".example.com"), strings.HasSuffix(host, ".example.net"):
		return []netip.Addr{netip.MustParseAddr("198.51.100.5")}, nil
	}
	return nil, errors.New("no such host")
}

// close stops the server and closes the store (idempotent).
func (e *env) close() {
	if e.hs != nil {
		e.hs.Close()
		e.hs = nil
	}
	if e.st != nil {
		_ = e.st.Close()
		e.st = nil
	}
}

// syncWriter is a log sink for the server's logger; zerolog writes each line in one call.
type syncWriter struct{ b *bytes.Buffer }

var logMu = make(chan struct{}, 1)

func (w syncWriter) Write(p []byte) (int, error) {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return w.b.Write(p)
}

func (e *env) logText() string {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return e.logs.String()
}

// resp is one response, its body decoded when it is JSON.
type resp struct {
	code int
	hdr  http.Header
	raw  []byte
	body map[string]any
}

// req describes one request. path is relative to the account's Zentrunk base unless it
// starts with "/"; body is marshalled to JSON unless it is a string or url.Values.
type req struct {
	method, path string
	body         any
	user, pass   string // basic auth; default the test account
	noAuth       bool
	header       map[string]string
}

func (e *env) url(account, path string) string {
	if strings.HasPrefix(path, "/") {
		return e.hs.URL + path
	}
	return e.hs.URL + "/v1/Account/" + account + "/Zentrunk/" + path
}

func (e *env) do(r req) *resp {
	e.t.Helper()
	user, pass := r.user, r.pass
	if user == "" {
		user, pass = testAuthID, testToken
	}
	var body io.Reader
	ctype := ""
	switch b := r.body.(type) {
	case nil:
	case string:
		body, ctype = strings.NewReader(b), "application/json"
	case url.Values:
		body, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body, ctype = bytes.NewReader(raw), "application/json"
	}
	hr, err := http.NewRequest(r.method, e.url(user, r.path), body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		hr.Header.Set("Content-Type", ctype)
	}
	if !r.noAuth {
		hr.SetBasicAuth(user, pass)
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	return e.send(hr)
}

func (e *env) send(hr *http.Request) *resp {
	e.t.Helper()
	res, err := e.hs.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", hr.Method, hr.URL, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := &resp{code: res.StatusCode, hdr: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: %d, body not a JSON object: %v: %q", hr.Method, hr.URL, res.StatusCode, err, raw)
		}
	}
	checkEnvelope(e.t, hr, out)
	return out
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// checkEnvelope asserts what every response shares: X-Api-Id, and for a body, the same
// api_id in it; an error body is exactly {api_id, error}.
func checkEnvelope(t *testing.T, hr *http.Request, r *resp) {
	t.Helper()
	id := r.hdr.Get("X-Api-Id")
	if !uuidRE.MatchString(id) {
		t.Errorf("%s %s: X-Api-Id %q is not a uuid v4", hr.Method, hr.URL.Path, id)
	}
	if r.body == nil || hr.URL.Path == "/v1/openapi.json" {
		return
	}
	if r.body["api_id"] != id {
		t.Errorf("%s %s: api_id %v, X-Api-Id %s", hr.Method, hr.URL.Path, r.body["api_id"], id)
	}
	if r.code >= 400 {
		if _, ok := r.body["error"].(string); !ok || len(r.body) != 2 {
			t.Errorf("%s %s: error body %s, want exactly {api_id, error}", hr.Method, hr.URL.Path, r.raw)
		}
		if ct := r.hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: error Content-Type %q", hr.Method, hr.URL.Path, ct)
		}
	}
}

// must asserts the status code and returns the response.
func (r *resp) must(t *testing.T, code int) *resp {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d: %s", r.code, code, r.raw)
	}
	return r
}

// str returns body[key] as a string ("" if absent).
func (r *resp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func (r *resp) errorText() string { return r.str("error") }

// objects returns the objects of a list response.
func (r *resp) objects(t *testing.T) []map[string]any {
	t.Helper()
	raw, ok := r.body["objects"].([]any)
	if !ok {
		t.Fatalf("no objects array: %s", r.raw)
	}
	out := make([]map[string]any, len(raw))
	for i, o := range raw {
		out[i] = o.(map[string]any)
	}
	return out
}

func (r *resp) meta(t *testing.T) map[string]any {
	t.Helper()
	m, ok := r.body["meta"].(map[string]any)
	if !ok {
		t.Fatalf("no meta: %s", r.raw)
	}
	return m
}

// createACL creates an ACL through the API and returns its uuid.
func (e *env) createACL(name string, addrs ...string) string {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": name, "ip_addresses": addrs}}).must(e.t, 201)
	return r.str("ipacl_uuid")
}

func (e *env) createCredential(name, user string) string {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "Credential/", body: map[string]any{"name": name, "username": user, "password": "s3cret-passw0rd"}}).must(e.t, 201)
	return r.str("credential_uuid")
}

func (e *env) createTrunk(body map[string]any) string {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "Trunk/", body: body}).must(e.t, 201)
	return r.str("trunk_id")
}

// counter reads a counter or histogram-count sample from the registry.
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// equalJSON compares a decoded JSON value with want after a JSON round trip of want.
func equalJSON(got, want any) bool {
	a, err1 := json.Marshal(got)
	raw, err2 := json.Marshal(want)
	var w any
	if err1 != nil || err2 != nil || json.Unmarshal(raw, &w) != nil {
		return false
	}
	b, _ := json.Marshal(w)
	return string(a) == string(b)
}

func matches(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// toStrings converts a decoded JSON array of strings.
func toStrings(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// newJSONRequest builds an authenticated JSON request of the test account.
func newJSONRequest(method, u, body string) (*http.Request, error) {
	hr, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.SetBasicAuth(testAuthID, testToken)
	return hr, nil
}
