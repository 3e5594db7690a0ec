package control

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Denial is one request the SIP path refused (its `sip_denied` security event), as the
// console's live denials page shows it. cmd converts the SIP server's events into these,
// so control never imports sip.
type Denial struct {
	Time      time.Time
	Src       netip.AddrPort
	Method    string
	Trunk     string // trunk id; "" when no trunk was found
	Account   string // the trunk's auth_id; "" with no trunk: only the admin sees it
	Verdict   string
	CallID    string
	UserAgent string
	User      string
	Transport string
}

// Bounds of a [Denials] feed when [NewDenials] is given zeros.
const (
	DefaultDenialBacklog     = 256 // events kept for a new subscriber
	DefaultDenialSubscribers = 32  // live streams at once (all accounts)
	DefaultDenialsPerAccount = 4   // live streams of one account (or the admin)
	DefaultDenialBuffer      = 64  // events queued per subscriber before it drops
)

// ErrTooManySubscribers is returned by [Denials.Subscribe] when the feed, or the
// account, has as many live subscribers as it allows.
var ErrTooManySubscribers = errors.New("control: too many live denial streams")

// Denials is the bounded in-memory feed of this node's denials: a ring of the last
// events, and fan-out to live subscribers, each with a bounded queue. Publishing never
// blocks: an event a slow subscriber has no room for is dropped for it and counted.
// Build it with [NewDenials]; safe for concurrent use; must not be copied.
type Denials struct {
	_          [0]sync.Mutex
	maxSubs    int
	perAccount int
	bufSize    int

	mu   sync.Mutex
	ring []Denial // circular, len ≤ cap = backlog
	next int      // where the next event goes once the ring is full
	subs map[*DenialSub]struct{}
	per  map[string]int // live subscribers by account ("" = admin)

	published atomic.Uint64
	dropped   atomic.Uint64
	done      chan struct{}
	closeOnce sync.Once
}

// NewDenials returns a feed keeping backlog events, with at most subscribers live
// subscribers (perAccount of one account), each queueing at most buffer events. Zeros
// take the Default* values.
func NewDenials(backlog, subscribers, perAccount, buffer int) *Denials {
	pick := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	return &Denials{
		maxSubs:    pick(subscribers, DefaultDenialSubscribers),
		perAccount: pick(perAccount, DefaultDenialsPerAccount),
		bufSize:    pick(buffer, DefaultDenialBuffer),
		ring:       make([]Denial, 0, pick(backlog, DefaultDenialBacklog)),
		subs:       make(map[*DenialSub]struct{}),
		per:        make(map[string]int),
		done:       make(chan struct{}),
	}
}

// Close ends the feed: live streams end (cmd calls it when the HTTP server shuts down,
// which waits for open requests), and Subscribe refuses new ones.
func (f *Denials) Close() { f.closeOnce.Do(func() { close(f.done) }) }

// Done is closed by [Denials.Close].
func (f *Denials) Done() <-chan struct{} { return f.done }

// Publish records d and offers it to every subscriber allowed to see it. It never blocks.
func (f *Denials) Publish(d Denial) {
	f.published.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ring) < cap(f.ring) {
		f.ring = append(f.ring, d)
	} else {
		f.ring[f.next] = d
		f.next = (f.next + 1) % len(f.ring)
	}
	for s := range f.subs {
		if !s.sees(d) {
			continue
		}
		select {
		case s.ch <- d:
		default:
			s.dropped.Add(1)
			f.dropped.Add(1)
		}
	}
}

// ErrDenialsClosed is returned by [Denials.Subscribe] after [Denials.Close].
var ErrDenialsClosed = errors.New("control: denial feed closed")

// Subscribe starts a live subscription for account (with admin: every event; an account
// sees only events of its own trunks) and returns it with the backlog it may see, oldest
// first. Close the subscription when done.
func (f *Denials) Subscribe(account string, admin bool) (*DenialSub, []Denial, error) {
	key := account
	if admin {
		key = ""
	}
	s := &DenialSub{f: f, account: account, admin: admin, key: key, ch: make(chan Denial, f.bufSize)}
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
		return nil, nil, ErrDenialsClosed
	default:
	}
	if len(f.subs) >= f.maxSubs || f.per[key] >= f.perAccount {
		return nil, nil, ErrTooManySubscribers
	}
	f.subs[s] = struct{}{}
	f.per[key]++
	var backlog []Denial
	for i := range f.ring {
		if d := f.ring[(f.next+i)%len(f.ring)]; s.sees(d) {
			backlog = append(backlog, d)
		}
	}
	return s, backlog, nil
}

// Stats returns the events published and the deliveries dropped because a subscriber
// was slow, since the feed was built, and the live subscribers.
func (f *Denials) Stats() (published, dropped uint64, subscribers int) {
	f.mu.Lock()
	n := len(f.subs)
	f.mu.Unlock()
	return f.published.Load(), f.dropped.Load(), n
}

// DenialSub is one live subscription of a [Denials] feed. C delivers its events;
// Dropped counts those it had no room for.
type DenialSub struct {
	f       *Denials
	account string
	admin   bool
	key     string
	ch      chan Denial
	dropped atomic.Uint64
	closed  bool // under f.mu
}

// C is the channel of the subscription's events. It is never closed.
func (s *DenialSub) C() <-chan Denial { return s.ch }

// Dropped returns how many events this subscriber missed because its queue was full.
func (s *DenialSub) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and frees its place; calling it again does nothing.
func (s *DenialSub) Close() {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(s.f.subs, s)
	if s.f.per[s.key]--; s.f.per[s.key] <= 0 {
		delete(s.f.per, s.key)
	}
}

// sees reports whether the subscriber may see d: the admin everything, an account only
// the denials of its own trunks (never those without a trunk).
func (s *DenialSub) sees(d Denial) bool {
	return s.admin || (d.Account != "" && d.Account == s.account)
}
