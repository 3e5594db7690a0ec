package sip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// The RFC 4475 torture messages (copied from sipgo's own test data into
// testdata/torture) replayed over UDP and TCP at a running edge, from the listed PBX
// (whose INVITEs are relayed when acceptable) and from an unlisted source.

// tortureRelayed are the messages the edge relays from a listed source. Besides the valid
// INVITEs, two "invalid" ones are relayed on purpose: RFC 4475 says a proxy forwards
// them and leaves the verdict to the UAS (invut: an unknown body type, 415 is the UAS's;
// sdp01: an Accept the UAS cannot meet). baddate (a Date not in GMT) is answered 400 by
// the edge itself (DESIGN §4: RFC 3261 §20.17 allows GMT only). Every other message is
// answered by the edge itself (400, 405, 416, 420, 482, 483, 200 to OPTIONS) or dropped
// by the parser; nothing from an unlisted source is relayed.
var tortureRelayed = []string{"invalid/invut", "invalid/sdp01", "valid/esc01", "valid/longreq"}

// tortureMayRelay may or may not be relayed: over TCP the INVITE that follows dblreq's
// REGISTER is a message of its own, but the garbage after its body makes sipgo close the
// connection, and whether its transaction was created before that is a race (afterwards
// sipgo would dial the Via host, which the edge's dial guard refuses).
var tortureMayRelay = map[string]bool{"valid/dblreq": true}

// upstreamCatcher is an upstream that records every datagram and answers nothing.
type upstreamCatcher struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
}

func newUpstreamCatcher(t *testing.T) *upstreamCatcher {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamCatcher{conn: c, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.got = append(u.got, append([]byte(nil), buf[:n]...))
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-u.done })
	return u
}

func (u *upstreamCatcher) uri() string { return "sip:" + u.conn.LocalAddr().String() }

func (u *upstreamCatcher) messages() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

// checkRelayed asserts that a message the edge relayed is a well-formed request: it
// parses, passes the edge's own validation, carries no Proxy-Authorization and a
// Max-Forwards one below the original's (origMF returns it by Call-ID). It returns the
// Call-ID.
func checkRelayed(t *testing.T, raw []byte, origMF func(callID string) (uint32, bool)) string {
	t.Helper()
	m, err := sipmsg.ParseMessage(raw)
	if err != nil {
		t.Fatalf("relayed an unparsable message: %v\n%s", err, raw)
	}
	req, ok := m.(*sipmsg.Request)
	if !ok {
		t.Fatalf("relayed a response upstream:\n%s", raw)
	}
	if r := validateRequest(req); r != "" {
		t.Fatalf("relayed an invalid request (%s):\n%s", r, raw)
	}
	if req.GetHeader("Proxy-Authorization") != nil {
		t.Fatalf("relayed Proxy-Authorization:\n%s", raw)
	}
	mf, ok := origMF(callIDOf(req))
	if !ok || req.MaxForwards().Val() != mf-1 {
		t.Fatalf("Max-Forwards %d, sent with %d:\n%s", req.MaxForwards().Val(), mf, raw)
	}
	return callIDOf(req)
}

func TestTortureReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "torture", "*", "*.dat"))
	if err != nil || len(files) < 50 {
		t.Fatalf("torture files: %d, %v", len(files), err)
	}
	msgs := map[string][]byte{}
	byCallID := map[string]string{} // every request in every file (a stream may hold two)
	maxFwd := map[string]uint32{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.ToSlash(f), "testdata/torture/"), ".dat")
		// RFC 4475 reuses one Via branch in many messages: replayed together they would be
		// one transaction, and which of them gets relayed would depend on goroutine
		// scheduling. Make branches unique per file (the messages in one file keep theirs).
		b = bytes.ReplaceAll(b, []byte("branch=z9hG4bK"), []byte(fmt.Sprintf("branch=z9hG4bK%03d", len(msgs))))
		msgs[name] = b
		_ = sipmsg.NewParser().NewSIPStream().ParseSIPStream(b, func(m sipmsg.Message) {
			if r, ok := m.(*sipmsg.Request); ok && r.CallID() != nil {
				byCallID[string(*r.CallID())] = name
				if r.MaxForwards() != nil {
					maxFwd[string(*r.CallID())] = r.MaxForwards().Val()
				}
			}
		})
	}
	names := slices.Sorted(maps.Keys(msgs))

	up := newUpstreamCatcher(t)
	baseline := runtime.NumGoroutine()
	// Each run gets its own edge: the same message from two sources, or over two
	// transports, would be a retransmission of one transaction (same Via branch).
	for _, tp := range []string{"UDP", "TCP"} {
		for _, src := range []string{"127.0.0.2", "127.0.0.9"} {
			t.Run(tp+" from "+src, func(t *testing.T) {
				var want []string
				if src == "127.0.0.2" {
					want = tortureRelayed
				}
				tortureRun(t, up, tp, src, names, msgs, byCallID, maxFwd, want)
				eventually(t, 10*time.Second, "goroutines back to the baseline", func() bool {
					return runtime.NumGoroutine() <= baseline+2
				})
			})
		}
	}
}

func tortureRun(t *testing.T, up *upstreamCatcher, tp, src string, names []string, msgs map[string][]byte,
	byCallID map[string]string, maxFwd map[string]uint32, want []string) {
	cfg := baseConfig()
	cfg.Upstream = up.uri()
	cfg.UpstreamTimeout = 300 * time.Millisecond
	cfg.RateLimitRequests = -1                     // this test is about parsing, not flooding
	cfg.SlogLogger = slog.New(slog.DiscardHandler) // sipgo logs every unparsable message at Error
	edge, err := New(cfg, policyOf(mustCompile(t, testDataset(""))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- edge.Run(ctx) }()
	<-edge.Ready()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	before := len(up.messages())

	if tp == "UDP" {
		udp := newRawUDP(t, src, edge.Addr())
		for _, n := range names {
			udp.send(msgs[n])
		}
	} else {
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := dialRawTCP(t, src, edge.Addr())
				c.write(msgs[n])
				c.final(200 * time.Millisecond)
				c.conn.Close()
			}()
		}
		wg.Wait()
	}

	relayedNow := func() []string {
		relayed := map[string]bool{}
		for _, raw := range up.messages()[before:] {
			id := checkRelayed(t, raw, func(id string) (uint32, bool) { mf, ok := maxFwd[id]; return mf, ok })
			name, ok := byCallID[id]
			if !ok {
				t.Fatalf("relayed a message that was never sent (Call-ID %q)", id)
			}
			if !tortureMayRelay[name] {
				relayed[name] = true
			}
		}
		return slices.Sorted(maps.Keys(relayed))
	}
	deadline := time.Now().Add(5 * time.Second)
	for got := relayedNow(); len(got) < len(want); got = relayedNow() {
		if time.Now().After(deadline) {
			t.Fatalf("relayed only %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still serving; every relay finished (each waits UpstreamTimeout for silence).
	if code := newRawUDP(t, "127.0.0.2", edge.Addr()).options(); code != 200 {
		t.Fatalf("edge answers OPTIONS %d after the torture run", code)
	}
	time.Sleep(cfg.UpstreamTimeout)
	eventually(t, 5*time.Second, "relays to finish", func() bool { return edge.ActiveCalls() == 0 })
	if got := relayedNow(); !slices.Equal(got, want) {
		t.Fatalf("relayed %v, want %v", got, want)
	}
}

// TestUnparsableRequestsAnswered: a request sipgo's parser rejects but whose transaction
// headers can be read gets 400 (416 for a Request-URI scheme other than sip/sips), never
// silence and never a relay; an ACK or a message without them gets nothing.
func TestUnparsableRequestsAnswered(t *testing.T) {
	r := newRig(t, "UDP", nil)
	c := newRawUDP(t, "127.0.0.2", r.edge.Addr())
	hdrs := func(method, ruri string) string {
		return method + " " + ruri + " SIP/2.0\r\nVia: SIP/2.0/UDP " + c.addr().String() + ";branch=z9hG4bK-unp-" + sipmsg.GenerateTagN(6) +
			"\r\nFrom: <sip:a@pbx.example>;tag=1\r\nTo: <sip:b@example.org>\r\nCall-ID: unp-" + sipmsg.GenerateTagN(6) +
			"\r\nCSeq: 1 " + method + "\r\nMax-Forwards: 70\r\n"
	}
	for _, tc := range []struct {
		name, raw string
		want      int
	}{
		{"bad Content-Length", hdrs("INVITE", "sip:100@t1.example.org") + "Content-Length: abc\r\n\r\n", 400},
		{"unknown URI scheme in the request line", hdrs("INVITE", "<junk>") + "Content-Length: 0\r\n\r\n", 416},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sipmsg.ParseMessage([]byte(tc.raw)); err == nil {
				t.Skip("sipgo parses this message: nothing to test")
			}
			c.send([]byte(tc.raw))
			_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4096)
			n, err := c.conn.Read(buf)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if want := fmt.Sprintf("SIP/2.0 %d ", tc.want); !strings.HasPrefix(string(buf[:n]), want) {
				t.Fatalf("answered %q, want %s", strings.SplitN(string(buf[:n]), "\r\n", 2)[0], want)
			}
			if !strings.Contains(string(buf[:n]), ";tag=") {
				t.Fatal("answer without a To tag")
			}
		})
	}
	if r.uas.invites.Load() != 0 {
		t.Fatal("an unparsable request was relayed")
	}
	if got := unparsableAnswer([]byte("ACK sip:x@y SIP/2.0\r\nVia: a\r\nFrom: b\r\nTo: c\r\nCall-ID: d\r\nCSeq: 1 ACK\r\n\r\n"), "sipedge"); got != nil {
		t.Fatalf("an ACK was answered: %q", got)
	}
	if got := unparsableAnswer([]byte("INVITE sip:x@y SIP/2.0\r\nVia: a\r\n\r\n"), "sipedge"); got != nil {
		t.Fatalf("a request without From/To/Call-ID/CSeq was answered: %q", got)
	}
}
