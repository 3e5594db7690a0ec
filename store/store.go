// Package store keeps the sipedge data set (accounts, IP ACLs, credentials, trunks) and
// hands compiled [acl.Snapshot]s to the data path. One typed API ([Store]) with the
// integrity rules, over two backends: an embedded bbolt file (default) and Redis.
package store

import (
	"context"
	"errors"

	"github.com/sipedge/sipedge/acl"
)

// Sentinel errors; callers branch with errors.Is.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrConflict    = errors.New("store: conflict")          // duplicate id, domain/username taken, object in use, write race lost
	ErrInvalidRef  = errors.New("store: invalid reference") // trunk names an ACL/credential that does not exist in its account
	ErrInvalid     = errors.New("store: invalid object")    // failed acl validation
	ErrUnavailable = errors.New("store: unavailable")       // backend down / timed out

	// ErrPreconditionFailed: the object's current ETag matches none of the If-Match tags
	// of the write's [IfMatch] option; nothing was written.
	ErrPreconditionFailed = errors.New("store: precondition failed")
	// ErrIdempotencyMismatch: the write's idempotency key ([Idempotent]) was used
	// within its TTL by a request with another fingerprint; nothing was written.
	ErrIdempotencyMismatch = errors.New("store: idempotency key reused with a different request")
)

// ReplayError is returned by a write whose idempotency key ([Idempotent]) was used
// by an earlier committed write with the same fingerprint: nothing was written, and
// Response is what the earlier write recorded.
type ReplayError struct {
	Response []byte
}

func (e *ReplayError) Error() string { return "store: idempotent replay of an earlier write" }

// InUseError is returned (wrapping ErrConflict) when deleting an ACL or credential that trunks still use.
type InUseError struct {
	Kind   string // "ipacl" or "credential"
	ID     string
	Trunks []string // trunk_ids that reference it, sorted
}

func (e *InUseError) Error() string { return "store: " + e.Kind + " " + e.ID + " is used by trunks" }
func (e *InUseError) Unwrap() error { return ErrConflict }

// Page selects a window of a list ordered by created_at, then id.
type Page struct{ Offset, Limit int }

// API is the typed surface control uses. *Store implements it.
//
// Every write records an [AuditEntry] in the same transaction; its [WriteOption]s
// ([Actor], [Idempotent], [IfMatch], [ForEntry]) shape that entry and add the write's
// preconditions.
type API interface {
	CreateAccount(ctx context.Context, a acl.Account, opts ...WriteOption) (uint64, error)
	Account(ctx context.Context, authID string) (acl.Account, error)
	Accounts(ctx context.Context) ([]acl.Account, error)
	UpdateAccount(ctx context.Context, authID string, fn func(*acl.Account) error, opts ...WriteOption) (acl.Account, uint64, error)

	ListACLs(ctx context.Context, account string, p Page) ([]acl.IPACL, int, error)
	GetACL(ctx context.Context, account, id string) (acl.IPACL, error)
	CreateACL(ctx context.Context, a acl.IPACL, opts ...WriteOption) (uint64, error)
	UpdateACL(ctx context.Context, account, id string, fn func(*acl.IPACL) error, opts ...WriteOption) (acl.IPACL, uint64, error)
	DeleteACL(ctx context.Context, account, id string, opts ...WriteOption) (uint64, error)

	ListCredentials(ctx context.Context, account string, p Page) ([]acl.Credential, int, error)
	GetCredential(ctx context.Context, account, id string) (acl.Credential, error)
	CreateCredential(ctx context.Context, c acl.Credential, opts ...WriteOption) (uint64, error)
	UpdateCredential(ctx context.Context, account, id string, fn func(*acl.Credential) error, opts ...WriteOption) (acl.Credential, uint64, error)
	DeleteCredential(ctx context.Context, account, id string, opts ...WriteOption) (uint64, error)

	ListTrunks(ctx context.Context, account string, p Page) ([]acl.Trunk, int, error)
	GetTrunk(ctx context.Context, account string, id acl.TrunkID) (acl.Trunk, error)
	CreateTrunk(ctx context.Context, t acl.Trunk, opts ...WriteOption) (uint64, error)
	UpdateTrunk(ctx context.Context, account string, id acl.TrunkID, fn func(*acl.Trunk) error, opts ...WriteOption) (acl.Trunk, uint64, error)
	DeleteTrunk(ctx context.Context, account string, id acl.TrunkID, opts ...WriteOption) (uint64, error)

	Version(ctx context.Context) (uint64, error)
	Head(ctx context.Context) (Head, error)
	Load(ctx context.Context) (*acl.Dataset, error)

	Audit(ctx context.Context, account string, p Page) ([]AuditEntry, int, error)
	IdempotentResponse(ctx context.Context, account, key, fingerprint string) ([]byte, error)
}
