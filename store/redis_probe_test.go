package store_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// deafProxy is a TCP proxy to Redis that can make pub/sub connections deaf: after freeze,
// whatever Redis sends on a connection that subscribed is dropped, while everything the
// client sends (PING included) still reaches Redis and the connection stays open — the
// failure go-redis cannot see by itself (go-redis#3811).
type deafProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxyConn
}

type proxyConn struct {
	mu             sync.Mutex
	pubsub, frozen bool
	dead           bool // either direction ended
	client, server net.Conn
}

func startDeafProxy(t *testing.T, target string) *deafProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &deafProxy{ln: ln, target: target}
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			_ = c.client.Close()
			_ = c.server.Close()
		}
	})
	go p.serve()
	return p
}

func (p *deafProxy) addr() string { return p.ln.Addr().String() }

func (p *deafProxy) serve() {
	for {
		cl, err := p.ln.Accept()
		if err != nil {
			return
		}
		sv, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = cl.Close()
			continue
		}
		c := &proxyConn{client: cl, server: sv}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		go func() { // client → server, noting SUBSCRIBE
			buf := make([]byte, 32<<10)
			for {
				n, err := cl.Read(buf)
				if n > 0 {
					if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
						c.mu.Lock()
						c.pubsub = true
						c.mu.Unlock()
					}
					if _, werr := sv.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					c.mu.Lock()
					c.dead = true
					c.mu.Unlock()
					_ = sv.Close()
					return
				}
			}
		}()
		go func() { // server → client, dropped once frozen
			buf := make([]byte, 32<<10)
			for {
				n, err := sv.Read(buf)
				if n > 0 {
					c.mu.Lock()
					frozen := c.frozen
					c.mu.Unlock()
					if !frozen {
						if _, werr := cl.Write(buf[:n]); werr != nil {
							return
						}
					}
				}
				if err != nil {
					c.mu.Lock()
					c.dead = true
					c.mu.Unlock()
					_ = cl.Close()
					return
				}
			}
		}()
	}
}

// freeze makes every live connection that subscribed so far deaf; it returns how many.
func (p *deafProxy) freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		c.mu.Lock()
		if c.pubsub && !c.dead {
			c.frozen = true
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// TestRedisDeafSubscription: a subscription that stays connected but hears nothing is
// found by the publish-and-echo probe within interval + timeout, replaced, and the change
// it missed is applied by the full reload that follows — with the periodic resync out of
// the way (an hour), so only the probe can have found it. The deaf counter and the echo
// age metric say so.
func TestRedisDeafSubscription(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	proxy := startDeafProxy(t, ro.Addr)
	pro := *ro
	pro.Addr = proxy.addr()
	every, timeout := 300*time.Millisecond, 400*time.Millisecond
	if os.Getenv("SIPEDGE_PROBE_DEFAULTS") != "" { // the figure with the shipped defaults
		every, timeout = store.DefaultProbeInterval, store.DefaultProbeTimeout
	}
	reg := prometheus.NewRegistry()
	s := openRedisStore(t, &pro, p, store.WithResync(time.Hour), store.WithProbe(every, timeout), store.WithMetrics(reg))
	writer := openRedisStore(t, ro, p, store.WithResync(time.Hour))
	v := seed(t, writer)
	waitFor, _ := storetest.StartWatch(t, s)
	waitFor(v)
	eventually(t, "a first probe echo", func() bool { return !s.Subscription().LastEcho.IsZero() })
	if st := s.Subscription(); !st.Probing || !st.Alive || st.Deaf != 0 {
		t.Fatalf("before the freeze: %+v", st)
	}
	if age := metricValue(t, reg, "sipedge_store_subscription_echo_age_seconds"); age < 0 || age > 2 {
		t.Fatalf("echo age %v s while probing every %v", age, every)
	}

	// A killed pub/sub connection is a reconnect (go-redis re-subscribes), not deafness.
	kc := redis.NewClient(ro)
	defer kc.Close()
	if err := kc.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, "an echo after the reconnect", func() bool { return s.Subscription().LastEcho.After(killed) })
	if st := s.Subscription(); st.Deaf != 0 {
		t.Fatalf("a killed connection counted as deaf: %+v", st)
	}

	if n := proxy.freeze(); n != 1 {
		t.Fatalf("froze %d pub/sub connections, want 1", n)
	}
	frozeAt := time.Now()
	// A write the deaf subscription cannot hear.
	v2 := mustV(t)(writer.CreateACL(ctx, acl.IPACL{UUID: "acl-deaf", Account: acc,
		Entries: []acl.Entry{mkEntry("d1", "198.51.100.7")}}))
	time.Sleep(every / 2)
	if got := s.AppliedVersion(); got >= v2 {
		t.Fatalf("applied %d before the probe found the subscription deaf: the rig did not make it deaf", got)
	}
	eventually(t, "the probe to find the subscription deaf", func() bool { return s.Subscription().Deaf == 1 })
	detected := time.Since(frozeAt)
	snap := waitFor(v2)
	applied := time.Since(frozeAt)
	if !snap.Allows("t1", netip.MustParseAddr("192.0.2.1")) || snap.Version() < v2 {
		t.Fatalf("snapshot after the reload: version %d", snap.Version())
	}
	if limit := every + timeout + 500*time.Millisecond; detected > limit {
		t.Fatalf("deaf subscription found after %v, want within %v", detected, limit)
	}
	if got := metricValue(t, reg, "sipedge_store_subscription_deaf_total"); got != 1 {
		t.Fatalf("sipedge_store_subscription_deaf_total = %v", got)
	}
	// The new subscription is heard: the next write arrives by its notice.
	eventually(t, "an echo on the new subscription", func() bool {
		st := s.Subscription()
		return st.Alive && st.LastEcho.After(frozeAt)
	})
	v3 := mustV(t)(writer.CreateACL(ctx, acl.IPACL{UUID: "acl-heard", Account: acc,
		Entries: []acl.Entry{mkEntry("h1", "198.51.100.8")}}))
	start := time.Now()
	waitFor(v3)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("write after the new subscription applied after %v", d)
	}
	t.Logf("deaf subscription found %v after the freeze (probe every %v, timeout %v); missed write applied after %v",
		detected.Round(time.Millisecond), every, timeout, applied.Round(time.Millisecond))
}
