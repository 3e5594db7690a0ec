package sip

import (
	"crypto/hmac"
	"encoding/binary"
	"net/netip"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// Record-Route tokens make in-dialog routing stateless and safe.
//
// The edge's Record-Route URI carries, in its user part, a token:
//
//	b64url( 'R' || pbx flow[19] || upstream flow[19] || issued[4] || lifetime[4] ||
//	        len(trunk)[1] || trunk || HMAC-SHA256(k, call-id, from-tag, all before)[:10] )
//
// A flow is transport(1) || IP(16) || port(2). The pbx flow is the socket the INVITE came
// from (so requests towards the PBX reuse its TCP connection or reach it behind NAT); the
// upstream flow is the hop the INVITE was relayed to. issued is unix seconds, lifetime
// seconds (the dialog's lifetime, DialogTimeout). trunk is the trunk the INVITE was allowed
// for.
//
// The token binds what it authorised: an in-dialog request is accepted only when its top
// Route is ours and the token verifies for its Call-ID and the original From tag (the From
// tag when the caller sends → upstream flow, the To tag when the callee sends → pbx flow),
// it has not expired (a re-INVITE renews the dialog in the node's dialog table), it comes
// from the PBX flow's address (towards the upstream) or the upstream flow's (towards the
// PBX), and its trunk still takes calls (BYE, CANCEL and ACK pass anyway, so calls on a
// disabled trunk can end). Next hops come only from the token, never from headers an
// attacker could write, so a token cannot be turned into an open relay, and any node
// sharing the key (and a restarted one) routes the dialog.

const (
	flowBytes     = 19
	routeMACLen   = 10
	routeFixedLen = 1 + 2*flowBytes + 4 + 4 + 1 // version, flows, issued, lifetime, trunk length
	maxTrunkBytes = 64
	routeTokVer   = 'R'
	tpByteUDP     = 'U'
	tpByteTCP     = 'T'
	routeKeyName  = "sipedge record-route v2"
)

// flow is one end of a relayed dialog as the edge reaches it.
type flow struct {
	tp   string // "UDP" or "TCP"
	addr netip.AddrPort
}

func (f flow) put(b []byte) {
	if f.tp == "TCP" {
		b[0] = tpByteTCP
	} else {
		b[0] = tpByteUDP
	}
	ip := f.addr.Addr().As16()
	copy(b[1:17], ip[:])
	binary.BigEndian.PutUint16(b[17:19], f.addr.Port())
}

func getFlow(b []byte) (flow, bool) {
	var f flow
	switch b[0] {
	case tpByteUDP:
		f.tp = "UDP"
	case tpByteTCP:
		f.tp = "TCP"
	default:
		return f, false
	}
	ip := netip.AddrFrom16([16]byte(b[1:17])).Unmap()
	f.addr = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[17:19]))
	return f, f.addr.IsValid() && f.addr.Port() != 0
}

// routeSigner makes and checks Record-Route tokens.
type routeSigner struct{ mac *macPool }

func newRouteSigner(master []byte) *routeSigner {
	return &routeSigner{mac: newMacPool(deriveKey(master, routeKeyName))}
}

func (r *routeSigner) sum(dst *[routeMACLen]byte, callID, fromTag string, body []byte) {
	st := r.mac.get()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(callID)))
	copy(st.scratch[:4], n[:])
	st.write(st.scratch[:4])
	st.writeString(callID)
	binary.BigEndian.PutUint32(n[:], uint32(len(fromTag)))
	copy(st.scratch[:4], n[:])
	st.write(st.scratch[:4])
	st.writeString(fromTag)
	st.write(body)
	copy(dst[:], st.final())
	r.mac.put(st)
}

// dialogGrant is what a route token authorised: both flows, the trunk, and when.
type dialogGrant struct {
	pbx, up flow
	trunk   acl.TrunkID
	issued  time.Time
	expires time.Time
}

// token returns the Record-Route user part for a dialog. A trunk id longer than
// maxTrunkBytes (never made by the API) is cut, and then names no trunk: fail closed.
func (r *routeSigner) token(callID, fromTag string, g dialogGrant) string {
	trunk := string(g.trunk)
	if len(trunk) > maxTrunkBytes {
		trunk = trunk[:maxTrunkBytes]
	}
	var buf [routeFixedLen + maxTrunkBytes + routeMACLen]byte
	raw := buf[:routeFixedLen+len(trunk)+routeMACLen]
	raw[0] = routeTokVer
	g.pbx.put(raw[1 : 1+flowBytes])
	g.up.put(raw[1+flowBytes : 1+2*flowBytes])
	o := 1 + 2*flowBytes
	binary.BigEndian.PutUint32(raw[o:o+4], uint32(g.issued.Unix()))
	life := g.expires.Sub(g.issued) / time.Second
	binary.BigEndian.PutUint32(raw[o+4:o+8], uint32(max(life, 1)))
	raw[o+8] = byte(len(trunk))
	copy(raw[routeFixedLen:], trunk)
	body := raw[:routeFixedLen+len(trunk)]
	var mac [routeMACLen]byte
	r.sum(&mac, callID, fromTag, body)
	copy(raw[len(body):], mac[:])
	return b64.EncodeToString(raw)
}

// direction of an in-dialog request relative to the INVITE that created the dialog.
type direction uint8

const (
	towardsUpstream direction = iota + 1 // sent by the caller (the PBX side)
	towardsPBX                           // sent by the callee (the upstream side)
)

// routeTarget is where a verified in-dialog request goes next, and what allowed it.
type routeTarget struct {
	dir     direction
	next    flow
	fromTag string // the From tag of the dialog-creating INVITE (dialog table key)
	grant   dialogGrant
}

// check verifies tok for a request with the given Call-ID and tags: its MAC only. The
// caller checks the grant (expiry, source, trunk) against the request.
func (r *routeSigner) check(tok, callID, fromTag, toTag string) (routeTarget, bool) {
	n := b64.DecodedLen(len(tok))
	if n < routeFixedLen+routeMACLen || n > routeFixedLen+maxTrunkBytes+routeMACLen {
		return routeTarget{}, false
	}
	var buf [routeFixedLen + maxTrunkBytes + routeMACLen]byte
	m, err := b64.Decode(buf[:], []byte(tok))
	if err != nil || m != n || buf[0] != routeTokVer {
		return routeTarget{}, false
	}
	raw := buf[:m]
	o := 1 + 2*flowBytes
	tl := int(raw[o+8])
	if routeFixedLen+tl+routeMACLen != m {
		return routeTarget{}, false
	}
	pbx, ok1 := getFlow(raw[1 : 1+flowBytes])
	up, ok2 := getFlow(raw[1+flowBytes : 1+2*flowBytes])
	if !ok1 || !ok2 {
		return routeTarget{}, false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint32(raw[o:o+4])), 0)
	g := dialogGrant{
		pbx: pbx, up: up, issued: issued,
		expires: issued.Add(time.Duration(binary.BigEndian.Uint32(raw[o+4:o+8])) * time.Second),
		trunk:   acl.TrunkID(raw[routeFixedLen : routeFixedLen+tl]),
	}
	body, mac := raw[:routeFixedLen+tl], raw[routeFixedLen+tl:]
	var want [routeMACLen]byte
	if fromTag != "" {
		r.sum(&want, callID, fromTag, body)
	}
	if fromTag != "" && hmac.Equal(mac, want[:]) {
		return routeTarget{dir: towardsUpstream, next: up, fromTag: fromTag, grant: g}, true
	}
	if toTag != "" {
		r.sum(&want, callID, toTag, body)
	}
	if toTag != "" && hmac.Equal(mac, want[:]) {
		return routeTarget{dir: towardsPBX, next: pbx, fromTag: toTag, grant: g}, true
	}
	return routeTarget{}, false
}

// advertised is the host:port the edge writes into Via and Record-Route.
type advertised struct {
	host string // IP literal (IPv6 without brackets) or a lower-case name
	port int
}

// recordRoute builds our Record-Route for one transport.
func (a advertised) recordRoute(token, tp string) *sipmsg.RecordRouteHeader {
	params := sipmsg.NewParams()
	if tp == "TCP" {
		params.Add("transport", "tcp")
	}
	params.Add("lr", "")
	return &sipmsg.RecordRouteHeader{Address: sipmsg.Uri{
		Scheme: "sip", User: token, Host: a.host, Port: a.port, UriParams: params,
	}}
}

// isOurs reports whether a Route/R-URI host:port names this edge.
func (a advertised) isOurs(u *sipmsg.Uri) bool {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if port != a.port {
		return false
	}
	return strings.EqualFold(strings.Trim(u.Host, "[]"), a.host)
}

// tagOf returns the tag parameter of a From/To header ("" when absent).
func tagOf(p sipmsg.HeaderParams) string {
	t, _ := p.Get("tag")
	return t
}
