package store

import (
	"context"
	"sync"
	"time"

	"github.com/sipedge/sipedge/acl"
)

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

// The embedded backend's ban list is memBans (Redis: redis_bans.go).

func (b *boltBackend) addFailure(_ context.Context, src string, window time.Duration, now time.Time) (int64, error) {
	return b.bans.addFailure(src, window, now), nil
}

func (b *boltBackend) ban(_ context.Context, ban acl.Ban, _ time.Duration, limit int, now time.Time) (int, error) {
	return b.bans.ban(ban, now, limit), nil
}

func (b *boltBackend) listBans(_ context.Context, now time.Time) ([]acl.Ban, error) {
	return b.bans.list(now), nil
}

func (b *boltBackend) lift(_ context.Context, src string, now time.Time) (bool, error) {
	return b.bans.lift(src, now), nil
}
