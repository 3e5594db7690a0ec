package acl

import (
	"net/netip"
	"slices"
)

// DigestResult is the outcome of checking the Proxy-Authorization of one request. Its
// String is a stable label (metrics, logs).
type DigestResult uint8

// The digest results.
const (
	DigestNone        DigestResult = iota // no Proxy-Authorization for our realm
	DigestOK                              // right answer to a fresh nonce, nonce-count not used before
	DigestStale                           // right answer, nonce expired
	DigestFailed                          // wrong answer, or unknown user (indistinguishable)
	DigestBadNonce                        // nonce not ours (forged, other source IP, other key/realm)
	DigestReplay                          // nonce-count already used (in this cluster)
	DigestMalformed                       // unparsable header or a mandatory parameter missing
	DigestUnsupported                     // other realm, algorithm not offered, qop other than auth, userhash
	DigestWrongURI                        // the answer's uri is not the Request-URI (RFC 7616 §3.4.6)
)

var digestResultNames = [...]string{
	DigestNone: "none", DigestOK: "ok", DigestStale: "stale", DigestFailed: "failed",
	DigestBadNonce: "bad_nonce", DigestReplay: "replay", DigestMalformed: "malformed",
	DigestUnsupported: "unsupported", DigestWrongURI: "wrong_uri",
}

// String returns the stable snake_case name, "unknown" outside the defined set.
func (r DigestResult) String() string {
	if int(r) < len(digestResultNames) {
		return digestResultNames[r]
	}
	return "unknown"
}

// DigestAnswer is what a [DigestVerifier] found in a request.
type DigestAnswer struct {
	Result     DigestResult
	User       string      // the username the header named ("" = none), for logs
	Credential *Credential // the credential proved (DigestOK, DigestStale), else nil
	Algorithm  string      // the answer's algorithm (DigestMD5 or DigestSHA256)
}

// DigestVerifier checks the Proxy-Authorization of the request a [Call] carries. The SIP
// layer implements it; [Snapshot.Decide] asks it only when the source alone does not
// decide, so it costs nothing for IP-allowed calls.
type DigestVerifier interface {
	// VerifyDigest checks msg's credentials for an answer in one of algs: against fixed
	// when it is not nil (the trunk's credential), else against the credential the header
	// names, looked up with lookup.
	VerifyDigest(msg any, src netip.Addr, fixed *Credential, algs []string, lookup CredentialLookup) DigestAnswer
}

// CredentialLookup finds a credential by username. *Snapshot implements it.
type CredentialLookup interface {
	Credential(username string) (*Credential, bool)
}

// Call is what the decision needs of one out-of-dialog INVITE.
type Call struct {
	Host   string     // Request-URI host
	Source netip.Addr // socket source (unmapped here; zones ignored)
	// Message is handed, untouched, to the DigestVerifier (the SIP request); nil when
	// there is none (Explain).
	Message any
}

// Decision is the one outcome of judging an out-of-dialog INVITE ([Snapshot.Decide]).
type Decision struct {
	Verdict Verdict
	// Trunk is the call's trunk (nil: none found). For a digest-only call it is the
	// credential's one call-taking trunk.
	Trunk *TrunkPolicy
	// BySource reports that the trunk was found by the source address (no trunk_domain
	// named it).
	BySource bool
	// Entry names the ACL entry that let the source in (VerdictAllowIP), from the same
	// table walk that decided it: the hit counter's key.
	EntryACL, EntryID string
	// Credential is the credential that authenticated (VerdictAllowDigest).
	Credential *Credential
	Digest     DigestResult
	User       string   // username named in Proxy-Authorization, for logs
	Algorithms []string // challenge order for a 407
	// Unbound reports a right digest answer for a credential that takes no one trunk's
	// calls (attached to none, or to several): a security event, answered 403.
	Unbound bool
	Version uint64 // snapshot version judged against (0: none)
}

// Decide judges one out-of-dialog INVITE, as DESIGN.md §4 says. It is the only place the
// verdict is made: the SIP path calls it with the request, Explain with no message and
// no verifier ("no Proxy-Authorization").
//
//  1. no snapshot → not ready;
//  2. trunk = the trunk whose domain is the Request-URI host, else the single enabled
//     trunk whose ACL holds the source (trunks on shared ACLs are found by domain only);
//  3. a trunk that does not take calls → 403; source in its ACL → allow (ip);
//  4. a trunk without credential → 403; otherwise a valid Proxy-Authorization for its
//     credential → allow (digest). With no trunk, the credential the answer proves
//     decides only through its one call-taking trunk; else 403 (Unbound). The trunk's
//     digest_algorithms hold however it was found;
//  5. else 407 (stale for a right answer to an expired nonce).
//
// It allocates nothing and takes no lock; the verifier may.
func (s *Snapshot) Decide(c Call, v DigestVerifier, defaultAlgs []string) Decision {
	if s == nil {
		return Decision{Verdict: VerdictNotReady}
	}
	d := Decision{Algorithms: defaultAlgs, Version: s.version}
	src := c.Source.Unmap().WithZone("")

	ti, found := s.trunkByDomain(c.Host)
	var at *prefixVal // the table value in effect at src, once looked up
	looked := false
	if !found && s.table != nil {
		var t int32
		t, at = s.sourceTrunk(src)
		looked = true
		if t >= 0 {
			ti, found, d.BySource = t, true, true
		}
	}
	var fixed *Credential
	if found {
		t := s.trunks[ti]
		d.Trunk = t
		if !t.TakesCalls() {
			d.Verdict = VerdictTrunkDisabled
			return d
		}
		if t.HasACL {
			if !looked && s.table != nil {
				_, at = s.flat.find(s.table, src)
			}
			if at != nil && (d.BySource || holdsIndex(at.trunks, ti)) {
				d.Verdict = VerdictAllowIP
				d.EntryACL, d.EntryID = s.entryAt(t, at, src)
				return d
			}
		}
		if t.Credential == nil {
			d.Verdict = VerdictNoCredential
			return d
		}
		if len(t.DigestAlgorithms) > 0 {
			d.Algorithms = t.DigestAlgorithms
		}
		fixed = t.Credential
	}
	if v == nil {
		d.Verdict = VerdictChallenge
		return d
	}
	ans := v.VerifyDigest(c.Message, src, fixed, d.Algorithms, s)
	d.Digest, d.User = ans.Result, ans.User
	switch ans.Result {
	case DigestOK:
		if d.Trunk == nil {
			t, _ := s.CredentialTrunk(ans.Credential.UUID)
			switch {
			case t == nil:
				d.Verdict, d.Unbound = VerdictNoCredential, true
				return d
			case !t.TakesCalls():
				d.Trunk, d.Verdict = t, VerdictTrunkDisabled
				return d
			}
			d.Trunk = t
			if len(t.DigestAlgorithms) > 0 && !slices.Contains(t.DigestAlgorithms, ans.Algorithm) {
				// The trunk found through the credential refuses this algorithm: ask
				// again in the trunk's own.
				d.Verdict, d.Algorithms = VerdictChallenge, t.DigestAlgorithms
				return d
			}
		}
		d.Verdict, d.Credential = VerdictAllowDigest, ans.Credential
	case DigestStale:
		d.Verdict = VerdictStale
	case DigestFailed:
		d.Verdict = VerdictAuthFailed
	case DigestMalformed:
		d.Verdict = VerdictMalformed
	default: // none, bad nonce, replay, unsupported, wrong uri: ask again
		d.Verdict = VerdictChallenge
	}
	return d
}

// trunkByDomain is TrunkByDomain by trunk index.
func (s *Snapshot) trunkByDomain(host string) (int32, bool) {
	id, ok := s.TrunkByDomain(host)
	if !ok {
		return -1, false
	}
	return s.byID[id], true
}

// entryAt names the most specific enabled entry of t's ACL holding src, given the table
// value in effect at src. In the common case that value's own prefix is an entry of t's
// ACL and no further walk is needed.
func (s *Snapshot) entryAt(t *TrunkPolicy, at *prefixVal, src netip.Addr) (aclUUID, entryID string) {
	if _, owned := slices.BinarySearch(at.owners, t.ACLUUID); owned {
		if ai, ok := findACL(s.acls, t.ACLUUID); ok {
			st := s.acls[ai]
			if i, ok := slices.BinarySearchFunc(st.prefixes, at.prefix, comparePrefix); ok {
				return st.uuid, st.entryIDs[i]
			}
		}
	}
	if st, i, ok := s.matchedPrefix(t.ACLUUID, src); ok {
		return st.uuid, st.entryIDs[i]
	}
	return "", ""
}

// holdsIndex reports whether the sorted set of trunk indices holds i.
func holdsIndex(set []int32, i int32) bool {
	_, ok := slices.BinarySearch(set, i)
	return ok
}
