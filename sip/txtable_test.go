package sip

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// readAll collects the datagrams c receives within d.
func readAll(c *net.UDPConn, d time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 65535)
	deadline := time.Now().Add(d)
	for {
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// The edge's own server transactions absorb retransmissions (RFC 3261 §17.2): a
// retransmitted INVITE gets the very same 407 again without being judged again, the 407
// is retransmitted over UDP (Timer G) until the ACK, which the transaction absorbs (hop
// by hop: it goes nowhere), and the same branch from another address is no
// retransmission of it.
func TestServerTransactionAbsorbsRetransmissions(t *testing.T) {
	edge, _, reg := newDefenceRig(t, nil)
	c := newRawUDP(t, "127.0.0.9", edge.Addr())
	raw := replace(rawRequest("INVITE", edgeURI(edge)), "127.0.0.9:5099", c.addr().String())
	c.send(raw)
	first := readAll(c.conn, 300*time.Millisecond)
	if len(first) != 1 || !bytes.HasPrefix(first[0], []byte("SIP/2.0 407 ")) {
		t.Fatalf("first answer %q, want one 407", first)
	}
	c.send(raw) // the UA did not hear it
	again := readAll(c.conn, 150*time.Millisecond)
	if len(again) != 1 || !bytes.Equal(again[0], first[0]) {
		t.Fatalf("retransmitted INVITE answered %q, want the same 407 byte for byte", again)
	}
	if v := metricValue(t, reg, "sipedge_sip_invites_total", map[string]string{"verdict": "challenge"}); v != 1 {
		t.Fatalf("INVITE judged %v times, want once", v)
	}
	// No ACK: Timer G resends the 407 (T1 = 500 ms after it was sent).
	if g := readAll(c.conn, 700*time.Millisecond); len(g) == 0 || !bytes.Equal(g[0], first[0]) {
		t.Fatalf("no Timer G retransmission of the 407 (%d datagrams)", len(g))
	}
	req := parseReq(t, raw, c.addr().String())
	res, err := sipmsg.ParseMessage(first[0])
	if err != nil {
		t.Fatal(err)
	}
	c.send(ackFor(req, res.(*sipmsg.Response)))
	_ = readAll(c.conn, 100*time.Millisecond) // a retransmission may have crossed the ACK
	if late := readAll(c.conn, 1500*time.Millisecond); len(late) != 0 {
		t.Fatalf("407 still retransmitted after the ACK: %d datagrams", len(late))
	}
	if v := metricValue(t, reg, "sipedge_sip_dropped_total", map[string]string{"reason": dropAck}); v != 0 {
		t.Fatalf("the ACK of the 407 went to the in-dialog path (dropped %v): it belongs to the transaction", v)
	}
	// The same branch and sent-by from another address: not a retransmission, no answer.
	other := newRawUDP(t, "127.0.0.10", edge.Addr())
	other.send(raw)
	if got := readAll(other.conn, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("a copy of the INVITE from another address got %q", got)
	}
	// A finished non-INVITE transaction (kept 32 s) answers its retransmission with the
	// same final response.
	opt := replace(rawRequest("OPTIONS", "sip:"+edge.Addr().String()), "127.0.0.9:5099", c.addr().String())
	c.send(opt)
	o1 := readAll(c.conn, 200*time.Millisecond)
	c.send(opt)
	o2 := readAll(c.conn, 200*time.Millisecond)
	if len(o1) != 1 || len(o2) != 1 || !bytes.Equal(o1[0], o2[0]) || !bytes.HasPrefix(o1[0], []byte("SIP/2.0 200 ")) {
		t.Fatalf("OPTIONS and its retransmission answered %q then %q, want the same 200 twice", o1, o2)
	}
	if v := metricValue(t, reg, "sipedge_sip_requests_total", map[string]string{"method": "OPTIONS"}); v != 1 {
		t.Fatalf("OPTIONS handled %v times, want once", v)
	}
}

// A relayed call's transactions: the upstream's 2xx retransmissions (RFC 6026) reach the
// caller, the caller's INVITE retransmitted after the 200 is absorbed (not relayed
// again), and upstream's INVITE is retransmitted by the edge until a provisional comes
// (Timer A).
func TestRelayTransactions(t *testing.T) {
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	cfg := baseConfig()
	cfg.Upstream = "sip:" + up.LocalAddr().String()
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	pbx := newRawUDP(t, "127.0.0.2", edge.Addr())
	raw := replace(rawRequest("INVITE", "sip:service@t1.example.org"), "127.0.0.9:5099", pbx.addr().String())
	pbx.send(raw)

	// Upstream stays silent for a while: the edge retransmits (T1, then 2·T1).
	got := readAll(up, 1700*time.Millisecond)
	if len(got) < 3 {
		t.Fatalf("upstream got the INVITE %d times in 1.7 s, want ≥ 3 (Timer A)", len(got))
	}
	for _, g := range got[1:] {
		if !bytes.Equal(g, got[0]) {
			t.Fatal("a retransmission differs from the INVITE sent")
		}
	}
	// The caller got the edge's 100 Trying meanwhile.
	if tr := readAll(pbx.conn, 100*time.Millisecond); len(tr) == 0 || !bytes.HasPrefix(tr[0], []byte("SIP/2.0 100 ")) {
		t.Fatalf("caller got %q, want 100 Trying", tr)
	}
	fw, err := sipmsg.ParseMessage(got[0])
	if err != nil {
		t.Fatal(err)
	}
	inv := fw.(*sipmsg.Request)
	res := sipmsg.NewResponseFromRequest(inv, 200, "OK", nil)
	res.To().Params.Add("tag", "up")
	res.AppendHeader(&sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "uas", Host: "127.0.0.1", Port: up.LocalAddr().(*net.UDPAddr).Port}})
	b := []byte(res.String())
	edgeAP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), edge.Addr().Port())
	for range 3 { // the 200 and two retransmissions of it
		if _, err := up.WriteToUDPAddrPort(b, edgeAP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	oks := 0
	for _, d := range readAll(pbx.conn, 300*time.Millisecond) {
		if bytes.HasPrefix(d, []byte("SIP/2.0 200 ")) {
			oks++
		}
	}
	if oks != 3 {
		t.Fatalf("caller got %d of the 3 200s (RFC 6026: 2xx retransmissions are relayed)", oks)
	}
	pbx.send(raw) // the caller retransmits its INVITE after all
	if again := readAll(up, 300*time.Millisecond); len(again) != 0 {
		t.Fatalf("INVITE retransmitted after the 2xx reached upstream again: %d datagrams", len(again))
	}
}

// The wheel fires each armed transaction once, never before its deadline, not at all
// once disarmed, and a deadline past its horizon after the right number of rounds.
func TestTimerWheel(t *testing.T) {
	w := newTimerWheel()
	a, b, c, far := &ptx{}, &ptx{}, &ptx{}, &ptx{}
	at := func(d time.Duration) int64 { return w.start.Add(d).UnixNano() }
	w.arm(a, at(25*time.Millisecond))
	w.arm(b, at(50*time.Millisecond))
	w.arm(c, at(50*time.Millisecond))
	w.arm(b, at(80*time.Millisecond)) // moved
	w.arm(c, 0)                       // disarmed
	w.arm(far, at(wheelSlots*wheelTick+30*time.Millisecond))
	fired := map[*ptx]time.Duration{}
	run := func(until time.Duration) {
		w.advance(w.start.Add(until), func(p *ptx) {
			if _, ok := fired[p]; ok {
				t.Fatal("fired twice")
			}
			fired[p] = until
		})
	}
	for d := time.Duration(0); d <= wheelSlots*wheelTick+100*time.Millisecond; d += wheelTick {
		run(d)
	}
	if fired[a] < 25*time.Millisecond || fired[a] > 40*time.Millisecond {
		t.Errorf("a fired at %v, armed for 25ms", fired[a])
	}
	if fired[b] < 80*time.Millisecond || fired[b] > 95*time.Millisecond {
		t.Errorf("b fired at %v, moved to 80ms", fired[b])
	}
	if _, ok := fired[c]; ok {
		t.Error("disarmed c fired")
	}
	if d, ok := fired[far]; !ok || d < wheelSlots*wheelTick+30*time.Millisecond {
		t.Errorf("far fired at %v (%v)", d, ok)
	}
	if w.n != 0 {
		t.Errorf("%d still armed", w.n)
	}
}

// Matching a request to its transaction (retransmission, ACK, CANCEL) allocates nothing.
func TestServerKeyLookupAllocatesNothing(t *testing.T) {
	tbl := newTxTable(timer64T1, 100)
	req := parseReq(t, rawRequest("INVITE", "sip:1@t1.example.org"), "127.0.0.2:5060")
	var kb [keyBuf]byte
	k, ok := serverKey(kb[:0], req, false)
	if !ok {
		t.Fatal("no key")
	}
	p, made, _ := tbl.addServer(nil, k, flow{tp: "UDP", addr: ap("127.0.0.2:5060")}, req)
	if !made {
		t.Fatal("not made")
	}
	if n := testing.AllocsPerRun(1000, func() {
		var kb [keyBuf]byte
		k, _ := serverKey(kb[:0], req, true)
		if tbl.findServer(k) != p {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Fatalf("lookup allocates %v times", n)
	}
}

// Finished transactions are records in a chunked FIFO arena: every one is found by its
// server key and its branch until its linger ends, oldest leave first, chunks roll over.
func TestFinishedRecords(t *testing.T) {
	tbl := newTxTable(time.Second, 100)
	now := time.Now()
	const n = 3000
	resp := bytes.Repeat([]byte("r"), 900) // 3000 × ~1 KB: several 1 MiB chunks
	src := flow{tp: "UDP", addr: ap("192.0.2.1:5060")}
	out := flow{tp: "TCP", addr: ap("[2001:db8::1]:5070")}
	for i := range n {
		p := &ptx{skey: "s" + strconv.Itoa(i), ckey: "c" + strconv.Itoa(i), src: src, out: out, invite: i%2 == 0,
			sst: srvCompleted, resp: resp}
		if i%3 == 0 {
			p.sst, p.resp = srvAccepted, nil
		}
		tbl.finMu.Lock()
		tbl.finPut(p, now.Add(time.Duration(i)*time.Millisecond))
		tbl.finMu.Unlock()
	}
	if _, fin := tbl.counts(); fin != n {
		t.Fatalf("%d records, want %d", fin, n)
	}
	check := func(i int, want bool) {
		t.Helper()
		v, ok := tbl.finServer([]byte("s" + strconv.Itoa(i)))
		c, okc := tbl.finClient([]byte("c" + strconv.Itoa(i)))
		if ok != want || okc != want {
			t.Fatalf("record %d: found %v/%v, want %v", i, ok, okc, want)
		}
		if !want {
			return
		}
		if v.src != src || c.out != out || v.invite != (i%2 == 0) || v.accepted != (i%3 == 0 && i%2 == 0) {
			t.Fatalf("record %d: %+v", i, v)
		}
		if (i%3 == 0) != (v.resp == nil) || (v.resp != nil && !bytes.Equal(v.resp, resp)) {
			t.Fatalf("record %d: response %d bytes", i, len(v.resp))
		}
	}
	for i := range n {
		check(i, true)
	}
	if _, ok := tbl.finServer([]byte("s-none")); ok {
		t.Fatal("found a key never put")
	}
	// Linger 1 s: at now+1s+1500ms the first 1500 (put at now+i ms) are gone.
	tbl.expireFinished(now.Add(time.Second + 1500*time.Millisecond))
	for _, i := range []int{0, 1, 1499} {
		check(i, false)
	}
	for _, i := range []int{1501, 2000, n - 1} {
		check(i, true)
	}
	tbl.expireFinished(now.Add(time.Hour))
	if _, fin := tbl.counts(); fin != 0 || len(tbl.fin.chunks) != 0 || len(tbl.fin.srv) != 0 {
		t.Fatalf("after the linger: %d records, %d chunks, %d keys", fin, len(tbl.fin.chunks), len(tbl.fin.srv))
	}
}
