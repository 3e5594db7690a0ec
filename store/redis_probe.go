package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Subscription liveness probe (Redis mode). A pub/sub connection can go deaf — connected,
// answering PING, yet no longer receiving what is published (seen after Sentinel failovers,
// go-redis#3811) — and then a node would miss every change notice until the periodic
// resync. So the subscriber publishes its own probe on the change channel every
// [DefaultProbeInterval] and expects to receive it back within [DefaultProbeTimeout]. A
// probe that does not come back means the subscription is deaf: it is closed, a new one is
// made, and the watcher takes the full-reload path (as after any re-subscription).
//
// A probe's payload is "probe <subscription id>:<seq>": it never parses as a change notice.
// Other nodes' probes are ignored. (Nodes of a version without the probe take a probe for a
// malformed notice and reload everything: harmless, and only during a rolling upgrade.)

// Defaults of the probe ([WithProbe]).
const (
	DefaultProbeInterval = 2 * time.Second // a probe is published this often
	DefaultProbeTimeout  = 2 * time.Second // its echo must arrive within this, or the subscription is deaf
)

const probePrefix = "probe "

// SubscriptionStatus is what the probe knows about the change-notice subscription.
type SubscriptionStatus struct {
	// Probing is false in embedded mode (no subscription to prove) and before Watch
	// subscribed.
	Probing bool `json:"probing"`
	// Alive: the last probe came back in time (or none is overdue yet). False from a deaf
	// verdict until the next echo.
	Alive bool `json:"alive"`
	// LastEcho is when this node last received its own probe (zero before the first);
	// LastRTT how long that probe took.
	LastEcho time.Time     `json:"last_echo"`
	LastRTT  time.Duration `json:"last_rtt_ns"`
	// Deaf counts the subscriptions found deaf (and replaced) since the start.
	Deaf uint64 `json:"deaf_total"`
}

// probeState is shared by the subscriber goroutine (writer) and status readers.
type probeState struct {
	every, timeout time.Duration

	probing  atomic.Bool
	alive    atomic.Bool
	lastEcho atomic.Int64 // Unix ns
	lastRTT  atomic.Int64 // ns
	deaf     atomic.Uint64
}

func (ps *probeState) status() SubscriptionStatus {
	st := SubscriptionStatus{Probing: ps.probing.Load(), Alive: ps.alive.Load(), Deaf: ps.deaf.Load(),
		LastRTT: time.Duration(ps.lastRTT.Load())}
	if ns := ps.lastEcho.Load(); ns != 0 {
		st.LastEcho = time.Unix(0, ns).UTC()
	}
	return st
}

func (r *redisBackend) subscription() SubscriptionStatus { return r.probe.status() }

// subscribeOnce subscribes to the change channel and waits for the confirmation.
func (r *redisBackend) subscribeOnce(ctx context.Context) (*redis.PubSub, error) {
	ps := r.c.Subscribe(ctx, r.kChannel)
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	msg, err := ps.Receive(rctx)
	if err != nil {
		_ = ps.Close()
		return nil, r.classify(ctx, fmt.Errorf("subscribe %s: %w", r.kChannel, err))
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		_ = ps.Close()
		return nil, fmt.Errorf("store: redis: subscribe %s: unexpected reply %T", r.kChannel, msg)
	}
	return ps, nil
}

// subscribe subscribes to the change channel and waits for the confirmation. Then a
// goroutine pokes p with every announced notice, and asks for a full reload whenever
// go-redis re-subscribes after a reconnect (messages may have been lost meanwhile), a
// payload does not parse, or the probe finds the subscription deaf (then it subscribes
// anew first, so the reload cannot miss a change).
func (r *redisBackend) subscribe(ctx context.Context, p *pokes) (<-chan struct{}, error) {
	ps, err := r.subscribeOnce(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer r.probe.probing.Store(false)
		bo := backoff{limit: retryMax}
		for {
			deaf := r.listen(ctx, ps, p)
			_ = ps.Close()
			if !deaf {
				return
			}
			r.probe.alive.Store(false)
			r.log.Warn().Dur("timeout", r.probe.timeout).
				Msg("change-notice subscription is deaf (its probe did not come back): subscribing anew and reloading everything")
			for {
				if ps, err = r.subscribeOnce(ctx); err == nil {
					break
				}
				if !sleep(ctx, bo.step()) {
					return
				}
			}
			bo.reset()
			p.poke(notice{}, true)
		}
	}()
	return done, nil
}

type probeResult struct {
	token string
	err   error
}

// listen delivers the messages of ps to p and runs the probe, until ctx is done or the
// channel closes (false), or the probe finds the subscription deaf (true).
func (r *redisBackend) listen(ctx context.Context, ps *redis.PubSub, p *pokes) (deaf bool) {
	ch := ps.ChannelWithSubscriptions()
	id := uuid.NewString()[:8]
	var (
		seq        uint64
		pending    string // token of the probe awaiting its echo, "" when none
		sentAt     time.Time
		publishing bool // a Publish runs (at most one: results never blocks)
		results    = make(chan probeResult, 1)
		wg         sync.WaitGroup
		deadline   = time.NewTimer(time.Hour)
	)
	deadline.Stop()
	defer deadline.Stop()
	defer wg.Wait() // a publish in flight ends within the store timeout
	tick := time.NewTicker(r.probe.every)
	defer tick.Stop()
	r.probe.probing.Store(true)
	r.probe.alive.Store(true)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			if pending != "" || publishing {
				continue // the one in flight decides
			}
			seq++
			pending, sentAt, publishing = id+":"+strconv.FormatUint(seq, 10), time.Now(), true
			token := pending
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, r.timeout)
				defer cancel()
				results <- probeResult{token, r.c.Publish(pctx, r.kChannel, probePrefix+token).Err()}
			}()
		case res := <-results:
			publishing = false
			switch {
			case res.token != pending: // echoed before Publish returned, or given up on
			case res.err != nil:
				// Not published (Redis unreachable, failing over): no verdict on the
				// subscription; the next tick tries again.
				pending = ""
			default:
				deadline.Reset(r.probe.timeout)
			}
		case <-deadline.C:
			if pending != "" {
				r.probe.deaf.Add(1)
				return true
			}
		case m, ok := <-ch:
			if !ok {
				p.poke(notice{}, true)
				return false
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					p.poke(notice{}, true) // re-subscribed after a reconnect
					// A probe published while go-redis reconnected may be lost with the old
					// connection: no verdict on it; the next tick probes the new one.
					pending = ""
					deadline.Stop()
				}
			case *redis.Message:
				if tok, isProbe := strings.CutPrefix(m.Payload, probePrefix); isProbe {
					if tok == pending && pending != "" {
						now := time.Now()
						r.probe.lastEcho.Store(now.UnixNano())
						r.probe.lastRTT.Store(int64(now.Sub(sentAt)))
						r.probe.alive.Store(true)
						pending = ""
						deadline.Stop()
					}
					continue
				}
				n, err := parseNotice(m.Payload)
				p.poke(n, err != nil)
			}
		}
	}
}
