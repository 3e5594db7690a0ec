package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ---- Redis ----
//
// P+"node:"+id is a string holding the NodeStatus JSON, written with SET PX ttl: Redis
// expires it, so liveness needs no clock agreement between nodes. P+"nodes" is a sorted
// set of node ids (score: lease end, Unix ms) that indexes them without a SCAN of the
// keyspace; members whose key expired are skipped and dropped an hour later.

func (r *redisBackend) nodeKey(id string) string { return r.prefix + "node:" + id }
func (r *redisBackend) nodeIndex() string        { return r.prefix + "nodes" }

func (r *redisBackend) heartbeat(caller context.Context, st NodeStatus, ttl time.Duration) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("store: encode node status: %w", err)
	}
	id := st.NodeID
	ctx, cancel := context.WithTimeout(caller, min(r.timeout, ttl))
	defer cancel()
	now := time.Now()
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.nodeKey(id), raw, ttl)
		p.ZAdd(ctx, r.nodeIndex(), redis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: id})
		p.ZRemRangeByScore(ctx, r.nodeIndex(), "-inf", "("+strconv.FormatInt(now.Add(-nodeIndexGrace).UnixMilli(), 10))
		return nil
	})
	return r.classify(caller, err)
}

func (r *redisBackend) deregister(caller context.Context, id string) error {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.nodeKey(id))
		p.ZRem(ctx, r.nodeIndex(), id)
		return nil
	})
	return r.classify(caller, err)
}

func (r *redisBackend) nodes(caller context.Context) ([]NodeStatus, error) {
	ctx, cancel := context.WithTimeout(caller, r.timeout)
	defer cancel()
	ids, err := r.c.ZRange(ctx, r.nodeIndex(), 0, -1).Result()
	if err != nil {
		return nil, r.classify(caller, err)
	}
	vals, err := r.mgetMembers(ctx, caller, ids, r.nodeKey)
	if err != nil || len(vals) == 0 {
		return nil, err
	}
	out := make([]NodeStatus, 0, len(vals))
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // lease ran out
		}
		var st NodeStatus
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", r.nodeKey(ids[i]), err)
		}
		out = append(out, st)
	}
	return out, nil
}
