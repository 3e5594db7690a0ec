package store

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

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
	b   backend
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
		s.bans = &Bans{b: s.b, now: time.Now, m: s.m, max: MaxBans}
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
	return b.b.addFailure(ctx, source, window, b.now())
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
	n, err := b.b.ban(ctx, ban, ttl, b.max, b.now())
	b.m.bansEvicted(n)
	return err
}

// List returns the bans in force, sorted by source.
func (b *Bans) List(ctx context.Context) ([]acl.Ban, error) {
	out, err := b.b.listBans(ctx, b.now())
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(x, y acl.Ban) int { return cmp.Compare(x.IP, y.IP) })
	return out, nil
}

// Lift removes source's ban and failure count; false when it was not banned.
func (b *Bans) Lift(ctx context.Context, source string) (bool, error) {
	if err := checkSource(source); err != nil {
		return false, err
	}
	return b.b.lift(ctx, source, b.now())
}
