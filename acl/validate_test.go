package acl

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// parsePrefixTests is shared by TestParsePrefix and BenchmarkParsePrefix.
var parsePrefixTests = []struct {
	name    string
	in      string
	want    netip.Prefix // valid when the input is accepted
	canon   string
	wantErr string // substring of the error when rejected
}{
	{name: "ipv4 address", in: "192.0.2.1", want: pp("192.0.2.1/32"), canon: "192.0.2.1"},
	{name: "ipv4 /32", in: "192.0.2.1/32", want: pp("192.0.2.1/32"), canon: "192.0.2.1"},
	{name: "ipv4 /24", in: "192.0.2.0/24", want: pp("192.0.2.0/24"), canon: "192.0.2.0/24"},
	{name: "ipv4 /8", in: "10.0.0.0/8", want: pp("10.0.0.0/8"), canon: "10.0.0.0/8"},
	{name: "ipv4 /1", in: "128.0.0.0/1", want: pp("128.0.0.0/1"), canon: "128.0.0.0/1"},
	{name: "ipv4 /1 low half", in: "0.0.0.0/1", want: pp("0.0.0.0/1"), canon: "0.0.0.0/1"},
	{name: "ipv4 /0", in: "0.0.0.0/0", wantErr: "/0 would match every address"},
	{name: "ipv4 /33", in: "192.0.2.1/33", wantErr: "prefix length must be 1..32"},
	{name: "ipv4 host bits", in: "10.0.0.5/8", wantErr: `"10.0.0.5/8": host bits set, did you mean 10.0.0.0/8`},
	{name: "ipv4 host bits /31", in: "192.0.2.1/31", wantErr: "did you mean 192.0.2.0/31"},
	{name: "ipv4 leading zero octet", in: "192.0.2.01", wantErr: "not an IPv4 or IPv6 address"},
	{name: "ipv4 leading zero length", in: "10.0.0.0/08", wantErr: "prefix length must be"},
	{name: "ipv4 signed length", in: "10.0.0.0/+8", wantErr: "prefix length must be"},
	{name: "ipv4 empty length", in: "10.0.0.0/", wantErr: "prefix length must be"},
	{name: "ipv4 two slashes", in: "10.0.0.0/8/8", wantErr: "prefix length must be"},
	{name: "ipv4 with port", in: "192.0.2.1:5060", wantErr: "not an IPv4 or IPv6 address"},
	{name: "ipv4 three octets", in: "192.0.2", wantErr: "not an IPv4 or IPv6 address"},
	{name: "ipv6 address", in: "2001:db8::1", want: pp("2001:db8::1/128"), canon: "2001:db8::1"},
	{name: "ipv6 /128", in: "2001:db8::1/128", want: pp("2001:db8::1/128"), canon: "2001:db8::1"},
	{name: "ipv6 /32", in: "2001:db8::/32", want: pp("2001:db8::/32"), canon: "2001:db8::/32"},
	{name: "ipv6 /1", in: "8000::/1", want: pp("8000::/1"), canon: "8000::/1"},
	{name: "ipv6 long form", in: "2001:0DB8:0000::0001", want: pp("2001:db8::1/128"), canon: "2001:db8::1"},
	{name: "ipv6 /0", in: "::/0", wantErr: "/0 would match every address"},
	{name: "ipv6 /129", in: "2001:db8::/129", wantErr: "prefix length must be 1..128"},
	{name: "ipv6 host bits", in: "2001:db8::1/32", wantErr: "host bits set, did you mean 2001:db8::/32"},
	{name: "ipv6 zone", in: "fe80::1%eth0", wantErr: "zone ids are not allowed"},
	{name: "ipv6 zone cidr", in: "fe80::%eth0/64", wantErr: "zone ids are not allowed"},
	{name: "ipv6 brackets", in: "[2001:db8::1]", wantErr: "not an IPv4 or IPv6 address"},
	{name: "mapped address", in: "::ffff:1.2.3.4", want: pp("1.2.3.4/32"), canon: "1.2.3.4"},
	{name: "mapped hex", in: "::ffff:102:304", want: pp("1.2.3.4/32"), canon: "1.2.3.4"},
	{name: "mapped /128", in: "::ffff:1.2.3.4/128", want: pp("1.2.3.4/32"), canon: "1.2.3.4"},
	{name: "mapped /120", in: "::ffff:1.2.3.0/120", want: pp("1.2.3.0/24"), canon: "1.2.3.0/24"},
	{name: "mapped /97", in: "::ffff:128.0.0.0/97", want: pp("128.0.0.0/1"), canon: "128.0.0.0/1"},
	{name: "mapped /96", in: "::ffff:0.0.0.0/96", wantErr: "would match every IPv4 address"},
	{name: "mapped host bits", in: "::ffff:1.2.3.5/120", wantErr: "did you mean 1.2.3.0/24"},
	{name: "mapped shorter than /96", in: "::ffff:0.0.0.0/80", wantErr: "did you mean ::/80"},
	{name: "spaces trimmed", in: "  192.0.2.0/24\t\n", want: pp("192.0.2.0/24"), canon: "192.0.2.0/24"},
	{name: "inner space", in: "192.0.2.0 /24", wantErr: "not an IPv4 or IPv6 address"},
	{name: "empty", in: "", wantErr: "empty address"},
	{name: "only spaces", in: "   ", wantErr: "empty address"},
	{name: "garbage", in: "example.org", wantErr: "not an IPv4 or IPv6 address"},
	{name: "garbage cidr", in: "example.org/24", wantErr: "not an IPv4 or IPv6 address"},
	{name: "wildcard", in: "*", wantErr: "not an IPv4 or IPv6 address"},
	{name: "range", in: "192.0.2.1-192.0.2.9", wantErr: "not an IPv4 or IPv6 address"},
}

func TestParsePrefix(t *testing.T) {
	for _, tt := range parsePrefixTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefix(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePrefix(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidPrefix) {
					t.Errorf("error %v does not wrap ErrInvalidPrefix", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				var ve *ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Value != tt.in {
					t.Errorf("error %#v: want one Problem naming value %q", err, tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrefix(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParsePrefix(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if c := CanonicalString(got); c != tt.canon {
				t.Errorf("CanonicalString(%v) = %q, want %q", got, c, tt.canon)
			}
			if back, err := ParsePrefix(tt.canon); err != nil || back != got {
				t.Errorf("ParsePrefix(%q) = %v, %v; want round trip to %v", tt.canon, back, err, got)
			}
		})
	}
}

func BenchmarkParsePrefix(b *testing.B) {
	for _, tt := range parsePrefixTests[:4] {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ParsePrefix(tt.in)
			}
		})
	}
}

func TestCanonicalString(t *testing.T) {
	tests := []struct {
		name string
		in   netip.Prefix
		want string
	}{
		{"ipv4 /32 is bare", pp("192.0.2.7/32"), "192.0.2.7"},
		{"ipv4 cidr", pp("192.0.2.0/25"), "192.0.2.0/25"},
		{"ipv6 /128 is bare", pp("2001:db8::7/128"), "2001:db8::7"},
		{"ipv6 cidr", pp("2001:db8::/48"), "2001:db8::/48"},
		{"mapped is unmapped", pp("::ffff:192.0.2.0/120"), "192.0.2.0/24"},
		{"invalid", netip.Prefix{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CanonicalString(tt.in); got != tt.want {
				t.Errorf("CanonicalString(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCanonicalAddresses(t *testing.T) {
	tests := []struct {
		name     string
		in       []string
		want     []string
		warnings []string
		problems []Problem // nil = accepted
	}{
		{
			name: "mixed families canonicalised in order",
			in:   []string{" 192.0.2.1 ", "2001:DB8::/32", "::ffff:198.51.100.0/120", "192.0.2.128/25"},
			want: []string{"192.0.2.1", "2001:db8::/32", "198.51.100.0/24", "192.0.2.128/25"},
		},
		{
			name:     "overlap warnings name the smallest container, in input order",
			in:       []string{"10.1.2.3", "10.0.0.0/8", "10.1.0.0/16", "2001:db8:1::/48", "2001:db8::/32", "192.0.2.1"},
			want:     []string{"10.1.2.3", "10.0.0.0/8", "10.1.0.0/16", "2001:db8:1::/48", "2001:db8::/32", "192.0.2.1"},
			warnings: []string{"10.1.2.3 is inside 10.1.0.0/16", "10.1.0.0/16 is inside 10.0.0.0/8", "2001:db8:1::/48 is inside 2001:db8::/32"},
		},
		{
			name:     "siblings do not overlap",
			in:       []string{"10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16"},
			want:     []string{"10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16"},
			warnings: []string{"10.0.0.0/16 is inside 10.0.0.0/9"},
		},
		{
			name:     "empty list",
			in:       nil,
			problems: []Problem{{Field: "ip_addresses", Reason: "must not be empty"}},
		},
		{
			name: "duplicates after canonicalisation",
			in:   []string{"192.0.2.1", "192.0.2.1/32", "::ffff:192.0.2.1", "2001:db8::1", "2001:DB8::1"},
			problems: []Problem{
				{Field: "ip_addresses[1]", Value: "192.0.2.1/32", Reason: "duplicate of ip_addresses[0] (192.0.2.1)"},
				{Field: "ip_addresses[2]", Value: "::ffff:192.0.2.1", Reason: "duplicate of ip_addresses[0] (192.0.2.1)"},
				{Field: "ip_addresses[4]", Value: "2001:DB8::1", Reason: "duplicate of ip_addresses[3] (2001:db8::1)"},
			},
		},
		{
			name: "every problem at once",
			in:   []string{"192.0.2.1", "garbage", "10.0.0.5/8", "0.0.0.0/0", "fe80::1%eth0", "", "192.0.2.1"},
			problems: []Problem{
				{Field: "ip_addresses[1]", Value: "garbage", Reason: "not an IPv4 or IPv6 address or CIDR block"},
				{Field: "ip_addresses[2]", Value: "10.0.0.5/8", Reason: "host bits set, did you mean 10.0.0.0/8"},
				{Field: "ip_addresses[3]", Value: "0.0.0.0/0", Reason: "/0 would match every address"},
				{Field: "ip_addresses[4]", Value: "fe80::1%eth0", Reason: "zone ids are not allowed"},
				{Field: "ip_addresses[5]", Value: "", Reason: "empty address"},
				{Field: "ip_addresses[6]", Value: "192.0.2.1", Reason: "duplicate of ip_addresses[0] (192.0.2.1)"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := CanonicalAddresses("ip_addresses", tt.in)
			if tt.problems != nil {
				var ve *ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("err = %v, want *ValidationError", err)
				}
				if !errors.Is(err, ErrInvalidPrefix) {
					t.Errorf("error does not wrap ErrInvalidPrefix")
				}
				if !slices.Equal(ve.Problems, tt.problems) {
					t.Errorf("problems:\n got %q\nwant %q", ve.Problems, tt.problems)
				}
				if got != nil || warnings != nil {
					t.Errorf("got %q, %q with an error, want nil", got, warnings)
				}
				return
			}
			if err != nil {
				t.Fatalf("CanonicalAddresses: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("canon = %q, want %q", got, tt.want)
			}
			if !slices.Equal(warnings, tt.warnings) {
				t.Errorf("warnings = %q, want %q", warnings, tt.warnings)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, _, err := CanonicalAddresses("ip_addresses", []string{"10.0.0.5/8", "192.0.2.1", "nope"})
	const want = `2 invalid values: ip_addresses[0]: "10.0.0.5/8": host bits set, did you mean 10.0.0.0/8; ` +
		`ip_addresses[2]: "nope": not an IPv4 or IPv6 address or CIDR block`
	if err == nil || err.Error() != want {
		t.Errorf("Error() =\n%v\nwant\n%s", err, want)
	}
	_, _, err = CanonicalAddresses("ip_addresses", []string{"10.0.0.5/8"})
	if want := `ip_addresses[0]: "10.0.0.5/8": host bits set, did you mean 10.0.0.0/8`; err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %s", err, want)
	}
	_, _, err = CanonicalAddresses("ip_addresses", nil)
	if want := "ip_addresses: must not be empty"; err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %s", err, want)
	}
	_, err = ParsePrefix("10.0.0.5/8")
	if want := `"10.0.0.5/8": host bits set, did you mean 10.0.0.0/8`; err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %s", err, want)
	}
}

func TestValidateACL(t *testing.T) {
	withEntries := func(entries ...Entry) *IPACL {
		a := mkACL("acl-1")
		a.Entries = entries
		return &a
	}
	e := func(id, addr string) Entry { return Entry{ID: id, IPAddress: addr, Enabled: true} }
	tests := []struct {
		name     string
		acl      *IPACL
		warnings []string
		problems []Problem
	}{
		{name: "valid", acl: withEntries(e("a", "192.0.2.0/24"), e("b", "2001:db8::1"))},
		{name: "no entries is valid", acl: withEntries()},
		{name: "disabled entries still validated", acl: withEntries(Entry{ID: "a", IPAddress: "10.0.0.5/8"}),
			problems: []Problem{{Field: "entries[0].ip_address", Value: "10.0.0.5/8", Reason: "host bits set, did you mean 10.0.0.0/8"}}},
		{name: "nested warns", acl: withEntries(e("a", "10.0.0.0/8"), e("b", "10.9.9.9")),
			warnings: []string{"10.9.9.9 is inside 10.0.0.0/8"}},
		{name: "nil", acl: nil, problems: []Problem{{Field: "ipacl", Reason: "missing"}}},
		{name: "no uuid", acl: &IPACL{}, problems: []Problem{{Field: "ipacl_uuid", Reason: "must not be empty"}}},
		{
			name: "every problem at once",
			acl: withEntries(
				e("a", "192.0.2.1"),
				e("a", "192.0.2.2"),
				e("", "192.0.2.3"),
				e("d", "192.0.2.1/32"),
				e("e", " 192.0.2.5"),
				e("f", "::ffff:192.0.2.6"),
				e("g", "192.0.2.1"),
				e("h", "0.0.0.0/0"),
			),
			problems: []Problem{
				{Field: "entries[1].id", Value: "a", Reason: "duplicate of entries[0].id"},
				{Field: "entries[2].id", Reason: "must not be empty"},
				{Field: "entries[3].ip_address", Value: "192.0.2.1/32", Reason: "not canonical, want 192.0.2.1"},
				{Field: "entries[4].ip_address", Value: " 192.0.2.5", Reason: "not canonical, want 192.0.2.5"},
				{Field: "entries[5].ip_address", Value: "::ffff:192.0.2.6", Reason: "not canonical, want 192.0.2.6"},
				{Field: "entries[6].ip_address", Value: "192.0.2.1", Reason: "duplicate of entries[0].ip_address"},
				{Field: "entries[7].ip_address", Value: "0.0.0.0/0", Reason: "/0 would match every address"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warnings, err := ValidateACL(tt.acl)
			if tt.problems != nil {
				var ve *ValidationError
				if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidPrefix) {
					t.Fatalf("err = %v, want *ValidationError wrapping ErrInvalidPrefix", err)
				}
				if !slices.Equal(ve.Problems, tt.problems) {
					t.Errorf("problems:\n got %q\nwant %q", ve.Problems, tt.problems)
				}
				return
			}
			if err != nil {
				t.Fatalf("ValidateACL: %v", err)
			}
			if !slices.Equal(warnings, tt.warnings) {
				t.Errorf("warnings = %q, want %q", warnings, tt.warnings)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	want := []string{"none", "allow_ip", "allow_digest", "challenge", "stale", "auth_failed", "no_credential",
		"trunk_disabled", "not_ready", "bad_source", "malformed", "too_many_hops", "rate_limited", "banned",
		"draining", "cap_exceeded"}
	for v := VerdictNone; v <= VerdictCapExceeded; v++ {
		if got := v.String(); got != want[v] {
			t.Errorf("Verdict(%d).String() = %q, want %q", v, got, want[v])
		}
		if got, want := v.Allowed(), v == VerdictAllowIP || v == VerdictAllowDigest; got != want {
			t.Errorf("%v.Allowed() = %v, want %v", v, got, want)
		}
	}
	if got := Verdict(200).String(); got != "verdict(200)" {
		t.Errorf("Verdict(200).String() = %q", got)
	}
	if got := testing.AllocsPerRun(100, func() { _ = VerdictChallenge.String() }); got != 0 {
		t.Errorf("String allocates %v times", got)
	}
}
