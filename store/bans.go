package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
)

// Bans is the shared ban list of the SIP brute-force defence: failure counters per
// source and time window, and bans with an end. It satisfies sip.BanStore; the SIP
// layer calls it only in the background, never on a request's path.
//
// In Redis mode every node on the data set shares it (key schema below); in
// embedded mode it lives in this process's memory, bounded, with the same semantics.
// A source is an IPv4 address ("192.0.2.10") or an IPv6 /64 ("2001:db8::/64"), as
// acl.Ban.IP spells it. Get it with [Store.Bans]. Safe for concurrent use.
type Bans struct {
	r   *redisBackend // nil: embedded
	mem *memBans
	now func() time.Time
	m   *metrics
	max int // bans kept (MaxBans): beyond it the ban ending first is evicted
}

// MaxBans bounds the shared ban list (in Redis and in memory): a new ban beyond it
// evicts the bans that end first, counted by sipedge_store_bans_evicted_total. Sources
// come from outside (an IPv6 attacker has 2^64 /64s), so the list must not grow with them.
const MaxBans = 1 << 16

// ErrInvalidSource is returned (wrapping [ErrInvalid]) for a source that is neither an
// IPv4 address nor an IPv6 /64.
var ErrInvalidSource = fmt.Errorf("%w: ban source must be an IPv4 address or an IPv6 /64", ErrInvalid)

// Bans returns the shared ban list of s (one per Store, built on first use).
func (s *Store) Bans() *Bans {
	s.bansOnce.Do(func() {
		b := &Bans{now: time.Now, m: s.m, max: MaxBans}
		if r, ok := s.b.(*redisBackend); ok {
			b.r = r
		} else {
			b.mem = &memBans{fails: map[string]memFail{}, bans: map[string]acl.Ban{}}
		}
		s.bans = b
	})
	return s.bans
}

// checkSource accepts "a.b.c.d" and "x:x:x:x::/64" (canonical forms only, so one source
// has one key).
func checkSource(src string) error {
	if a, err := netip.ParseAddr(src); err == nil && a.Is4() && a.String() == src {
		return nil
	}
	if p, err := netip.ParsePrefix(src); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() &&
		p.Bits() == 64 && p.Masked() == p && p.String() == src {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrInvalidSource, src)
}

// AddFailure counts one failure of source in its current window and returns the count.
// The window starts with the first failure and lasts window; the next failure after it
// starts a new one.
func (b *Bans) AddFailure(ctx context.Context, source string, window time.Duration) (int64, error) {
	if err := checkSource(source); err != nil {
		return 0, err
	}
	if window <= 0 {
		return 0, fmt.Errorf("%w: failure window %v", ErrInvalid, window)
	}
	if b.r != nil {
		return b.r.addFailure(ctx, source, window)
	}
	return b.mem.addFailure(source, window, b.now()), nil
}

// Ban stores ban until ban.Until, replacing any ban of the same source, and clears the
// source's failure count. A ban that has already ended is ignored.
func (b *Bans) Ban(ctx context.Context, ban acl.Ban) error {
	if err := checkSource(ban.IP); err != nil {
		return err
	}
	ttl := ban.Until.Sub(b.now())
	if ttl <= 0 {
		return nil
	}
	if b.r != nil {
		n, err := b.r.ban(ctx, ban, ttl, b.max)
		b.m.bansEvicted(n)
		return err
	}
	b.m.bansEvicted(b.mem.ban(ban, b.now(), b.max))
	return nil
}

// List returns the bans in force, sorted by source.
func (b *Bans) List(ctx context.Context) ([]acl.Ban, error) {
	var out []acl.Ban
	if b.r != nil {
		var err error
		if out, err = b.r.listBans(ctx, b.now()); err != nil {
			return nil, err
		}
	} else {
		out = b.mem.list(b.now())
	}
	slices.SortFunc(out, func(x, y acl.Ban) int { return cmp.Compare(x.IP, y.IP) })
	return out, nil
}

// Lift removes source's ban and failure count; false when it was not banned.
func (b *Bans) Lift(ctx context.Context, source string) (bool, error) {
	if err := checkSource(source); err != nil {
		return false, err
	}
	if b.r != nil {
		return b.r.lift(ctx, source)
	}
	return b.mem.lift(source, b.now()), nil
}

// --- Redis ------------------------------------------------------------------------------
//
//	P+"banfail:"+source  string, PX = window   failure count of the current window (INCR)
//	P+"ban:"+source      string, PX = ban TTL  acl.Ban JSON
//	P+"bans"             sorted set            sources, score = ban end (Unix ms): an index,
//	                                           so List needs no SCAN; members whose key is
//	                                           gone are skipped and dropped after an hour

func (r *redisBackend) banKey(src string) string  { return r.prefix + "ban:" + src }
func (r *redisBackend) failKey(src string) string { return r.prefix + "banfail:" + src }
func (r *redisBackend) banIndex() string          { return r.prefix + "bans" }

// incrWindow increments a counter and starts its expiry with the first increment (or
// when a counter somehow lost its expiry), atomically.
var incrWindow = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n`)

func (r *redisBackend) addFailure(caller context.Context, src string, window time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	n, err := incrWindow.Run(ctx, r.c, []string{r.failKey(src)}, window.Milliseconds()).Int64()
	if err != nil {
		return 0, r.classify(caller, err)
	}
	return n, nil
}

const banIndexGrace = time.Hour

// ban stores b and, when the index then holds more than limit sources, evicts the ones
// whose bans end first; it returns how many it evicted.
func (r *redisBackend) ban(caller context.Context, b acl.Ban, ttl time.Duration, limit int) (int, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("store: encode ban: %w", err)
	}
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	var card *redis.IntCmd
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.banKey(b.IP), raw, max(ttl, time.Millisecond))
		p.ZAdd(ctx, r.banIndex(), redis.Z{Score: float64(b.Until.UnixMilli()), Member: b.IP})
		p.Del(ctx, r.failKey(b.IP))
		p.ZRemRangeByScore(ctx, r.banIndex(), "-inf", "("+strconv.FormatInt(time.Now().Add(-banIndexGrace).UnixMilli(), 10))
		card = p.ZCard(ctx, r.banIndex())
		return nil
	})
	if err != nil {
		return 0, r.classify(caller, err)
	}
	return r.evictBans(caller, card.Val(), limit)
}

// evictBans removes the n-limit sources whose bans end first (not atomic with the ban
// that overflowed: two nodes racing may evict a few more than needed, never fewer).
func (r *redisBackend) evictBans(caller context.Context, n int64, limit int) (int, error) {
	if limit <= 0 || n <= int64(limit) {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	srcs, err := r.c.ZRange(ctx, r.banIndex(), 0, n-int64(limit)-1).Result()
	if err != nil || len(srcs) == 0 {
		return 0, r.classify(caller, err)
	}
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		keys := make([]string, len(srcs))
		members := make([]any, len(srcs))
		for i, s := range srcs {
			keys[i], members[i] = r.banKey(s), s
		}
		p.Del(ctx, keys...)
		p.ZRem(ctx, r.banIndex(), members...)
		return nil
	})
	if err != nil {
		return 0, r.classify(caller, err)
	}
	return len(srcs), nil
}

func (r *redisBackend) listBans(caller context.Context, now time.Time) ([]acl.Ban, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	srcs, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: r.banIndex(), ByScore: true,
		Start: "(" + strconv.FormatInt(now.UnixMilli(), 10), Stop: "+inf"}).Result()
	if err != nil {
		return nil, r.classify(caller, err)
	}
	if len(srcs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(srcs))
	for i, s := range srcs {
		keys[i] = r.banKey(s)
	}
	vals, err := r.c.MGet(ctx, keys...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.classify(caller, err)
	}
	out := make([]acl.Ban, 0, len(vals))
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // lifted or expired
		}
		var b acl.Ban
		if err := json.Unmarshal([]byte(raw), &b); err != nil || b.IP != srcs[i] {
			continue // not ours to judge: skip rather than fail every node's refresh
		}
		if b.Until.After(now) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (r *redisBackend) lift(caller context.Context, src string) (bool, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	var del *redis.IntCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, r.banKey(src))
		p.ZRem(ctx, r.banIndex(), src)
		p.Del(ctx, r.failKey(src))
		return nil
	})
	if err != nil {
		return false, r.classify(caller, err)
	}
	return del.Val() > 0, nil
}

// --- embedded -------------------------------------------------------------------------

// memBans is the embedded mode's ban list: bounded maps, expired entries dropped when
// full or listed.
type memBans struct {
	mu    sync.Mutex
	fails map[string]memFail
	bans  map[string]acl.Ban
}

type memFail struct {
	n   int64
	end time.Time
}

const maxMemBans = 1 << 16

func (m *memBans) addFailure(src string, window time.Duration, now time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.fails[src]
	if !ok || !now.Before(f.end) {
		if !ok && len(m.fails) >= maxMemBans {
			for k, v := range m.fails {
				if !now.Before(v.end) {
					delete(m.fails, k)
				}
			}
			if len(m.fails) >= maxMemBans {
				return 1 // full of live counters: count this one alone
			}
		}
		f = memFail{end: now.Add(window)}
	}
	f.n++
	m.fails[src] = f
	return f.n
}

// ban stores b; when the list is full of live bans it evicts the one ending first and
// returns 1 (else 0).
func (m *memBans) ban(b acl.Ban, now time.Time, limit int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	evicted := 0
	if _, ok := m.bans[b.IP]; !ok && len(m.bans) >= limit {
		m.dropExpired(now)
		if len(m.bans) >= limit {
			first := ""
			for k, o := range m.bans {
				if first == "" || o.Until.Before(m.bans[first].Until) {
					first = k
				}
			}
			delete(m.bans, first)
			evicted = 1
		}
	}
	m.bans[b.IP] = b
	delete(m.fails, b.IP)
	return evicted
}

func (m *memBans) dropExpired(now time.Time) {
	for k, b := range m.bans {
		if !b.Until.After(now) {
			delete(m.bans, k)
		}
	}
}

func (m *memBans) list(now time.Time) []acl.Ban {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropExpired(now)
	out := make([]acl.Ban, 0, len(m.bans))
	for _, b := range m.bans {
		out = append(out, b)
	}
	return out
}

func (m *memBans) lift(src string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.bans[src]
	delete(m.bans, src)
	delete(m.fails, src)
	return ok && b.Until.After(now)
}
