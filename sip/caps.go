package sip

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// Per-trunk call caps: max_cps (a token bucket per trunk, bursts up to one second's
// worth) and max_concurrent (calls being set up plus answered calls not yet ended). With
// several nodes each enforces limit / nodes (rounded up; see [WithNodeCount]), so the
// cluster-wide limit holds approximately: exactly when the load balancer spreads calls
// evenly, up to nodes-1 calls over (or under) when it does not.

// Kinds of cap rejection (label of sipedge_sip_cap_rejections_total).
const (
	capCPS        = "cps"
	capConcurrent = "concurrent"
	capPending    = "pending" // the trunk's or account's share of pending INVITEs
)

// trunkCaps tracks the caps of every trunk that has any. Safe for concurrent use.
type trunkCaps struct {
	m     sync.Map // acl.TrunkID → *trunkCap
	acc   sync.Map // account → *atomic.Int64: INVITEs being set up
	nodes func() int
	now   func() int64
}

type trunkCap struct {
	active  atomic.Int64 // calls holding a slot
	pending atomic.Int64 // INVITEs being set up (relayed, no final answer yet)
	mu      sync.Mutex
	tat     int64 // GCRA theoretical arrival time of the CPS bucket (unix ns)
}

func newTrunkCaps(nodes func() int) *trunkCaps {
	if nodes == nil {
		nodes = func() int { return 1 }
	}
	return &trunkCaps{nodes: nodes, now: func() int64 { return time.Now().UnixNano() }}
}

// perNode is this node's share of a cluster-wide limit: ceil(limit / nodes), at least 1.
func (c *trunkCaps) perNode(limit int) int64 {
	n := c.nodes()
	if n < 1 {
		n = 1
	}
	return int64(max((limit+n-1)/n, 1))
}

func (c *trunkCaps) get(id acl.TrunkID) *trunkCap {
	if v, ok := c.m.Load(id); ok {
		return v.(*trunkCap)
	}
	v, _ := c.m.LoadOrStore(id, &trunkCap{})
	return v.(*trunkCap)
}

// capSlot is one admitted call's hold on its trunk's concurrency count. Released once,
// by whoever ends the call first (the relay on a failed setup, the dialog table on BYE
// or timeout).
type capSlot struct {
	tc     *trunkCap
	done   atomic.Bool
	handed bool // owned by a dialog-table entry; touched only by the relaying goroutine
}

func (s *capSlot) release() {
	if s != nil && s.done.CompareAndSwap(false, true) {
		s.tc.active.Add(-1)
	}
}

// admit checks a new call on trunk t against its caps. Every call of a trunk holds a
// slot, capped or not, so a max_concurrent added later counts the calls already up. It
// returns the slot (nil without a trunk) or the kind of cap exceeded.
func (c *trunkCaps) admit(t *acl.TrunkPolicy) (*capSlot, string) {
	if t == nil {
		return nil, ""
	}
	tc := c.get(t.ID)
	if n := tc.active.Add(1); t.MaxConcurrent > 0 && n > c.perNode(t.MaxConcurrent) {
		tc.active.Add(-1)
		return nil, capConcurrent
	}
	slot := &capSlot{tc: tc}
	if t.MaxCPS > 0 && !tc.takeCall(c.perNode(t.MaxCPS), c.now()) {
		slot.release()
		return nil, capCPS
	}
	return slot, ""
}

// pendingAdmit takes one of trunk t's and its account's shares of pending INVITEs, or
// reports false (and takes nothing) when either is used up. A true answer must be
// paired with pendingDone.
func (c *trunkCaps) pendingAdmit(t *acl.TrunkPolicy, perTrunk, perAccount int) bool {
	if t == nil {
		return true
	}
	tc := c.get(t.ID)
	if tc.pending.Add(1) > int64(perTrunk) {
		tc.pending.Add(-1)
		return false
	}
	a := c.account(t.Account)
	if a.Add(1) > int64(perAccount) {
		a.Add(-1)
		tc.pending.Add(-1)
		return false
	}
	return true
}

func (c *trunkCaps) pendingDone(t *acl.TrunkPolicy) {
	if t == nil {
		return
	}
	c.get(t.ID).pending.Add(-1)
	c.account(t.Account).Add(-1)
}

func (c *trunkCaps) account(id string) *atomic.Int64 {
	if v, ok := c.acc.Load(id); ok {
		return v.(*atomic.Int64)
	}
	v, _ := c.acc.LoadOrStore(id, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// takeCall spends one call of a budget of cps per second (GCRA, bursts up to cps).
func (tc *trunkCap) takeCall(cps int64, now int64) bool {
	iv := int64(time.Second) / cps
	tau := int64(time.Second) - iv
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tat := max(tc.tat, now)
	if tat-now > tau {
		return false
	}
	tc.tat = tat + iv
	return true
}

// active returns the calls holding a slot of trunk id (for tests and metrics).
func (c *trunkCaps) active(id acl.TrunkID) int64 {
	if v, ok := c.m.Load(id); ok {
		return v.(*trunkCap).active.Load()
	}
	return 0
}
