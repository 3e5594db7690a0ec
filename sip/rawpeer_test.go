package sip

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// A raw SIP peer for the defence tests: plain sockets and hand-built messages, so a
// test sees exactly what the edge answers (or that it answers nothing), with short
// timeouts instead of sipgo's transaction timers.

type rawUDP struct {
	t    testing.TB
	conn *net.UDPConn
	edge netip.AddrPort
}

func newRawUDP(t testing.TB, ip string, edge netip.AddrPort) *rawUDP {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawUDP{t: t, conn: c, edge: edge}
}

func (c *rawUDP) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (c *rawUDP) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, c.edge); err != nil {
		c.t.Fatal(err)
	}
}

// request sends a request built by rawRequest (re-addressed to come from this socket) and
// returns the final response to it, or nil when none comes within wait. Non-2xx finals
// are ACKed, so the edge stops retransmitting them.
func (c *rawUDP) request(raw []byte, wait time.Duration) *sipmsg.Response {
	c.t.Helper()
	raw = replace(raw, "127.0.0.9:5099", c.addr().String())
	req := parseReq(c.t, raw, c.addr().String())
	c.send(raw)
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65535)
	for {
		_ = c.conn.SetReadDeadline(deadline)
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil
		}
		m, err := sipmsg.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		res, ok := m.(*sipmsg.Response)
		if !ok || callIDOf2(res) != callIDOf(req) || res.StatusCode < 200 {
			continue
		}
		if req.IsInvite() && res.StatusCode >= 300 {
			c.send(ackFor(req, res))
		}
		return res
	}
}

// serveDatagrams passes every datagram read from c to handle, on its own goroutine,
// until the test ends (c is closed then and the goroutine waited for).
func serveDatagrams(t testing.TB, c net.PacketConn, handle func(b []byte, from net.Addr)) {
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			handle(buf[:n], from)
		}
	}()
}

func callIDOf2(res *sipmsg.Response) string {
	if h := res.CallID(); h != nil {
		return string(*h)
	}
	return ""
}

// ackFor builds the ACK of a non-2xx final response (same branch, RFC 3261 §17.1.1.3).
func ackFor(req *sipmsg.Request, res *sipmsg.Response) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\n", req.Recipient.String())
	fmt.Fprintf(&b, "Via: %s\r\n", req.Via().Value())
	fmt.Fprintf(&b, "From: %s\r\n", req.From().Value())
	fmt.Fprintf(&b, "To: %s\r\n", res.To().Value())
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callIDOf(req))
	fmt.Fprintf(&b, "CSeq: %d ACK\r\n", req.CSeq().SeqNo)
	b.WriteString("Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// invite sends an INVITE for ruri and, when it is challenged and user != "", answers the
// challenge (MD5 when offered) with password. It returns the final status (0: no answer at all).
func (c *rawUDP) invite(ruri, user, password string) int {
	c.t.Helper()
	const wait = 700 * time.Millisecond
	res := c.request(rawRequest("INVITE", ruri), wait)
	if res == nil {
		return 0
	}
	if res.StatusCode != 407 || user == "" {
		return res.StatusCode
	}
	chal := "" // MD5 if offered, else the first challenge
	for i, h := range res.GetHeaders("Proxy-Authenticate") {
		if i == 0 || strings.Contains(h.Value(), "algorithm=MD5,") {
			chal = h.Value()
		}
	}
	pa := "Proxy-Authorization: " + answerChallenge(c.t, chal, "INVITE", ruri, user, password, 1, sipmsg.GenerateTagN(8))
	res = c.request(rawRequest("INVITE", ruri, pa), wait)
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// options sends OPTIONS and returns the final status (0: no answer).
func (c *rawUDP) options() int {
	c.t.Helper()
	res := c.request(rawRequest("OPTIONS", "sip:"+c.edge.String()), 700*time.Millisecond)
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// rawTCP is one TCP connection from a chosen source address.
type rawTCP struct {
	t    testing.TB
	conn *net.TCPConn
	r    *bufio.Reader
}

func dialRawTCP(t testing.TB, ip string, edge netip.AddrPort) *rawTCP {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", edge.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawTCP{t: t, conn: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

func (c *rawTCP) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.TCPAddr).AddrPort() }

func (c *rawTCP) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// tcpRequest turns a rawRequest into one for TCP sent from src.
func tcpRequest(raw []byte, src netip.AddrPort) []byte {
	return replace(replace(raw, "SIP/2.0/UDP 127.0.0.9:5099", "SIP/2.0/TCP "+src.String()), "<sip:pbx@127.0.0.9>", "<sip:pbx@"+src.Addr().String()+">")
}

// final reads responses until a final one (or nil on timeout or a closed connection).
func (c *rawTCP) final(wait time.Duration) *sipmsg.Response {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		res, err := readStreamResponse(c.r)
		if err != nil {
			return nil
		}
		if res.StatusCode >= 200 {
			return res
		}
	}
}

// closed reports whether the edge closed the connection (EOF or reset) within wait.
func (c *rawTCP) closed(wait time.Duration) bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	_, err := c.r.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// readStreamResponse reads one response (header block + Content-Length body) from r.
func readStreamResponse(r *bufio.Reader) (*sipmsg.Response, error) {
	var head bytes.Buffer
	clen := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if head.Len() == 0 && strings.TrimSpace(line) == "" {
			continue // keep-alive
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(strings.TrimSpace(k), "Content-Length") || strings.TrimSpace(k) == "l") {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &clen)
		}
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	m, err := sipmsg.ParseMessage(append(head.Bytes(), body...))
	if err != nil {
		return nil, err
	}
	res, ok := m.(*sipmsg.Response)
	if !ok {
		return nil, errors.New("not a response")
	}
	return res, nil
}

// metricValue sums the samples of metric name whose labels include labels.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// needBinary returns the path of a tool the SIPp/sipvicious tests need, or skips.
func needBinary(t *testing.T, name string) string {
	t.Helper()
	if os.Getenv("SIPEDGE_TEST_SIPP") == "" {
		t.Skip("set SIPEDGE_TEST_SIPP=1 to run")
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: %v", name, err)
	}
	return p
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }
