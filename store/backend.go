package store

import (
	"context"
	"errors"
	"sync"
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
	// is returned. If fn (or the commit) fails, nothing changes. fn may run more than once
	// (optimistic retries), so it must derive everything from what it reads.
	update(ctx context.Context, fn func(tx) error) (uint64, error)
	// version returns the current global version (0 for a fresh data set).
	version(ctx context.Context) (uint64, error)
	// publish announces a committed version to every subscriber (a poke; losing one is
	// tolerated, subscribers also resync periodically).
	publish(ctx context.Context, v uint64) error
	// subscribe makes the backend poke p on every published version until ctx is done;
	// done is closed when it has stopped. It returns once the subscription is confirmed,
	// so a load that starts after it cannot miss a change.
	subscribe(ctx context.Context, p *pokes) (done <-chan struct{}, err error)
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
}

var errReadAfterWrite = errors.New("store: internal error: read after write in one transaction")

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

// pokes collects change notices for one watcher: the highest version seen and whether a
// full reload was asked for. Notices coalesce; kick holds at most one wake-up, so a
// publisher never blocks. The zero value is not usable; use [newPokes].
type pokes struct {
	mu   sync.Mutex
	max  uint64
	seen bool // max is valid
	full bool
	kick chan struct{}
}

func newPokes() *pokes { return &pokes{kick: make(chan struct{}, 1)} }

// poke records version v (full=false) or a request for a full reload (full=true).
func (p *pokes) poke(v uint64, full bool) {
	p.mu.Lock()
	if full {
		p.full = true
	} else if !p.seen || v > p.max {
		p.max, p.seen = v, true
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// take returns and clears what was recorded since the last take.
func (p *pokes) take() (v uint64, seen, full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, seen, full = p.max, p.seen, p.full
	p.max, p.seen, p.full = 0, false, false
	return v, seen, full
}

// fanout delivers published versions to in-process subscribers (embedded mode).
type fanout struct {
	mu   sync.Mutex
	subs map[*pokes]struct{}
}

func (f *fanout) add(ctx context.Context, p *pokes) <-chan struct{} {
	f.mu.Lock()
	if f.subs == nil {
		f.subs = make(map[*pokes]struct{})
	}
	f.subs[p] = struct{}{}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, p)
		f.mu.Unlock()
	}()
	return done
}

func (f *fanout) send(v uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.subs {
		p.poke(v, false)
	}
}
