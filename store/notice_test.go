package store_test

import (
	"testing"

	"github.com/sipedge/sipedge/store"
)

func TestNoticeWireForm(t *testing.T) {
	const ep = "0b7c6a54-4c0e-4f39-9c1a-6f3f0f6c2d11"
	cases := []struct {
		name, in            string
		v                   uint64
		epoch, account, acl string
		bad                 bool
	}{
		{"bare version (old writers)", "42", 42, "", "", "", false},
		{"version and epoch", "42 " + ep, 42, ep, "", "", false},
		{"one ACL", "42 " + ep + " MAAA/acl-1", 42, ep, "MAAA", "acl-1", false},
		{"ACL id with a space", "42 " + ep + " MAAA/acl 1", 42, ep, "MAAA", "acl 1", false},
		{"no slash: no ACL", "42 " + ep + " acl-1", 42, ep, "", "", false},
		{"two slashes: no ACL", "42 " + ep + " MAAA/acl/1", 42, ep, "", "", false},
		{"empty account: no ACL", "42 " + ep + " /acl-1", 42, ep, "", "", false},
		{"empty", "", 0, "", "", "", true},
		{"not a number", "x " + ep, 0, "", "", "", true},
		{"negative", "-1", 0, "", "", "", true},
		{"overflow", "18446744073709551616", 0, "", "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, epoch, account, acl, err := store.ParseNotice(tc.in)
			if (err != nil) != tc.bad {
				t.Fatalf("ParseNotice(%q) error %v, want error %t", tc.in, err, tc.bad)
			}
			if v != tc.v || epoch != tc.epoch || account != tc.account || acl != tc.acl {
				t.Fatalf("ParseNotice(%q) = %d %q %q %q", tc.in, v, epoch, account, acl)
			}
		})
	}
}

// FuzzParseNotice: any payload parses or fails cleanly, and what parses formats back to
// a payload that parses to the same notice.
func FuzzParseNotice(f *testing.F) {
	for _, s := range []string{"42", "42 ep", "42 ep MAAA/acl-1", "1 e a/b/c", "x", "", "7  /"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, epoch, account, acl, err := store.ParseNotice(s)
		if err != nil {
			return
		}
		if (account == "") != (acl == "") {
			t.Fatalf("%q: half an ACL reference %q/%q", s, account, acl)
		}
		out := store.FormatNotice(v, epoch, account, acl)
		v2, epoch2, account2, acl2, err := store.ParseNotice(out)
		if err != nil || v2 != v || account2 != account || acl2 != acl || (epoch != "" && epoch2 != epoch) {
			t.Fatalf("%q → %q → %d %q %q %q, %v", s, out, v2, epoch2, account2, acl2, err)
		}
	})
}
