package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// kind names one class of account-owned objects. It is part of the key schema of both
// backends, so the values never change.
type kind string

const (
	kindACL        kind = "ipacl"
	kindCredential kind = "credential"
	kindTrunk      kind = "trunk"
)

// objectKinds are the kinds that make a data set non-empty (accounts do not count).
var objectKinds = [...]kind{kindACL, kindCredential, kindTrunk}

// Global index names. The id indexes (one per kind, named like the kind) map an object id
// to its account, so ids are unique per kind across all accounts, as the compiled snapshot
// needs. The other two enforce uniqueness of trunk domains and credential usernames.
const (
	idxDomain   = "domain"   // lowercase trunk_domain → trunk_id
	idxUsername = "username" // credential username → credential_uuid
)

// backend is the storage a [Store] runs its integrity rules over. Implementations: bolt
// (embedded) and redis. All methods are safe for concurrent use.
type backend interface {
	// view runs fn over one consistent read of the whole data set.
	view(ctx context.Context, fn func(tx) error) error
	// loadAll reads every object, the version, epoch and emptied marker at one version.
	loadAll(ctx context.Context) (*rawSet, error)
	// update runs fn in one write transaction. If fn returns nil, its writes and an
	// increment of the global version by exactly 1 commit atomically and the new version
	// is returned, with the data-set epoch it was committed in. If fn (or the commit)
	// fails, nothing changes. fn may run more than once (optimistic retries), so it must
	// derive everything from what it reads.
	update(ctx context.Context, fn func(tx) error) (v uint64, epoch string, err error)
	// version returns the current global version (0 for a fresh data set).
	version(ctx context.Context) (uint64, error)
	// head returns the current version and epoch, read together.
	head(ctx context.Context) (uint64, string, error)
	// publish announces a committed write to every subscriber (a poke; losing one is
	// tolerated, subscribers also resync periodically).
	publish(ctx context.Context, n notice) error
	// aclChange returns the stored JSON of the ACL notice n names, read at version n.version,
	// after verifying in the same atomic read that the data set is at exactly that version
	// and epoch and that the write of that version changed only this ACL (what
	// [tx.markACLChange] recorded). Anything else is errNotIncremental: the payload of a
	// notice only selects what to read, it is never trusted.
	aclChange(ctx context.Context, n notice) ([]byte, error)
	// audit returns the window p of account's audit log, newest first, and its length.
	audit(ctx context.Context, account string, p Page) ([][]byte, int, error)
	// subscribe makes the backend poke p on every published version until ctx is done;
	// done is closed when it has stopped. It returns once the subscription is confirmed,
	// so a load that starts after it cannot miss a change.
	subscribe(ctx context.Context, p *pokes) (done <-chan struct{}, err error)
	// subscription reports the liveness probe of the subscription (zero value: none).
	subscription() SubscriptionStatus

	// Node registry (see cluster.go): heartbeat records st for ttl, nodes lists the
	// entries whose lease has not run out (any order), deregister removes one.
	heartbeat(ctx context.Context, st NodeStatus, ttl time.Duration) error
	nodes(ctx context.Context) ([]NodeStatus, error)
	deregister(ctx context.Context, id string) error

	// Ban list (see bans.go; sources already checked). now is the caller's clock, which
	// the embedded list uses; Redis expires keys by itself.
	addFailure(ctx context.Context, src string, window time.Duration, now time.Time) (int64, error)
	ban(ctx context.Context, b acl.Ban, ttl time.Duration, limit int, now time.Time) (evicted int, err error)
	listBans(ctx context.Context, now time.Time) ([]acl.Ban, error)
	lift(ctx context.Context, src string, now time.Time) (bool, error)

	// Hit counts (see hits.go): addHits applies the deltas, each entry at most once, all
	// or nothing as far as the backend allows; hits returns the totals of one ACL's
	// entries, by entry id, never nil.
	addHits(ctx context.Context, ds []hitDelta) error
	hits(ctx context.Context, account, aclUUID string) (map[string]acl.HitStat, error)
	// incremental reports whether every committed version is written through this
	// process (embedded mode), so per-version change hints are complete.
	incremental() bool
	close() error
}

// tx is one backend transaction. In an update, all reads must come before the first
// write: the Redis backend queues writes until EXEC and could not show them to a later
// read. [strictTx] enforces this for every backend, so the rule is tested with bolt too.
//
// Reads of a missing object or index key return nil / "" and no error.
type tx interface {
	// Stored JSON of objects, keyed by (kind, account, id).
	get(k kind, account, id string) ([]byte, error)
	put(k kind, account, id string, v []byte) error
	del(k kind, account, id string) error
	// list returns every object of kind k in account, in no particular order.
	list(k kind, account string) ([][]byte, error)
	// countAll counts ACLs, credentials and trunks of all accounts; it may stop counting
	// at max.
	countAll(max int) (int, error)

	// Accounts, keyed by auth_id.
	account(authID string) ([]byte, error)
	putAccount(authID string, v []byte) error
	accounts() ([][]byte, error)

	// Global indexes: name → key → value.
	index(name, key string) (string, error)
	putIndex(name, key, val string) error
	delIndex(name, key string) error

	// setEmptied sets or clears the marker that the data set was emptied on purpose.
	setEmptied(on bool) error

	// nextVersion is the version this transaction commits as: the current one + 1. (A
	// read: Redis WATCHes the version key, so it cannot change before the commit.)
	nextVersion() (uint64, error)
	// idem returns the idempotency record of (account, key), nil when there is none; key
	// is already hashed (see [idemKeyHash]).
	idem(account, key string) ([]byte, error)
	// putIdem stores an idempotency record that the backend drops after expires.
	putIdem(account, key string, v []byte, expires time.Time) error
	// appendAudit adds v as the newest entry of account's audit log and drops the oldest
	// beyond limit.
	appendAudit(account string, v []byte, limit int) error
	// markACLChange records that the write committing as version v changed ACL id of
	// account and nothing else a snapshot holds; see [backend.aclChange].
	markACLChange(v uint64, account, id string) error
	// lastACLChange reads what the last markACLChange stored ("" when nothing, or a
	// backend with no such marker), so a write can catch an index up by one ACL.
	lastACLChange() (string, error)

	// wipe removes every account, object, index and the emptied marker (not the audit
	// logs, idempotency records, node registry, bans or hits). accounts are the auth_ids
	// stored now (read before, in this transaction). Used by Restore only.
	wipe(accounts []string) error
	// rebase makes this transaction commit as version next in a new data-set epoch
	// (next must exceed the current version). Used by Restore only.
	rebase(next uint64, epoch string) error
}

// rawSet is the stored form of a whole data set at one version.
type rawSet struct {
	version uint64
	// epoch names one incarnation of the data set; it changes when the data set is
	// recreated (wiped and reseeded), which is how a watcher tells a reset from a late
	// notice. "" until the first write.
	epoch   string
	emptied bool
	objs    map[kind][][]byte // stored JSON by kind, all accounts
	// accounts is the stored JSON of every account (token hashes included), read at the
	// same version: a node keeps the whole data set it applied (see restore.go).
	accounts [][]byte
}

var (
	errReadAfterWrite = errors.New("store: internal error: read after write in one transaction")
	errNotIncremental = errors.New("store: change cannot be applied incrementally")
)

// notice is a change notice: the version a write committed, the data-set epoch it
// committed in and, when the write changed the entries of exactly one ACL (UpdateACL),
// that ACL. Its wire form (the Redis PUBLISH payload) is
//
//	<version> <epoch> [<account>/<ipacl_uuid>]
//
// (ids and accounts hold no '/'; see checkID). A notice is a hint: a watcher verifies
// everything it implies against the store before using it.
type notice struct {
	version      uint64
	epoch        string
	account, acl string // "" unless the write changed only this ACL
}

func (n notice) String() string {
	s := strconv.FormatUint(n.version, 10)
	if n.epoch == "" {
		return s
	}
	s += " " + n.epoch
	if n.acl != "" {
		s += " " + n.account + "/" + n.acl
	}
	return s
}

// parseNotice reads the wire form of a notice. The bare version of older writers is
// accepted; a malformed ACL reference is dropped (the notice still pokes), a malformed
// version is an error (the caller takes the full-reload path).
func parseNotice(s string) (notice, error) {
	f := strings.SplitN(s, " ", 3)
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return notice{}, err
	}
	n := notice{version: v}
	if len(f) > 1 {
		n.epoch = f[1]
	}
	if len(f) > 2 && n.epoch != "" { // a reference is meaningless without its epoch
		account, id, ok := strings.Cut(f[2], "/")
		if ok && checkID("account", account) == nil && checkID("ipacl_uuid", id) == nil {
			n.account, n.acl = account, id
		}
	}
	return n, nil
}

// changeValue is what markACLChange stores for version v: "<v> <account>/<id>".
func changeValue(v uint64, account, id string) string {
	return strconv.FormatUint(v, 10) + " " + account + "/" + id
}

// strictTx wraps a tx and fails any read that follows a write (see [tx]).
type strictTx struct {
	t     tx
	wrote bool
}

func (s *strictTx) r() error {
	if s.wrote {
		return errReadAfterWrite
	}
	return nil
}

func (s *strictTx) get(k kind, account, id string) ([]byte, error) {
	if err := s.r(); err != nil {
		return nil, err
	}
	return s.t.get(k, account, id)
}

func (s *strictTx) list(k kind, account string) ([][]byte, error) {
	if err := s.r(); err != nil {
		return nil, err
	}
	return s.t.list(k, account)
}

func (s *strictTx) countAll(max int) (int, error) {
	if err := s.r(); err != nil {
		return 0, err
	}
	return s.t.countAll(max)
}

func (s *strictTx) account(authID string) ([]byte, error) {
	if err := s.r(); err != nil {
		return nil, err
	}
	return s.t.account(authID)
}

func (s *strictTx) accounts() ([][]byte, error) {
	if err := s.r(); err != nil {
		return nil, err
	}
	return s.t.accounts()
}

func (s *strictTx) index(name, key string) (string, error) {
	if err := s.r(); err != nil {
		return "", err
	}
	return s.t.index(name, key)
}

func (s *strictTx) put(k kind, account, id string, v []byte) error {
	s.wrote = true
	return s.t.put(k, account, id, v)
}

func (s *strictTx) del(k kind, account, id string) error {
	s.wrote = true
	return s.t.del(k, account, id)
}

func (s *strictTx) putAccount(authID string, v []byte) error {
	s.wrote = true
	return s.t.putAccount(authID, v)
}

func (s *strictTx) putIndex(name, key, val string) error {
	s.wrote = true
	return s.t.putIndex(name, key, val)
}

func (s *strictTx) delIndex(name, key string) error {
	s.wrote = true
	return s.t.delIndex(name, key)
}

func (s *strictTx) setEmptied(on bool) error {
	s.wrote = true
	return s.t.setEmptied(on)
}

func (s *strictTx) nextVersion() (uint64, error) {
	if err := s.r(); err != nil {
		return 0, err
	}
	return s.t.nextVersion()
}

func (s *strictTx) idem(account, key string) ([]byte, error) {
	if err := s.r(); err != nil {
		return nil, err
	}
	return s.t.idem(account, key)
}

func (s *strictTx) putIdem(account, key string, v []byte, expires time.Time) error {
	s.wrote = true
	return s.t.putIdem(account, key, v, expires)
}

func (s *strictTx) appendAudit(account string, v []byte, limit int) error {
	s.wrote = true
	return s.t.appendAudit(account, v, limit)
}

func (s *strictTx) lastACLChange() (string, error) {
	if err := s.r(); err != nil {
		return "", err
	}
	return s.t.lastACLChange()
}

func (s *strictTx) markACLChange(v uint64, account, id string) error {
	s.wrote = true
	return s.t.markACLChange(v, account, id)
}

func (s *strictTx) wipe(accounts []string) error {
	s.wrote = true
	return s.t.wipe(accounts)
}

func (s *strictTx) rebase(next uint64, epoch string) error {
	s.wrote = true
	return s.t.rebase(next, epoch)
}

// pokes collects change notices for one watcher: the newest notice seen and whether a
// full reload was asked for. Notices coalesce; kick holds at most one wake-up, so a
// publisher never blocks. The zero value is not usable; use [newPokes].
type pokes struct {
	mu   sync.Mutex
	last notice // the notice of the highest version seen
	seen bool   // last is valid
	full bool
	kick chan struct{}
}

func newPokes() *pokes { return &pokes{kick: make(chan struct{}, 1)} }

// poke records notice n (full=false) or a request for a full reload (full=true).
func (p *pokes) poke(n notice, full bool) {
	p.mu.Lock()
	if full {
		p.full = true
	} else if !p.seen || n.version > p.last.version {
		p.last, p.seen = n, true
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// take returns and clears what was recorded since the last take.
func (p *pokes) take() (n notice, seen, full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, seen, full = p.last, p.seen, p.full
	p.last, p.seen, p.full = notice{}, false, false
	return n, seen, full
}
