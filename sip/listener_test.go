package sip

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Trusted proxies: a PROXY protocol header is honoured only from a peer inside
// TrustedProxies (here 127.0.0.5/32, standing in for a load balancer). 127.0.0.2 is the
// listed PBX; nobody else can claim to be it.

func proxyV1(src, dst netip.AddrPort) []byte {
	return []byte("PROXY TCP4 " + src.Addr().String() + " " + dst.Addr().String() + " " +
		strconv.Itoa(int(src.Port())) + " " + strconv.Itoa(int(dst.Port())) + "\r\n")
}

func proxyV2(t testing.TB, cmd proxyproto.ProtocolVersionAndCommand, src, dst netip.AddrPort) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: 2, Command: cmd, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      &net.TCPAddr{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		DestinationAddr: &net.TCPAddr{IP: dst.Addr().AsSlice(), Port: int(dst.Port())}}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrustedProxies(t *testing.T) {
	edge, u, reg := newDefenceRig(t, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}
		c.ProxyHeaderTimeout = 500 * time.Millisecond
	})
	pbx := ap("127.0.0.2:40000")
	invite := func(src netip.AddrPort) []byte { return tcpRequest(rawRequest("INVITE", edgeURI(edge)), src) }
	result := func(r string) float64 {
		return metricValue(t, reg, "sipedge_sip_proxy_protocol_total", map[string]string{"result": r})
	}

	t.Run("untrusted peer spoofing the PBX with v1 is refused", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.9", edge.Addr())
		c.write(append(proxyV1(pbx, edge.Addr()), invite(pbx)...))
		if !c.closed(2 * time.Second) {
			t.Fatal("connection with a PROXY header from an untrusted peer stays open")
		}
		if n := u.invites.Load(); n != 0 {
			t.Fatalf("upstream got %d INVITEs", n)
		}
		if result(proxyUntrusted) != 1 {
			t.Fatalf("proxy_protocol_total{result=untrusted} = %v", result(proxyUntrusted))
		}
	})

	t.Run("untrusted peer spoofing the PBX with v2 is refused", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.9", edge.Addr())
		c.write(append(proxyV2(t, proxyproto.PROXY, pbx, edge.Addr()), invite(pbx)...))
		if !c.closed(2 * time.Second) {
			t.Fatal("connection with a v2 header from an untrusted peer stays open")
		}
		if n := u.invites.Load(); n != 0 {
			t.Fatalf("upstream got %d INVITEs", n)
		}
	})

	t.Run("untrusted peer with the v1 signature split over writes is refused", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.9", edge.Addr())
		hdr := proxyV1(pbx, edge.Addr())
		c.write(hdr[:3])
		time.Sleep(50 * time.Millisecond)
		c.write(append(hdr[3:], invite(pbx)...))
		if !c.closed(2 * time.Second) {
			t.Fatal("split PROXY header from an untrusted peer accepted")
		}
		if n := u.invites.Load(); n != 0 {
			t.Fatalf("upstream got %d INVITEs", n)
		}
	})

	t.Run("trusted proxy relaying for the PBX with v1", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write(append(proxyV1(pbx, edge.Addr()), invite(pbx)...))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 200 {
			t.Fatalf("INVITE relayed for the listed PBX got %v", res)
		}
		if n := u.invites.Load(); n != 1 {
			t.Fatalf("upstream got %d INVITEs", n)
		}
		if result(proxyAccepted) != 1 {
			t.Fatalf("proxy_protocol_total{result=accepted} = %v", result(proxyAccepted))
		}
	})

	t.Run("trusted proxy relaying for the PBX with v2", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write(append(proxyV2(t, proxyproto.PROXY, pbx, edge.Addr()), invite(pbx)...))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 200 {
			t.Fatalf("INVITE relayed for the listed PBX got %v", res)
		}
	})

	t.Run("trusted proxy relaying for an unlisted source", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		other := ap("127.0.0.9:40001")
		c.write(append(proxyV1(other, edge.Addr()), invite(other)...))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 407 {
			t.Fatalf("INVITE relayed for an unlisted source got %v, want 407", res)
		}
	})

	t.Run("trusted peer without header is itself the source", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write(invite(c.addr()))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 407 {
			t.Fatalf("INVITE from the unlisted proxy itself got %v, want 407", res)
		}
		if result(proxyAbsent) < 1 {
			t.Fatal("proxy_protocol_total{result=absent} not counted")
		}
	})

	t.Run("trusted peer with a LOCAL header is itself the source", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write(append(proxyV2(t, proxyproto.LOCAL, pbx, edge.Addr()), invite(c.addr())...))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 407 {
			t.Fatalf("INVITE after a LOCAL header got %v, want 407", res)
		}
		if result(proxyLocal) != 1 {
			t.Fatalf("proxy_protocol_total{result=local} = %v", result(proxyLocal))
		}
	})

	t.Run("trusted peer keep-alive before the first request", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write([]byte("\r\n\r\n"))
		time.Sleep(700 * time.Millisecond) // past ProxyHeaderTimeout: no header
		c.write(invite(c.addr()))
		if res := c.final(3 * time.Second); res == nil || res.StatusCode != 407 {
			t.Fatalf("INVITE after a keep-alive got %v, want 407", res)
		}
	})

	t.Run("trusted peer with a broken header is closed", func(t *testing.T) {
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		c.write(append([]byte("PROXY TCP4 127.0.0.2 nonsense\r\n"), invite(pbx)...))
		if !c.closed(2 * time.Second) {
			t.Fatal("broken PROXY header from a trusted peer accepted")
		}
		if result(proxyInvalid) != 1 {
			t.Fatalf("proxy_protocol_total{result=invalid} = %v", result(proxyInvalid))
		}
	})

	t.Run("a banned original source is refused behind the proxy", func(t *testing.T) {
		for range DefaultBanThreshold {
			edge.bans.failure(aa("127.0.0.7"), BanReasonDigest)
		}
		c := dialRawTCP(t, "127.0.0.5", edge.Addr())
		src := ap("127.0.0.7:40002")
		c.write(append(proxyV1(src, edge.Addr()), invite(src)...))
		if !c.closed(2 * time.Second) {
			t.Fatal("connection for a banned source accepted through the proxy")
		}
	})

	if n := u.invites.Load(); n != 2 {
		t.Fatalf("upstream got %d INVITEs, want the 2 relayed for the PBX", n)
	}
}

// Without TrustedProxies nobody may send a PROXY header, and plain TCP works as before.
func TestProxyHeaderWithoutTrustedProxies(t *testing.T) {
	edge, u, _ := newDefenceRig(t, nil)
	c := dialRawTCP(t, "127.0.0.5", edge.Addr())
	c.write(append(proxyV1(ap("127.0.0.2:40000"), edge.Addr()), tcpRequest(rawRequest("INVITE", edgeURI(edge)), ap("127.0.0.2:40000"))...))
	if !c.closed(2 * time.Second) {
		t.Fatal("PROXY header honoured without trusted proxies")
	}
	pbx := dialRawTCP(t, "127.0.0.2", edge.Addr())
	pbx.write(tcpRequest(rawRequest("INVITE", edgeURI(edge)), pbx.addr()))
	if res := pbx.final(3 * time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("plain TCP INVITE from the listed PBX got %v", res)
	}
	if u.invites.Load() != 1 {
		t.Fatalf("upstream got %d INVITEs", u.invites.Load())
	}
}

// FuzzProxyHeader: whatever a peer sends first, an untrusted connection never passes a
// PROXY header on to the SIP parser and passes everything else on unchanged; a trusted
// one yields a usable source or none, never a panic.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 127.0.0.2 127.0.0.1 40000 5060\r\nINVITE sip:x SIP/2.0\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(f, proxyproto.PROXY, ap("127.0.0.2:1"), ap("127.0.0.1:5060")))
	f.Add(proxyV2(f, proxyproto.LOCAL, ap("127.0.0.2:1"), ap("127.0.0.1:5060")))
	f.Add([]byte("\r\n\r\nOPTIONS sip:x SIP/2.0\r\n"))
	f.Add([]byte("INVITE sip:service@127.0.0.1 SIP/2.0\r\n"))
	s := &Server{}
	s.m, _ = newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, func() float64 { return 0 }, func() (int, int) { return 0, 0 })
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(data))); err == nil {
			if src, ok := headerSource(h); ok && (!src.IsValid() || src.Addr().IsUnspecified() || src.Port() == 0) {
				t.Fatalf("unusable source %v accepted", src)
			}
		}
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			b.Write(data)
			b.Close()
		}()
		g := &guardConn{Conn: a, s: s}
		got, err := io.ReadAll(g)
		if err == errUntrustedProxy {
			if !bytes.HasPrefix(data, proxyV1Sig) && !bytes.HasPrefix(data, proxyV2Sig[:5]) {
				t.Fatalf("refused %q as a PROXY header", data)
			}
			return
		}
		if bytes.HasPrefix(got, proxyV1Sig) {
			t.Fatalf("PROXY header passed on: %q", got)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("passed on %q, sent %q", got, data)
		}
	})
}
