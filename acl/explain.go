package acl

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// EntryRef names one entry of one IP ACL.
type EntryRef struct {
	ACLUUID   string
	EntryID   string
	IPAddress string // canonical, as [CanonicalString] writes it
}

// Explanation says what the SIP path would answer an out-of-dialog INVITE addressed to one
// trunk (its trunk_domain as Request-URI host) from one source without Proxy-Authorization,
// and why. [Snapshot.Explain] builds it; it is a value the caller owns.
type Explanation struct {
	Trunk   TrunkID
	Source  netip.Addr // unmapped, zone dropped
	Version uint64     // snapshot version judged against (0: no snapshot)

	TrunkFound    bool   // the trunk is in the snapshot
	Account       string // the trunk's account ("" when not found)
	TrunkEnabled  bool   // trunk_status is enabled
	Outbound      bool   // the trunk relays PBX → edge → upstream (inbound-only trunks refuse INVITEs)
	ACLUUID       string // the ipacl_uuid the trunk names ("" = none)
	HasACL        bool   // that ACL exists and is valid
	HasCredential bool   // the trunk has a usable credential
	// CredentialUsername is the username of the trunk's credential ("" = none). Passwords
	// and HA1s are never part of an explanation.
	CredentialUsername string

	// Matched reports that Source is inside an enabled entry of the trunk's ACL;
	// MatchedEntry is then the most specific such entry.
	Matched      bool
	MatchedEntry EntryRef

	// SourceTrunk is what [Snapshot.MatchSource] answers for Source ("" = none or several);
	// CandidateTrunks are all enabled trunks accepting Source, of every account, sorted
	// ([Snapshot.AcceptingTrunks]).
	SourceTrunk     TrunkID
	CandidateTrunks []TrunkID

	// Verdict is the decision of the SIP path for the INVITE (VerdictNone when the
	// INVITE cannot reach this trunk at all); Reason says why, in one sentence.
	Verdict Verdict
	Reason  string
}

// DigestRequired reports whether the INVITE is answered with a digest challenge (407).
func (e *Explanation) DigestRequired() bool { return e.Verdict == VerdictChallenge }

// Explain answers, without sending anything, the verdict the SIP path gives an
// out-of-dialog INVITE for trunk id from src that carries no Proxy-Authorization, and
// why (DESIGN.md §4). It mirrors the decision: a nil snapshot is not ready; a trunk that
// is disabled or inbound-only refuses; a source inside an enabled entry of the trunk's
// ACL is allowed by IP; otherwise a trunk without credential refuses and one with a
// credential challenges. A trunk without trunk_domain is reachable only by source
// ([Snapshot.MatchSource]). It is the slow path: it allocates and may be called with
// any address (invalid ones match nothing).
func (s *Snapshot) Explain(id TrunkID, src netip.Addr) Explanation {
	src = src.Unmap().WithZone("")
	e := Explanation{Trunk: id, Source: src, Version: s.Version()}
	if s == nil {
		e.Verdict = VerdictNotReady
		e.Reason = "no snapshot is loaded yet: every INVITE is answered 503 until the first one is"
		return e
	}
	e.SourceTrunk, _ = s.MatchSource(src)
	e.CandidateTrunks = s.AcceptingTrunks(src, nil)

	t, ok := s.Trunk(id)
	if !ok {
		e.Verdict = VerdictNone
		e.Reason = fmt.Sprintf("trunk %s is not in snapshot version %d: an INVITE for it is judged as if the trunk did not exist", id, e.Version)
		return e
	}
	e.TrunkFound = true
	e.Account = t.Account
	e.TrunkEnabled = t.Enabled
	e.Outbound = t.outbound()
	e.ACLUUID = t.ACLUUID
	e.HasACL = t.HasACL
	if t.Credential != nil {
		e.HasCredential = true
		e.CredentialUsername = t.Credential.Username
	}
	d := s.Decide(Call{Host: t.Domain, Source: src}, nil, nil)
	if d.Verdict == VerdictAllowIP && d.Trunk == t {
		e.Matched = true
		e.MatchedEntry = EntryRef{ACLUUID: d.EntryACL, EntryID: d.EntryID}
		if ref, ok := s.matchedEntry(t, src); ok && ref.EntryID == d.EntryID {
			e.MatchedEntry.IPAddress = ref.IPAddress
		}
	} else if t.HasACL {
		// Informative only (the verdict does not rest on it): the entry that would let
		// src in were the trunk enabled and reachable.
		if ref, ok := s.matchedEntry(t, src); ok {
			e.Matched = true
			e.MatchedEntry = ref
		}
	}
	if d.Trunk != t {
		e.Verdict = VerdictNone
		e.Reason = fmt.Sprintf("trunk %s has no trunk_domain, so only sources its ACL alone accepts reach it, and %s is not one", id, addrString(src))
		return e
	}
	e.Verdict = d.Verdict
	switch {
	case d.Verdict == VerdictTrunkDisabled && !e.TrunkEnabled:
		e.Reason = fmt.Sprintf("trunk %s is disabled: every INVITE to it is refused (403)", id)
	case d.Verdict == VerdictTrunkDisabled:
		e.Reason = fmt.Sprintf("trunk %s is %s only: INVITEs from PBXs are refused (403)", id, t.Direction)
	case d.Verdict == VerdictAllowIP:
		e.Reason = fmt.Sprintf("%s is inside entry %s (%s) of IP ACL %s: allowed by IP, no digest asked",
			addrString(src), e.MatchedEntry.EntryID, e.MatchedEntry.IPAddress, e.MatchedEntry.ACLUUID)
	case d.Verdict == VerdictChallenge:
		e.Reason = s.noMatchReason(t, src) + fmt.Sprintf(": digest required, answered 407 for credential %q", e.CredentialUsername)
	default:
		e.Reason = s.noMatchReason(t, src) + ", and the trunk has no credential: refused (403)"
	}
	return e
}

// noMatchReason says why src is not allowed by IP on t (which has a usable status).
func (s *Snapshot) noMatchReason(t *TrunkPolicy, src netip.Addr) string {
	switch {
	case t.ACLUUID == "":
		return fmt.Sprintf("trunk %s has no IP ACL", t.ID)
	case !t.HasACL:
		return fmt.Sprintf("IP ACL %s of trunk %s is missing or invalid in this snapshot, so it accepts no IP", t.ACLUUID, t.ID)
	}
	return fmt.Sprintf("%s is in no enabled entry of IP ACL %s", addrString(src), t.ACLUUID)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "the invalid address"
	}
	return a.String()
}

// MatchedEntry returns the most specific enabled entry of trunk id's IP ACL that holds
// src: the entry an INVITE allowed by IP for that trunk is counted against. It answers
// whether the trunk is enabled or not, and false when the trunk, its ACL or such an entry
// does not exist. Like the other queries it is nil-safe, takes no lock and allocates
// nothing; it costs a few trie lookups and two binary searches, so call it only for
// requests already allowed, not per packet.
func (s *Snapshot) MatchedEntry(id TrunkID, src netip.Addr) (aclUUID, entryID string, ok bool) {
	if s == nil || s.table == nil {
		return "", "", false
	}
	i, found := s.byID[id]
	if !found || !s.trunks[i].HasACL {
		return "", "", false
	}
	st, p, ok := s.matchedPrefix(s.trunks[i].ACLUUID, src.Unmap())
	if !ok {
		return "", "", false
	}
	return st.uuid, st.entryIDs[p], true
}

// matchedEntry is MatchedEntry with the canonical address, for slow paths.
func (s *Snapshot) matchedEntry(t *TrunkPolicy, src netip.Addr) (EntryRef, bool) {
	if s.table == nil {
		return EntryRef{}, false
	}
	st, i, ok := s.matchedPrefix(t.ACLUUID, src)
	if !ok {
		return EntryRef{}, false
	}
	return EntryRef{ACLUUID: st.uuid, EntryID: st.entryIDs[i], IPAddress: CanonicalString(st.prefixes[i])}, true
}

// matchedPrefix finds the ACL uuid and the index in its prefixes of the most specific
// enabled entry holding src. It walks the covering prefixes of the table from the longest
// match outwards until one is owned by uuid.
func (s *Snapshot) matchedPrefix(uuid string, src netip.Addr) (*aclState, int, bool) {
	if !src.IsValid() || uuid == "" {
		return nil, 0, false
	}
	src = src.WithZone("")
	q := netip.PrefixFrom(src, src.BitLen())
	for {
		lpm, v, ok := s.table.LookupPrefixLPM(q)
		if !ok {
			return nil, 0, false
		}
		if _, owned := slices.BinarySearch(v.owners, uuid); owned {
			ai, found := findACL(s.acls, uuid)
			if !found {
				return nil, 0, false
			}
			st := s.acls[ai]
			i, found := slices.BinarySearchFunc(st.prefixes, lpm, comparePrefix)
			if !found {
				return nil, 0, false
			}
			return st, i, true
		}
		if lpm.Bits() == 0 {
			return nil, 0, false
		}
		q = netip.PrefixFrom(src, lpm.Bits()-1).Masked()
	}
}

// Hit is a number of SIP requests allowed by IP through one ACL entry since the last
// report, as a hit recorder flushes it to the store. Count is a delta: stores add it up
// (across nodes in Redis mode) and keep the latest LastMatchedAt.
type Hit struct {
	Account       string
	ACLUUID       string
	EntryID       string
	Count         uint64
	LastMatchedAt time.Time
}

// HitStat is the total of an entry's hits as the store keeps it. The zero value is "never
// matched" (LastMatchedAt zero).
type HitStat struct {
	Count         uint64
	LastMatchedAt time.Time
}

// Add folds h into st: counts add up, the latest LastMatchedAt wins.
func (st HitStat) Add(h Hit) HitStat {
	st.Count += h.Count
	if h.LastMatchedAt.After(st.LastMatchedAt) {
		st.LastMatchedAt = h.LastMatchedAt
	}
	return st
}
