package sip

import (
	"errors"
	"strings"
)

// The Digest header grammar (RFC 7616 §3.4, RFC 3261 §25.1 auth-params): the
// Proxy-Authorization parser and the Proxy-Authenticate value the edge writes.

// digestCredentials is a parsed Proxy-Authorization (or Authorization) Digest value. NC is
// kept as sent, because the response hash covers its exact spelling.
type digestCredentials struct {
	Username, Realm, Nonce, URI, Response string
	Algorithm, Cnonce, Opaque, QOP, NC    string
	Userhash                              string
}

var (
	errNotDigest      = errors.New("digest: not a Digest header")
	errDigestSyntax   = errors.New("digest: syntax error")
	errDigestDupParam = errors.New("digest: repeated parameter")
)

const maxDigestParams = 32

// parseDigestCredentials parses `Digest k=v, k="quoted", …` (RFC 7616 §3.4 / RFC 7235
// auth-param list). Parameter names are case-insensitive; a repeated known parameter, an
// unterminated quoted string or a control character is an error. Unknown parameters are
// skipped.
func parseDigestCredentials(s string) (digestCredentials, error) {
	var c digestCredentials
	s = strings.TrimLeft(s, " \t")
	if len(s) < 7 || !strings.EqualFold(s[:6], "digest") || (s[6] != ' ' && s[6] != '\t') {
		return c, errNotDigest
	}
	s = s[7:]
	var seen uint16
	n := 0
	i := 0
	for {
		i = skipLWS(s, i)
		// #rule: empty list elements ("a=1,,b=2") are allowed.
		for i < len(s) && s[i] == ',' {
			i = skipLWS(s, i+1)
		}
		if i == len(s) {
			break
		}
		if n > 0 && !afterComma(s, i) {
			return c, errDigestSyntax
		}
		if n++; n > maxDigestParams {
			return c, errDigestSyntax
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		if i == start {
			return c, errDigestSyntax
		}
		key := strings.ToLower(s[start:i])
		i = skipLWS(s, i)
		if i == len(s) || s[i] != '=' {
			return c, errDigestSyntax
		}
		i = skipLWS(s, i+1)
		var val string
		var err error
		if i < len(s) && s[i] == '"' {
			val, i, err = readQuoted(s, i)
			if err != nil {
				return c, err
			}
		} else {
			vs := i
			for i < len(s) && isTokenChar(s[i]) {
				i++
			}
			if i == vs {
				return c, errDigestSyntax
			}
			val = s[vs:i]
		}
		var dst *string
		var bit uint16
		switch key {
		case "username":
			dst, bit = &c.Username, 1<<0
		case "realm":
			dst, bit = &c.Realm, 1<<1
		case "nonce":
			dst, bit = &c.Nonce, 1<<2
		case "uri":
			dst, bit = &c.URI, 1<<3
		case "response":
			dst, bit = &c.Response, 1<<4
		case "algorithm":
			dst, bit = &c.Algorithm, 1<<5
		case "cnonce":
			dst, bit = &c.Cnonce, 1<<6
		case "opaque":
			dst, bit = &c.Opaque, 1<<7
		case "qop":
			dst, bit = &c.QOP, 1<<8
		case "nc":
			dst, bit = &c.NC, 1<<9
		case "userhash":
			dst, bit = &c.Userhash, 1<<10
		}
		if dst != nil {
			if seen&bit != 0 {
				return c, errDigestDupParam
			}
			seen |= bit
			*dst = val
		}
	}
	return c, nil
}

// afterComma reports whether the last non-LWS byte before s[i] is a comma.
func afterComma(s string, i int) bool {
	for j := i - 1; j >= 0; j-- {
		switch s[j] {
		case ' ', '\t':
			continue
		case ',':
			return true
		default:
			return false
		}
	}
	return false
}

func skipLWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// readQuoted reads the quoted-string starting at s[i] == '"' and returns its unescaped
// content and the index after the closing quote.
func readQuoted(s string, i int) (string, int, error) {
	i++ // opening quote
	var b strings.Builder
	plain := true // no escapes seen: return a substring, no allocation
	start := i
	for i < len(s) {
		ch := s[i]
		switch {
		case ch == '"':
			if plain {
				return s[start:i], i + 1, nil
			}
			return b.String(), i + 1, nil
		case ch == '\\':
			// quoted-pair; an escaped control character is refused like a raw one, so
			// values never hold control characters.
			if i+1 >= len(s) || isCtl(s[i+1]) {
				return "", 0, errDigestSyntax
			}
			if plain {
				plain = false
				b.WriteString(s[start:i])
			}
			b.WriteByte(s[i+1])
			i += 2
			continue
		case isCtl(ch):
			return "", 0, errDigestSyntax
		}
		if !plain {
			b.WriteByte(ch)
		}
		i++
	}
	return "", 0, errDigestSyntax
}

// isCtl reports control characters other than horizontal tab.
func isCtl(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// isTokenChar is RFC 3261 token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

// isToken reports whether s is a non-empty RFC 3261 token.
func isToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// String formats c as a Digest header value that parseDigestCredentials reads back to c.
// Empty fields are left out.
func (c digestCredentials) String() string {
	var b strings.Builder
	b.WriteString("Digest ")
	first := true
	put := func(k, v string, quote bool) {
		if v == "" {
			return
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		if quote || !isToken(v) {
			writeQuoted(&b, v)
		} else {
			b.WriteString(v)
		}
	}
	put("username", c.Username, true)
	put("realm", c.Realm, true)
	put("nonce", c.Nonce, true)
	put("uri", c.URI, true)
	put("response", c.Response, true)
	put("algorithm", c.Algorithm, false)
	put("cnonce", c.Cnonce, true)
	put("opaque", c.Opaque, true)
	put("qop", c.QOP, false)
	put("nc", c.NC, false)
	put("userhash", c.Userhash, false)
	return b.String()
}

func writeQuoted(b *strings.Builder, v string) {
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
}

// challengeValue is one Proxy-Authenticate value. realm and nonce never need escaping
// (the realm is validated, the nonce is base64url).
func challengeValue(realm, nonce, alg string, stale bool) string {
	var b strings.Builder
	b.Grow(96 + len(realm) + len(nonce))
	b.WriteString(`Digest realm="`)
	b.WriteString(realm)
	b.WriteString(`", nonce="`)
	b.WriteString(nonce)
	b.WriteString(`", algorithm=`)
	b.WriteString(alg)
	b.WriteString(`, qop="auth"`)
	if stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}
