package control

import (
	"encoding/json"
	"net/url"

	"github.com/sipedge/sipedge/store"
)

// auditObject is one audit log entry as the API shows it.
type auditObject struct {
	ID        string          `json:"id"`
	Version   uint64          `json:"version"`
	At        string          `json:"at"`
	Account   string          `json:"account"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Kind      string          `json:"kind"`
	ObjectID  string          `json:"object_id"`
	Before    json.RawMessage `json:"before"`
	After     json.RawMessage `json:"after"`
	RequestID *string         `json:"request_id"`
}

func toAuditObject(e *store.AuditEntry) auditObject {
	o := auditObject{ID: e.ID, Version: e.Version, At: stamp(e.At), Account: e.Account, Actor: e.Actor,
		Action: e.Action, Kind: e.Kind, ObjectID: e.ObjectID, Before: e.Before, After: e.After,
		RequestID: nullable(e.RequestID)}
	if len(o.Before) == 0 {
		o.Before = json.RawMessage("null")
	}
	if len(o.After) == 0 {
		o.After = json.RawMessage("null")
	}
	return o
}

// listAudit answers one page of the account's audit log, newest first.
func (s *Server) listAudit(c *call) error {
	p, err := c.page()
	if err != nil {
		return err
	}
	entries, total, err := s.st.Audit(c.r.Context(), c.account, p)
	if err != nil {
		return err
	}
	out := make([]auditObject, 0, len(entries))
	for i := range entries {
		out = append(out, toAuditObject(&entries[i]))
	}
	return list(c, "/v1/Account/"+url.PathEscape(c.account)+"/Zentrunk/AuditLog/", p, total, out)
}
