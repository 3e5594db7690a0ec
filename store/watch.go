package store

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
)

// Retry pacing after a failed subscribe or load (doubling up to the cap, never beyond
// the resync period).
const (
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
)

// AppliedVersion is the data-set version of the snapshot [Store.Watch] applied last
// (0 before the first one).
func (s *Store) AppliedVersion() uint64 { return s.applied.Load() }

// Watch keeps apply fed with compiled snapshots of the data set until ctx is done, then
// returns nil.
//
// It subscribes to change notices first, then loads and compiles the whole data set and
// calls apply. After that every notice of a version newer than the applied one leads to
// a reload; notices that arrive during a reload coalesce into at most one more. A
// re-subscription (Redis reconnect), a notice older than the applied version (possible
// reset) and a periodic resync ([WithResync]) all take the full-reload path, which
// applies a data set whose version or epoch differs from the applied one — so a data set
// restored with lower versions is picked up too.
//
// A failed load or compile keeps the last good snapshot (logged and counted, loads are
// retried with backoff). A data set that is empty never replaces a non-empty snapshot
// unless it was emptied on purpose by a write ([acl.Dataset.Emptied]). A change that only
// touched one ACL (UpdateACL) is applied with [acl.Snapshot.WithACL] instead of a full
// compile: in embedded mode from this process's own record of the write, in Redis mode
// when the notice is for the version right after the applied one in the same epoch, from
// that ACL alone, read and verified at that version (see README.md, "Watch").
//
// apply runs on Watch's goroutine, one call at a time, with snapshots in version order
// (except after a reset). When it returns, Watch records the snapshot's version, epoch
// and time for the node registry ([Store.SelfStatus]) and wakes [Store.RunHeartbeat].
// Run one Watch per Store.
func (s *Store) Watch(ctx context.Context, apply func(*acl.Snapshot)) error {
	w := &watcher{s: s, apply: apply, p: newPokes(), log: s.log}
	return w.run(ctx)
}

type watcher struct {
	s     *Store
	apply func(*acl.Snapshot)
	p     *pokes
	log   zerolog.Logger

	snap    *acl.Snapshot // last applied, nil before the first
	applied uint64
	epoch   string
}

// backoff doubles from retryMin to min(retryMax, limit).
type backoff struct {
	next, limit time.Duration
}

func (b *backoff) reset() { b.next = 0 }

func (b *backoff) step() time.Duration {
	if b.next == 0 {
		b.next = retryMin
	} else {
		b.next = min(2*b.next, retryMax, b.limit)
	}
	return b.next
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (w *watcher) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	bo := backoff{limit: max(w.s.resync, retryMin)}
	// Subscribe first: a change committed after the confirmation is announced, one
	// committed before it is in the load that follows.
	for {
		done, err := w.s.b.subscribe(ctx, w.p)
		if err == nil {
			defer func() { cancel(); <-done }()
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.s.m.setUp(false)
		d := bo.step()
		w.log.Warn().Err(err).Dur("retry_in", d).Msg("subscribe to change notices failed")
		if !sleep(ctx, d) {
			return nil
		}
	}
	bo.reset()

	ok := w.reload(ctx)
	resync := time.NewTicker(w.s.resync)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		if ok {
			bo.reset()
			retry.Stop()
		} else {
			retry.Reset(bo.step())
		}
		full := false
		select {
		case <-ctx.Done():
			return nil
		case <-w.p.kick:
		case <-resync.C:
			full = true
		case <-retry.C:
			full = true
		}
		n, seen, asked := w.p.take()
		ok = w.step(ctx, n, seen, full || asked)
	}
}

// step handles what was noticed since the last step: the newest notice n (when seen)
// and whether a full reload is due. It reports false when a load failed (retry soon).
func (w *watcher) step(ctx context.Context, n notice, seen, full bool) bool {
	v := n.version
	switch {
	case full || w.snap == nil:
		return w.reload(ctx)
	case !seen || v == w.applied:
		return true
	case v > w.applied:
		if w.incremental(v) || w.notified(ctx, n) {
			return true
		}
		return w.reload(ctx)
	default: // v < applied: a late notice, or the data set went back (restore, wipe)
		return w.reload(ctx)
	}
}

// notified applies the write a notice of another process announced by swapping one ACL
// into the applied snapshot, when the notice says the write changed only that ACL and is
// the very next version of the applied epoch. The notice only selects what to read:
// [backend.aclChange] verifies all of it in the same atomic read that fetches the ACL
// (one round trip), and anything unexpected — a gap, another epoch, another kind of
// write, an ACL that does not decode or validate — returns false for the full reload.
func (w *watcher) notified(ctx context.Context, n notice) bool {
	if w.s.b.incremental() || n.acl == "" || n.version != w.applied+1 || n.epoch == "" || n.epoch != w.epoch {
		return false
	}
	start := time.Now()
	raw, err := w.s.b.aclChange(ctx, n)
	if err != nil {
		if !errors.Is(err, errNotIncremental) {
			w.log.Debug().Err(err).Uint64("version", n.version).Msg("incremental load failed, reloading everything")
		}
		return false
	}
	a, err := decode[acl.IPACL](raw, kindACL)
	if err != nil || a.UUID != n.acl || a.Account != n.account {
		return false
	}
	snap, err := withACL(w.snap, a, n.version)
	if err != nil {
		w.log.Debug().Err(err).Uint64("version", n.version).Msg("incremental update failed, compiling everything")
		return false
	}
	w.s.m.setUp(true)
	w.s.m.compiled(time.Since(start).Seconds())
	w.s.keepACL(a, n.version)
	w.swap(snap, n.version, w.epoch, resultIncremental, false)
	return true
}

// incremental brings the snapshot from the applied version to v by swapping in the ACLs
// that UpdateACL wrote, when every version in between was such a write.
func (w *watcher) incremental(v uint64) bool {
	if !w.s.b.incremental() || w.snap == nil || v-w.applied > maxHints {
		return false
	}
	start := time.Now()
	snap := w.snap
	for ver := w.applied + 1; ver <= v; ver++ {
		a, ok := w.s.hints.get(ver)
		if !ok {
			return false
		}
		next, err := withACL(snap, a, ver)
		if err != nil {
			w.log.Debug().Err(err).Uint64("version", ver).Msg("incremental update failed, compiling everything")
			return false
		}
		snap = next
	}
	for ver := w.applied + 1; ver <= v; ver++ {
		a, _ := w.s.hints.get(ver)
		w.s.keepACL(a, ver)
	}
	w.s.m.compiled(time.Since(start).Seconds())
	w.swap(snap, v, w.epoch, resultIncremental, false)
	return true
}

// reload loads and compiles everything and applies it when it differs from what is
// applied. It reports false only when the load failed.
func (w *watcher) reload(ctx context.Context) bool {
	ds, epoch, accounts, err := w.s.load(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return true // shutting down
		}
		w.s.m.setUp(!errors.Is(err, ErrUnavailable))
		w.s.m.reload(resultError)
		w.log.Warn().Err(err).Uint64("snapshot_version", w.applied).Msg("store load failed, keeping the last snapshot")
		return false
	}
	w.s.m.setUp(true)
	if w.snap != nil && epoch == w.epoch && ds.Version == w.applied {
		if g := w.s.good.Load(); g != nil && len(g.overrides) > 0 {
			w.s.keepGood(ds, epoch, accounts) // fold the incremental ACL writes into one copy
		}
		w.s.m.reload(resultUnchanged)
		return true
	}
	reset := w.snap != nil && (epoch != w.epoch || ds.Version < w.applied)
	if w.snap != nil && ds.Empty() && !ds.Emptied && !w.snap.Empty() {
		w.s.noteIncident(ds.Version, epoch, w.applied, w.epoch)
		w.s.m.reload(resultKeptEmpty)
		w.log.Warn().Uint64("version", ds.Version).Uint64("snapshot_version", w.applied).
			Msg("store holds an empty data set that was not emptied on purpose, keeping the last snapshot")
		return true
	}
	start := time.Now()
	snap, err := compile(ds)
	if err != nil {
		w.s.m.reload(resultError)
		w.log.Error().Err(err).Uint64("version", ds.Version).Uint64("snapshot_version", w.applied).
			Msg("snapshot compile failed, keeping the last snapshot")
		return true // the data set will not change by itself; wait for the next notice
	}
	w.s.m.compiled(time.Since(start).Seconds())
	if probs := snap.Problems(); len(probs) > 0 {
		w.log.Warn().Int("problems", len(probs)).Str("first", probs[0].String()).Uint64("version", ds.Version).
			Msg("snapshot compiled with problems (the objects concerned fail closed)")
	}
	w.s.keepGood(ds, epoch, accounts)
	w.swap(snap, ds.Version, epoch, resultFull, reset)
	return true
}

func (w *watcher) swap(snap *acl.Snapshot, v uint64, epoch, result string, reset bool) {
	prev := w.applied
	w.apply(snap)
	w.snap, w.applied, w.epoch = snap, v, epoch
	w.s.incident.Store(nil)
	w.s.unpin(v, epoch)
	w.s.applied.Store(v)
	w.s.noteApplied(v, epoch) // after apply returned: the data path serves it now
	w.s.m.applied(v)
	w.s.m.reload(result)
	ev := w.log.Info()
	if result == resultIncremental {
		ev = w.log.Debug()
	}
	ev.Uint64("snapshot_version", v).Uint64("previous_version", prev).Str("result", result).
		Bool("reset", reset).Msg("snapshot applied")
}

// Subscription reports the liveness probe of the change-notice subscription [Store.Watch]
// holds (Redis mode; in embedded mode Probing is false).
func (s *Store) Subscription() SubscriptionStatus { return s.b.subscription() }
