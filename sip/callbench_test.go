package sip

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Lean raw peers for the call benchmark and the goroutine test: they build and read
// messages with byte operations only, so allocations counted by the benchmark are the
// edge's, not the peers'.

// leanUAS answers every INVITE 180 then 200 (with a Contact), every BYE 200, and ignores
// ACK, from one UDP socket on 127.0.0.1.
type leanUAS struct {
	conn *net.UDPConn
	acks atomic.Int64
}

func newLeanUAS(t testing.TB) *leanUAS {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &leanUAS{conn: c}
	contact := []byte("Contact: <sip:uas@" + c.LocalAddr().String() + ">\r\n")
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		out := make([]byte, 0, 4096)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			switch {
			case bytes.HasPrefix(b, []byte("INVITE ")):
				out = leanResponse(out[:0], b, "180 Ringing", "uas-tag", nil)
				_, _ = c.WriteToUDPAddrPort(out, from)
				out = leanResponse(out[:0], b, "200 OK", "uas-tag", contact)
				_, _ = c.WriteToUDPAddrPort(out, from)
			case bytes.HasPrefix(b, []byte("BYE ")):
				out = leanResponse(out[:0], b, "200 OK", "", nil)
				_, _ = c.WriteToUDPAddrPort(out, from)
			case bytes.HasPrefix(b, []byte("ACK ")):
				u.acks.Add(1)
			}
		}
	}()
	return u
}

func (u *leanUAS) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// leanResponse appends to out a response to req: its Via, Record-Route, From, To (with
// toTag added when it has none), Call-ID and CSeq lines, then extra.
func leanResponse(out, req []byte, status, toTag string, extra []byte) []byte {
	out = append(out, "SIP/2.0 "...)
	out = append(out, status...)
	out = append(out, "\r\n"...)
	rest := req[bytes.Index(req, []byte("\r\n"))+2:]
	for len(rest) > 2 {
		i := bytes.Index(rest, []byte("\r\n"))
		if i <= 0 {
			break
		}
		line := rest[:i]
		rest = rest[i+2:]
		switch {
		case hasPrefixFold(line, "Via:"), hasPrefixFold(line, "Record-Route:"), hasPrefixFold(line, "From:"),
			hasPrefixFold(line, "Call-ID:"), hasPrefixFold(line, "CSeq:"):
			out = append(out, line...)
		case hasPrefixFold(line, "To:"):
			out = append(out, line...)
			if toTag != "" && !bytes.Contains(line, []byte(";tag=")) {
				out = append(out, ";tag="...)
				out = append(out, toTag...)
			}
		default:
			continue
		}
		out = append(out, "\r\n"...)
	}
	out = append(out, extra...)
	out = append(out, "Content-Length: 0\r\n\r\n"...)
	return out
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

// headerValue returns the value of the first header named name (with the colon) in msg.
func headerValue(msg []byte, name string) []byte {
	rest := msg
	for len(rest) > 2 {
		i := bytes.Index(rest, []byte("\r\n"))
		if i <= 0 {
			return nil
		}
		line := rest[:i]
		rest = rest[i+2:]
		if hasPrefixFold(line, name) {
			return bytes.TrimSpace(line[len(name):])
		}
	}
	return nil
}

// leanUAC places calls INVITE → (100/180) 200 → ACK → BYE → 200 through the edge from one
// UDP socket, one at a time.
type leanUAC struct {
	conn *net.UDPConn
	edge netip.AddrPort
	n    int
	buf  []byte
	out  []byte
}

func newLeanUAC(t testing.TB, ip string, edge netip.AddrPort) *leanUAC {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &leanUAC{conn: c, edge: edge, buf: make([]byte, 65535), out: make([]byte, 0, 2048)}
}

// call runs one call and reports whether it completed within wait.
func (u *leanUAC) call(ruri string, wait time.Duration) bool {
	u.n++
	self := u.conn.LocalAddr().String()
	seq := strconv.Itoa(u.n)
	callID := "bench-" + self + "-" + seq
	deadline := time.Now().Add(wait)
	req := func(method, uri, branch, cseq, toTag string, route []byte) {
		o := u.out[:0]
		o = append(o, method+" "+uri+" SIP/2.0\r\nVia: SIP/2.0/UDP "+self+";rport;branch=z9hG4bK-"+branch+"\r\n"...)
		if route != nil {
			o = append(o, "Route: "...)
			o = append(o, route...)
			o = append(o, "\r\n"...)
		}
		o = append(o, "From: <sip:pbx@"+self+">;tag=f"+seq+"\r\nTo: <sip:service@t1.example.org>"...)
		if toTag != "" {
			o = append(o, ";tag="+toTag...)
		}
		o = append(o, "\r\nCall-ID: "+callID+"\r\nCSeq: "+cseq+"\r\nMax-Forwards: 70\r\n"...)
		if method == "INVITE" {
			o = append(o, "Contact: <sip:pbx@"+self+">\r\n"...)
		}
		o = append(o, "Content-Length: 0\r\n\r\n"...)
		u.out = o
		_, _ = u.conn.WriteToUDPAddrPort(o, u.edge)
	}
	await := func(status, cseq string) []byte {
		for {
			_ = u.conn.SetReadDeadline(deadline)
			n, err := u.conn.Read(u.buf)
			if err != nil {
				return nil
			}
			b := u.buf[:n]
			if bytes.HasPrefix(b, []byte("SIP/2.0 "+status)) && bytes.Equal(headerValue(b, "CSeq:"), []byte(cseq)) &&
				bytes.Equal(headerValue(b, "Call-ID:"), []byte(callID)) {
				return b
			}
		}
	}
	req("INVITE", "sip:service@t1.example.org", "i"+seq+self, seq+" INVITE", "", nil)
	ok := await("200", seq+" INVITE")
	if ok == nil {
		return false
	}
	route := append([]byte(nil), headerValue(ok, "Record-Route:")...)
	contact := headerValue(ok, "Contact:")
	target := string(bytes.Trim(contact, "<>"))
	req("ACK", target, "a"+seq+self, seq+" ACK", "uas-tag", route)
	req("BYE", target, "b"+seq+self, strconv.Itoa(u.n+1)+" BYE", "uas-tag", route)
	return await("200", strconv.Itoa(u.n+1)+" BYE") != nil
}

// newCallRig starts a lean UAS and an edge in front of it, logging at Warn only.
func newCallRig(t testing.TB, mod func(*Config)) (*Server, *leanUAS) {
	t.Helper()
	u := newLeanUAS(t)
	cfg := baseConfig()
	cfg.Upstream = "sip:" + u.addr().String()
	cfg.Logger = zerolog.New(io.Discard).Level(zerolog.WarnLevel)
	if mod != nil {
		mod(&cfg)
	}
	return startServer(t, cfg, policyOf(mustCompile(t, testDataset("")))), u
}

// BenchmarkProxiedCall is one call (INVITE/100/180/200/ACK/BYE/200) through the edge over
// loopback UDP with in-process peers; allocs/op and B/op are the edge's (the peers
// allocate next to nothing).
//
//	go test ./sip/ -run XXX -bench ProxiedCall -benchmem
func BenchmarkProxiedCall(b *testing.B) {
	edge, _ := newCallRig(b, nil)
	pbx := newLeanUAC(b, "127.0.0.2", edge.Addr())
	if !pbx.call("", 3*time.Second) { // warm up
		b.Fatal("first call failed")
	}
	b.ReportAllocs()
	for b.Loop() {
		if !pbx.call("", 3*time.Second) {
			b.Fatal("call failed")
		}
	}
}

// TestGoroutinesBoundedByWork runs 2000 calls through a UDP edge from 8 PBXs at once:
// during the load the edge's goroutines stay within a constant of the calls in flight
// (not of the calls made, whose transactions linger 32 s), and afterwards they return to
// the baseline plus a small constant.
func TestGoroutinesBoundedByWork(t *testing.T) {
	if testing.Short() {
		t.Skip("2000 calls")
	}
	edge, _ := newCallRig(t, nil)
	const workers, calls = 8, 2000
	pbxs := make([]*leanUAC, workers)
	for i := range pbxs {
		pbxs[i] = newLeanUAC(t, "127.0.0.2", edge.Addr())
	}
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()
	var (
		wg      sync.WaitGroup
		next    atomic.Int64
		failed  atomic.Int64
		peak    atomic.Int64
		stopped = make(chan struct{})
	)
	go func() {
		for {
			select {
			case <-stopped:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	for _, p := range pbxs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= calls {
				if !p.call("", 3*time.Second) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stopped)
	if f := failed.Load(); f > calls/100 {
		t.Fatalf("%d of %d calls failed", f, calls)
	}
	// In flight at most: the workers' calls (a relay each) plus the sampler; allow a
	// constant for the runtime and the edge's own loops.
	if p := peak.Load(); p > int64(base+2*workers+16) {
		t.Errorf("goroutines peaked at %d under load (baseline %d, %d calls in flight): they grow with calls made", p, base, workers)
	}
	eventually(t, 5*time.Second, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base+4 })
	t.Logf("baseline %d goroutines, peak %d during %d calls", base, peak.Load(), calls)
}

// TestFinishedTransactionBytes measures what a finished transaction costs while it is
// kept for the RFC windows (32 s by default): the heap held after 2000 calls (two
// transactions each: INVITE and BYE) over the heap before them, plus the records in the
// mapped arena, per finished transaction.
// It includes everything else the calls left behind (ended-dialog tombstones, map
// growth), so it is an upper bound; the target is ≤ 1 KiB.
func TestFinishedTransactionBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("2000 calls")
	}
	edge, _ := newCallRig(t, nil)
	pbx := newLeanUAC(t, "127.0.0.2", edge.Addr())
	for range 50 { // warm up pools and maps
		if !pbx.call("", 3*time.Second) {
			t.Fatal("warm-up call failed")
		}
	}
	time.Sleep(100 * time.Millisecond)
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	_, fin0 := edge.tx.counts()
	before := heap()
	const calls = 2000
	for range calls {
		if !pbx.call("", 3*time.Second) {
			t.Fatal("call failed")
		}
	}
	eventually(t, 2*time.Second, "transactions finished", func() bool { live, _ := edge.tx.counts(); return live == 0 })
	live, fin1 := edge.tx.counts()
	after := heap()
	kept := fin1 - fin0
	if kept < calls*2 {
		t.Fatalf("%d finished transactions kept after %d calls (%d live): want %d (INVITE and BYE each, 32 s)", kept, calls, live, 2*calls)
	}
	edge.tx.finMu.Lock()
	arena := edge.tx.fin.bytes // the records, outside the Go heap
	edge.tx.finMu.Unlock()
	perTx := float64(int64(after)-int64(before)+int64(arena)) / float64(kept)
	edge.tx.expireFinished(time.Now().Add(time.Hour))
	gone := heap()
	t.Logf("%d finished transactions kept: %.0f bytes each (heap %d → %d, %d after they expired; records %d bytes)", kept, perTx, before, after, gone, arena)
	if perTx > 1024 {
		t.Errorf("a finished transaction costs %.0f bytes, want ≤ 1024", perTx)
	}
}
