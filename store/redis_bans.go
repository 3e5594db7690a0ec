package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
)

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

func (r *redisBackend) addFailure(caller context.Context, src string, window time.Duration, _ time.Time) (int64, error) {
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
func (r *redisBackend) ban(caller context.Context, b acl.Ban, ttl time.Duration, limit int, _ time.Time) (int, error) {
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
	vals, err := r.mgetMembers(ctx, caller, srcs, r.banKey)
	if err != nil || len(vals) == 0 {
		return nil, err
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

func (r *redisBackend) lift(caller context.Context, src string, _ time.Time) (bool, error) {
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

// mgetMembers reads the string value of key(m) for every index member m in one MGET:
// nil for a member whose key is gone (expired, lifted).
func (r *redisBackend) mgetMembers(ctx, caller context.Context, members []string, key func(string) string) ([]any, error) {
	if len(members) == 0 {
		return nil, nil
	}
	keys := make([]string, len(members))
	for i, m := range members {
		keys[i] = key(m)
	}
	vals, err := r.c.MGet(ctx, keys...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.classify(caller, err)
	}
	return vals, nil
}
