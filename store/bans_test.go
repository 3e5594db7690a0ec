package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// banBackends runs f against the embedded ban list and, with SIPEDGE_TEST_REDIS, the
// Redis one.
func banBackends(t *testing.T, f func(t *testing.T, b *store.Bans)) {
	t.Run("embedded", func(t *testing.T) {
		s, err := store.OpenBolt(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f(t, s.Bans())
	})
	t.Run("redis", func(t *testing.T) {
		ro := redisOptions(t)
		f(t, openRedisStore(t, ro, testPrefix(t, ro)).Bans())
	})
}

func TestBansConformance(t *testing.T) {
	banBackends(t, func(t *testing.T, b *store.Bans) {
		ctx := context.Background()
		const src, v6 = "192.0.2.10", "2001:db8:1:2::/64"

		t.Run("failure windows", func(t *testing.T) {
			for want := int64(1); want <= 3; want++ {
				if n, err := b.AddFailure(ctx, src, 300*time.Millisecond); err != nil || n != want {
					t.Fatalf("AddFailure = %d, %v; want %d", n, err, want)
				}
			}
			if n, _ := b.AddFailure(ctx, v6, time.Minute); n != 1 {
				t.Fatalf("another source shares the count: %d", n)
			}
			time.Sleep(400 * time.Millisecond)
			if n, err := b.AddFailure(ctx, src, 300*time.Millisecond); err != nil || n != 1 {
				t.Fatalf("after the window AddFailure = %d, %v; want a new count", n, err)
			}
		})

		t.Run("ban, list, lift", func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second)
			ban := acl.Ban{IP: src, Reason: "digest_failures", Failures: 5, Since: now, Until: now.Add(time.Hour), Node: "a"}
			if err := b.Ban(ctx, ban); err != nil {
				t.Fatal(err)
			}
			if n, _ := b.AddFailure(ctx, src, time.Minute); n != 1 {
				t.Fatalf("Ban kept the failure count: %d", n)
			}
			other := acl.Ban{IP: v6, Reason: "unknown_trunk", Failures: 7, Since: now, Until: now.Add(time.Hour)}
			if err := b.Ban(ctx, other); err != nil {
				t.Fatal(err)
			}
			if err := b.Ban(ctx, acl.Ban{IP: "192.0.2.99", Until: now.Add(-time.Second)}); err != nil {
				t.Fatalf("an ended ban: %v", err)
			}
			list, err := b.List(ctx)
			if err != nil || len(list) != 2 || list[0] != ban || list[1] != other {
				t.Fatalf("List = %+v, %v", list, err)
			}
			if lifted, err := b.Lift(ctx, src); err != nil || !lifted {
				t.Fatalf("Lift = %v, %v", lifted, err)
			}
			if lifted, _ := b.Lift(ctx, src); lifted {
				t.Fatal("second Lift reported a ban")
			}
			if list, _ := b.List(ctx); len(list) != 1 || list[0].IP != v6 {
				t.Fatalf("List after Lift = %+v", list)
			}
			b.Lift(ctx, v6)
		})

		t.Run("bans end", func(t *testing.T) {
			if err := b.Ban(ctx, acl.Ban{IP: src, Since: time.Now(), Until: time.Now().Add(300 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
			if list, _ := b.List(ctx); len(list) != 1 {
				t.Fatalf("List = %+v", list)
			}
			time.Sleep(400 * time.Millisecond)
			if list, _ := b.List(ctx); len(list) != 0 {
				t.Fatalf("ended ban still listed: %+v", list)
			}
		})

		t.Run("sources are canonical", func(t *testing.T) {
			for _, bad := range []string{"", "junk", "10.0.0.0/8", "2001:db8::1", "2001:db8::/48", "2001:db8::1/64",
				"::ffff:192.0.2.1", "192.0.2.010", "2001:DB8::/64"} {
				if _, err := b.AddFailure(ctx, bad, time.Minute); !errors.Is(err, store.ErrInvalid) {
					t.Errorf("AddFailure(%q) = %v", bad, err)
				}
				if err := b.Ban(ctx, acl.Ban{IP: bad, Until: time.Now().Add(time.Hour)}); !errors.Is(err, store.ErrInvalid) {
					t.Errorf("Ban(%q) = %v", bad, err)
				}
			}
		})
	})
}

func TestRedisBansUnavailable(t *testing.T) {
	ro := redisOptions(t)
	s := openRedisStore(t, ro, testPrefix(t, ro), store.WithTimeout(200*time.Millisecond))
	b := s.Bans()
	s.Close() // the client is gone: every call fails fast
	if _, err := b.AddFailure(context.Background(), "192.0.2.1", time.Minute); err == nil {
		t.Fatal("AddFailure on a closed client succeeded")
	}
	if _, err := b.List(context.Background()); err == nil {
		t.Fatal("List on a closed client succeeded")
	}
}

// Two SIP edges sharing one Redis (two Stores on one data set, as two nodes): a source
// banned through one is refused by the other, and a lift through either frees it.
