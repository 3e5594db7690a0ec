package control

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// timeFormat is ISO 8601 UTC with seconds, as Plivo and Vobiz show timestamps.
const timeFormat = "2006-01-02T15:04:05Z"

func stamp(t time.Time) string { return t.UTC().Format(timeFormat) }
func nowUTC() time.Time        { return time.Now().UTC() }

// clock is the time written into created_at/updated_at.
func (s *Server) clock() time.Time { return s.now().UTC() }

// aclObject is an IP access control list as the API shows it.
type aclObject struct {
	APIID       string        `json:"api_id,omitempty"`
	IPACLUUID   string        `json:"ipacl_uuid"`
	Name        string        `json:"name"`
	IPAddresses []string      `json:"ip_addresses"`
	Entries     []entryObject `json:"entries"`
	// Shared is read-only (set by the admin): the trunks naming the ACL are found by
	// their domain only, never by source.
	Shared    bool   `json:"shared"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

// entryObject is one entry (the Vobiz object).
type entryObject struct {
	APIID       string `json:"api_id,omitempty"`
	ID          string `json:"id"`
	IPAddress   string `json:"ip_address"`
	Description string `json:"description"`
	Enabled     bool   `json:"enabled"`
	CreatedAt   string `json:"created_at"`
	UpdatedAt   string `json:"updated_at"`
	// HitCount and LastMatchedAt come from WithHits (see explain.go); 0 and null without.
	HitCount      uint64  `json:"hit_count"`
	LastMatchedAt *string `json:"last_matched_at"`
}

func toACLObject(a *acl.IPACL) aclObject {
	o := aclObject{
		IPACLUUID:   a.UUID,
		Name:        a.Name,
		IPAddresses: a.IPAddresses(),
		Entries:     make([]entryObject, 0, len(a.Entries)),
		Shared:      a.Shared,
		CreatedAt:   stamp(a.CreatedAt),
		UpdatedAt:   stamp(a.UpdatedAt),
	}
	for _, e := range a.Entries {
		o.Entries = append(o.Entries, toEntryObject(e))
	}
	return o
}

func toEntryObject(e acl.Entry) entryObject {
	return entryObject{ID: e.ID, IPAddress: e.IPAddress, Description: e.Description, Enabled: e.Enabled,
		CreatedAt: stamp(e.CreatedAt), UpdatedAt: stamp(e.UpdatedAt)}
}

// aclRequest is the body of create and update.
type aclRequest struct {
	Name        *string  `json:"name"`
	IPAddresses []string `json:"ip_addresses"`
}

// ipAddresses validates a whole ip_addresses list (422 naming every bad value).
func ipAddresses(in []string) (canon, warnings []string, err error) {
	if in == nil {
		return nil, nil, invalid("ip_addresses is required: give at least one IPv4/IPv6 address or CIDR block")
	}
	if len(in) == 0 {
		return nil, nil, invalid("ip_addresses must not be empty: an IP access control list never means allow all")
	}
	if len(in) > maxEntries {
		return nil, nil, invalid("ip_addresses: more than %d addresses", maxEntries)
	}
	return acl.CanonicalAddresses("ip_addresses", in)
}

func (c *call) aclsPath() string {
	return "/v1/Account/" + url.PathEscape(c.account) + "/Zentrunk/IPAccessControlList/"
}

// notFoundACL maps store.ErrNotFound of an ACL lookup to a 404 naming the uuid.
func notFoundACL(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("IP access control list %q not found", id)
	}
	return err
}

func (s *Server) listACLs(c *call) error {
	return listStored(c, c.aclsPath(), s.st.ListACLs, func(a *acl.IPACL) aclObject {
		o := toACLObject(a)
		c.addHits(a.UUID, o.Entries)
		return o
	})
}

func (s *Server) createACL(c *call) error {
	var req aclRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	name, err := requiredText("name", req.Name, maxNameLen)
	if err != nil {
		return err
	}
	canon, warnings, err := ipAddresses(req.IPAddresses)
	if err != nil {
		return err
	}
	now := s.clock()
	a := acl.IPACL{UUID: uuid.NewString(), Account: c.account, Name: name, CreatedAt: now, UpdatedAt: now}
	for _, addr := range canon {
		a.Entries = append(a.Entries, acl.Entry{ID: uuid.NewString(), IPAddress: addr, Enabled: true, CreatedAt: now, UpdatedAt: now})
	}
	ans := c.expect(http.StatusCreated, "IP access control list created", "ipacl_uuid", a.UUID)
	ans.warnings = warnings
	v, err := s.st.CreateACL(c.r.Context(), a, c.opts...)
	if err != nil {
		return err
	}
	return c.reply(ans, v)
}

func (s *Server) getACL(c *call) error {
	id := c.r.PathValue("ipacl_uuid")
	a, err := s.st.GetACL(c.r.Context(), c.account, id)
	if err != nil {
		return notFoundACL(err, id)
	}
	o := toACLObject(&a)
	c.addHits(a.UUID, o.Entries)
	o.APIID = c.apiID
	c.etag(store.ETag(a))
	c.writeJSON(http.StatusOK, o)
	return nil
}

// updateACL replaces the name and/or the whole address list (Plivo semantics). Entries
// whose canonical address stays keep their id, description, enabled and created_at.
func (s *Server) updateACL(c *call) error {
	id := c.r.PathValue("ipacl_uuid")
	var req aclRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Name == nil && req.IPAddresses == nil {
		return invalid("nothing to update: give name and/or ip_addresses")
	}
	var name string
	var canon, warnings []string
	var err error
	if req.Name != nil {
		if name, err = text("name", *req.Name, maxNameLen, true); err != nil {
			return err
		}
	}
	if req.IPAddresses != nil {
		if canon, warnings, err = ipAddresses(req.IPAddresses); err != nil {
			return err
		}
	}
	ans := c.expect(http.StatusAccepted, "IP access control list updated", "ipacl_uuid", id)
	ans.warnings = warnings
	_, v, err := s.st.UpdateACL(c.r.Context(), c.account, id, func(a *acl.IPACL) error {
		now := s.clock()
		if req.Name != nil {
			a.Name = name
		}
		if canon != nil {
			old := make(map[string]acl.Entry, len(a.Entries))
			for _, e := range a.Entries {
				old[e.IPAddress] = e
			}
			entries := make([]acl.Entry, 0, len(canon))
			for _, addr := range canon {
				e, kept := old[addr]
				if !kept {
					e = acl.Entry{ID: uuid.NewString(), IPAddress: addr, Enabled: true, CreatedAt: now, UpdatedAt: now}
				}
				entries = append(entries, e)
			}
			a.Entries = entries
		}
		a.UpdatedAt = now
		return nil
	}, c.opts...)
	if err != nil {
		return notFoundACL(err, id)
	}
	return c.reply(ans, v)
}

func (s *Server) deleteACL(c *call) error {
	id := c.r.PathValue("ipacl_uuid")
	v, err := s.st.DeleteACL(c.r.Context(), c.account, id, c.opts...)
	if err != nil {
		return notFoundACL(err, id)
	}
	return c.noContent(v)
}

// ---- entries (Vobiz) ----

// entryRequest is the body of entry add and update.
type entryRequest struct {
	IPAddress   *string `json:"ip_address"`
	Description *string `json:"description"`
	Enabled     *bool   `json:"enabled"`
}

func findEntry(a *acl.IPACL, id string) int {
	for i := range a.Entries {
		if a.Entries[i].ID == id {
			return i
		}
	}
	return -1
}

func entryNotFound(aclID, id string) error {
	return notFound("entry %q not found in IP access control list %q", id, aclID)
}

// duplicateEntry is the 409 for an address already listed by another entry.
func duplicateEntry(a *acl.IPACL, addr, except string) error {
	for _, e := range a.Entries {
		if e.IPAddress == addr && e.ID != except {
			return conflict("ip_address %q is already in IP access control list %s (entry %s)", addr, a.UUID, e.ID)
		}
	}
	return nil
}

func (s *Server) listEntries(c *call) error {
	id := c.r.PathValue("ipacl_uuid")
	p, err := c.page()
	if err != nil {
		return err
	}
	a, err := s.st.GetACL(c.r.Context(), c.account, id)
	if err != nil {
		return notFoundACL(err, id)
	}
	var out []entryObject
	for _, e := range window(a.Entries, p) {
		out = append(out, toEntryObject(e))
	}
	c.addHits(id, out)
	return list(c, c.aclsPath()+url.PathEscape(id)+"/Entry/", p, len(a.Entries), out)
}

func (s *Server) getEntry(c *call) error {
	aclID, id := c.r.PathValue("ipacl_uuid"), c.r.PathValue("entry_id")
	a, err := s.st.GetACL(c.r.Context(), c.account, aclID)
	if err != nil {
		return notFoundACL(err, aclID)
	}
	i := findEntry(&a, id)
	if i < 0 {
		return entryNotFound(aclID, id)
	}
	one := []entryObject{toEntryObject(a.Entries[i])}
	c.addHits(aclID, one)
	o := one[0]
	o.APIID = c.apiID
	c.etag(store.ETag(a.Entries[i]))
	c.writeJSON(http.StatusOK, o)
	return nil
}

// entryFields validates the optional fields of an entry request.
func entryFields(req *entryRequest) (addr, desc string, err error) {
	if req.IPAddress != nil {
		if addr, err = prefix("ip_address", *req.IPAddress); err != nil {
			return "", "", err
		}
	}
	if req.Description != nil {
		if desc, err = text("description", *req.Description, maxDescriptionLen, false); err != nil {
			return "", "", err
		}
	}
	return addr, desc, nil
}

// addEntry adds one entry (enabled unless "enabled": false) in one store update, so
// concurrent adds to the same list never lose each other.
func (s *Server) addEntry(c *call) error {
	aclID := c.r.PathValue("ipacl_uuid")
	var req entryRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.IPAddress == nil {
		return invalid("ip_address is required")
	}
	addr, desc, err := entryFields(&req)
	if err != nil {
		return err
	}
	enabled := req.Enabled == nil || *req.Enabled
	id := uuid.NewString()
	ans := c.expect(http.StatusCreated, "IP access control list entry created", "id", id)
	_, v, err := s.st.UpdateACL(c.r.Context(), c.account, aclID, func(a *acl.IPACL) error {
		if err := duplicateEntry(a, addr, ""); err != nil {
			return err
		}
		if len(a.Entries) >= maxEntries {
			return conflict("IP access control list %s already has %d entries", a.UUID, maxEntries)
		}
		now := s.clock()
		a.Entries = append(a.Entries, acl.Entry{ID: id, IPAddress: addr, Description: desc, Enabled: enabled, CreatedAt: now, UpdatedAt: now})
		a.UpdatedAt = now
		w, err := acl.ValidateACL(a)
		ans.warnings = w
		return err
	}, c.writeOpts(store.ForEntry(id))...) // the entry's own If-Match and audit entry
	if err != nil {
		return notFoundACL(err, aclID)
	}
	return c.reply(ans, v)
}

// updateEntry changes description, enabled and/or ip_address of one entry. A disabled
// entry stays stored and listed but matches nothing.
func (s *Server) updateEntry(c *call) error {
	aclID, id := c.r.PathValue("ipacl_uuid"), c.r.PathValue("entry_id")
	var req entryRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.IPAddress == nil && req.Description == nil && req.Enabled == nil {
		return invalid("nothing to update: give description, enabled and/or ip_address")
	}
	addr, desc, err := entryFields(&req)
	if err != nil {
		return err
	}
	ans := c.expect(http.StatusAccepted, "IP access control list entry updated", "id", id)
	_, v, err := s.st.UpdateACL(c.r.Context(), c.account, aclID, func(a *acl.IPACL) error {
		i := findEntry(a, id)
		if i < 0 {
			return entryNotFound(aclID, id)
		}
		now := s.clock()
		e := &a.Entries[i]
		if req.IPAddress != nil {
			if err := duplicateEntry(a, addr, id); err != nil {
				return err
			}
			e.IPAddress = addr
		}
		if req.Description != nil {
			e.Description = desc
		}
		if req.Enabled != nil {
			e.Enabled = *req.Enabled
		}
		e.UpdatedAt, a.UpdatedAt = now, now
		w, err := acl.ValidateACL(a)
		ans.warnings = w
		return err
	}, c.writeOpts(store.ForEntry(id))...) // the entry's own If-Match and audit entry
	if err != nil {
		return notFoundACL(err, aclID)
	}
	return c.reply(ans, v)
}

func (s *Server) deleteEntry(c *call) error {
	aclID, id := c.r.PathValue("ipacl_uuid"), c.r.PathValue("entry_id")
	_, v, err := s.st.UpdateACL(c.r.Context(), c.account, aclID, func(a *acl.IPACL) error {
		i := findEntry(a, id)
		if i < 0 {
			return entryNotFound(aclID, id)
		}
		a.Entries = append(a.Entries[:i:i], a.Entries[i+1:]...)
		a.UpdatedAt = s.clock()
		return nil
	}, c.writeOpts(store.ForEntry(id))...) // the entry's own If-Match and audit entry
	if err != nil {
		return notFoundACL(err, aclID)
	}
	return c.noContent(v)
}
