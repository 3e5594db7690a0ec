package sip

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/internal/testutil"
)

// newUnitServer builds a server that is not listening, for handler tests with siptest
// recorders: it behaves as if bound to 127.0.0.1:5060.
func newUnitServer(t *testing.T, cfg Config, pol func() Policy) *Server {
	t.Helper()
	s, err := New(cfg, pol)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	startUnit(t, s)
	return s
}

// startUnit makes s work without its listeners, as if bound to 127.0.0.1:5060: a UDP
// socket of its own to send from, the transaction timers running.
func startUnit(t testing.TB, s *Server) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.runTimers(ctx.Done()) }()
	t.Cleanup(func() { cancel(); <-done; s.tp.Close(); udp.Close() })
	s.udp = udp
	s.runCtx = ctx
	s.dialCtx = allowDial(ctx)
	s.addr = ap("127.0.0.1:5060")
	s.adv = advertised{host: "127.0.0.1", port: 5060}
}

// recorder stands in for a server transaction: it keeps what the edge answered. Safe for
// concurrent use (timers answer from the wheel's goroutine).
type recorder struct {
	mu  sync.Mutex
	res []*sipmsg.Response
}

func (r *recorder) Respond(res *sipmsg.Response) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res = append(r.res, res)
	return nil
}

func (r *recorder) Result() []*sipmsg.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.res)
}

// final waits up to d for a final response.
func (r *recorder) final(d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		res := r.Result()
		if len(res) > 0 && res[len(res)-1].StatusCode >= 200 {
			return
		}
	}
}

// deadUDPPort returns a loopback UDP address nothing listens on.
func deadUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// serve runs one request through the handler and returns what the edge answered (for an
// INVITE or a request that got a provisional answer, once it got a final one, or after 3 s).
func serve(t *testing.T, s *Server, raw []byte, src string) []*sipmsg.Response {
	t.Helper()
	req := parseReq(t, raw, src)
	rec := &recorder{}
	s.handle(req, rec)
	if req.IsInvite() || len(rec.Result()) > 0 {
		rec.final(3 * time.Second)
	}
	return rec.Result()
}

func lastCode(t *testing.T, res []*sipmsg.Response) *sipmsg.Response {
	t.Helper()
	if len(res) == 0 {
		t.Fatal("no response")
	}
	return res[len(res)-1]
}

func headerValues(res *sipmsg.Response, name string) []string {
	var out []string
	for _, h := range res.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

func TestHandlerVerdicts(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	reg := prometheus.NewRegistry()
	cfg := baseConfig()
	cfg.UpstreamTimeout = 300 * time.Millisecond
	cfg.Logger = zerolog.New(logs)
	cfg.Registerer = reg
	cfg.Upstream = "sip:" + deadUDPPort(t)
	snap := mustCompile(t, testDataset(""))
	s := newUnitServer(t, cfg, policyOf(snap))
	unlisted, listed := "127.0.0.9:5099", "127.0.0.2:5099"

	t.Run("challenge", func(t *testing.T) {
		res := lastCode(t, serve(t, s, rawRequest("INVITE", "sip:service@127.0.0.1:5060", "User-Agent: probe"), unlisted))
		if res.StatusCode != 407 || res.Reason != "Proxy Authentication Required" {
			t.Fatalf("got %d %s", res.StatusCode, res.Reason)
		}
		ch := headerValues(res, "Proxy-Authenticate")
		if len(ch) != 1 || !strings.Contains(ch[0], "algorithm=MD5") {
			t.Fatalf("challenges %q: want one, MD5 (the default: UAs such as baresip give up on an algorithm they do not know)", ch)
		}
		for _, c := range ch {
			if !strings.Contains(c, `qop="auth"`) || !strings.Contains(c, `realm="sipedge"`) || strings.Contains(c, "stale") {
				t.Fatalf("challenge %q", c)
			}
		}
		if sv := headerValues(res, "Server"); len(sv) != 1 || sv[0] != "sipedge" {
			t.Fatalf("Server header %q", sv)
		}
	})

	t.Run("stale", func(t *testing.T) {
		old := newAuthenticator(testRealm, time.Second, testKey)
		old.now = func() time.Time { return time.Now().Add(-time.Minute) }
		pa := digestFor(t, old, aa("127.0.0.9"), acl.DigestMD5, testUser, testPassword, 1)
		res := lastCode(t, serve(t, s, rawRequest("INVITE", "sip:service@127.0.0.1:5060", pa), unlisted))
		ch := headerValues(res, "Proxy-Authenticate")
		if res.StatusCode != 407 || len(ch) != 1 || !strings.Contains(ch[0], "stale=true") {
			t.Fatalf("got %d %q", res.StatusCode, ch)
		}
	})

	// Wrong password and unknown user: fresh challenges (DESIGN §4.5), the same answer byte
	// for byte apart from tags and nonces.
	var shapes []string
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", testUser, "nope"},
		{"unknown user", "mallory", testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pa := digestFor(t, s.auth, aa("127.0.0.9"), acl.DigestMD5, tc.user, tc.pass, 1)
			res := lastCode(t, serve(t, s, rawRequest("INVITE", "sip:service@127.0.0.1:5060", pa), unlisted))
			ch := headerValues(res, "Proxy-Authenticate")
			if res.StatusCode != 407 || len(ch) != 1 || strings.Contains(ch[0], "stale") || len(res.Body()) != 0 {
				t.Fatalf("got %d %s %q", res.StatusCode, res.Reason, ch)
			}
			shapes = append(shapes, responseShape(res))
		})
	}
	if len(shapes) == 2 && shapes[0] != shapes[1] {
		t.Fatalf("wrong password and unknown user answered differently:\n%s\n%s", shapes[0], shapes[1])
	}

	for _, tc := range []struct {
		name   string
		raw    []byte
		src    string
		code   int
		reason string
		header string // a header the response must carry
	}{
		{"disabled trunk", rawRequest("INVITE", "sip:1@t2.example.org"), listed, 403, "Forbidden", ""},
		{"no credential", rawRequest("INVITE", "sip:1@t3.example.org"), unlisted, 403, "Forbidden", ""},
		{"malformed", dropLine(rawRequest("INVITE", "sip:1@t1.example.org"), "Max-Forwards"), listed, 400, "Missing or Repeated Max-Forwards", ""},
		{"garbage To", replace(rawRequest("INVITE", "sip:1@t1.example.org"), "To: <sip:1@t1.example.org>", "To: :0:"), listed, 400, "Bad To", ""},
		{"garbage From", replace(rawRequest("INVITE", "sip:1@t1.example.org"), "From: <sip:pbx@127.0.0.9>;tag=fromtag1", "From: :00;tag=fromtag1"), listed, 400, "Bad From", ""},
		{"garbage Via", replace(rawRequest("INVITE", "sip:1@t1.example.org"), "Via: SIP/2.0/UDP 127.0.0.9:5099;", "Via: // 0;"), listed, 400, "Bad Via", ""},
		{"too many hops", mfZero(rawRequest("INVITE", "sip:1@t1.example.org")), listed, 483, "Too Many Hops", ""},
		{"options", rawRequest("OPTIONS", "sip:127.0.0.1:5060"), unlisted, 200, "OK", "Allow"},
		{"register", rawRequest("REGISTER", "sip:127.0.0.1:5060"), unlisted, 405, "Method Not Allowed", "Allow"},
		{"subscribe", rawRequest("SUBSCRIBE", "sip:127.0.0.1:5060"), unlisted, 405, "Method Not Allowed", "Allow"},
		{"bye outside a dialog", rawRequest("BYE", "sip:127.0.0.1:5060"), unlisted, 481, "Call/Transaction Does Not Exist", ""},
		{"cancel matching nothing", rawRequest("CANCEL", "sip:127.0.0.1:5060"), unlisted, 481, "Call/Transaction Does Not Exist", ""},
		{"in-dialog without our route", replace(rawRequest("BYE", "sip:pbx@192.0.2.7"), "To: <sip:pbx@192.0.2.7>", "To: <sip:pbx@192.0.2.7>;tag=x"), unlisted, 403, "Forbidden", ""},
		{"in-dialog with a forged route token", replace(rawRequest("BYE", "sip:pbx@192.0.2.7", "Route: <sip:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@127.0.0.1:5060;lr>"), "To: <sip:pbx@192.0.2.7>", "To: <sip:pbx@192.0.2.7>;tag=x"), unlisted, 403, "Forbidden", ""},
		{"allowed, upstream silent", rawRequest("INVITE", "sip:1@t1.example.org"), listed, 408, "Request Timeout", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := lastCode(t, serve(t, s, tc.raw, tc.src))
			if res.StatusCode != tc.code || res.Reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", res.StatusCode, res.Reason, tc.code, tc.reason)
			}
			if tc.header != "" && len(res.GetHeaders(tc.header)) == 0 {
				t.Fatalf("no %s header", tc.header)
			}
		})
	}

	t.Run("security log", func(t *testing.T) {
		var found bool
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if m["event"] == "sip_denied" && m["verdict"] == "auth_failed" && m["user"] == "mallory" {
				found = true
				_, hasUA := m["user_agent"]
				if m["level"] != "warn" || m["src"] != unlisted || m["call_id"] == "" || m["trunk"] != "" ||
					m["snapshot_version"] != float64(7) || !hasUA || m["transport"] != "udp" {
					t.Fatalf("denied line %v", m)
				}
			}
		}
		if !found {
			t.Fatalf("no sip_denied line for the unknown user in:\n%s", logs.String())
		}
		for _, secret := range []string{testPassword, "response=", "nope"} {
			if strings.Contains(logs.String(), secret) {
				t.Fatalf("log contains %q", secret)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, tc := range []struct {
			labels []string
			want   float64
		}{
			{[]string{"none", "challenge", "udp"}, 1},
			{[]string{"none", "stale", "udp"}, 1},
			{[]string{"none", "auth_failed", "udp"}, 2},
			{[]string{"t2", "trunk_disabled", "udp"}, 1},
			{[]string{"t3", "no_credential", "udp"}, 1},
			{[]string{"t1", "allow_ip", "udp"}, 1},
		} {
			if got := counterValue(t, s.m.invites.WithLabelValues(tc.labels...)); got != tc.want {
				t.Errorf("invites%v = %v, want %v", tc.labels, got, tc.want)
			}
		}
		if got := counterValue(t, s.m.digest.WithLabelValues("failed")); got != 2 {
			t.Errorf("digest failed = %v", got)
		}
		if got := counterValue(t, s.m.upstream.WithLabelValues("timeout")); got != 1 {
			t.Errorf("upstream timeout = %v", got)
		}
		if got := counterValue(t, s.m.dropped.WithLabelValues(dropBadRoute)); got != 2 {
			t.Errorf("dropped bad_route = %v", got)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		for _, n := range []string{"sipedge_sip_invites_total", "sipedge_sip_digest_total", "sipedge_sip_requests_total",
			"sipedge_sip_active_dialogs", "sipedge_sip_transactions", "sipedge_sip_upstream_responses_total", "sipedge_sip_decision_seconds",
			"sipedge_sip_dropped_total"} {
			if !names[n] {
				t.Errorf("metric %s not exported", n)
			}
		}
	})
}

// responseShape is a response without the parts that differ per request (tags, branch,
// Call-ID): what a prober could compare.
var nonceRE = regexp.MustCompile(`nonce="[^"]*"`)

func responseShape(res *sipmsg.Response) string {
	var b strings.Builder
	b.WriteString(res.StartLine())
	for _, h := range res.Headers() {
		switch h.Name() {
		case "Via", "From", "To", "Call-ID":
			b.WriteString("\n" + h.Name())
		case "Proxy-Authenticate":
			b.WriteString("\n" + nonceRE.ReplaceAllString(h.String(), `nonce="*"`))
		default:
			b.WriteString("\n" + h.String())
		}
	}
	b.Write(res.Body())
	return b.String()
}

func TestHandlerNotReadyDrainingOverload(t *testing.T) {
	var pol Policy // nil until "loaded"
	cfg := baseConfig()
	cfg.RetryAfter = 7 * time.Second
	s := newUnitServer(t, cfg, func() Policy { return pol })
	invite := func() *sipmsg.Response {
		return lastCode(t, serve(t, s, rawRequest("INVITE", "sip:1@t1.example.org"), "127.0.0.2:5060"))
	}
	check := func(name string, res *sipmsg.Response, code int) {
		t.Helper()
		if res.StatusCode != code {
			t.Fatalf("%s: got %d, want %d", name, res.StatusCode, code)
		}
		if code == 503 {
			if ra := headerValues(res, "Retry-After"); len(ra) != 1 || ra[0] != "7" {
				t.Fatalf("%s: Retry-After %q", name, ra)
			}
		}
	}
	check("not ready", invite(), 503)
	check("options not ready", lastCode(t, serve(t, s, rawRequest("OPTIONS", "sip:127.0.0.1"), "127.0.0.2:5060")), 503)

	pol = mustCompile(t, testDataset("sip:"+deadUDPPort(t)))
	check("ready: disabled trunk", lastCode(t, serve(t, s, rawRequest("INVITE", "sip:1@t2.example.org"), "127.0.0.2:5060")), 403)

	s.pending.Store(int64(s.cfg.MaxPendingTransactions))
	check("overload", invite(), 503)
	s.pending.Store(0)

	s.Drain()
	check("draining", invite(), 503)
	check("options draining", lastCode(t, serve(t, s, rawRequest("OPTIONS", "sip:127.0.0.1"), "127.0.0.2:5060")), 503)
}

func TestHandlerBadSourceDropped(t *testing.T) {
	s := newUnitServer(t, baseConfig(), policyOf(mustCompile(t, testDataset(""))))
	for _, src := range []string{"", "not-an-address", "127.0.0.2"} {
		req := parseReq(t, rawRequest("INVITE", "sip:1@t1.example.org"), src)
		rec := &recorder{}
		s.handle(req, rec)
		if r := rec.Result(); len(r) != 0 {
			t.Fatalf("source %q: answered %d, want a silent drop", src, r[0].StatusCode)
		}
	}
}

func TestPeerAddrNeverUsesVia(t *testing.T) {
	req := parseReq(t, spoofed(rawRequest("INVITE", "sip:1@t1.example.org")), "")
	if _, err := peerAddr(req); err == nil {
		t.Fatal("peerAddr fell back to a header")
	}
	req.SetSource("[::ffff:127.0.0.9]:5060")
	got, err := peerAddr(req)
	if err != nil || got != netip.AddrPortFrom(aa("127.0.0.9"), 5060) {
		t.Fatalf("peerAddr = %v, %v; want unmapped 127.0.0.9:5060", got, err)
	}
}

func TestReadFilter(t *testing.T) {
	s := newUnitServer(t, baseConfig(), policyOf(nil))
	udp := sipmsg.TransportReadProps{Transport: "UDP"}
	for _, tc := range []struct {
		data string
		keep bool
	}{
		{"INVITE sip:a@b SIP/2.0\r\n", true},
		{"SIP/2.0 200 OK\r\nVia: x\r\n", false}, // a response from no upstream and no address asked
		{"X-CUSTOM sip:a@b SIP/2.0\r\n", true},
		{"\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\n", true}, // looks like a request line; sipgo's parser decides
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false},
		{"hello", false},
		{strings.Repeat("A", 64), false},
	} {
		out, err := s.readFilter(udp, []byte(tc.data))
		if err != nil {
			t.Fatalf("%q: filter returned an error (would stop the UDP listener)", tc.data)
		}
		if (out != nil) != tc.keep {
			t.Errorf("%q: kept=%v, want %v", tc.data, out != nil, tc.keep)
		}
	}
	// A response from the upstream, or from an address the edge sent a request to, passes.
	up := &net.UDPAddr{IP: net.ParseIP("192.0.2.80"), Port: 5060}
	s.coreIPs.add(aa("192.0.2.80"))
	if out, _ := s.readFilter(sipmsg.TransportReadProps{Transport: "UDP", RemoteAddr: up}, []byte("SIP/2.0 200 OK\r\nVia: x\r\n")); out == nil {
		t.Fatal("a response from the upstream was dropped")
	}
	pbx := &net.UDPAddr{IP: net.ParseIP("192.0.2.10"), Port: 5060}
	s.asked.add(aa("192.0.2.10"))
	if out, _ := s.readFilter(sipmsg.TransportReadProps{Transport: "UDP", RemoteAddr: pbx}, []byte("SIP/2.0 200 OK\r\nVia: x\r\n")); out == nil {
		t.Fatal("a response from an address the edge asked was dropped")
	}
	// TCP chunks pass untouched whatever they hold.
	if out, _ := s.readFilter(sipmsg.TransportReadProps{Transport: "TCP"}, []byte("\r\n")); string(out) != "\r\n" {
		t.Fatal("TCP data filtered")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults with key", func(*Config) {}, true},
		{"short key", func(c *Config) { c.NonceKey = []byte("short") }, false},
		{"bad algorithm", func(c *Config) { c.DigestAlgorithms = []string{"SHA-512"} }, false},
		{"repeated algorithm", func(c *Config) { c.DigestAlgorithms = []string{"MD5", "md5"} }, false},
		{"sha first", func(c *Config) { c.DigestAlgorithms = []string{"sha-256", "MD5"} }, true},
		{"listen name", func(c *Config) { c.Listen = "localhost:5060" }, false},
		{"listen v6", func(c *Config) { c.Listen = "[::1]:0" }, true},
		{"advertise wildcard", func(c *Config) { c.Advertise = "0.0.0.0" }, false},
		{"advertise name", func(c *Config) { c.Advertise = "sbc.example.org:5070" }, true},
		{"advertise crlf", func(c *Config) { c.Advertise = "a\r\nb" }, false},
		{"upstream tls", func(c *Config) { c.Upstream = "sips:core.example.org" }, false},
		{"upstream sctp", func(c *Config) { c.Upstream = "sip:core.example.org;transport=sctp" }, false},
		{"upstream tcp", func(c *Config) { c.Upstream = "sip:core.example.org:5080;transport=tcp" }, true},
		{"realm with quote", func(c *Config) { c.Realm = `a"b` }, false},
		{"user agent crlf", func(c *Config) { c.UserAgent = "x\r\nX-Evil: 1" }, false},
		{"no server header", func(c *Config) { c.UserAgent = "-" }, true},
		{"huge messages", func(c *Config) { c.MaxMessageBytes = 1 << 20 }, false},
		{"retry after", func(c *Config) { c.RetryAfter = time.Millisecond }, false},
		{"defence off", func(c *Config) { c.BanThreshold, c.RateLimitRequests = -1, -1 }, true},
		{"ban threshold -2", func(c *Config) { c.BanThreshold = -2 }, false},
		{"ban action 403", func(c *Config) { c.BanAction = BanAction403 }, true},
		{"ban action tarpit", func(c *Config) { c.BanAction = "tarpit" }, false},
		{"negative ban TTL", func(c *Config) { c.BanTTL = -time.Second }, false},
		{"listed budget", func(c *Config) { c.RateLimitListedRequests = 1000 }, true},
		{"negative listed budget", func(c *Config) { c.RateLimitListedRequests = -1 }, false},
		{"concurrent cap 503", func(c *Config) { c.ConcurrentCapCode = 503 }, true},
		{"concurrent cap 404", func(c *Config) { c.ConcurrentCapCode = 404 }, false},
		{"node name crlf", func(c *Config) { c.NodeName = "a\r\nb" }, false},
		{"trusted proxies", func(c *Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
		}, true},
		{"trusted proxy host bits", func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")} }, false},
		{"trusted proxy /0", func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }, false},
		{"trusted proxy zero", func(c *Config) { c.TrustedProxies = []netip.Prefix{{}} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{NonceKey: testKey}
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := New(Config{NonceKey: testKey}, nil); err == nil {
		t.Fatal("New accepted a nil policy func")
	}
}

// counterValue reads a counter (prometheus' testutil needs a module this repo does not
// carry).
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestTCPBudgetPerRequest: over TCP every request in a read spends one unit of the
// source's budget, so packing many requests into one read does not get around it.
func TestTCPBudgetPerRequest(t *testing.T) {
	cfg := baseConfig()
	cfg.RateLimitRequests = 10
	s := newUnitServer(t, cfg, policyOf(nil))
	tcp := sipmsg.TransportReadProps{Transport: "TCP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.77"), Port: 5060}}
	one := "OPTIONS sip:edge@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.77;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
	if _, err := s.readFilter(tcp, []byte(one)); err != nil {
		t.Fatalf("one request: %v", err)
	}
	if _, err := s.readFilter(tcp, []byte(strings.Repeat(one, 20))); !errors.Is(err, errRateLimited) {
		t.Fatalf("20 requests in one read over a budget of 10: %v, want errRateLimited", err)
	}
}
