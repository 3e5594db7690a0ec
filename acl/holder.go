package acl

import (
	"sync"
	"sync/atomic"
)

// Holder publishes the current [Snapshot] to the data path. Writers build a snapshot off to
// the side and [Holder.Store] it with one atomic pointer store; readers [Holder.Load] it
// once per request and never lock, so the ACL check and the digest check of one request
// read the same version.
//
// The zero value is ready to use and holds nil, meaning "not ready" (every query on a nil
// snapshot answers no). A Holder must not be copied after first use. Load is safe for
// concurrent use with everything; writers that read-modify-write (e.g. with
// [Snapshot.WithACL]) serialise among themselves or use [Holder.CompareAndSwap].
type Holder struct {
	_ [0]sync.Mutex // no copies: go vet's copylocks check catches them
	p atomic.Pointer[Snapshot]
}

// Load returns the current snapshot, nil before the first Store (or on a nil Holder).
func (h *Holder) Load() *Snapshot {
	if h == nil {
		return nil
	}
	return h.p.Load()
}

// Store publishes s. Storing nil makes the holder "not ready" again.
func (h *Holder) Store(s *Snapshot) { h.p.Store(s) }

// Swap publishes s and returns the snapshot it replaced.
func (h *Holder) Swap(s *Snapshot) (old *Snapshot) { return h.p.Swap(s) }

// CompareAndSwap publishes s only if old is still the current snapshot, so a writer can
// derive s from old (see [Snapshot.WithACL]) without a lock and retry when it lost a race.
func (h *Holder) CompareAndSwap(old, s *Snapshot) bool { return h.p.CompareAndSwap(old, s) }
