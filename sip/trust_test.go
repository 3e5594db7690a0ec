package sip

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// The trust boundary (DESIGN §4), tried as an attacker would: a Record-Route token seen
// on the wire, a disabled trunk, a Route smuggled after the edge's, identity headers a
// PBX may not assert, a loop.

// trustRig is a rig whose policy the test can swap (enable/disable the trunk).
func trustRig(t *testing.T) (*rig, *acl.Holder, *acl.Dataset) {
	t.Helper()
	u := newUAS(t)
	cfg := baseConfig()
	cfg.Upstream = "sip:" + u.addr.String()
	ds := testDataset("")
	var h acl.Holder
	h.Store(mustCompile(t, ds))
	edge := startServer(t, cfg, func() Policy { return h.Load() })
	return &rig{edge: edge, uas: u, cfg: cfg}, &h, ds
}

func setTrunk1(t *testing.T, h *acl.Holder, ds *acl.Dataset, status string) {
	t.Helper()
	ds.Trunks[0].Status = status
	ds.Version++
	h.Store(mustCompile(t, ds))
}

func TestRouteTokenBoundToItsDialog(t *testing.T) {
	r, h, ds := trustRig(t)
	pbx := r.uac(t, "127.0.0.2", "UDP")
	res, inv, codes := pbx.call("", "", "")
	if res.StatusCode != 200 {
		t.Fatalf("call answered %d (%v)", res.StatusCode, codes)
	}
	pbx.ack(inv, res)
	reinvite := func(who *uac, seq uint32, extra ...sipmsg.Header) int {
		t.Helper()
		req := who.inDialog(sipmsg.INVITE, inv, res, seq)
		for _, x := range extra {
			req.AppendHeader(x)
		}
		final, _, err := who.send(req, nil)
		if err != nil {
			return 0
		}
		if final.StatusCode == 200 {
			who.ack(req, final)
		}
		return final.StatusCode
	}
	seen := func() int32 { return r.uas.reinvites.Load() }

	// Someone who saw the call on the wire, from another address.
	mallory := r.uac(t, "127.0.0.99", "UDP")
	if code := reinvite(mallory, 2); code == 200 || seen() != 0 {
		t.Fatalf("re-INVITE with the call's token from 127.0.0.99: %d, upstream saw %d", code, seen())
	}
	// The PBX itself, with a Route smuggled after the edge's: relayed without it.
	smuggled := &sipmsg.RouteHeader{Address: sipmsg.Uri{Scheme: "sip", Host: "127.0.0.77", UriParams: sipmsg.NewParams()}}
	smuggled.Address.UriParams.Add("lr", "")
	if code := reinvite(pbx, 3, smuggled); code != 200 || seen() != 1 {
		t.Fatalf("PBX re-INVITE: %d, upstream saw %d", code, seen())
	}
	r.uas.mu.Lock()
	got := r.uas.lastRe
	r.uas.mu.Unlock()
	for _, rh := range got.GetHeaders("Route") {
		if strings.Contains(rh.Value(), "127.0.0.77") {
			t.Fatalf("the core got the PBX's extra Route %q", rh.Value())
		}
	}
	// The trunk disabled: no re-INVITE, but the call can still end.
	setTrunk1(t, h, ds, acl.TrunkDisabled)
	if code := reinvite(pbx, 4); code == 200 || seen() != 1 {
		t.Fatalf("re-INVITE on the disabled trunk: %d, upstream saw %d", code, seen())
	}
	if bye := pbx.bye(inv, res); bye.StatusCode != 200 || r.uas.byes.Load() != 1 {
		t.Fatalf("BYE on the disabled trunk: %d, upstream saw %d BYEs", bye.StatusCode, r.uas.byes.Load())
	}
	// After the BYE, the token opens nothing, even for the PBX on an enabled trunk.
	setTrunk1(t, h, ds, acl.TrunkEnabled)
	if code := reinvite(pbx, 6); code == 200 || seen() != 1 {
		t.Fatalf("re-INVITE after the BYE: %d, upstream saw %d", code, seen())
	}
}

func TestInitialInviteCrossesTheTrustBoundary(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.2", "UDP")
	inv := pbx.newInvite()
	inv.Recipient.UriParams = sipmsg.NewParams()
	inv.Recipient.UriParams.Add("maddr", "127.0.0.77")
	route := &sipmsg.RouteHeader{Address: sipmsg.Uri{Scheme: "sip", Host: "127.0.0.77", UriParams: sipmsg.NewParams()}}
	route.Address.UriParams.Add("lr", "")
	inv.AppendHeader(route)
	for _, h := range []string{"P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "X-Sipedge-Trunk", "x-sipedge-user"} {
		inv.AppendHeader(sipmsg.NewHeader(h, "<sip:+15550001111@127.0.0.77>"))
	}
	pbx.address(inv, "UDP", r.edge.Addr()) // Route would otherwise pick the next hop
	res, _, err := pbx.send(inv, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("INVITE: %v %v", res, err)
	}
	pbx.ack(inv, res)
	up := r.uas.lastInvite()
	if strings.Contains(up.Recipient.String(), "maddr") {
		t.Errorf("Request-URI kept maddr: %s", up.Recipient.String())
	}
	for _, h := range up.GetHeaders("Route") {
		t.Errorf("preloaded Route reached the core: %s", h.Value())
	}
	for _, name := range []string{"P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "X-Sipedge-User"} {
		if hs := up.GetHeaders(name); len(hs) != 0 {
			t.Errorf("%s reached the core: %q", name, hs[0].Value())
		}
	}
	want := map[string]string{"X-Sipedge-Trunk": "t1", "X-Sipedge-Auth": "ip"}
	for name, v := range want {
		if hs := up.GetHeaders(name); len(hs) != 1 || hs[0].Value() != v {
			t.Errorf("%s = %v, want exactly %q", name, headerStrings(hs), v)
		}
	}
	if hs := up.GetHeaders("X-Sipedge-Account"); len(hs) != 1 {
		t.Errorf("X-Sipedge-Account = %v, want one", headerStrings(hs))
	}
}

func TestLoopThroughTheEdgeIs482(t *testing.T) {
	r := newRig(t, "UDP", nil)
	c := newRawUDP(t, "127.0.0.2", r.edge.Addr())
	ours := "Via: SIP/2.0/UDP " + r.edge.Addr().String() + ";branch=z9hG4bK-loop-edge"
	res := c.request(rawRequest("INVITE", "sip:100@t1.example.org", ours), 2*time.Second)
	if res == nil || res.StatusCode != 482 {
		t.Fatalf("INVITE carrying the edge's Via: %v, want 482", res)
	}
	if r.uas.invites.Load() != 0 {
		t.Fatal("looped INVITE relayed")
	}
}

// A CANCEL matches its INVITE by branch AND source (DESIGN §4): the same branch from
// another address cancels nothing (dropped, counted); from the caller it ends the INVITE
// with 487.
func TestCancelMatchesBranchAndSource(t *testing.T) {
	cfg := baseConfig()
	cfg.Upstream = "sip:" + deadUDPPort(t)
	cfg.UpstreamTimeout = 300 * time.Millisecond
	cfg.Registerer = newRegistry()
	s := newUnitServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	pbx := newRawUDP(t, "127.0.0.2", s.Addr())
	inv := replace(rawRequest("INVITE", "sip:1@t1.example.org"), "127.0.0.9:5099", pbx.addr().String())
	s.onRequest(parseReq(t, inv, pbx.addr().String()))
	if s.ActiveCalls() != 1 {
		t.Fatalf("ActiveCalls = %d after the INVITE, want 1", s.ActiveCalls())
	}
	cancel := replace(replace(inv, "INVITE sip:", "CANCEL sip:"), "CSeq: 1 INVITE", "CSeq: 1 CANCEL")
	s.onRequest(parseReq(t, cancel, "127.0.0.99:"+strconv.Itoa(int(pbx.addr().Port()))))
	if got := counterValue(t, s.m.dropped.WithLabelValues(dropCancelSource)); got != 1 || s.ActiveCalls() != 1 {
		t.Fatalf("foreign CANCEL: dropped %v, ActiveCalls %d; want 1, 1", got, s.ActiveCalls())
	}
	s.onRequest(parseReq(t, cancel, pbx.addr().String()))
	var codes []int
	buf := make([]byte, 65535)
	for len(codes) < 2 {
		_ = pbx.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := pbx.conn.Read(buf)
		if err != nil {
			t.Fatalf("responses %v, want 200 (CANCEL) and 487 (INVITE)", codes)
		}
		if m, err := sipmsg.ParseMessage(buf[:n]); err == nil {
			if res, ok := m.(*sipmsg.Response); ok && res.StatusCode != 100 {
				codes = append(codes, res.StatusCode)
			}
		}
	}
	if !slices.Equal(codes, []int{200, 487}) {
		t.Fatalf("responses %v, want [200 487]", codes)
	}
	eventually(t, 2*time.Second, "relay ended", func() bool { return s.ActiveCalls() == 0 })
}

// TestNoRouteReInviteIsNoBackdoor: an INVITE that looks in-dialog (To tag) but names no
// dialog of this edge and carries no Route is not relayed on the strength of its source
// alone (it would skip the decision's caps and the boundary), and identity headers a PBX
// sends inside a real dialog never reach the core either.
func TestNoRouteReInviteIsNoBackdoor(t *testing.T) {
	r := newRig(t, "UDP", nil)
	c := newRawUDP(t, "127.0.0.2", r.edge.Addr())
	raw := replace(rawRequest("INVITE", "sip:100@t1.example.org", "P-Asserted-Identity: <sip:+15550001111@127.0.0.77>"),
		"To: <sip:100@t1.example.org>", "To: <sip:100@t1.example.org>;tag=forged")
	if res := c.request(raw, 2*time.Second); res == nil || res.StatusCode == 200 {
		t.Fatalf("a to-tagged INVITE with no dialog from the listed PBX: %v, want refused", res)
	}
	if n := r.uas.reinvites.Load() + r.uas.invites.Load(); n != 0 {
		t.Fatalf("the core got %d INVITEs", n)
	}
	// Inside a real dialog, the PBX's re-INVITE loses its identity headers too.
	pbx := r.uac(t, "127.0.0.2", "UDP")
	res, inv, _ := pbx.call("", "", "")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	pbx.ack(inv, res)
	re := pbx.inDialog(sipmsg.INVITE, inv, res, 2)
	re.AppendHeader(sipmsg.NewHeader("P-Asserted-Identity", "<sip:+15550001111@127.0.0.77>"))
	re.AppendHeader(sipmsg.NewHeader("X-Sipedge-Trunk", "forged"))
	if fin, _, err := pbx.send(re, nil); err != nil || fin.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", fin, err)
	}
	r.uas.mu.Lock()
	got := r.uas.lastRe
	r.uas.mu.Unlock()
	for _, name := range []string{"P-Asserted-Identity", "X-Sipedge-Trunk"} {
		if hs := got.GetHeaders(name); len(hs) != 0 {
			t.Errorf("%s of a re-INVITE reached the core: %q", name, hs[0].Value())
		}
	}
}
