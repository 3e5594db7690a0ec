package sip

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
)

// Brute-force defence through real servers on loopback: 127.0.0.2 is the listed PBX,
// 127.0.0.6-9 are unlisted sources (attackers and clean digest users).

func newDefenceRig(t *testing.T, mod func(*Config), opts ...Option) (*Server, *uas, *prometheus.Registry) {
	t.Helper()
	u := newUAS(t)
	reg := prometheus.NewRegistry()
	cfg := baseConfig()
	cfg.Upstream = "sip:" + u.addr.String()
	cfg.Registerer = reg
	if mod != nil {
		mod(&cfg)
	}
	return startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))), opts...), u, reg
}

func edgeURI(s *Server) string { return "sip:service@" + s.Addr().String() }

func TestBruteForceIsBanned(t *testing.T) {
	edge, _, reg := newDefenceRig(t, nil)
	ruri := edgeURI(edge)
	atk := newRawUDP(t, "127.0.0.9", edge.Addr())

	for i := 1; i <= DefaultBanThreshold; i++ {
		if code := atk.invite(ruri, testUser, "guess-"+string(rune('0'+i))); code != 407 {
			t.Fatalf("wrong password #%d answered %d, want 407", i, code)
		}
	}
	// Banned: the right password gets nothing, nor does anything else, on any transport.
	if code := atk.invite(ruri, testUser, testPassword); code != 0 {
		t.Fatalf("banned source with the right password answered %d", code)
	}
	if code := atk.options(); code != 0 {
		t.Fatalf("banned source's OPTIONS answered %d", code)
	}
	if c := dialRawTCP(t, "127.0.0.9", edge.Addr()); !c.closed(2 * time.Second) {
		t.Fatal("TCP connection from a banned source stays open")
	}
	// The ban is per source: a clean one with the right password is relayed.
	if code := newRawUDP(t, "127.0.0.8", edge.Addr()).invite(ruri, testUser, testPassword); code != 200 {
		t.Fatalf("clean source with the right password answered %d", code)
	}

	bans, err := edge.Bans().List(context.Background())
	if err != nil || len(bans) != 1 {
		t.Fatalf("List = %+v, %v", bans, err)
	}
	if b := bans[0]; b.IP != "127.0.0.9" || b.Reason != BanReasonDigest || b.Failures != DefaultBanThreshold ||
		b.Until.Sub(b.Since) != DefaultBanTTL {
		t.Fatalf("ban %+v", b)
	}
	if v := metricValue(t, reg, "sipedge_sip_bans_total", map[string]string{"reason": BanReasonDigest}); v != 1 {
		t.Errorf("sipedge_sip_bans_total{reason=digest_failures} = %v", v)
	}
	if v := metricValue(t, reg, "sipedge_sip_banned_sources", nil); v != 1 {
		t.Errorf("sipedge_sip_banned_sources = %v", v)
	}
	if v := metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropBanned}); v < 3 {
		t.Errorf("sipedge_sip_dropped_total{reason=banned} = %v, want >= 3", v)
	}

	lifted, err := edge.Bans().Lift(context.Background(), aa("127.0.0.9"))
	if err != nil || !lifted {
		t.Fatalf("Lift = %v, %v", lifted, err)
	}
	if code := atk.invite(ruri, testUser, testPassword); code != 200 {
		t.Fatalf("after Lift the right password answered %d", code)
	}
	if lifted, _ := edge.Bans().Lift(context.Background(), aa("127.0.0.9")); lifted {
		t.Fatal("Lift of a source not banned reported true")
	}
	if v := metricValue(t, reg, "sipedge_sip_banned_sources", nil); v != 0 {
		t.Errorf("sipedge_sip_banned_sources = %v after Lift", v)
	}
}

// TestListedSourceBannedOnlyElsewhere: a source an ACL lists is exempt from bans only for
// the trunks that list it (DESIGN §4a). Its wrong passwords against another trunk are
// counted and ban it there, while its own trunk still takes its calls.
func TestListedSourceBannedOnlyElsewhere(t *testing.T) {
	edge, _, _ := newDefenceRig(t, nil)
	pbx := newRawUDP(t, "127.0.0.2", edge.Addr())
	for i := range DefaultBanThreshold {
		// t4 has a credential and no ACL: the listed PBX must authenticate there.
		if code := pbx.invite("sip:100@t4.example.org", testUser, "wrong"); code != 407 {
			t.Fatalf("wrong password #%d from the listed PBX answered %d", i+1, code)
		}
	}
	if !edge.Bans().Banned(aa("127.0.0.2")) {
		t.Fatal("wrong passwords from a listed source against a trunk that does not list it: not banned")
	}
	if code := pbx.invite("sip:100@t4.example.org", "", ""); code != 0 {
		t.Fatalf("banned source's INVITE to a trunk that does not list it answered %d, want silence", code)
	}
	if code := pbx.invite(edgeURI(edge), "", ""); code != 200 {
		t.Fatalf("listed PBX's call on its own trunk answered %d after its ban elsewhere", code)
	}
}

func TestPlainChallengesAreNoFailures(t *testing.T) {
	edge, _, _ := newDefenceRig(t, nil)
	ua := newRawUDP(t, "127.0.0.7", edge.Addr())
	for i := range 3 * DefaultBanThreshold {
		if code := ua.invite(edgeURI(edge), "", ""); code != 407 {
			t.Fatalf("INVITE #%d without credentials answered %d, want 407", i+1, code)
		}
		time.Sleep(20 * time.Millisecond) // stay inside the rate budget
	}
	if edge.Bans().Banned(aa("127.0.0.7")) {
		t.Fatal("first-time 407 challenges counted as failures")
	}
}

// TestOnlyAnswersToOurNoncesCount: INVITEs that answer no nonce this edge issued to the
// source (none at all, a trunk without credential, a broken Proxy-Authorization) are what
// spoofed UDP datagrams look like: they ban nobody (DESIGN §4a). The same source's wrong
// answers to our nonces do.
func TestOnlyAnswersToOurNoncesCount(t *testing.T) {
	edge, _, reg := newDefenceRig(t, func(c *Config) { c.RateLimitRequests = 1000 }) // bans, not the rate limit
	atk := newRawUDP(t, "127.0.0.6", edge.Addr())
	for i := range 2 * DefaultBanThreshold {
		if code := atk.invite("sip:100@t3.example.org", "", ""); code != 403 {
			t.Fatalf("INVITE #%d to a trunk without credential answered %d", i+1, code)
		}
		raw := rawRequest("INVITE", "sip:100@t1.example.org", `Proxy-Authorization: Digest username="x`)
		if res := atk.request(raw, 2*time.Second); res == nil || res.StatusCode != 400 {
			t.Fatalf("INVITE #%d with a broken Proxy-Authorization answered %v", i+1, res)
		}
	}
	if edge.Bans().Banned(aa("127.0.0.6")) {
		t.Fatal("failures that answer no nonce of ours banned the source")
	}
	for range DefaultBanThreshold {
		atk.invite("sip:100@t1.example.org", testUser, "wrong")
	}
	if !edge.Bans().Banned(aa("127.0.0.6")) {
		t.Fatal("wrong answers to our nonces did not ban the source")
	}
	if v := metricValue(t, reg, "sipedge_sip_bans_total", map[string]string{"reason": BanReasonDigest}); v != 1 {
		t.Fatalf("sipedge_sip_bans_total{reason=digest} = %v", v)
	}
}

func TestBanExpires(t *testing.T) {
	edge, _, _ := newDefenceRig(t, func(c *Config) { c.BanThreshold = 2; c.BanTTL = time.Second })
	atk := newRawUDP(t, "127.0.0.9", edge.Addr())
	for range 2 {
		atk.invite(edgeURI(edge), testUser, "wrong")
	}
	if code := atk.options(); code != 0 {
		t.Fatalf("banned source answered %d", code)
	}
	eventually(t, 3*time.Second, "ban to expire", func() bool { return !edge.Bans().Banned(aa("127.0.0.9")) })
	if code := atk.options(); code != 200 {
		t.Fatalf("after the TTL OPTIONS answered %d", code)
	}
}

func TestBanAction403(t *testing.T) {
	edge, _, _ := newDefenceRig(t, func(c *Config) { c.BanAction = BanAction403 })
	atk := newRawUDP(t, "127.0.0.9", edge.Addr())
	for range DefaultBanThreshold {
		atk.invite(edgeURI(edge), testUser, "wrong")
	}
	if code := atk.options(); code != 403 {
		t.Fatalf("banned source's OPTIONS answered %d, want 403", code)
	}
	if code := atk.invite(edgeURI(edge), testUser, testPassword); code != 403 {
		t.Fatalf("banned source's INVITE answered %d, want 403", code)
	}
}

func TestBanStoreDownFallsBackToLocal(t *testing.T) {
	edge, _, reg := newDefenceRig(t, nil, WithBanStore(errBanStore{}))
	atk := newRawUDP(t, "127.0.0.9", edge.Addr())
	for range DefaultBanThreshold {
		if code := atk.invite(edgeURI(edge), testUser, "wrong"); code != 407 {
			t.Fatalf("wrong password answered %d", code)
		}
	}
	if code := atk.options(); code != 0 {
		t.Fatalf("with the shared store down the source was not banned locally (OPTIONS answered %d)", code)
	}
	eventually(t, 2*time.Second, "store errors counted", func() bool {
		return metricValue(t, reg, "sipedge_sip_ban_store_errors_total", nil) > 0
	})
	bans, err := edge.Bans().List(context.Background())
	if !errors.Is(err, errStoreDown) || len(bans) != 1 || bans[0].IP != "127.0.0.9" {
		t.Fatalf("List with the store down = %+v, %v; want the local ban and the error", bans, err)
	}
}

// memBanStore is a BanStore in memory, with the semantics of the Redis one: a failure
// window starting at the first failure, bans with an end.
type memBanStore struct {
	mu    sync.Mutex
	fails map[string]memFails
	bans  map[string]acl.Ban
}

type memFails struct {
	n     int64
	until time.Time
}

func newMemBanStore() *memBanStore {
	return &memBanStore{fails: map[string]memFails{}, bans: map[string]acl.Ban{}}
}

func (m *memBanStore) AddFailure(_ context.Context, src string, window time.Duration) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fails[src]
	if time.Now().After(f.until) {
		f = memFails{until: time.Now().Add(window)}
	}
	f.n++
	m.fails[src] = f
	return f.n, nil
}

func (m *memBanStore) Ban(_ context.Context, b acl.Ban) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bans[b.IP] = b
	delete(m.fails, b.IP)
	return nil
}

func (m *memBanStore) List(context.Context) ([]acl.Ban, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []acl.Ban
	for _, b := range m.bans {
		if b.Until.After(time.Now()) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (m *memBanStore) Lift(_ context.Context, src string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.bans[src]
	delete(m.bans, src)
	delete(m.fails, src)
	return ok, nil
}

// Two nodes sharing one ban store: a ban counted on one refuses the source on the
// other, a lift on either frees it on both, and failures spread over both add up.
func TestSharedBansAcrossNodes(t *testing.T) {
	shared := newMemBanStore()
	fast := func(c *Config) { c.BanRefresh = 100 * time.Millisecond }
	a, _, _ := newDefenceRig(t, fast, WithBanStore(shared))
	b, _, _ := newDefenceRig(t, fast, WithBanStore(shared))

	atkA := newRawUDP(t, "127.0.0.9", a.Addr())
	for range DefaultBanThreshold {
		atkA.invite(edgeURI(a), testUser, "wrong")
	}
	atkB := newRawUDP(t, "127.0.0.9", b.Addr())
	eventually(t, 2*time.Second, "node B to learn the ban", func() bool { return b.Bans().Banned(aa("127.0.0.9")) })
	if code := atkB.options(); code != 0 {
		t.Fatalf("node B answered the source banned on node A: %d", code)
	}

	if lifted, err := b.Bans().Lift(context.Background(), aa("127.0.0.9")); err != nil || !lifted {
		t.Fatalf("Lift on B = %v, %v", lifted, err)
	}
	eventually(t, 2*time.Second, "node A to drop the lifted ban", func() bool { return !a.Bans().Banned(aa("127.0.0.9")) })
	if code := atkA.options(); code != 200 {
		t.Fatalf("node A after the lift on B answered %d", code)
	}

	// 3 failures on A and 2 on B: neither node alone reaches 5, the cluster does.
	spreadA, spreadB := newRawUDP(t, "127.0.0.7", a.Addr()), newRawUDP(t, "127.0.0.7", b.Addr())
	for range 3 {
		spreadA.invite(edgeURI(a), testUser, "wrong")
	}
	for range 2 {
		spreadB.invite(edgeURI(b), testUser, "wrong")
	}
	eventually(t, 2*time.Second, "cluster-wide ban on both nodes", func() bool {
		return a.Bans().Banned(aa("127.0.0.7")) && b.Bans().Banned(aa("127.0.0.7"))
	})
	bans, err := a.Bans().List(context.Background())
	if err != nil || len(bans) != 1 || bans[0].IP != "127.0.0.7" || bans[0].Failures != 5 {
		t.Fatalf("List = %+v, %v", bans, err)
	}
}

// TestUpstreamNeverBanned: spoofed INVITEs "from" the core with a broken
// Proxy-Authorization, and wrong passwords from its address, never ban it: its OPTIONS
// (and so its BYEs towards PBXs) still get through.
func TestUpstreamNeverBanned(t *testing.T) {
	edge, up, _ := newDefenceRig(t, nil)
	core := newRawUDP(t, up.addr.Addr().String(), edge.Addr())
	for range 2 * DefaultBanThreshold {
		core.request(rawRequest("INVITE", "sip:100@t1.example.org", `Proxy-Authorization: Digest username="x`), time.Second)
		core.invite("sip:100@t4.example.org", testUser, "wrong")
	}
	if edge.Bans().Banned(up.addr.Addr()) {
		t.Fatal("the upstream's address was banned")
	}
	if code := core.options(); code != 200 {
		t.Fatalf("OPTIONS from the upstream's address answered %d after the failures", code)
	}
}
