package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// In-process SIP peers on loopback for the integration tests: a PBX-like UAC bound to a
// chosen source address and a UAS standing in for the upstream. Both are plain sipgo
// transactions with hand-built messages, so every header the edge sees is under test
// control (including spoofed ones).

type peer struct {
	t     testing.TB
	ua    *sipgo.UserAgent
	srv   *sipgo.Server
	cl    *sipgo.Client
	addr  netip.AddrPort
	laddr sipmsg.Addr
}

// newPeer fills p (allocated by the caller, so handlers may refer to it) and starts
// serving; handlers registered by register run only after p is complete.
func newPeer(t testing.TB, p *peer, ip string, register func(*sipgo.Server)) {
	t.Helper()
	local := &net.TCPAddr{IP: net.ParseIP(ip)}
	ua, err := sipgo.NewUA(sipgo.WithUserAgentTransportLayerOptions(
		sipmsg.WithTransportLayerTransports(sipmsg.TransportsConfig{TCP: &sipmsg.TransportTCP{
			// TCP calls leave from the peer's own IP, like a PBX on its own host.
			DialerCreate: func(net.Addr) net.Dialer { return net.Dialer{LocalAddr: local, Timeout: 5 * time.Second} },
		}})))
	if err != nil {
		t.Fatal(err)
	}
	p.t, p.ua = t, ua
	if p.srv, err = sipgo.NewServer(ua); err != nil {
		t.Fatal(err)
	}
	if p.cl, err = sipgo.NewClient(ua); err != nil {
		t.Fatal(err)
	}
	register(p.srv)
	udp, tcp, err := listenBoth(ip + ":0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = udp.LocalAddr().(*net.UDPAddr).AddrPort()
	p.laddr = sipmsg.Addr{IP: net.ParseIP(ip), Port: int(p.addr.Port())}
	done := make(chan struct{}, 2)
	go func() { p.srv.ServeUDP(udp); done <- struct{}{} }()
	go func() { p.srv.ServeTCP(tcp); done <- struct{}{} }()
	// The UDP listener joins sipgo's pool only once its read loop runs; sending from it
	// (Laddr) before that would make sipgo bind a second socket.
	eventually(t, 2*time.Second, "peer listening", func() bool {
		c, err := ua.TransportLayer().GetConnection("udp", p.laddr.String())
		return err == nil && c != nil
	})
	t.Cleanup(func() {
		udp.Close()
		tcp.Close()
		<-done
		<-done
		ua.Close()
	})
}

// send runs req as a client transaction and returns its final response and every status
// seen. onProvisional, if set, is called for each 1xx.
func (p *peer) send(req *sipmsg.Request, onProvisional func(*sipmsg.Response)) (*sipmsg.Response, []int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tx, err := p.cl.TransactionRequest(ctx, req, noBuild)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Terminate()
	var codes []int
	for {
		select {
		case res := <-tx.Responses():
			codes = append(codes, res.StatusCode)
			if res.StatusCode < 200 {
				if onProvisional != nil {
					onProvisional(res)
				}
				continue
			}
			return res, codes, nil
		case <-tx.Done():
			return nil, codes, fmt.Errorf("transaction ended: %w", tx.Err())
		case <-ctx.Done():
			return nil, codes, ctx.Err()
		}
	}
}

func (p *peer) via(tp string) *sipmsg.ViaHeader {
	v := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: tp,
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: sipmsg.NewParams()}
	v.Params.Add("branch", sipmsg.GenerateBranchN(12))
	v.Params.Add("rport", "")
	return v
}

func (p *peer) contact(tp, user string) *sipmsg.ContactHeader {
	c := &sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: user, Host: p.addr.Addr().String(), Port: int(p.addr.Port())}}
	if tp == "TCP" {
		c.Address.UriParams = sipmsg.NewParams()
		c.Address.UriParams.Add("transport", "tcp")
	}
	return c
}

// address sets where req goes and, on UDP, that it leaves from the listener.
func (p *peer) address(req *sipmsg.Request, tp string, dst netip.AddrPort) {
	req.SetTransport(tp)
	req.SetDestination(dst.String())
	if tp == "UDP" {
		req.Laddr = p.laddr
	}
}

// ---- UAC (the PBX) ----------------------------------------------------------------------

type uac struct {
	*peer
	tp   string
	edge netip.AddrPort
	byes chan *sipmsg.Request
}

func newUAC(t testing.TB, ip, tp string, edge netip.AddrPort) *uac {
	u := &uac{peer: &peer{}, tp: tp, edge: edge, byes: make(chan *sipmsg.Request, 16)}
	newPeer(t, u.peer, ip, func(s *sipgo.Server) {
		s.OnBye(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
			tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
			select {
			case u.byes <- req:
			default:
			}
		})
	})
	return u
}

const testSDP = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// newInvite builds an out-of-dialog INVITE for sip:service@<edge>.
func (u *uac) newInvite() *sipmsg.Request {
	ruri := sipmsg.Uri{Scheme: "sip", User: testCallee, Host: u.edge.Addr().String(), Port: int(u.edge.Port())}
	req := sipmsg.NewRequest(sipmsg.INVITE, ruri)
	req.AppendHeader(u.via(u.tp))
	from := &sipmsg.FromHeader{Address: sipmsg.Uri{Scheme: "sip", User: "pbx", Host: u.addr.Addr().String()}, Params: sipmsg.NewParams()}
	from.Params.Add("tag", sipmsg.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sipmsg.ToHeader{Address: ruri, Params: sipmsg.NewParams()})
	cid := sipmsg.CallIDHeader("test-" + sipmsg.GenerateTagN(16))
	req.AppendHeader(&cid)
	req.AppendHeader(&sipmsg.CSeqHeader{SeqNo: 1, MethodName: sipmsg.INVITE})
	req.AppendHeader(u.contact(u.tp, "pbx"))
	mf := sipmsg.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sipmsg.NewHeader("User-Agent", "test-pbx"))
	req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(testSDP))
	u.address(req, u.tp, u.edge)
	return req
}

// withAuth returns the next INVITE of the same call answering the challenge of algorithm
// alg in res (CSeq+1, new branch).
func (u *uac) withAuth(prev *sipmsg.Request, res *sipmsg.Response, alg, user, pass string) *sipmsg.Request {
	u.t.Helper()
	chal := ""
	for _, h := range res.GetHeaders("Proxy-Authenticate") {
		if strings.Contains(h.Value(), "algorithm="+alg+",") || strings.HasSuffix(h.Value(), "algorithm="+alg) {
			chal = h.Value()
		}
	}
	if chal == "" {
		u.t.Fatalf("no %s challenge in %v", alg, headerValues(res, "Proxy-Authenticate"))
	}
	next := u.nextRequest(prev)
	next.AppendHeader(sipmsg.NewHeader("Proxy-Authorization",
		answerChallenge(u.t, chal, "INVITE", prev.Recipient.String(), user, pass, 1, sipmsg.GenerateTagN(8))))
	return next
}

// nextRequest copies an INVITE for a new transaction of the same call: CSeq+1, new Via.
func (u *uac) nextRequest(prev *sipmsg.Request) *sipmsg.Request {
	next := prev.Clone()
	next.RemoveHeader("Via")
	next.PrependHeader(u.via(u.tp))
	for _, h := range next.GetHeaders("Proxy-Authorization") {
		next.RemoveHeader(h.Name())
	}
	cs := prev.CSeq()
	next.ReplaceHeader(&sipmsg.CSeqHeader{SeqNo: cs.SeqNo + 1, MethodName: cs.MethodName})
	u.address(next, u.tp, u.edge)
	return next
}

// inDialog builds a request inside the dialog the 2xx res to invite set up: Request-URI
// = the callee's Contact, Route = the Record-Route set reversed.
func (u *uac) inDialog(method sipmsg.RequestMethod, invite *sipmsg.Request, res *sipmsg.Response, seq uint32) *sipmsg.Request {
	target := invite.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	req := sipmsg.NewRequest(method, target)
	req.AppendHeader(u.via(u.tp))
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		rr := rrs[i].(*sipmsg.RecordRouteHeader)
		req.AppendHeader(&sipmsg.RouteHeader{Address: *rr.Address.Clone()})
	}
	mf := sipmsg.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sipmsg.HeaderClone(invite.From()))
	req.AppendHeader(sipmsg.HeaderClone(res.To()))
	req.AppendHeader(sipmsg.HeaderClone(invite.CallID()))
	req.AppendHeader(&sipmsg.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetBody(nil)
	u.address(req, u.tp, u.edge) // first Route is the edge
	return req
}

func (u *uac) ack(invite *sipmsg.Request, res *sipmsg.Response) {
	u.t.Helper()
	if err := u.cl.WriteRequest(u.inDialog(sipmsg.ACK, invite, res, invite.CSeq().SeqNo), noBuild); err != nil {
		u.t.Fatalf("ACK: %v", err)
	}
}

func (u *uac) bye(invite *sipmsg.Request, res *sipmsg.Response) *sipmsg.Response {
	u.t.Helper()
	final, _, err := u.send(u.inDialog(sipmsg.BYE, invite, res, invite.CSeq().SeqNo+1), nil)
	if err != nil {
		u.t.Fatalf("BYE: %v", err)
	}
	return final
}

// cancel sends the CANCEL for invite (same branch) and returns its final response.
func (u *uac) cancel(invite *sipmsg.Request) *sipmsg.Response {
	u.t.Helper()
	c := sipmsg.NewRequest(sipmsg.CANCEL, invite.Recipient)
	c.AppendHeader(invite.Via().Clone())
	mf := sipmsg.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(sipmsg.HeaderClone(invite.From()))
	c.AppendHeader(sipmsg.HeaderClone(invite.To()))
	c.AppendHeader(sipmsg.HeaderClone(invite.CallID()))
	c.AppendHeader(&sipmsg.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: sipmsg.CANCEL})
	c.SetBody(nil)
	u.address(c, u.tp, u.edge)
	res, _, err := u.send(c, nil)
	if err != nil {
		u.t.Fatalf("CANCEL: %v", err)
	}
	return res
}

// cancelWhenRinging sends an INVITE, CANCELs it once 180 arrives (the CANCEL must get
// 200) and returns the INVITE's final response and the statuses seen.
func (u *uac) cancelWhenRinging() (*sipmsg.Response, []int, error) {
	u.t.Helper()
	inv := u.newInvite()
	ringing := make(chan struct{})
	var once sync.Once
	type result struct {
		res   *sipmsg.Response
		codes []int
		err   error
	}
	done := make(chan result, 1)
	go func() {
		res, codes, err := u.send(inv, func(r *sipmsg.Response) {
			if r.StatusCode == 180 {
				once.Do(func() { close(ringing) })
			}
		})
		done <- result{res, codes, err}
	}()
	select {
	case <-ringing:
	case <-time.After(5 * time.Second):
		u.t.Fatal("no 180")
	}
	if c := u.cancel(inv); c.StatusCode != 200 {
		u.t.Fatalf("CANCEL answered %d", c.StatusCode)
	}
	got := <-done
	return got.res, got.codes, got.err
}

// call runs INVITE (answering a 407 with alg when user != "") and returns the final
// response, the INVITE that got it and the statuses seen.
func (u *uac) call(alg, user, pass string) (*sipmsg.Response, *sipmsg.Request, []int) {
	u.t.Helper()
	inv := u.newInvite()
	res, codes, err := u.send(inv, nil)
	if err != nil {
		u.t.Fatalf("INVITE: %v", err)
	}
	if res.StatusCode == 407 && user != "" {
		inv = u.withAuth(inv, res, alg, user, pass)
		var more []int
		res, more, err = u.send(inv, nil)
		if err != nil {
			u.t.Fatalf("INVITE with credentials: %v", err)
		}
		codes = append(codes, more...)
	}
	return res, inv, codes
}

// ---- UAS (the upstream) -----------------------------------------------------------------

type uas struct {
	*peer
	invites, reinvites, acks, byes, cancels atomic.Int32
	lastRe                                  *sipmsg.Request // the last re-INVITE (under mu)
	ring                                    atomic.Int64    // ns before answering 200
	silent                                  atomic.Bool     // never answer
	mu                                      sync.Mutex
	seen                                    []*sipmsg.Request // initial INVITEs as received
	lastBye                                 atomic.Pointer[sipmsg.Request]
}

func newUAS(t testing.TB) *uas {
	u := &uas{peer: &peer{}}
	// A short ring keeps 180 ahead of 200: sipgo handles each datagram in its own
	// goroutine, so back-to-back responses may overtake each other (as on the wire).
	u.ring.Store(int64(30 * time.Millisecond))
	newPeer(t, u.peer, "127.0.0.1", func(s *sipgo.Server) {
		s.OnInvite(u.onInvite)
		s.OnAck(func(*sipmsg.Request, sipmsg.ServerTransaction) { u.acks.Add(1) })
		s.OnBye(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
			u.byes.Add(1)
			u.lastBye.Store(req)
			tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	return u
}

func (u *uas) answer(req *sipmsg.Request, code int, reason string, body []byte) *sipmsg.Response {
	res := sipmsg.NewResponseFromRequest(req, code, reason, body)
	res.To().Params.Add("tag", "uas-tag")
	if code >= 180 && code < 300 {
		res.AppendHeader(u.contact(req.Transport(), "uas"))
	}
	if body != nil {
		res.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
	}
	return res
}

func (u *uas) onInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if to := req.To(); to != nil && tagOf(to.Params) != "" { // re-INVITE
		u.reinvites.Add(1)
		u.mu.Lock()
		u.lastRe = req
		u.mu.Unlock()
		tx.Respond(u.answer(req, 200, "OK", []byte(testSDP)))
		return
	}
	u.invites.Add(1)
	u.mu.Lock()
	u.seen = append(u.seen, req)
	u.mu.Unlock()
	if u.silent.Load() {
		return
	}
	canceled := make(chan struct{})
	var once sync.Once
	tx.OnCancel(func(*sipmsg.Request) { u.cancels.Add(1); once.Do(func() { close(canceled) }) })
	tx.Respond(u.answer(req, 180, "Ringing", nil))
	select {
	case <-time.After(time.Duration(u.ring.Load())):
	case <-canceled:
		return
	case <-tx.Done():
		return
	}
	tx.Respond(u.answer(req, 200, "OK", []byte(testSDP)))
}

func (u *uas) lastInvite() *sipmsg.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

// bye hangs up from the upstream side: Request-URI = the caller's Contact, Route = the
// INVITE's Record-Route set in order, sent to the first route (the edge).
func (u *uas) bye(invite *sipmsg.Request) (*sipmsg.Response, error) {
	req := sipmsg.NewRequest(sipmsg.BYE, invite.Contact().Address)
	tp := invite.Transport()
	req.AppendHeader(u.via(tp))
	var first *sipmsg.Uri
	for _, h := range invite.GetHeaders("Record-Route") {
		rr := h.(*sipmsg.RecordRouteHeader)
		if first == nil {
			first = &rr.Address
		}
		req.AppendHeader(&sipmsg.RouteHeader{Address: *rr.Address.Clone()})
	}
	mf := sipmsg.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := invite.To().AsFrom()
	from.Params = sipmsg.NewParams()
	from.Params.Add("tag", "uas-tag")
	req.AppendHeader(&from)
	to := invite.From().AsTo()
	req.AppendHeader(&to)
	req.AppendHeader(sipmsg.HeaderClone(invite.CallID()))
	req.AppendHeader(&sipmsg.CSeqHeader{SeqNo: 100, MethodName: sipmsg.BYE})
	req.SetBody(nil)
	if first == nil {
		return nil, fmt.Errorf("INVITE carried no Record-Route")
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr(first.Host), uint16(first.Port))
	u.address(req, tp, dst)
	res, _, err := u.send(req, nil)
	return res, err
}

// noBuild makes sipgo send a request exactly as built. Passing any option skips sipgo's
// request builder (which would add headers and a Laddr of its choosing).
func noBuild(*sipgo.Client, *sipmsg.Request) error { return nil }
