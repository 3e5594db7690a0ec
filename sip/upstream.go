package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// upstreamSpec is a parsed upstream URI: "sip:host[:port][;transport=udp|tcp]".
type upstreamSpec struct {
	host string // IP literal or name, no brackets
	port int
	tp   string // "UDP" (default, RFC 3263) or "TCP"
}

var errNoUpstream = errors.New("sip: no upstream configured")

func parseUpstream(s string) (upstreamSpec, error) {
	var u sipmsg.Uri
	if !validHeaderText(s) {
		return upstreamSpec{}, errors.New("not a printable URI")
	}
	if err := sipmsg.ParseUri(s, &u); err != nil {
		return upstreamSpec{}, err
	}
	if u.Scheme != "sip" {
		return upstreamSpec{}, fmt.Errorf("scheme %q: only sip: is supported", u.Scheme)
	}
	host := strings.Trim(u.Host, "[]")
	if host == "" {
		return upstreamSpec{}, errors.New("no host")
	}
	spec := upstreamSpec{host: host, port: u.Port, tp: "UDP"}
	if spec.port == 0 {
		spec.port = 5060
	}
	if tp, ok := u.UriParams.Get("transport"); ok {
		switch strings.ToLower(tp) {
		case "udp":
		case "tcp":
			spec.tp = "TCP"
		default:
			return upstreamSpec{}, fmt.Errorf("transport %q: only udp and tcp are supported", tp)
		}
	}
	return spec, nil
}

// upstreamCache resolves upstream URIs to a flow once and caches them, so no DNS lookup
// happens per request (sipgo would resolve a host name on every send). A failed refresh
// keeps serving the last good address. Safe for concurrent use.
type upstreamCache struct {
	resolver *net.Resolver
	ttl      time.Duration
	timeout  time.Duration
	// onResolve, when set, learns every address an upstream resolves to, with the
	// upstream URI it came from (the edge never bans or rate-limits its upstreams). Set
	// before use.
	onResolve func(raw string, ip netip.Addr)

	mu sync.RWMutex
	m  map[string]*upstreamEntry
}

type upstreamEntry struct {
	spec upstreamSpec
	err  error // parse error of the URI

	cur     atomic.Pointer[resolvedFlow]
	refresh sync.Mutex // one resolver call per entry at a time
}

type resolvedFlow struct {
	flow    flow
	expires time.Time // zero: an IP literal, never expires
}

func (r *resolvedFlow) fresh(now time.Time) bool {
	return r != nil && (r.expires.IsZero() || now.Before(r.expires))
}

const maxUpstreamEntries = 4096

func newUpstreamCache(r *net.Resolver) *upstreamCache {
	if r == nil {
		r = net.DefaultResolver
	}
	return &upstreamCache{resolver: r, ttl: time.Minute, timeout: 2 * time.Second, m: map[string]*upstreamEntry{}}
}

// upstreamHop is a resolved upstream: the URI parts (for the Request-URI) and the flow
// (where packets go).
type upstreamHop struct {
	spec upstreamSpec
	flow flow
}

// get returns the hop for the upstream URI raw.
func (c *upstreamCache) get(ctx context.Context, raw string) (upstreamHop, error) {
	if raw == "" {
		return upstreamHop{}, errNoUpstream
	}
	now := time.Now()
	c.mu.RLock()
	e := c.m[raw]
	c.mu.RUnlock()
	if e != nil {
		if r := e.cur.Load(); r.fresh(now) {
			return upstreamHop{e.spec, r.flow}, nil
		}
	}
	if e == nil {
		spec, err := parseUpstream(raw)
		e = &upstreamEntry{spec: spec, err: err}
		c.mu.Lock()
		if len(c.m) >= maxUpstreamEntries {
			clear(c.m)
		}
		if old := c.m[raw]; old != nil {
			e = old
		} else {
			c.m[raw] = e
		}
		c.mu.Unlock()
	}
	f, err := c.resolve(ctx, raw, e)
	return upstreamHop{e.spec, f}, err
}

func (c *upstreamCache) resolve(ctx context.Context, raw string, e *upstreamEntry) (flow, error) {
	e.refresh.Lock()
	defer e.refresh.Unlock()
	if e.spec.host == "" {
		return flow{}, e.err
	}
	last := e.cur.Load()
	if last.fresh(time.Now()) {
		return last.flow, nil
	}
	if ip, err := netip.ParseAddr(e.spec.host); err == nil {
		r := &resolvedFlow{flow: flow{tp: e.spec.tp, addr: netip.AddrPortFrom(ip.Unmap(), uint16(e.spec.port))}}
		e.cur.Store(r)
		c.learn(raw, r.flow)
		return r.flow, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ips, err := c.resolver.LookupNetIP(ctx, "ip", e.spec.host)
	if err != nil || len(ips) == 0 {
		if err == nil {
			err = errors.New("no address")
		}
		if last != nil { // keep the last good address for a while
			e.cur.Store(&resolvedFlow{flow: last.flow, expires: time.Now().Add(c.ttl / 4)})
			return last.flow, nil
		}
		return flow{}, fmt.Errorf("sip: resolve upstream %s: %w", e.spec.host, err)
	}
	pick := ips[0]
	for _, ip := range ips { // prefer IPv4, as sipgo does
		if ip.Unmap().Is4() {
			pick = ip
			break
		}
	}
	r := &resolvedFlow{flow: flow{tp: e.spec.tp, addr: netip.AddrPortFrom(pick.Unmap(), uint16(e.spec.port))}, expires: time.Now().Add(c.ttl)}
	e.cur.Store(r)
	c.learn(raw, r.flow)
	return r.flow, nil
}

func (c *upstreamCache) learn(raw string, f flow) {
	if c.onResolve != nil {
		c.onResolve(raw, f.addr.Addr())
	}
}
