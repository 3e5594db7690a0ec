package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ in, key, str string }{
		{"192.0.2.10", "192.0.2.10", "192.0.2.10"},
		{"::ffff:192.0.2.10", "192.0.2.10", "192.0.2.10"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::9", "2001:db8:1:2::", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::", "fe80::/64"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			k := sourceKey(aa(tc.in))
			if k != aa(tc.key) || sourceKeyString(k) != tc.str {
				t.Fatalf("key %v %q, want %v %q", k, sourceKeyString(k), tc.key, tc.str)
			}
			back, ok := parseSourceKey(tc.str)
			if !ok || back != k {
				t.Fatalf("parse %q = %v %v", tc.str, back, ok)
			}
		})
	}
	for _, bad := range []string{"", "nope", "192.0.2.0/24", "2001:db8::/48"} {
		if _, ok := parseSourceKey(bad); ok {
			t.Errorf("parseSourceKey(%q) accepted", bad)
		}
	}
}

// fakeClock is a settable nanosecond clock.
type fakeClock struct {
	mu sync.Mutex
	ns int64
}

func (c *fakeClock) now() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.ns }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.ns += int64(d)
	c.mu.Unlock()
}

func TestRateLimiter(t *testing.T) {
	clk := &fakeClock{ns: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	r := newRateLimiter(30, 2*time.Second, 1024)
	r.now = clk.now
	a, b := aa("192.0.2.1"), aa("192.0.2.2")

	for i := range 30 {
		if !r.allow(a) {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if r.allow(a) {
		t.Fatal("31st request within the window allowed")
	}
	if !r.allow(b) {
		t.Fatal("another source shares the budget")
	}
	clk.add(2 * time.Second / 30) // one request's worth refills
	if !r.allow(a) || r.allow(a) {
		t.Fatal("refill is not one request per window/limit")
	}
	clk.add(2 * time.Second)
	for i := range 30 {
		if !r.allow(a) {
			t.Fatalf("after a full window, request %d refused", i+1)
		}
	}

	// Sustained rate over 10 s at 100/s: about 30 + 15/s*10 = 180 allowed.
	r2 := newRateLimiter(30, 2*time.Second, 1024)
	r2.now = clk.now
	allowed := 0
	for range 1000 {
		if r2.allow(a) {
			allowed++
		}
		clk.add(10 * time.Millisecond)
	}
	if allowed < 175 || allowed > 185 {
		t.Fatalf("allowed %d of 1000 over 10 s, want about 180", allowed)
	}

	if newRateLimiter(-1, time.Second, 10) != nil || !(*rateLimiter)(nil).allow(a) {
		t.Fatal("a disabled limiter must allow everything")
	}
}

func TestRateLimiterBounded(t *testing.T) {
	clk := &fakeClock{ns: 1}
	r := newRateLimiter(5, time.Second, 640) // 10 per shard
	r.now = clk.now
	for i := range 10000 {
		r.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := r.len(); n > 640 {
		t.Fatalf("%d sources tracked, cap 640", n)
	}
	// A source over its budget stays limited while the table churns, unless evicted;
	// idle (refilled) sources go first.
	hot := aa("192.0.2.99")
	for range 5 {
		r.allow(hot)
	}
	clk.add(2 * time.Second) // everything else refills
	for i := range 600 {
		r.allow(netip.AddrFrom4([4]byte{11, 0, byte(i >> 8), byte(i)}))
	}
	if n := r.len(); n > 640 {
		t.Fatalf("%d sources tracked, cap 640", n)
	}
}

func TestRateLimiterAllocs(t *testing.T) {
	r := newRateLimiter(1<<30, time.Second, 1024)
	a := aa("192.0.2.1")
	r.allow(a)
	if n := testing.AllocsPerRun(1000, func() { r.allow(a) }); n != 0 {
		t.Fatalf("allow allocates %v times per call", n)
	}
}

func TestBanTable(t *testing.T) {
	clk := &fakeClock{ns: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	tb := newBanTable(5, time.Minute, 10*time.Minute, 1024, "node-a")
	k := sourceKey(aa("192.0.2.7"))

	for i := 1; i <= 4; i++ {
		if _, set := tb.failure(k, BanReasonDigest, clk.now()); set {
			t.Fatalf("banned after %d failures", i)
		}
		clk.add(time.Second)
	}
	if tb.banned(k, clk.now()) {
		t.Fatal("banned below the threshold")
	}
	ban, set := tb.failure(k, BanReasonDigest, clk.now())
	if !set || !tb.banned(k, clk.now()) {
		t.Fatal("not banned at the threshold")
	}
	if ban.IP != "192.0.2.7" || ban.Reason != BanReasonDigest || ban.Failures != 5 || ban.Node != "node-a" ||
		ban.Until.Sub(ban.Since) != 10*time.Minute {
		t.Fatalf("ban %+v", ban)
	}
	if got := tb.list(clk.now()); len(got) != 1 || got[0] != ban {
		t.Fatalf("list %+v", got)
	}
	if _, set := tb.failure(k, BanReasonDigest, clk.now()); set {
		t.Fatal("a banned source was banned again")
	}
	clk.add(10 * time.Minute)
	if tb.banned(k, clk.now()) {
		t.Fatal("ban outlived its TTL")
	}
	tb.sweep(clk.now())
	if tb.active.Load() != 0 || tb.count(clk.now()) != 0 {
		t.Fatalf("%d bans left after the sweep", tb.active.Load())
	}

	// Failures spread beyond the window never add up.
	k2 := sourceKey(aa("192.0.2.8"))
	for range 20 {
		if _, set := tb.failure(k2, BanReasonDigest, clk.now()); set {
			t.Fatal("banned by failures 15 s apart (window 60 s, threshold 5)")
		}
		clk.add(15 * time.Second)
	}

	// Lift.
	for range 5 {
		tb.failure(k2, BanReasonUnknownTrunk, clk.now())
	}
	if !tb.banned(k2, clk.now()) || !tb.lift(k2, clk.now()) || tb.banned(k2, clk.now()) || tb.lift(k2, clk.now()) {
		t.Fatal("lift did not end the ban exactly once")
	}
	if _, set := tb.failure(k2, BanReasonDigest, clk.now()); set {
		t.Fatal("lift kept the failure count")
	}
}

func TestBanTableBounded(t *testing.T) {
	clk := &fakeClock{ns: 1}
	tb := newBanTable(1, time.Minute, time.Hour, 320, "") // 10 per shard
	for i := range 5000 {
		tb.failure(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), BanReasonDigest, clk.now())
		clk.add(time.Millisecond)
	}
	if n := tb.count(clk.now()); n > 320 || n < 100 {
		t.Fatalf("%d bans held, cap 320", n)
	}
	if int(tb.active.Load()) != tb.count(clk.now()) {
		t.Fatalf("active %d != counted %d", tb.active.Load(), tb.count(clk.now()))
	}
}

// A spray of sources with one failure each never grows the failure counters past their
// cap (counters past the window go first), and counting still works afterwards.
func TestBanFailureCountersBounded(t *testing.T) {
	clk := &fakeClock{ns: 1}
	tb := newBanTable(5, time.Minute, time.Hour, 320, "") // 10 counters per shard
	fails := func() (n, most int) {
		for i := range tb.shards {
			l := len(tb.shards[i].fails)
			n, most = n+l, max(most, l)
		}
		return n, most
	}
	for i := range 5000 {
		tb.failure(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), BanReasonDigest, clk.now())
	}
	if n, most := fails(); most > tb.perShard || n < 100 {
		t.Fatalf("%d counters, %d in the fullest shard (cap %d per shard)", n, most, tb.perShard)
	}
	if tb.count(clk.now()) != 0 {
		t.Fatal("single failures banned someone")
	}
	// Past the window, the stale counters make room before any live one is dropped.
	clk.add(2 * time.Minute)
	live := aa("192.0.2.50")
	for range 4 {
		tb.failure(live, BanReasonDigest, clk.now())
	}
	sh := tb.shard(live)
	if len(sh.fails) != tb.perShard {
		t.Fatalf("the live source's shard holds %d counters, want it full (%d)", len(sh.fails), tb.perShard)
	}
	// As many new sources in that shard as it has stale counters: each takes a stale one's place.
	for i, added := 0, 0; added < tb.perShard-1; i++ {
		if a := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}); tb.shard(a) == sh {
			tb.failure(a, BanReasonDigest, clk.now())
			added++
		}
	}
	if _, set := tb.failure(live, BanReasonDigest, clk.now()); !set {
		t.Fatal("a counter within its window was evicted while stale ones remained")
	}
}

func TestBannedAllocs(t *testing.T) {
	tb := newBanTable(1, time.Minute, time.Hour, 1024, "")
	now := time.Now().UnixNano()
	tb.failure(aa("192.0.2.1"), BanReasonDigest, now)
	b := &Bans{table: tb, now: time.Now}
	for _, ip := range []netip.Addr{aa("192.0.2.1"), aa("192.0.2.2"), aa("2001:db8::1")} {
		if n := testing.AllocsPerRun(1000, func() { b.Banned(ip) }); n != 0 {
			t.Fatalf("Banned(%v) allocates %v times", ip, n)
		}
	}
}

func TestBanTableReconcile(t *testing.T) {
	now := int64(1_000_000_000_000)
	tb := newBanTable(1, time.Minute, time.Hour, 1024, "")
	mine, theirs, lifted := aa("192.0.2.1"), aa("192.0.2.2"), aa("192.0.2.3")
	tb.failure(mine, BanReasonDigest, now) // this node only, never stored
	tb.set(lifted, banEntry{since: now, until: now + int64(time.Hour), synced: now - 10}, now)
	list := map[netip.Addr]banEntry{theirs: {since: now, until: now + int64(time.Hour), reason: "digest_failures", node: "b"}}
	unsynced := tb.reconcile(list, now, now)
	switch {
	case !tb.banned(theirs, now):
		t.Fatal("a ban set on another node was not applied")
	case tb.banned(lifted, now):
		t.Fatal("a ban lifted on another node survived")
	case !tb.banned(mine, now):
		t.Fatal("a local ban not yet stored was dropped")
	case len(unsynced) != 1 || unsynced[0].IP != "192.0.2.1":
		t.Fatalf("unsynced %+v", unsynced)
	}
	// A ban confirmed after the list was read is kept.
	tb.set(lifted, banEntry{since: now, until: now + int64(time.Hour), synced: now + 5}, now)
	tb.reconcile(list, now, now)
	if !tb.banned(lifted, now) {
		t.Fatal("a ban stored after the list was read was dropped")
	}
}

func TestTrunkCaps(t *testing.T) {
	clk := &fakeClock{ns: 1_000_000_000}
	nodes := 1
	c := newTrunkCaps(func() int { return nodes })
	c.now = clk.now

	cps := &acl.TrunkPolicy{ID: "cps", MaxCPS: 3}
	for i := range 3 {
		slot, kind := c.admit(cps)
		if kind != "" {
			t.Fatalf("call %d refused: %s", i+1, kind)
		}
		slot.release()
	}
	if _, kind := c.admit(cps); kind != capCPS {
		t.Fatalf("4th call within a second: %q", kind)
	}
	clk.add(time.Second / 3)
	if slot, kind := c.admit(cps); kind != "" {
		t.Fatalf("after a third of a second: %q", kind)
	} else {
		slot.release()
	}

	conc := &acl.TrunkPolicy{ID: "conc", MaxConcurrent: 2}
	s1, _ := c.admit(conc)
	s2, _ := c.admit(conc)
	if _, kind := c.admit(conc); kind != capConcurrent {
		t.Fatalf("3rd concurrent call: %q", kind)
	}
	s1.release()
	s1.release() // idempotent
	if c.active("conc") != 1 {
		t.Fatalf("active %d after one release", c.active("conc"))
	}
	s3, kind := c.admit(conc)
	if kind != "" {
		t.Fatalf("after a release: %q", kind)
	}
	s2.release()
	s3.release()

	// Two nodes: each enforces ceil(limit/2).
	nodes = 2
	three := &acl.TrunkPolicy{ID: "three", MaxConcurrent: 3}
	a, _ := c.admit(three)
	b, _ := c.admit(three)
	if _, kind := c.admit(three); kind != capConcurrent {
		t.Fatalf("3rd call on one of 2 nodes with max 3: %q (want ceil(3/2)=2 per node)", kind)
	}
	a.release()
	b.release()

	// No caps: counted, never refused.
	free := &acl.TrunkPolicy{ID: "free"}
	for range 100 {
		if _, kind := c.admit(free); kind != "" {
			t.Fatal("a trunk without caps refused a call")
		}
	}
	if c.active("free") != 100 {
		t.Fatalf("uncapped trunk counts %d calls", c.active("free"))
	}
	if slot, kind := c.admit(nil); slot != nil || kind != "" {
		t.Fatal("no trunk: no slot, no refusal")
	}
}

// errBanStore is a shared ban store that is down.
type errBanStore struct{}

var errStoreDown = errors.New("store down")

func (errBanStore) AddFailure(context.Context, string, time.Duration) (int64, error) {
	return 0, errStoreDown
}
func (errBanStore) Ban(context.Context, acl.Ban) error         { return errStoreDown }
func (errBanStore) List(context.Context) ([]acl.Ban, error)    { return nil, errStoreDown }
func (errBanStore) Lift(context.Context, string) (bool, error) { return false, errStoreDown }

// The pre-parse gate allocates nothing per datagram for a source it has seen.
func TestReadFilterAllocs(t *testing.T) {
	cfg := baseConfig()
	cfg.RateLimitRequests = 1 << 30
	s := newUnitServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	s.bans.failure(aa("127.0.0.66"), BanReasonDigest) // some ban exists: Banned does the lookup
	data := rawRequest("OPTIONS", "sip:127.0.0.1:5060")
	for _, src := range []string{"127.0.0.2", "127.0.0.9", "2001:db8::9"} {
		p := sipmsg.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.ParseIP(src), Port: 5060}}
		if out, err := s.readFilter(p, data); err != nil || len(out) == 0 {
			t.Fatalf("%s: dropped (%v)", src, err)
		}
		if n := testing.AllocsPerRun(1000, func() { s.readFilter(p, data) }); n != 0 {
			t.Fatalf("read filter allocates %v times per datagram from %s", n, src)
		}
	}
}

// TestRecentlyAuthenticatedSpendListedBudget: a source that passed digest is not held to
// the strangers' rate limit (a busy digest-only PBX), but stays subject to bans.
func TestRecentlyAuthenticatedSpendListedBudget(t *testing.T) {
	cfg := baseConfig()
	cfg.RateLimitRequests = 2
	s := newUnitServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	src := aa("127.0.0.9")
	for range 2 {
		if s.admitSource(src) != admitOK {
			t.Fatal("within budget refused")
		}
	}
	if s.admitSource(src) != admitLimited {
		t.Fatal("a stranger over its budget was admitted")
	}
	s.authed.add(sourceKey(src))
	for i := range 100 {
		if got := s.admitSource(src); got != admitOK {
			t.Fatalf("authenticated source request %d: %v", i, got)
		}
	}
	s.authed.now = func() int64 { return time.Now().Add(cfg.BanTTL + time.Hour).UnixNano() }
	if s.admitSource(src) != admitLimited {
		t.Fatal("the exemption did not expire")
	}
}

// The set of recently authenticated sources stays bounded; a full shard forgets an
// expired source before a live one.
func TestRecentSetBounded(t *testing.T) {
	clk := &fakeClock{ns: 1}
	r := newRecentSet(time.Minute, 2*rateShards) // 2 per shard
	r.now = clk.now
	inShard := func(sh *rateShard, n int, from int) []netip.Addr {
		var out []netip.Addr
		for i := from; len(out) < n; i++ {
			if a := netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)}); &r.shards[shardOf(r.seed, a, rateShards)] == sh {
				out = append(out, a)
			}
		}
		return out
	}
	sh := &r.shards[0]
	old := inShard(sh, 1, 0)[0]
	for round := range 20 { // map order is random: a wrong victim shows within a few rounds
		clear(sh.tat)
		r.add(old)
		clk.add(2 * time.Minute) // old has expired
		live := inShard(sh, 2, 1<<12+round*64)
		r.add(live[0])
		r.add(live[1]) // the shard is full: old must go, not live[0]
		if !r.has(live[0]) || !r.has(live[1]) || len(sh.tat) != 2 {
			t.Fatalf("round %d: live sources forgotten while an expired one was held: %v %v, %d held",
				round, r.has(live[0]), r.has(live[1]), len(sh.tat))
		}
	}
	for _, a := range inShard(sh, 50, 1<<13) {
		r.add(a)
		if len(sh.tat) > 2 {
			t.Fatalf("shard grew to %d", len(sh.tat))
		}
	}
	if r.has(old) {
		t.Fatal("an expired source counts as recent")
	}
}

// TestStrayResponsesDroppedBeforeParsing: responses from an address that is neither an
// upstream nor one the edge sent a request to are dropped by the read filter (counted),
// so a spray of them neither reaches sipgo's parser nor grows its per-source pool.
func TestStrayResponsesDroppedBeforeParsing(t *testing.T) {
	edge, _, reg := newDefenceRig(t, nil)
	before := metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropStrayResponse})
	pooled := edge.tp.Pool("udp").Size()
	for i := range 20 {
		c := newRawUDP(t, fmt.Sprintf("127.0.1.%d", i+1), edge.Addr())
		c.send([]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP " + edge.Addr().String() + ";branch=z9hG4bKstray\r\n" +
			"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
	}
	deadline := time.Now().Add(2 * time.Second)
	for metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropStrayResponse})-before < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("stray responses dropped: %v of 20", metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropStrayResponse})-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Dropped before parsing: sipgo never saw them, so it pooled none of their sources
	// (a parsed stray would be counted too, later, but its source would be pooled).
	if n := edge.tp.Pool("udp").Size(); n > pooled {
		t.Fatalf("sipgo's UDP pool grew from %d to %d: stray responses reached its read loop", pooled, n)
	}
}

// TestUDPSourcesForgotten: a spray of datagrams from ever new source addresses does not
// grow sipgo's per-source table without bound: the read loop is recycled after
// MaxUDPLoopSources sources, and the edge keeps answering.
func TestUDPSourcesForgotten(t *testing.T) {
	edge, _, _ := newDefenceRig(t, func(c *Config) { c.MaxUDPLoopSources = 20; c.UDPReaders = 1 })
	for i := range 120 {
		c := newRawUDP(t, fmt.Sprintf("127.0.2.%d", i%250+1), edge.Addr())
		if code := c.options(); code != 200 {
			t.Fatalf("OPTIONS %d answered %d", i, code)
		}
		c.conn.Close()
	}
	if n := edge.tp.Pool("udp").Size(); n > 20+5 {
		t.Fatalf("sipgo's UDP pool holds %d sources after 120, want at most about 20", n)
	}
}
