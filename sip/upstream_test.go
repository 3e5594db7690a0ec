package sip

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseUpstream(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want upstreamSpec
		err  string
	}{
		{"sip:127.0.0.1", upstreamSpec{"127.0.0.1", 5060, "UDP"}, ""},
		{"sip:10.0.0.1:5080;transport=tcp", upstreamSpec{"10.0.0.1", 5080, "TCP"}, ""},
		{"sip:[2001:db8::1]:5070;transport=UDP", upstreamSpec{"2001:db8::1", 5070, "UDP"}, ""},
		{"sip:carrier.example.net", upstreamSpec{"carrier.example.net", 5060, "UDP"}, ""},
		{"sips:carrier.example.net", upstreamSpec{}, "only sip:"},
		{"sip:10.0.0.1;transport=tls", upstreamSpec{}, "only udp and tcp"},
		{"sip:", upstreamSpec{}, ""},
		{"sip:10.0.0.1\r\nVia: x", upstreamSpec{}, "printable"},
	} {
		got, err := parseUpstream(tc.in)
		if tc.want.host == "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseUpstream(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// fakeDNS answers A and AAAA queries for any name over UDP on loopback with what it is
// set to, or SERVFAIL while down. A resolver built by resolver() asks only it.
type fakeDNS struct {
	conn    net.PacketConn
	mu      sync.Mutex
	a, aaaa []netip.Addr
	down    bool
	queries atomic.Int64
}

func newFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{conn: c}
	serveDatagrams(t, c, func(b []byte, from net.Addr) {
		if res := d.answer(b); res != nil {
			_, _ = c.WriteTo(res, from)
		}
	})
	return d
}

func (d *fakeDNS) set(down bool, addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down, d.a, d.aaaa = down, nil, nil
	for _, a := range addrs {
		if a.Is4() {
			d.a = append(d.a, a)
		} else {
			d.aaaa = append(d.aaaa, a)
		}
	}
}

func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.conn.LocalAddr().String())
	}}
}

// answer builds the response to one query: the header and question echoed, then one
// answer record per address of the asked type (RFC 1035 §4.1).
func (d *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // root label, QTYPE, QCLASS
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4:])
	d.mu.Lock()
	defer d.mu.Unlock()
	var addrs []netip.Addr
	switch qtype {
	case 1:
		addrs = d.a
		d.queries.Add(1)
	case 28:
		addrs = d.aaaa
	}
	res := append([]byte(nil), q[:end]...)
	flags := uint16(0x8180) // response, recursion desired and available, NOERROR
	if d.down {
		flags |= 2 // SERVFAIL
		addrs = nil
	}
	binary.BigEndian.PutUint16(res[2:], flags)
	binary.BigEndian.PutUint16(res[4:], 1)
	binary.BigEndian.PutUint16(res[6:], uint16(len(addrs)))
	binary.BigEndian.PutUint32(res[8:], 0) // no authority, no additional records
	for _, a := range addrs {
		raw := a.AsSlice()
		res = append(res, 0xc0, 12) // the name: a pointer to the question's
		res = binary.BigEndian.AppendUint16(res, qtype)
		res = binary.BigEndian.AppendUint16(res, 1) // IN
		res = binary.BigEndian.AppendUint32(res, 60)
		res = binary.BigEndian.AppendUint16(res, uint16(len(raw)))
		res = append(res, raw...)
	}
	return res
}

// Upstream names resolve once per TTL, not per request; IPv4 is preferred; a failed
// refresh keeps the last good address (for a quarter TTL at a time); a name that never
// resolved is an error.
func TestUpstreamCacheResolves(t *testing.T) {
	dns := newFakeDNS(t)
	c := newUpstreamCache(dns.resolver())
	c.ttl = 200 * time.Millisecond
	var learned []netip.Addr
	c.onResolve = func(_ string, a netip.Addr) { learned = append(learned, a) }
	ctx := context.Background()
	const raw = "sip:carrier.test:5080;transport=tcp"

	dns.set(false, aa("::1"), aa("127.0.0.4"))
	hop, err := c.get(ctx, raw)
	if err != nil || hop.flow != (flow{tp: "TCP", addr: ap("127.0.0.4:5080")}) || hop.spec.host != "carrier.test" {
		t.Fatalf("get = %+v, %v", hop, err)
	}
	for range 100 {
		if _, err := c.get(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	if n := dns.queries.Load(); n != 1 {
		t.Fatalf("%d DNS queries for 101 requests within the TTL, want 1", n)
	}

	dns.set(true) // DNS fails: the last good address stays in use
	time.Sleep(c.ttl + 20*time.Millisecond)
	failed := time.Now()
	if hop, err := c.get(ctx, raw); err != nil || hop.flow.addr != ap("127.0.0.4:5080") {
		t.Fatalf("during a DNS outage get = %+v, %v; want the last good address", hop, err)
	}
	before := dns.queries.Load()
	if before < 2 {
		t.Fatalf("the stale address was not refreshed (%d queries)", before)
	}
	_, err = c.get(ctx, raw)
	if err != nil || (time.Since(failed) < c.ttl/4 && dns.queries.Load() != before) {
		t.Fatalf("a failed refresh is retried at once (%d → %d queries), err %v", before, dns.queries.Load(), err)
	}

	dns.set(false, aa("127.0.0.5")) // back, with a new address
	time.Sleep(c.ttl/4 + 20*time.Millisecond)
	if hop, err := c.get(ctx, raw); err != nil || hop.flow.addr != ap("127.0.0.5:5080") {
		t.Fatalf("after DNS recovered get = %+v, %v; want the new address", hop, err)
	}
	if len(learned) != 2 || learned[0] != aa("127.0.0.4") || learned[1] != aa("127.0.0.5") {
		t.Fatalf("addresses learned as upstream: %v", learned)
	}

	dns.set(true)
	if _, err := c.get(ctx, "sip:other.test"); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("a name that never resolved: err %v", err)
	}
	dns.set(false)
	if _, err := c.get(ctx, "sip:empty.test"); err == nil {
		t.Fatal("a name with no address resolved")
	}
	if _, err := c.get(ctx, "sips:x.test"); err == nil {
		t.Fatal("a bad URI resolved")
	}
	if _, err := c.get(ctx, ""); err != errNoUpstream {
		t.Fatalf("no upstream: %v", err)
	}
}

// A trunk upstream given by name: the edge resolves it through its resolver and relays
// the call there, with the name kept in the Request-URI.
func TestCallToNamedUpstream(t *testing.T) {
	u := newUAS(t)
	dns := newFakeDNS(t)
	dns.set(false, u.addr.Addr())
	cfg := baseConfig()
	cfg.Upstream = "sip:carrier.test:" + strconv.Itoa(int(u.addr.Port()))
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))), WithResolver(dns.resolver()))
	res, _, codes := newUAC(t, "127.0.0.2", "UDP", edge.Addr()).call("", "", "")
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("call to a named upstream: %v (%v)", res, codes)
	}
	if got := u.lastInvite().Recipient.Host; got != "carrier.test" {
		t.Fatalf("Request-URI host upstream %q, want the upstream's name", got)
	}
}
