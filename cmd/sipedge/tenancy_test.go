package main

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/rs/zerolog"
)

func TestEdgeIdentityAndUpstreamAllow(t *testing.T) {
	oldLookup, oldIfs := lookupHost, interfaceAddrs
	t.Cleanup(func() { lookupHost, interfaceAddrs = oldLookup, oldIfs })
	lookupHost = func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "edge.example.org":
			return []netip.Addr{netip.MustParseAddr("192.0.2.5")}, nil
		case "core.example.org":
			return []netip.Addr{netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("2001:db8::9")}, nil
		}
		if a, err := netip.ParseAddr(host); err == nil {
			return []netip.Addr{a}, nil
		}
		return nil, errors.New("no such host")
	}
	interfaceAddrs = func() []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("127.0.0.1")}
	}

	c, err := parseConfig([]string{"--sip-listen", "0.0.0.0:5060", "--sip-advertise", "Edge.Example.org:5060", "--upstream", "sip:core.example.org:5060"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	own, names := edgeIdentity(context.Background(), c, zerolog.Nop())
	for _, want := range []string{"10.0.0.7", "127.0.0.1", "0.0.0.0", "192.0.2.5"} {
		if !slices.Contains(own, netip.MustParseAddr(want)) {
			t.Errorf("own addresses %v lack %s", own, want)
		}
	}
	if !slices.Equal(names, []string{"edge.example.org"}) {
		t.Errorf("reserved names %v", names)
	}
	allow := upstreamAllow(context.Background(), c, zerolog.Nop())
	if !slices.Equal(allow, []netip.Prefix{netip.MustParsePrefix("198.51.100.9/32"), netip.MustParsePrefix("2001:db8::9/128")}) {
		t.Errorf("default --upstream-allow %v, want the default upstream's addresses", allow)
	}
	c2, err := parseConfig([]string{"--upstream-allow", "203.0.113.0/24, 2001:db8:1::/48"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := upstreamAllow(context.Background(), c2, zerolog.Nop()); len(got) != 2 || got[0] != netip.MustParsePrefix("203.0.113.0/24") {
		t.Errorf("--upstream-allow %v", got)
	}
	if _, err := parseConfig([]string{"--upstream-allow", "10.0.0.1/8"}, env(nil), io.Discard); err == nil {
		t.Error("--upstream-allow with host bits accepted")
	}
	c3, err := parseConfig([]string{"--api-allow", "10.0.0.0/8"}, env(nil), io.Discard)
	if err != nil || len(c3.metricsAllow) != 1 || c3.metricsAllow[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("--metrics-allow default %v (%v), want as --api-allow", c3.metricsAllow, err)
	}
	c4, err := parseConfig([]string{"--api-allow", "10.0.0.0/8", "--metrics-allow", "192.0.2.0/24"}, env(nil), io.Discard)
	if err != nil || len(c4.metricsAllow) != 1 || c4.metricsAllow[0] != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("--metrics-allow %v (%v)", c4.metricsAllow, err)
	}
}
