package sip

import (
	"errors"
	"net/netip"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// The life of a proxy transaction (see txtable.go): RFC 3261 §17 server and client state
// machines, run by events — a response from the next hop, a retransmitted request, an
// ACK, a CANCEL, a timer — on the goroutine that read the message or on the timer
// wheel's. Nothing here blocks: writes are UDP datagrams or writes on an open TCP
// connection; a TCP connect happens in the background (wire.go).

// RFC 3261 timer values (§17.1.1.1, Table 4).
const (
	timerT1     = 500 * time.Millisecond
	timerT2     = 4 * time.Second
	timer64T1   = 64 * timerT1
	timerTrying = 200 * time.Millisecond // automatic 100 Trying (RFC 3261 §16.2, like sipgo's Timer_1xx)
)

// serverTx is what the handler needs of a server transaction: a way to answer. *ptx
// implements it; tests pass a recorder.
type serverTx interface {
	Respond(res *sipmsg.Response) error
}

var (
	errFinalSent = errors.New("sip: a final response was already sent")
	errNoServer  = errors.New("sip: transaction has no server side")
)

// sink is where downstream responses go instead of the wire (a test's recorder), while
// the transaction is in progress; nil for the wire.
func (p *ptx) sink() serverTx {
	if p.l == nil {
		return nil
	}
	return p.l.sink
}

// Respond sends a response the edge made to the sender, as the server transaction:
// recorded for retransmission, with the state change it implies.
func (p *ptx) Respond(res *sipmsg.Response) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	err := p.respondLocked(res, now)
	p.settle(now)
	return err
}

// respondLocked sends res downstream and moves the server side on.
func (p *ptx) respondLocked(res *sipmsg.Response, now time.Time) error {
	if err := p.canRespond(); err != nil {
		return err
	}
	if sink := p.sink(); sink != nil {
		err := sink.Respond(res)
		p.responded(res.StatusCode, now)
		return err
	}
	b := encode(res)
	defer release(b)
	return p.sendDown(res.StatusCode, b.Bytes(), now)
}

// canRespond says why p's server side cannot send a response, if it cannot.
func (p *ptx) canRespond() error {
	switch {
	case p.sst == srvNone:
		return errNoServer
	case p.sst == srvCompleted, p.sst == srvConfirmed, p.sst == srvAccepted, p.done:
		return errFinalSent
	}
	return nil
}

// sendDown writes the serialized response b (status code) to the sender as p's server
// transaction: kept for retransmission when the transport is unreliable and it is not an
// INVITE's 2xx, with the state change it implies.
func (p *ptx) sendDown(code int, b []byte, now time.Time) error {
	if err := p.canRespond(); err != nil {
		return err
	}
	err := p.s.writeTo(p.src, b)
	if p.src.tp == "UDP" && p.skey != "" && !(p.invite && code >= 200 && code < 300) {
		p.resp = append(p.resp[:0:0], b...)
	}
	p.responded(code, now)
	return err
}

// responded moves the server side on after a response of code went downstream.
func (p *ptx) responded(code int, now time.Time) {
	l := p.l
	if l != nil {
		l.tryingAt = 0
	}
	switch {
	case code < 200:
		p.sst = srvProceeding
		return
	case !p.invite:
		p.sst = srvCompleted
	case code < 300:
		p.sst = srvAccepted // RFC 6026: 2xx retransmissions are the UAS's, relayed as they come
		p.resp = nil
	case p.src.tp == "UDP" && l != nil && p.skey != "":
		p.sst = srvCompleted // Timer G until the ACK, Timer H gives up
		l.gIv = timerT1
		l.gAt = now.Add(timerT1).UnixNano()
		l.hAt = now.Add(timer64T1).UnixNano()
	default:
		p.sst = srvConfirmed // reliable transport: nothing to retransmit
	}
	p.code = int16(code)
}

// settle re-arms p's timer and, when neither side has anything left to do, finishes it.
// Called with p.mu held after every event.
func (p *ptx) settle(now time.Time) {
	if p.done {
		return
	}
	l := p.l
	srvQuiet := p.sst == srvNone || p.sst == srvAccepted || p.sst == srvConfirmed ||
		(p.sst == srvCompleted && (l == nil || l.hAt == 0))
	cliQuiet := p.cst == cliNone || p.cst == cliDone
	if srvQuiet && cliQuiet && (l == nil || l.cancelAt == 0) {
		p.finish(now)
		return
	}
	if l != nil && p.sst >= srvCompleted && cliQuiet {
		l.req, l.fw = nil, nil // nothing more is built from them
	}
	p.rearm()
}

// finish ends p: its timers are cancelled, its live state dropped; the table keeps it for
// the linger (or removes it).
func (p *ptx) finish(now time.Time) {
	p.done = true
	p.s.tx.wheel.arm(p, 0)
	if p.l != nil {
		release(p.l.fwb)
		p.l.fwb = nil
		p.l = nil
	}
	p.s.tx.finished(p, now)
}

// rearm arms the wheel for p's earliest deadline.
func (p *ptx) rearm() {
	l := p.l
	if l == nil {
		return
	}
	next := int64(0)
	for _, d := range [...]int64{l.retransAt, l.deadline, l.tryingAt, l.gAt, l.hAt, l.cancelAt} {
		if d != 0 && (next == 0 || d < next) {
			next = d
		}
	}
	p.s.tx.wheel.arm(p, next)
}

// fire runs p's due timers (the wheel's goroutine).
func (p *ptx) fire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.l == nil {
		return
	}
	now := time.Now()
	ns := now.UnixNano()
	l := p.l
	if l.tryingAt != 0 && l.tryingAt <= ns {
		l.tryingAt = 0
		if p.sst == srvTrying && l.req != nil {
			_ = p.respondLocked(sipmsg.NewResponseFromRequest(l.req, sipmsg.StatusTrying, "Trying", nil), now)
		}
	}
	if l.retransAt != 0 && l.retransAt <= ns {
		if l.fwb != nil {
			_ = p.s.writeTo(p.out, l.fwb.Bytes())
		}
		if p.invite {
			l.retransIv *= 2 // Timer A
		} else {
			l.retransIv = min(2*l.retransIv, timerT2) // Timer E
		}
		l.retransAt = ns + int64(l.retransIv)
	}
	if l.cancelAt != 0 && l.cancelAt <= ns {
		if l.cancelb != nil {
			_ = p.s.writeTo(p.out, l.cancelb)
		}
		l.cancelIv = min(2*l.cancelIv, timerT2)
		l.cancelAt = ns + int64(l.cancelIv)
	}
	if l.gAt != 0 && l.gAt <= ns {
		if p.resp != nil {
			_ = p.s.writeTo(p.src, p.resp)
		}
		l.gIv = min(2*l.gIv, timerT2)
		l.gAt = ns + int64(l.gIv)
	}
	if l.hAt != 0 && l.hAt <= ns { // Timer H: no ACK came
		l.gAt, l.hAt = 0, 0
		p.sst = srvConfirmed
	}
	if l.deadline != 0 && l.deadline <= ns {
		l.deadline = 0
		p.onDeadline(now)
	}
	p.settle(now)
}

// onDeadline: Timer B/F (nothing, or no final, from the next hop within UpstreamTimeout),
// Timer C (a provisional but no final within InviteTimeout), or the end of the wait for
// the final after the caller's CANCEL or our 408.
func (p *ptx) onDeadline(now time.Time) {
	l := p.l
	s := p.s
	if p.cst == cliNone || p.cst == cliDone {
		return
	}
	if l.callerGone { // waited long enough for the next hop's answer to our CANCEL
		p.clientDone(now, true)
		return
	}
	s.m.upstreamResponse("timeout")
	p.localAnswer(sipmsg.StatusRequestTimeout, "Request Timeout", now)
	if !p.invite || !l.provisional {
		p.clientDone(now, true)
		return
	}
	// Timer C: cancel upstream, then absorb its 487 (ACKed hop by hop).
	p.sendCancel(now)
	l.callerGone = true
	l.deadline = now.Add(s.cfg.UpstreamTimeout).UnixNano()
}

// localAnswer answers the request the edge's way (Server header, socket destination),
// unless a final went downstream already.
func (p *ptx) localAnswer(code int, reason string, now time.Time, extra ...sipmsg.Header) {
	l := p.l
	if l == nil || l.req == nil || p.sst >= srvCompleted {
		return
	}
	res := p.s.buildResponse(l.req, p.src.addr, code, reason, extra...)
	if err := p.respondLocked(res, now); err != nil {
		p.s.m.drop(dropRespondFailed)
	}
}

// clientDone ends the client side: retransmissions stop, the relay's holds (pending
// counts, the trunk's concurrency slot unless a dialog took it) are released. failed
// says the next hop never answered finally (timeout, transport error): a BYE that failed
// ends its dialog all the same (RFC 3261 §15.1.1).
func (p *ptx) clientDone(now time.Time, failed bool) {
	if p.cst == cliDone || p.cst == cliNone {
		return
	}
	l := p.l
	p.cst = cliDone
	l.retransAt, l.deadline, l.cancelAt, l.tryingAt = 0, 0, 0, 0
	release(l.fwb)
	l.fwb = nil
	if failed && l.fw != nil && l.fw.Method == sipmsg.BYE && l.info.dialog != "" {
		p.s.dlg.end(l.info.dialog)
	}
	p.s.releaseRelay(&l.info)
}

// needsMessage reports whether handling the answer a takes sipgo's parsed response
// rather than the datagram (see rawresponse.go): a test's recorder takes messages; the
// ACK of a non-2xx final is built from its To; a 2xx the caller no longer wants is ended
// along its Contact and Record-Route. Called with p.mu held.
func (p *ptx) needsMessage(a *answer) bool {
	if a.cancel || p.done || p.l == nil || p.cst == cliDone || p.cst == cliNone {
		return false
	}
	l := p.l
	switch {
	case l.sink != nil:
		return true
	case a.code < 200:
		return false
	}
	return (p.invite && a.code >= 300) || l.callerGone || (p.sst != srvNone && p.canRespond() != nil)
}

// onAnswer handles an answer of the next hop to our request (or to our CANCEL). It
// reports false, having changed nothing, when the answer came as a datagram and handling
// it needs the parsed response (needsMessage).
func (p *ptx) onAnswer(a *answer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.msg == nil && p.needsMessage(a) {
		return false
	}
	s := p.s
	now := time.Now()
	if a.cancel {
		if p.l != nil && a.code >= 200 {
			p.l.cancelAt, p.l.cancelb = 0, nil
			p.settle(now)
		}
		return true // the answer to our CANCEL is ours
	}
	code := a.code
	if p.done || p.l == nil || p.cst == cliDone {
		// Retransmissions after the final: relay a 2xx (RFC 6026: the UAS retransmits
		// it until our caller's ACK arrives), ACK a non-2xx again, absorb the rest.
		switch {
		case p.invite && code >= 200 && code < 300 && p.sst == srvAccepted:
			p.forwardDown(a, now)
		case p.invite && code >= 300 && p.ack != nil:
			_ = s.writeTo(p.out, p.ack)
		}
		return true
	}
	if p.cst == cliNone {
		return true
	}
	l := p.l
	s.m.upstreamResponse(statusClass(code))
	if code < 200 {
		if !l.provisional {
			l.provisional = true
			if p.invite {
				l.retransAt = 0 // Timer A stops at a provisional
				if !l.callerGone {
					l.deadline = now.Add(s.cfg.InviteTimeout).UnixNano() // Timer C
				}
			} else if l.retransAt != 0 {
				l.retransIv = timerT2 // §17.1.2.2: Proceeding retransmits at T2
			}
		}
		p.cst = cliProceeding
		if l.cancelPending {
			l.cancelPending = false
			p.sendCancel(now)
		}
		if code != sipmsg.StatusTrying && !l.callerGone { // 100 is hop-by-hop
			p.forwardDown(a, now)
		}
		p.settle(now)
		return true
	}
	if l.info.initial {
		s.m.relaySeconds(now.Sub(l.start).Seconds())
	}
	if p.invite && code >= 300 {
		p.ackUpstream(a.msg) // hop by hop (RFC 3261 §17.1.1.3)
	}
	switch {
	case l.callerGone:
		if p.invite && code < 300 {
			s.m.drop(dropCanceled)
			s.hangUpUpstream(l.fw, a.msg, p.out)
		}
	default:
		s.onFinal(l.fw, code, l.info)
		if err := p.forwardDown(a, now); errors.Is(err, errFinalSent) && p.invite && code < 300 {
			// The caller's CANCEL won the race (it got its 487): the call was answered
			// upstream but cannot be delivered. End it.
			if l.info.initial {
				s.dlg.end(l.info.dialog)
			}
			s.m.drop(dropCanceled)
			s.hangUpUpstream(l.fw, a.msg, p.out)
		}
	}
	p.clientDone(now, false)
	p.settle(now)
	return true
}

// forwardDown relays an answer of the next hop to the sender: our Via off the top, then
// as the server transaction's response (a 2xx retransmission after the final goes out as
// it is).
func (p *ptx) forwardDown(a *answer, now time.Time) error {
	if p.sst == srvNone {
		return nil // a request the edge originated: its answers are its own
	}
	b := a.down()
	if sink := p.sink(); sink != nil {
		if p.sst == srvAccepted {
			return sink.Respond(a.msg)
		}
		a.msg.SetDestination(p.src.addr.String())
		a.msg.SetTransport(p.src.tp)
		return p.respondLocked(a.msg, now)
	}
	if p.sst == srvAccepted {
		return p.s.writeTo(p.src, b)
	}
	err := p.sendDown(a.code, b, now)
	if err != nil {
		p.s.m.drop(dropRespondFailed)
	}
	return err
}

// ackUpstream sends (and keeps, for the next hop's retransmissions) the ACK of a non-2xx
// final: same Request-URI, top Via, Route, Call-ID, From and CSeq number as the INVITE,
// the response's To (RFC 3261 §17.1.1.3).
func (p *ptx) ackUpstream(res *sipmsg.Response) {
	fw := p.l.fw
	if fw == nil {
		return
	}
	to := res.To()
	if to == nil {
		to = fw.To()
	}
	a := sameTransaction(fw, sipmsg.ACK, to)
	b := encode(a)
	if p.out.tp == "UDP" {
		p.ack = append([]byte(nil), b.Bytes()...)
	}
	_ = p.s.writeTo(p.out, b.Bytes())
	release(b)
}

// sendCancel sends the CANCEL of the forwarded INVITE (RFC 3261 §9.1): same Request-URI,
// top Via (branch), Route, Call-ID, From, To and CSeq number. Over UDP it is retransmitted
// until its answer or the INVITE's final.
func (p *ptx) sendCancel(now time.Time) {
	l := p.l
	if l.fw == nil || l.cancelb != nil {
		return
	}
	c := p.s.cancelFor(l.fw)
	b := encode(c)
	l.cancelb = append([]byte(nil), b.Bytes()...)
	release(b)
	if err := p.s.sendRequest(p.out, l.cancelb, nil); err != nil {
		p.s.log.Debug().Err(err).Msg("CANCEL upstream failed")
	}
	if p.out.tp == "UDP" {
		l.cancelIv = timerT1
		l.cancelAt = now.Add(timerT1).UnixNano()
	}
}

// retransmitted handles a retransmission of p's request from its own sender: the last
// response goes again (RFC 3261 §17.2.1, §17.2.2); before any, it is absorbed.
func (p *ptx) retransmitted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.sst {
	case srvProceeding, srvCompleted:
		if p.resp != nil {
			_ = p.s.writeTo(p.src, p.resp)
		}
	}
}

// acked handles an ACK matching p (an INVITE) by branch and source. It reports false when
// the ACK is not p's to absorb: an ACK for a 2xx that reused the INVITE's branch
// (pre-RFC 3261 UAs) is end to end and must be relayed.
func (p *ptx) acked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.sst {
	case srvAccepted:
		return false
	case srvCompleted:
		p.sst = srvConfirmed
		if p.l != nil {
			p.l.gAt, p.l.hAt = 0, 0
		}
		p.settle(time.Now())
	}
	return true
}

// canceled handles the sender's CANCEL of p (an INVITE), already answered 200: the
// INVITE gets 487 and the CANCEL goes upstream (after a provisional, RFC 3261 §9.1).
func (p *ptx) canceled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.l == nil || p.sst >= srvCompleted {
		return
	}
	now := time.Now()
	l := p.l
	if l.req != nil {
		// sipgo's 487 came from the transaction's request; so does ours.
		_ = p.respondLocked(sipmsg.NewResponseFromRequest(l.req, sipmsg.StatusRequestTerminated, "Request Terminated", nil), now)
	}
	if p.cst == cliCalling || p.cst == cliProceeding {
		l.callerGone = true
		if l.provisional {
			p.sendCancel(now)
		} else {
			l.cancelPending = true
		}
		l.deadline = now.Add(p.s.cfg.UpstreamTimeout).UnixNano()
	}
	p.settle(now)
}

// transportError ends a relay whose request could not be sent (a TCP connect or write
// that failed after the send returned): 503 to the sender.
func (p *ptx) transportError() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.l == nil || p.cst == cliDone || p.cst == cliNone {
		return
	}
	now := time.Now()
	p.s.m.upstreamResponse("error")
	if !p.l.callerGone {
		p.localAnswer(sipmsg.StatusServiceUnavailable, "Service Unavailable", now, p.s.retryAfter)
	}
	p.clientDone(now, true)
	p.settle(now)
}

// startClient relays fw (serialized into a pooled buffer once) to out as p's client
// transaction.
func (p *ptx) startClient(fw *sipmsg.Request, out flow, info relayInfo) {
	s := p.s
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.done || p.l == nil || (p.sst >= srvCompleted && p.sst != srvNone) {
		// Answered meanwhile (a CANCEL overtook the decision): nothing to relay.
		s.releaseRelay(&info)
		return
	}
	l := p.l
	l.fw, l.info, l.start = fw, info, now
	p.out = out
	p.invite = fw.IsInvite()
	branch := ""
	if v := fw.Via(); v != nil {
		branch, _ = v.Params.Get("branch")
	}
	s.expectAnswer(out)
	s.tx.addClient(p, branch)
	p.cst = cliCalling
	b := encode(fw)
	err := s.sendRequest(out, b.Bytes(), func(error) { p.transportError() })
	if err != nil {
		release(b)
		s.m.upstreamResponse("error")
		s.log.Debug().Err(err).Str("call_id", callIDOf(fw)).Str("next_hop", out.addr.String()).Msg("relay failed")
		p.localAnswer(sipmsg.StatusServiceUnavailable, "Service Unavailable", now, s.retryAfter)
		p.clientDone(now, true)
		p.settle(now)
		return
	}
	if out.tp == "UDP" {
		l.fwb = b // kept for Timers A/E until the client side ends
		l.retransIv = timerT1
		l.retransAt = now.Add(timerT1).UnixNano()
	} else {
		release(b)
	}
	l.deadline = now.Add(s.cfg.UpstreamTimeout).UnixNano()
	if p.invite && p.sst == srvTrying && p.skey != "" {
		l.tryingAt = now.Add(timerTrying).UnixNano()
	}
	p.settle(now)
}

// originate runs a request the edge itself sends (a CANCEL or BYE of its own) as a
// client transaction with no server side: retransmitted over UDP, its answers absorbed,
// bounded by UpstreamTimeout.
func (s *Server) originate(r *sipmsg.Request) {
	out, err := flowOf(r)
	if err != nil {
		return
	}
	p := s.tx.newOrphan(s, r.IsInvite())
	p.mu.Lock()
	p.l.req = nil
	p.mu.Unlock()
	p.startClient(r, out, relayInfo{})
}

// releaseRelay gives back what a relay held: its pending counts, its trunk's and
// account's pending shares, and the call's concurrency slot unless a dialog owns it.
func (s *Server) releaseRelay(info *relayInfo) {
	if info.pending {
		info.pending = false
		s.pending.Add(-1)
		if info.invite {
			s.invites.Add(-1)
		}
		s.caps.pendingDone(info.trunk)
	}
	if info.slot != nil && !info.slot.handed {
		info.slot.release()
	}
}

// sameSource reports whether a message from src may act on p (CANCEL, ACK,
// retransmission): the address must be the sender's (the port may differ over UDP).
func (p *ptx) sameSource(src netip.AddrPort) bool {
	return p.src.addr.Addr() == src.Addr()
}

// runTimers drives the wheel and the linger FIFO until done is closed. With nothing
// armed and nothing lingering it sleeps until a transaction arms a timer.
func (s *Server) runTimers(done <-chan struct{}) {
	t := time.NewTicker(wheelTick)
	defer t.Stop()
	fire := (*ptx).fire
	var n int
	for {
		if s.tx.wheel.empty() {
			if _, fin := s.tx.counts(); fin == 0 {
				select {
				case <-done:
					return
				case <-s.tx.wheel.wake:
				}
			}
		}
		select {
		case <-done:
			return
		case now := <-t.C:
			s.tx.wheel.advance(now, fire)
			if n++; n%10 == 0 {
				s.tx.expireFinished(now)
			}
		}
	}
}
