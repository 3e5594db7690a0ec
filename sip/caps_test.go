package sip

import (
	"slices"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
)

// Per-trunk call caps through a real edge: the listed PBX 127.0.0.2 calls trunk t1.

func newCapsRig(t *testing.T, maxCPS, maxConc int, mod func(*Config), opts ...Option) (*Server, *uas, *prometheus.Registry) {
	t.Helper()
	u := newUAS(t)
	reg := prometheus.NewRegistry()
	cfg := baseConfig()
	cfg.Upstream = "sip:" + u.addr.String()
	cfg.Registerer = reg
	if mod != nil {
		mod(&cfg)
	}
	ds := testDataset("")
	ds.Trunks[0].MaxCPS, ds.Trunks[0].MaxConcurrent = maxCPS, maxConc
	return startServer(t, cfg, policyOf(mustCompile(t, ds)), opts...), u, reg
}

func TestCapCPS(t *testing.T) {
	edge, _, reg := newCapsRig(t, 2, 0, nil)
	pbx := newRawUDP(t, "127.0.0.2", edge.Addr())
	var codes []int
	var refused *sipmsg.Response
	for range 5 {
		res := pbx.request(rawRequest("INVITE", edgeURI(edge)), 2*time.Second)
		if res == nil {
			t.Fatal("no answer")
		}
		codes = append(codes, res.StatusCode)
		if res.StatusCode == 503 {
			refused = res
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 503 || codes[3] != 503 || codes[4] != 503 {
		t.Fatalf("5 calls in a burst at max_cps 2: %v, want 200 200 503 503 503", codes)
	}
	if ra := headerValues(refused, "Retry-After"); len(ra) != 1 || ra[0] != "1" {
		t.Fatalf("Retry-After %q, want 1", ra)
	}
	if v := metricValue(t, reg, "sipedge_sip_cap_rejections_total", map[string]string{"kind": "cps"}); v != 3 {
		t.Fatalf("cap_rejections_total{kind=cps} = %v", v)
	}
	if v := metricValue(t, reg, "sipedge_sip_invites_total", map[string]string{"verdict": "cap_exceeded"}); v != 3 {
		t.Fatalf("invites_total{verdict=cap_exceeded} = %v", v)
	}
	time.Sleep(600 * time.Millisecond) // one call's worth refills in 500 ms
	if res := pbx.request(rawRequest("INVITE", edgeURI(edge)), 2*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("after the refill: %v", res)
	}
}

func TestCapConcurrent(t *testing.T) {
	// max_concurrent 2 shared by 2 nodes: 1 call at a time here.
	edge, u, reg := newCapsRig(t, 0, 2, func(c *Config) { c.UpstreamTimeout = 500 * time.Millisecond },
		WithNodeCount(func() int { return 2 }))
	pbx := newUAC(t, "127.0.0.2", "UDP", edge.Addr())
	busy := func(what string) {
		t.Helper()
		if res, _, _ := pbx.call("", "", ""); res.StatusCode != 486 {
			t.Fatalf("%s: second concurrent call answered %d, want 486", what, res.StatusCode)
		}
	}
	free := func(what string) {
		t.Helper()
		eventually(t, 2*time.Second, what+": slot released", func() bool { return edge.caps.active("t1") == 0 })
	}

	// Answered call: holds its slot until BYE.
	res, inv, _ := pbx.call("", "", "")
	if res.StatusCode != 200 {
		t.Fatalf("first call answered %d", res.StatusCode)
	}
	pbx.ack(inv, res)
	busy("answered call")
	if bye := pbx.bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE answered %d", bye.StatusCode)
	}
	free("BYE")

	// Ringing call: holds its slot until CANCEL.
	u.ring.Store(int64(5 * time.Second))
	ringing := pbx.newInvite()
	done := make(chan *sipmsg.Response, 1)
	go func() {
		r, _, _ := pbx.send(ringing, nil)
		done <- r
	}()
	eventually(t, 2*time.Second, "call ringing upstream", func() bool { return u.invites.Load() == 2 })
	busy("ringing call")
	if c := pbx.cancel(ringing); c.StatusCode != 200 {
		t.Fatalf("CANCEL answered %d", c.StatusCode)
	}
	if r := <-done; r == nil || r.StatusCode != 487 {
		t.Fatalf("canceled INVITE got %v", r)
	}
	free("CANCEL")

	// Unanswered call: holds its slot until the timeout's 408.
	u.silent.Store(true)
	if res, _, _ := pbx.call("", "", ""); res.StatusCode != 408 {
		t.Fatalf("call to a silent upstream answered %d", res.StatusCode)
	}
	free("timeout")
	u.silent.Store(false)
	u.ring.Store(int64(30 * time.Millisecond))
	if res, inv, _ := pbx.call("", "", ""); res.StatusCode != 200 {
		t.Fatalf("call after every slot was released answered %d", res.StatusCode)
	} else {
		pbx.ack(inv, res)
		pbx.bye(inv, res)
	}
	if v := metricValue(t, reg, "sipedge_sip_cap_rejections_total", map[string]string{"kind": "concurrent"}); v != 2 {
		t.Fatalf("cap_rejections_total{kind=concurrent} = %v", v)
	}
}

func TestCapConcurrentAnswered503(t *testing.T) {
	edge, u, _ := newCapsRig(t, 0, 1, func(c *Config) { c.ConcurrentCapCode = 503 })
	u.ring.Store(int64(3 * time.Second))
	pbx := newRawUDP(t, "127.0.0.2", edge.Addr())
	go pbx.request(rawRequest("INVITE", edgeURI(edge)), 4*time.Second)
	eventually(t, 2*time.Second, "first call ringing", func() bool { return edge.caps.active(acl.TrunkID("t1")) == 1 })
	other := newRawUDP(t, "127.0.0.2", edge.Addr())
	res := other.request(rawRequest("INVITE", edgeURI(edge)), 2*time.Second)
	if res == nil || res.StatusCode != 503 || len(headerValues(res, "Retry-After")) != 1 {
		t.Fatalf("over max_concurrent with ConcurrentCapCode 503: %v", res)
	}
}

// TestPendingSharePerTrunk: a trunk whose upstream never answers holds at most its share
// of pending INVITEs; the next INVITE for it gets 503 at once, and the share comes back
// when the pending ones end (DESIGN §4a: one trunk cannot starve the node).
func TestPendingSharePerTrunk(t *testing.T) {
	edge, u, reg := newDefenceRig(t, func(c *Config) {
		c.MaxPendingPerTrunk = 2
		c.UpstreamTimeout = 1500 * time.Millisecond
	})
	u.silent.Store(true)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newRawUDP(t, "127.0.0.2", edge.Addr())
			if res := c.request(rawRequest("INVITE", "sip:100@t1.example.org"), 3*time.Second); res == nil || res.StatusCode != 408 {
				t.Errorf("pending INVITE %d: %v, want 408 from the silent upstream", i, res)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	c := newRawUDP(t, "127.0.0.2", edge.Addr())
	if res := c.request(rawRequest("INVITE", "sip:100@t1.example.org"), time.Second); res == nil || res.StatusCode != 503 {
		t.Fatalf("INVITE beyond the trunk's share: %v, want 503", res)
	}
	if v := metricValue(t, reg, "sipedge_sip_cap_rejections_total", map[string]string{"kind": capPending}); v != 1 {
		t.Errorf("sipedge_sip_cap_rejections_total{kind=pending} = %v", v)
	}
	wg.Wait()
	u.silent.Store(false)
	if res := c.request(rawRequest("INVITE", "sip:100@t1.example.org"), 3*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("INVITE once the share is back: %v, want 200", res)
	}
}

func TestPendingShareAccount(t *testing.T) {
	c := newTrunkCaps(nil)
	a1 := &acl.TrunkPolicy{ID: "a1", Account: "A"}
	a2 := &acl.TrunkPolicy{ID: "a2", Account: "A"}
	b1 := &acl.TrunkPolicy{ID: "b1", Account: "B"}
	if got := admitN(3, func() bool { return c.pendingAdmit(a1, 2, 3) }); !slices.Equal(got, []bool{true, true, false}) {
		t.Fatal("trunk share of 2 not enforced")
	}
	if !c.pendingAdmit(a2, 2, 3) || c.pendingAdmit(a2, 2, 3) {
		t.Fatal("account share of 3 not enforced across its trunks")
	}
	if !c.pendingAdmit(b1, 2, 3) {
		t.Fatal("another account starved by A")
	}
	c.pendingDone(a1)
	if !c.pendingAdmit(a2, 2, 3) {
		t.Fatal("a finished INVITE did not give its share back")
	}
}

// admitN calls f n times and returns its answers in order.
func admitN(n int, f func() bool) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = f()
	}
	return out
}
