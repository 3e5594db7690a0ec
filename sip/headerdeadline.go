package sip

import (
	"errors"
	"time"
)

// A TCP peer must deliver each message's header within HeaderTimeout of its first byte
// (DESIGN §4a): a slowloris that trickles a header forever would otherwise hold its
// connection (and sipgo's parser buffer) until the idle timeout. headerClock follows the
// stream's message boundaries — header up to CRLF CRLF, then Content-Length bytes of body —
// without parsing anything else, and says when the header being received started.

// DefaultHeaderTimeout bounds the arrival of one message header over TCP.
const DefaultHeaderTimeout = 10 * time.Second

var errHeaderTimeout = errors.New("sip: TCP message header not complete in time")

// headerClock tracks where a TCP stream is between messages. Not safe for concurrent
// use: a connection has one reader.
type headerClock struct {
	inBody  int       // body bytes still to come (0: in a header or between messages)
	started time.Time // first byte of the header being received; zero: none pending
	crlf    int       // length of the CR LF CR LF run seen at the end of the header so far
	line    []byte    // the current header line, when it may be Content-Length (bounded)
	lineLen int       // bytes of the current line seen
	clen    int       // Content-Length of the current header
}

// feed advances the clock over b, received at now.
func (h *headerClock) feed(b []byte, now time.Time) {
	for i := 0; i < len(b); i++ {
		if h.inBody > 0 {
			n := min(h.inBody, len(b)-i)
			h.inBody -= n
			i += n - 1
			continue
		}
		c := b[i]
		if h.started.IsZero() {
			if c == '\r' || c == '\n' {
				continue // keep-alives between messages
			}
			h.started, h.crlf, h.lineLen, h.clen, h.line = now, 0, 0, 0, h.line[:0]
		}
		switch {
		case c == '\r' && (h.crlf == 0 || h.crlf == 2), c == '\n' && (h.crlf == 1 || h.crlf == 3):
			h.crlf++
		case c == '\n': // a bare LF ends a line too
			h.crlf = 1
		default:
			h.crlf = 0
		}
		if c == '\n' {
			h.endLine()
			if h.crlf == 4 || (h.lineLen == 0 && h.crlf >= 1) {
				h.inBody, h.started, h.crlf = h.clen, time.Time{}, 0
			}
			h.lineLen = 0
			h.line = h.line[:0]
			continue
		}
		if c != '\r' {
			if h.lineLen < 32 {
				h.line = append(h.line, c)
			}
			h.lineLen++
		}
	}
}

// endLine takes the Content-Length of the line just ended, if it is one ("l" compact).
func (h *headerClock) endLine() {
	l := h.line
	for _, name := range []string{"content-length:", "l:"} {
		if len(l) < len(name) || !equalFoldASCII(l[:len(name)], name) {
			continue
		}
		n := 0
		for _, c := range l[len(name):] {
			switch {
			case c == ' ' || c == '\t':
			case '0' <= c && c <= '9' && n < 1<<20:
				n = n*10 + int(c-'0')
			default:
				return
			}
		}
		h.clen = n
		return
	}
}

func equalFoldASCII(b []byte, s string) bool {
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// deadline is when the pending header must be complete (zero: none pending).
func (h *headerClock) deadline(timeout time.Duration) time.Time {
	if h.started.IsZero() {
		return time.Time{}
	}
	return h.started.Add(timeout)
}
