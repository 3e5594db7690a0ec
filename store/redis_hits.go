package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
)

// --- Redis -------------------------------------------------------------------------------
//
//	P+"hits:"+account+"/"+ipacl_uuid     hash        entry id → hit count (HINCRBY)
//	P+"hitlast:"+account+"/"+ipacl_uuid  sorted set  entry id, score = last_matched_at (Unix µs;
//	                                                 ZADD GT keeps the latest)
//
// '/' separates account and ACL because ids cannot hold it (checkID) but may hold ':'.
// The keys do not expire; a flush is one MULTI/EXEC, a read one MULTI/EXEC of both keys.

func (r *redisBackend) hitCountKey(account, aclUUID string) string {
	return r.prefix + "hits:" + account + "/" + aclUUID
}

func (r *redisBackend) hitLastKey(account, aclUUID string) string {
	return r.prefix + "hitlast:" + account + "/" + aclUUID
}

func (r *redisBackend) addHits(caller context.Context, ds []hitDelta) error {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range ds {
			p.HIncrBy(ctx, r.hitCountKey(d.account, d.acl), d.entry, d.count)
			if d.hasLast {
				p.ZAddGT(ctx, r.hitLastKey(d.account, d.acl), redis.Z{Score: float64(d.last), Member: d.entry})
			}
		}
		return nil
	})
	return r.classify(caller, err)
}

func (r *redisBackend) hits(caller context.Context, account, aclUUID string) (map[string]acl.HitStat, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	var (
		counts *redis.MapStringStringCmd
		lasts  *redis.ZSliceCmd
	)
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		counts = p.HGetAll(ctx, r.hitCountKey(account, aclUUID))
		lasts = p.ZRangeWithScores(ctx, r.hitLastKey(account, aclUUID), 0, -1)
		return nil
	})
	if err != nil {
		return nil, r.classify(caller, err)
	}
	out := make(map[string]acl.HitStat, len(counts.Val()))
	for entry, v := range counts.Val() {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store: redis: hit count of entry %s: %w", entry, err)
		}
		out[entry] = acl.HitStat{Count: n}
	}
	for _, z := range lasts.Val() {
		entry, ok := z.Member.(string)
		if !ok {
			continue
		}
		st := out[entry]
		st.LastMatchedAt = hitTime(int64(z.Score))
		out[entry] = st
	}
	return out, nil
}
