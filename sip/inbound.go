package sip

import (
	"bytes"
	"net/netip"

	sipmsg "github.com/emiago/sipgo/sip"
)

// onMessage receives every message sipgo's transport layer parsed (after the read filter
// let it through), on the goroutine that read it: a UDP reader or the TCP connection's.
// No sipgo transaction layer runs: the edge's own table (txtable.go) matches
// retransmissions, ACKs, CANCELs and responses.
func (s *Server) onMessage(msg sipmsg.Message) {
	switch m := msg.(type) {
	case *sipmsg.Request:
		s.onRequest(m)
	case *sipmsg.Response:
		s.onResponse(m)
	}
}

// keyBuf is the stack space a server key is built in (a longer key spills to the heap).
const keyBuf = 192

// onRequest matches req against the transaction table — by its top Via branch, sent-by
// and method class, and its source (DESIGN §4: CANCEL matches by branch AND source) —
// then handles what is new.
func (s *Server) onRequest(req *sipmsg.Request) {
	src, err := peerAddr(req)
	if err != nil { // never happens for network input; fail closed anyway
		s.handle(req, nil)
		return
	}
	in := flow{tp: "UDP", addr: src}
	if req.Transport() == "TCP" {
		in.tp = "TCP"
	}
	var kb [keyBuf]byte
	switch {
	case req.IsAck():
		// The ACK of a non-2xx answer belongs to its INVITE's transaction (hop by hop);
		// an ACK for a 2xx is a transaction of its own, relayed end to end.
		if k, ok := serverKey(kb[:0], req, true); ok {
			if p := s.tx.findServer(k); p != nil {
				if p.sameSource(src) && p.acked() {
					return
				}
			} else if v, ok := s.tx.finServer(k); ok && v.src.addr.Addr() == src.Addr() && !v.accepted {
				return // the ACK of a non-2xx answer, retransmitted or late: absorbed
			}
		}
		s.handle(req, nil)
		return
	case req.IsCancel():
		if k, ok := serverKey(kb[:0], req, true); ok {
			if p := s.tx.findServer(k); p != nil {
				s.m.request(string(req.Method), transportLabel(req.Transport()))
				if !p.sameSource(src) {
					// Someone else's call: a branch seen on the wire cancels nothing.
					s.m.drop(dropCancelSource)
					return
				}
				s.onCancel(p, req, in)
				return
			}
			if v, ok := s.tx.finServer(k); ok {
				s.m.request(string(req.Method), transportLabel(req.Transport()))
				if v.src.addr.Addr() != src.Addr() {
					s.m.drop(dropCancelSource)
					return
				}
				s.onCancel(nil, req, in) // too late to cancel anything: 200, no effect
				return
			}
		}
	}
	k, ok := serverKey(kb[:0], req, false)
	if !ok || s.tx.live.Load() >= s.tx.maxLive {
		// No Via or CSeq (answered 400 by validation), or the table is full of
		// transactions in progress: handled without a place in the table (a relay still
		// gets its client side; MaxPendingTransactions refuses it first).
		p := s.tx.newDetached(s, in)
		p.l.req = req
		s.handle(req, p)
		p.abandon()
		return
	}
	p, made, fin := s.tx.addServer(s, k, in, req)
	switch {
	case fin: // a retransmission of a finished transaction's request
		if v, ok := s.tx.finServer(k); ok && v.src.addr.Addr() == src.Addr() && v.resp != nil {
			_ = s.writeTo(v.src, v.resp)
		}
		return
	case !made:
		if p.sameSource(src) {
			p.retransmitted()
		} else {
			s.m.drop(dropCancelSource) // the same branch from another address: not its to use
		}
		return
	}
	if s.auth.guard != nil && req.IsInvite() && req.GetHeader("Proxy-Authorization") != nil {
		// The cluster-wide replay guard is a store round trip (up to 250 ms): not on the
		// reader every other datagram waits behind. Such INVITEs are few (a digest PBX
		// answers one challenge per call) and bounded by the rate limits.
		s.active.Add(1)
		go func() {
			defer s.active.Add(-1)
			s.handle(req, p)
			p.abandon()
		}()
		return
	}
	s.handle(req, p)
	p.abandon()
}

// onCancel answers a CANCEL that matched the INVITE p by branch and source: 200 in the
// CANCEL's own transaction, then 487 to the INVITE and the CANCEL upstream.
func (s *Server) onCancel(p *ptx, req *sipmsg.Request, in flow) {
	var kb [keyBuf]byte
	k, _ := serverKey(kb[:0], req, false)
	c, made, fin := s.tx.addServer(s, k, in, req)
	switch {
	case fin:
		if v, ok := s.tx.finServer(k); ok && v.src.addr.Addr() == in.addr.Addr() && v.resp != nil {
			_ = s.writeTo(v.src, v.resp)
		}
		return
	case !made:
		c.retransmitted()
		return
	}
	s.respond(c, req, in.addr, sipmsg.StatusOK, "OK")
	c.abandon()
	if p != nil {
		p.canceled()
	}
}

// answer is a response of the next hop as the relay handles it: parsed by sipgo (msg), or
// the datagram itself (raw, see rawresponse.go).
type answer struct {
	code   int
	cancel bool             // it answers a CANCEL: ours, never relayed
	msg    *sipmsg.Response // the parsed response; nil on the raw path
	raw    []byte           // the raw path: the datagram
	via    [2]int           // the raw path: what to cut of raw to remove our Via (rawResponse.via)
	buf    *bytes.Buffer    // what goes downstream, once made (down)
}

// down is the answer as it goes downstream, our Via (the top one) removed: the datagram
// without that line, or the parsed response serialized. Made once; freed by done.
func (a *answer) down() []byte {
	if a.buf == nil {
		if a.msg != nil {
			a.msg.RemoveHeader("Via")
			a.buf = encode(a.msg)
		} else {
			a.buf = bufPool.Get().(*bytes.Buffer)
			a.buf.Reset()
			a.buf.Write(a.raw[:a.via[0]])
			a.buf.Write(a.raw[a.via[1]:])
		}
	}
	return a.buf.Bytes()
}

func (a *answer) done() {
	release(a.buf)
	a.buf = nil
}

// onResponse handles a response sipgo parsed (TCP, or a datagram the raw path left).
func (s *Server) onResponse(res *sipmsg.Response) {
	via := res.Via()
	src, ok := responseSource(res)
	if via == nil || !ok {
		s.m.drop(dropStrayResponse)
		return
	}
	branch, _ := via.Params.Get("branch")
	a := answer{code: res.StatusCode, msg: res}
	if cs := res.CSeq(); cs != nil && cs.MethodName == sipmsg.CANCEL {
		a.cancel = true
	}
	s.onAnswer([]byte(branch), src, &a)
}

// relayRawResponse handles a UDP response datagram from src without parsing it, when it
// has the plain shape (scanResponse) and its handling needs no parsed message. It reports
// whether it took the datagram; if not, sipgo parses it and onResponse handles it.
func (s *Server) relayRawResponse(data []byte, src netip.AddrPort) bool {
	r, ok := scanResponse(data)
	if !ok {
		return false
	}
	a := answer{code: r.code, cancel: string(r.method) == "CANCEL", raw: data, via: r.via}
	return s.onAnswer(r.branch, src, &a)
}

// onAnswer passes an answer to the transaction whose branch its top Via carries, if it
// came from the address that transaction sent to; anything else is stray. It reports false
// when the raw path must leave the answer to the parsed one.
func (s *Server) onAnswer(branch []byte, src netip.AddrPort, a *answer) bool {
	defer a.done()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if p := s.tx.findClient(branch); p != nil {
		if src.Addr() != p.out.addr.Addr() {
			s.m.drop(dropStrayResponse)
			return true
		}
		return p.onAnswer(a)
	}
	v, found := s.tx.finClient(branch)
	if !found || src.Addr() != v.out.addr.Addr() {
		s.m.drop(dropStrayResponse)
		return true
	}
	// A retransmission after the final: relay a 2xx (RFC 6026: the UAS retransmits it
	// until our caller's ACK arrives), ACK a non-2xx again; the rest is absorbed.
	switch {
	case a.cancel:
	case v.invite && v.accepted && a.code >= 200 && a.code < 300:
		_ = s.writeTo(v.src, a.down())
	case v.invite && a.code >= 300 && v.ack != nil:
		_ = s.writeTo(v.out, v.ack)
	}
	return true
}

// abandon drops p when the handler neither answered nor relayed its request (dropped as
// banned, from a bad source, an ACK): nothing is kept for it.
func (p *ptx) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.sst != srvTrying || p.cst != cliNone {
		return
	}
	p.done = true
	p.s.tx.wheel.arm(p, 0)
	p.l = nil
	p.s.tx.live.Add(-1)
	p.s.tx.remove(p)
}

// peerAddr is the socket peer of req: the UDP datagram source or the TCP connection peer,
// never a header. Request.Source() is not used because it falls back to the Via header
// when the transport source is empty.
func peerAddr(req *sipmsg.Request) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(req.MessageData.Source())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// transportLabel is the lower-case transport of a received message ("udp", "tcp").
func transportLabel(tp string) string {
	switch tp {
	case "UDP":
		return "udp"
	case "TCP":
		return "tcp"
	}
	return "other"
}
