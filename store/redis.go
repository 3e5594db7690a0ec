package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Optimistic-locking retries of one Redis transaction: attempts, and the cap of the
// jittered backoff between them.
const (
	redisAttempts   = 100
	redisBackoffMax = 32 * time.Millisecond
)

// redisBackend keeps the data set in Redis hashes under one prefix. Every write WATCHes
// the version key, reads, and commits its writes with INCR version in one MULTI/EXEC;
// since every write increments the version, a commit by anyone else in between fails
// the EXEC and the write is retried from its reads. Reads spanning several keys use the
// same WATCH check, so they see one version.
type redisBackend struct {
	c       redis.UniversalClient
	timeout time.Duration
	log     zerolog.Logger
	probe   *probeState // the subscription's liveness probe (redis_probe.go)

	kVersion, kEpoch, kEmptied, kAccounts, kChannel, kChange, prefix string
}

func newRedisBackend(c redis.UniversalClient, o options) *redisBackend {
	p := o.prefix
	return &redisBackend{
		c:         c,
		timeout:   o.timeout,
		log:       o.log,
		probe:     &probeState{every: o.probeEvery, timeout: o.probeTimeout},
		prefix:    p,
		kVersion:  p + "version",
		kEpoch:    p + "epoch",
		kEmptied:  p + "emptied",
		kAccounts: p + "accounts",
		kChannel:  p + "changes",
		kChange:   p + "change",
	}
}

func (r *redisBackend) objKey(k kind, account string) string {
	return r.prefix + string(k) + ":" + account
}

func (r *redisBackend) idxKey(name string) string { return r.prefix + "idx:" + name }

func (r *redisBackend) auditKey(account string) string { return r.prefix + "audit:" + account }

// idemKey is the key of an idempotency record; key is a fixed-length hash, so the
// account is everything between "idem:" and the last ':'.
func (r *redisBackend) idemKey(account, key string) string {
	return r.prefix + "idem:" + account + ":" + key
}

// classify maps a Redis failure to the store's errors: unreachable, timed out or
// refusing service (LOADING, READONLY, …) is ErrUnavailable; the caller giving up is
// returned as such; anything else is a plain error.
func (r *redisBackend) classify(caller context.Context, err error) error {
	return classifyRedis(caller, err)
}

func classifyRedis(caller context.Context, err error) error {
	if err == nil {
		return nil
	}
	if caller.Err() != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	var re redis.Error
	if errors.As(err, &re) && !redis.IsLoadingError(err) && !redis.IsReadOnlyError(err) &&
		!redis.IsMasterDownError(err) && !redis.IsTryAgainError(err) && !redis.IsClusterDownError(err) &&
		!redis.IsMaxClientsError(err) && !redis.HasErrorPrefix(err, "BUSY") {
		return fmt.Errorf("store: redis: %w", err)
	}
	return fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
}

func jitter(attempt int) time.Duration {
	ceil := min(time.Millisecond<<min(attempt, 10), redisBackoffMax)
	return time.Duration(rand.Int64N(int64(ceil))) + 100*time.Microsecond
}

// errWriteRace: other writes kept committing between this one's reads and its EXEC until
// its attempts or its time ran out. Nothing was written and nothing about the request is
// wrong, so it is the store being busy (503 with Retry-After), not a conflict the client
// must resolve (409): a retry with the same Idempotency-Key is safe.
var errWriteRace = fmt.Errorf("%w: concurrent writes, retry", ErrUnavailable)

// watched runs fn on a connection that WATCHes the version key, then fn's queued writes
// and exec in one MULTI/EXEC on the same connection. It retries with jittered backoff
// when another write committed in between.
//
// A read-only fn (exec == nil) that issued more than one read command is verified the
// same way, with an EXEC of just a GET; a single read is atomic and needs no check. So
// is an error of fn: it is returned unchanged only when the reads it was based on saw
// one version (an error drawn from a mix of before and after another write — "username
// taken" by the very write whose idempotency key was read as unused — is retried).
func (r *redisBackend) watched(caller context.Context, fn func(t *redisTx) error, exec func(ctx context.Context, p redis.Pipeliner)) error {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		var fnErr error
		err := r.c.Watch(ctx, func(rtx *redis.Tx) error {
			t := &redisTx{ctx: ctx, caller: caller, r: r, c: rtx}
			fnErr = fn(t)
			if (exec == nil || fnErr != nil) && t.reads <= 1 {
				return nil // one command is atomic by itself: nothing to verify
			}
			_, err := rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				switch {
				case fnErr != nil:
					p.Get(ctx, r.kVersion) // verify only: EXEC fails if a write committed during the reads
				case exec != nil:
					for _, w := range t.writes {
						w(p)
					}
					exec(ctx, p)
				default:
					p.Get(ctx, r.kVersion)
				}
				return nil
			})
			if errors.Is(err, redis.Nil) {
				return nil // a GET of a missing key; the EXEC itself succeeded
			}
			return err
		}, r.kVersion)
		switch {
		case errors.Is(err, redis.TxFailedErr): // retried, whatever fn said
			if attempt == redisAttempts {
				return errWriteRace
			}
		case fnErr != nil:
			return fnErr
		case err == nil:
			return nil
		default:
			return r.classify(caller, err)
		}
		if !sleep(ctx, jitter(attempt)) {
			if caller.Err() != nil {
				return fmt.Errorf("store: redis: %w", caller.Err())
			}
			return errWriteRace
		}
	}
}

func (r *redisBackend) view(ctx context.Context, fn func(tx) error) error {
	return r.watched(ctx, func(t *redisTx) error { return fn(t) }, nil)
}

// loadAll reads the whole data set in one MULTI/EXEC, which Redis runs atomically, so
// concurrent writes never make it retry (a WATCHed read could starve under a stream of
// writes). The keys to read depend on the account list, read just before; the EXEC
// reads it again and a changed list (an account created in between) means another try.
func (r *redisBackend) loadAll(caller context.Context) (*rawSet, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		ids, err := r.c.HKeys(ctx, r.kAccounts).Result()
		if err != nil {
			return nil, r.classify(caller, err)
		}
		slices.Sort(ids)
		var (
			ver, ep *redis.StringCmd
			em      *redis.IntCmd
			accs    *redis.StringSliceCmd
			accVals *redis.StringSliceCmd
			vals    = make(map[kind][]*redis.StringSliceCmd, len(objectKinds))
		)
		_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			ver, ep, em = p.Get(ctx, r.kVersion), p.Get(ctx, r.kEpoch), p.Exists(ctx, r.kEmptied)
			accs = p.HKeys(ctx, r.kAccounts)
			accVals = p.HVals(ctx, r.kAccounts)
			for _, k := range objectKinds {
				for _, id := range ids {
					vals[k] = append(vals[k], p.HVals(ctx, r.objKey(k, id)))
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, r.classify(caller, err)
		}
		now := accs.Val()
		slices.Sort(now)
		if !slices.Equal(ids, now) {
			if attempt == redisAttempts {
				return nil, errWriteRace
			}
			continue
		}
		rs := &rawSet{epoch: ep.Val(), emptied: em.Val() > 0, objs: make(map[kind][][]byte, len(objectKinds))}
		if ver.Err() == nil {
			if rs.version, err = ver.Uint64(); err != nil {
				return nil, fmt.Errorf("store: redis: %s: %w", r.kVersion, err)
			}
		}
		for _, v := range accVals.Val() {
			rs.accounts = append(rs.accounts, []byte(v))
		}
		for k, cmds := range vals {
			for _, c := range cmds {
				for _, v := range c.Val() {
					rs.objs[k] = append(rs.objs[k], []byte(v))
				}
			}
		}
		return rs, nil
	}
}

func (r *redisBackend) update(ctx context.Context, fn func(tx) error) (uint64, string, error) {
	var (
		incr *redis.IntCmd
		ep   *redis.StringCmd
	)
	err := r.watched(ctx, func(t *redisTx) error { return fn(t) }, func(ctx context.Context, p redis.Pipeliner) {
		p.SetNX(ctx, r.kEpoch, uuid.NewString(), 0) // a new data set gets a new epoch
		incr = p.Incr(ctx, r.kVersion)
		ep = p.Get(ctx, r.kEpoch)
	})
	if err != nil {
		return 0, "", err
	}
	return uint64(incr.Val()), ep.Val(), nil
}

func (r *redisBackend) head(caller context.Context) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	var ver, ep *redis.StringCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver, ep = p.Get(ctx, r.kVersion), p.Get(ctx, r.kEpoch)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, "", r.classify(caller, err)
	}
	var v uint64
	if ver.Err() == nil {
		if v, err = ver.Uint64(); err != nil {
			return 0, "", fmt.Errorf("store: redis: %s: %w", r.kVersion, err)
		}
	}
	return v, ep.Val(), nil
}

// aclChange reads, in one MULTI/EXEC, the version, the epoch, the change marker and the
// ACL n names, and returns the ACL only when the data set is at n.version in n.epoch and
// the marker says that version's write changed just this ACL.
func (r *redisBackend) aclChange(caller context.Context, n notice) ([]byte, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	var ver, ep, ch, obj *redis.StringCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver, ep, ch = p.Get(ctx, r.kVersion), p.Get(ctx, r.kEpoch), p.Get(ctx, r.kChange)
		obj = p.HGet(ctx, r.objKey(kindACL, n.account), n.acl)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.classify(caller, err)
	}
	if ver.Val() != strconv.FormatUint(n.version, 10) || ep.Val() != n.epoch ||
		ch.Val() != changeValue(n.version, n.account, n.acl) || obj.Err() != nil {
		return nil, errNotIncremental
	}
	return []byte(obj.Val()), nil
}

// audit reads the length and one window of the account's audit list (newest first:
// writes LPUSH) in one MULTI/EXEC.
func (r *redisBackend) audit(caller context.Context, account string, p Page) ([][]byte, int, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	stop := int64(-1)
	if p.Limit > 0 {
		stop = int64(p.Offset + p.Limit - 1)
	}
	var n *redis.IntCmd
	var vals *redis.StringSliceCmd
	_, err := r.c.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		n = pl.LLen(ctx, r.auditKey(account))
		vals = pl.LRange(ctx, r.auditKey(account), int64(p.Offset), stop)
		return nil
	})
	if err != nil {
		return nil, 0, r.classify(caller, err)
	}
	out := make([][]byte, len(vals.Val()))
	for i, v := range vals.Val() {
		out[i] = []byte(v)
	}
	return out, int(n.Val()), nil
}

func (r *redisBackend) version(caller context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	v, err := r.c.Get(ctx, r.kVersion).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, r.classify(caller, err)
	}
	return v, nil
}

func (r *redisBackend) publish(caller context.Context, n notice) error {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	return r.classify(caller, r.c.Publish(ctx, r.kChannel, n.String()).Err())
}

func (r *redisBackend) incremental() bool { return false }

func (r *redisBackend) close() error { return r.c.Close() }

// redisTx reads on the WATCHing connection and queues writes for the MULTI/EXEC.
type redisTx struct {
	ctx    context.Context // bounded by the operation timeout
	caller context.Context
	r      *redisBackend
	c      *redis.Tx
	writes []func(redis.Pipeliner)
	reads  int // read commands (or pipelines) issued
}

func (t *redisTx) fail(err error) error { return t.r.classify(t.caller, err) }

func (t *redisTx) hget(key, field string) ([]byte, error) {
	t.reads++
	v, err := t.c.HGet(t.ctx, key, field).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail(err)
	}
	return v, nil
}

func (t *redisTx) queue(w func(p redis.Pipeliner)) error {
	t.writes = append(t.writes, w)
	return nil
}

func (t *redisTx) get(k kind, account, id string) ([]byte, error) {
	return t.hget(t.r.objKey(k, account), id)
}

func (t *redisTx) put(k kind, account, id string, v []byte) error {
	key := t.r.objKey(k, account)
	return t.queue(func(p redis.Pipeliner) { p.HSet(t.ctx, key, id, v) })
}

func (t *redisTx) del(k kind, account, id string) error {
	key := t.r.objKey(k, account)
	return t.queue(func(p redis.Pipeliner) { p.HDel(t.ctx, key, id) })
}

func (t *redisTx) list(k kind, account string) ([][]byte, error) {
	t.reads++
	vals, err := t.c.HVals(t.ctx, t.r.objKey(k, account)).Result()
	if err != nil {
		return nil, t.fail(err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// accountIDs lists the auth_ids; objects live only in existing accounts.
func (t *redisTx) accountIDs() ([]string, error) {
	t.reads++
	ids, err := t.c.HKeys(t.ctx, t.r.kAccounts).Result()
	if err != nil {
		return nil, t.fail(err)
	}
	return ids, nil
}

func (t *redisTx) countAll(int) (int, error) {
	ids, err := t.accountIDs()
	if err != nil {
		return 0, err
	}
	t.reads++
	var cmds []*redis.IntCmd
	if _, err := t.c.Pipelined(t.ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			for _, k := range objectKinds {
				cmds = append(cmds, p.HLen(t.ctx, t.r.objKey(k, id)))
			}
		}
		return nil
	}); err != nil {
		return 0, t.fail(err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

func (t *redisTx) account(authID string) ([]byte, error) { return t.hget(t.r.kAccounts, authID) }

func (t *redisTx) putAccount(authID string, v []byte) error {
	return t.queue(func(p redis.Pipeliner) { p.HSet(t.ctx, t.r.kAccounts, authID, v) })
}

func (t *redisTx) accounts() ([][]byte, error) {
	t.reads++
	vals, err := t.c.HVals(t.ctx, t.r.kAccounts).Result()
	if err != nil {
		return nil, t.fail(err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

func (t *redisTx) index(name, key string) (string, error) {
	v, err := t.hget(t.r.idxKey(name), key)
	return string(v), err
}

func (t *redisTx) putIndex(name, key, val string) error {
	k := t.r.idxKey(name)
	return t.queue(func(p redis.Pipeliner) { p.HSet(t.ctx, k, key, val) })
}

func (t *redisTx) delIndex(name, key string) error {
	k := t.r.idxKey(name)
	return t.queue(func(p redis.Pipeliner) { p.HDel(t.ctx, k, key) })
}

func (t *redisTx) setEmptied(on bool) error {
	if on {
		return t.queue(func(p redis.Pipeliner) { p.Set(t.ctx, t.r.kEmptied, "1", 0) })
	}
	return t.queue(func(p redis.Pipeliner) { p.Del(t.ctx, t.r.kEmptied) })
}

// nextVersion reads the version key on the WATCHing connection: a write committing in
// between fails this transaction's EXEC, so the INCR in it yields exactly this + 1.
func (t *redisTx) nextVersion() (uint64, error) {
	t.reads++
	v, err := t.c.Get(t.ctx, t.r.kVersion).Uint64()
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	if err != nil {
		return 0, t.fail(err)
	}
	return v + 1, nil
}

func (t *redisTx) idem(account, key string) ([]byte, error) {
	t.reads++
	v, err := t.c.Get(t.ctx, t.r.idemKey(account, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail(err)
	}
	return v, nil
}

// putIdem queues SET key v PX ttl: the record commits (and expires) with the write.
func (t *redisTx) putIdem(account, key string, v []byte, expires time.Time) error {
	k := t.r.idemKey(account, key)
	ttl := max(time.Until(expires), time.Millisecond)
	return t.queue(func(p redis.Pipeliner) { p.Set(t.ctx, k, v, ttl) })
}

// appendAudit queues LPUSH and LTRIM, so the list keeps the newest limit entries.
func (t *redisTx) appendAudit(account string, v []byte, limit int) error {
	k := t.r.auditKey(account)
	return t.queue(func(p redis.Pipeliner) {
		p.LPush(t.ctx, k, v)
		if limit > 0 {
			p.LTrim(t.ctx, k, 0, int64(limit-1))
		}
	})
}

func (t *redisTx) lastACLChange() (string, error) {
	t.reads++
	v, err := t.c.Get(t.ctx, t.r.kChange).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", t.fail(err)
	}
	return v, nil
}

func (t *redisTx) markACLChange(v uint64, account, id string) error {
	val := changeValue(v, account, id)
	return t.queue(func(p redis.Pipeliner) { p.Set(t.ctx, t.r.kChange, val, 0) })
}
