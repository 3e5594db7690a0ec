package store

import (
	"github.com/redis/go-redis/v9"
)

// wipe queues the deletion of the data set's keys: the account hash, every account's
// object hashes, the global indexes, the emptied marker and the change marker. Audit
// logs, idempotency records, the node registry, bans and hits stay.
func (t *redisTx) wipe(accounts []string) error {
	keys := []string{t.r.kAccounts, t.r.kEmptied, t.r.kChange, t.r.idxKey(idxDomain), t.r.idxKey(idxUsername)}
	for _, k := range objectKinds {
		keys = append(keys, t.r.idxKey(string(k)))
		for _, a := range accounts {
			keys = append(keys, t.r.objKey(k, a))
		}
	}
	return t.queue(func(p redis.Pipeliner) { p.Del(t.ctx, keys...) })
}

// rebase queues SET version next-1 and SET epoch: the INCR and SETNX every write ends
// with then commit it as version next in that epoch.
func (t *redisTx) rebase(next uint64, epoch string) error {
	return t.queue(func(p redis.Pipeliner) {
		p.Set(t.ctx, t.r.kVersion, next-1, 0)
		p.Set(t.ctx, t.r.kEpoch, epoch, 0)
	})
}
