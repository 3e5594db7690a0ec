package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/sip"
	"github.com/sipedge/sipedge/store"
)

// The SIP layer consumes *store.Bans through its own interface.
var _ sip.BanStore = (*store.Bans)(nil)

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
func TestRedisBansTwoSIPNodes(t *testing.T) {
	ro := redisOptions(t)
	prefix := testPrefix(t, ro)
	snap, err := acl.Compile(&acl.Dataset{Version: 1, Trunks: []acl.Trunk{{ID: "t3", Name: "t3",
		Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled, Domain: "t3.example.org"}}})
	if err != nil {
		t.Fatal(err)
	}
	node := func(name string) *sip.Server {
		st := openRedisStore(t, ro, prefix)
		srv, err := sip.New(sip.Config{
			Listen: "127.0.0.1:0", NonceKey: []byte("0123456789abcdef0123456789abcdef-bans"),
			NodeName: name, BanRefresh: 100 * time.Millisecond, Logger: zerolog.Nop(),
		}, func() sip.Policy { return snap }, sip.WithBanStore(st.Bans()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		<-srv.Ready()
		t.Cleanup(func() { cancel(); <-done })
		return srv
	}
	a, b := node("a"), node("b")

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(edge *sip.Server, method, ruri string) int {
		t.Helper()
		id := fmt.Sprintf("bans-%d", time.Now().UnixNano())
		msg := fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\nFrom: <sip:x@127.0.0.9>;tag=f1\r\n"+
			"To: <%s>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			method, ruri, c.LocalAddr(), id, ruri, id, method)
		if _, err := c.WriteToUDPAddrPort([]byte(msg), edge.Addr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for {
			_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				return 0
			}
			if s := string(buf[:n]); strings.Contains(s, id) && !strings.HasPrefix(s, "SIP/2.0 1") {
				code := 0
				fmt.Sscanf(s, "SIP/2.0 %d", &code)
				return code
			}
		}
	}
	for i := range sip.DefaultBanThreshold {
		if code := ask(a, "INVITE", "sip:100@t3.example.org"); code != 403 {
			t.Fatalf("INVITE #%d to a trunk without credential answered %d", i+1, code)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for !b.Bans().Banned(netip.MustParseAddr("127.0.0.9")) {
		if time.Now().After(deadline) {
			t.Fatal("node B never learned the ban set through node A")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := ask(b, "OPTIONS", "sip:127.0.0.1"); code != 0 {
		t.Fatalf("node B answered the banned source: %d", code)
	}
	bans, err := b.Bans().List(context.Background())
	if err != nil || len(bans) != 1 || bans[0].IP != "127.0.0.9" || bans[0].Node != "a" || bans[0].Reason != sip.BanReasonUnknownTrunk {
		t.Fatalf("List on B = %+v, %v", bans, err)
	}

	if lifted, err := b.Bans().Lift(context.Background(), netip.MustParseAddr("127.0.0.9")); err != nil || !lifted {
		t.Fatalf("Lift on B = %v, %v", lifted, err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for a.Bans().Banned(netip.MustParseAddr("127.0.0.9")) {
		if time.Now().After(deadline) {
			t.Fatal("node A kept a ban lifted through node B")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := ask(a, "OPTIONS", "sip:127.0.0.1"); code != 200 {
		t.Fatalf("node A after the lift answered %d", code)
	}
}
