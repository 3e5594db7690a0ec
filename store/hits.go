package store

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// Per-entry hit counts (issue 8, part 4): how many SIP requests each IP ACL entry let in,
// and when it last did. They are telemetry, kept like the ban list outside the versioned
// data set: adding hits bumps no version, publishes no change notice, writes no audit
// entry and is not part of a snapshot or of Load.

// maxHitMicros bounds last_matched_at (Unix µs) so that it is exact as a Redis sorted-set
// score (a float64): ±2^53 µs is about ±285 years around 1970.
const maxHitMicros = 1 << 53

// hitDelta is one entry's validated share of a flush.
type hitDelta struct {
	account, acl, entry string
	count               int64
	last                int64 // Unix µs of the latest hit; meaningful only with hasLast
	hasLast             bool
}

// AddHits adds hit deltas, as [hits.Recorder.Run] flushes them, to the totals kept per
// entry: counts add up — in Redis mode across every node on the data set — and the latest
// LastMatchedAt wins. It is the flush function of the recorder.
//
// Hit counts are telemetry: AddHits does not bump the data-set version, publish a change
// notice or write an audit entry, and [Store.Watch] never sees it. The entries need not
// exist (a flush may come after an entry was deleted). A hit that cannot be stored — an
// empty or malformed account, ACL or entry id (see the id rules in README.md), a zero
// Count or one above math.MaxInt64, a LastMatchedAt more than 285 years from 1970 — is
// skipped and logged, not returned as an error: the recorder resends a failed flush
// whole, so one bad hit must not hold back the others. A zero LastMatchedAt adds the
// count and leaves the time alone. LastMatchedAt is kept to the microsecond.
//
// One flush is one backend transaction (bbolt: one write transaction; Redis: one
// MULTI/EXEC, bounded by [WithTimeout]); an error means nothing was added, and in Redis
// mode an unreachable or slow Redis is [ErrUnavailable]. When the reply of a committed
// flush is lost the recorder sends it again, so counts are at least once, not exactly
// once. Safe for concurrent use.
//
// [hits.Recorder.Run]: https://pkg.go.dev/github.com/sipedge/sipedge/hits#Recorder.Run
func (s *Store) AddHits(ctx context.Context, hs []acl.Hit) error {
	ds, skipped := hitDeltas(hs)
	if skipped > 0 {
		s.log.Warn().Int("skipped", skipped).Int("hits", len(hs)).Msg("entry hits that cannot be stored were skipped")
	}
	if len(ds) == 0 {
		return nil
	}
	if err := s.b.addHits(ctx, ds); err != nil {
		return fmt.Errorf("store: add %d entry hits: %w", len(ds), err)
	}
	return nil
}

// Hits returns the hit totals of the entries of IP ACL aclUUID of account that were ever
// hit, by entry id (never nil; an entry never hit is absent). It satisfies
// control.HitCounts. An invalid account or ACL id is [ErrInvalid]; in Redis mode an
// unreachable or slow Redis is [ErrUnavailable].
func (s *Store) Hits(ctx context.Context, account, aclUUID string) (map[string]acl.HitStat, error) {
	if err := checkID("account", account); err != nil {
		return nil, err
	}
	if err := checkID("ipacl_uuid", aclUUID); err != nil {
		return nil, err
	}
	out, err := s.b.hits(ctx, account, aclUUID)
	if err != nil {
		return nil, fmt.Errorf("store: read hits of ipacl %s: %w", aclUUID, err)
	}
	return out, nil
}

// hitDeltas validates hs and merges the hits of one entry, sorted by account, ACL, entry.
// It returns how many hits it skipped.
func hitDeltas(hs []acl.Hit) ([]hitDelta, int) {
	type key struct{ account, acl, entry string }
	idx := make(map[key]int, len(hs))
	out := make([]hitDelta, 0, len(hs))
	skipped := 0
	for _, h := range hs {
		d, ok := hitDeltaOf(h)
		if !ok {
			skipped++
			continue
		}
		k := key{d.account, d.acl, d.entry}
		i, seen := idx[k]
		if !seen {
			idx[k] = len(out)
			out = append(out, d)
			continue
		}
		m := &out[i]
		if m.count > math.MaxInt64-d.count {
			skipped++ // the sum would not fit a Redis counter
			continue
		}
		m.count += d.count
		if d.hasLast && (!m.hasLast || d.last > m.last) {
			m.last, m.hasLast = d.last, true
		}
	}
	slices.SortFunc(out, func(a, b hitDelta) int {
		return cmp.Or(cmp.Compare(a.account, b.account), cmp.Compare(a.acl, b.acl), cmp.Compare(a.entry, b.entry))
	})
	return out, skipped
}

func hitDeltaOf(h acl.Hit) (hitDelta, bool) {
	if checkID("account", h.Account) != nil || checkID("ipacl_uuid", h.ACLUUID) != nil ||
		checkID("entry id", h.EntryID) != nil || h.Count == 0 || h.Count > math.MaxInt64 {
		return hitDelta{}, false
	}
	d := hitDelta{account: h.Account, acl: h.ACLUUID, entry: h.EntryID, count: int64(h.Count)}
	if !h.LastMatchedAt.IsZero() {
		us := h.LastMatchedAt.UnixMicro()
		if us <= -maxHitMicros || us >= maxHitMicros {
			return hitDelta{}, false
		}
		d.last, d.hasLast = us, true
	}
	return d, true
}

// hitTime is the LastMatchedAt of Unix µs us, in UTC.
func hitTime(us int64) time.Time { return time.UnixMicro(us).UTC() }
