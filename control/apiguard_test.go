package control

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// restartWith restarts e's API server with the harness configuration changed by cfgf and
// the options given (the shared harness builds servers without options). The store stays.
func (e *env) restartWith(cfgf func(*Config), opts ...Option) {
	e.t.Helper()
	e.hs.Close()
	e.reg = prometheus.NewRegistry()
	cfg := testConfig(e)
	if cfgf != nil {
		cfgf(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		e.t.Fatalf("Validate: %v", err)
	}
	e.srv = New(cfg, e.api, opts...)
	e.hs = httptest.NewServer(e.srv.Handler())
}

// clientFrom is an HTTP client whose connections come from the loopback address src
// (127.0.0.0/8 needs no set-up on Linux), so the server sees src as the socket peer.
func clientFrom(t *testing.T, src string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// doFrom sends r like e.do, over a connection from loopback address src, with an
// optional X-Forwarded-For (xff "" sends none).
func (e *env) doFrom(src, xff string, r req) *resp {
	e.t.Helper()
	user, pass := r.user, r.pass
	if user == "" {
		user, pass = testAuthID, testToken
	}
	var body io.Reader
	if r.body != nil {
		raw, err := json.Marshal(r.body)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(raw)
	}
	hr, err := http.NewRequest(r.method, e.url(user, r.path), body)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if !r.noAuth {
		hr.SetBasicAuth(user, pass)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if xff != "" {
		hr.Header.Set("X-Forwarded-For", xff)
	}
	res, err := clientFrom(e.t, src).Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s from %s: %v", hr.Method, hr.URL, src, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := &resp{code: res.StatusCode, hdr: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("body not JSON: %q", raw)
		}
	}
	checkEnvelope(e.t, hr, out)
	return out
}

// gauge reads an unlabelled gauge from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestAPIAllowList: the allow list judges the socket peer; X-Forwarded-For counts only
// from a trusted proxy, and then its right-most untrusted address is the client.
func TestAPIAllowList(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) {
		c.APIAllow = pfx("127.0.0.3/32", "127.0.1.0/24")
		c.TrustedProxies = pfx("127.0.0.1/32", "127.0.0.4/32")
	})
	list := req{method: "GET", path: "IPAccessControlList/"}
	tests := []struct {
		name, src, xff string
		code           int
		reason         string // of sipedge_api_denied_total, for refusals
	}{
		{"allowed peer", "127.0.0.3", "", 200, ""},
		{"allowed peer in a block", "127.0.1.77", "", 200, ""},
		{"peer not allowed", "127.0.0.2", "", 403, denyNotAllowed},
		{"spoofed XFF from an untrusted peer is ignored", "127.0.0.2", "127.0.0.3", 403, denyNotAllowed},
		{"allowed peer keeps its own address whatever XFF says", "127.0.0.3", "127.0.0.2", 200, ""},
		{"trusted proxy forwarding an allowed client", "127.0.0.1", "127.0.0.3", 200, ""},
		{"trusted proxy forwarding a client not allowed", "127.0.0.1", "127.0.0.9", 403, denyNotAllowed},
		{"client-written left part proves nothing", "127.0.0.1", "127.0.0.3, 127.0.0.9", 403, denyNotAllowed},
		{"chain of trusted proxies is skipped", "127.0.0.1", "127.0.0.3, 127.0.0.4", 200, ""},
		{"port in XFF", "127.0.0.1", "127.0.0.3:41234", 200, ""},
		{"trusted proxy itself is not allowed", "127.0.0.1", "", 403, denyNotAllowed},
		{"garbage from a trusted proxy", "127.0.0.1", "127.0.0.3, not-an-ip", 403, denyBadForwarded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.metric("sipedge_api_denied_total", map[string]string{"reason": tt.reason})
			r := e.doFrom(tt.src, tt.xff, list).must(t, tt.code)
			if tt.code == 403 {
				if !strings.Contains(r.errorText(), "forbidden") {
					t.Errorf("error %q", r.errorText())
				}
				if got := e.metric("sipedge_api_denied_total", map[string]string{"reason": tt.reason}); got != before+1 {
					t.Errorf("denied_total{reason=%s} %v → %v", tt.reason, before, got)
				}
			}
		})
	}
	// Refused before routing: an unknown path and the public document are 403 too.
	e.doFrom("127.0.0.2", "", req{method: "GET", path: "/v1/nope", noAuth: true}).must(t, 403)
	e.doFrom("127.0.0.2", "", req{method: "GET", path: "/v1/openapi.json", noAuth: true}).must(t, 403)
	if n := e.metric("sipedge_api_forwarded_ignored_total", nil); n != 2 {
		t.Errorf("forwarded_ignored_total = %v, want 2 (the two XFF from untrusted peers)", n)
	}
	if !strings.Contains(e.logText(), `"event":"api_xff_ignored"`) {
		t.Error("an ignored X-Forwarded-For was not logged")
	}
}

// TestAPIAllowEmptyAdmitsEveryone: without allow list nobody is refused, and XFF from an
// untrusted peer is still only counted.
func TestAPIAllowEmptyAdmitsEveryone(t *testing.T) {
	e := newEnv(t)
	e.doFrom("127.0.0.2", "", req{method: "GET", path: "IPAccessControlList/"}).must(t, 200)
	e.doFrom("127.0.0.5", "192.0.2.1", req{method: "GET", path: "IPAccessControlList/"}).must(t, 200)
	if n := e.metric("sipedge_api_forwarded_ignored_total", nil); n != 1 {
		t.Errorf("forwarded_ignored_total = %v", n)
	}
}

// fakeNow is a settable clock for the guard.
type fakeNow struct{ ns atomic.Int64 }

func (f *fakeNow) now() time.Time          { return time.Unix(0, f.ns.Load()) }
func (f *fakeNow) advance(d time.Duration) { f.ns.Add(int64(d)) }

// TestAuthFailureLimit: the limit-th wrong credential within the window blocks that
// client (429 with Retry-After, even with right credentials) until the block ends;
// other clients, requests without credentials and clients behind a trusted proxy are
// judged on their own.
func TestAuthFailureLimit(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) {
		c.AuthFailureLimit = 3
		c.AuthFailureWindow = time.Minute
		c.AuthBlock = 2 * time.Minute
		c.TrustedProxies = pfx("127.0.0.1/32")
	})
	clock := &fakeNow{}
	clock.ns.Store(time.Now().UnixNano())
	e.srv.guard.now = clock.now

	good := req{method: "GET", path: "IPAccessControlList/"}
	bad := req{method: "GET", path: "IPAccessControlList/", pass: "wrong-token-wrong-token"}
	bad.user = testAuthID
	anon := req{method: "GET", path: "IPAccessControlList/", noAuth: true}
	admin := req{method: "GET", path: "/v1/Admin/Account/", noAuth: true, header: map[string]string{"Authorization": "Bearer nope-nope-nope-nope"}}

	// Missing credentials are no guess: never counted.
	for range 5 {
		e.doFrom("127.0.0.2", "", anon).must(t, 401)
	}
	e.doFrom("127.0.0.2", "", good).must(t, 200)
	// Wrong basic auth and a wrong admin token both count.
	e.doFrom("127.0.0.2", "", bad).must(t, 401)
	e.doFrom("127.0.0.2", "", admin).must(t, 401)
	e.doFrom("127.0.0.2", "", good).must(t, 200) // below the limit
	e.doFrom("127.0.0.2", "", bad).must(t, 401)  // third: blocked from now on
	r := e.doFrom("127.0.0.2", "", good).must(t, 429)
	if ra, _ := strconv.Atoi(r.hdr.Get("Retry-After")); ra < 110 || ra > 120 {
		t.Errorf("Retry-After %q, want about 120", r.hdr.Get("Retry-After"))
	}
	if !strings.Contains(r.errorText(), "too many failed authentications") {
		t.Errorf("error %q", r.errorText())
	}
	// Another client is unaffected, also behind the trusted proxy.
	e.doFrom("127.0.0.3", "", good).must(t, 200)
	e.doFrom("127.0.0.1", "198.51.100.7", good).must(t, 200)
	// The blocked client cannot hide behind a spoofed XFF, but can not be blocked by one either.
	e.doFrom("127.0.0.2", "127.0.0.3", good).must(t, 429)
	if got := e.metric("sipedge_api_denied_total", map[string]string{"reason": denyAuthLimited}); got != 2 {
		t.Errorf("denied_total{auth_rate_limited} = %v, want 2", got)
	}
	if n := gauge(t, e.reg, "sipedge_api_auth_blocked_clients"); n != 1 {
		t.Errorf("sipedge_api_auth_blocked_clients = %v, want 1", n)
	}

	// Behind the trusted proxy, failures count against the forwarded client.
	for range 3 {
		e.doFrom("127.0.0.1", "198.51.100.8", bad).must(t, 401)
	}
	e.doFrom("127.0.0.1", "198.51.100.8", good).must(t, 429)
	e.doFrom("127.0.0.1", "198.51.100.9", good).must(t, 200)
	e.doFrom("127.0.0.1", "", good).must(t, 200) // the proxy itself

	// The block ends.
	clock.advance(2*time.Minute + time.Second)
	e.doFrom("127.0.0.2", "", good).must(t, 200)
	e.doFrom("127.0.0.1", "198.51.100.8", good).must(t, 200)
	// A new window starts from zero: failures spread beyond the window never block.
	for range 4 {
		e.doFrom("127.0.0.2", "", bad).must(t, 401)
		e.doFrom("127.0.0.2", "", bad).must(t, 401)
		clock.advance(61 * time.Second)
	}
	e.doFrom("127.0.0.2", "", good).must(t, 200)
}

// v6Client is the i-th /64 of 2001:db8::/32, one client each for the failure limit.
func v6Client(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
}

// An attacker who fills the failure table first (one failure from each of 65,536 /64s,
// one IPv6 /48) still gets no unlimited guesses from the next address: a record that is
// blocking no one gives way. Filled with blocked clients, the failures of clients the
// table cannot take count together, and their shared block refuses every such client
// until the table has room again.
func TestAuthFailureTableFull(t *testing.T) {
	clock := &fakeNow{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	reg := prometheus.NewRegistry()
	g := newGuard(Config{AuthFailureLimit: 3, AuthFailureWindow: time.Minute, AuthBlock: 5 * time.Minute, Registerer: reg}, zerolog.Nop())
	g.now = clock.now
	guesses := func(c netip.Addr, n int) {
		for range n {
			g.authFailed(c)
		}
	}

	for i := range maxAuthTracked {
		guesses(v6Client(i), 1)
	}
	if len(g.fails) != maxAuthTracked {
		t.Fatalf("%d records, want the table full (%d)", len(g.fails), maxAuthTracked)
	}
	next := v6Client(maxAuthTracked)
	guesses(next, 3)
	if blockedFor(g, next) <= 0 {
		t.Fatal("a client beyond the full table guessed without limit")
	}
	if len(g.fails) > maxAuthTracked {
		t.Fatalf("the table grew to %d", len(g.fails))
	}

	// Every place taken by a blocked client: the overflow record counts for all others.
	held := make([]netip.Addr, 0, len(g.fails))
	for k := range g.fails {
		held = append(held, k)
	}
	for _, k := range held {
		guesses(k, 3)
	}
	if n := gauge(t, reg, "sipedge_api_auth_blocked_clients"); n != maxAuthTracked {
		t.Fatalf("sipedge_api_auth_blocked_clients = %v after filling the table with blocked clients", n)
	}
	late, bystander := v6Client(1<<22), v6Client(1<<22+1)
	if blockedFor(g, late) > 0 || blockedFor(g, bystander) > 0 {
		t.Fatal("clients beyond the table blocked before any of them failed")
	}
	guesses(late, 3)
	if blockedFor(g, late) <= 0 {
		t.Fatal("failures beyond a table full of blocked clients were not counted")
	}
	if blockedFor(g, bystander) <= 0 {
		t.Fatal("the overflow block does not cover every client the table cannot hold")
	}

	// Blocks and windows over: the table sweeps itself and judges clients one by one again.
	clock.advance(5*time.Minute + time.Second)
	guesses(late, 1)
	if blockedFor(g, late) > 0 || blockedFor(g, bystander) > 0 || len(g.fails) != 1 {
		t.Fatalf("after the blocks ended: late blocked %v, bystander blocked %v, %d records",
			blockedFor(g, late), blockedFor(g, bystander), len(g.fails))
	}
}

func TestAuthFailureLimitOff(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) { c.AuthFailureLimit = -1 })
	bad := req{method: "GET", path: "IPAccessControlList/", user: testAuthID, pass: "wrong-token-wrong-token"}
	for range DefaultAuthFailureLimit + 2 {
		e.do(bad).must(t, 401)
	}
	e.do(req{method: "GET", path: "IPAccessControlList/"}).must(t, 200)
}

// TestGuardMiddleware: Server.Guard puts the same checks in front of another handler
// (cmd wraps /metrics in it).
func TestGuardMiddleware(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) { c.APIAllow = pfx("127.0.0.3/32") })
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics\n") })
	hs := httptest.NewServer(e.srv.Guard(inner))
	defer hs.Close()
	for _, tt := range []struct {
		src  string
		code int
	}{{"127.0.0.3", 200}, {"127.0.0.2", 403}} {
		res, err := clientFrom(t, tt.src).Get(hs.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.code {
			t.Errorf("from %s: %d %s, want %d", tt.src, res.StatusCode, raw, tt.code)
		}
		if tt.code == 403 && (res.Header.Get("X-Api-Id") == "" || !strings.Contains(string(raw), `"error":"forbidden: 127.0.0.2 may not use this API"`)) {
			t.Errorf("refusal %s (X-Api-Id %q)", raw, res.Header.Get("X-Api-Id"))
		}
	}
}

func TestGuardConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"empty", Config{}, true},
		{"lists", Config{APIAllow: pfx("192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"), TrustedProxies: pfx("10.0.0.1/32")}, true},
		{"invalid allow", Config{APIAllow: []netip.Prefix{{}}}, false},
		{"trust everyone", Config{TrustedProxies: pfx("0.0.0.0/0")}, false},
		{"negative block", Config{AuthBlock: -time.Second}, false},
	} {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v", tt.name, err)
		}
	}
	got, err := ParsePrefixes(" 192.0.2.7, 2001:DB8::/32,,10.0.0.0/8 ")
	if err != nil || len(got) != 3 || got[0] != netip.MustParsePrefix("192.0.2.7/32") || got[1].String() != "2001:db8::/32" {
		t.Errorf("ParsePrefixes = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.5/8", "0.0.0.0/0", "nope"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
	// Mapped prefixes compare as IPv4.
	g := newGuard(Config{APIAllow: pfx("::ffff:192.0.2.0/120")}, zerolog.Nop())
	if !inAny(g.allow, netip.MustParseAddr("192.0.2.9")) {
		t.Errorf("mapped allow list %v does not hold 192.0.2.9", g.allow)
	}
}

func blockedFor(g *guard, c netip.Addr) time.Duration {
	d, _ := g.blocked(c)
	return d
}

// With the failure table full of blocked clients and the overflow block on, an operator
// from an address the table does not hold still gets in with valid credentials, while a
// wrong guess from there is refused 429 and counted against the overflow record.
func TestOverflowBlockAdmitsValidCredentials(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) { c.AuthFailureLimit = 3 })
	g := e.srv.guard
	for i := range maxAuthTracked {
		for range 3 {
			g.authFailed(v6Client(i))
		}
	}
	for range 3 {
		g.authFailed(v6Client(1 << 22)) // beyond the table: blocks the overflow record
	}
	if d, shared := g.blocked(netip.MustParseAddr("127.0.0.9")); d <= 0 || !shared {
		t.Fatalf("setup: 127.0.0.9 not under the overflow block (%v, %t)", d, shared)
	}
	good := req{method: "GET", path: "IPAccessControlList/"}
	e.doFrom("127.0.0.9", "", good).must(t, 200)
	g.mu.Lock()
	before := g.overflow.n
	g.mu.Unlock()
	bad := req{method: "GET", path: "IPAccessControlList/", user: testAuthID, pass: "wrong-token-wrong-token"}
	r := e.doFrom("127.0.0.9", "", bad).must(t, 429)
	if r.hdr.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	e.doFrom("127.0.0.9", "", req{method: "GET", path: "IPAccessControlList/", noAuth: true}).must(t, 429)
	g.mu.Lock()
	after := g.overflow.n
	g.mu.Unlock()
	if after != before+1 {
		t.Errorf("overflow failures %d → %d: the wrong guess was not counted (once)", before, after)
	}
	// Filling the table buys no unlimited oracle: beyond the shared check budget, guesses
	// get 429 without being checked; a valid credential costs the budget nothing.
	for range 3 * overflowCheckBurst {
		e.doFrom("127.0.0.9", "", good).must(t, 200)
	}
	g.mu.Lock()
	n0 := g.overflow.n
	g.mu.Unlock()
	for range 2 * overflowCheckBurst {
		e.doFrom("127.0.0.9", "", bad).must(t, 429)
	}
	g.mu.Lock()
	checked := g.overflow.n - n0
	g.mu.Unlock()
	if checked > overflowCheckBurst+overflowChecksPerSecond*2 {
		t.Errorf("%d wrong guesses checked in a burst, want at most about %d", checked, overflowCheckBurst)
	}
}

// TestGuardMetricsAllow: --metrics-allow replaces the API's allow list for what Guard
// wraps (/metrics), in both directions, while the API keeps its own.
func TestGuardMetricsAllow(t *testing.T) {
	e := newEnv(t)
	e.restartWith(func(c *Config) {
		c.APIAllow = pfx("127.0.0.3/32")
		c.MetricsAllow = pfx("127.0.0.4/32")
	})
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics\n") })
	hs := httptest.NewServer(e.srv.Guard(inner))
	defer hs.Close()
	for _, tt := range []struct {
		src  string
		code int
	}{{"127.0.0.4", 200}, {"127.0.0.3", 403}, {"127.0.0.2", 403}} {
		res, err := clientFrom(t, tt.src).Get(hs.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.code {
			t.Errorf("/metrics from %s: %d, want %d", tt.src, res.StatusCode, tt.code)
		}
	}
	e.doFrom("127.0.0.3", "", req{method: "GET", path: "IPAccessControlList/"}).must(t, 200)
	e.doFrom("127.0.0.4", "", req{method: "GET", path: "IPAccessControlList/"}).must(t, 403)
}
