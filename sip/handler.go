package sip

import (
	"net/netip"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// handle judges and answers or relays one new request (not a retransmission, ACK of a
// non-2xx or CANCEL of a transaction in the table: see onRequest). It runs on the
// goroutine that read the request and never blocks: a relay returns once the request is
// sent, and its transaction goes on in the table.
func (s *Server) handle(req *sipmsg.Request, tx serverTx) {
	s.active.Add(1)
	defer s.active.Add(-1)

	tp := transportLabel(req.Transport())
	s.m.request(string(req.Method), tp)
	src, err := peerAddr(req)
	if err != nil { // never happens for network input; fail closed anyway
		s.m.drop(dropBadSource)
		if req.IsInvite() {
			s.m.invite("", acl.VerdictBadSource, tp)
		}
		return
	}
	if s.banned(src.Addr()) { // a TCP message in flight when the ban fell, or BanAction "403"
		s.m.bannedDrop()
		if req.IsInvite() {
			s.m.invite("", acl.VerdictBanned, tp)
		}
		if s.cfg.BanAction == BanAction403 && !req.IsAck() {
			s.reject403(tx, req, src)
		}
		return
	}
	toTag := ""
	if to := req.To(); to != nil {
		toTag = tagOf(to.Params)
	}

	if !req.IsAck() && !req.IsCancel() {
		if ext, ok := proxyRequire(req); ok {
			// RFC 3261 §16.3 step 4: the edge supports no extension a request may demand
			// of proxies; relaying it would break the demand.
			if ext == "" {
				s.reject400(tx, req, src, "Bad Proxy-Require")
			} else {
				s.respond(tx, req, src, sipmsg.StatusBadExtension, "Bad Extension", sipmsg.NewHeader("Unsupported", ext))
			}
			return
		}
	}
	switch {
	case req.IsInvite() && toTag == "":
		s.onInvite(req, tx, src, tp)
	case req.IsAck():
		s.onAck(req, src)
	case req.IsCancel():
		// A CANCEL matching an INVITE in the transaction table never gets here (onRequest
		// answers it and cancels the INVITE).
		s.respond(tx, req, src, sipmsg.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
	default:
		if code, reason := s.screen(req); code != 0 {
			s.respond(tx, req, src, code, reason)
			return
		}
		if toTag != "" {
			s.onInDialog(req, tx, src)
			return
		}
		switch req.Method {
		case sipmsg.OPTIONS:
			s.onOptions(req, tx, src)
		case sipmsg.BYE, sipmsg.UPDATE, sipmsg.INFO, sipmsg.PRACK:
			s.respond(tx, req, src, sipmsg.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		default: // REGISTER, SUBSCRIBE, MESSAGE, … outside a dialog: not a registrar, not a relay
			s.respond(tx, req, src, sipmsg.StatusMethodNotAllowed, "Method Not Allowed", s.allowHdr)
		}
	}
}

// onInvite judges an out-of-dialog INVITE and answers or relays it.
func (s *Server) onInvite(req *sipmsg.Request, tx serverTx, src netip.AddrPort, tp string) {
	var (
		d    decision
		slot *capSlot
	)
	switch {
	case s.draining.Load():
		d.Verdict = acl.VerdictDraining
	case s.pending.Load() >= int64(s.cfg.MaxPendingTransactions):
		d.Verdict = acl.VerdictCapExceeded
		s.m.drop(dropOverload)
	default:
		start := time.Now()
		d = s.decide(s.policy(), src, req)
		if d.Verdict != acl.VerdictAllowIP && s.bans.Banned(src.Addr()) && !s.isUpstream(src.Addr()) {
			// A listed source got here past its ban: the ban holds for every trunk that
			// does not list it (DESIGN §4a).
			s.m.bannedDrop()
			s.m.invite(d.trunkID(), acl.VerdictBanned, tp)
			if s.cfg.BanAction == BanAction403 {
				s.reject403(tx, req, src)
			}
			return
		}
		s.m.decisionSeconds(time.Since(start).Seconds())
		s.m.digestResult(d.Digest)
		if reason := failureReason(&d); reason != "" {
			s.bans.failure(src.Addr(), reason)
		}
		if d.Verdict == acl.VerdictAllowDigest {
			s.authed.add(sourceKey(src.Addr().Unmap()))
		}
		if d.Verdict == acl.VerdictAllowIP && s.hits != nil && d.EntryID != "" {
			s.hits.Record(d.Trunk.Account, d.EntryACL, d.EntryID)
		}
		if d.Verdict.Allowed() {
			slot, d.capKind = s.caps.admit(d.Trunk)
			if d.capKind != "" {
				d.Verdict = acl.VerdictCapExceeded
				s.m.capRejected(d.capKind)
			}
		}
	}
	s.m.invite(d.trunkID(), d.Verdict, tp)
	s.logDecision(&d, req, src, tp)

	switch d.Verdict {
	case acl.VerdictAllowIP, acl.VerdictAllowDigest:
		s.relayInvite(req, tx, src, &d, slot)
	case acl.VerdictChallenge:
		s.challenge407(tx, req, src, d.Algorithms, false)
	case acl.VerdictStale:
		s.challenge407(tx, req, src, d.Algorithms, true)
	case acl.VerdictAuthFailed:
		// DESIGN §4.5: credentials that are not valid get fresh challenges, like none at
		// all (RFC 3261 §22.3), so a typo can be corrected; repeated failures ban the source.
		s.challenge407(tx, req, src, d.Algorithms, false)
	case acl.VerdictNoCredential, acl.VerdictTrunkDisabled:
		s.reject403(tx, req, src)
	case acl.VerdictMalformed, acl.VerdictLoop:
		if d.code != 0 && d.code != sipmsg.StatusBadRequest {
			s.respond(tx, req, src, d.code, d.reason)
		} else {
			s.reject400(tx, req, src, d.reason)
		}
	case acl.VerdictTooManyHops:
		s.tooManyHops483(tx, req, src)
	case acl.VerdictCapExceeded:
		switch {
		case d.capKind == capCPS:
			s.respond(tx, req, src, sipmsg.StatusServiceUnavailable, "Service Unavailable", s.retryAfter1)
		case d.capKind == capConcurrent && s.cfg.ConcurrentCapCode == sipmsg.StatusBusyHere:
			s.respond(tx, req, src, sipmsg.StatusBusyHere, "Busy Here")
		default: // concurrent cap answered 503, or MaxPendingTransactions
			s.unavailable503(tx, req, src)
		}
	default: // not ready, draining
		s.unavailable503(tx, req, src)
	}
}

// failureReason says whether a decision counts towards banning its source, and as what.
// Only a failure that answers a nonce this edge issued to that very source counts
// (DESIGN §4a): its digest result proves the nonce verified for the source address, so
// spoofed UDP datagrams ban nobody. That is a wrong answer or an unknown user
// (indistinguishable by design), and a right answer for a trunk the source may not use
// (disabled, or a credential that takes no one trunk's calls). A plain first 407, a
// broken or foreign Proxy-Authorization, a stale or replayed nonce do not count.
func failureReason(d *decision) string {
	nonceOurs := d.Digest == digestFailed || d.Digest == digestOK || d.Digest == digestStale
	switch {
	case !nonceOurs:
		return ""
	case d.Verdict == acl.VerdictAuthFailed:
		return BanReasonDigest
	case d.Verdict == acl.VerdictNoCredential, d.Verdict == acl.VerdictTrunkDisabled:
		return BanReasonUnknownTrunk
	}
	return ""
}

// onOptions answers OPTIONS addressed to the edge: 200 with Allow, or 503 while not ready
// or draining, so keep-alive pings and load balancers see the edge's state.
func (s *Server) onOptions(req *sipmsg.Request, tx serverTx, src netip.AddrPort) {
	if mf := req.MaxForwards(); mf.Val() == 0 {
		s.tooManyHops483(tx, req, src)
		return
	}
	if s.draining.Load() || isNilPolicy(s.policy()) {
		s.unavailable503(tx, req, src)
		return
	}
	s.respond(tx, req, src, sipmsg.StatusOK, "OK", s.allowHdr, acceptSDP)
}

var acceptSDP = sipmsg.NewHeader("Accept", "application/sdp")

// onAck forwards an ACK for a 2xx (a new transaction, RFC 3261 §13.2.2.4) along the
// dialog's route. ACKs for non-2xx answers never get here: they belong to the INVITE
// server transaction and are hop-by-hop. An ACK that cannot be routed is dropped (an
// ACK gets no response).
func (s *Server) onAck(req *sipmsg.Request, src netip.AddrPort) {
	if code, _ := s.screen(req); code != 0 || req.MaxForwards().Val() == 0 {
		s.m.drop(dropAck)
		return
	}
	rt, ok := s.routeInDialog(req, src)
	if !ok {
		s.m.drop(dropAck)
		return
	}
	fw := s.buildForward(req, src, rt.next, forwardOpts{skipRoutes: rt.skip, toCore: rt.dir == towardsUpstream, ruri: rt.ruri})
	if err := s.sendStateless(fw); err != nil {
		s.m.drop(dropAck)
		s.log.Debug().Err(err).Str("call_id", callIDOf(req)).Msg("forward ACK failed")
	}
}

// onInDialog relays a request inside a dialog (BYE, re-INVITE, UPDATE, INFO, …) in
// either direction, if and only if it routes through a Record-Route this edge issued.
func (s *Server) onInDialog(req *sipmsg.Request, tx serverTx, src netip.AddrPort) {
	if req.MaxForwards().Val() == 0 {
		s.tooManyHops483(tx, req, src)
		return
	}
	rt, ok := s.routeInDialog(req, src)
	if !ok {
		s.m.drop(dropBadRoute)
		s.denied(nil, req, src, "", "bad_route")
		if e := s.sec.Warn(); e.Enabled() {
			e.Str("event", "sip_denied").Str("src", src.String()).Str("method", string(req.Method)).
				Str("verdict", "bad_route").Str("call_id", clip(callIDOf(req))).
				Str("user_agent", clip(userAgentOf(req))).Msg("in-dialog request without a valid edge route")
		}
		s.reject403(tx, req, src)
		return
	}
	if s.pending.Load() >= int64(s.cfg.MaxPendingTransactions) {
		s.m.drop(dropOverload)
		s.unavailable503(tx, req, src)
		return
	}
	fw := s.buildForward(req, src, rt.next, forwardOpts{skipRoutes: rt.skip, toCore: rt.dir == towardsUpstream, ruri: rt.ruri})
	s.pending.Add(1)
	s.relay(req, tx, src, fw, rt.next, relayInfo{dialog: rt.dialog, grant: rt.grant, pending: true})
}

// --- one function per outcome -------------------------------------------------------

// respond sends a response the edge generates itself, always to the socket the request
// came from (symmetric response routing, RFC 3581 style), with our Server header.
func (s *Server) respond(tx serverTx, req *sipmsg.Request, src netip.AddrPort, code int, reason string, extra ...sipmsg.Header) {
	if tx == nil {
		return
	}
	res := s.buildResponse(req, src, code, reason, extra...)
	if err := tx.Respond(res); err != nil {
		s.m.drop(dropRespondFailed)
		s.log.Debug().Err(err).Int("code", code).Str("call_id", callIDOf(req)).Msg("respond failed")
	}
}

// buildResponse makes the edge's own answer to req: extra headers, our Server header.
func (s *Server) buildResponse(req *sipmsg.Request, src netip.AddrPort, code int, reason string, extra ...sipmsg.Header) *sipmsg.Response {
	res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if s.serverHdr != nil {
		res.AppendHeader(s.serverHdr)
	}
	res.SetDestination(src.String())
	return res
}

// challenge407 asks for proxy credentials: one Proxy-Authenticate per algorithm, in order,
// all with qop="auth" and one fresh nonce bound to the source IP.
func (s *Server) challenge407(tx serverTx, req *sipmsg.Request, src netip.AddrPort, algs []string, stale bool) {
	vals := s.auth.challenges(src.Addr(), algs, stale)
	hdrs := make([]sipmsg.Header, len(vals))
	for i, v := range vals {
		hdrs[i] = sipmsg.NewHeader("Proxy-Authenticate", v)
	}
	s.respond(tx, req, src, sipmsg.StatusProxyAuthRequired, "Proxy Authentication Required", hdrs...)
}

// reject403 is the one answer for a refused caller: wrong password, unknown user, no
// credential, disabled trunk, bad dialog route. Identical bytes whatever the reason, so
// it tells a prober nothing.
func (s *Server) reject403(tx serverTx, req *sipmsg.Request, src netip.AddrPort) {
	s.respond(tx, req, src, sipmsg.StatusForbidden, "Forbidden")
}

func (s *Server) reject400(tx serverTx, req *sipmsg.Request, src netip.AddrPort, reason string) {
	if reason == "" {
		reason = "Bad Request"
	}
	s.respond(tx, req, src, sipmsg.StatusBadRequest, reason)
}

func (s *Server) tooManyHops483(tx serverTx, req *sipmsg.Request, src netip.AddrPort) {
	s.respond(tx, req, src, sipmsg.StatusTooManyHops, "Too Many Hops")
}

// unavailable503 is the retryable answer: no snapshot yet, draining, overload, upstream
// unreachable.
func (s *Server) unavailable503(tx serverTx, req *sipmsg.Request, src netip.AddrPort) {
	s.respond(tx, req, src, sipmsg.StatusServiceUnavailable, "Service Unavailable", s.retryAfter)
}

// --- logging ---------------------------------------------------------------------------

// logDecision writes the security event of a denied INVITE: one Warn line with stable
// fields (event, src, trunk, verdict, call_id, user_agent, user, transport). Routine
// outcomes (allowed, first challenge, stale) are only counted. Never logs credentials or
// digest responses.
func (s *Server) logDecision(d *decision, req *sipmsg.Request, src netip.AddrPort, tp string) {
	switch d.Verdict {
	case acl.VerdictAuthFailed, acl.VerdictNoCredential, acl.VerdictTrunkDisabled,
		acl.VerdictMalformed, acl.VerdictTooManyHops, acl.VerdictLoop:
	case acl.VerdictChallenge:
		if d.Digest != digestReplay && d.Digest != digestBadNonce {
			return
		}
	case acl.VerdictNotReady, acl.VerdictDraining, acl.VerdictCapExceeded:
		if e := s.log.Debug(); e.Enabled() {
			e.Str("src", src.String()).Str("verdict", d.Verdict.String()).Str("trunk", string(d.trunkID())).
				Str("cap", d.capKind).Str("call_id", clip(callIDOf(req))).Msg("INVITE refused")
		}
		return
	default:
		return
	}
	s.denied(d, req, src, tp, d.Verdict.String())
	e := s.sec.Warn()
	if !e.Enabled() {
		return
	}
	e = e.Str("event", "sip_denied").Str("src", src.String()).Str("trunk", string(d.trunkID())).
		Str("verdict", d.Verdict.String()).Str("call_id", clip(callIDOf(req))).
		Str("user_agent", clip(userAgentOf(req))).Str("transport", tp)
	if d.Version != 0 {
		e = e.Uint64("snapshot_version", d.Version)
	}
	if d.User != "" {
		e = e.Str("user", clip(d.User))
	}
	if d.Digest != digestNone {
		e = e.Str("digest", d.Digest.String())
	}
	if d.reason != "" {
		e = e.Str("reason", d.reason)
	}
	e.Msg("INVITE denied")
}

// proxyRequire reports whether req carries Proxy-Require, and the option tags to name in
// Unsupported ("" when none is a clean token: they are echoed into our answer).
func proxyRequire(req *sipmsg.Request) (string, bool) {
	var tags []string
	found := false
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "Proxy-Require") {
			continue
		}
		found = true
		for _, t := range strings.Split(h.Value(), ",") {
			if t = strings.TrimSpace(t); isToken(t) && len(t) <= 64 && len(tags) < 8 {
				tags = append(tags, t)
			}
		}
	}
	return strings.Join(tags, ", "), found
}

func callIDOf(req *sipmsg.Request) string {
	if h := req.CallID(); h != nil {
		return string(*h)
	}
	return ""
}

func userAgentOf(req *sipmsg.Request) string {
	if h := req.GetHeader("User-Agent"); h != nil {
		return h.Value()
	}
	return ""
}

// clip bounds attacker-supplied strings in log lines.
func clip(s string) string {
	const max = 128
	if len(s) > max {
		s = s[:max]
	}
	return strings.ToValidUTF8(s, "?")
}
