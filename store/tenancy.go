package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"

	"github.com/sipedge/sipedge/acl"
)

// Tenancy rules the store enforces inside every ACL, credential and trunk write's own
// transaction, so two accounts racing cannot both pass (DESIGN §4a):
//
//   - an ACL entry may not overlap (contain or lie inside) an entry of another account's
//     ACL, unless both ACLs are shared ([ErrOverlap]);
//   - a new entry must be at least the account's minimum prefix length ([ErrInvalid]);
//   - objects per kind and entries per ACL and per account stay within the account's
//     quotas ([QuotaError]).
//
// The overlap check asks an index of every entry of every account (a bart table), kept
// per data-set version: a write uses it when the version it reads in its transaction is
// the one the index describes (every write changes the version, so nothing can have
// changed in between), and rebuilds it from the transaction's own reads otherwise (another
// node wrote). After a commit the index moves to the new version with the write's change.

// ErrOverlap (wrapping [ErrConflict]) refuses an entry that overlaps an entry another
// account lists. Its message never names the other account or its objects.
var ErrOverlap = fmt.Errorf("%w: ip address overlaps an address another account lists", ErrConflict)

// ErrQuota is wrapped by [QuotaError].
var ErrQuota = errors.New("store: quota exceeded")

// QuotaError refuses a write that would exceed one of the account's quotas.
type QuotaError struct {
	What  string // "ipacls", "entries per ACL", "entries", "trunks", "credentials"
	Limit int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("store: quota exceeded: at most %d %s", e.Limit, e.What)
}
func (e *QuotaError) Unwrap() error { return ErrQuota }

// OverlapError wraps [ErrOverlap] naming the caller's own address that overlaps.
type OverlapError struct{ Prefix string }

func (e *OverlapError) Error() string {
	return "store: ip address " + e.Prefix + " overlaps an address another account lists"
}
func (e *OverlapError) Unwrap() error { return ErrOverlap }

// holder is one ACL that lists a prefix.
type holder struct {
	account, acl string
	shared       bool
}

// tenancyIndex is every entry of every ACL at one data-set version. Safe for concurrent
// use (mu guards everything).
type tenancyIndex struct {
	mu      sync.Mutex
	version uint64 // the version described; 0: none
	epoch   string
	ix      *prefixIndex

	rebuilds atomic.Uint64 // indexes built from a transaction's reads (tests, logs)
}

// prefixIndex is the content of a tenancyIndex: prefixes → holders, and per-account
// counts for the quotas.
type prefixIndex struct {
	table   bart.Table[[]holder]
	entries map[string]int        // account → entries of all its ACLs
	acls    map[string]int        // account → ACLs
	byUUID  map[string]*acl.IPACL // ACL uuid → the ACL as indexed (to take it out again)
}

func newPrefixIndex() *prefixIndex {
	return &prefixIndex{entries: map[string]int{}, acls: map[string]int{}, byUUID: map[string]*acl.IPACL{}}
}

// prefixesOf returns the parsed entries of a (every entry, enabled or not: a disabled
// entry can be enabled without a check). Unparsable ones are skipped.
func prefixesOf(a *acl.IPACL) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(a.Entries))
	for _, e := range a.Entries {
		if p, err := acl.ParsePrefix(e.IPAddress); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (x *prefixIndex) add(a *acl.IPACL) {
	h := holder{account: a.Account, acl: a.UUID, shared: a.Shared}
	for _, p := range prefixesOf(a) {
		x.table.Modify(p, func(hs []holder, _ bool) ([]holder, bool) {
			return append(hs[:len(hs):len(hs)], h), false
		})
	}
	x.entries[a.Account] += len(a.Entries)
	x.acls[a.Account]++
	x.byUUID[a.UUID] = a
}

func (x *prefixIndex) remove(a *acl.IPACL) {
	for _, p := range prefixesOf(a) {
		x.table.Modify(p, func(hs []holder, ok bool) ([]holder, bool) {
			out := make([]holder, 0, len(hs))
			for _, h := range hs {
				if h.acl != a.UUID {
					out = append(out, h)
				}
			}
			return out, len(out) == 0
		})
	}
	if x.entries[a.Account] -= len(a.Entries); x.entries[a.Account] <= 0 {
		delete(x.entries, a.Account)
	}
	if x.acls[a.Account]--; x.acls[a.Account] <= 0 {
		delete(x.acls, a.Account)
	}
	delete(x.byUUID, a.UUID)
}

// conflicts reports whether p overlaps a prefix some ACL of another account lists,
// other than a shared one when shared is set.
func (x *prefixIndex) conflicts(p netip.Prefix, account string, shared bool) bool {
	bad := func(hs []holder) bool {
		for _, h := range hs {
			if h.account != account && !(shared && h.shared) {
				return true
			}
		}
		return false
	}
	for _, hs := range x.table.Supernets(p) {
		if bad(hs) {
			return true
		}
	}
	for _, hs := range x.table.Subnets(p) {
		if bad(hs) {
			return true
		}
	}
	return false
}

// tenancyDelta is what one ACL write changes in the index, carried from its transaction
// to its commit in [change.tenancy].
type tenancyDelta struct {
	base          *prefixIndex // rebuilt in the transaction at version-1; nil: the cached one
	epoch         string
	before, after *acl.IPACL // nil: none (create, delete)
}

// indexFor returns the index describing the data set t reads (at version next-1): the
// cached one when it is at that version (waiting a moment for the commit of the write
// just before to reach it), else one rebuilt from t's reads. When it returns the cached
// one (rebuilt false), it holds s.tenancy.mu: the caller must unlock it.
func (s *Store) indexFor(t tx, next uint64, epoch string) (ix *prefixIndex, rebuilt bool, err error) {
	ti := &s.tenancy
	for i := 0; ; i++ {
		ti.mu.Lock()
		if ti.ix != nil && ti.version == next-1 && ti.epoch == epoch {
			return ti.ix, false, nil
		}
		behind := ti.ix != nil && ti.version < next-1 && ti.epoch == epoch
		if behind && ti.version == next-2 {
			// One write behind: another node wrote one version since. When that write
			// changed one ACL only (its marker says so), take that ACL's new state from
			// this transaction's reads instead of reading every entry of every account:
			// nodes that write in turn (a load balancer) then cost one ACL each.
			if ok, err := s.catchUp(t, ti.ix, next-1); err != nil {
				ti.mu.Unlock()
				return nil, false, err
			} else if ok {
				ti.version = next - 1
				return ti.ix, false, nil
			}
		}
		ti.mu.Unlock()
		if !behind || i >= 20 {
			break
		}
		time.Sleep(500 * time.Microsecond) // this process's previous write is committing
	}
	ix = newPrefixIndex()
	raws, err := t.accounts()
	if err != nil {
		return nil, false, err
	}
	for _, raw := range raws {
		var a acl.Account
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, false, fmt.Errorf("store: decode account: %w", err)
		}
		acls, err := listObjs[acl.IPACL](t, kindACL, a.AuthID)
		if err != nil {
			return nil, false, err
		}
		for i := range acls {
			ix.add(&acls[i])
		}
	}
	ti.rebuilds.Add(1)
	s.log.Debug().Uint64("version", next-1).Int("prefixes", ix.table.Size()).Msg("tenancy index rebuilt")
	return ix, true, nil
}

// currentIndex is indexFor at the version t reads, in the current epoch (see indexFor for
// the lock it may return holding).
func (s *Store) currentIndex(ctx context.Context, t tx) (ix *prefixIndex, rebuilt bool, epoch string, err error) {
	next, err := t.nextVersion()
	if err != nil {
		return nil, false, "", err
	}
	if epoch, err = s.tenancyEpoch(ctx); err != nil {
		return nil, false, "", err
	}
	ix, rebuilt, err = s.indexFor(t, next, epoch)
	return ix, rebuilt, epoch, err
}

// catchUp moves ix (at version v-1) to version v when the write at v changed exactly one
// ACL (markACLChange), reading that ACL from t; false (ix untouched) otherwise.
func (s *Store) catchUp(t tx, ix *prefixIndex, v uint64) (bool, error) {
	mark, err := t.lastACLChange()
	if err != nil || mark == "" {
		return false, err
	}
	ver, ref, ok := strings.Cut(mark, " ")
	account, id, ok2 := strings.Cut(ref, "/")
	if !ok || !ok2 || ver != strconv.FormatUint(v, 10) {
		return false, nil
	}
	raw, err := t.get(kindACL, account, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	var now *acl.IPACL
	if raw != nil {
		now = new(acl.IPACL)
		if err := json.Unmarshal(raw, now); err != nil {
			return false, fmt.Errorf("store: decode ACL: %w", err)
		}
	}
	if old := ix.byUUID[id]; old != nil {
		ix.remove(old)
	}
	if now != nil {
		ix.add(now)
	}
	return true, nil
}

// tenancyEpoch is the data-set epoch an index must have been built in: read apart from
// the write's transaction in Redis mode, where a wiped and re-seeded data set restarts
// its versions; constant for bbolt, whose versions never restart under a running
// process (and where a read transaction opened inside the write one could deadlock).
func (s *Store) tenancyEpoch(ctx context.Context) (string, error) {
	if _, ok := s.b.(*redisBackend); !ok {
		return "bolt", nil
	}
	_, epoch, err := s.b.head(ctx)
	return epoch, err
}

// accountLimits reads the effective limits of account in t.
func accountLimits(t tx, authID string) (acl.Limits, error) {
	raw, err := t.account(authID)
	if err != nil {
		return acl.Limits{}, err
	}
	if raw == nil {
		return acl.Limits{}, fmt.Errorf("%w: account %s", ErrNotFound, authID)
	}
	var a acl.Account
	if err := json.Unmarshal(raw, &a); err != nil {
		return acl.Limits{}, fmt.Errorf("store: decode account: %w", err)
	}
	return a.Limits.Effective(), nil
}

// checkACLTenancy enforces the rules above for an ACL write: before is the stored ACL
// (nil for a create), after what will be stored. Only entries that are new (not in
// before) are held to the minimum prefix and the overlap rule, unless the ACL stops being
// shared, when all are checked again. It records the index change in c.
func (s *Store) checkACLTenancy(ctx context.Context, t tx, c *change, before, after *acl.IPACL) error {
	lim, err := accountLimits(t, after.Account)
	if err != nil {
		return err
	}
	if len(after.Entries) > lim.MaxEntriesPerACL && (before == nil || len(after.Entries) > len(before.Entries)) {
		return &QuotaError{What: "entries per IP access control list", Limit: lim.MaxEntriesPerACL}
	}
	old := map[netip.Prefix]bool{}
	if before != nil && (before.Shared == after.Shared || !before.Shared) {
		for _, p := range prefixesOf(before) {
			old[p] = true
		}
	}
	var fresh []netip.Prefix
	for _, p := range prefixesOf(after) {
		if old[p] {
			continue
		}
		if min := minBits(lim, p); p.Bits() < min {
			return fmt.Errorf("%w: ip address %s: shorter than this account's minimum prefix /%d", ErrInvalid, acl.CanonicalString(p), min)
		}
		fresh = append(fresh, p)
	}
	if before != nil && len(fresh) == 0 && len(after.Entries) <= len(before.Entries) {
		// Nothing new and nothing more (a disable, a description, a removal): no rule to
		// check, so no index to consult — such a write never waits for a rebuild, however
		// busy other writers keep the data set.
		return s.noteTenancyDelta(ctx, c, &tenancyDelta{before: before, after: after})
	}
	ix, rebuilt, epoch, err := s.currentIndex(ctx, t)
	if err != nil {
		return err
	}
	if !rebuilt {
		defer s.tenancy.mu.Unlock()
	}
	total := ix.entries[after.Account] + len(after.Entries)
	if before != nil {
		total -= len(before.Entries)
	} else if ix.acls[after.Account] >= lim.MaxACLs {
		return &QuotaError{What: "IP access control lists", Limit: lim.MaxACLs}
	}
	if total > lim.MaxEntries && (before == nil || len(after.Entries) > len(before.Entries)) {
		return &QuotaError{What: "entries in all its IP access control lists", Limit: lim.MaxEntries}
	}
	for _, p := range fresh {
		if ix.conflicts(p, after.Account, after.Shared) {
			return &OverlapError{Prefix: acl.CanonicalString(p)}
		}
	}
	d := &tenancyDelta{epoch: epoch, before: before, after: after}
	if rebuilt {
		d.base = ix
	}
	c.tenancy = d
	return nil
}

func minBits(l acl.Limits, p netip.Prefix) int {
	if p.Addr().Is4() {
		return l.MinPrefixV4
	}
	return l.MinPrefixV6
}

// noteACLDelete records the index change of deleting a (no rule to check).
func (s *Store) noteACLDelete(ctx context.Context, _ tx, c *change, a *acl.IPACL) error {
	return s.noteTenancyDelta(ctx, c, &tenancyDelta{before: a})
}

// noteTenancyDelta records in c a change of the index that needed no check: the cached
// index takes it at the commit when it is at the version before (else it is rebuilt on
// its next use).
func (s *Store) noteTenancyDelta(ctx context.Context, c *change, d *tenancyDelta) error {
	epoch, err := s.tenancyEpoch(ctx)
	if err != nil {
		return err
	}
	d.epoch = epoch
	c.tenancy = d
	return nil
}

// tenancyCommitted moves the index to version v after the write c described committed.
// Writes that change no ACL (trunks, credentials, accounts) only move the version; an ACL
// write without a delta, or any other kind, leaves the index stale (rebuilt on next use).
func (s *Store) tenancyCommitted(v uint64, c *change) {
	ti := &s.tenancy
	ti.mu.Lock()
	defer ti.mu.Unlock()
	d := c.tenancy
	if d != nil && d.base != nil {
		ti.ix, ti.version, ti.epoch = d.base, v-1, d.epoch
	}
	if ti.ix == nil || ti.version != v-1 {
		return
	}
	switch {
	case d != nil:
		if d.epoch != ti.epoch {
			ti.ix = nil
			return
		}
		if d.before != nil {
			ti.ix.remove(d.before)
		}
		if d.after != nil {
			ti.ix.add(d.after)
		}
	case c.kind == AuditKindTrunk || c.kind == AuditKindCredential || c.kind == AuditKindAccount:
	default:
		ti.ix = nil
		return
	}
	ti.version = v
}

// countQuota fails with a [QuotaError] when account already has limit objects of kind k.
func countQuota(t tx, k kind, account string, limit int, what string) error {
	raws, err := t.list(k, account)
	if err != nil {
		return err
	}
	if len(raws) >= limit {
		return &QuotaError{What: what, Limit: limit}
	}
	return nil
}

// UpdateAccount reads the account, lets fn change it and writes it back in one
// transaction (the admin API's account settings). fn must not change auth_id; an error
// from fn aborts the write and is returned unchanged.
func (s *Store) UpdateAccount(ctx context.Context, authID string, fn func(*acl.Account) error, opts ...WriteOption) (acl.Account, uint64, error) {
	var out acl.Account
	v, err := s.write(ctx, opts, func(t tx, c *change) error {
		raw, err := t.account(authID)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: account %s", ErrNotFound, authID)
		}
		var cur acl.Account
		if err := json.Unmarshal(raw, &cur); err != nil {
			return fmt.Errorf("store: decode account: %w", err)
		}
		next := cur
		next.TrunkDomains = append([]string(nil), cur.TrunkDomains...)
		next.UpstreamAllow = append([]string(nil), cur.UpstreamAllow...)
		if err := fn(&next); err != nil {
			return err
		}
		if next.AuthID != cur.AuthID || next.CreatedAt != cur.CreatedAt {
			return fmt.Errorf("%w: account %s: auth_id and created_at cannot change", ErrInvalid, authID)
		}
		enc, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("store: encode account: %w", err)
		}
		c.record(AuditUpdate, AuditKindAccount, authID, authID, cur, next)
		out = next
		return t.putAccount(authID, enc)
	}, nil)
	if err != nil {
		return acl.Account{}, 0, err
	}
	return out, v, nil
}

// domainGranted reports whether pattern (an exact name or "*.suffix") covers name.
func domainGranted(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(name, "."+suffix)
	}
	return pattern == name
}

// DomainGranted reports whether one of the patterns (exact lower-case names or
// "*.suffix") covers the lower-case domain name.
func DomainGranted(patterns []string, name string) bool {
	for _, p := range patterns {
		if domainGranted(p, name) {
			return true
		}
	}
	return false
}
