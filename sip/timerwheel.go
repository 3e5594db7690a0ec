package sip

import (
	"sync"
	"time"
)

// timerWheel drives every transaction timer of the relay (retransmissions A/E/G, timeouts
// B/F/H, Timer C, the automatic 100 Trying) from one goroutine: a hashed wheel of
// wheelSlots slots of wheelTick each, whose slots are intrusive doubly linked lists of
// transactions (Kamailio tm's timer lists play the same role). A transaction has at most
// one deadline armed, the earliest of its timers; arming, moving and cancelling it are
// O(1) under the wheel's mutex, so no transaction owns a goroutine or a runtime timer, and
// a finished transaction is out of the wheel at once. Deadlines past the wheel's horizon
// stay in their slot for more rounds.
//
// Timers fire up to one tick late, never early. Lock order: a transaction's mutex, then
// the wheel's; the wheel calls fire without its own lock held. Safe for concurrent use.
type timerWheel struct {
	mu    sync.Mutex
	slots [wheelSlots]*ptx // list heads
	now   int64            // the last tick processed
	start time.Time
	n     int           // armed transactions
	due   []*ptx        // reused to collect due transactions
	wake  chan struct{} // signalled when the wheel stops being empty
}

const (
	wheelTick  = 10 * time.Millisecond
	wheelSlots = 1024 // horizon 10.24 s; later deadlines go round again
)

// wheelNode is a transaction's place in the wheel. Guarded by the wheel's mutex.
type wheelNode struct {
	prev, next *ptx
	due        int64 // tick
	armed      bool
}

func newTimerWheel() *timerWheel {
	return &timerWheel{start: time.Now(), wake: make(chan struct{}, 1)}
}

// tickOf is the first tick at or after the deadline at (unix ns).
func (w *timerWheel) tickOf(at int64) int64 {
	d := time.Duration(at - w.start.UnixNano())
	if d <= 0 {
		return 0
	}
	return int64((d + wheelTick - 1) / wheelTick)
}

// arm (re)schedules t at or after the deadline at (unix ns); at 0 cancels it.
func (w *timerWheel) arm(t *ptx, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := &t.tn
	if n.armed {
		if at != 0 && max(w.tickOf(at), w.now+1) == n.due {
			return // same tick: nothing moves
		}
		w.unlink(t)
	}
	if at == 0 {
		return
	}
	n.due = max(w.tickOf(at), w.now+1)
	i := n.due % wheelSlots
	n.prev, n.next = nil, w.slots[i]
	if n.next != nil {
		n.next.tn.prev = t
	}
	w.slots[i] = t
	n.armed = true
	w.n++
	if w.n == 1 {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// empty reports whether nothing is armed.
func (w *timerWheel) empty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n == 0
}

func (w *timerWheel) unlink(t *ptx) {
	n := &t.tn
	if n.prev != nil {
		n.prev.tn.next = n.next
	} else {
		w.slots[n.due%wheelSlots] = n.next
	}
	if n.next != nil {
		n.next.tn.prev = n.prev
	}
	n.prev, n.next, n.armed = nil, nil, false
	w.n--
}

// advance fires every deadline up to now, tick by tick: fire is called without the
// wheel's lock, once per due transaction, which is unarmed by then.
func (w *timerWheel) advance(now time.Time, fire func(t *ptx)) {
	target := int64(now.Sub(w.start) / wheelTick) // whole ticks elapsed
	for {
		w.mu.Lock()
		if w.now >= target {
			w.mu.Unlock()
			return
		}
		if w.n == 0 {
			w.now = target // nothing armed: no slot to visit
			w.mu.Unlock()
			return
		}
		w.now++
		due := w.due[:0]
		for t := w.slots[w.now%wheelSlots]; t != nil; {
			next := t.tn.next
			if t.tn.due <= w.now {
				w.unlink(t)
				due = append(due, t)
			}
			t = next
		}
		w.due = nil
		w.mu.Unlock()
		for i, t := range due {
			fire(t)
			due[i] = nil
		}
		w.mu.Lock()
		if cap(due) <= 4096 {
			w.due = due[:0]
		}
		w.mu.Unlock()
	}
}
