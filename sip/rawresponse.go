package sip

import "bytes"

// Responses relayed without sipgo's parser. Four of the seven messages of a call are
// responses from the next hop (100, 180, 200, and the BYE's 200), and the relay needs only
// three things of each: the status code, the branch of the top Via (which names the
// transaction) and the CSeq method (an answer to our CANCEL is ours). scanResponse reads
// them from a UDP datagram of the plain shape every mainstream UA and proxy sends, and the
// datagram goes downstream as it came, with the top Via cut out (its line, or its first
// value when the line holds several; the way Kamailio relays a response), instead of being parsed into objects and serialized again.
//
// Anything outside that shape is left to sipgo's parser and the parsed path, which does
// the same thing more slowly: a folded header line, a bare LF, a top via-parm with
// optional whitespace or quotes, a branch parameter the parsed path would not see, no or several CSeq,
// From, To or Call-ID headers, no Content-Length or one that disagrees with the body, a
// status code outside 100–699, more than maxRawHeaders header lines. So are the cases the
// relay must build a request from the response (the ACK of a non-2xx final, ending a call
// the caller gave up), which need its To, Contact and Record-Route (ptx.needsMessage).

// rawResponse is what the relay reads of a response datagram.
type rawResponse struct {
	code   int
	branch []byte // the top Via's branch parameter (aliases the datagram)
	method []byte // the CSeq method (aliases the datagram)
	via    [2]int // what to cut to remove the top Via: datagram[via[0]:via[1]]
}

// maxRawHeaders bounds the header lines scanResponse reads; a longer response takes the
// parsed path.
const maxRawHeaders = 64

var crlf = []byte("\r\n")

// scanResponse reads b as a SIP response of the plain shape described above; ok is false
// for anything else.
func scanResponse(b []byte) (r rawResponse, ok bool) {
	if len(b) < 13 || string(b[:8]) != "SIP/2.0 " || b[11] != ' ' {
		return r, false
	}
	c0, c1, c2 := b[8], b[9], b[10]
	if c0 < '1' || c0 > '6' || !isDigit(c1) || !isDigit(c2) {
		return r, false
	}
	r.code = int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0')
	end := bytes.Index(b, crlf)
	if end < 0 || bytes.IndexByte(b[:end], '\n') >= 0 {
		return r, false
	}
	pos := end + 2
	var vias, cseqs, froms, tos, callIDs, lengths int
	length := -1
	for n := 0; ; n++ {
		e := bytes.Index(b[pos:], crlf)
		if e < 0 || n > maxRawHeaders {
			return r, false
		}
		line := b[pos : pos+e]
		if len(line) == 0 {
			pos += 2
			break
		}
		if line[0] == ' ' || line[0] == '\t' || bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
			return r, false // folded, or a bare CR or LF
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return r, false
		}
		name := line[:colon]
		if !isToken(name) {
			return r, false // "Via :" is legal but rare: the parsed path reads it
		}
		value := bytes.Trim(line[colon+1:], " \t")
		switch {
		case isHeader(name, "Via", "v"):
			if vias++; vias == 1 {
				first, rest := value, []byte(nil)
				if c := bytes.IndexByte(value, ','); c >= 0 {
					// "Via: ours, theirs" (SIPp's [last_Via:] writes them so): only
					// "ours, " goes.
					first, rest = value[:c], bytes.TrimLeft(value[c+1:], " \t")
					if len(rest) == 0 {
						return r, false
					}
				}
				br, ok := viaBranch(first)
				if !ok {
					return r, false
				}
				r.branch, r.via = br, [2]int{pos, pos + e + 2} // the whole line
				if rest != nil {
					start := pos + colon + 1 + len(line[colon+1:]) - len(bytes.TrimLeft(line[colon+1:], " \t"))
					r.via = [2]int{start, pos + e - len(rest)}
				}
			}
		case isHeader(name, "CSeq", ""):
			cseqs++
			m, ok := cseqMethod(value)
			if !ok {
				return r, false
			}
			r.method = m
		case isHeader(name, "Content-Length", "l"):
			lengths++
			if length = atoiSmall(value); length < 0 {
				return r, false
			}
		case isHeader(name, "From", "f"):
			froms++
		case isHeader(name, "To", "t"):
			tos++
		case isHeader(name, "Call-ID", "i"):
			callIDs++
		}
		pos += e + 2
	}
	if vias == 0 || cseqs != 1 || froms != 1 || tos != 1 || callIDs != 1 || lengths != 1 || length != len(b)-pos {
		return r, false
	}
	return r, true
}

// isHeader reports whether name is the header long (any case) or its compact form.
func isHeader(name []byte, long, compact string) bool {
	return bytes.EqualFold(name, []byte(long)) || (compact != "" && len(name) == 1 && bytes.EqualFold(name, []byte(compact)))
}

// viaBranch is the branch parameter of one via-parm written without optional whitespace
// ("SIP/2.0/UDP host:port;branch=z9hG4bK…;rport"). ok is false for one holding a comma, a
// quote, whitespace after the protocol's, a malformed sent-by, no or an empty branch, or
// a branch parameter twice.
func viaBranch(v []byte) (branch []byte, ok bool) {
	sp := bytes.IndexByte(v, ' ')
	if sp < 0 || len(v) < 8 || string(v[:8]) != "SIP/2.0/" || !isToken(v[8:sp]) || bytes.ContainsAny(v[sp+1:], " \t,\"") {
		return nil, false
	}
	semi := bytes.IndexByte(v, ';')
	if semi < 0 || !isSentBy(v[sp+1:semi]) {
		return nil, false
	}
	found := false
	for p := range bytes.SplitSeq(v[semi+1:], []byte(";")) {
		name, val, _ := bytes.Cut(p, []byte("="))
		if string(name) != "branch" {
			continue
		}
		if found {
			return nil, false
		}
		found, branch = true, val
	}
	if !found || len(branch) == 0 {
		return nil, false
	}
	if !isToken(branch) {
		return nil, false
	}
	return branch, true
}

// isSentBy accepts host[:port] with an IPv4 address, a host name or a bracketed IPv6
// address as host.
func isSentBy(b []byte) bool {
	host, port, hasPort := b, []byte(nil), false
	hostChars := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-"
	if len(b) > 0 && b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || (end+1 < len(b) && b[end+1] != ':') {
			return false
		}
		host, hostChars = b[1:end], "0123456789abcdefABCDEF:."
		if end+1 < len(b) {
			port, hasPort = b[end+2:], true
		}
	} else if i := bytes.IndexByte(b, ':'); i >= 0 {
		host, port, hasPort = b[:i], b[i+1:], true
	}
	if len(host) == 0 || len(bytes.Trim(host, hostChars)) > 0 {
		return false
	}
	if n := atoiSmall(port); hasPort && (n < 1 || n > 65535) {
		return false
	}
	return true
}

// cseqMethod is the method of a CSeq value ("1 INVITE").
func cseqMethod(v []byte) ([]byte, bool) {
	i := 0
	for i < len(v) && isDigit(v[i]) {
		i++
	}
	if i == 0 || i > 10 || i == len(v) || (v[i] != ' ' && v[i] != '\t') {
		return nil, false
	}
	m := bytes.TrimLeft(v[i:], " \t")
	if !isToken(m) {
		return nil, false
	}
	return m, true
}

// atoiSmall parses a decimal of at most 7 digits; -1 for anything else.
func atoiSmall(v []byte) int {
	if len(v) == 0 || len(v) > 7 {
		return -1
	}
	n := 0
	for _, c := range v {
		if !isDigit(c) {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
