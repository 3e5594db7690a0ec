package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// Explainable decisions and per-entry hit counts (issue 8, part 4).

// WithSnapshot gives the API the snapshot this node's SIP path judges INVITEs against,
// for POST …/Trunk/{trunk_id}/Explain/. load is called once per request and returns nil
// until the first snapshot is loaded (then Explain answers 503); cmd passes
// holder.Load. Without the option Explain answers 503 as well.
func WithSnapshot(load func() *acl.Snapshot) Option {
	return func(s *Server) { s.snapshot = load }
}

// HitCounts reads the per-entry hit totals the store aggregates from every node's
// recorder (see package hits).
type HitCounts interface {
	// Hits returns the totals of the entries of one ACL that were ever hit, by entry
	// id; entries never hit may be absent.
	Hits(ctx context.Context, account, aclUUID string) (map[string]acl.HitStat, error)
}

// WithHits makes entry objects (GET entry, entry lists, the entries of ACL objects) show
// hit_count and last_matched_at from h. Without it they show 0 and null.
func WithHits(h HitCounts) Option {
	return func(s *Server) { s.hits = h }
}

// explainRequest is the body of Explain.
type explainRequest struct {
	SourceIP *string `json:"source_ip"`
	Username *string `json:"username"`
}

// explainBody is the answer of Explain.
type explainBody struct {
	APIID     string `json:"api_id"`
	TrunkID   string `json:"trunk_id"`
	SourceIP  string `json:"source_ip"`
	Verdict   string `json:"verdict"`
	SIPAnswer string `json:"sip_response"`
	Reason    string `json:"reason"`
	// MatchedEntry is the most specific enabled entry of the trunk's ACL holding the
	// source (null: none), whatever the verdict.
	MatchedEntry       *matchedEntry `json:"matched_entry"`
	DigestRequired     bool          `json:"digest_required"`
	CredentialUsername *string       `json:"credential_username"`
	// Username and UsernameMatches echo the optional username of the request: whether
	// the trunk's credential has it, i.e. whether a right digest answer with it would
	// be allowed (else the answer is 403 auth_failed).
	Username        *string `json:"username,omitempty"`
	UsernameMatches *bool   `json:"username_matches,omitempty"`
	// SourceTrunks are the caller's enabled trunks whose ACLs accept the source.
	SourceTrunks    []string `json:"source_trunks"`
	SnapshotVersion uint64   `json:"snapshot_version"`
}

type matchedEntry struct {
	IPACLUUID string `json:"ipacl_uuid"`
	ID        string `json:"id"`
	IPAddress string `json:"ip_address"`
}

// sipAnswers is what the SIP path answers per verdict Explain can give.
var sipAnswers = map[acl.Verdict]string{
	acl.VerdictNone:          "none: the INVITE does not reach this trunk",
	acl.VerdictAllowIP:       "relayed upstream",
	acl.VerdictChallenge:     "407 Proxy Authentication Required",
	acl.VerdictNoCredential:  "403 Forbidden",
	acl.VerdictTrunkDisabled: "403 Forbidden",
}

// explain answers the verdict this node's live snapshot gives an INVITE to the trunk from
// source_ip without credentials, and why, without sending any SIP.
func (s *Server) explain(c *call) error {
	id := acl.TrunkID(c.r.PathValue("trunk_id"))
	var req explainRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	src, err := sourceIP(req.SourceIP)
	if err != nil {
		return err
	}
	var user string
	if req.Username != nil {
		if user, err = username(*req.Username); err != nil {
			return err
		}
	}
	ctx := c.r.Context()
	_, err = s.st.GetTrunk(ctx, c.account, id) // owner check, as on every trunk route
	if errors.Is(err, store.ErrNotFound) {
		return notFound("trunk %q not found", id)
	}
	if err != nil {
		return err
	}
	var snap *acl.Snapshot
	if s.snapshot != nil {
		snap = s.snapshot()
	}
	if snap == nil {
		return &apiError{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"1"}},
			msg: "not ready: this node has no policy snapshot loaded yet, retry later"}
	}
	e := snap.Explain(id, src)
	if e.TrunkFound && e.Account != c.account {
		return notFound("trunk %q not found", id) // cannot happen: trunk ids are uuids
	}

	out := explainBody{
		APIID:           c.apiID,
		TrunkID:         string(id),
		SourceIP:        src.String(),
		Verdict:         e.Verdict.String(),
		SIPAnswer:       sipAnswers[e.Verdict],
		Reason:          e.Reason,
		DigestRequired:  e.DigestRequired(),
		SourceTrunks:    []string{},
		SnapshotVersion: e.Version,
	}
	if !e.TrunkFound {
		out.Reason += "; it was probably written after this node's snapshot: retry once the write's X-Sipedge-Version is served (GET /v1/Cluster/Version/{version}/)"
	}
	if e.Matched {
		out.MatchedEntry = &matchedEntry{IPACLUUID: e.MatchedEntry.ACLUUID, ID: e.MatchedEntry.EntryID, IPAddress: e.MatchedEntry.IPAddress}
	} else if hint := s.disabledEntryHint(ctx, c.account, e.ACLUUID, src); hint != "" {
		out.Reason += "; " + hint
	}
	if e.CredentialUsername != "" {
		out.CredentialUsername = &e.CredentialUsername
	}
	if req.Username != nil {
		ok := e.HasCredential && user == e.CredentialUsername
		out.Username, out.UsernameMatches = &user, &ok
		switch {
		case ok && e.Verdict == acl.VerdictChallenge:
			out.Reason += fmt.Sprintf("; a right digest answer for %q would be allowed (allow_digest)", user)
		case !ok && e.Verdict == acl.VerdictChallenge:
			out.Reason += fmt.Sprintf("; %q is not the trunk's credential: a digest answer with it gets 403 (auth_failed)", user)
		}
	}
	for _, t := range e.CandidateTrunks {
		if p, ok := snap.Trunk(t); ok && p.Account == c.account {
			out.SourceTrunks = append(out.SourceTrunks, string(t))
		}
	}
	c.writeJSON(http.StatusOK, out)
	return nil
}

// sourceIP validates source_ip: one IPv4 or IPv6 address (IPv4-mapped IPv6 is unmapped,
// as the SIP path does with sockets).
func sourceIP(v *string) (netip.Addr, error) {
	if v == nil {
		return netip.Addr{}, invalid("source_ip is required: the address the INVITE would come from")
	}
	s := strings.TrimSpace(*v)
	a, err := netip.ParseAddr(s)
	switch {
	case err == nil && a.Zone() != "":
		return netip.Addr{}, invalid("source_ip %q: zones are not allowed", *v)
	case err == nil:
		return a.Unmap(), nil
	case strings.Contains(s, "/"):
		return netip.Addr{}, invalid("source_ip %q: give one address, not a CIDR block", *v)
	}
	return netip.Addr{}, invalid("source_ip %q: not an IPv4 or IPv6 address", *v)
}

// disabledEntryHint names a disabled entry of the ACL that holds src, which is the usual
// reason an operator expected an allow. Best effort: "" when the ACL cannot be read.
func (s *Server) disabledEntryHint(ctx context.Context, account, aclUUID string, src netip.Addr) string {
	if aclUUID == "" {
		return ""
	}
	a, err := s.st.GetACL(ctx, account, aclUUID)
	if err != nil {
		return ""
	}
	for _, e := range a.Entries {
		if p, err := acl.ParsePrefix(e.IPAddress); err == nil && !e.Enabled && p.Contains(src) {
			return fmt.Sprintf("entry %s (%s) holds %s but is disabled", e.ID, e.IPAddress, src)
		}
	}
	return ""
}

// addHits fills hit_count and last_matched_at of the entries of one ACL. Hit counts
// are secondary: when they cannot be read the entries show 0/null, the response says so
// in X-Sipedge-Hits: unavailable, and the failure is logged.
func (c *call) addHits(aclUUID string, es []entryObject) {
	if c.s.hits == nil || len(es) == 0 {
		return
	}
	hs, err := c.s.hits.Hits(c.r.Context(), c.account, aclUUID)
	if err != nil {
		c.w.Header().Set("X-Sipedge-Hits", "unavailable")
		c.s.log.Warn().Err(err).Str("api_id", c.apiID).Str("ipacl_uuid", aclUUID).Msg("entry hit counts unavailable")
		return
	}
	for i := range es {
		h, ok := hs[es[i].ID]
		if !ok {
			continue
		}
		es[i].HitCount = h.Count
		if !h.LastMatchedAt.IsZero() {
			at := stamp(h.LastMatchedAt)
			es[i].LastMatchedAt = &at
		}
	}
}
