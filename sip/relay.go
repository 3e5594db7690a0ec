package sip

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"
)

// noBuild makes sipgo send a request exactly as built. Passing any option skips sipgo's
// request builder (which would add headers and a Laddr of its choosing).
func noBuild(*sipgo.Client, *sipmsg.Request) error { return nil }

// relayInfo says what a relayed transaction means for the dialog table.
type relayInfo struct {
	initial bool        // the dialog-creating INVITE
	dialog  string      // dialog table key (Call-ID + original From tag); "" when no verified dialog
	grant   dialogGrant // both ends and the trunk (initial INVITE, and verified in-dialog requests)
	slot    *capSlot    // the call's hold on its trunk's concurrency count (initial INVITE)
}

// relayInvite forwards an allowed out-of-dialog INVITE to its trunk's upstream with our
// Via and Record-Route (carrying the route token), and relays the answers.
//
// slot is the call's hold on its trunk's concurrency count: it passes to the dialog table
// when the call is answered, and is released here when the call ends before that.
func (s *Server) relayInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction, src netip.AddrPort, d *decision, slot *capSlot) {
	defer func() {
		if slot != nil && !slot.handed {
			slot.release()
		}
	}()
	raw := s.cfg.Upstream
	if d.Trunk != nil && d.Trunk.Upstream != "" {
		raw = d.Trunk.Upstream
	}
	hop, err := s.ups.get(s.runCtx, raw)
	if err != nil {
		s.m.upstreamResponse("error")
		s.sec.Error().Err(err).Str("trunk", string(d.trunkID())).Str("upstream", raw).Msg("no usable upstream")
		s.unavailable503(tx, req, src)
		return
	}
	callID := callIDOf(req)
	fromTag := tagOf(req.From().Params)
	pbx := flow{tp: req.Transport(), addr: src}
	now := time.Now()
	grant := dialogGrant{pbx: pbx, up: hop.flow, trunk: d.trunkID(), issued: now, expires: now.Add(s.cfg.DialogTimeout)}
	tok := s.rr.token(callID, fromTag, grant)
	// RFC 5658 double Record-Route when the transports differ: the upstream-facing entry
	// on top (the callee routes to it), the PBX-facing one below (the caller routes to it).
	rrs := make([]sipmsg.Header, 0, 2)
	if hop.flow.tp != pbx.tp {
		rrs = append(rrs, s.adv.recordRoute(tok, hop.flow.tp))
	}
	rrs = append(rrs, s.adv.recordRoute(tok, pbx.tp))
	fw := s.buildForward(req, src, hop.flow, forwardOpts{rrs: rrs, dropRoutes: true, ruri: &hop.spec, initial: d})

	s.invites.Add(1)
	defer s.invites.Add(-1)
	s.pending.Add(1)
	defer s.pending.Add(-1)
	if branch := viaBranch(req); branch != "" {
		s.cancels.put(branch, src.Addr())
		defer s.cancels.del(branch)
	}
	s.relay(req, tx, src, fw, relayInfo{initial: true, dialog: dialogKey(callID, fromTag), grant: grant, slot: slot})
}

// forwardOpts says how buildForward changes a request on its way.
type forwardOpts struct {
	rrs        []sipmsg.Header // our Record-Route(s), initial INVITE only
	skipRoutes int             // our own Route headers on top, removed (loose routing)
	dropRoutes bool            // remove every Route: towards the upstream the edge alone picks the hop
	ruri       *upstreamSpec   // non-nil: Request-URI host:port rewritten to the upstream's
	// initial is the decision of an initial INVITE from a PBX: the request crosses the
	// trust boundary towards the core (DESIGN §4): maddr and identity headers the PBX may
	// not assert are removed, and the edge's own X-Sipedge-* headers added.
	initial *decision
}

// buildForward builds the request to send to the next hop. It is a deep-enough copy of
// req (sipgo's Clone shares Max-Forwards and freezes the destination, notes traps 1-2):
//   - our Via on top (built by hand, trap 8), received/rport stamped on the sender's Via;
//   - o.rrs inserted above the first existing Record-Route (else below the Vias);
//   - our Route headers removed (loose routing), and every Route with o.dropRoutes;
//   - a new Max-Forwards, one lower;
//   - every Proxy-Authorization removed, whatever its spelling (trap 10);
//   - o.ruri != nil: Request-URI host:port rewritten to the upstream's;
//   - o.initial != nil: maddr, P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID
//     and the configured identity-header prefixes removed, X-Sipedge-* added;
//   - transport, destination and (UDP only, traps 5-6) the listener as local address set.
func (s *Server) buildForward(req *sipmsg.Request, src netip.AddrPort, out flow, o forwardOpts) *sipmsg.Request {
	fw := sipmsg.NewRequest(req.Method, req.Recipient)
	fw.SipVersion = req.SipVersion
	if o.ruri != nil || (o.initial != nil && hasURIParam(&req.Recipient, "maddr")) {
		fw.Recipient = *req.Recipient.Clone()
	}
	if o.initial != nil && fw.Recipient.UriParams != nil {
		fw.Recipient.UriParams.Remove("maddr") // the edge alone picks the hop
	}
	if o.ruri != nil {
		fw.Recipient.Host = o.ruri.host
		fw.Recipient.Port = o.ruri.port
		if fw.Recipient.UriParams != nil {
			fw.Recipient.UriParams.Remove("transport")
		}
		if o.ruri.tp == "TCP" {
			if fw.Recipient.UriParams == nil {
				fw.Recipient.UriParams = sipmsg.NewParams()
			}
			fw.Recipient.UriParams.Add("transport", "tcp")
		}
	}

	hdrs := req.Headers()
	rrAt, lastVia := -1, -1
	for i, h := range hdrs {
		switch h.(type) {
		case *sipmsg.ViaHeader:
			lastVia = i
		case *sipmsg.RecordRouteHeader:
			if rrAt < 0 {
				rrAt = i
			}
		}
	}
	if rrAt < 0 {
		rrAt = lastVia + 1
	}

	via := &sipmsg.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: out.tp,
		Host: s.adv.host, Port: s.adv.port, Params: sipmsg.NewParams(),
	}
	via.Params.Add("branch", sipmsg.GenerateBranchN(16))
	fw.AppendHeader(via)

	firstVia := true
	skip := o.skipRoutes
	for i, h := range hdrs {
		if i == rrAt {
			for _, rr := range o.rrs {
				fw.AppendHeader(rr)
			}
		}
		switch hh := h.(type) {
		case *sipmsg.ViaHeader:
			if firstVia {
				firstVia = false
				fw.AppendHeader(stampVia(hh, src))
				continue
			}
		case *sipmsg.RouteHeader:
			if skip > 0 || o.dropRoutes {
				skip--
				continue
			}
		case *sipmsg.MaxForwardsHeader:
			mf := sipmsg.MaxForwardsHeader(hh.Val() - 1) // callers checked Val() > 0
			fw.AppendHeader(&mf)
			continue
		default:
			if strings.EqualFold(h.Name(), "Proxy-Authorization") {
				continue
			}
			if o.initial != nil && s.hdrs.untrusted(h.Name()) {
				continue
			}
		}
		fw.AppendHeader(h) // parsed headers are never mutated after parsing: sharing is safe
	}
	if rrAt >= len(hdrs) {
		for _, rr := range o.rrs {
			fw.AppendHeader(rr)
		}
	}
	if d := o.initial; d != nil {
		s.hdrs.add(fw, d)
	}
	fw.SetBody(req.Body()) // adds Content-Length when the sender left it out (UDP)
	fw.SetTransport(out.tp)
	fw.SetDestination(out.addr.String())
	if out.tp == "UDP" {
		fw.Laddr = s.laddrUDP
	}
	return fw
}

func hasURIParam(u *sipmsg.Uri, k string) bool {
	_, ok := uriParam(u, k)
	return ok
}

// stampVia adds received= (and fills an empty rport, RFC 3581) to the sender's Via when
// its sent-by differs from the socket source. Returns v itself when nothing changes.
func stampVia(v *sipmsg.ViaHeader, src netip.AddrPort) *sipmsg.ViaHeader {
	rport, hasRport := v.Params.Get("rport")
	ip := src.Addr().String()
	sameHost := strings.Trim(v.Host, "[]") == ip
	fillRport := hasRport && rport == ""
	if sameHost && !fillRport {
		return v
	}
	c := v.Clone()
	if fillRport {
		c.Params.Add("rport", strconv.Itoa(int(src.Port())))
	}
	c.Params.Add("received", ip)
	return c
}

// relay sends fw upstream (or downstream) in a client transaction and relays every
// response but 100 back through tx, until the final one. It never hangs: no response
// within UpstreamTimeout → 408; no final within InviteTimeout after a provisional →
// CANCEL upstream + 408; transport failure → 503. A CANCEL from the caller is passed on
// upstream (after a provisional, RFC 3261 §9.1).
func (s *Server) relay(req *sipmsg.Request, tx sipmsg.ServerTransaction, src netip.AddrPort, fw *sipmsg.Request, info relayInfo) {
	inTp := req.Transport()
	dialCtx, cancelDial := s.sendContext(fw, s.cfg.UpstreamConnectTimeout)
	clTx, err := s.cl.TransactionRequest(dialCtx, fw, noBuild)
	cancelDial()
	if err != nil {
		s.m.upstreamResponse("error")
		s.log.Debug().Err(err).Str("call_id", callIDOf(req)).Str("next_hop", fw.Destination()).Msg("relay failed")
		s.unavailable503(tx, req, src)
		return
	}
	isInvite := fw.IsInvite()
	dst := src.String()
	toCaller := func(res *sipmsg.Response) *sipmsg.Response {
		res.RemoveHeader("Via") // our own, top
		res.SetDestination(dst)
		res.SetTransport(inTp)
		return res
	}

	var canceled chan struct{}
	if isInvite {
		// 2xx retransmissions reach only this hook (RFC 6026 Accepted state, trap 12).
		// They go out statelessly: the server transaction may be gone already (TCP).
		clTx.OnRetransmission(func(r *sipmsg.Response) {
			if err := s.ua.TransportLayer().WriteMsg(toCaller(r)); err != nil {
				s.m.drop(dropRespondFailed)
			}
		})
		canceled = make(chan struct{})
		var once sync.Once
		if !tx.OnCancel(func(c *sipmsg.Request) {
			// sipgo matched the CANCEL by branch alone; over UDP the read filter already
			// refused one from another address, over TCP it is not passed upstream.
			if cs, err := peerAddr(c); err == nil && cs.Addr().Unmap() != src.Addr().Unmap() {
				s.m.drop(dropCancelSource)
				return
			}
			once.Do(func() { close(canceled) })
		}) {
			once.Do(func() { close(canceled) })
		}
	}

	start := time.Now()
	timer := time.NewTimer(s.cfg.UpstreamTimeout)
	defer timer.Stop()
	var (
		provisional   bool // upstream sent a 1xx
		cancelPending bool // CANCEL to send once a 1xx arrives
		callerGone    bool // the caller canceled or got our 408: wait only for upstream's final
	)
	for {
		select {
		case res := <-clTx.Responses():
			s.m.upstreamResponse(statusClass(res.StatusCode))
			if res.IsProvisional() {
				if !provisional {
					provisional = true
					if isInvite && !callerGone {
						timer.Reset(s.cfg.InviteTimeout)
					}
				}
				if cancelPending {
					cancelPending = false
					s.cancelUpstream(fw)
				}
				if res.StatusCode == sipmsg.StatusTrying || callerGone {
					continue // 100 is hop-by-hop
				}
				if err := tx.Respond(toCaller(res)); err != nil {
					s.m.drop(dropRespondFailed)
				}
				continue
			}
			if info.initial {
				s.m.relaySeconds(time.Since(start).Seconds())
			}
			if callerGone {
				if res.IsSuccess() && isInvite {
					s.m.drop(dropCanceled)
					s.hangUpUpstream(fw, res)
				}
				return
			}
			s.onFinal(fw, res, info)
			if err := tx.Respond(toCaller(res)); err != nil {
				s.m.drop(dropRespondFailed)
				if res.IsSuccess() && isInvite {
					// The caller's CANCEL won the race (its transaction already sent 487):
					// the call was answered upstream but cannot be delivered. End it.
					if info.initial {
						s.dlg.end(info.dialog)
					}
					s.m.drop(dropCanceled)
					s.hangUpUpstream(fw, res)
				}
			}
			if !isInvite {
				clTx.Terminate() // non-INVITE: nothing left to absorb (notes §7)
			}
			return

		case <-clTx.Done():
			if fw.Method == sipmsg.BYE && info.dialog != "" {
				s.dlg.end(info.dialog) // a BYE that timed out ends the session (RFC 3261 §15.1.1)
			}
			if !callerGone {
				if errors.Is(clTx.Err(), sipmsg.ErrTransactionTimeout) {
					s.m.upstreamResponse("timeout")
					s.timeout408(tx, req, src)
				} else {
					s.m.upstreamResponse("error")
					s.unavailable503(tx, req, src)
				}
			}
			return

		case <-timer.C:
			if callerGone { // waited long enough for upstream's answer to our CANCEL
				clTx.Terminate()
				return
			}
			s.m.upstreamResponse("timeout")
			s.timeout408(tx, req, src)
			if !isInvite || !provisional {
				clTx.Terminate()
				return
			}
			// Timer C: cancel upstream, then absorb its 487 so the transaction ACKs it.
			s.cancelUpstream(fw)
			callerGone = true
			timer.Reset(s.cfg.UpstreamTimeout)

		case <-canceled: // sipgo already answered the CANCEL 200 and the INVITE 487
			canceled = nil
			callerGone = true
			if provisional {
				s.cancelUpstream(fw)
			} else {
				cancelPending = true
			}
			timer.Reset(s.cfg.UpstreamTimeout)

		case <-s.runCtx.Done():
			clTx.Terminate()
			return
		}
	}
}

// onFinal updates the dialog table and counters for a final response about to be
// relayed.
func (s *Server) onFinal(fw *sipmsg.Request, res *sipmsg.Response, info relayInfo) {
	switch {
	case info.initial && res.IsSuccess():
		s.m.relayedCall()
		if s.dlg.add(info.dialog, time.Now().Add(s.cfg.DialogTimeout), info.grant, info.slot) {
			if info.slot != nil {
				info.slot.handed = true
			}
		} else {
			s.m.drop(dropDialogsFull)
		}
	case info.dialog == "":
	case fw.IsInvite() && res.IsSuccess():
		// A re-INVITE answered: the dialog lives on, and so does its route.
		s.dlg.renew(info.dialog, time.Now().Add(s.cfg.DialogTimeout), info.grant)
	case fw.Method == sipmsg.BYE && res.StatusCode != sipmsg.StatusUnauthorized && res.StatusCode != sipmsg.StatusProxyAuthRequired:
		// Any final answer but a challenge ends the session (RFC 3261 §15.1.1), and with
		// it the call's hold on its trunk's concurrency count.
		s.dlg.end(info.dialog)
	}
}

// cancelUpstream sends the CANCEL for the forwarded INVITE fw (RFC 3261 §9.1): same
// Request-URI, top Via (branch), Route and Call-ID/From/To, CSeq number with method
// CANCEL, same destination. Its own transaction runs in the background, bounded by
// UpstreamTimeout.
func (s *Server) cancelUpstream(fw *sipmsg.Request) {
	c := sipmsg.NewRequest(sipmsg.CANCEL, fw.Recipient)
	c.SipVersion = fw.SipVersion
	c.AppendHeader(fw.Via().Clone())
	for _, h := range fw.Headers() {
		if _, ok := h.(*sipmsg.RouteHeader); ok {
			c.AppendHeader(h)
		}
	}
	mf := sipmsg.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(fw.From())
	c.AppendHeader(fw.To())
	c.AppendHeader(fw.CallID())
	c.AppendHeader(&sipmsg.CSeqHeader{SeqNo: fw.CSeq().SeqNo, MethodName: sipmsg.CANCEL})
	c.SetBody(nil)
	c.SetTransport(fw.Transport())
	c.SetDestination(fw.Destination())
	c.Laddr = fw.Laddr
	s.background(c)
}

// hangUpUpstream ends a call upstream answered 2xx but the caller no longer wants: ACK
// the 2xx, then BYE, both along the route the 2xx set up, sent to the upstream hop.
func (s *Server) hangUpUpstream(fw *sipmsg.Request, res *sipmsg.Response) {
	target := fw.Recipient
	if c := res.Contact(); c != nil {
		target = *c.Address.Clone()
	}
	build := func(method sipmsg.RequestMethod, seq uint32) *sipmsg.Request {
		r := sipmsg.NewRequest(method, target)
		via := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: fw.Transport(),
			Host: s.adv.host, Port: s.adv.port, Params: sipmsg.NewParams()}
		via.Params.Add("branch", sipmsg.GenerateBranchN(16))
		r.AppendHeader(via)
		// Route set of the UAC side: the 2xx's Record-Route reversed, minus our own entries.
		rrs := res.GetHeaders("Record-Route")
		for i := len(rrs) - 1; i >= 0; i-- {
			if rr, ok := rrs[i].(*sipmsg.RecordRouteHeader); ok && !s.adv.isOurs(&rr.Address) {
				r.AppendHeader(&sipmsg.RouteHeader{Address: *rr.Address.Clone()})
			}
		}
		mf := sipmsg.MaxForwardsHeader(70)
		r.AppendHeader(&mf)
		r.AppendHeader(fw.From())
		if to := res.To(); to != nil {
			r.AppendHeader(to)
		}
		r.AppendHeader(fw.CallID())
		r.AppendHeader(&sipmsg.CSeqHeader{SeqNo: seq, MethodName: method})
		r.SetBody(nil)
		r.SetTransport(fw.Transport())
		r.SetDestination(fw.Destination())
		r.Laddr = fw.Laddr
		return r
	}
	seq := fw.CSeq().SeqNo
	if err := s.writeStateless(build(sipmsg.ACK, seq)); err != nil {
		s.log.Debug().Err(err).Msg("ACK of an abandoned 2xx failed")
	}
	s.background(build(sipmsg.BYE, seq+1))
}

// writeStateless sends r outside any transaction (ACK for a 2xx), opening a TCP
// connection if needed under the dial guard's permission.
func (s *Server) writeStateless(r *sipmsg.Request) error {
	ctx, cancel := s.sendContext(r, s.cfg.UpstreamConnectTimeout)
	defer cancel()
	conn, err := s.ua.TransportLayer().ClientRequestConnection(ctx, r)
	if err != nil {
		return err
	}
	defer conn.TryClose()
	return conn.WriteMsg(r)
}

// background runs a client transaction for r (CANCEL, BYE the edge originates) until its
// final response, bounded by UpstreamTimeout.
func (s *Server) background(r *sipmsg.Request) {
	s.active.Add(1)
	go func() {
		defer s.active.Add(-1)
		ctx, cancel := context.WithTimeout(allowDial(s.runCtx), s.cfg.UpstreamTimeout)
		defer cancel()
		t, err := s.cl.TransactionRequest(ctx, r, noBuild)
		if err != nil {
			s.log.Debug().Err(err).Str("method", string(r.Method)).Msg("edge request failed")
			return
		}
		defer t.Terminate()
		for {
			select {
			case res := <-t.Responses():
				if res.StatusCode >= 200 {
					return
				}
			case <-t.Done():
				return
			case <-ctx.Done():
				return
			}
		}
	}()
}

// inDialogRoute is where a verified in-dialog request goes.
type inDialogRoute struct {
	routeTarget
	skip int           // our Route headers on top, to remove
	ruri *upstreamSpec // non-nil: rewrite the Request-URI (request addressed to the edge itself)
	// dialog is the dialog table key when the request was matched to a dialog this edge
	// set up (token or table); "" for the policy fallback, which may not end any dialog.
	dialog string
}

// routeInDialog decides where an in-dialog request (or 2xx ACK) goes, or refuses it.
//
//  1. Normally its top Route is ours (one entry, two after a transport change) and carries
//     a token that verifies for its Call-ID and tags; the token names the next hop and
//     what it authorised, which must still hold ([Server.grantHolds]).
//  2. A UA that ignores Record-Route (SIPp's built-in uas, for one) makes both sides send
//     in-dialog requests with no Route at all. Such a request is routed from this node's
//     dialog table when Call-ID and tags match a call answered here, under the same rules.
//  3. Failing that, a request with no Route from a source IP-allowed for a trunk goes to
//     that trunk's upstream (such a source may send INVITEs there anyway). Not for ACK:
//     an ACK nothing else routes is one for a non-2xx answer whose (TCP) transaction is
//     gone, and goes nowhere.
//
// Next hops come from the token, the table or the policy, never from the request.
func (s *Server) routeInDialog(req *sipmsg.Request, src netip.AddrPort) (inDialogRoute, bool) {
	var rt inDialogRoute
	tok := ""
	for _, h := range req.Headers() {
		r, ok := h.(*sipmsg.RouteHeader)
		if !ok {
			continue
		}
		if !s.adv.isOurs(&r.Address) {
			break
		}
		if tok == "" {
			tok = r.Address.User
		} else if r.Address.User != tok {
			break
		}
		rt.skip++
	}
	callID := callIDOf(req)
	fromTag := tagOf(req.From().Params)
	toTag := tagOf(req.To().Params)
	now := time.Now()
	if rt.skip > 0 {
		t, ok := s.rr.check(tok, callID, fromTag, toTag)
		if !ok {
			return rt, false
		}
		rt.routeTarget = t
		rt.dialog = dialogKey(callID, t.fromTag)
		return rt, s.grantHolds(req, src, &rt, now)
	}
	if req.Route() != nil {
		return rt, false // routed elsewhere: we are not that hop
	}
	if e, ok := s.dlg.get(dialogKey(callID, fromTag), now); ok {
		rt.routeTarget = routeTarget{dir: towardsUpstream, next: e.grant.up, fromTag: fromTag, grant: e.grant}
		rt.dialog = dialogKey(callID, fromTag)
		if s.isEdgeURI(&req.Recipient) {
			rt.ruri = &upstreamSpec{host: e.grant.up.addr.Addr().String(), port: int(e.grant.up.addr.Port()), tp: e.grant.up.tp}
		}
		return rt, s.grantHolds(req, src, &rt, now)
	}
	if e, ok := s.dlg.get(dialogKey(callID, toTag), now); ok && toTag != "" {
		rt.routeTarget = routeTarget{dir: towardsPBX, next: e.grant.pbx, fromTag: toTag, grant: e.grant}
		rt.dialog = dialogKey(callID, toTag)
		return rt, s.grantHolds(req, src, &rt, now)
	}
	if req.IsAck() || s.dlg.ended(dialogKey(callID, fromTag)) {
		return rt, false
	}
	pol := s.policy()
	if isNilPolicy(pol) {
		return rt, false
	}
	addr := src.Addr().Unmap()
	id, ok := pol.MatchSource(addr)
	if !ok {
		return rt, false
	}
	trunk, ok := pol.Trunk(id)
	if !ok || !usable(trunk) || !trunk.HasACL || !pol.Allows(id, addr) {
		return rt, false
	}
	raw := s.cfg.Upstream
	if trunk.Upstream != "" {
		raw = trunk.Upstream
	}
	hop, err := s.ups.get(s.runCtx, raw)
	if err != nil {
		return rt, false
	}
	rt.routeTarget = routeTarget{dir: towardsUpstream, next: hop.flow, fromTag: fromTag}
	if s.isEdgeURI(&req.Recipient) {
		rt.ruri = &hop.spec
	}
	return rt, true
}

// grantHolds checks what a dialog's token (or table entry) authorised against one
// in-dialog request (DESIGN §4):
//   - the dialog has not ended here (BYE answered) and has not expired (a re-INVITE
//     answered through this node renews it);
//   - towards the upstream it comes from the PBX flow's address, towards the PBX from
//     the upstream flow's: a token seen on the wire is useless from anywhere else;
//   - its trunk still takes calls, except for BYE, CANCEL and ACK, so calls on a trunk
//     disabled (or deleted) since can still end.
func (s *Server) grantHolds(req *sipmsg.Request, src netip.AddrPort, rt *inDialogRoute, now time.Time) bool {
	g := &rt.grant
	if s.dlg.ended(rt.dialog) {
		return false
	}
	if !now.Before(g.expires) {
		if _, alive := s.dlg.get(rt.dialog, now); !alive {
			return false
		}
	}
	addr := src.Addr().Unmap()
	switch rt.dir {
	case towardsUpstream:
		if addr != g.pbx.addr.Addr() {
			return false
		}
	case towardsPBX:
		if addr != g.up.addr.Addr() {
			return false
		}
	}
	switch req.Method {
	case sipmsg.BYE, sipmsg.CANCEL, sipmsg.ACK:
		return true
	}
	pol := s.policy()
	if isNilPolicy(pol) {
		return false
	}
	t, ok := pol.Trunk(g.trunk)
	return ok && t.TakesCalls()
}

// isEdgeURI reports whether u addresses this edge: our advertised host:port, or the
// listen address (any local address when listening on a wildcard).
func (s *Server) isEdgeURI(u *sipmsg.Uri) bool {
	if s.adv.isOurs(u) {
		return true
	}
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if port != int(s.addr.Port()) {
		return false
	}
	ip, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if !s.addr.Addr().IsUnspecified() {
		return ip == s.addr.Addr()
	}
	if ip.IsLoopback() {
		return true
	}
	for _, l := range s.localIPs {
		if l == ip {
			return true
		}
	}
	return false
}
