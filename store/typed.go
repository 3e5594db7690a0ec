package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Test hooks: swapped by tests (restored with t.Cleanup), never by production code.
var (
	validateACL = acl.ValidateACL
	compile     = acl.Compile
	withACL     = (*acl.Snapshot).WithACL
)

// Store is the typed sipedge data set over one backend (see [OpenBolt], [OpenRedis]). It
// enforces the integrity rules (account ownership, unique ids, domains and usernames,
// valid references, in-use protection, ACL validity) the same way for every backend, and
// every successful write returns the new data-set version.
//
// Safe for concurrent use. Must not be copied. Use [OpenBolt] or [OpenRedis]; the zero
// value is not usable.
type Store struct {
	_ [0]sync.Mutex

	b          backend
	log        zerolog.Logger
	now        func() time.Time
	resync     time.Duration
	m          *metrics
	auditLimit int           // audit entries kept per account
	idemTTL    time.Duration // lifetime of an idempotency record

	applied atomic.Uint64 // version of the snapshot Watch applied last
	hints   hintLog       // embedded mode: version → the ACL an UpdateACL wrote
	reg     registry      // node registry: lease, heartbeat wake-up, last apply

	good     atomic.Pointer[goodSet]  // the whole data set Watch applied last (restore.go)
	incident atomic.Pointer[Incident] // empty store seen while serving a non-empty data set
	pinned   atomic.Pointer[goodSet]  // the data set from before an incident, until restored

	bansOnce sync.Once
	bans     *Bans // see [Store.Bans]

	tenancy tenancyIndex // every entry by prefix, for the overlap rule (see tenancy.go)
}

var _ API = (*Store)(nil)

func newStore(b backend, o options) (*Store, error) {
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	s := &Store{
		b:          b,
		log:        o.log,
		now:        o.now,
		resync:     o.resync,
		m:          m,
		auditLimit: o.auditLimit,
		idemTTL:    o.idemTTL,
		reg:        newRegistry(o.nodeTTL),
	}
	if err := registerProbeMetrics(o.reg, s.Subscription, func() bool { return s.Incident() != nil }); err != nil {
		return nil, err
	}
	m.setUp(true)
	return s, nil
}

// Close releases the backend. Stop [Store.Watch] first.
func (s *Store) Close() error { return s.b.close() }

// stamp is the time the store records for created_at/updated_at it fills in: UTC, whole
// seconds (the API shows YYYY-MM-DDTHH:mm:ssZ, so what is listed is what is ordered).
func (s *Store) stamp() time.Time { return s.now().UTC().Truncate(time.Second) }

func (s *Store) read(ctx context.Context, fn func(tx) error) error {
	return s.b.view(ctx, func(t tx) error { return fn(&strictTx{t: t}) })
}

// write runs fn in one backend transaction (see [backend.update]) together with what
// every write records: the audit entry fn describes in c, and the idempotency record
// when the context asks for one (checked first: a replay or a mismatch ends the write
// before fn runs). committed, if not nil, runs after the commit and before the change is
// published.
func (s *Store) write(ctx context.Context, opts []WriteOption, fn func(t tx, c *change) error, committed func(v uint64)) (uint64, error) {
	meta := metaOf(opts)
	var c change
	var next uint64
	v, epoch, err := s.b.update(ctx, func(bt tx) error {
		t := &strictTx{t: bt}
		c = change{meta: &meta}
		var err error
		if next, err = t.nextVersion(); err != nil {
			return err
		}
		if meta.idem != nil {
			if err := replayed(t, meta.idem, time.Now()); err != nil {
				return err
			}
		}
		if err := fn(t, &c); err != nil {
			return err
		}
		entry, err := s.auditEntry(&c, next)
		if err != nil {
			return err
		}
		if err := t.appendAudit(c.account, entry, s.auditLimit); err != nil {
			return err
		}
		if meta.idem != nil {
			if err := s.recordIdempotency(t, meta.idem, next); err != nil {
				return err
			}
		}
		if c.aclRef != "" {
			return t.markACLChange(next, c.account, c.aclRef)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if v != next {
		// Cannot happen: the version is read under the write's own lock (bbolt) or WATCH
		// (Redis). Said loudly, since the audit entry names the wrong version.
		s.log.Error().Uint64("version", v).Uint64("audited_version", next).Msg("write committed at an unexpected version")
	}
	s.tenancyCommitted(v, &c)
	if committed != nil {
		committed(v)
	}
	n := notice{version: v, epoch: epoch}
	if c.aclRef != "" {
		n.account, n.acl = c.account, c.aclRef
	}
	if err := s.b.publish(ctx, n); err != nil {
		// The write is committed; watchers catch up on their periodic resync.
		s.log.Warn().Err(err).Uint64("version", v).Msg("change notice not published")
	}
	return v, nil
}

// checkID rejects ids that cannot be keys: empty, too long, control characters or '/'
// (ids are URL path segments in the API).
func checkID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, field)
	case len(id) > 256:
		return fmt.Errorf("%w: %s is longer than 256 bytes", ErrInvalid, field)
	case strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '/' }):
		return fmt.Errorf("%w: %s %q contains a control character or '/'", ErrInvalid, field, id)
	}
	return nil
}

func checkPage(p Page) error {
	if p.Offset < 0 || p.Limit < 0 {
		return fmt.Errorf("%w: negative offset or limit", ErrInvalid)
	}
	return nil
}

func decode[T any](raw []byte, k kind) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("store: decode %s: %w", k, err)
	}
	return v, nil
}

func encode(v any, k kind) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", k, err)
	}
	return raw, nil
}

// getObj reads one object of account; a missing object, or one of another account,
// is ErrNotFound.
func getObj[T any](t tx, k kind, account, id string) (T, error) {
	var zero T
	raw, err := t.get(k, account, id)
	if err != nil {
		return zero, err
	}
	if raw == nil {
		return zero, fmt.Errorf("%w: %s %s", ErrNotFound, k, id)
	}
	return decode[T](raw, k)
}

func listObjs[T any](t tx, k kind, account string) ([]T, error) {
	raws, err := t.list(k, account)
	if err != nil {
		return nil, err
	}
	return decodeAll[T](raws, k)
}

func decodeAll[T any](raws [][]byte, k kind) ([]T, error) {
	out := make([]T, 0, len(raws))
	for _, raw := range raws {
		v, err := decode[T](raw, k)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// order sorts by created_at, then id.
func order[T any](objs []T, key func(*T) (time.Time, string)) {
	slices.SortFunc(objs, func(a, b T) int {
		ta, ia := key(&a)
		tb, ib := key(&b)
		if c := ta.Compare(tb); c != 0 {
			return c
		}
		return cmp.Compare(ia, ib)
	})
}

// window applies p to a sorted list; the result is never nil.
func window[T any](objs []T, p Page) []T {
	if p.Offset >= len(objs) {
		return []T{}
	}
	objs = objs[p.Offset:]
	if p.Limit > 0 && p.Limit < len(objs) {
		objs = objs[:p.Limit]
	}
	return objs
}

func listPage[T any](ctx context.Context, s *Store, k kind, account string, p Page, key func(*T) (time.Time, string)) ([]T, int, error) {
	if err := checkPage(p); err != nil {
		return nil, 0, err
	}
	var all []T
	err := s.read(ctx, func(t tx) error {
		var err error
		all, err = listObjs[T](t, k, account)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	order(all, key)
	return window(all, p), len(all), nil
}

// needAccount fails with ErrNotFound unless the account exists.
func needAccount(t tx, authID string) error {
	raw, err := t.account(authID)
	if err != nil {
		return err
	}
	if raw == nil {
		return fmt.Errorf("%w: account %s", ErrNotFound, authID)
	}
	return nil
}

// idFree fails with ErrConflict when an object of kind k has id in any account.
func idFree(t tx, k kind, id string) error {
	owner, err := t.index(string(k), id)
	if err != nil {
		return err
	}
	if owner != "" {
		return fmt.Errorf("%w: %s %s exists", ErrConflict, k, id)
	}
	return nil
}

// usersOf returns the sorted ids of the trunks of account that ref selects.
func usersOf(t tx, account string, ref func(*acl.Trunk) bool) ([]string, error) {
	trunks, err := listObjs[acl.Trunk](t, kindTrunk, account)
	if err != nil {
		return nil, err
	}
	var ids []string
	for i := range trunks {
		if ref(&trunks[i]) {
			ids = append(ids, string(trunks[i].ID))
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// deleteObj removes an object that is known to exist, with its id index, and records
// whether the data set is now empty.
func deleteObj(t tx, k kind, account, id string) error {
	n, err := t.countAll(2)
	if err != nil {
		return err
	}
	if err := t.del(k, account, id); err != nil {
		return err
	}
	if err := t.delIndex(string(k), id); err != nil {
		return err
	}
	return t.setEmptied(n <= 1)
}

// putNew stores a new object with its id index and clears the emptied marker.
func putNew(t tx, k kind, account, id string, raw []byte) error {
	if err := t.put(k, account, id, raw); err != nil {
		return err
	}
	if err := t.putIndex(string(k), id, account); err != nil {
		return err
	}
	return t.setEmptied(false)
}

// stampUpdate keeps created_at and sets updated_at to now unless fn set it. An update
// always moves updated_at (by a nanosecond if it would stay the same, e.g. two updates
// within one second), so every successful update changes the object's [ETag], even one
// that changed only a credential's HA1s.
func (s *Store) stampUpdate(created, updated *time.Time, oldCreated, oldUpdated time.Time) {
	*created = oldCreated
	if updated.Equal(oldUpdated) {
		*updated = s.stamp()
	}
	if updated.Equal(oldUpdated) {
		*updated = oldUpdated.Add(time.Nanosecond)
	}
}

func (s *Store) stampNew(created, updated *time.Time) {
	if created.IsZero() {
		*created = s.stamp()
	}
	if updated.IsZero() {
		*updated = *created
	}
}

func immutable(k kind, oldID, newID, oldAccount, newAccount string) error {
	if oldID != newID || oldAccount != newAccount {
		return fmt.Errorf("%w: %s %s: the id and account of an object cannot change", ErrInvalid, k, oldID)
	}
	return nil
}

// ---- accounts ----

// CreateAccount stores a new account. An existing auth_id is ErrConflict.
func (s *Store) CreateAccount(ctx context.Context, a acl.Account, opts ...WriteOption) (uint64, error) {
	if err := checkID("auth_id", a.AuthID); err != nil {
		return 0, err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.stamp()
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return 0, fmt.Errorf("store: encode account: %w", err)
	}
	return s.write(ctx, opts, func(t tx, c *change) error {
		old, err := t.account(a.AuthID)
		if err != nil {
			return err
		}
		if old != nil {
			return fmt.Errorf("%w: account %s exists", ErrConflict, a.AuthID)
		}
		c.record(AuditCreate, AuditKindAccount, a.AuthID, a.AuthID, nil, a)
		return t.putAccount(a.AuthID, raw)
	}, nil)
}

// Account returns one account, or ErrNotFound.
func (s *Store) Account(ctx context.Context, authID string) (acl.Account, error) {
	var a acl.Account
	err := s.read(ctx, func(t tx) error {
		raw, err := t.account(authID)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: account %s", ErrNotFound, authID)
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("store: decode account: %w", err)
		}
		return nil
	})
	return a, err
}

// Accounts returns every account, ordered by created_at, then auth_id.
func (s *Store) Accounts(ctx context.Context) ([]acl.Account, error) {
	var out []acl.Account
	err := s.read(ctx, func(t tx) error {
		raws, err := t.accounts()
		if err != nil {
			return err
		}
		out = make([]acl.Account, 0, len(raws))
		for _, raw := range raws {
			var a acl.Account
			if err := json.Unmarshal(raw, &a); err != nil {
				return fmt.Errorf("store: decode account: %w", err)
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	order(out, func(a *acl.Account) (time.Time, string) { return a.CreatedAt, a.AuthID })
	return out, nil
}

// ---- IP ACLs ----

func aclKey(a *acl.IPACL) (time.Time, string) { return a.CreatedAt, a.UUID }

func checkACL(a *acl.IPACL) error {
	if _, err := validateACL(a); err != nil {
		return fmt.Errorf("%w: ipacl %s: %w", ErrInvalid, a.UUID, err)
	}
	return nil
}

// ListACLs returns the window p of account's ACLs (created_at, then id) and their total.
func (s *Store) ListACLs(ctx context.Context, account string, p Page) ([]acl.IPACL, int, error) {
	return listPage(ctx, s, kindACL, account, p, aclKey)
}

// GetACL returns one ACL of account, or ErrNotFound.
func (s *Store) GetACL(ctx context.Context, account, id string) (acl.IPACL, error) {
	var a acl.IPACL
	err := s.read(ctx, func(t tx) error {
		var err error
		a, err = getObj[acl.IPACL](t, kindACL, account, id)
		return err
	})
	return a, err
}

// CreateACL stores a new ACL in a.Account (which must exist). The ACL must pass
// [acl.ValidateACL] (else ErrInvalid); an id in use in any account is ErrConflict.
// Zero timestamps are set to now.
func (s *Store) CreateACL(ctx context.Context, a acl.IPACL, opts ...WriteOption) (uint64, error) {
	if err := checkID("ipacl_uuid", a.UUID); err != nil {
		return 0, err
	}
	if err := checkID("account", a.Account); err != nil {
		return 0, err
	}
	s.stampNew(&a.CreatedAt, &a.UpdatedAt)
	if err := checkACL(&a); err != nil {
		return 0, err
	}
	raw, err := encode(a, kindACL)
	if err != nil {
		return 0, err
	}
	return s.write(ctx, opts, func(t tx, c *change) error {
		if err := needAccount(t, a.Account); err != nil {
			return err
		}
		if err := idFree(t, kindACL, a.UUID); err != nil {
			return err
		}
		if err := s.checkACLTenancy(ctx, t, c, nil, &a); err != nil {
			return err
		}
		c.record(AuditCreate, AuditKindIPACL, a.Account, a.UUID, nil, a)
		return putNew(t, kindACL, a.Account, a.UUID, raw)
	}, nil)
}

// UpdateACL reads the ACL, lets fn change it and writes it back, in one transaction.
// An error from fn aborts the update and is returned unchanged. fn must not change the
// id or account (ErrInvalid); created_at is kept, and updated_at is set to now unless fn
// sets it (and always changes, see [Store.stampUpdate]). fn may run more than once
// (optimistic retries in Redis mode).
//
// With [IfMatch] the ACL's current [ETag] (or, with [ForEntry], the named entry's)
// must match first; with ForEntry the audit entry describes that entry's create, update
// or delete.
func (s *Store) UpdateACL(ctx context.Context, account, id string, fn func(*acl.IPACL) error, opts ...WriteOption) (acl.IPACL, uint64, error) {
	var out acl.IPACL
	v, err := s.write(ctx, opts, func(t tx, c *change) error {
		cur, err := getObj[acl.IPACL](t, kindACL, account, id)
		if err != nil {
			return err
		}
		entryID := c.meta.entry
		before := findEntry(cur.Entries, entryID)
		switch {
		case entryID == "":
			err = c.meta.precondition(ETag(cur))
		case before != nil:
			err = c.meta.precondition(ETag(*before))
		}
		if err != nil {
			return err
		}
		next := cur
		next.Entries = slices.Clone(cur.Entries)
		if err := fn(&next); err != nil {
			return err
		}
		if err := immutable(kindACL, cur.UUID, next.UUID, cur.Account, next.Account); err != nil {
			return err
		}
		s.stampUpdate(&next.CreatedAt, &next.UpdatedAt, cur.CreatedAt, cur.UpdatedAt)
		if err := checkACL(&next); err != nil {
			return err
		}
		if err := s.checkACLTenancy(ctx, t, c, &cur, &next); err != nil {
			return err
		}
		raw, err := encode(next, kindACL)
		if err != nil {
			return err
		}
		if err := t.put(kindACL, account, id, raw); err != nil {
			return err
		}
		out = next
		after := findEntry(next.Entries, entryID)
		switch {
		case entryID == "" || (before == nil && after == nil):
			c.record(AuditUpdate, AuditKindIPACL, account, id, cur, next)
		case before == nil:
			c.record(AuditCreate, AuditKindEntry, account, entryID, nil, *after)
		case after == nil:
			c.record(AuditDelete, AuditKindEntry, account, entryID, *before, nil)
		default:
			c.record(AuditUpdate, AuditKindEntry, account, entryID, *before, *after)
		}
		c.aclRef = id
		return t.setEmptied(false)
	}, func(v uint64) {
		if s.b.incremental() {
			s.hints.add(v, out)
		}
	})
	if err != nil {
		return acl.IPACL{}, 0, err
	}
	return out, v, nil
}

// findEntry returns the entry with id, nil when there is none (or id is "").
func findEntry(entries []acl.Entry, id string) *acl.Entry {
	if id == "" {
		return nil
	}
	for i := range entries {
		if entries[i].ID == id {
			return &entries[i]
		}
	}
	return nil
}

// DeleteACL removes an ACL of account. While trunks use it the result is an
// [*InUseError] (wrapping ErrConflict) naming them.
func (s *Store) DeleteACL(ctx context.Context, account, id string, opts ...WriteOption) (uint64, error) {
	return s.write(ctx, opts, func(t tx, c *change) error {
		cur, err := getObj[acl.IPACL](t, kindACL, account, id)
		if err != nil {
			return err
		}
		if err := c.meta.precondition(ETag(cur)); err != nil {
			return err
		}
		users, err := usersOf(t, account, func(tr *acl.Trunk) bool { return tr.ACLUUID == id })
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &InUseError{Kind: string(kindACL), ID: id, Trunks: users}
		}
		if err := s.noteACLDelete(ctx, t, c, &cur); err != nil {
			return err
		}
		c.record(AuditDelete, AuditKindIPACL, account, id, cur, nil)
		return deleteObj(t, kindACL, account, id)
	}, nil)
}

// ---- credentials ----

func credKey(c *acl.Credential) (time.Time, string) { return c.CreatedAt, c.UUID }

// usernameFree fails with ErrConflict when another credential (of any account) has user.
func usernameFree(t tx, user, self string) error {
	owner, err := t.index(idxUsername, user)
	if err != nil {
		return err
	}
	if owner != "" && owner != self {
		return fmt.Errorf("%w: username %q is taken", ErrConflict, user)
	}
	return nil
}

// ListCredentials returns the window p of account's credentials and their total.
func (s *Store) ListCredentials(ctx context.Context, account string, p Page) ([]acl.Credential, int, error) {
	return listPage(ctx, s, kindCredential, account, p, credKey)
}

// GetCredential returns one credential of account, or ErrNotFound.
func (s *Store) GetCredential(ctx context.Context, account, id string) (acl.Credential, error) {
	var c acl.Credential
	err := s.read(ctx, func(t tx) error {
		var err error
		c, err = getObj[acl.Credential](t, kindCredential, account, id)
		return err
	})
	return c, err
}

// CreateCredential stores a new credential in c.Account (which must exist). Usernames
// are unique across all accounts (ErrConflict), since a digest answer without a trunk is
// resolved by username alone.
func (s *Store) CreateCredential(ctx context.Context, c acl.Credential, opts ...WriteOption) (uint64, error) {
	if err := checkID("credential_uuid", c.UUID); err != nil {
		return 0, err
	}
	if err := checkID("account", c.Account); err != nil {
		return 0, err
	}
	if c.Username == "" {
		return 0, fmt.Errorf("%w: credential %s: username is empty", ErrInvalid, c.UUID)
	}
	s.stampNew(&c.CreatedAt, &c.UpdatedAt)
	raw, err := encode(c, kindCredential)
	if err != nil {
		return 0, err
	}
	return s.write(ctx, opts, func(t tx, ch *change) error {
		if err := needAccount(t, c.Account); err != nil {
			return err
		}
		if err := idFree(t, kindCredential, c.UUID); err != nil {
			return err
		}
		lim, err := accountLimits(t, c.Account)
		if err != nil {
			return err
		}
		if err := countQuota(t, kindCredential, c.Account, lim.MaxCredentials, "credentials"); err != nil {
			return err
		}
		if err := usernameFree(t, c.Username, ""); err != nil {
			return err
		}
		ch.record(AuditCreate, AuditKindCredential, c.Account, c.UUID, nil, c)
		if err := t.putIndex(idxUsername, c.Username, c.UUID); err != nil {
			return err
		}
		return putNew(t, kindCredential, c.Account, c.UUID, raw)
	}, nil)
}

// UpdateCredential is [Store.UpdateACL] for credentials; a new username must be free.
func (s *Store) UpdateCredential(ctx context.Context, account, id string, fn func(*acl.Credential) error, opts ...WriteOption) (acl.Credential, uint64, error) {
	var out acl.Credential
	v, err := s.write(ctx, opts, func(t tx, c *change) error {
		cur, err := getObj[acl.Credential](t, kindCredential, account, id)
		if err != nil {
			return err
		}
		if err := c.meta.precondition(ETag(cur)); err != nil {
			return err
		}
		next := cur
		if err := fn(&next); err != nil {
			return err
		}
		if err := immutable(kindCredential, cur.UUID, next.UUID, cur.Account, next.Account); err != nil {
			return err
		}
		if next.Username == "" {
			return fmt.Errorf("%w: credential %s: username is empty", ErrInvalid, id)
		}
		s.stampUpdate(&next.CreatedAt, &next.UpdatedAt, cur.CreatedAt, cur.UpdatedAt)
		if next.Username != cur.Username {
			if err := usernameFree(t, next.Username, id); err != nil {
				return err
			}
		}
		raw, err := encode(next, kindCredential)
		if err != nil {
			return err
		}
		if next.Username != cur.Username {
			if err := t.delIndex(idxUsername, cur.Username); err != nil {
				return err
			}
			if err := t.putIndex(idxUsername, next.Username, id); err != nil {
				return err
			}
		}
		if err := t.put(kindCredential, account, id, raw); err != nil {
			return err
		}
		out = next
		c.record(AuditUpdate, AuditKindCredential, account, id, cur, next)
		return t.setEmptied(false)
	}, nil)
	if err != nil {
		return acl.Credential{}, 0, err
	}
	return out, v, nil
}

// DeleteCredential removes a credential of account; [*InUseError] while trunks use it.
func (s *Store) DeleteCredential(ctx context.Context, account, id string, opts ...WriteOption) (uint64, error) {
	return s.write(ctx, opts, func(t tx, ch *change) error {
		c, err := getObj[acl.Credential](t, kindCredential, account, id)
		if err != nil {
			return err
		}
		if err := ch.meta.precondition(ETag(c)); err != nil {
			return err
		}
		users, err := usersOf(t, account, func(tr *acl.Trunk) bool { return tr.CredentialUUID == id })
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &InUseError{Kind: string(kindCredential), ID: id, Trunks: users}
		}
		ch.record(AuditDelete, AuditKindCredential, account, id, c, nil)
		if err := deleteObj(t, kindCredential, account, id); err != nil {
			return err
		}
		return t.delIndex(idxUsername, c.Username)
	}, nil)
}

// ---- trunks ----

func trunkKey(tr *acl.Trunk) (time.Time, string) { return tr.CreatedAt, string(tr.ID) }

// domainKey is the index key of a trunk domain: ASCII lower case, as the snapshot
// compares domains.
func domainKey(d string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, d)
}

// checkTrunkRefs fails with ErrInvalidRef unless the ACL and credential tr names exist
// in tr's account, and with ErrConflict when its domain belongs to another trunk.
func checkTrunkRefs(t tx, tr *acl.Trunk) error {
	if tr.ACLUUID != "" {
		raw, err := t.get(kindACL, tr.Account, tr.ACLUUID)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: trunk %s: ipacl %s does not exist in account %s", ErrInvalidRef, tr.ID, tr.ACLUUID, tr.Account)
		}
	}
	if tr.CredentialUUID != "" {
		raw, err := t.get(kindCredential, tr.Account, tr.CredentialUUID)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: trunk %s: credential %s does not exist in account %s", ErrInvalidRef, tr.ID, tr.CredentialUUID, tr.Account)
		}
	}
	if tr.Domain != "" {
		owner, err := t.index(idxDomain, domainKey(tr.Domain))
		if err != nil {
			return err
		}
		if owner != "" && owner != string(tr.ID) {
			return fmt.Errorf("%w: trunk_domain %s is taken", ErrConflict, tr.Domain)
		}
	}
	return nil
}

// ListTrunks returns the window p of account's trunks and their total.
func (s *Store) ListTrunks(ctx context.Context, account string, p Page) ([]acl.Trunk, int, error) {
	return listPage(ctx, s, kindTrunk, account, p, trunkKey)
}

// GetTrunk returns one trunk of account, or ErrNotFound.
func (s *Store) GetTrunk(ctx context.Context, account string, id acl.TrunkID) (acl.Trunk, error) {
	var tr acl.Trunk
	err := s.read(ctx, func(t tx) error {
		var err error
		tr, err = getObj[acl.Trunk](t, kindTrunk, account, string(id))
		return err
	})
	return tr, err
}

// CreateTrunk stores a new trunk in tr.Account (which must exist). Its ACL and
// credential, when set, must exist in the same account (ErrInvalidRef); its domain is
// unique across all accounts, compared in lower case (ErrConflict).
func (s *Store) CreateTrunk(ctx context.Context, tr acl.Trunk, opts ...WriteOption) (uint64, error) {
	if err := checkID("trunk_id", string(tr.ID)); err != nil {
		return 0, err
	}
	if err := checkID("account", tr.Account); err != nil {
		return 0, err
	}
	s.stampNew(&tr.CreatedAt, &tr.UpdatedAt)
	raw, err := encode(tr, kindTrunk)
	if err != nil {
		return 0, err
	}
	return s.write(ctx, opts, func(t tx, c *change) error {
		if err := needAccount(t, tr.Account); err != nil {
			return err
		}
		if err := idFree(t, kindTrunk, string(tr.ID)); err != nil {
			return err
		}
		lim, err := accountLimits(t, tr.Account)
		if err != nil {
			return err
		}
		if err := countQuota(t, kindTrunk, tr.Account, lim.MaxTrunks, "trunks"); err != nil {
			return err
		}
		if err := checkTrunkRefs(t, &tr); err != nil {
			return err
		}
		c.record(AuditCreate, AuditKindTrunk, tr.Account, string(tr.ID), nil, tr)
		if tr.Domain != "" {
			if err := t.putIndex(idxDomain, domainKey(tr.Domain), string(tr.ID)); err != nil {
				return err
			}
		}
		return putNew(t, kindTrunk, tr.Account, string(tr.ID), raw)
	}, nil)
}

// UpdateTrunk is [Store.UpdateACL] for trunks, with [Store.CreateTrunk]'s reference and
// domain rules.
func (s *Store) UpdateTrunk(ctx context.Context, account string, id acl.TrunkID, fn func(*acl.Trunk) error, opts ...WriteOption) (acl.Trunk, uint64, error) {
	var out acl.Trunk
	v, err := s.write(ctx, opts, func(t tx, c *change) error {
		cur, err := getObj[acl.Trunk](t, kindTrunk, account, string(id))
		if err != nil {
			return err
		}
		if err := c.meta.precondition(ETag(cur)); err != nil {
			return err
		}
		next := cur
		next.DigestAlgorithms = slices.Clone(cur.DigestAlgorithms)
		if err := fn(&next); err != nil {
			return err
		}
		if err := immutable(kindTrunk, string(cur.ID), string(next.ID), cur.Account, next.Account); err != nil {
			return err
		}
		s.stampUpdate(&next.CreatedAt, &next.UpdatedAt, cur.CreatedAt, cur.UpdatedAt)
		if err := checkTrunkRefs(t, &next); err != nil {
			return err
		}
		raw, err := encode(next, kindTrunk)
		if err != nil {
			return err
		}
		if oldKey, newKey := domainKey(cur.Domain), domainKey(next.Domain); oldKey != newKey {
			if oldKey != "" {
				if err := t.delIndex(idxDomain, oldKey); err != nil {
					return err
				}
			}
			if newKey != "" {
				if err := t.putIndex(idxDomain, newKey, string(id)); err != nil {
					return err
				}
			}
		}
		if err := t.put(kindTrunk, account, string(id), raw); err != nil {
			return err
		}
		out = next
		c.record(AuditUpdate, AuditKindTrunk, account, string(id), cur, next)
		return t.setEmptied(false)
	}, nil)
	if err != nil {
		return acl.Trunk{}, 0, err
	}
	return out, v, nil
}

// DeleteTrunk removes a trunk of account and frees its domain.
func (s *Store) DeleteTrunk(ctx context.Context, account string, id acl.TrunkID, opts ...WriteOption) (uint64, error) {
	return s.write(ctx, opts, func(t tx, c *change) error {
		tr, err := getObj[acl.Trunk](t, kindTrunk, account, string(id))
		if err != nil {
			return err
		}
		if err := c.meta.precondition(ETag(tr)); err != nil {
			return err
		}
		c.record(AuditDelete, AuditKindTrunk, account, string(id), tr, nil)
		if err := deleteObj(t, kindTrunk, account, string(id)); err != nil {
			return err
		}
		if tr.Domain != "" {
			return t.delIndex(idxDomain, domainKey(tr.Domain))
		}
		return nil
	}, nil)
}

// ---- whole data set ----

// Version returns the current data-set version (0 before the first write).
func (s *Store) Version(ctx context.Context) (uint64, error) { return s.b.version(ctx) }

// Load returns every ACL, credential and trunk of every account at one consistent
// version, each list ordered by account, created_at, id.
func (s *Store) Load(ctx context.Context) (*acl.Dataset, error) {
	ds, _, _, err := s.load(ctx)
	return ds, err
}

// load reads the whole data set: its objects, epoch and accounts (by auth_id).
func (s *Store) load(ctx context.Context) (*acl.Dataset, string, []acl.Account, error) {
	rs, err := s.b.loadAll(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	ds := &acl.Dataset{Version: rs.version, Emptied: rs.emptied}
	if ds.ACLs, err = decodeAll[acl.IPACL](rs.objs[kindACL], kindACL); err != nil {
		return nil, "", nil, err
	}
	if ds.Credentials, err = decodeAll[acl.Credential](rs.objs[kindCredential], kindCredential); err != nil {
		return nil, "", nil, err
	}
	if ds.Trunks, err = decodeAll[acl.Trunk](rs.objs[kindTrunk], kindTrunk); err != nil {
		return nil, "", nil, err
	}
	accounts, err := decodeAll[acl.Account](rs.accounts, "account")
	if err != nil {
		return nil, "", nil, err
	}
	slices.SortFunc(accounts, func(a, b acl.Account) int { return cmp.Compare(a.AuthID, b.AuthID) })
	sortByAccount(ds.ACLs, func(a *acl.IPACL) string { return a.Account }, aclKey)
	sortByAccount(ds.Credentials, func(c *acl.Credential) string { return c.Account }, credKey)
	sortByAccount(ds.Trunks, func(tr *acl.Trunk) string { return tr.Account }, trunkKey)
	return ds, rs.epoch, accounts, nil
}

func sortByAccount[T any](objs []T, account func(*T) string, key func(*T) (time.Time, string)) {
	slices.SortFunc(objs, func(a, b T) int {
		if c := cmp.Compare(account(&a), account(&b)); c != 0 {
			return c
		}
		ta, ia := key(&a)
		tb, ib := key(&b)
		if c := ta.Compare(tb); c != 0 {
			return c
		}
		return cmp.Compare(ia, ib)
	})
}

// hintLog remembers, per version, the ACL an UpdateACL wrote, so Watch can swap one ACL
// into the previous snapshot instead of compiling everything. Only complete (and so
// only used) when every write goes through this process.
type hintLog struct {
	mu   sync.Mutex
	acls map[uint64]acl.IPACL
}

const maxHints = 64

func (h *hintLog) add(v uint64, a acl.IPACL) {
	a.Entries = slices.Clone(a.Entries)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.acls == nil {
		h.acls = make(map[uint64]acl.IPACL)
	}
	h.acls[v] = a
	if len(h.acls) > maxHints {
		for old := range h.acls {
			if old+maxHints <= v {
				delete(h.acls, old)
			}
		}
	}
}

func (h *hintLog) get(v uint64) (acl.IPACL, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a, ok := h.acls[v]
	return a, ok
}
