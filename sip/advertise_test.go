package sip

import (
	"net/netip"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Bound to a wildcard, the edge advertises the address it would reach its upstream
// from; without a usable upstream, the first global address (IPv4 first), else loopback.
// --advertise wins, taking the bound port when it names none.
func TestAdvertisedAddress(t *testing.T) {
	if got := outboundIP("sip:127.0.0.1:5080", nil); got != aa("127.0.0.1") {
		t.Errorf("outbound towards a loopback upstream: %v", got)
	}
	for _, tc := range []struct {
		local []netip.Addr
		want  netip.Addr
	}{
		{[]netip.Addr{aa("127.0.0.1"), aa("fe80::1"), aa("2001:db8::1"), aa("192.0.2.7")}, aa("192.0.2.7")},
		{[]netip.Addr{aa("::1"), aa("2001:db8::1")}, aa("2001:db8::1")},
		{nil, aa("127.0.0.1")},
	} {
		for _, up := range []string{"", "sip:upstream.example.net", "sip:[not-an-ip"} {
			if got := outboundIP(up, tc.local); got != tc.want {
				t.Errorf("outboundIP(%q, %v) = %v, want %v", up, tc.local, got, tc.want)
			}
		}
	}

	s := &Server{cfg: Config{Upstream: "sip:127.0.0.1:5080"}}
	if a := s.advertise(ap("0.0.0.0:5070")); a != (advertised{"127.0.0.1", 5070}) {
		t.Errorf("wildcard bind advertises %+v", a)
	}
	if a := s.advertise(ap("192.0.2.7:5070")); a != (advertised{"192.0.2.7", 5070}) {
		t.Errorf("bound address advertises %+v", a)
	}
	s.cfg.Advertise = "sip.example.net"
	if a := s.advertise(ap("0.0.0.0:5070")); a != (advertised{"sip.example.net", 5070}) {
		t.Errorf("--advertise without a port gives %+v", a)
	}
	s.cfg.Advertise = "203.0.113.5:5999"
	if a := s.advertise(ap("0.0.0.0:5070")); a != (advertised{"203.0.113.5", 5999}) {
		t.Errorf("--advertise with a port gives %+v", a)
	}
}

// A Request-URI addresses the edge when it names the advertised host:port, or the bound
// address; bound to a wildcard, any loopback or local interface address on our port.
func TestIsEdgeURI(t *testing.T) {
	wild := &Server{adv: advertised{"sip.example.net", 5060}, addr: ap("0.0.0.0:5060"),
		localIPs: []netip.Addr{aa("127.0.0.1"), aa("192.0.2.7"), aa("2001:db8::7")}}
	bound := &Server{adv: advertised{"203.0.113.5", 5060}, addr: ap("192.0.2.7:5070")}
	for _, tc := range []struct {
		s    *Server
		uri  string
		want bool
	}{
		{wild, "sip:svc@sip.example.net", true},
		{wild, "sip:svc@SIP.example.net:5060", true},
		{wild, "sip:svc@sip.example.net:5070", false},
		{wild, "sip:svc@192.0.2.7", true},
		{wild, "sip:svc@[2001:db8::7]:5060", true},
		{wild, "sip:svc@[::ffff:192.0.2.7]", true},
		{wild, "sip:svc@127.0.0.5", true},
		{wild, "sip:svc@192.0.2.8", false},
		{wild, "sip:svc@192.0.2.7:5080", false},
		{wild, "sip:svc@other.example.net", false},
		{bound, "sip:svc@203.0.113.5", true},
		{bound, "sip:svc@192.0.2.7:5070", true},
		{bound, "sip:svc@192.0.2.7", false},
		{bound, "sip:svc@127.0.0.1:5070", false},
	} {
		var u sipmsg.Uri
		if err := sipmsg.ParseUri(tc.uri, &u); err != nil {
			t.Fatal(err)
		}
		if got := tc.s.isEdgeURI(&u); got != tc.want {
			t.Errorf("isEdgeURI(%s) on %v = %v, want %v", tc.uri, tc.s.addr, got, tc.want)
		}
	}
}
