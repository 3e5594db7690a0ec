package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/sipedge/sipedge/acl"
)

// An empty store is an incident, not a new world (DESIGN.md §5). Every node keeps the
// whole data set it applied last — accounts with their token hashes, ACLs with their
// entries, credentials with their HA1s, trunks — not only the compiled snapshot, so that
// an operator can write it back with [Store.Restore] after Redis came back empty. The copy
// lives in memory only: see README.md, "Last good data set".

// Backup is one whole data set as a node applied it: what [Store.Restore] writes back.
// Treat it as read-only: it is shared.
type Backup struct {
	Version     uint64    // the data-set version it was loaded at (or brought to by ACL writes)
	Epoch       string    // the data-set epoch it belongs to
	At          time.Time // when this node applied it
	Accounts    []acl.Account
	ACLs        []acl.IPACL
	Credentials []acl.Credential
	Trunks      []acl.Trunk
}

// Counts summarises a backup: accounts, ACLs, entries, credentials, trunks.
func (b *Backup) Counts() map[string]int {
	if b == nil {
		return nil
	}
	entries := 0
	for i := range b.ACLs {
		entries += len(b.ACLs[i].Entries)
	}
	return map[string]int{"accounts": len(b.Accounts), "ipacls": len(b.ACLs), "entries": entries,
		"credentials": len(b.Credentials), "trunks": len(b.Trunks)}
}

// goodSet is what a watcher keeps: the last full load, plus the ACLs written since by
// single-ACL writes it applied incrementally (by id), so an ACL write does not copy the
// whole data set. Immutable once published.
type goodSet struct {
	base      *Backup
	overrides map[string]acl.IPACL // ipacl_uuid → the ACL as the newer write left it
	version   uint64
}

// backup materialises g as one Backup.
func (g *goodSet) backup() *Backup {
	if g == nil || g.base == nil {
		return nil
	}
	if len(g.overrides) == 0 {
		return g.base
	}
	b := *g.base
	b.Version = g.version
	b.ACLs = slices.Clone(g.base.ACLs)
	for i := range b.ACLs {
		if a, ok := g.overrides[b.ACLs[i].UUID]; ok {
			b.ACLs[i] = a
		}
	}
	return &b
}

// keepGood records the data set a full reload applied as this node's last good one.
func (s *Store) keepGood(ds *acl.Dataset, epoch string, accounts []acl.Account) {
	s.good.Store(&goodSet{version: ds.Version, base: &Backup{
		Version: ds.Version, Epoch: epoch, At: time.Now().UTC(), Accounts: accounts,
		ACLs: ds.ACLs, Credentials: ds.Credentials, Trunks: ds.Trunks,
	}})
}

// keepACL records an ACL that an incremental apply brought to version v.
func (s *Store) keepACL(a acl.IPACL, v uint64) {
	g := s.good.Load()
	if g == nil {
		return
	}
	next := &goodSet{base: g.base, version: v, overrides: maps.Clone(g.overrides)}
	if next.overrides == nil {
		next.overrides = make(map[string]acl.IPACL, 1)
	}
	a.Entries = slices.Clone(a.Entries)
	next.overrides[a.UUID] = a
	s.good.Store(next)
}

// LastGood returns the whole data set this node applied last (nil before the first
// apply) — or, once the store was found empty ([Store.Incident]), the data set from
// before, until it is restored: it stays pinned even when objects written into the
// emptied store are applied meanwhile, so a write during the incident cannot make the
// node forget what the restore needs. The pin is released when the node applies a data
// set of another epoch at a higher version than the pinned one (a restore, or a new data
// set that has grown past it).
func (s *Store) LastGood() *Backup {
	if p := s.pinned.Load(); p != nil {
		return p.backup()
	}
	return s.good.Load().backup()
}

// RestorePending reports the version of the data set pinned by an empty-store incident
// that no restore has brought back yet (false when none).
func (s *Store) RestorePending() (uint64, bool) {
	if p := s.pinned.Load(); p != nil {
		return p.version, true
	}
	return 0, false
}

// unpin releases the pinned pre-incident data set once the data set applied (version v
// of epoch) supersedes it: another epoch, a higher version.
func (s *Store) unpin(v uint64, epoch string) {
	if p := s.pinned.Load(); p != nil && p.base != nil && epoch != p.base.Epoch && v > p.version {
		s.pinned.CompareAndSwap(p, nil)
	}
}

// Incident describes an empty store: the watcher found a data set without any ACL,
// credential or trunk that was not emptied on purpose while it served a non-empty one, and
// keeps serving that (see [Store.Watch]).
type Incident struct {
	Since           time.Time `json:"since"`
	StoreVersion    uint64    `json:"store_version"`
	StoreEpoch      string    `json:"store_epoch"`
	SnapshotVersion uint64    `json:"snapshot_version"`
	SnapshotEpoch   string    `json:"snapshot_epoch"`
}

// Incident returns the current empty-store incident, nil when there is none. It ends when
// a data set with objects is applied again (a restore, or objects written anew).
func (s *Store) Incident() *Incident { return s.incident.Load() }

func (s *Store) noteIncident(storeVersion uint64, storeEpoch string, snapVersion uint64, snapEpoch string) {
	if cur := s.incident.Load(); cur != nil && cur.StoreVersion == storeVersion && cur.StoreEpoch == storeEpoch {
		return
	}
	since := time.Now().UTC()
	if cur := s.incident.Load(); cur != nil {
		since = cur.Since
	}
	s.pinned.CompareAndSwap(nil, s.good.Load()) // keep the first incident's data set
	s.incident.Store(&Incident{Since: since, StoreVersion: storeVersion, StoreEpoch: storeEpoch,
		SnapshotVersion: snapVersion, SnapshotEpoch: snapEpoch})
}

// RestoreOptions shape one [Store.Restore].
type RestoreOptions struct {
	// FromNode names the node whose data set is written back (for the audit log).
	FromNode string
	// MinVersion: the restored data set commits at a version above it (and above the
	// backup's and the store's current one), e.g. the highest version any live node
	// serves, so no node can take it for an older version.
	MinVersion uint64
	// Actor and RequestID are recorded in the audit entries (default [ActorAdmin]).
	Actor, RequestID string
}

// Audit action and kind of a restore.
const (
	AuditRestore     = "restore"
	AuditKindDataset = "dataset"
)

// Restore replaces whatever the store holds — every account, ACL, credential, trunk and
// index — by b, in one transaction that commits in a new data-set epoch at a version
// greater than b's, the store's and o.MinVersion, and appends one audit entry (action
// "restore", kind "dataset", object_id the account, after: the counts and the node) to
// each restored account's log. Audit logs, idempotency records, the node registry, bans
// and hits are kept. Watchers apply the result like any reset.
func (s *Store) Restore(ctx context.Context, b *Backup, o RestoreOptions) (uint64, error) {
	if b == nil || len(b.Accounts) == 0 {
		return 0, fmt.Errorf("%w: restore: no data set (no accounts)", ErrInvalid)
	}
	type obj struct {
		k           kind
		account, id string
		raw         []byte
	}
	var objs []obj
	add := func(k kind, account, id string, v any) error {
		raw, err := encode(v, k)
		if err == nil {
			objs = append(objs, obj{k, account, id, raw})
		}
		return err
	}
	accs := make([][]byte, len(b.Accounts))
	for i, a := range b.Accounts {
		raw, err := json.Marshal(a)
		if err != nil {
			return 0, fmt.Errorf("store: encode account: %w", err)
		}
		accs[i] = raw
	}
	for _, a := range b.ACLs {
		if err := add(kindACL, a.Account, a.UUID, a); err != nil {
			return 0, err
		}
	}
	for _, c := range b.Credentials {
		if err := add(kindCredential, c.Account, c.UUID, c); err != nil {
			return 0, err
		}
	}
	for _, tr := range b.Trunks {
		if err := add(kindTrunk, tr.Account, string(tr.ID), tr); err != nil {
			return 0, err
		}
	}
	actor := o.Actor
	if actor == "" {
		actor = ActorAdmin
	}
	summary, _ := json.Marshal(map[string]any{"from_node": o.FromNode, "from_version": b.Version,
		"from_epoch": b.Epoch, "counts": b.Counts()})
	epoch := uuid.NewString()
	v, ep, err := s.b.update(ctx, func(bt tx) error {
		t := &strictTx{t: bt}
		raws, err := t.accounts()
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(raws))
		for _, raw := range raws {
			var a acl.Account
			if err := json.Unmarshal(raw, &a); err != nil {
				return fmt.Errorf("store: decode account: %w", err)
			}
			ids = append(ids, a.AuthID)
		}
		cur, err := t.nextVersion()
		if err != nil {
			return err
		}
		next := max(cur, b.Version+1, o.MinVersion+1)
		if err := t.wipe(ids); err != nil {
			return err
		}
		if err := t.rebase(next, epoch); err != nil {
			return err
		}
		for i, a := range b.Accounts {
			if err := t.putAccount(a.AuthID, accs[i]); err != nil {
				return err
			}
		}
		for _, ob := range objs {
			if err := t.put(ob.k, ob.account, ob.id, ob.raw); err != nil {
				return err
			}
			if err := t.putIndex(string(ob.k), ob.id, ob.account); err != nil {
				return err
			}
		}
		for _, c := range b.Credentials {
			if err := t.putIndex(idxUsername, c.Username, c.UUID); err != nil {
				return err
			}
		}
		for _, tr := range b.Trunks {
			if tr.Domain != "" {
				if err := t.putIndex(idxDomain, domainKey(tr.Domain), string(tr.ID)); err != nil {
					return err
				}
			}
		}
		for _, a := range b.Accounts {
			e, err := json.Marshal(AuditEntry{ID: uuid.NewString(), Version: next, At: s.now().UTC(), Account: a.AuthID,
				Actor: actor, Action: AuditRestore, Kind: AuditKindDataset, ObjectID: a.AuthID,
				After: summary, RequestID: o.RequestID})
			if err != nil {
				return err
			}
			if err := t.appendAudit(a.AuthID, e, s.auditLimit); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.log.Warn().Uint64("version", v).Str("epoch", ep).Str("from_node", o.FromNode).
		Uint64("from_version", b.Version).Interface("counts", b.Counts()).Msg("data set restored")
	if err := s.b.publish(ctx, notice{version: v, epoch: ep}); err != nil {
		s.log.Warn().Err(err).Uint64("version", v).Msg("change notice not published")
	}
	return v, nil
}
