package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sipedge/sipedge/acl"
)

// BoltFile is the name of the database file [OpenBolt] keeps in its directory.
const BoltFile = "sipedge.db"

// Bucket names of the embedded store (see README.md, "Key schema").
var (
	bucketMeta     = []byte("meta")
	bucketAccounts = []byte("accounts")
	keyVersion     = []byte("version")
	keyEpoch       = []byte("epoch")
	keyEmptied     = []byte("emptied")

	bucketAudit   = []byte("audit")    // account NUL seq (8 bytes BE) → AuditEntry JSON
	bucketAuditN  = []byte("audit:n")  // account → number of entries (8 bytes BE)
	bucketIdem    = []byte("idem")     // account NUL key hash → idempotency record
	bucketIdemExp = []byte("idem:exp") // expiry (8 bytes BE, Unix ns) account NUL key hash → ""
)

// idemPruneBatch bounds how many expired idempotency records one write removes.
const idemPruneBatch = 64

func idxBucket(name string) []byte { return []byte("idx:" + name) }

// OpenBolt opens (creating it if needed) the embedded store in directory dir (the
// --data-dir; created with mode 0700), file [BoltFile]. Only one process can hold the
// file: when another does, OpenBolt fails after the open timeout (1 s, see
// [WithTimeout]) with an error that says so. Close the store when done.
func OpenBolt(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	path := filepath.Join(dir, BoltFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.openTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: the file is locked by another process (another sipedge with the same --data-dir?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(initBolt); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	s, err := newStore(&boltBackend{db: db, bans: memBans{fails: map[string]memFail{}, bans: map[string]acl.Ban{}}}, o)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.log.Info().Str("path", path).Msg("embedded store opened")
	return s, nil
}

func initBolt(btx *bolt.Tx) error {
	names := [][]byte{bucketMeta, bucketAccounts, idxBucket(idxDomain), idxBucket(idxUsername),
		bucketAudit, bucketAuditN, bucketIdem, bucketIdemExp}
	for _, k := range objectKinds {
		names = append(names, []byte(k), idxBucket(string(k)))
	}
	for _, n := range names {
		if _, err := btx.CreateBucketIfNotExists(n); err != nil {
			return err
		}
	}
	meta := btx.Bucket(bucketMeta)
	if meta.Get(keyEpoch) == nil {
		return meta.Put(keyEpoch, []byte(uuid.NewString()))
	}
	return nil
}

// boltBackend keeps the data set in one bbolt file. bbolt serialises writers and gives
// readers a consistent view, so every rule of [backend] holds by construction.
type boltBackend struct {
	db       *bolt.DB
	subs     fanout
	registry memRegistry // node registry (bolt_nodes.go)
	bans     memBans     // ban list (bolt_bans.go)
}

func (b *boltBackend) view(ctx context.Context, fn func(tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(btx *bolt.Tx) error { return fn(boltTx{btx}) })
}

func (b *boltBackend) update(ctx context.Context, fn func(tx) error) (uint64, string, error) {
	if err := ctx.Err(); err != nil {
		return 0, "", err
	}
	var (
		v     uint64
		epoch string
	)
	err := b.db.Update(func(btx *bolt.Tx) error {
		if err := fn(boltTx{btx}); err != nil {
			return err
		}
		meta := btx.Bucket(bucketMeta)
		v = readUint(meta.Get(keyVersion)) + 1
		epoch = string(meta.Get(keyEpoch))
		return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, v))
	})
	if err != nil {
		return 0, "", err
	}
	return v, epoch, nil
}

func (b *boltBackend) head(ctx context.Context) (uint64, string, error) {
	if err := ctx.Err(); err != nil {
		return 0, "", err
	}
	var (
		v     uint64
		epoch string
	)
	err := b.db.View(func(btx *bolt.Tx) error {
		meta := btx.Bucket(bucketMeta)
		v, epoch = readUint(meta.Get(keyVersion)), string(meta.Get(keyEpoch))
		return nil
	})
	return v, epoch, err
}

// aclChange: the embedded watcher uses the per-process hint log instead.
func (b *boltBackend) aclChange(context.Context, notice) ([]byte, error) {
	return nil, errNotIncremental
}

func (b *boltBackend) audit(ctx context.Context, account string, p Page) ([][]byte, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var (
		out   [][]byte
		total int
	)
	err := b.db.View(func(btx *bolt.Tx) error {
		total = int(readUint(btx.Bucket(bucketAuditN).Get([]byte(account))))
		prefix := []byte(account + "\x00")
		c := btx.Bucket(bucketAudit).Cursor()
		// The newest entry is the last key with the prefix: step back from the first key
		// after it (ids hold no control characters, so account+"\x01" sorts after them).
		var k, v []byte
		if k, _ = c.Seek([]byte(account + "\x01")); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for skip := p.Offset; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Prev() {
			if skip > 0 {
				skip--
				continue
			}
			if p.Limit > 0 && len(out) == p.Limit {
				break
			}
			out = append(out, clone(v))
		}
		return nil
	})
	return out, total, err
}

func (b *boltBackend) version(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var v uint64
	err := b.db.View(func(btx *bolt.Tx) error {
		v = readUint(btx.Bucket(bucketMeta).Get(keyVersion))
		return nil
	})
	return v, err
}

func (b *boltBackend) loadAll(ctx context.Context) (*rawSet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs := &rawSet{objs: make(map[kind][][]byte, len(objectKinds))}
	err := b.db.View(func(btx *bolt.Tx) error {
		meta := btx.Bucket(bucketMeta)
		rs.version = readUint(meta.Get(keyVersion))
		rs.epoch = string(meta.Get(keyEpoch))
		rs.emptied = meta.Get(keyEmptied) != nil
		if err := btx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
			rs.accounts = append(rs.accounts, clone(v))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range objectKinds {
			err := btx.Bucket([]byte(k)).ForEach(func(_, v []byte) error {
				rs.objs[k] = append(rs.objs[k], clone(v))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rs, nil
}

func (b *boltBackend) publish(_ context.Context, n notice) error {
	b.subs.send(n)
	return nil
}

func (b *boltBackend) subscribe(ctx context.Context, p *pokes) (<-chan struct{}, error) {
	return b.subs.add(ctx, p), nil
}

func (b *boltBackend) incremental() bool { return true }

// subscription: in-process notices cannot go deaf; nothing to probe.
func (b *boltBackend) subscription() SubscriptionStatus { return SubscriptionStatus{} }

func (b *boltBackend) close() error { return b.db.Close() }

func readUint(raw []byte) uint64 {
	if len(raw) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(raw)
}

// boltTx maps [tx] onto buckets: one per kind keyed account+"\x00"+id (ids hold no
// control characters, see checkID), one per index, "accounts" and "meta".
type boltTx struct{ t *bolt.Tx }

func objKey(account, id string) []byte { return []byte(account + "\x00" + id) }

// clone copies a value out of the mmap; bbolt's slices die with the transaction.
func clone(v []byte) []byte {
	if v == nil {
		return nil
	}
	return bytes.Clone(v)
}

func (t boltTx) get(k kind, account, id string) ([]byte, error) {
	return clone(t.t.Bucket([]byte(k)).Get(objKey(account, id))), nil
}

func (t boltTx) put(k kind, account, id string, v []byte) error {
	return t.t.Bucket([]byte(k)).Put(objKey(account, id), v)
}

func (t boltTx) del(k kind, account, id string) error {
	return t.t.Bucket([]byte(k)).Delete(objKey(account, id))
}

func (t boltTx) list(k kind, account string) ([][]byte, error) {
	var out [][]byte
	prefix := []byte(account + "\x00")
	c := t.t.Bucket([]byte(k)).Cursor()
	for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
		out = append(out, clone(v))
	}
	return out, nil
}

func (t boltTx) countAll(max int) (int, error) {
	n := 0
	for _, k := range objectKinds {
		c := t.t.Bucket([]byte(k)).Cursor()
		for key, _ := c.First(); key != nil && n < max; key, _ = c.Next() {
			n++
		}
	}
	return n, nil
}

func (t boltTx) account(authID string) ([]byte, error) {
	return clone(t.t.Bucket(bucketAccounts).Get([]byte(authID))), nil
}

func (t boltTx) putAccount(authID string, v []byte) error {
	return t.t.Bucket(bucketAccounts).Put([]byte(authID), v)
}

func (t boltTx) accounts() ([][]byte, error) {
	var out [][]byte
	err := t.t.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
		out = append(out, clone(v))
		return nil
	})
	return out, err
}

func (t boltTx) index(name, key string) (string, error) {
	return string(t.t.Bucket(idxBucket(name)).Get([]byte(key))), nil
}

func (t boltTx) putIndex(name, key, val string) error {
	return t.t.Bucket(idxBucket(name)).Put([]byte(key), []byte(val))
}

func (t boltTx) delIndex(name, key string) error {
	return t.t.Bucket(idxBucket(name)).Delete([]byte(key))
}

func (t boltTx) setEmptied(on bool) error {
	meta := t.t.Bucket(bucketMeta)
	if on {
		return meta.Put(keyEmptied, []byte("1"))
	}
	return meta.Delete(keyEmptied)
}

func (t boltTx) nextVersion() (uint64, error) {
	return readUint(t.t.Bucket(bucketMeta).Get(keyVersion)) + 1, nil
}

func (t boltTx) idem(account, key string) ([]byte, error) {
	return clone(t.t.Bucket(bucketIdem).Get(objKey(account, key))), nil
}

// putIdem stores the record with its expiry in a second bucket ordered by expiry, and
// removes up to idemPruneBatch records that have expired (lazy pruning: every record
// also carries its expiry, which readers check).
func (t boltTx) putIdem(account, key string, v []byte, expires time.Time) error {
	exp := t.t.Bucket(bucketIdemExp)
	recs := t.t.Bucket(bucketIdem)
	now := uint64(time.Now().UnixNano())
	c := exp.Cursor()
	var stale [][]byte
	for k, _ := c.First(); k != nil && len(stale) < idemPruneBatch && len(k) > 8 && binary.BigEndian.Uint64(k) < now; k, _ = c.Next() {
		stale = append(stale, clone(k))
	}
	for _, k := range stale {
		if err := exp.Delete(k); err != nil {
			return err
		}
		if err := recs.Delete(k[8:]); err != nil {
			return err
		}
	}
	id := objKey(account, key)
	if err := recs.Put(id, v); err != nil {
		return err
	}
	return exp.Put(append(binary.BigEndian.AppendUint64(nil, uint64(expires.UnixNano())), id...), nil)
}

func (t boltTx) appendAudit(account string, v []byte, limit int) error {
	b := t.t.Bucket(bucketAudit)
	counts := t.t.Bucket(bucketAuditN)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(binary.BigEndian.AppendUint64([]byte(account+"\x00"), seq), v); err != nil {
		return err
	}
	n := readUint(counts.Get([]byte(account))) + 1
	prefix := []byte(account + "\x00")
	c := b.Cursor()
	for k, _ := c.Seek(prefix); limit > 0 && n > uint64(limit) && k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := b.Delete(k); err != nil {
			return err
		}
		n--
	}
	return counts.Put([]byte(account), binary.BigEndian.AppendUint64(nil, n))
}

// markACLChange: the embedded watcher shares this process and uses its hint log.
func (t boltTx) markACLChange(uint64, string, string) error { return nil }

// lastACLChange: one process writes the embedded store, so its tenancy index is never
// behind another node's write.
func (t boltTx) lastACLChange() (string, error) { return "", nil }

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

func (f *fanout) send(n notice) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.subs {
		p.poke(n, false)
	}
}
