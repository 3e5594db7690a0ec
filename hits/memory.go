package hits

import (
	"context"
	"maps"
	"sync"

	"github.com/sipedge/sipedge/acl"
)

// Memory is an in-process hit store: the totals of one node, lost on restart. It has
// the two methods the store implements for real (AddHits as [Recorder.Run]'s flush
// function, Hits for the control API), so a single node can show hit counts before, or
// without, a persistent store, and tests need no backend.
//
// The zero value is ready to use. Safe for concurrent use. Must not be copied.
type Memory struct {
	mu sync.RWMutex
	m  map[aclKey]map[string]acl.HitStat // (account, ACL) → entry id → totals
}

type aclKey struct{ account, acl string }

// AddHits adds each delta to its entry's total, keeping the latest LastMatchedAt.
func (m *Memory) AddHits(_ context.Context, hs []acl.Hit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[aclKey]map[string]acl.HitStat{}
	}
	for _, h := range hs {
		k := aclKey{h.Account, h.ACLUUID}
		es := m.m[k]
		if es == nil {
			es = map[string]acl.HitStat{}
			m.m[k] = es
		}
		es[h.EntryID] = es[h.EntryID].Add(h)
	}
	return nil
}

// Hits returns the totals of the entries of one ACL that were ever hit, by entry id
// (a copy; entries never hit are absent).
func (m *Memory) Hits(_ context.Context, account, aclUUID string) (map[string]acl.HitStat, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.m[aclKey{account, aclUUID}]), nil
}
