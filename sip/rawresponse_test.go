package sip

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// respLines builds a response datagram from header lines, with a Content-Length that
// matches body unless a "Content-Length" or "l:" line is given.
func respLines(status string, body string, lines ...string) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	hasLen := false
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "content-length") || strings.HasPrefix(l, "l:") {
			hasLen = true
		}
		b.WriteString(l + "\r\n")
	}
	if !hasLen {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return []byte(b.String())
}

var plainHeaders = []string{
	"Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.edge1;rport",
	"Via: SIP/2.0/UDP 127.0.0.2:15060;branch=z9hG4bK-1-0;received=127.0.0.2",
	"From: <sip:a@127.0.0.2>;tag=1",
	"To: <sip:b@127.0.0.1>;tag=2",
	"Call-ID: 1-1@127.0.0.2",
	"CSeq: 1 INVITE",
	"Record-Route: <sip:127.0.0.1:15070;lr>",
	"Contact: <sip:b@127.0.0.1:15080>",
}

func TestScanResponse(t *testing.T) {
	sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
	with := func(i int, repl ...string) []string {
		out := append([]string(nil), plainHeaders[:i]...)
		out = append(out, repl...)
		return append(out, plainHeaders[i+1:]...)
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		ok     bool
		code   int
		branch string
		method string
	}{
		{"plain 200 with a body", respLines("200 OK", sdp, plainHeaders...), true, 200, "z9hG4bK.edge1", "INVITE"},
		{"180 without a body", respLines("180 Ringing", "", plainHeaders...), true, 180, "z9hG4bK.edge1", "INVITE"},
		{"compact forms", respLines("200 OK", "", "v: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.c", "f: <sip:a@x>;tag=1", "t: <sip:b@x>", "i: c1", "CSeq: 2 BYE"), true, 200, "z9hG4bK.c", "BYE"},
		{"answer to a CANCEL", respLines("200 OK", "", with(5, "CSeq: 1 CANCEL")...), true, 200, "z9hG4bK.edge1", "CANCEL"},
		{"space before the colon", respLines("100 Trying", "", with(0, "Via : SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.s")...), false, 0, "", ""},
		{"space before a parameter", respLines("100 Trying", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070 ;branch=z9hG4bK.s")...), false, 0, "", ""},
		{"value padded", respLines("100 Trying", "", with(0, "Via:   SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.s  ")...), true, 100, "z9hG4bK.s", "INVITE"},
		{"two Vias on one line (SIPp)", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.a, SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK.b")...), true, 200, "z9hG4bK.a", "INVITE"},
		{"three Vias, tab after the comma", respLines("200 OK", "", with(0, "v:SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.a,\tSIP/2.0/UDP 127.0.0.2;branch=z9hG4bK.b,SIP/2.0/TCP h;branch=z9hG4bK.c")...), true, 200, "z9hG4bK.a", "INVITE"},
		{"nothing after the comma", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.a,  ")...), false, 0, "", ""},
		{"space in the first of two", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070 ;branch=z9hG4bK.a, SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK.b")...), false, 0, "", ""},
		{"folded header", respLines("200 OK", "", with(2, "From: <sip:a@127.0.0.2>", " ;tag=1")...), false, 0, "", ""},
		{"no branch", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070;rport")...), false, 0, "", ""},
		{"branch twice", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.a;branch=z9hG4bK.b")...), false, 0, "", ""},
		{"Branch spelled otherwise", respLines("200 OK", "", with(0, "Via: SIP/2.0/UDP 127.0.0.1:15070;Branch=z9hG4bK.a")...), false, 0, "", ""},
		{"no Via", respLines("200 OK", "", plainHeaders[2:]...), false, 0, "", ""},
		{"two CSeq", respLines("200 OK", "", append(append([]string(nil), plainHeaders...), "CSeq: 2 INVITE")...), false, 0, "", ""},
		{"no To", respLines("200 OK", "", with(3)...), false, 0, "", ""},
		{"no Content-Length", []byte("SIP/2.0 200 OK\r\n" + strings.Join(plainHeaders, "\r\n") + "\r\n\r\n"), false, 0, "", ""},
		{"Content-Length too long", respLines("200 OK", "abc", append(append([]string(nil), plainHeaders...), "Content-Length: 4")...), false, 0, "", ""},
		{"Content-Length short", respLines("200 OK", "abc", append(append([]string(nil), plainHeaders...), "Content-Length: 2")...), false, 0, "", ""},
		{"status 700", respLines("700 Odd", "", plainHeaders...), false, 0, "", ""},
		{"status 99", respLines("099 Odd", "", plainHeaders...), false, 0, "", ""},
		{"bare LF", bytes.Replace(respLines("200 OK", "", plainHeaders...), []byte("\r\nCSeq"), []byte("\nCSeq"), 1), false, 0, "", ""},
		{"no end of headers", []byte("SIP/2.0 200 OK\r\n" + strings.Join(plainHeaders, "\r\n")), false, 0, "", ""},
		{"a request", []byte("BYE sip:a@b SIP/2.0\r\n" + strings.Join(plainHeaders, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"), false, 0, "", ""},
		{"CSeq without a method", respLines("200 OK", "", with(5, "CSeq: 1")...), false, 0, "", ""},
		{"quoted Via parameter", respLines("200 OK", "", with(0, `Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.q;x="a;branch=z"`)...), false, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := scanResponse(tc.data)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v\n%s", ok, tc.ok, tc.data)
			}
			if !ok {
				return
			}
			if r.code != tc.code || string(r.branch) != tc.branch || string(r.method) != tc.method {
				t.Fatalf("got code %d branch %q method %q, want %d %q %q", r.code, r.branch, r.method, tc.code, tc.branch, tc.method)
			}
			checkRawAgainstSipgo(t, tc.data, r)
		})
	}
}

// checkRawAgainstSipgo holds the raw reading of data to sipgo's, where sipgo parses it:
// the same status code, top Via branch and CSeq method, and the datagram without the
// top Via's line reads as sipgo's response with its top Via removed.
func checkRawAgainstSipgo(t *testing.T, data []byte, r rawResponse) {
	t.Helper()
	if r.via[0] <= 0 || r.via[1] > len(data) || r.via[0] >= r.via[1] {
		t.Fatalf("Via line %v out of place in %q", r.via, data)
	}
	msg, err := sipmsg.NewParser().ParseSIP(append([]byte(nil), data...))
	if err != nil {
		return // sipgo refuses what the raw path relays: allowed (rawresponse.go)
	}
	res, isRes := msg.(*sipmsg.Response)
	if !isRes {
		t.Fatalf("sipgo reads a request in %q", data)
	}
	via := res.Via()
	if via == nil {
		t.Fatalf("sipgo finds no Via in %q", data)
	}
	br, _ := via.Params.Get("branch")
	method := ""
	if cs := res.CSeq(); cs != nil {
		method = string(cs.MethodName)
	}
	if res.StatusCode != r.code || br != string(r.branch) || method != string(r.method) {
		t.Fatalf("sipgo reads code %d branch %q method %q; raw %d %q %q\n%q", res.StatusCode, br, method, r.code, r.branch, r.method, data)
	}
	down := append(append([]byte(nil), data[:r.via[0]]...), data[r.via[1]:]...)
	got, err := sipmsg.NewParser().ParseSIP(down)
	if err != nil {
		t.Fatalf("the relayed datagram does not parse: %v\n%q", err, down)
	}
	res.RemoveHeader("Via")
	if got.String() != res.String() {
		t.Fatalf("relayed datagram reads\n%s\nsipgo's response without its top Via reads\n%s", got, res)
	}
}

// FuzzScanResponse: whatever the raw path accepts, sipgo (where it parses the datagram at
// all) reads the same code, branch and method, and the relayed bytes are the response
// without its top Via.
func FuzzScanResponse(f *testing.F) {
	f.Add(respLines("200 OK", "v=0\r\n", plainHeaders...))
	f.Add(respLines("180 Ringing", "", plainHeaders...))
	f.Add(respLines("200 OK", "", "v: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.c", "f: <sip:a@x>;tag=1", "t: <sip:b@x>", "i: c1", "CSeq: 2 BYE"))
	f.Add(respLines("200 OK", "", "Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK.a, SIP/2.0/UDP 127.0.0.2:15060;branch=z9hG4bK-1", "From: <sip:a@x>;tag=1", "To: <sip:b@x>", "Call-ID: x", "CSeq: 1 INVITE"))
	f.Add(respLines("487 Request Terminated", "", "Via: SIP/2.0/UDP h;branch=z9hG4bK1 , SIP/2.0/UDP g;branch=z9hG4bK2", "From: <sip:a@x>", "To: <sip:b@x>", "Call-ID: x", "CSeq: 1 INVITE"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, ok := scanResponse(data)
		if !ok {
			return
		}
		checkRawAgainstSipgo(t, data, r)
	})
}

// The raw path allocates nothing to read a response.
func TestScanResponseAllocatesNothing(t *testing.T) {
	data := respLines("200 OK", "v=0\r\n", plainHeaders...)
	if n := testing.AllocsPerRun(100, func() { _, _ = scanResponse(data) }); n != 0 {
		t.Fatalf("%v allocations per scan", n)
	}
}

// scriptedUAS answers every INVITE with the responses its script builds from the
// request's raw bytes, records what it sent and ACKs it saw.
type scriptedUAS struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent [][]byte
	acks int
}

func newScriptedUAS(t *testing.T, script func(req []byte) [][]byte) *scriptedUAS {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUAS{conn: c}
	serveDatagrams(t, c, func(b []byte, from net.Addr) {
		u.mu.Lock()
		defer u.mu.Unlock()
		switch {
		case bytes.HasPrefix(b, []byte("INVITE ")):
			for _, r := range script(b) {
				u.sent = append(u.sent, r)
				_, _ = c.WriteTo(r, from)
			}
		case bytes.HasPrefix(b, []byte("ACK ")):
			u.acks++
		}
	})
	return u
}

// answerFor builds a response to the raw request req: its Via lines, From, Call-ID and
// CSeq copied as they are, a To with a tag, then extra lines, written with the spacing a
// parser would not keep.
func answerFor(req []byte, status string, extra ...string) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, l := range strings.Split(string(req), "\r\n") {
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(name) {
		case "via", "from", "call-id", "cseq":
			b.WriteString(l + "\r\n")
		case "to":
			b.WriteString(l + ";tag=uas-raw\r\n")
		}
	}
	for _, l := range extra {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Content-Length:   0\r\n\r\n")
	return []byte(b.String())
}

// joinVias writes the Via lines of b as one line, values separated by ", ", as SIPp's
// [last_Via:] does.
func joinVias(b []byte) []byte {
	var out, vias []string
	at := -1
	for _, l := range strings.Split(string(b), "\r\n") {
		if v, ok := strings.CutPrefix(l, "Via: "); ok {
			if at < 0 {
				at = len(out)
				out = append(out, "")
			}
			vias = append(vias, v)
			continue
		}
		out = append(out, l)
	}
	out[at] = "Via: " + strings.Join(vias, ", ")
	return []byte(strings.Join(out, "\r\n"))
}

// withoutTopVia is b without its first Via: the line, or the line's first value.
func withoutTopVia(b []byte) []byte {
	i := bytes.Index(b, []byte("\r\nVia: ")) + 2
	j := bytes.Index(b[i:], crlf)
	line := b[i : i+j]
	if c := bytes.Index(line, []byte(", ")); c >= 0 {
		return append(append(append([]byte(nil), b[:i+len("Via: ")]...), line[c+2:]...), b[i+j:]...)
	}
	return append(append([]byte(nil), b[:i]...), b[i+j+2:]...)
}

// Responses of the plain shape reach the caller as the next hop sent them, byte for byte,
// with only the edge's Via cut out (the raw path: nothing parsed, nothing rewritten). A
// non-2xx final still gets the edge's hop-by-hop ACK upstream (built on the parsed path)
// and reaches the caller.
func TestResponsesRelayedAsSent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		script   func(req []byte) [][]byte
		final    int
		acks     int
		verbatim bool // the raw path relays it (the 486 needs the parsed path for its ACK)
	}{
		{"180 and 200", func(req []byte) [][]byte {
			return [][]byte{
				answerFor(req, "180 Ringing", "X-Opaque:   kept   as   sent  "),
				answerFor(req, "200 OK", "Contact:    <sip:uas@127.0.0.1:5999>;expires=60", "X-Opaque: \t tab"),
			}
		}, 200, 0, true},
		{"one Via line (SIPp)", func(req []byte) [][]byte {
			return [][]byte{joinVias(answerFor(req, "180 Ringing")), joinVias(answerFor(req, "200 OK"))}
		}, 200, 0, true},
		{"486", func(req []byte) [][]byte {
			return [][]byte{answerFor(req, "486 Busy Here", "X-Opaque:   busy")}
		}, 486, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptedUAS(t, tc.script)
			cfg := baseConfig()
			cfg.Upstream = "sip:" + up.conn.LocalAddr().String()
			edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
			pbx := newRawUDP(t, "127.0.0.2", edge.Addr())
			pbx.send(replace(rawRequest("INVITE", "sip:100@t1.example.org"), "127.0.0.9:5099", pbx.addr().String()))
			var got [][]byte
			buf := make([]byte, 65535)
			for {
				_ = pbx.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, err := pbx.conn.Read(buf)
				if err != nil {
					t.Fatalf("after %d responses: %v", len(got), err)
				}
				if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 100 ")) {
					continue // the edge's own
				}
				got = append(got, append([]byte(nil), buf[:n]...))
				if r, ok := scanResponse(buf[:n]); ok && r.code >= 200 || !ok {
					break
				}
			}
			up.mu.Lock()
			sent := up.sent
			up.mu.Unlock()
			if len(got) != len(sent) {
				t.Fatalf("caller got %d responses, upstream sent %d", len(got), len(sent))
			}
			for i := range sent {
				if !tc.verbatim {
					break
				}
				if want := withoutTopVia(sent[i]); !bytes.Equal(got[i], want) {
					t.Errorf("response %d reached the caller as\n%q\nwant\n%q", i, got[i], want)
				}
			}
			if r, _ := scanResponse(got[len(got)-1]); r.code != tc.final {
				t.Fatalf("final %d, want %d", r.code, tc.final)
			}
			eventually(t, 2*time.Second, "upstream ACKs", func() bool {
				up.mu.Lock()
				defer up.mu.Unlock()
				return up.acks == tc.acks
			})
		})
	}
}
