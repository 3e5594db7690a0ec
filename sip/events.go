package sip

import (
	"net/netip"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// DenialEvent is one refused request, as the security log's `sip_denied` line records it,
// handed to [Config.OnDenied]. Strings from the request (Call-ID, User-Agent, user) are
// clipped like the log's; never a password or digest response.
type DenialEvent struct {
	Time      time.Time
	Src       netip.AddrPort
	Method    string
	Trunk     string // trunk id; "" when no trunk was found (or an in-dialog request)
	Account   string // the trunk's auth_id; "" with no trunk
	Verdict   string // as the log's verdict field (auth_failed, no_credential, bad_route, …)
	CallID    string
	UserAgent string
	User      string // the username Proxy-Authorization named, if any
	Transport string
}

// denied hands a refused request to Config.OnDenied (when set), whether or not the
// sampled security log writes its line.
func (s *Server) denied(d *decision, req *sipmsg.Request, src netip.AddrPort, tp, verdict string) {
	if s.cfg.OnDenied == nil {
		return
	}
	if tp == "" {
		tp = transportLabel(req.Transport())
	}
	ev := DenialEvent{Time: time.Now(), Src: src, Method: string(req.Method), Verdict: verdict,
		CallID: clip(callIDOf(req)), UserAgent: clip(userAgentOf(req)), Transport: tp}
	if d != nil {
		ev.User = clip(d.User)
		if d.Trunk != nil {
			ev.Trunk, ev.Account = string(d.Trunk.ID), d.Trunk.Account
		}
	}
	s.cfg.OnDenied(ev)
}

// TrunkCalls returns the calls of trunk id holding a concurrency slot on this node
// (being set up, or answered and not yet ended).
func (s *Server) TrunkCalls(id acl.TrunkID) int { return int(s.caps.active(id)) }
