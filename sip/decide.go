package sip

import (
	"net/netip"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// Policy is the read-only trunk policy one SIP request is judged against. *acl.Snapshot
// satisfies it. The SIP layer loads it once per request (see [New]), so the ACL check and
// the digest check of one INVITE read the same version.
type Policy interface {
	Version() uint64
	// TrunkByDomain finds the trunk whose trunk_domain equals host (case-insensitive).
	TrunkByDomain(host string) (acl.TrunkID, bool)
	// MatchSource finds the single enabled trunk whose ACL holds src.
	MatchSource(src netip.Addr) (acl.TrunkID, bool)
	Trunk(id acl.TrunkID) (*acl.TrunkPolicy, bool)
	// Allows reports whether src is inside an enabled entry of the trunk's ACL.
	Allows(id acl.TrunkID, src netip.Addr) bool
	// Credential finds a credential by username.
	Credential(username string) (*acl.Credential, bool)
	// CredentialTrunk returns the trunk an INVITE authenticated by credential uuid alone
	// belongs to (see acl.Snapshot.CredentialTrunk), and how many trunks use it.
	CredentialTrunk(uuid string) (*acl.TrunkPolicy, int)
	// Listed reports whether src is inside an enabled entry of any ACL a trunk names:
	// a known PBX, never banned and exempt from the per-source rate limit. It is asked
	// per datagram, before parsing, so it must be cheap and allocate nothing.
	Listed(src netip.Addr) bool
}

// decision is the one outcome of judging an out-of-dialog INVITE. Its verdict picks the
// SIP response, the security log line and the metric label.
type decision struct {
	verdict acl.Verdict
	trunk   *acl.TrunkPolicy // nil: no trunk was found
	cred    *acl.Credential  // the credential that authenticated (allow_digest)
	user    string           // username the Proxy-Authorization named, for the log
	algs    []string         // challenge order for a 407
	reason  string           // reason phrase of a 400
	digest  digestResult
	version uint64 // policy version judged against (0: none)
	capKind string // cap_exceeded by a trunk cap: "cps" or "concurrent"
}

func (d *decision) trunkID() acl.TrunkID {
	if d.trunk == nil {
		return ""
	}
	return d.trunk.ID
}

// decide judges one out-of-dialog INVITE from src against pol, as DESIGN.md §4 says:
//
//  1. malformed → 400; Max-Forwards 0 → 483; no policy yet → 503;
//  2. trunk = the trunk whose domain is the Request-URI host, else the single enabled
//     trunk whose ACL holds src;
//  3. disabled (or inbound-only) trunk → 403; src in the trunk's ACL → allow (ip);
//  4. a trunk without a credential → 403; otherwise a valid Proxy-Authorization for the
//     trunk's credential (or, with no trunk, for the credential it names) → allow (digest).
//     With no trunk, the trunk using that credential becomes the call's trunk (its
//     upstream, caps and metrics), 403 when none using it takes calls; a credential no
//     trunk uses, or several trunks that take calls share, relays to the default upstream;
//  5. else 407 with fresh challenges (stale=true for a right answer to an expired nonce);
//     a wrong answer and an unknown user get the very same fresh challenges.
//
// It reads nothing but its arguments, except that an accepted digest answer is recorded
// in the authenticator's nonce-count cache (atomically, so a replay cannot race it).
func decide(pol Policy, src netip.AddrPort, req *sipmsg.Request, auth *authenticator, defaultAlgs []string) decision {
	if reason := validateRequest(req); reason != "" {
		return decision{verdict: acl.VerdictMalformed, reason: reason}
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return decision{verdict: acl.VerdictTooManyHops}
	}
	if isNilPolicy(pol) {
		return decision{verdict: acl.VerdictNotReady}
	}
	addr := src.Addr().Unmap()

	var trunk *acl.TrunkPolicy
	id, ok := pol.TrunkByDomain(req.Recipient.Host)
	bySource := false // MatchSource's answer already means "src is in an enabled entry of its ACL"
	if !ok {
		id, ok = pol.MatchSource(addr)
		bySource = ok
	}
	if ok {
		trunk, _ = pol.Trunk(id)
	}

	d := decision{trunk: trunk, algs: defaultAlgs, version: pol.Version()}
	creds := credentialSource{policy: pol}
	if trunk != nil {
		if !usable(trunk) {
			d.verdict = acl.VerdictTrunkDisabled
			return d
		}
		if trunk.HasACL && (bySource || pol.Allows(trunk.ID, addr)) { // one table walk either way
			d.verdict = acl.VerdictAllowIP
			return d
		}
		if trunk.Credential == nil {
			d.verdict = acl.VerdictNoCredential
			return d
		}
		if algs := canonicalAlgorithms(trunk.DigestAlgorithms); len(algs) > 0 {
			d.algs = algs
		}
		creds = credentialSource{fixed: trunk.Credential}
	}

	d.digest, d.user, d.cred = auth.verify(req, addr, d.algs, creds)
	switch d.digest {
	case digestOK:
		d.verdict = acl.VerdictAllowDigest
		if trunk == nil && d.cred != nil {
			if t, _ := pol.CredentialTrunk(d.cred.UUID); t != nil {
				d.trunk = t
				if !usable(t) { // its PBX must not get around the disabled trunk
					d.verdict = acl.VerdictTrunkDisabled
					d.cred = nil
				}
			}
		}
	case digestStale:
		d.verdict = acl.VerdictStale
		d.cred = nil
	case digestFailed:
		d.verdict = acl.VerdictAuthFailed
	case digestMalformed:
		d.verdict = acl.VerdictMalformed
		d.reason = "Bad Proxy-Authorization"
	default: // none, bad nonce, replay, unsupported: ask again
		d.verdict = acl.VerdictChallenge
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

// validateRequest returns the reason phrase of a 400 for a request the edge must not
// relay, or "" when it is well-formed enough (RFC 3261 §8.2, §16.3). sipgo itself already
// refuses requests without Via or CSeq and drops unparsable ones.
func validateRequest(req *sipmsg.Request) string {
	if req.SipVersion != "SIP/2.0" {
		return "Unsupported SIP Version"
	}
	if req.Recipient.Scheme != "sip" && req.Recipient.Scheme != "sips" {
		return "Unsupported URI Scheme"
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
