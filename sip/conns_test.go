package sip

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestConnLimiterBounds(t *testing.T) {
	l := newConnLimiter(6, 2, 3)
	a, b, p := aa("192.0.2.1"), aa("192.0.2.2"), aa("192.0.2.10")
	take := func(src netip.Addr, listed bool, n int) []string {
		var out []string
		for range n {
			out = append(out, l.acquire(src, listed))
		}
		return out
	}
	if got := take(a, false, 3); !slices.Equal(got, []string{"", "", "source"}) {
		t.Fatalf("per-source bound of 2: %q", got)
	}
	if got := take(p, true, 4); !slices.Equal(got, []string{"", "", "", "source"}) {
		t.Fatalf("listed bound of 3: %q", got)
	}
	if got := take(b, false, 2); !slices.Equal(got, []string{"", "total"}) {
		t.Fatalf("total bound of 6: %q", got)
	}
	l.release(a)
	if l.acquire(b, false) != "" {
		t.Fatal("a released connection did not free its place")
	}
	if total, byA := l.open(a); total != 6 || byA != 1 {
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

func TestHeaderClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var h headerClock
	h.feed([]byte("\r\n\r\n"), t0) // keep-alives: nothing pending
	if !h.deadline(time.Second).IsZero() {
		t.Fatal("keep-alives started a header")
	}
	h.feed([]byte("INVITE sip:a@b SIP/2.0\r\nContent-Length: 5\r\nVia: x"), t0)
	if got := h.deadline(time.Second); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("pending header deadline %v", got)
	}
	h.feed([]byte("\r\n\r\nhel"), t0.Add(time.Millisecond))
	if !h.deadline(time.Second).IsZero() || h.inBody != 2 {
		t.Fatalf("after the header: deadline %v, body left %d", h.deadline(time.Second), h.inBody)
	}
	h.feed([]byte("lo"), t0.Add(2*time.Millisecond)) // body done: between messages
	if !h.deadline(time.Second).IsZero() || h.inBody != 0 {
		t.Fatal("the body's end left a header pending")
	}
	t1 := t0.Add(time.Minute)
	h.feed([]byte("BYE sip:a@b SIP/2.0\r\nl: 0\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n"), t1)
	if got := h.deadline(time.Second); !got.Equal(t1.Add(time.Second)) {
		t.Fatalf("second message pending: deadline %v", got)
	}
}

// TestTCPHeaderDeadline: a peer that trickles a header gets its connection closed once
// HeaderTimeout has passed since the header's first byte, though it is never idle.
func TestTCPHeaderDeadline(t *testing.T) {
	edge, _, _ := newDefenceRig(t, func(c *Config) { c.HeaderTimeout = 600 * time.Millisecond; c.RateLimitRequests = 1000 })
	c, err := net.Dial("tcp", edge.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := false
	for _, b := range []byte("INVITE sip:100@t1.example.org SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-slow\r\n") {
		if _, err := c.Write([]byte{b}); err != nil {
			closed = true
			break
		}
		time.Sleep(20 * time.Millisecond)
		if time.Since(start) > 3*time.Second {
			break
		}
	}
	if !closed {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		closed = err != nil && !(ok && ne.Timeout())
	}
	if !closed {
		t.Fatal("a header trickled for over its deadline kept its connection")
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Fatalf("closed after %v, before the header deadline", el)
	}
}
