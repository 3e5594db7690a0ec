package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Audit actions and kinds (the values of [AuditEntry.Action] and [AuditEntry.Kind]).
const (
	AuditCreate = "create"
	AuditUpdate = "update"
	AuditDelete = "delete"

	AuditKindIPACL      = "ipacl"
	AuditKindEntry      = "entry"
	AuditKindCredential = "credential"
	AuditKindTrunk      = "trunk"
	AuditKindAccount    = "account"
)

// AuditEntry records one committed write. Every successful write appends exactly one,
// in the same backend transaction as the write itself, so the log never shows a write
// that did not happen nor misses one that did. Each account keeps its newest entries
// ([WithAuditLimit], default [DefaultAuditLimit]).
type AuditEntry struct {
	ID      string    `json:"id"`      // uuid v4
	Version uint64    `json:"version"` // the data-set version the write committed as
	At      time.Time `json:"at"`      // the store's clock (UTC)
	Account string    `json:"account"` // the account the object belongs to
	// Actor is who wrote: the auth_id of the account's API caller, [ActorAdmin], or
	// [ActorSystem] when the write named nobody (see [Actor]).
	Actor    string `json:"actor"`
	Action   string `json:"action"`    // AuditCreate, AuditUpdate, AuditDelete
	Kind     string `json:"kind"`      // AuditKindIPACL, …
	ObjectID string `json:"object_id"` // the object's id (an entry's id for kind entry)
	// Before and After are the object as stored before and after the write (JSON
	// objects; null for a create's Before and a delete's After); for an update only what
	// changed (see [auditPair]), each bounded by [MaxAuditObjectBytes]. Secrets are left
	// out: a credential's HA1s and an account's token hash are never in the log.
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
	// RequestID is the API request (api_id) the write belongs to, "" when none.
	RequestID string `json:"request_id"`
}

// change is what one write's fn reports for its audit entry (and change notice).
type change struct {
	meta *writeMeta // the write's context values

	action, kind, account, id string
	before, after             any // nil: none

	// tenancy is the change an ACL write makes to the tenancy index (see tenancy.go).
	tenancy *tenancyDelta

	// aclRef is set by UpdateACL: the write changed this ACL of account and nothing else
	// a snapshot holds (so the change notice names it).
	aclRef string
}

func (c *change) record(action, kind, account, id string, before, after any) {
	c.action, c.kind, c.account, c.id, c.before, c.after = action, kind, account, id, before, after
}

// secretFields are the JSON fields of stored objects that never reach the audit log.
var secretFields = map[string][]string{
	AuditKindCredential: {"ha1_md5", "ha1_sha256"},
	AuditKindAccount:    {"token_hash"},
}

// auditJSON is the audit form of one object: its stored JSON without secret fields.
func auditJSON(kind string, obj any) (json.RawMessage, error) {
	if obj == nil {
		return nil, nil
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("store: encode audit %s: %w", kind, err)
	}
	secrets := secretFields[kind]
	if len(secrets) == 0 {
		return raw, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("store: encode audit %s: %w", kind, err)
	}
	for _, f := range secrets {
		delete(m, f)
	}
	return json.Marshal(m)
}

// auditEntry encodes the audit entry of the write c describes, committing as version v.
func (s *Store) auditEntry(c *change, v uint64) ([]byte, error) {
	if c.kind == "" {
		return nil, fmt.Errorf("store: internal error: write without an audit record")
	}
	e := AuditEntry{
		ID: uuid.NewString(), Version: v, At: s.now().UTC(), Account: c.account,
		Actor: c.meta.actor, Action: c.action, Kind: c.kind, ObjectID: c.id, RequestID: c.meta.requestID,
	}
	if e.Actor == "" {
		e.Actor = ActorSystem
	}
	var err error
	if e.Before, e.After, err = auditPair(c.kind, c.before, c.after); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// Audit returns the window p of account's audit log, newest first, and the number of
// entries kept. Another account's entries are never included.
func (s *Store) Audit(ctx context.Context, account string, p Page) ([]AuditEntry, int, error) {
	if err := checkPage(p); err != nil {
		return nil, 0, err
	}
	raws, total, err := s.b.audit(ctx, account, p)
	if err != nil {
		return nil, 0, err
	}
	out := make([]AuditEntry, 0, len(raws))
	for _, raw := range raws {
		var e AuditEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, 0, fmt.Errorf("store: decode audit entry: %w", err)
		}
		out = append(out, e)
	}
	return out, total, nil
}
