package control

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"

	"github.com/google/uuid"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// credentialObject is a credential as the API shows it. The password is write-only: it
// is kept only as HA1s, which are never shown either.
type credentialObject struct {
	APIID          string `json:"api_id,omitempty"`
	CredentialUUID string `json:"credential_uuid"`
	Name           string `json:"name"`
	Username       string `json:"username"`
	Realm          string `json:"realm"`
	CreatedAt      string `json:"created_at"`
	UpdatedAt      string `json:"updated_at"`
}

func toCredentialObject(c *acl.Credential) credentialObject {
	return credentialObject{CredentialUUID: c.UUID, Name: c.Name, Username: c.Username, Realm: c.Realm,
		CreatedAt: stamp(c.CreatedAt), UpdatedAt: stamp(c.UpdatedAt)}
}

// credentialRequest is the body of create and update.
type credentialRequest struct {
	Name     *string `json:"name"`
	Username *string `json:"username"`
	Password *string `json:"password"`
}

// setPassword stores the HA1s of user:realm:password for MD5 and SHA-256 (hex), and the
// realm they are valid for.
func setPassword(c *acl.Credential, realm, password string) {
	a1 := c.Username + ":" + realm + ":" + password
	m := md5.Sum([]byte(a1))
	s := sha256.Sum256([]byte(a1))
	c.Realm, c.HA1MD5, c.HA1SHA256 = realm, hex.EncodeToString(m[:]), hex.EncodeToString(s[:])
}

func notFoundCredential(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("credential %q not found", id)
	}
	return err
}

// takenUsername maps a store conflict on a credential write to a 409 that names nothing
// another account uses.
func takenUsername(err error, user string) error {
	var inUse *store.InUseError
	if errors.Is(err, store.ErrConflict) && !errors.As(err, &inUse) && user != "" {
		return conflict("username is not available (usernames are unique across the deployment): choose another")
	}
	return err
}

func (s *Server) listCredentials(c *call) error {
	return listStored(c, "/v1/Account/"+url.PathEscape(c.account)+"/Zentrunk/Credential/", s.st.ListCredentials, toCredentialObject)
}

func (s *Server) createCredential(c *call) error {
	var req credentialRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	name, err := requiredText("name", req.Name, maxNameLen)
	if err != nil {
		return err
	}
	if req.Username == nil {
		return invalid("username is required")
	}
	user, err := username(*req.Username)
	if err != nil {
		return err
	}
	if req.Password == nil {
		return invalid("password is required")
	}
	if err := password(*req.Password); err != nil {
		return err
	}
	now := s.clock()
	cr := acl.Credential{UUID: uuid.NewString(), Account: c.account, Name: name, Username: user, CreatedAt: now, UpdatedAt: now}
	setPassword(&cr, s.realm, *req.Password)
	ans := c.expect(http.StatusCreated, "Credential created", "credential_uuid", cr.UUID)
	v, err := s.st.CreateCredential(c.r.Context(), cr, c.opts...)
	if err != nil {
		return takenUsername(err, user)
	}
	return c.reply(ans, v)
}

func (s *Server) getCredential(c *call) error {
	id := c.r.PathValue("credential_uuid")
	cr, err := s.st.GetCredential(c.r.Context(), c.account, id)
	if err != nil {
		return notFoundCredential(err, id)
	}
	o := toCredentialObject(&cr)
	o.APIID = c.apiID
	c.etag(store.ETag(cr))
	c.writeJSON(http.StatusOK, o)
	return nil
}

// updateCredential changes name, username and/or password. The HA1s cover the username,
// so a new username needs the password too; a new password is hashed over the current
// realm.
func (s *Server) updateCredential(c *call) error {
	id := c.r.PathValue("credential_uuid")
	var req credentialRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Name == nil && req.Username == nil && req.Password == nil {
		return invalid("nothing to update: give name, username and/or password")
	}
	var name, user string
	var err error
	if req.Name != nil {
		if name, err = text("name", *req.Name, maxNameLen, true); err != nil {
			return err
		}
	}
	if req.Username != nil {
		if user, err = username(*req.Username); err != nil {
			return err
		}
	}
	if req.Password != nil {
		if err := password(*req.Password); err != nil {
			return err
		}
	}
	ans := c.expect(http.StatusAccepted, "Credential updated", "credential_uuid", id)
	_, v, err := s.st.UpdateCredential(c.r.Context(), c.account, id, func(cr *acl.Credential) error {
		if req.Username != nil && user != cr.Username && req.Password == nil {
			return invalid("changing username needs password too: the stored digests cover the username")
		}
		if req.Name != nil {
			cr.Name = name
		}
		if req.Username != nil {
			cr.Username = user
		}
		if req.Password != nil {
			setPassword(cr, s.realm, *req.Password)
		}
		cr.UpdatedAt = s.clock()
		return nil
	}, c.opts...)
	if err != nil {
		return takenUsername(notFoundCredential(err, id), user)
	}
	return c.reply(ans, v)
}

func (s *Server) deleteCredential(c *call) error {
	id := c.r.PathValue("credential_uuid")
	v, err := s.st.DeleteCredential(c.r.Context(), c.account, id, c.opts...)
	if err != nil {
		return notFoundCredential(err, id)
	}
	return c.noContent(v)
}
