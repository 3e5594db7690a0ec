package main

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Tenancy wiring (DESIGN §4a): what control needs to know about the edge itself, so a
// tenant can neither point its upstream at the edge (a loop) nor claim its SIP names.

// resolveTimeout bounds the start-time lookups of the advertised name and the default
// upstream.
const resolveTimeout = 3 * time.Second

// lookupHost resolves host (an IP literal or a DNS name) to its addresses, unmapped.
// A test may replace it.
var lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, err
}

// interfaceAddrs lists this host's addresses (for a wildcard --sip-listen). A test may
// replace it.
var interfaceAddrs = func() []netip.Addr {
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range ifs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// uriHost is the host of a sip:/sips: URI (brackets of an IPv6 literal removed).
func uriHost(uri string) string {
	_, rest, _ := strings.Cut(uri, ":")
	rest, _, _ = strings.Cut(rest, ";")
	if strings.HasPrefix(rest, "[") {
		if end := strings.IndexByte(rest, ']'); end > 0 {
			return rest[1:end]
		}
	}
	host, _, _ := strings.Cut(rest, ":")
	if at := strings.LastIndexByte(host, '@'); at >= 0 {
		host = host[at+1:]
	}
	return host
}

// splitHost is the host of host[:port] (brackets removed).
func splitHost(hp string) string {
	if h, _, err := net.SplitHostPort(hp); err == nil {
		return h
	}
	return strings.Trim(hp, "[]")
}

// edgeIdentity returns the edge's own SIP addresses (the listen address, or every local
// address when it listens on a wildcard, and the advertised address) and its advertised
// names (reserved as trunk domains).
func edgeIdentity(ctx context.Context, cfg Config, log zerolog.Logger) (own []netip.Addr, names []string) {
	add := func(a netip.Addr) {
		a = a.Unmap().WithZone("")
		for _, o := range own {
			if o == a {
				return
			}
		}
		own = append(own, a)
	}
	if ap, err := netip.ParseAddrPort(cfg.SIPListen); err == nil {
		if ap.Addr().IsUnspecified() {
			for _, a := range interfaceAddrs() {
				add(a)
			}
		}
		add(ap.Addr())
	}
	if cfg.SIPAdvertise != "" {
		host := strings.ToLower(strings.TrimSuffix(splitHost(cfg.SIPAdvertise), "."))
		if _, err := netip.ParseAddr(host); err != nil {
			names = append(names, host)
		}
		addrs, err := lookupHost(ctx, host)
		if err != nil {
			log.Warn().Err(err).Str("sip_advertise", cfg.SIPAdvertise).Msg("advertised SIP name does not resolve: tenants' upstreams are not checked against its addresses")
		}
		for _, a := range addrs {
			add(a)
		}
	}
	return own, names
}

// upstreamAllow is --upstream-allow, or by default the addresses the default upstream
// resolves to now (as /32 or /128 prefixes).
func upstreamAllow(ctx context.Context, cfg Config, log zerolog.Logger) []netip.Prefix {
	if cfg.UpstreamAllow != "" {
		return cfg.upstreamAllow
	}
	addrs, err := lookupHost(ctx, uriHost(cfg.Upstream))
	if err != nil {
		log.Warn().Err(err).Str("upstream", cfg.Upstream).Msg("default upstream does not resolve: tenants may set no upstream_uri until --upstream-allow is given")
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}
