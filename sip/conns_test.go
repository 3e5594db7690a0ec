package sip

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestConnLimiterBounds(t *testing.T) {
	l := newConnLimiter(5, 2, 3)
	a, b, p := aa("192.0.2.1"), aa("192.0.2.2"), aa("192.0.2.10")
	if got := acquireN(l, a, false, 3); !slices.Equal(got, []string{"", "", "source"}) {
		t.Fatal("per-source bound of 2 not kept")
	}
	if got := acquireN(l, p, true, 4); !slices.Equal(got[:3], []string{"", "", ""}) || got[3] == "" {
		t.Fatal("listed bound of 3 not kept")
	}
	if l.acquire(b, false) != "total" {
		t.Fatal("total bound of 5 not kept")
	}
	l.release(a)
	if l.acquire(b, false) != "" {
		t.Fatal("a released connection did not free its place")
	}
	if total, byA := l.open(a); total != 5 || byA != 1 {
		t.Fatalf("open: %d total, %d by a", total, byA)
	}
	if len(l.per) != 3 {
		t.Fatalf("limiter tracks %d sources, want the 3 with open connections", len(l.per))
	}
}

// TestTCPConnectionsPerSource: one unlisted address holds at most its share of TCP
// connections; the next is closed at accept, and one closed gives its place back.
func TestTCPConnectionsPerSource(t *testing.T) {
	edge, _, _ := newDefenceRig(t, func(c *Config) { c.MaxTCPConnsPerSource = 3; c.RateLimitRequests = 1000 })
	dial := func() net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.61")}}
		c, err := d.Dial("tcp", edge.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedSoon := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return err != nil && !(ok && ne.Timeout())
	}
	var held []net.Conn
	for range 3 {
		held = append(held, dial())
	}
	for i, c := range held {
		if closedSoon(c) {
			t.Fatalf("connection %d of 3 closed", i+1)
		}
	}
	if !closedSoon(dial()) {
		t.Fatal("a 4th connection from the same source stayed open")
	}
	held[0].Close()
	time.Sleep(100 * time.Millisecond)
	if closedSoon(dial()) {
		t.Fatal("a closed connection did not give its place back")
	}
}

// acquireN asks l for n connections of src and returns its answers in order.
func acquireN(l *connLimiter, src netip.Addr, listed bool, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = l.acquire(src, listed)
	}
	return out
}
