package store_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// ownRedis starts a redis-server of the test's own on a free loopback port (stopped by
// PID when the test ends) and returns its address. It skips like the other Redis tests.
func ownRedis(t *testing.T, args ...string) string {
	t.Helper()
	if os.Getenv("SIPEDGE_TEST_REDIS") == "" {
		t.Skip("set SIPEDGE_TEST_REDIS to run")
	}
	bin := os.Getenv("SIPEDGE_TEST_REDIS_BIN")
	if bin == "" {
		bin = "redis-server"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	all := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, args...)
	cmd := exec.Command(bin, all...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	eventually(t, "redis-server to answer", func() bool { return c.Ping(ctx).Err() == nil })
	return addr
}

// TestRedisLegacyPrefix: without WithPrefix, a Redis holding a data set under the legacy
// prefix sipedge: (and nothing under {sipedge}:) is served from there; an empty one gets
// the hash-tagged prefix.
func TestRedisLegacyPrefix(t *testing.T) {
	addr := ownRedis(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	old, err := store.OpenRedis(ctx, "redis://"+addr+"/1", "", store.WithPrefix(store.LegacyRedisPrefix))
	if err != nil {
		t.Fatal(err)
	}
	v := seed(t, old)
	_ = old.Close()

	s, err := store.OpenRedis(ctx, "redis://"+addr+"/1", "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := mustV(t)(s.Version(ctx)); got != v {
		t.Fatalf("version %d through the default prefix, want the legacy data set's %d", got, v)
	}
	if _, err := s.GetTrunk(ctx, acc, "t1"); err != nil {
		t.Fatalf("legacy trunk: %v", err)
	}

	fresh, err := store.OpenRedis(ctx, "redis://"+addr+"/2", "")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	seed(t, fresh)
	c2 := redis.NewClient(&redis.Options{Addr: addr, DB: 2})
	defer c2.Close()
	if n := c2.Exists(ctx, "{sipedge}:version", "{sipedge}:accounts").Val(); n != 2 {
		t.Fatalf("fresh data set: %d of its keys under {sipedge}:", n)
	}
	if keys := c2.Keys(ctx, "sipedge:*").Val(); len(keys) != 0 {
		t.Fatalf("fresh data set wrote legacy keys %v", keys)
	}
}

// TestRedisClusterMode runs the conformance suite, Watch, the probe and a restore through
// redis+cluster:// against a one-node Redis Cluster (all 16384 slots on one server): every
// write of the store is one MULTI on one slot, which a Cluster refuses otherwise
// (CROSSSLOT). An untagged prefix is refused in Cluster mode.
func TestRedisClusterMode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	addr := ownRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+uuid.NewString()[:8]+".conf")
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cluster_state:ok", func() bool {
		info, _ := c.ClusterInfo(ctx).Result()
		return strings.Contains(info, "cluster_state:ok")
	})
	url := "redis+cluster://" + addr
	if _, err := store.OpenRedis(ctx, url, "", store.WithPrefix("untagged:")); err == nil {
		t.Fatal("an untagged prefix was accepted in Cluster mode")
	}
	prefixes := map[*store.Store]string{}
	open := func(t *testing.T, prefix string, opts ...store.Option) *store.Store {
		s, err := store.OpenRedis(ctx, url, "", append([]store.Option{store.WithPrefix(prefix), store.WithResync(time.Second)}, opts...)...)
		if err != nil {
			t.Fatalf("OpenRedis %s: %v", url, err)
		}
		t.Cleanup(func() { _ = s.Close() })
		prefixes[s] = prefix
		return s
	}
	storetest.Run(t,
		func(t *testing.T, opts ...store.Option) *store.Store {
			return open(t, "{sipedgetest-"+uuid.NewString()[:8]+"}:", opts...)
		},
		func(t *testing.T, old *store.Store) *store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, prefixes[old])
		})

	t.Run("WatchProbeRestore", func(t *testing.T) {
		p := "{sipedgetest-" + uuid.NewString()[:8] + "}:"
		w := open(t, p, store.WithProbe(100*time.Millisecond, time.Second))
		s := open(t, p)
		v := seed(t, s)
		waitFor, _ := storetest.StartWatch(t, w)
		waitFor(v)
		eventually(t, "a probe echo through the cluster", func() bool { return !w.Subscription().LastEcho.IsZero() })
		_, v, err := s.UpdateACL(ctx, acc, "acl-1", func(a *acl.IPACL) error {
			a.Entries = append(a.Entries, mkEntry("e2", "203.0.113.0/24"))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(v)
		rv, err := s.Restore(context.Background(), w.LastGood(), store.RestoreOptions{FromNode: "w"})
		if err != nil {
			t.Fatal(err)
		}
		if snap := waitFor(rv); !snap.Allows("t1", mustAddr(t, "203.0.113.1")) {
			t.Fatal("restored snapshot misses the entry")
		}
	})
}
