package acl

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidPrefix is wrapped by every address/CIDR validation error, so callers can map
// them all to one answer (422) with errors.Is.
var ErrInvalidPrefix = errors.New("acl: invalid address")

// Problem is one rejected value: which field held it, the value as given and why it was
// rejected. Field is "" for a lone value (see [ParsePrefix]).
type Problem struct{ Field, Value, Reason string }

// String renders the problem as `field: "value": reason`, leaving out what is empty.
func (p Problem) String() string {
	var b strings.Builder
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	if p.Value != "" || p.Field == "" {
		b.WriteString(strconv.Quote(p.Value))
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// ValidationError lists every bad value of one list (field, value, reason) at once, so an
// API client can fix all of them in one round trip. It always wraps [ErrInvalidPrefix].
type ValidationError struct{ Problems []Problem }

// Error renders one problem as-is and several as a count followed by all of them.
func (e *ValidationError) Error() string {
	switch len(e.Problems) {
	case 0:
		return ErrInvalidPrefix.Error()
	case 1:
		return e.Problems[0].String()
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(len(e.Problems)))
	b.WriteString(" invalid values: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalidPrefix) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidPrefix }

func invalid(value, reason string) error {
	return &ValidationError{Problems: []Problem{{Value: value, Reason: reason}}}
}

// ParsePrefix validates and canonicalises one ip_address value: an IPv4 or IPv6 address or
// CIDR block, surrounding spaces ignored ("192.0.2.1", "10.0.0.0/8", "2001:db8::/32").
// IPv4-mapped IPv6 is unmapped ("::ffff:1.2.3.4" → 1.2.3.4/32, "::ffff:1.2.3.0/120" →
// 1.2.3.0/24), because sources are unmapped before every lookup. It rejects zone ids,
// /0 (an ACL never means "allow all"), out-of-range lengths and host bits set; the last
// error names the canonical form ("did you mean 10.0.0.0/8"). Errors are
// *[ValidationError] with one [Problem] and wrap [ErrInvalidPrefix].
func ParsePrefix(s string) (netip.Prefix, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, invalid(in, "empty address")
	}
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Prefix{}, invalid(in, "zone ids are not allowed")
	}
	addrPart, bitsPart, hasBits := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, invalid(in, "not an IPv4 or IPv6 address or CIDR block")
	}
	bits := addr.BitLen()
	if hasBits {
		bits, err = parseBits(bitsPart)
		if err != nil || bits > addr.BitLen() {
			return netip.Prefix{}, invalid(in, fmt.Sprintf("prefix length must be 1..%d", addr.BitLen()))
		}
		if bits == 0 {
			return netip.Prefix{}, invalid(in, "/0 would match every address")
		}
	}
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
		if bits == 0 {
			return netip.Prefix{}, invalid(in, "/96 of IPv4-mapped IPv6 is 0.0.0.0/0 and would match every IPv4 address")
		}
	}
	p := netip.PrefixFrom(addr, bits)
	if m := p.Masked(); m != p {
		return netip.Prefix{}, invalid(in, "host bits set, did you mean "+CanonicalString(m))
	}
	return p, nil
}

// parseBits parses a decimal prefix length without sign or leading zeros.
func parseBits(s string) (int, error) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, strconv.ErrSyntax
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// CanonicalString is the stored form of p: a bare address for /32 and /128, else CIDR.
// IPv4-mapped IPv6 prefixes are written in their IPv4 form. ParsePrefix(CanonicalString(p))
// returns p for every prefix ParsePrefix accepts.
func CanonicalString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	addr, bits := p.Addr().WithZone(""), p.Bits()
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	if bits == addr.BitLen() {
		return addr.String()
	}
	return netip.PrefixFrom(addr, bits).String()
}

// CanonicalAddresses validates a whole ip_addresses list (non-empty, every value valid,
// no duplicates after canonicalisation) and returns the canonical strings in input order,
// plus one warning per entry that lies inside another ("10.1.0.0/16 is inside 10.0.0.0/8").
// field names the list in problems ("ip_addresses" → "ip_addresses[3]"). All problems are
// reported at once in a *[ValidationError]; canon is nil then.
func CanonicalAddresses(field string, in []string) (canon []string, warnings []string, err error) {
	if len(in) == 0 {
		return nil, nil, &ValidationError{Problems: []Problem{{Field: field, Reason: "must not be empty"}}}
	}
	var problems []Problem
	prefixes := make([]netip.Prefix, len(in))
	first := make(map[netip.Prefix]int, len(in))
	for i, s := range in {
		f := field + "[" + strconv.Itoa(i) + "]"
		p, err := ParsePrefix(s)
		if err != nil {
			problems = append(problems, withField(err, f))
			continue
		}
		if j, dup := first[p]; dup {
			problems = append(problems, Problem{Field: f, Value: s,
				Reason: fmt.Sprintf("duplicate of %s[%d] (%s)", field, j, CanonicalString(p))})
			continue
		}
		first[p] = i
		prefixes[i] = p
	}
	if problems != nil {
		return nil, nil, &ValidationError{Problems: problems}
	}
	canon = make([]string, len(in))
	for i, p := range prefixes {
		canon[i] = CanonicalString(p)
	}
	return canon, overlapWarnings(prefixes), nil
}

// withField turns a ParsePrefix error into a Problem of the named field.
func withField(err error, field string) Problem {
	var ve *ValidationError
	if errors.As(err, &ve) && len(ve.Problems) == 1 {
		p := ve.Problems[0]
		p.Field = field
		return p
	}
	return Problem{Field: field, Reason: err.Error()}
}

// overlapWarnings reports, in input order, every prefix that lies inside another one of
// the list, naming the smallest one it lies in. The prefixes must be valid and distinct.
func overlapWarnings(prefixes []netip.Prefix) []string {
	order := make([]int, len(prefixes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return comparePrefix(prefixes[a], prefixes[b]) })
	type warning struct {
		at  int
		msg string
	}
	var found []warning
	var stack []netip.Prefix
	for _, i := range order {
		p := prefixes[i]
		for len(stack) > 0 && !covers(stack[len(stack)-1], p) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			found = append(found, warning{i, CanonicalString(p) + " is inside " + CanonicalString(stack[len(stack)-1])})
		}
		stack = append(stack, p)
	}
	if found == nil {
		return nil
	}
	slices.SortFunc(found, func(a, b warning) int { return cmp.Compare(a.at, b.at) })
	out := make([]string, len(found))
	for i, w := range found {
		out[i] = w.msg
	}
	return out
}

// comparePrefix orders prefixes IPv4 first, then by address, then shorter first, so that
// every prefix comes after all prefixes that cover it.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// covers reports whether outer contains every address of inner.
func covers(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// ValidateACL checks a stored ACL the way [Compile] does: a uuid, and entries with unique
// non-empty ids and unique canonical addresses. An ACL with no entries is valid and
// matches nothing (entries can be deleted one by one). Warnings report nested entries.
// The error is a *[ValidationError] naming every bad field ("entries[2].ip_address").
func ValidateACL(a *IPACL) (warnings []string, err error) {
	if a == nil {
		return nil, &ValidationError{Problems: []Problem{{Field: "ipacl", Reason: "missing"}}}
	}
	var problems []Problem
	if a.UUID == "" {
		problems = append(problems, Problem{Field: "ipacl_uuid", Reason: "must not be empty"})
	}
	prefixes := make([]netip.Prefix, 0, len(a.Entries))
	ids := make(map[string]int, len(a.Entries))
	addrs := make(map[netip.Prefix]int, len(a.Entries))
	for i, e := range a.Entries {
		f := "entries[" + strconv.Itoa(i) + "]"
		switch j, dup := ids[e.ID]; {
		case e.ID == "":
			problems = append(problems, Problem{Field: f + ".id", Reason: "must not be empty"})
		case dup:
			problems = append(problems, Problem{Field: f + ".id", Value: e.ID,
				Reason: fmt.Sprintf("duplicate of entries[%d].id", j)})
		default:
			ids[e.ID] = i
		}
		p, err := ParsePrefix(e.IPAddress)
		if err != nil {
			problems = append(problems, withField(err, f+".ip_address"))
			continue
		}
		if c := CanonicalString(p); c != e.IPAddress {
			problems = append(problems, Problem{Field: f + ".ip_address", Value: e.IPAddress,
				Reason: "not canonical, want " + c})
			continue
		}
		if j, dup := addrs[p]; dup {
			problems = append(problems, Problem{Field: f + ".ip_address", Value: e.IPAddress,
				Reason: fmt.Sprintf("duplicate of entries[%d].ip_address", j)})
			continue
		}
		addrs[p] = i
		prefixes = append(prefixes, p)
	}
	if problems != nil {
		return nil, &ValidationError{Problems: problems}
	}
	return overlapWarnings(prefixes), nil
}
