package store_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// redisOptions returns the options of the test Redis named by SIPEDGE_TEST_REDIS
// (redis://127.0.0.1:PORT/N), or skips the test.
func redisOptions(t *testing.T) *redis.Options {
	t.Helper()
	u := os.Getenv("SIPEDGE_TEST_REDIS")
	if u == "" {
		t.Skip("set SIPEDGE_TEST_REDIS to run")
	}
	ro, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("SIPEDGE_TEST_REDIS: %v", err)
	}
	return ro
}

// testPrefix is a key prefix no other test uses; its keys are deleted when the test ends.
func testPrefix(t *testing.T, ro *redis.Options) string {
	t.Helper()
	p := "sipedgetest:" + uuid.NewString()[:8] + ":"
	t.Cleanup(func() { wipePrefix(t, ro, p) })
	return p
}

// wipePrefix deletes every key under prefix, as FLUSHALL would for this data set.
func wipePrefix(t *testing.T, ro *redis.Options, prefix string) {
	t.Helper()
	c := redis.NewClient(ro)
	defer c.Close()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan %s: %v", prefix, err)
		return
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("del: %v", err)
		}
	}
}

func openRedisStore(t *testing.T, ro *redis.Options, prefix string, opts ...store.Option) *store.Store {
	t.Helper()
	s, err := store.OpenRedisOptions(ctx, ro, append([]store.Option{store.WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestRedisConformance(t *testing.T) {
	ro := redisOptions(t)
	prefixes := map[*store.Store]string{}
	storetest.Run(t,
		func(t *testing.T, opts ...store.Option) *store.Store {
			p := testPrefix(t, ro)
			s := openRedisStore(t, ro, p, append([]store.Option{store.WithResync(time.Second)}, opts...)...)
			prefixes[s] = p
			return s
		},
		func(t *testing.T, old *store.Store) *store.Store {
			if err := old.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s := openRedisStore(t, ro, prefixes[old], store.WithResync(time.Second))
			prefixes[s] = prefixes[old]
			return s
		})
}

// TestRedisTwoNodes: writes on one node reach the Watch of another through pub/sub, and
// writers on both nodes never lose each other's updates.
func TestRedisTwoNodes(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	a := openRedisStore(t, ro, p, store.WithResync(time.Hour))
	b := openRedisStore(t, ro, p, store.WithResync(time.Hour))
	v := seed(t, a)
	waitFor, _ := storetest.StartWatch(t, b)
	waitFor(v)

	const perNode = 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	for n, s := range []*store.Store{a, b} {
		for i := range perNode {
			wg.Go(func() {
				_, _, err := s.UpdateACL(ctx, acc, "acl-1", func(x *acl.IPACL) error {
					x.Entries = append(x.Entries, mkEntry(fmt.Sprintf("n%d-%d", n, i), fmt.Sprintf("198.51.%d.%d", 100+n, i+1)))
					return nil
				})
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := v + 2*perNode
	if got := mustV(t)(a.Version(ctx)); got != want {
		t.Fatalf("version %d, want %d", got, want)
	}
	snap := waitFor(want)
	for n := range 2 {
		for i := range perNode {
			src := netip.MustParseAddr(fmt.Sprintf("198.51.%d.%d", 100+n, i+1))
			if !snap.Allows("t1", src) {
				t.Fatalf("node b's snapshot misses %v", src)
			}
		}
	}
}

// TestRedisPubSubKilled: after the server drops the subscriber connection, go-redis
// re-subscribes and Watch reloads, so a change announced while it was away is served.
func TestRedisPubSubKilled(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	a := openRedisStore(t, ro, p)
	reg := prometheus.NewRegistry()
	b := openRedisStore(t, ro, p, store.WithResync(time.Hour), store.WithMetrics(reg))
	v := seed(t, a)
	waitFor, _ := storetest.StartWatch(t, b)
	waitFor(v)
	fullBefore := reloads(t, reg, "full") + reloads(t, reg, "unchanged")

	admin := redis.NewClient(ro)
	defer admin.Close()
	for round := range 3 {
		killed, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
		if err != nil || killed == 0 {
			t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", killed, err)
		}
		v = mustV(t)(a.CreateCredential(ctx, acl.Credential{UUID: fmt.Sprintf("k%d", round), Account: acc, Username: fmt.Sprintf("k%d", round)}))
		if snap := waitFor(v); snap.Version() != v {
			t.Fatalf("round %d: snapshot %d, want %d", round, snap.Version(), v)
		}
	}
	eventually(t, "a full reload after re-subscribing", func() bool {
		return reloads(t, reg, "full")+reloads(t, reg, "unchanged") > fullBefore
	})
}

// TestRedisVersionBackwards: the data set is wiped (as by FLUSHALL) and reseeded with
// lower versions. Watch keeps the old snapshot while the store is empty, then applies
// the reseeded data set, and keeps following new writes.
func TestRedisVersionBackwards(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	a := openRedisStore(t, ro, p)
	reg := prometheus.NewRegistry()
	b := openRedisStore(t, ro, p, store.WithResync(200*time.Millisecond), store.WithMetrics(reg))
	ok := mustV(t)
	seed(t, a)
	for i := range 10 {
		ok(a.CreateCredential(ctx, acl.Credential{UUID: fmt.Sprintf("c%d", i), Account: acc, Username: fmt.Sprintf("u%d", i)}))
	}
	high := ok(a.Version(ctx))
	waitFor, _ := storetest.StartWatch(t, b)
	old := waitFor(high)

	wipePrefix(t, ro, p)
	eventually(t, "the wiped data set to be refused", func() bool { return reloads(t, reg, "kept_empty") >= 1 })
	if b.AppliedVersion() != high || waitFor(high) != old {
		t.Fatal("a wiped store replaced the snapshot")
	}

	ok(a.CreateAccount(ctx, acl.Account{AuthID: acc, TokenHash: "h"}))
	ok(a.CreateACL(ctx, acl.IPACL{UUID: "acl-new", Account: acc, Entries: []acl.Entry{mkEntry("e", "203.0.113.0/24")}}))
	low := ok(a.CreateTrunk(ctx, acl.Trunk{ID: "t-new", Account: acc, Domain: "new.example.org", Status: acl.TrunkEnabled, ACLUUID: "acl-new"}))
	if low >= high {
		t.Fatalf("reseed reached version %d, not below %d", low, high)
	}
	eventually(t, "the reseeded data set", func() bool { return b.AppliedVersion() == low })
	snap := waitFor(0)
	if id, found := snap.TrunkByDomain("new.example.org"); !found || id != "t-new" {
		t.Fatalf("reseeded trunk not served: %q %t", id, found)
	}
	if _, found := snap.TrunkByDomain("t1.example.org"); found {
		t.Fatal("old trunk still served after reset")
	}
	// Not wedged: the next write is applied as usual.
	next := ok(a.CreateCredential(ctx, acl.Credential{UUID: "c-new", Account: acc, Username: "new"}))
	eventually(t, "the write after the reset", func() bool { return b.AppliedVersion() == next })
}

// TestRedisUnreachable needs no Redis: a refused connection and a server that never
// answers both give ErrUnavailable within the timeout.
func TestRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := l.Addr().String()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // hold it open, say nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	closed := func() string {
		l2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		return l2.Addr().String()
	}()

	for name, addr := range map[string]string{"refused": closed, "silent": silent} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			s, err := store.OpenRedis(ctx, "redis://"+addr+"/0?max_retries=-1", "", store.WithTimeout(300*time.Millisecond))
			if err == nil {
				_ = s.Close()
				t.Fatal("OpenRedis succeeded")
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("got %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v", d)
			}
			lazy, err := store.OpenRedis(ctx, "redis://"+addr+"/0?max_retries=-1", "", store.WithTimeout(300*time.Millisecond), store.WithLazyConnect())
			if err != nil {
				t.Fatalf("lazy OpenRedis: %v", err)
			}
			defer lazy.Close()
			if _, err := lazy.Version(ctx); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("lazy store Version: %v, want ErrUnavailable", err)
			}
		})
	}
}

// TestRedisDownAfterOpen: operations on a store whose Redis went away fail with
// ErrUnavailable, and Watch keeps the last snapshot and reports the store down.
func TestRedisDownAfterOpen(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	// A proxy we can cut, between the store and the real Redis.
	px := newCutProxy(t, ro.Addr)
	pro := *ro
	pro.Addr = px.addr
	pro.MaxRetries = -1
	reg := prometheus.NewRegistry()
	s := openRedisStore(t, &pro, p, store.WithTimeout(300*time.Millisecond), store.WithResync(100*time.Millisecond), store.WithMetrics(reg))
	v := seed(t, s)
	waitFor, _ := storetest.StartWatch(t, s)
	snap := waitFor(v)

	px.cut()
	_, err := s.CreateCredential(ctx, acl.Credential{UUID: "c2", Account: acc, Username: "u2"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := s.GetACL(ctx, acc, "acl-1"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read with Redis down: %v, want ErrUnavailable", err)
	}
	eventually(t, "sipedge_store_up 0", func() bool { return metricValue(t, reg, "sipedge_store_up") == 0 })
	if waitFor(v) != snap {
		t.Fatal("snapshot replaced while Redis was down")
	}
	px.restore()
	v = mustV(t)(s.CreateCredential(ctx, acl.Credential{UUID: "c3", Account: acc, Username: "u3"}))
	waitFor(v)
	eventually(t, "sipedge_store_up 1", func() bool { return metricValue(t, reg, "sipedge_store_up") == 1 })
}

// cutProxy forwards TCP to a backend until cut: then it drops every connection and
// refuses new ones until restored.
type cutProxy struct {
	addr    string
	backend string
	mu      sync.Mutex
	down    bool
	conns   []net.Conn
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String(), backend: backend}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", backend)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
	return p
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestRedisWatchStartsWhileDown: Watch started while Redis is unreachable applies nothing
// (the node stays not ready), keeps trying, and loads once Redis is back.
func TestRedisWatchStartsWhileDown(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	px := newCutProxy(t, ro.Addr)
	pro := *ro
	pro.Addr = px.addr
	pro.MaxRetries = -1
	v := seed(t, openRedisStore(t, ro, p))
	s := openRedisStore(t, &pro, p, store.WithTimeout(300*time.Millisecond))
	px.cut()
	waitFor, versions := storetest.StartWatch(t, s)
	time.Sleep(time.Second)
	if vs := versions(); len(vs) != 0 || s.AppliedVersion() != 0 {
		t.Fatalf("applied %v while Redis was unreachable", vs)
	}
	px.restore()
	if snap := waitFor(v); snap.Version() != v {
		t.Fatalf("snapshot %d, want %d", snap.Version(), v)
	}
}
