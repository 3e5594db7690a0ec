package sip

import (
	"bytes"
	"context"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
)

// Requests sipgo's parser rejects are answered, not ignored (DESIGN §4): when the Via,
// From, To, Call-ID and CSeq of such a UDP request can still be read, the edge answers
// 400 Bad Request (416 Unsupported URI Scheme when the Request-URI is not sip/sips), so
// the sender learns its message is broken instead of retransmitting into silence. It is
// never relayed.
//
// sipgo parses a datagram right after the read filter on the same reader and, on failure,
// only logs "failed to parse" with the datagram. So the read filter remembers the last
// few request datagrams by content hash with their source (a small ring, no allocation),
// and the transport layer's logger is wrapped: a "failed to parse" record finds its
// source there and gets its answer. Nothing on the path of a parsable message changes
// but one hash and one ring slot per request datagram.

// unparsableRing remembers recent request datagrams' hashes and sources.
type unparsableRing struct {
	seed maphash.Seed
	mu   sync.Mutex
	ring [64]struct {
		sum uint64
		src netip.AddrPort
	}
	next int
}

func newUnparsableRing() *unparsableRing { return &unparsableRing{seed: maphash.MakeSeed()} }

func (r *unparsableRing) remember(data []byte, src netip.AddrPort) {
	sum := maphash.Bytes(r.seed, data)
	r.mu.Lock()
	r.ring[r.next].sum, r.ring[r.next].src = sum, src
	r.next = (r.next + 1) % len(r.ring)
	r.mu.Unlock()
}

func (r *unparsableRing) source(data []byte) (netip.AddrPort, bool) {
	sum := maphash.Bytes(r.seed, data)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.ring {
		if r.ring[i].sum == sum && r.ring[i].src.IsValid() {
			return r.ring[i].src, true
		}
	}
	return netip.AddrPort{}, false
}

// parseFailHandler wraps the transport layer's slog handler and answers the request of
// every "failed to parse" record it can (see above); the record itself goes on.
type parseFailHandler struct {
	slog.Handler
	s *Server
}

func (h parseFailHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "data" {
				h.s.answerUnparsable([]byte(a.Value.String()))
				return false
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h parseFailHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.Handler.Enabled(ctx, l)
}

func (h parseFailHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return parseFailHandler{Handler: h.Handler.WithAttrs(as), s: h.s}
}

func (h parseFailHandler) WithGroup(name string) slog.Handler {
	return parseFailHandler{Handler: h.Handler.WithGroup(name), s: h.s}
}

// parseFailLogger is l (or slog's default) with parse failures answered.
func (s *Server) parseFailLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return slog.New(parseFailHandler{Handler: l.Handler(), s: s})
}

// answerUnparsable sends 400 (or 416) for a request datagram sipgo could not parse, if
// its source is known and its transaction headers can be read. ACKs get nothing.
func (s *Server) answerUnparsable(data []byte) {
	src, ok := s.unparsable.source(data)
	conn := s.udp
	if !ok || conn == nil {
		return
	}
	res := unparsableAnswer(data, s.cfg.UserAgent)
	if res == nil {
		return
	}
	if _, err := conn.WriteToUDPAddrPort(res, src); err == nil {
		s.m.drop(dropUnparsable)
	}
}

// unparsableAnswer builds the 400/416 for a raw request, or nil when it is an ACK, not a
// request, or lacks a readable Via, From, To, Call-ID or CSeq (RFC 3261 §8.2.6: the answer
// copies them, and a To tag is added).
func unparsableAnswer(data []byte, server string) []byte {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := bytes.Split(head, []byte("\n"))
	if len(lines) < 2 {
		return nil
	}
	reqLine := bytes.Fields(bytes.TrimRight(lines[0], "\r"))
	if len(reqLine) != 3 || bytes.HasPrefix(reqLine[0], []byte("SIP/")) || bytes.Equal(reqLine[0], []byte("ACK")) {
		return nil
	}
	code, reason := "400", "Bad Request"
	scheme, _, hasColon := bytes.Cut(reqLine[1], []byte(":"))
	if !hasColon || !(bytes.EqualFold(scheme, []byte("sip")) || bytes.EqualFold(scheme, []byte("sips"))) {
		code, reason = "416", "Unsupported URI Scheme"
	}
	var via, from, to, callID, cseq []byte
	for _, l := range lines[1:] {
		l = bytes.TrimRight(l, "\r")
		name, val, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(l) > 1024 {
			continue
		}
		name, val = bytes.TrimSpace(name), bytes.TrimSpace(val)
		if len(val) == 0 || bytes.ContainsAny(val, "\x00") {
			continue
		}
		switch {
		case via == nil && (bytes.EqualFold(name, []byte("Via")) || bytes.EqualFold(name, []byte("v"))):
			via = val
		case from == nil && (bytes.EqualFold(name, []byte("From")) || bytes.EqualFold(name, []byte("f"))):
			from = val
		case to == nil && (bytes.EqualFold(name, []byte("To")) || bytes.EqualFold(name, []byte("t"))):
			to = val
		case callID == nil && (bytes.EqualFold(name, []byte("Call-ID")) || bytes.EqualFold(name, []byte("i"))):
			callID = val
		case cseq == nil && bytes.EqualFold(name, []byte("CSeq")):
			cseq = val
		}
	}
	if via == nil || from == nil || to == nil || callID == nil || cseq == nil {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("SIP/2.0 " + code + " " + reason + "\r\nVia: ")
	b.Write(via)
	b.WriteString("\r\nFrom: ")
	b.Write(from)
	b.WriteString("\r\nTo: ")
	b.Write(to)
	if !bytes.Contains(bytes.ToLower(to), []byte(";tag=")) {
		b.WriteString(";tag=" + unparsableTag)
	}
	b.WriteString("\r\nCall-ID: ")
	b.Write(callID)
	b.WriteString("\r\nCSeq: ")
	b.Write(cseq)
	if server != "" && server != "-" {
		b.WriteString("\r\nServer: " + server)
	}
	b.WriteString("\r\nContent-Length: 0\r\n\r\n")
	return b.Bytes()
}

// unparsableTag is the To tag of answers to unparsable requests (there is no dialog).
const unparsableTag = "sipedge-400"
