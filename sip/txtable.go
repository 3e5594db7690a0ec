package sip

import (
	"bytes"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// The relay's transaction table (Kamailio tm's hash table is the model). Every request
// the edge answers or relays gets one proxy transaction, a [ptx]: its server side towards
// the sender and, once relayed, its client side towards the next hop. The table finds a
// transaction
//
//   - by the request's top Via branch, sent-by and method class (RFC 3261 §17.2.3; ACK and
//     CANCEL find their INVITE), for retransmissions, ACKs of non-2xx answers and
//     CANCELs — and the source address must be the original one (a branch seen on the
//     wire lets no one else cancel or probe a call);
//   - by the branch of the edge's own Via, for the responses of the next hop.
//
// A transaction in progress holds the parsed request and the serialized forwarded request
// (for UDP retransmission). A finished one becomes a pointer-free record (finished.go)
// holding only what absorbing retransmissions needs — its keys, both flows, the serialized
// last response and the ACK of a non-2xx answer — for the RFC windows (64·T1 = 32 s,
// Timers J/L/M/D; Config.TransactionLinger shortens them), in a FIFO bounded by
// maxFinished and maxFinishedBytes, oldest evicted first. Timers run on one [timerWheel].
// Lookups try the transactions in progress first, then the finished ones; a transaction
// is indexed as finished before it leaves the live index, so a retransmission never
// finds neither. Safe for concurrent use.
type txTable struct {
	seed   maphash.Seed
	seed2  maphash.Seed // the finished records' second key hash (keyDigest)
	shards [txShards]txShard
	wheel  *timerWheel
	linger time.Duration

	finMu sync.Mutex
	fin   finStore // finished transactions (finished.go)

	live    atomic.Int64 // transactions not finished
	maxLive int64        // beyond it, requests are answered without a server transaction
}

const (
	txShards = 64
	// maxFinished bounds finished transactions kept to absorb retransmissions: 32 s of
	// 8000 calls/s, two transactions a call.
	maxFinished = 1 << 19
)

type txShard struct {
	mu  sync.Mutex
	srv map[string]*ptx // server key → transaction
	cli map[string]*ptx // our branch → transaction
}

func newTxTable(linger time.Duration, maxLive int) *txTable {
	t := &txTable{seed: maphash.MakeSeed(), seed2: maphash.MakeSeed(), wheel: newTimerWheel(), linger: linger, maxLive: int64(maxLive), fin: newFinStore()}
	for i := range t.shards {
		t.shards[i].srv = map[string]*ptx{}
		t.shards[i].cli = map[string]*ptx{}
	}
	return t
}

func (t *txTable) shard(key []byte) *txShard {
	return &t.shards[maphash.Bytes(t.seed, key)%txShards]
}

func (t *txTable) shardString(key string) *txShard {
	return &t.shards[maphash.String(t.seed, key)%txShards]
}

// Server transaction states (RFC 3261 §17.2, RFC 6026).
const (
	srvTrying     uint8 = iota // no response sent yet
	srvProceeding              // a provisional response sent
	srvCompleted               // a non-2xx final sent; INVITE: waiting for the ACK
	srvConfirmed               // INVITE: the ACK of the non-2xx arrived
	srvAccepted                // INVITE: a 2xx sent (RFC 6026)
	srvNone                    // no server side (a request the edge originated)
)

// Client transaction states.
const (
	cliNone       uint8 = iota // not relayed
	cliCalling                 // request sent, nothing heard
	cliProceeding              // a provisional heard
	cliDone                    // final heard, timed out or failed
)

// ptx is one proxy transaction. Its mutex guards everything but the immutable keys and
// flows. The zero value is not usable: transactions are made by the table.
type ptx struct {
	mu sync.Mutex
	s  *Server

	skey string // server key ("" without a server side)
	ckey string // the branch of our Via ("" until relayed)
	src  flow   // the sender: responses go there
	out  flow   // the next hop

	invite bool
	sst    uint8 // server state
	cst    uint8 // client state
	done   bool  // finished: in the linger FIFO or removed
	code   int16 // final status sent downstream (0: none yet)

	resp []byte // the last response sent downstream, resent on a retransmitted request
	ack  []byte // our ACK of the next hop's non-2xx final, resent on its retransmission

	tn wheelNode // the armed timer (guarded by the wheel's mutex)

	l *ptxLive // nil once finished
}

// ptxLive is what a transaction in progress needs and a finished one does not.
type ptxLive struct {
	req  *sipmsg.Request // as received: the edge's own answers are built from it
	fw   *sipmsg.Request // as forwarded: CANCEL and ACK are built from it
	fwb  *bytes.Buffer   // fw serialized (a pooled buffer), for retransmission over UDP
	info relayInfo       // what the relay holds until its client side ends (releaseRelay)
	sink serverTx        // receives the downstream responses instead of the wire: a test's recorder

	start time.Time

	// Deadlines, unix ns (0: not armed).
	retransAt int64 // Timer A/E: retransmit fwb (UDP)
	retransIv time.Duration
	deadline  int64 // Timer B/F, then Timer C; after a CANCEL: the wait for the final
	tryingAt  int64 // the automatic 100 Trying (INVITE, nothing relayed downstream yet)
	gAt       int64 // Timer G: retransmit the non-2xx final downstream (UDP)
	gIv       time.Duration
	hAt       int64 // Timer H: give up waiting for the ACK
	cancelAt  int64 // retransmit our CANCEL (UDP)
	cancelIv  time.Duration

	cancelb       []byte // our CANCEL upstream, serialized
	provisional   bool   // the next hop sent a 1xx
	cancelPending bool   // CANCEL to send once a 1xx arrives
	callerGone    bool   // the caller canceled or got our 408: wait only for the final
}

// serverKey writes the RFC 3261 §17.2.3 key of req into buf: top Via branch, sent-by and
// the method class (ACK and CANCEL take INVITE's when asInvite). A branch without the
// RFC 3261 magic cookie is keyed with Call-ID, From tag and CSeq number as well (RFC 2543
// matching, §17.2.3). ok is false without a Via or CSeq.
func serverKey(buf []byte, req *sipmsg.Request, asInvite bool) ([]byte, bool) {
	via := req.Via()
	cseq := req.CSeq()
	if via == nil || cseq == nil {
		return buf, false
	}
	branch, _ := via.Params.Get("branch")
	buf = append(buf, branch...)
	buf = append(buf, 0)
	buf = append(buf, via.Host...)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(via.Port), 10)
	buf = append(buf, 0)
	if asInvite {
		buf = append(buf, "INVITE"...)
	} else {
		buf = append(buf, req.Method...)
	}
	if len(branch) < 7 || branch[:7] != sipmsg.RFC3261BranchMagicCookie {
		buf = append(buf, 0)
		if id := req.CallID(); id != nil {
			buf = append(buf, *id...)
		}
		buf = append(buf, 0)
		if f := req.From(); f != nil {
			tag, _ := f.Params.Get("tag")
			buf = append(buf, tag...)
		}
		buf = append(buf, 0)
		buf = strconv.AppendUint(buf, uint64(cseq.SeqNo), 10)
	}
	return buf, true
}

// findServer returns the transaction with server key k.
func (t *txTable) findServer(k []byte) *ptx {
	sh := t.shard(k)
	sh.mu.Lock()
	p := sh.srv[string(k)]
	sh.mu.Unlock()
	return p
}

// addServer returns the transaction in progress with server key k, or reports that a
// finished one has it (fin), or makes one (made).
func (t *txTable) addServer(s *Server, k []byte, src flow, req *sipmsg.Request) (p *ptx, made, fin bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p = sh.srv[string(k)]; p != nil {
		return p, false, false
	}
	t.finMu.Lock() // lock order: a shard's, then finMu
	_, fin = t.finServerLocked(k)
	t.finMu.Unlock()
	if fin {
		return nil, false, true
	}
	p = &ptx{s: s, skey: string(k), src: src, invite: req.IsInvite(), l: &ptxLive{req: req}}
	sh.srv[p.skey] = p
	t.live.Add(1)
	return p, true, false
}

// newOrphan makes a transaction with no server side (a request the edge originates),
// not in the table until it is relayed.
func (t *txTable) newOrphan(s *Server, invite bool) *ptx {
	t.live.Add(1)
	return &ptx{s: s, invite: invite, sst: srvNone, l: &ptxLive{}}
}

// newDetached makes a transaction for a request that has no usable server key (no Via
// or CSeq: the edge only answers it 400). It is never in the server index.
func (t *txTable) newDetached(s *Server, src flow) *ptx {
	t.live.Add(1)
	return &ptx{s: s, src: src, l: &ptxLive{}}
}

// addClient indexes p by the branch of our Via.
func (t *txTable) addClient(p *ptx, branch string) {
	p.ckey = branch
	sh := t.shardString(branch)
	sh.mu.Lock()
	sh.cli[branch] = p
	sh.mu.Unlock()
}

func (t *txTable) findClient(branch []byte) *ptx {
	sh := t.shard(branch)
	sh.mu.Lock()
	p := sh.cli[string(branch)]
	sh.mu.Unlock()
	return p
}

// remove takes p out of both indexes.
func (t *txTable) remove(p *ptx) {
	if p.skey != "" {
		sh := t.shardString(p.skey)
		sh.mu.Lock()
		if sh.srv[p.skey] == p {
			delete(sh.srv, p.skey)
		}
		sh.mu.Unlock()
	}
	if p.ckey != "" {
		sh := t.shardString(p.ckey)
		sh.mu.Lock()
		if sh.cli[p.ckey] == p {
			delete(sh.cli, p.ckey)
		}
		sh.mu.Unlock()
	}
}

// finished records p (done, its lock held by the caller) as a finished transaction for
// the linger, then takes it out of the live index; or only the latter when nothing can be
// retransmitted to it (both flows reliable, no linger, no key).
func (t *txTable) finished(p *ptx, now time.Time) {
	t.live.Add(-1)
	if t.linger > 0 && (p.src.tp == "UDP" || p.out.tp == "UDP") && (p.skey != "" || p.ckey != "") {
		t.finMu.Lock()
		t.finPut(p, now)
		t.finMu.Unlock()
	}
	t.remove(p)
}

// expireFinished drops finished transactions whose linger ended by now.
func (t *txTable) expireFinished(now time.Time) {
	ns := now.UnixNano()
	t.finMu.Lock()
	for t.finOldestExpired(ns) {
		t.finPop()
	}
	shrink := t.fin.n == 0 && t.fin.touched
	if shrink {
		t.fin.touched = false
		unmapChunk(t.fin.spare)
		t.fin.spare = nil
		t.fin.srv, t.fin.cli = map[uint64]uint64{}, map[uint64]uint64{} // give a burst's room back
	}
	t.finMu.Unlock()
	if shrink {
		t.shrinkMaps()
	}
}

// shrinkMaps replaces the shards' empty maps after a burst: a Go map keeps the room of
// its largest size, and nothing else gives it back.
func (t *txTable) shrinkMaps() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if len(sh.srv) == 0 {
			sh.srv = map[string]*ptx{}
		}
		if len(sh.cli) == 0 {
			sh.cli = map[string]*ptx{}
		}
		sh.mu.Unlock()
	}
}

// counts returns the transactions in progress and the finished ones kept.
func (t *txTable) counts() (live, finished int) {
	t.finMu.Lock()
	finished = t.fin.n
	t.finMu.Unlock()
	return int(t.live.Load()), finished
}

// clear drops every transaction (shutdown).
func (t *txTable) clear() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		clear(sh.srv)
		clear(sh.cli)
		sh.mu.Unlock()
	}
	t.finMu.Lock()
	t.fin.release()
	t.fin = newFinStore()
	t.finMu.Unlock()
}
