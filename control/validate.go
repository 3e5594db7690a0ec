package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sipedge/sipedge/acl"
)

// Limits of free-text and list fields.
const (
	maxNameLen        = 128
	maxDescriptionLen = 255
	maxEntries        = 10000 // entries of one IP ACL
	maxLimitValue     = 1_000_000
)

// text validates a free-text field (name, description): valid UTF-8, at most max
// characters, no control characters. Surrounding spaces are trimmed.
func text(field, v string, max int, required bool) (string, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "" && required:
		return "", invalid("%s is required and must not be empty", field)
	case !utf8.ValidString(v):
		return "", invalid("%s: not valid UTF-8", field)
	case utf8.RuneCountInString(v) > max:
		return "", invalid("%s: longer than %d characters", field, max)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return "", invalid("%s %q: control characters are not allowed", field, v)
	}
	return v, nil
}

// requiredText is text for a field that must be present and non-empty.
func requiredText(field string, v *string, max int) (string, error) {
	if v == nil {
		return "", invalid("%s is required", field)
	}
	return text(field, *v, max, true)
}

// prefix validates one ip_address value and returns its canonical form. Errors are
// *acl.ValidationError naming field and value.
func prefix(field, v string) (string, error) {
	p, err := acl.ParsePrefix(v)
	if err != nil {
		var ve *acl.ValidationError
		if errors.As(err, &ve) {
			for i := range ve.Problems {
				ve.Problems[i].Field = field
			}
		}
		return "", err
	}
	return acl.CanonicalString(p), nil
}

// validDNSName checks a lowercase DNS host name: labels of 1..63 letters, digits and
// hyphens, not starting or ending with a hyphen, 253 characters at most, and a last
// label that is not all digits (so it is never an IPv4 address).
func validDNSName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("every label must be 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("a label must not start or end with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("character %q not allowed: use a-z, 0-9, '-' and '.'", c)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("the last label must not be all digits")
	}
	return nil
}

// domain validates a trunk_domain value and returns it lowercased.
func domain(v string) (string, error) {
	d := strings.ToLower(strings.TrimSpace(v))
	if err := validDNSName(d); err != nil {
		return "", invalid("trunk_domain %q: %s", v, err)
	}
	return d, nil
}

// upstreamURI validates upstream_uri: sip: or sips:, then host[:port], where host is a
// DNS name, an IPv4 address or a bracketed IPv6 address. It returns the URI with scheme
// and host lowercased.
func upstreamURI(v string) (string, error) {
	bad := func(reason string) error { return invalid("upstream_uri %q: %s", v, reason) }
	if strings.ContainsAny(v, "\r\n\x00 \t") {
		return "", bad("must not contain spaces or control characters")
	}
	scheme, rest, ok := strings.Cut(v, ":")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "sip" && scheme != "sips") {
		return "", bad("must start with sip: or sips:")
	}
	host, port, hasPort := rest, "", false
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", bad("unterminated IPv6 literal")
		}
		a, err := netip.ParseAddr(rest[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", bad("not an IPv6 address in brackets")
		}
		host, rest = "["+a.String()+"]", rest[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", bad("want sip:host[:port]")
			}
			port, hasPort = rest[1:], true
		}
	} else {
		if h, p, ok := strings.Cut(rest, ":"); ok {
			host, port, hasPort = h, p, true
		}
		host = strings.ToLower(host)
		if a, err := netip.ParseAddr(host); err == nil {
			if !a.Is4() {
				return "", bad("IPv6 addresses must be in brackets")
			}
		} else if err := validDNSName(host); err != nil {
			return "", bad("host " + err.Error())
		}
	}
	out := scheme + ":" + host
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
			return "", bad("port must be 1 to 65535")
		}
		out += ":" + port
	}
	return out, nil
}

// digestAlgorithms validates digest_algorithms: a subset of MD5 and SHA-256 (any case) in
// order of preference, without duplicates. An empty list means the deployment default.
func digestAlgorithms(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(in))
	for i, a := range in {
		var canon string
		switch strings.ToUpper(strings.TrimSpace(a)) {
		case acl.DigestMD5:
			canon = acl.DigestMD5
		case acl.DigestSHA256:
			canon = acl.DigestSHA256
		default:
			return nil, invalid("digest_algorithms[%d] %q: must be %q or %q", i, a, acl.DigestMD5, acl.DigestSHA256)
		}
		for _, prev := range out {
			if prev == canon {
				return nil, invalid("digest_algorithms[%d] %q: duplicate", i, a)
			}
		}
		out = append(out, canon)
	}
	return out, nil
}

// count validates a non-negative limit such as max_cps (0 = unlimited).
func count(field string, v int) (int, error) {
	if v < 0 || v > maxLimitValue {
		return 0, invalid("%s %d: must be from 0 (unlimited) to %d", field, v, maxLimitValue)
	}
	return v, nil
}

// username validates a credential username: 1..64 of A-Z a-z 0-9 . _ - + @.
func username(v string) (string, error) {
	if v == "" || len(v) > 64 {
		return "", invalid("username %q: must be 1 to 64 characters", v)
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-+@", c)) {
			return "", invalid("username %q: character %q not allowed: use A-Z, a-z, 0-9 and . _ - + @", v, c)
		}
	}
	return v, nil
}

// Password length bounds, in characters.
const (
	minPasswordLen = 8
	maxPasswordLen = 128
)

// password validates a password without ever echoing it.
func password(v string) error {
	n := utf8.RuneCountInString(v)
	switch {
	case !utf8.ValidString(v):
		return invalid("password: not valid UTF-8")
	case n < minPasswordLen || n > maxPasswordLen:
		return invalid("password: must be %d to %d characters", minPasswordLen, maxPasswordLen)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return invalid("password: control characters are not allowed")
	}
	return nil
}
