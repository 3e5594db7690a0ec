package sip

import (
	"net/netip"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// Policy is the read-only trunk policy one SIP request is judged against. *acl.Snapshot
// satisfies it. The SIP layer loads it once per request (see [New]), so the ACL check and
// the digest check of one INVITE read the same version.
type Policy interface {
	Version() uint64
	// Decide is the one decision of DESIGN.md §4 ([acl.Snapshot.Decide]); Explain asks
	// the very same function.
	Decide(c acl.Call, v acl.DigestVerifier, defaultAlgs []string) acl.Decision
	// MatchSource finds the single enabled trunk whose ACL holds src.
	MatchSource(src netip.Addr) (acl.TrunkID, bool)
	Trunk(id acl.TrunkID) (*acl.TrunkPolicy, bool)
	// Allows reports whether src is inside an enabled entry of the trunk's ACL.
	Allows(id acl.TrunkID, src netip.Addr) bool
	// Listed reports whether src is inside an enabled entry of any ACL a trunk names:
	// a known PBX, never banned and exempt from the per-source rate limit. It is asked
	// per datagram, before parsing, so it must be cheap and allocate nothing.
	Listed(src netip.Addr) bool
}

// decision is the one outcome of judging an out-of-dialog INVITE: the policy's
// [acl.Decision] plus what the SIP layer itself decided (malformed, hops, caps). Its
// verdict picks the SIP response, the security log line and the metric label.
type decision struct {
	acl.Decision
	reason  string // reason phrase of a 400, or of a 403 in the security log
	code    int    // a SIP answer other than the verdict's own (482, 416); 0: the verdict's
	capKind string // cap_exceeded by a trunk cap: "cps" or "concurrent"
}

func (d *decision) trunkID() acl.TrunkID {
	if d.Trunk == nil {
		return ""
	}
	return d.Trunk.ID
}

// decide judges one out-of-dialog INVITE from src against pol: first what only the SIP
// layer can see (malformed → 400, unsupported URI scheme → 416, a loop through this edge →
// 482, Max-Forwards 0 → 483, no policy yet → 503), then the policy's one decision
// ([acl.Snapshot.Decide], DESIGN.md §4). An accepted digest answer is recorded in the
// authenticator's nonce-count cache (atomically, so a replay cannot race it).
func (s *Server) decide(pol Policy, src netip.AddrPort, req *sipmsg.Request) decision {
	if s.looped(req) {
		d := decision{reason: "Loop Detected", code: sipmsg.StatusLoopDetected}
		d.Verdict = acl.VerdictLoop
		return d
	}
	return decide(pol, src, req, s.auth, s.cfg.DigestAlgorithms)
}

// decide is Server.decide without the loop check (which needs the server's addresses).
func decide(pol Policy, src netip.AddrPort, req *sipmsg.Request, auth *authenticator, defaultAlgs []string) decision {
	if code, reason := screenRequest(req); code != 0 {
		d := decision{reason: reason, code: code}
		d.Verdict = acl.VerdictMalformed
		return d
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return decision{Decision: acl.Decision{Verdict: acl.VerdictTooManyHops}}
	}
	if isNilPolicy(pol) {
		return decision{Decision: acl.Decision{Verdict: acl.VerdictNotReady}}
	}
	d := decision{Decision: pol.Decide(acl.Call{Host: req.Recipient.Host, Source: src.Addr(), Message: req}, auth, defaultAlgs)}
	switch {
	case d.Verdict == acl.VerdictMalformed:
		d.reason = "Bad Proxy-Authorization"
	case d.Unbound:
		d.reason = "credential takes no single trunk's calls"
	}
	return d
}

// usable reports whether calls from a PBX may use the trunk: it is enabled and relays
// outbound (PBX → edge → upstream); an unset direction counts as outbound.
func usable(t *acl.TrunkPolicy) bool { return t.TakesCalls() }

// isNilPolicy reports "no snapshot yet": a nil interface, or a nil *acl.Snapshot wrapped
// in one (what `func() Policy { return holder.Load() }` returns before the first load).
func isNilPolicy(p Policy) bool {
	if p == nil {
		return true
	}
	s, ok := p.(*acl.Snapshot)
	return ok && s == nil
}

// statusUnsupportedURIScheme is RFC 3261 §21.4.14's 416 (sipgo names no constant).
const statusUnsupportedURIScheme = 416

// screen is what the edge refuses in any request before judging or routing it: a request
// it must not relay (400, or 416 for a Request-URI scheme other than sip/sips), a Date
// not in GMT (400, RFC 3261 §20.17) and a request that already passed this edge (482,
// §16.3 step 4: the edge never routes a request back through itself, so a spiral is a
// loop too). It returns 0 when the request may go on.
func (s *Server) screen(req *sipmsg.Request) (int, string) {
	if code, reason := screenRequest(req); code != 0 {
		return code, reason
	}
	if s.looped(req) {
		return sipmsg.StatusLoopDetected, "Loop Detected"
	}
	return 0, ""
}

// screenRequest is screen without the loop check.
func screenRequest(req *sipmsg.Request) (int, string) {
	if reason := validateRequest(req); reason != "" {
		if reason == reasonURIScheme {
			return statusUnsupportedURIScheme, reason
		}
		return sipmsg.StatusBadRequest, reason
	}
	if reason := checkDate(req); reason != "" {
		return sipmsg.StatusBadRequest, reason
	}
	return 0, ""
}

// checkDate refuses a Date header that is not an RFC 1123 date in GMT.
func checkDate(req *sipmsg.Request) string {
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "Date") {
			continue
		}
		v := strings.TrimSpace(h.Value())
		if !strings.HasSuffix(v, " GMT") {
			return "Date Not In GMT"
		}
		if _, err := time.Parse(time.RFC1123, v); err != nil {
			return "Bad Date"
		}
	}
	return ""
}

// looped reports whether any Via of req carries this edge's own sent-by.
func (s *Server) looped(req *sipmsg.Request) bool {
	for _, h := range req.Headers() {
		v, ok := h.(*sipmsg.ViaHeader)
		if !ok {
			continue
		}
		u := sipmsg.Uri{Host: v.Host, Port: v.Port}
		if s.adv.isOurs(&u) {
			return true
		}
		// The listen address too, when it is a specific one (a wildcard's local
		// addresses are not named in Vias we write).
		if ip, err := netip.ParseAddr(strings.Trim(v.Host, "[]")); err == nil && !s.addr.Addr().IsUnspecified() &&
			ip.Unmap() == s.addr.Addr() && cmpPort(v.Port) == int(s.addr.Port()) {
			return true
		}
	}
	return false
}

// cmpPort is a URI/Via port for comparison: absent means 5060.
func cmpPort(p int) int {
	if p == 0 {
		return 5060
	}
	return p
}

const reasonURIScheme = "Unsupported URI Scheme"

// validateRequest returns the reason phrase of a 400 for a request the edge must not
// relay, or "" when it is well-formed enough (RFC 3261 §8.2, §16.3). sipgo itself already
// refuses requests without Via or CSeq and drops unparsable ones.
func validateRequest(req *sipmsg.Request) string {
	if req.SipVersion != "SIP/2.0" {
		return "Unsupported SIP Version"
	}
	if req.Recipient.Scheme != "sip" && req.Recipient.Scheme != "sips" {
		return reasonURIScheme
	}
	if req.Recipient.Host == "" {
		return "Missing Request-URI Host"
	}
	if len(req.Recipient.Headers) > 0 { // RFC 4475 escruri: a proxy must never forward them
		return "Headers in Request-URI"
	}
	var via, from, to, callID, cseq, maxFwd, clen int
	for _, h := range req.Headers() {
		switch h.(type) {
		case *sipmsg.ViaHeader:
			via++
		case *sipmsg.FromHeader:
			from++
		case *sipmsg.ToHeader:
			to++
		case *sipmsg.CallIDHeader:
			callID++
		case *sipmsg.CSeqHeader:
			cseq++
		case *sipmsg.MaxForwardsHeader:
			maxFwd++
		case *sipmsg.ContentLengthHeader:
			clen++
		}
	}
	switch {
	case via == 0:
		return "Missing Via"
	case from != 1:
		return "Missing or Repeated From"
	case to != 1:
		return "Missing or Repeated To"
	case callID != 1:
		return "Missing or Repeated Call-ID"
	case cseq != 1:
		return "Missing or Repeated CSeq"
	case maxFwd != 1:
		return "Missing or Repeated Max-Forwards"
	case clen > 1: // RFC 4475 mcl01: the body length is unknowable
		return "Repeated Content-Length"
	}
	if cs := req.CSeq(); cs.MethodName != req.Method {
		return "CSeq Method Mismatch"
	}
	if req.IsInvite() {
		if tag, _ := req.From().Params.Get("tag"); tag == "" {
			return "Missing From Tag"
		}
	}
	if v := req.Via(); v == nil || v.Host == "" || v.ProtocolName != "SIP" || v.ProtocolVersion != "2.0" || v.Transport == "" {
		return "Bad Via"
	}
	// sipgo keeps an unparsable name-addr as a scheme-less raw string and writes it back
	// as "sip:<raw>", which the next hop cannot parse: refuse, do not relay garbage.
	if !goodAddress(&req.From().Address) {
		return "Bad From"
	}
	if !goodAddress(&req.To().Address) {
		return "Bad To"
	}
	return ""
}

// goodAddress reports whether a From/To URI was parsed into something that is written
// back as it came: a sip(s) URI with a host, or another scheme (tel:, urn:).
func goodAddress(u *sipmsg.Uri) bool {
	switch u.Scheme {
	case "":
		return false
	case "sip", "sips":
		return u.Host != ""
	}
	return true
}
