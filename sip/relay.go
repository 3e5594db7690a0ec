package sip

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// relayInfo says what a relayed transaction means for the dialog table, and what it
// holds until its client side ends (see releaseRelay).
type relayInfo struct {
	initial bool        // the dialog-creating INVITE
	dialog  string      // dialog table key (Call-ID + original From tag); "" when no verified dialog
	grant   dialogGrant // both ends and the trunk (initial INVITE, and verified in-dialog requests)
	slot    *capSlot    // the call's hold on its trunk's concurrency count (initial INVITE)

	pending bool             // holds a count of s.pending (and s.invites when invite)
	invite  bool             // an initial INVITE: counted in s.invites and its trunk's share
	trunk   *acl.TrunkPolicy // whose pending share it holds
}

// relayInvite forwards an allowed out-of-dialog INVITE to its trunk's upstream with our
// Via and Record-Route (carrying the route token), and relays the answers.
//
// slot is the call's hold on its trunk's concurrency count: it passes to the dialog table
// when the call is answered, and is released here when the call ends before that.
func (s *Server) relayInvite(req *sipmsg.Request, tx serverTx, src netip.AddrPort, d *decision, slot *capSlot) {
	raw := s.cfg.Upstream
	if d.Trunk != nil && d.Trunk.Upstream != "" {
		raw = d.Trunk.Upstream
	}
	hop, err := s.ups.get(s.runCtx, raw)
	if err != nil {
		slot.release()
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
	fw := s.buildForward(req, src, hop.flow, forwardOpts{rrs: rrs, toCore: true, ruri: &hop.spec, initial: d})

	if !s.caps.pendingAdmit(d.Trunk, s.cfg.MaxPendingPerTrunk, s.cfg.MaxPendingPerAccount) {
		slot.release()
		s.m.capRejected(capPending)
		s.m.drop(dropOverload)
		s.unavailable503(tx, req, src)
		return
	}
	s.invites.Add(1)
	s.pending.Add(1)
	s.relay(req, tx, src, fw, hop.flow, relayInfo{initial: true, dialog: dialogKey(callID, fromTag), grant: grant, slot: slot,
		pending: true, invite: true, trunk: d.Trunk})
}

// forwardOpts says how buildForward changes a request on its way.
type forwardOpts struct {
	rrs        []sipmsg.Header // our Record-Route(s), initial INVITE only
	skipRoutes int             // our own Route headers on top, removed (loose routing)
	// toCore: a PBX's request on its way to the upstream (initial or in-dialog). Every
	// Route is removed (the edge alone picks the hop) and so are the identity headers a
	// PBX may not assert (DESIGN §4), in every request of the dialog, not only the first.
	toCore bool
	ruri   *upstreamSpec // non-nil: Request-URI host:port rewritten to the upstream's
	// initial is the decision of an initial INVITE from a PBX (toCore too): maddr is
	// removed and the edge's own X-Sipedge-* headers added.
	initial *decision
}

// buildForward builds the request to send to the next hop. It is a deep-enough copy of
// req (sipgo's Clone shares Max-Forwards and freezes the destination, notes traps 1-2):
//   - our Via on top (built by hand, trap 8), received/rport stamped on the sender's Via;
//   - o.rrs inserted above the first existing Record-Route (else below the Vias);
//   - our Route headers removed (loose routing), and every Route with o.toCore;
//   - a new Max-Forwards, one lower;
//   - every Proxy-Authorization removed, whatever its spelling (trap 10);
//   - o.ruri != nil: Request-URI host:port rewritten to the upstream's;
//   - o.toCore: P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID and the
//     configured identity-header prefixes removed;
//   - o.initial != nil: maddr removed, X-Sipedge-* added;
//   - transport and destination set.
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
			if skip > 0 || o.toCore {
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
			if o.toCore && s.hdrs.untrusted(h.Name()) {
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

// relay sends fw to out as the client side of tx's proxy transaction and relays every
// response but 100 back, until the final one (proxytx.go). It never hangs: no response
// within UpstreamTimeout → 408; no final within InviteTimeout after a provisional →
// CANCEL upstream + 408; transport failure → 503. A CANCEL from the caller is passed on
// upstream (after a provisional, RFC 3261 §9.1). It returns at once; info's holds are
// released when the client side ends.
func (s *Server) relay(req *sipmsg.Request, tx serverTx, src netip.AddrPort, fw *sipmsg.Request, out flow, info relayInfo) {
	p, ok := tx.(*ptx)
	if !ok { // a test's recorder: a transaction of its own, answering into it
		p = s.tx.newDetached(s, flow{tp: req.Transport(), addr: src})
		p.l.sink = tx
		p.l.req = req
	}
	p.startClient(fw, out, info)
}

// onFinal updates the dialog table and counters for a final response about to be
// relayed.
func (s *Server) onFinal(fw *sipmsg.Request, code int, info relayInfo) {
	success := code >= 200 && code < 300
	switch {
	case info.initial && success:
		s.m.relayedCall()
		if s.dlg.add(info.dialog, time.Now().Add(s.cfg.DialogTimeout), info.grant, info.slot) {
			if info.slot != nil {
				info.slot.handed = true
			}
		} else {
			s.m.drop(dropDialogsFull)
		}
	case info.dialog == "":
	case fw.IsInvite() && success:
		// A re-INVITE answered: the dialog lives on, and so does its route.
		s.dlg.renew(info.dialog, time.Now().Add(s.cfg.DialogTimeout), info.grant)
	case fw.Method == sipmsg.BYE && code != sipmsg.StatusUnauthorized && code != sipmsg.StatusProxyAuthRequired:
		// Any final answer but a challenge ends the session (RFC 3261 §15.1.1), and with
		// it the call's hold on its trunk's concurrency count.
		s.dlg.end(info.dialog)
	}
}

// cancelFor builds the CANCEL for the forwarded INVITE fw (RFC 3261 §9.1): same
// Request-URI, top Via (branch), Route and Call-ID/From/To, CSeq number with method
// CANCEL, same destination.
func (s *Server) cancelFor(fw *sipmsg.Request) *sipmsg.Request {
	c := sameTransaction(fw, sipmsg.CANCEL, fw.To())
	c.SetTransport(fw.Transport())
	c.SetDestination(fw.Destination())
	return c
}

// sameTransaction builds a request of method that belongs to the transaction of the
// forwarded INVITE fw, as CANCEL and the ACK of a non-2xx do (RFC 3261 §9.1, §17.1.1.3):
// fw's Request-URI, top Via, Routes, From, Call-ID and CSeq number, with the given To.
func sameTransaction(fw *sipmsg.Request, method sipmsg.RequestMethod, to *sipmsg.ToHeader) *sipmsg.Request {
	r := sipmsg.NewRequest(method, fw.Recipient)
	r.SipVersion = fw.SipVersion
	r.AppendHeader(fw.Via())
	for _, h := range fw.Headers() {
		if _, ok := h.(*sipmsg.RouteHeader); ok {
			r.AppendHeader(h)
		}
	}
	mf := sipmsg.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	r.AppendHeader(fw.From())
	r.AppendHeader(to)
	r.AppendHeader(fw.CallID())
	r.AppendHeader(&sipmsg.CSeqHeader{SeqNo: fw.CSeq().SeqNo, MethodName: method})
	r.SetBody(nil)
	return r
}

// hangUpUpstream ends a call upstream answered 2xx but the caller no longer wants: ACK
// the 2xx, then BYE, both along the route the 2xx set up, sent to the upstream hop.
func (s *Server) hangUpUpstream(fw *sipmsg.Request, res *sipmsg.Response, out flow) {
	if fw == nil {
		return
	}
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
		r.SetTransport(out.tp)
		r.SetDestination(out.addr.String())
		return r
	}
	seq := fw.CSeq().SeqNo
	if err := s.sendStateless(build(sipmsg.ACK, seq)); err != nil {
		s.log.Debug().Err(err).Msg("ACK of an abandoned 2xx failed")
	}
	s.originate(build(sipmsg.BYE, seq+1))
}

// expectAnswer lets responses from out through the read filter for a transaction's
// lifetime (upstreams always pass).
func (s *Server) expectAnswer(out flow) {
	if !s.isUpstream(out.addr.Addr()) {
		s.asked.add(sourceKey(out.addr.Addr().Unmap()))
	}
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
	// Not for an INVITE either: an INVITE naming no dialog of this edge is a new call in
	// disguise, and only the decision (caps, boundary, headers) may let one through.
	if req.IsAck() || req.IsInvite() || s.dlg.ended(dialogKey(callID, fromTag)) {
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
