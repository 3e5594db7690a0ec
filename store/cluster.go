package store

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// Defaults of the node registry (see README.md, "Node registry").
const (
	DefaultHeartbeat = time.Second     // RunHeartbeat's interval when given 0
	DefaultNodeTTL   = 5 * time.Second // how long a heartbeat keeps a node listed

	// nodeIndexGrace is how long after its last lease ran out a node stays in the Redis
	// index (the members of P+"nodes" whose key expired). Only housekeeping: a node
	// whose key is gone is never listed.
	nodeIndexGrace = time.Hour
	// deregisterTimeout bounds the removal of this node's entry when RunHeartbeat stops.
	deregisterTimeout = time.Second
)

// NodeStatus is what one edge node reports about itself in the node registry: which
// data-set version its SIP path serves, since when, and where it runs.
type NodeStatus struct {
	// NodeID names the node; unique per deployment (a host name or a generated uuid).
	// Non-empty, at most 256 bytes, no control characters or '/'.
	NodeID string `json:"node_id"`
	// AppliedVersion is the data-set version of the snapshot the node serves.
	AppliedVersion uint64 `json:"applied_version"`
	// Epoch is the data-set epoch of that snapshot (see [Head]). Versions of different
	// epochs are unrelated: a node serves version V of the current data set only when its
	// Epoch is the current one and AppliedVersion >= V ([NodeStatus.Serves]).
	Epoch string `json:"epoch,omitempty"`
	// AppliedAt is when that snapshot was swapped in (zero before the first).
	AppliedAt time.Time `json:"applied_at"`
	// Address is where the node can be reached (its SIP or API listen address), for
	// operators; the store does not interpret it.
	Address string `json:"address"`
	// StartedAt is when the node process started.
	StartedAt time.Time `json:"started_at"`
}

// Serves reports whether the node serves version v of the data set whose head is h: it
// applied a snapshot of the same epoch at version v or later. A node still on another
// epoch (a data set that was wiped and reseeded, so its versions started again) serves
// nothing of the current one, whatever its version number.
func (n NodeStatus) Serves(h Head, v uint64) bool {
	return n.Epoch == h.Epoch && n.AppliedVersion >= v
}

// Head is the current version of the data set and the epoch naming its incarnation: a
// data set that is wiped and recreated gets a new epoch, and its versions start again.
type Head struct {
	Version uint64
	Epoch   string
}

// Head returns the current data-set version and epoch, read together.
func (s *Store) Head(ctx context.Context) (Head, error) {
	v, epoch, err := s.b.head(ctx)
	if err != nil {
		return Head{}, err
	}
	return Head{Version: v, Epoch: epoch}, nil
}

// registry is the node-registry state of one Store: the heartbeat lease, the wake-up of
// RunHeartbeat, the last snapshot Watch applied and, in embedded mode, the registry
// itself. The zero value is not usable; see [newRegistry].
type registry struct {
	ttl     time.Duration // lease of one heartbeat (WithNodeTTL)
	kick    chan struct{}
	applied atomic.Pointer[appliedMark]
}

func newRegistry(ttl time.Duration) registry {
	return registry{ttl: ttl, kick: make(chan struct{}, 1)}
}

type appliedMark struct {
	version uint64
	epoch   string
	at      time.Time
}

// noteApplied records that the snapshot of version v in epoch is served now (called by
// Watch after its apply callback returned) and wakes RunHeartbeat.
func (s *Store) noteApplied(v uint64, epoch string) {
	s.reg.applied.Store(&appliedMark{version: v, epoch: epoch, at: time.Now().UTC()})
	s.NotifyHeartbeat()
}

// Heartbeat records st in the node registry for the node TTL ([WithNodeTTL]); a node
// whose last heartbeat is older is no longer listed by [Store.Nodes]. A later heartbeat
// of the same NodeID replaces the entry.
//
// In Redis mode every Store sharing the data set sees the entry; in embedded mode the
// registry lives in this Store's memory (one process serves the data set). An invalid
// NodeID is [ErrInvalid]; a Redis that cannot be reached is [ErrUnavailable].
func (s *Store) Heartbeat(ctx context.Context, st NodeStatus) error {
	if err := checkID("node_id", st.NodeID); err != nil {
		return err
	}
	return s.b.heartbeat(ctx, st, s.reg.ttl)
}

// Nodes lists the live nodes (those whose last heartbeat is within its TTL), sorted by
// NodeID. A Redis that cannot be reached is [ErrUnavailable].
func (s *Store) Nodes(ctx context.Context) ([]NodeStatus, error) {
	out, err := s.b.nodes(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out, nil
}

// deregister removes node id from the registry (a clean shutdown), so the remaining
// nodes do not wait for its lease to run out.
func (s *Store) deregister(ctx context.Context, id string) error {
	return s.b.deregister(ctx, id)
}

// NotifyApplied is kept for callers written before [Store.Watch] reported its applies
// itself: it does nothing. Watch records every snapshot it applied (version, epoch and
// time) right after its apply callback returns, so "applied" means "served", and wakes
// [Store.RunHeartbeat]. Calling it any number of times is harmless.
func (s *Store) NotifyApplied(*acl.Snapshot) {}

// NotifyHeartbeat wakes [Store.RunHeartbeat] to write a heartbeat now. Pokes coalesce:
// several before the loop wakes give one heartbeat. Never blocks.
func (s *Store) NotifyHeartbeat() {
	select {
	case s.reg.kick <- struct{}{}:
	default:
	}
}

// SelfStatus returns the status function for [Store.RunHeartbeat] of a node named id at
// address, started at started: its applied version, epoch and time are those of the
// last snapshot [Store.Watch] applied (before any, version 0, no epoch, zero time).
func (s *Store) SelfStatus(id, address string, started time.Time) func() NodeStatus {
	started = started.UTC()
	return func() NodeStatus {
		st := NodeStatus{NodeID: id, Address: address, StartedAt: started}
		if m := s.reg.applied.Load(); m != nil {
			st.AppliedVersion, st.Epoch, st.AppliedAt = m.version, m.epoch, m.at
		}
		return st
	}
}

// RunHeartbeat writes self() to the node registry at once, then every interval (0 means
// [DefaultHeartbeat]) and whenever poked (every apply of [Store.Watch], [Store.NotifyHeartbeat]),
// until ctx is done. It then removes the node's entry (best effort, bounded by one
// second), so a node that stops cleanly leaves the live set at once, and returns nil.
//
// A failing heartbeat (Redis down) is logged at warn once per outage and retried at the
// next tick; the loop never gives up. Run one loop per Store and stop it before
// [Store.Close].
func (s *Store) RunHeartbeat(ctx context.Context, self func() NodeStatus, every time.Duration) error {
	if every <= 0 {
		every = DefaultHeartbeat
	}
	if ttl := s.reg.ttl; every*2 > ttl {
		s.log.Warn().Dur("interval", every).Dur("ttl", ttl).
			Msg("heartbeat interval is more than half the node TTL: one late heartbeat drops the node")
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var (
		down bool
		last string // node id of the last heartbeat, removed on exit
	)
	beat := func() {
		st := self()
		err := s.Heartbeat(ctx, st)
		switch {
		case err == nil:
			last = st.NodeID
			if down {
				down = false
				s.log.Info().Str("node_id", st.NodeID).Uint64("applied_version", st.AppliedVersion).
					Msg("node heartbeat restored")
			}
		case ctx.Err() != nil:
		case !down:
			down = true
			s.log.Warn().Err(err).Str("node_id", st.NodeID).Dur("retry_every", every).
				Msg("node heartbeat failed, retrying (logged once per outage)")
		}
	}
	beat()
	for {
		select {
		case <-ctx.Done():
			if last != "" {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
				if err := s.deregister(dctx, last); err != nil {
					s.log.Debug().Err(err).Str("node_id", last).Msg("node not deregistered; its lease runs out")
				}
				cancel()
			}
			return nil
		case <-tick.C:
		case <-s.reg.kick:
		}
		beat()
	}
}
