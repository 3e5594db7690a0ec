package sip

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Record-Route tokens make in-dialog routing stateless and safe.
//
// The edge's Record-Route URI carries, in its user part, a token:
//
//	b64url( pbx flow[19] || upstream flow[19] || HMAC-SHA256(k, call-id, from-tag, flows)[:10] )
//
// A flow is transport(1) || IP(16) || port(2). The pbx flow is the socket the INVITE came
// from (so requests towards the PBX reuse its TCP connection or reach it behind NAT); the
// upstream flow is the hop the INVITE was relayed to. An in-dialog request is accepted only
// when its top Route is ours and the token verifies for its Call-ID and the original
// From tag: the From tag when the caller sends (→ upstream flow), the To tag when the
// callee sends (→ pbx flow). Next hops come only from the token, never from headers an
// attacker could write, so a token cannot be turned into an open relay, and any node
// sharing the key (and a restarted one) routes the dialog.

const (
	flowBytes    = 19
	routeMACLen  = 10
	routeTokLen  = 2*flowBytes + routeMACLen
	tpByteUDP    = 'U'
	tpByteTCP    = 'T'
	routeKeyName = "sipedge record-route v1"
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

func (r *routeSigner) sum(callID, fromTag string, flows []byte) []byte {
	h := r.mac.get()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(callID)))
	h.Write(n[:])
	h.Write([]byte(callID))
	binary.BigEndian.PutUint32(n[:], uint32(len(fromTag)))
	h.Write(n[:])
	h.Write([]byte(fromTag))
	h.Write(flows)
	var out [sha256.Size]byte
	s := h.Sum(out[:0])
	r.mac.put(h)
	return s[:routeMACLen]
}

// token returns the Record-Route user part for a dialog.
func (r *routeSigner) token(callID, fromTag string, pbx, up flow) string {
	var raw [routeTokLen]byte
	pbx.put(raw[0:flowBytes])
	up.put(raw[flowBytes : 2*flowBytes])
	copy(raw[2*flowBytes:], r.sum(callID, fromTag, raw[:2*flowBytes]))
	return b64.EncodeToString(raw[:])
}

// direction of an in-dialog request relative to the INVITE that created the dialog.
type direction uint8

const (
	towardsUpstream direction = iota + 1 // sent by the caller (the PBX side)
	towardsPBX                           // sent by the callee (the upstream side)
)

// routeTarget is where a verified in-dialog request goes next.
type routeTarget struct {
	dir     direction
	next    flow
	fromTag string // the From tag of the dialog-creating INVITE (dialog table key)
}

// check verifies tok for a request with the given Call-ID and tags.
func (r *routeSigner) check(tok, callID, fromTag, toTag string) (routeTarget, bool) {
	if b64.DecodedLen(len(tok)) != routeTokLen {
		return routeTarget{}, false
	}
	var raw [routeTokLen]byte
	if n, err := b64.Decode(raw[:], []byte(tok)); err != nil || n != routeTokLen {
		return routeTarget{}, false
	}
	pbx, ok1 := getFlow(raw[0:flowBytes])
	up, ok2 := getFlow(raw[flowBytes : 2*flowBytes])
	if !ok1 || !ok2 {
		return routeTarget{}, false
	}
	mac := raw[2*flowBytes:]
	if fromTag != "" && hmac.Equal(mac, r.sum(callID, fromTag, raw[:2*flowBytes])) {
		return routeTarget{dir: towardsUpstream, next: up, fromTag: fromTag}, true
	}
	if toTag != "" && hmac.Equal(mac, r.sum(callID, toTag, raw[:2*flowBytes])) {
		return routeTarget{dir: towardsPBX, next: pbx, fromTag: toTag}, true
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
