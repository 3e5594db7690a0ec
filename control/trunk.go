package control

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/google/uuid"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// trunkObject is a trunk as the API shows it. Unset references are null.
type trunkObject struct {
	APIID            string   `json:"api_id,omitempty"`
	TrunkID          string   `json:"trunk_id"`
	Name             string   `json:"name"`
	TrunkDirection   string   `json:"trunk_direction"`
	TrunkStatus      string   `json:"trunk_status"`
	TrunkDomain      string   `json:"trunk_domain"`
	IPACLUUID        *string  `json:"ipacl_uuid"`
	CredentialUUID   *string  `json:"credential_uuid"`
	UpstreamURI      *string  `json:"upstream_uri"`
	DigestAlgorithms []string `json:"digest_algorithms"` // null: the deployment default order
	MaxCPS           int      `json:"max_cps"`
	MaxConcurrent    int      `json:"max_concurrent"`
	CreatedAt        string   `json:"created_at"`
	UpdatedAt        string   `json:"updated_at"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toTrunkObject(t *acl.Trunk) trunkObject {
	return trunkObject{
		TrunkID:          string(t.ID),
		Name:             t.Name,
		TrunkDirection:   t.Direction,
		TrunkStatus:      t.Status,
		TrunkDomain:      t.Domain,
		IPACLUUID:        nullable(t.ACLUUID),
		CredentialUUID:   nullable(t.CredentialUUID),
		UpstreamURI:      nullable(t.UpstreamURI),
		DigestAlgorithms: t.DigestAlgorithms,
		MaxCPS:           t.MaxCPS,
		MaxConcurrent:    t.MaxConcurrent,
		CreatedAt:        stamp(t.CreatedAt),
		UpdatedAt:        stamp(t.UpdatedAt),
	}
}

// trunkRequest is the body of create and update. On update, "" for ipacl_uuid,
// credential_uuid or upstream_uri detaches it, "" for trunk_domain restores the default
// and [] for digest_algorithms restores the deployment default.
type trunkRequest struct {
	Name             *string  `json:"name"`
	TrunkDirection   *string  `json:"trunk_direction"`
	TrunkStatus      *string  `json:"trunk_status"`
	TrunkDomain      *string  `json:"trunk_domain"`
	IPACLUUID        *string  `json:"ipacl_uuid"`
	CredentialUUID   *string  `json:"credential_uuid"`
	UpstreamURI      *string  `json:"upstream_uri"`
	DigestAlgorithms []string `json:"digest_algorithms"`
	MaxCPS           *int     `json:"max_cps"`
	MaxConcurrent    *int     `json:"max_concurrent"`
}

// trunkChange is a validated trunkRequest, applied to a stored (or new) trunk by apply.
type trunkChange struct {
	name, dir, status, dom, upstream, aclRef, credRef string
	algs                                              []string
	maxCPS, maxConc                                   int

	setName, setDir, setStatus, setDom, setACL bool
	setCred, setUp, setAlgs, setCPS, setConc   bool
}

// trunkChange validates every given field (422 naming field, value and reason).
func (s *Server) trunkChange(req *trunkRequest) (*trunkChange, error) {
	ch := &trunkChange{}
	var err error
	if req.Name != nil {
		if ch.name, err = text("name", *req.Name, maxNameLen, true); err != nil {
			return nil, err
		}
		ch.setName = true
	}
	if req.TrunkDirection != nil {
		switch *req.TrunkDirection {
		case acl.DirectionOutbound, acl.DirectionInbound:
			ch.dir, ch.setDir = *req.TrunkDirection, true
		default:
			return nil, invalid("trunk_direction %q: must be %q or %q", *req.TrunkDirection, acl.DirectionOutbound, acl.DirectionInbound)
		}
	}
	if req.TrunkStatus != nil {
		switch *req.TrunkStatus {
		case acl.TrunkEnabled, acl.TrunkDisabled:
			ch.status, ch.setStatus = *req.TrunkStatus, true
		default:
			return nil, invalid("trunk_status %q: must be %q or %q", *req.TrunkStatus, acl.TrunkEnabled, acl.TrunkDisabled)
		}
	}
	if req.TrunkDomain != nil {
		ch.setDom = true
		if *req.TrunkDomain != "" {
			if ch.dom, err = domain(*req.TrunkDomain); err != nil {
				return nil, err
			}
		}
	}
	if req.IPACLUUID != nil {
		ch.aclRef, ch.setACL = *req.IPACLUUID, true
	}
	if req.CredentialUUID != nil {
		ch.credRef, ch.setCred = *req.CredentialUUID, true
	}
	if req.UpstreamURI != nil {
		ch.setUp = true
		if *req.UpstreamURI != "" {
			if ch.upstream, err = upstreamURI(*req.UpstreamURI); err != nil {
				return nil, err
			}
		}
	}
	if req.DigestAlgorithms != nil {
		if ch.algs, err = digestAlgorithms(req.DigestAlgorithms); err != nil {
			return nil, err
		}
		ch.setAlgs = true
	}
	if req.MaxCPS != nil {
		if ch.maxCPS, err = count("max_cps", *req.MaxCPS); err != nil {
			return nil, err
		}
		ch.setCPS = true
	}
	if req.MaxConcurrent != nil {
		if ch.maxConc, err = count("max_concurrent", *req.MaxConcurrent); err != nil {
			return nil, err
		}
		ch.setConc = true
	}
	return ch, nil
}

// empty reports whether the request named no field.
func (ch *trunkChange) empty() bool {
	return !(ch.setName || ch.setDir || ch.setStatus || ch.setDom || ch.setACL || ch.setCred ||
		ch.setUp || ch.setAlgs || ch.setCPS || ch.setConc)
}

// defaultDomain is "<trunk_id>.<SIPDomain>".
func (s *Server) defaultDomain(id acl.TrunkID) (string, error) {
	if s.cfg.SIPDomain == "" {
		return "", invalid("trunk_domain is required: this deployment has no SIP domain for default trunk domains")
	}
	return string(id) + "." + s.cfg.SIPDomain, nil
}

// apply writes the change into t.
func (s *Server) apply(ch *trunkChange, t *acl.Trunk) error {
	if ch.setName {
		t.Name = ch.name
	}
	if ch.setDir {
		t.Direction = ch.dir
	}
	if ch.setStatus {
		t.Status = ch.status
	}
	if ch.setDom {
		t.Domain = ch.dom
		if t.Domain == "" {
			d, err := s.defaultDomain(t.ID)
			if err != nil {
				return err
			}
			t.Domain = d
		}
	}
	if ch.setACL {
		t.ACLUUID = ch.aclRef
	}
	if ch.setCred {
		t.CredentialUUID = ch.credRef
	}
	if ch.setUp {
		t.UpstreamURI = ch.upstream
	}
	if ch.setAlgs {
		t.DigestAlgorithms = ch.algs
	}
	if ch.setCPS {
		t.MaxCPS = ch.maxCPS
	}
	if ch.setConc {
		t.MaxConcurrent = ch.maxConc
	}
	return nil
}

// checkRefs turns references to unknown objects into a 422 naming them. The store checks
// them again inside its transaction; this lookup only makes the message precise.
func (s *Server) checkRefs(ctx context.Context, account string, ch *trunkChange) error {
	if ch.aclRef != "" {
		if _, err := s.st.GetACL(ctx, account, ch.aclRef); errors.Is(err, store.ErrNotFound) {
			return invalid("ipacl_uuid %q: no such IP access control list in this account", ch.aclRef)
		} else if err != nil {
			return err
		}
	}
	if ch.credRef != "" {
		if _, err := s.st.GetCredential(ctx, account, ch.credRef); errors.Is(err, store.ErrNotFound) {
			return invalid("credential_uuid %q: no such credential in this account", ch.credRef)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// checkTenancy holds a trunk change to the account's rules (see tenancy.go): its domain
// and its upstream.
func (s *Server) checkTenancy(c *call, ch *trunkChange) error {
	a := c.acct
	if a == nil {
		a = &acl.Account{AuthID: c.account}
	}
	if ch.setDom && ch.dom != "" {
		if err := s.checkTrunkDomain(a, ch.dom); err != nil {
			return err
		}
	}
	if ch.setUp && ch.upstream != "" {
		return s.checkUpstream(c.r.Context(), a, ch.upstream)
	}
	return nil
}

// trunkWriteError maps store errors of a trunk write to precise client messages. dom is
// the domain the write set, "" when it left the domain alone.
func trunkWriteError(err error, id acl.TrunkID, dom string) error {
	var inUse *store.InUseError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("trunk %q not found", id)
	case errors.Is(err, store.ErrInvalidRef):
		return invalid("ipacl_uuid or credential_uuid names an object that does not exist in this account")
	case errors.Is(err, store.ErrConflict) && !errors.As(err, &inUse) && dom != "":
		return conflict("trunk_domain is not available (trunk domains are unique across the deployment): choose another")
	}
	return err
}

// trunkWarnings are the notes a client should see about a stored trunk.
func trunkWarnings(t *acl.Trunk) []string {
	var w []string
	if t.ACLUUID == "" && t.CredentialUUID == "" {
		w = append(w, "trunk has neither ipacl_uuid nor credential_uuid: it accepts no call")
	}
	if t.Direction == acl.DirectionInbound {
		w = append(w, "only outbound trunks are relayed: this inbound trunk is stored but carries no call")
	}
	return w
}

func (s *Server) listTrunks(c *call) error {
	return listStored(c, "/v1/Account/"+url.PathEscape(c.account)+"/Zentrunk/Trunk/", s.st.ListTrunks, toTrunkObject)
}

func (s *Server) createTrunk(c *call) error {
	var req trunkRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if _, err := requiredText("name", req.Name, maxNameLen); err != nil {
		return err
	}
	ch, err := s.trunkChange(&req)
	if err != nil {
		return err
	}
	now := s.clock()
	t := acl.Trunk{
		ID:        acl.TrunkID(uuid.NewString()),
		Account:   c.account,
		Direction: acl.DirectionOutbound,
		Status:    acl.TrunkEnabled,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if err := s.checkTenancy(c, ch); err != nil {
		return err
	}
	ch.setDom = true // "" → the default domain
	if err := s.apply(ch, &t); err != nil {
		return err
	}
	if err := s.checkRefs(c.r.Context(), c.account, ch); err != nil {
		return err
	}
	ans := c.expect(http.StatusCreated, "Trunk created", "trunk_id", string(t.ID))
	ans.warnings = trunkWarnings(&t)
	v, err := s.st.CreateTrunk(c.r.Context(), t, c.opts...)
	if err != nil {
		return trunkWriteError(err, t.ID, t.Domain)
	}
	return c.reply(ans, v)
}

func (s *Server) getTrunk(c *call) error {
	id := acl.TrunkID(c.r.PathValue("trunk_id"))
	t, err := s.st.GetTrunk(c.r.Context(), c.account, id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("trunk %q not found", id)
	}
	if err != nil {
		return err
	}
	o := toTrunkObject(&t)
	o.APIID = c.apiID
	c.etag(store.ETag(t))
	c.writeJSON(http.StatusOK, o)
	return nil
}

func (s *Server) updateTrunk(c *call) error {
	id := acl.TrunkID(c.r.PathValue("trunk_id"))
	var req trunkRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	ch, err := s.trunkChange(&req)
	if err != nil {
		return err
	}
	if ch.empty() {
		return invalid("nothing to update: give at least one trunk field")
	}
	if err := s.checkTenancy(c, ch); err != nil {
		return err
	}
	if err := s.checkRefs(c.r.Context(), c.account, ch); err != nil {
		return err
	}
	var dom string
	ans := c.expect(http.StatusAccepted, "Trunk updated", "trunk_id", string(id))
	_, v, err := s.st.UpdateTrunk(c.r.Context(), c.account, id, func(t *acl.Trunk) error {
		if err := s.apply(ch, t); err != nil {
			return err
		}
		t.UpdatedAt = s.clock()
		if ch.setDom {
			dom = t.Domain
		}
		ans.warnings = trunkWarnings(t)
		return nil
	}, c.opts...)
	if err != nil {
		return trunkWriteError(err, id, dom)
	}
	return c.reply(ans, v)
}

func (s *Server) deleteTrunk(c *call) error {
	id := acl.TrunkID(c.r.PathValue("trunk_id"))
	v, err := s.st.DeleteTrunk(c.r.Context(), c.account, id, c.opts...)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("trunk %q not found", id)
	}
	if err != nil {
		return err
	}
	return c.noContent(v)
}
