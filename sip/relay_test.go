package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// Integration tests: a real edge on loopback between an in-process PBX (UAC) and an
// upstream (UAS), over UDP and TCP. 127.0.0.2 is the listed PBX, 127.0.0.9 an unlisted
// source.

type rig struct {
	edge *Server
	uas  *uas
	cfg  Config
}

// newRig starts a UAS (upstream over upTp) and an edge whose default upstream is it.
func newRig(t *testing.T, upTp string, mod func(*Config)) *rig {
	t.Helper()
	u := newUAS(t)
	cfg := baseConfig()
	cfg.Upstream = "sip:" + u.addr.String()
	if upTp == "TCP" {
		cfg.Upstream += ";transport=tcp"
	}
	if mod != nil {
		mod(&cfg)
	}
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	return &rig{edge: edge, uas: u, cfg: cfg}
}

func (r *rig) uac(t *testing.T, ip, tp string) *uac {
	return newUAC(t, ip, tp, r.edge.Addr())
}

var transports = []struct{ in, up string }{{"UDP", "UDP"}, {"TCP", "UDP"}, {"TCP", "TCP"}, {"UDP", "TCP"}}

func TestCallFromListedSource(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.in+"-to-"+tp.up, func(t *testing.T) {
			r := newRig(t, tp.up, nil)
			pbx := r.uac(t, "127.0.0.2", tp.in)
			res, inv, codes := pbx.call("", "", "")
			if res.StatusCode != 200 {
				t.Fatalf("INVITE answered %d (%v)", res.StatusCode, codes)
			}
			if !slices.Contains(codes, 180) {
				t.Errorf("180 not relayed: %v", codes)
			}
			if string(res.Body()) != testSDP {
				t.Errorf("2xx body not relayed")
			}
			// What the upstream received.
			got := r.uas.lastInvite()
			checkForwarded(t, r, got, tp.in, tp.up)
			if vias := res.GetHeaders("Via"); len(vias) != 1 {
				t.Errorf("response to the PBX carries %d Via headers", len(vias))
			}
			eventually(t, 2*time.Second, "active dialog", func() bool { return r.edge.ActiveDialogs() == 1 })

			pbx.ack(inv, res)
			eventually(t, 2*time.Second, "ACK at upstream", func() bool { return r.uas.acks.Load() == 1 })
			if bye := pbx.bye(inv, res); bye.StatusCode != 200 {
				t.Fatalf("BYE answered %d", bye.StatusCode)
			}
			if r.uas.byes.Load() != 1 {
				t.Fatalf("upstream got %d BYEs", r.uas.byes.Load())
			}
			eventually(t, 2*time.Second, "dialog ended", func() bool { return r.edge.ActiveDialogs() == 0 })
			if r.edge.ActiveCalls() != 0 {
				t.Fatalf("ActiveCalls = %d after the call", r.edge.ActiveCalls())
			}
		})
	}
}

// checkForwarded asserts the shape of an INVITE relayed by the edge.
func checkForwarded(t *testing.T, r *rig, got *sipmsg.Request, inTp, upTp string) {
	t.Helper()
	if got == nil {
		t.Fatal("upstream received no INVITE")
	}
	vias := got.GetHeaders("Via")
	if len(vias) != 2 {
		t.Fatalf("upstream saw %d Via headers, want 2", len(vias))
	}
	top := vias[0].(*sipmsg.ViaHeader)
	if top.Host != "127.0.0.1" || top.Port != int(r.edge.Addr().Port()) || top.Transport != upTp {
		t.Errorf("edge Via = %s", top.Value())
	}
	if mf := got.MaxForwards(); mf == nil || mf.Val() != 69 {
		t.Errorf("Max-Forwards = %v, want 69", mf)
	}
	if len(got.GetHeaders("Proxy-Authorization")) != 0 {
		t.Error("Proxy-Authorization relayed upstream")
	}
	rrs := got.GetHeaders("Record-Route")
	want := 1
	if inTp != upTp {
		want = 2 // RFC 5658 double Record-Route
	}
	if len(rrs) != want {
		t.Fatalf("Record-Route %v, want %d entries", headerStrings(rrs), want)
	}
	for _, h := range rrs {
		rr := h.(*sipmsg.RecordRouteHeader)
		if rr.Address.User == "" || !rr.Address.UriParams.Has("lr") || rr.Address.Port != int(r.edge.Addr().Port()) {
			t.Errorf("Record-Route %s", rr.Value())
		}
	}
	topRR := rrs[0].(*sipmsg.RecordRouteHeader)
	if tpParam, _ := topRR.Address.UriParams.Get("transport"); (upTp == "TCP") != (tpParam == "tcp") {
		t.Errorf("upstream-facing Record-Route %s for upstream %s", topRR.Value(), upTp)
	}
	if got.Recipient.Host != r.uas.addr.Addr().String() || got.Recipient.Port != int(r.uas.addr.Port()) || got.Recipient.User != testCallee {
		t.Errorf("Request-URI %s not retargeted to the upstream", got.Recipient.String())
	}
}

func headerStrings(hs []sipmsg.Header) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Value()
	}
	return out
}

func TestCallWithDigest(t *testing.T) {
	for _, tp := range []string{"UDP", "TCP"} {
		for _, alg := range []string{acl.DigestSHA256, acl.DigestMD5} {
			t.Run(tp+"-"+alg, func(t *testing.T) {
				r := newRig(t, "UDP", func(c *Config) {
					if alg == acl.DigestSHA256 { // SHA-256 is opt-in; MD5 alone is the default
						c.DigestAlgorithms = []string{acl.DigestSHA256, acl.DigestMD5}
					}
				})
				pbx := r.uac(t, "127.0.0.9", tp)
				inv := pbx.newInvite()
				res, _, err := pbx.send(inv, nil)
				if err != nil || res.StatusCode != 407 {
					t.Fatalf("first INVITE: %v %v", res, err)
				}
				if r.uas.invites.Load() != 0 {
					t.Fatal("unauthenticated INVITE relayed")
				}
				inv = pbx.withAuth(inv, res, alg, testUser, testPassword)
				res, _, err = pbx.send(inv, nil)
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("authenticated INVITE: %v %v", res, err)
				}
				checkForwarded(t, r, r.uas.lastInvite(), tp, "UDP")
				pbx.ack(inv, res)
				if bye := pbx.bye(inv, res); bye.StatusCode != 200 {
					t.Fatalf("BYE answered %d", bye.StatusCode)
				}
				if r.uas.invites.Load() != 1 || r.uas.byes.Load() != 1 {
					t.Fatalf("upstream saw %d INVITEs, %d BYEs", r.uas.invites.Load(), r.uas.byes.Load())
				}
			})
		}
	}
}

func TestWrongPasswordNeverRelayed(t *testing.T) {
	r := newRig(t, "UDP", nil)
	for _, tp := range []string{"UDP", "TCP"} {
		pbx := r.uac(t, "127.0.0.9", tp)
		for _, cred := range [][2]string{{testUser, "wrong"}, {"nobody", testPassword}} {
			res, _, _ := pbx.call(acl.DigestMD5, cred[0], cred[1])
			if res.StatusCode != 407 || len(res.GetHeaders("Proxy-Authenticate")) == 0 {
				t.Fatalf("%s %s/%s: answered %d, want 407 with fresh challenges", tp, cred[0], cred[1], res.StatusCode)
			}
		}
	}
	if n := r.uas.invites.Load(); n != 0 {
		t.Fatalf("upstream received %d INVITEs", n)
	}
}

func TestExpiredNonceIsStale(t *testing.T) {
	r := newRig(t, "UDP", func(c *Config) { c.NonceTTL = time.Second })
	pbx := r.uac(t, "127.0.0.9", "UDP")
	inv := pbx.newInvite()
	res, _, _ := pbx.send(inv, nil)
	if res.StatusCode != 407 {
		t.Fatalf("got %d", res.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond)
	inv = pbx.withAuth(inv, res, acl.DigestMD5, testUser, testPassword)
	res, _, _ = pbx.send(inv, nil)
	ch := headerValues(res, "Proxy-Authenticate")
	if res.StatusCode != 407 || len(ch) != 1 || !strings.Contains(ch[0], "stale=true") {
		t.Fatalf("expired nonce: %d %q, want 407 stale=true", res.StatusCode, ch)
	}
	// The fresh nonce of the stale challenge works.
	inv = pbx.withAuth(inv, res, acl.DigestMD5, testUser, testPassword)
	if res, _, _ = pbx.send(inv, nil); res.StatusCode != 200 {
		t.Fatalf("after stale: %d", res.StatusCode)
	}
	pbx.ack(inv, res)
	pbx.bye(inv, res)
}

func TestReplayedNonceCountRejected(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.9", "UDP")
	res, inv, _ := pbx.call(acl.DigestMD5, testUser, testPassword)
	if res.StatusCode != 200 {
		t.Fatalf("got %d", res.StatusCode)
	}
	pbx.ack(inv, res)
	pbx.bye(inv, res)
	pa := inv.GetHeader("Proxy-Authorization")

	// A captured Proxy-Authorization replayed in a new INVITE (new call, same nc).
	replay := pbx.newInvite()
	replay.AppendHeader(sipmsg.NewHeader("Proxy-Authorization", pa.Value()))
	res, _, _ = pbx.send(replay, nil)
	if res.StatusCode != 407 {
		t.Fatalf("replay answered %d, want 407", res.StatusCode)
	}
	if n := r.uas.invites.Load(); n != 1 {
		t.Fatalf("upstream received %d INVITEs, want 1", n)
	}
}

func TestSpoofedViaAndContactDoNotAllow(t *testing.T) {
	r := newRig(t, "UDP", nil)
	for _, tp := range []string{"UDP", "TCP"} {
		pbx := r.uac(t, "127.0.0.9", tp)
		inv := pbx.newInvite()
		v := inv.Via()
		v.Host, v.Port = "127.0.0.2", 5060
		v.Params.Add("received", "127.0.0.2")
		inv.Contact().Address.Host = "127.0.0.2"
		inv.AppendHeader(sipmsg.NewHeader("X-Forwarded-For", "127.0.0.2"))
		res, _, err := pbx.send(inv, nil)
		if err != nil {
			t.Fatalf("%s: %v", tp, err) // the answer must reach the real socket, not the spoofed Via
		}
		if res.StatusCode != 407 {
			t.Fatalf("%s: spoofed headers answered %d, want 407", tp, res.StatusCode)
		}
	}
	if n := r.uas.invites.Load(); n != 0 {
		t.Fatalf("upstream received %d INVITEs", n)
	}
}

func TestCancelBeforeAnswer(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.in+"-to-"+tp.up, func(t *testing.T) {
			r := newRig(t, tp.up, nil)
			r.uas.ring.Store(int64(10 * time.Second))
			res, codes, err := r.uac(t, "127.0.0.2", tp.in).cancelWhenRinging()
			if err != nil || res.StatusCode != 487 {
				t.Fatalf("INVITE final %v %v (%v)", res, err, codes)
			}
			eventually(t, 3*time.Second, "CANCEL at upstream", func() bool { return r.uas.cancels.Load() == 1 })
			eventually(t, 3*time.Second, "relay finished", func() bool { return r.edge.ActiveCalls() == 0 })
			if r.edge.ActiveDialogs() != 0 {
				t.Fatal("canceled call counted as a dialog")
			}
		})
	}
}

// rawUAS is an upstream on a plain UDP socket that answers an INVITE with 180 and a
// CANCEL with 200 for the CANCEL and then 200 OK for the INVITE: the answer that crossed
// the CANCEL on the wire (RFC 3261 §9.2). It records the ACK and BYE that follow.
type rawUAS struct {
	conn      *net.UDPConn
	mu        sync.Mutex
	invite    *sipmsg.Request
	ack, bye  *sipmsg.Request
	ackedFrom netip.AddrPort
}

func newRawUAS(t *testing.T) *rawUAS {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUAS{conn: c}
	serveDatagrams(t, c, func(b []byte, from net.Addr) {
		m, err := sipmsg.ParseMessage(append([]byte(nil), b...))
		if req, ok := m.(*sipmsg.Request); err == nil && ok {
			u.on(req, from.(*net.UDPAddr).AddrPort())
		}
	})
	return u
}

func (u *rawUAS) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *rawUAS) reply(req *sipmsg.Request, code int, reason string, to netip.AddrPort) {
	res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
	if code >= 180 {
		res.To().Params.Add("tag", "raw-uas")
	}
	if code == 200 && req.IsInvite() {
		res.AppendHeader(&sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "uas", Host: "127.0.0.1", Port: int(u.addr().Port())}})
	}
	_, _ = u.conn.WriteToUDPAddrPort([]byte(res.String()), to)
}

func (u *rawUAS) on(req *sipmsg.Request, from netip.AddrPort) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch req.Method {
	case sipmsg.INVITE:
		if u.invite == nil {
			u.invite = req
			u.reply(req, 180, "Ringing", from)
		}
	case sipmsg.CANCEL:
		u.reply(req, 200, "OK", from)
		if u.invite != nil {
			u.reply(u.invite, 200, "OK", from) // sent before the CANCEL was seen
		}
	case sipmsg.ACK:
		u.ack, u.ackedFrom = req, from
	case sipmsg.BYE:
		u.bye = req
		u.reply(req, 200, "OK", from)
	}
}

func (u *rawUAS) seen() (invite, ack, bye *sipmsg.Request, ackFrom netip.AddrPort) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.invite, u.ack, u.bye, u.ackedFrom
}

// An answer that crosses the caller's CANCEL cannot reach the caller (it got 487), so the
// edge ends the call upstream: ACK for the 2xx, then BYE, to the Contact the 2xx named.
// Without that the upstream leg stays up (and billed) until its session timer, if any.
func TestAnswerCrossingCancelIsHungUp(t *testing.T) {
	up := newRawUAS(t)
	cfg := baseConfig()
	cfg.Upstream = "sip:" + up.addr().String()
	reg := newRegistry()
	cfg.Registerer = reg
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	if res, codes, err := newUAC(t, "127.0.0.2", "UDP", edge.Addr()).cancelWhenRinging(); err != nil || res.StatusCode != 487 {
		t.Fatalf("caller's INVITE ended with %v %v (%v), want 487", res, err, codes)
	}
	eventually(t, 5*time.Second, "ACK and BYE upstream", func() bool {
		_, ack, bye, _ := up.seen()
		return ack != nil && bye != nil
	})
	upInv, ack, bye, ackFrom := up.seen()
	if ackFrom != edge.Addr() {
		t.Errorf("ACK came from %v, not the edge's socket %v", ackFrom, edge.Addr())
	}
	for _, r := range []*sipmsg.Request{ack, bye} {
		if r.Recipient.User != "uas" || r.Recipient.Port != int(up.addr().Port()) {
			t.Errorf("%s sent to %s, not the 2xx's Contact", r.Method, r.Recipient.String())
		}
		if callIDOf(r) != callIDOf(upInv) || tagOf(r.To().Params) != "raw-uas" || tagOf(r.From().Params) != tagOf(upInv.From().Params) {
			t.Errorf("%s is not in the answered dialog: %s", r.Method, r.String())
		}
	}
	if ack.CSeq().SeqNo != upInv.CSeq().SeqNo || bye.CSeq().SeqNo != upInv.CSeq().SeqNo+1 {
		t.Errorf("CSeq ACK %d BYE %d for INVITE %d", ack.CSeq().SeqNo, bye.CSeq().SeqNo, upInv.CSeq().SeqNo)
	}
	eventually(t, 3*time.Second, "relay finished", func() bool { return edge.ActiveCalls() == 0 })
	if edge.ActiveDialogs() != 0 {
		t.Fatal("a call nobody can talk on is counted as a dialog")
	}
	if v := metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropCanceled}); v != 1 {
		t.Fatalf("sipedge_sip_dropped_total{reason=canceled} = %v, want 1", v)
	}
}

// An in-dialog request with no Route for a call this node does not know (answered via
// another node, or before a restart) is relayed only when its source is IP-allowed for a
// trunk, and then to that trunk's upstream, with an edge-addressed Request-URI rewritten
// to the upstream. Anything else gets 403; an ACK nothing routes goes nowhere.
func TestInDialogWithoutRouteFromAllowedSource(t *testing.T) {
	r := newRig(t, "UDP", nil)
	ruri := edgeURI(r.edge)
	inDialog := func(method string, extra ...string) []byte {
		return replace(rawRequest(method, ruri, extra...), "To: <"+ruri+">", "To: <"+ruri+">;tag=uas-tag")
	}
	pbx := newRawUDP(t, "127.0.0.2", r.edge.Addr())

	if res := pbx.request(inDialog("BYE"), 3*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("BYE from the listed PBX got %v, want the upstream's 200", res)
	}
	bye := r.uas.lastBye.Load()
	if bye == nil || bye.Recipient.Host != r.uas.addr.Addr().String() || bye.Recipient.Port != int(r.uas.addr.Port()) {
		t.Fatalf("BYE reached upstream addressed to %v, want the upstream's address", bye)
	}

	for _, tc := range []struct {
		name string
		peer *rawUDP
		raw  []byte
	}{
		{"unlisted source", newRawUDP(t, "127.0.0.9", r.edge.Addr()), inDialog("BYE")},
		{"routed to another proxy", pbx, inDialog("BYE", "Route: <sip:proxy.example.net;lr>")},
		{"forged edge route token", pbx, inDialog("BYE", "Route: <sip:forged@"+r.edge.Addr().String()+";lr>")},
	} {
		if res := tc.peer.request(tc.raw, 3*time.Second); res == nil || res.StatusCode != 403 {
			t.Errorf("%s: BYE got %v, want 403", tc.name, res)
		}
	}
	pbx.send(replace(inDialog("ACK"), "127.0.0.9:5099", pbx.addr().String()))
	time.Sleep(200 * time.Millisecond)
	if n, a := r.uas.byes.Load(), r.uas.acks.Load(); n != 1 || a != 0 {
		t.Fatalf("upstream got %d BYEs and %d ACKs, want only the allowed BYE", n, a)
	}
}

func TestByeFromUpstream(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.in+"-to-"+tp.up, func(t *testing.T) {
			r := newRig(t, tp.up, nil)
			pbx := r.uac(t, "127.0.0.2", tp.in)
			res, inv, _ := pbx.call("", "", "")
			if res.StatusCode != 200 {
				t.Fatalf("INVITE answered %d", res.StatusCode)
			}
			pbx.ack(inv, res)
			eventually(t, 2*time.Second, "ACK", func() bool { return r.uas.acks.Load() == 1 })
			bye, err := r.uas.bye(r.uas.lastInvite())
			if err != nil || bye.StatusCode != 200 {
				t.Fatalf("upstream BYE: %v %v", bye, err)
			}
			select {
			case got := <-pbx.byes:
				if vias := got.GetHeaders("Via"); len(vias) != 2 {
					t.Errorf("BYE at the PBX has %d Vias, want 2", len(vias))
				}
				for _, h := range got.GetHeaders("Route") {
					t.Errorf("BYE at the PBX still carries Route %s", h.Value())
				}
			case <-time.After(2 * time.Second):
				t.Fatal("PBX never received the BYE")
			}
			eventually(t, 2*time.Second, "dialog ended", func() bool { return r.edge.ActiveDialogs() == 0 })
		})
	}
}

func TestReInviteThroughEdge(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.2", "UDP")
	res, inv, _ := pbx.call("", "", "")
	pbx.ack(inv, res)
	re := pbx.inDialog(sipmsg.INVITE, inv, res, inv.CSeq().SeqNo+1)
	re.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	re.SetBody([]byte(testSDP))
	re.AppendHeader(pbx.contact("UDP", "pbx"))
	rres, _, err := pbx.send(re, nil)
	if err != nil || rres.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", rres, err)
	}
	// The route set stays the one the initial INVITE established.
	if err := pbx.cl.WriteRequest(pbx.inDialog(sipmsg.ACK, inv, res, re.CSeq().SeqNo), noBuild); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "re-INVITE and its ACK upstream", func() bool {
		return r.uas.reinvites.Load() == 1 && r.uas.acks.Load() == 2
	})
	// UPDATE/INFO-style in-dialog requests use the same path; a forged token does not.
	bad := pbx.inDialog(sipmsg.BYE, inv, res, inv.CSeq().SeqNo+2)
	route := bad.Route()
	route.Address.User = strings.Repeat("A", len(route.Address.User))
	bres, _, err := pbx.send(bad, nil)
	if err != nil || bres.StatusCode != 403 {
		t.Fatalf("BYE with forged route token: %v %v", bres, err)
	}
	// The token is bound to the call: reusing it for another Call-ID fails too.
	other := pbx.inDialog(sipmsg.BYE, inv, res, inv.CSeq().SeqNo+2)
	cid := sipmsg.CallIDHeader("another-call")
	other.ReplaceHeader(&cid)
	if ores, _, _ := pbx.send(other, nil); ores.StatusCode != 403 {
		t.Fatalf("token reused for another call: %d", ores.StatusCode)
	}
	if r.uas.byes.Load() != 0 {
		t.Fatal("forged BYE relayed")
	}
	if b := pbx.bye(inv, res); b.StatusCode != 200 {
		t.Fatalf("real BYE: %d", b.StatusCode)
	}
}

func TestUpstreamDown(t *testing.T) {
	t.Run("UDP silent", func(t *testing.T) {
		r := newRig(t, "UDP", func(c *Config) { c.UpstreamTimeout = time.Second })
		r.uas.silent.Store(true)
		pbx := r.uac(t, "127.0.0.2", "UDP")
		start := time.Now()
		res, _, _ := pbx.call("", "", "")
		if res.StatusCode != 408 && res.StatusCode != 503 {
			t.Fatalf("answered %d", res.StatusCode)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("answer took %v, timer is 1s", d)
		}
	})
	t.Run("TCP refused", func(t *testing.T) {
		r := newRig(t, "TCP", func(c *Config) { c.Upstream = "sip:127.0.0.1:" + fmt.Sprint(deadTCPPort(t)) + ";transport=tcp" })
		pbx := r.uac(t, "127.0.0.2", "UDP")
		start := time.Now()
		res, _, _ := pbx.call("", "", "")
		if res.StatusCode != 503 {
			t.Fatalf("answered %d, want 503", res.StatusCode)
		}
		if ra := headerValues(res, "Retry-After"); len(ra) != 1 {
			t.Fatalf("503 without Retry-After")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("answer took %v", d)
		}
	})
	t.Run("no final answer (Timer C)", func(t *testing.T) {
		r := newRig(t, "UDP", func(c *Config) { c.InviteTimeout = time.Second })
		r.uas.ring.Store(int64(time.Hour))
		pbx := r.uac(t, "127.0.0.2", "UDP")
		start := time.Now()
		res, _, _ := pbx.call("", "", "")
		if res.StatusCode != 408 {
			t.Fatalf("answered %d, want 408", res.StatusCode)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("answer took %v", d)
		}
		eventually(t, 3*time.Second, "CANCEL upstream", func() bool { return r.uas.cancels.Load() == 1 })
		eventually(t, 3*time.Second, "relay finished", func() bool { return r.edge.ActiveCalls() == 0 })
	})
}

func deadTCPPort(t *testing.T) int {
	t.Helper()
	_, tcp, err := listenBoth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := tcp.Addr().(interface{ String() string }).String()
	tcp.Close()
	var port int
	fmt.Sscanf(p[strings.LastIndex(p, ":")+1:], "%d", &port)
	return port
}

func TestOptionsToEdge(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.9", "UDP")
	req := pbx.newInvite()
	req.Method = sipmsg.OPTIONS
	req.CSeq().MethodName = sipmsg.OPTIONS
	res, _, err := pbx.send(req, nil)
	if err != nil || res.StatusCode != 200 || len(res.GetHeaders("Allow")) != 1 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	for _, h := range res.GetHeaders("Server") {
		if strings.ContainsAny(h.Value(), "0123456789") {
			t.Fatalf("Server header leaks a version: %q", h.Value())
		}
	}
}

// After many calls the goroutine count returns to where it was: nothing is parked per
// call (no ACK drain, no lingering relay).
func TestGoroutinesReturnToBaseline(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.2", "UDP")
	digestPBX := r.uac(t, "127.0.0.9", "UDP")
	oneCall := func(p *uac, user, pass string) {
		res, inv, _ := p.call(acl.DigestMD5, user, pass)
		if res.StatusCode != 200 {
			t.Fatalf("call answered %d", res.StatusCode)
		}
		p.ack(inv, res)
		if b := p.bye(inv, res); b.StatusCode != 200 {
			t.Fatalf("BYE %d", b.StatusCode)
		}
	}
	oneCall(pbx, "", "")
	oneCall(digestPBX, testUser, testPassword)
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()
	const calls = 60
	for i := 0; i < calls; i++ {
		if i%3 == 0 {
			oneCall(digestPBX, testUser, testPassword)
		} else {
			oneCall(pbx, "", "")
		}
	}
	var now int
	deadline := time.Now().Add(5 * time.Second)
	for {
		now = runtime.NumGoroutine()
		if now <= base+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if now > base+3 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after %d calls\n%s", base, now, calls, buf[:runtime.Stack(buf, true)])
	}
	if got := r.uas.invites.Load(); got != calls+2 {
		t.Fatalf("upstream saw %d INVITEs", got)
	}
}

// Run binds UDP and TCP on one port, answers, and on cancel returns promptly, closing
// accepted connections and leaving no goroutine behind.
func TestRunStopsCleanly(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			if strings.HasPrefix(listen, "[::1]") {
				if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
					t.Skip("no IPv6 loopback")
				} else {
					c.Close()
				}
			}
			base := runtime.NumGoroutine()
			cfg := baseConfig()
			cfg.Listen = listen
			s, err := New(cfg, policyOf(mustCompile(t, testDataset(""))))
			if err != nil {
				t.Fatal(err)
			}
			if s.Listening() {
				t.Fatal("listening before Run")
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			<-s.Ready()
			if !s.Listening() {
				t.Fatal("not listening after Ready")
			}
			addr := s.Addr()
			if addr.Port() == 0 {
				t.Fatal("no port")
			}
			options := func(network string) string {
				c, err := net.Dial(network, addr.String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				host := c.LocalAddr().(interface{ String() string }).String()
				msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK-%s\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:%s>\r\nCall-ID: run-%s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
					addr, strings.ToUpper(network[:3]), host, sipmsg.GenerateTagN(8), addr, sipmsg.GenerateTagN(8))
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4096)
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("%s: %v", network, err)
				}
				return strings.SplitN(string(buf[:n]), "\r\n", 2)[0]
			}
			for _, network := range []string{"udp", "tcp"} {
				if got := options(network); got != "SIP/2.0 200 OK" {
					t.Fatalf("%s OPTIONS: %q", network, got)
				}
			}
			// An idle TCP client stays connected until shutdown closes it.
			idle, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Run did not return")
			}
			if s.Listening() {
				t.Fatal("still listening after Run returned")
			}
			idle.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("accepted connection not closed on shutdown: %v", err)
			}
			eventually(t, 3*time.Second, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base+1 })
			if err := s.Run(context.Background()); err == nil {
				t.Fatal("second Run accepted")
			}
		})
	}
}

// A 6 KB INVITE (large SDP) is relayed over UDP: sipgo's 1300-byte MTU guard is raised.
// Ready means every listener is serving: a TCP caller's INVITE relayed to a UDP upstream
// in the first instant goes out on the edge's UDP socket. (It once got 503 under load:
// sipgo pools the UDP listener inside ServeUDP's goroutine, and a relay that came first
// tried to bind a second socket to the edge's own address.)
func TestReadyMeansServing(t *testing.T) {
	u := newUAS(t)
	for i := range 10 {
		cfg := baseConfig()
		cfg.Upstream = "sip:" + u.addr.String()
		edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
		if c, _ := edge.tp.GetConnection("udp", edge.udp.LocalAddr().String()); c == nil {
			t.Fatalf("start %d: ready, but sipgo has no pooled UDP listener yet", i)
		}
		pbx := dialRawTCP(t, "127.0.0.2", edge.Addr())
		pbx.write(tcpRequest(rawRequest("INVITE", edgeURI(edge)), pbx.addr()))
		if res := pbx.final(3 * time.Second); res == nil || res.StatusCode != 200 {
			t.Fatalf("start %d: first TCP INVITE got %v, want 200", i, res)
		}
	}
}

func TestLargeInviteOverUDP(t *testing.T) {
	r := newRig(t, "UDP", nil)
	pbx := r.uac(t, "127.0.0.2", "UDP")
	inv := pbx.newInvite()
	inv.SetBody([]byte(testSDP + strings.Repeat("a=x-padding:0123456789012345678901234567890123456789\r\n", 110)))
	res, _, err := pbx.send(inv, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("large INVITE: %v %v", res, err)
	}
	if got := r.uas.lastInvite(); got == nil || len(got.Body()) != len(inv.Body()) {
		t.Fatal("upstream did not get the whole body")
	}
	pbx.ack(inv, res)
	pbx.bye(inv, res)
}

// TestConcurrentUDPReaders runs calls in parallel through an edge reading its UDP socket
// with several goroutines: every call completes, every dialog ends.
func TestConcurrentUDPReaders(t *testing.T) {
	r := newRig(t, "UDP", func(c *Config) { c.UDPReaders = 4 })
	const pbxs, calls = 4, 5
	var wg sync.WaitGroup
	errs := make(chan string, pbxs*calls)
	for i := range pbxs {
		pbx := r.uac(t, "127.0.0.2", "UDP")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				res, inv, codes := pbx.call("", "", "")
				if res.StatusCode != 200 {
					errs <- fmt.Sprintf("pbx %d: INVITE answered %d (%v)", i, res.StatusCode, codes)
					return
				}
				pbx.ack(inv, res)
				if bye := pbx.bye(inv, res); bye.StatusCode != 200 {
					errs <- fmt.Sprintf("pbx %d: BYE answered %d", i, bye.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	eventually(t, 2*time.Second, "every dialog ended", func() bool { return r.edge.ActiveDialogs() == 0 })
	if got := r.uas.byes.Load(); got != pbxs*calls {
		t.Errorf("upstream got %d BYEs, want %d", got, pbxs*calls)
	}
}
