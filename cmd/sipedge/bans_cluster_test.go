package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/sip"
	"github.com/sipedge/sipedge/store"
)

// The SIP layer consumes *store.Bans through its own interface.
var _ sip.BanStore = (*store.Bans)(nil)

// TestRedisBansTwoSIPNodes: wrong digest answers through node A ban the source on node B
// too (through the shared Redis ban list), and a lift through B frees it on A.
func TestRedisBansTwoSIPNodes(t *testing.T) {
	u := os.Getenv("SIPEDGE_TEST_REDIS")
	if u == "" {
		t.Skip("set SIPEDGE_TEST_REDIS to run (make test does)")
	}
	ro, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "sipedgetest:" + uuid.NewString()[:8] + ":"
	ha1 := md5.Sum([]byte("u3:" + sip.DefaultRealm + ":right-password"))
	snap, err := acl.Compile(&acl.Dataset{Version: 1,
		Credentials: []acl.Credential{{UUID: "c3", Name: "c3", Username: "u3", Realm: sip.DefaultRealm, HA1MD5: hex.EncodeToString(ha1[:])}},
		Trunks: []acl.Trunk{{ID: "t3", Name: "t3", Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled,
			Domain: "t3.example.org", CredentialUUID: "c3"}}})
	if err != nil {
		t.Fatal(err)
	}
	node := func(name string) *sip.Server {
		st, err := store.OpenRedisOptions(context.Background(), ro, store.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		srv, err := sip.New(sip.Config{
			Listen: "127.0.0.1:0", NonceKey: []byte("0123456789abcdef0123456789abcdef-bans"),
			Upstream: "sip:127.0.0.3:9", NodeName: name, BanRefresh: 100 * time.Millisecond, Logger: zerolog.Nop(),
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
	nonceRe := regexp.MustCompile(`nonce="([^"]+)"`)
	// ask sends one request and returns its final code and the nonce of a 407.
	ask := func(edge *sip.Server, method, ruri, extra string) (int, string) {
		t.Helper()
		id := fmt.Sprintf("bans-%d", time.Now().UnixNano())
		msg := fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\nFrom: <sip:x@127.0.0.9>;tag=f1\r\n"+
			"To: <%s>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n%sContent-Length: 0\r\n\r\n",
			method, ruri, c.LocalAddr(), id, ruri, id, method, extra)
		if _, err := c.WriteToUDPAddrPort([]byte(msg), edge.Addr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for {
			_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				return 0, ""
			}
			if s := string(buf[:n]); strings.Contains(s, id) && !strings.HasPrefix(s, "SIP/2.0 1") {
				code := 0
				fmt.Sscanf(s, "SIP/2.0 %d", &code)
				nonce := ""
				if m := nonceRe.FindStringSubmatch(s); m != nil {
					nonce = m[1]
				}
				return code, nonce
			}
		}
	}
	md5hex := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	const ruri = "sip:100@t3.example.org"
	for i := range sip.DefaultBanThreshold {
		code, nonce := ask(a, "INVITE", ruri, "")
		if code != 407 {
			t.Fatalf("INVITE #%d answered %d, want 407", i+1, code)
		}
		wrong := md5hex("u3:" + sip.DefaultRealm + ":guess")
		resp := md5hex(wrong + ":" + nonce + ":00000001:c0ffee:auth:" + md5hex("INVITE:"+ruri))
		pa := fmt.Sprintf("Proxy-Authorization: Digest username=\"u3\", realm=\"%s\", nonce=\"%s\", uri=\"%s\", response=\"%s\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc=00000001\r\n",
			sip.DefaultRealm, nonce, ruri, resp)
		if code, _ := ask(a, "INVITE", ruri, pa); code != 407 {
			t.Fatalf("wrong answer #%d answered %d, want 407", i+1, code)
		}
	}
	src := netip.MustParseAddr("127.0.0.9")
	deadline := time.Now().Add(3 * time.Second)
	for !b.Bans().Banned(src) {
		if time.Now().After(deadline) {
			t.Fatal("node B never learned the ban set through node A")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := ask(b, "OPTIONS", "sip:127.0.0.1", ""); code != 0 {
		t.Fatalf("node B answered the banned source: %d", code)
	}
	bans, err := b.Bans().List(context.Background())
	if err != nil || len(bans) != 1 || bans[0].IP != "127.0.0.9" || bans[0].Node != "a" || bans[0].Reason != sip.BanReasonDigest {
		t.Fatalf("List on B = %+v, %v", bans, err)
	}
	if lifted, err := b.Bans().Lift(context.Background(), src); err != nil || !lifted {
		t.Fatalf("Lift on B = %v, %v", lifted, err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for a.Bans().Banned(src) {
		if time.Now().After(deadline) {
			t.Fatal("node A kept a ban lifted through node B")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := ask(a, "OPTIONS", "sip:127.0.0.1", ""); code != 200 {
		t.Fatalf("node A after the lift answered %d", code)
	}
	cl := redis.NewClient(ro)
	defer cl.Close()
	if keys, _ := cl.Keys(context.Background(), prefix+"*").Result(); len(keys) > 0 {
		cl.Del(context.Background(), keys...)
	}
}
