package acl

import "testing"

// A trunk whose ACL the admin marked shared is found by domain only: MatchSource skips
// it, whether it is the only trunk holding the source or one of several, while Allows
// still admits the source once the trunk is found by domain.
func TestMatchSourceSkipsSharedACLs(t *testing.T) {
	shared := func(a IPACL) IPACL { a.Shared = true; return a }
	ds := &Dataset{
		Version: 1,
		ACLs: []IPACL{
			shared(mkACL("acl-host-a", "192.0.2.0/24")),
			shared(mkACL("acl-host-b", "192.0.2.0/24")),
			shared(mkACL("acl-alone", "198.51.100.7")),
			mkACL("acl-own", "203.0.113.9"),
			shared(mkACL("acl-mixed-shared", "203.0.113.9")),
		},
		Trunks: []Trunk{
			mkTrunk("host-a", "acl-host-a"),
			mkTrunk("host-b", "acl-host-b"),
			mkTrunk("alone", "acl-alone"),
			mkTrunk("own", "acl-own"),
			mkTrunk("mixed", "acl-mixed-shared"),
		},
	}
	s := mustCompile(t, ds)
	tests := []struct {
		name string
		src  string
		want TrunkID // "" = no match
	}{
		{"two shared ACLs", "192.0.2.10", ""},
		{"one shared ACL alone", "198.51.100.7", ""},
		{"a plain ACL beside a shared one", "203.0.113.9", "own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.MatchSource(aa(tt.src))
			if tt.want == "" && ok {
				t.Fatalf("MatchSource(%s) = %q, want none (shared ACLs are found by domain only)", tt.src, got)
			}
			if tt.want != "" && (!ok || got != tt.want) {
				t.Fatalf("MatchSource(%s) = %q %t, want %q", tt.src, got, ok, tt.want)
			}
		})
	}
	for _, id := range []TrunkID{"host-a", "host-b", "alone"} {
		p, _ := s.Trunk(id)
		if !p.SharedACL {
			t.Errorf("trunk %s: SharedACL false", id)
		}
	}
	if !s.Allows("host-a", aa("192.0.2.10")) || !s.Allows("alone", aa("198.51.100.7")) {
		t.Error("Allows refuses a shared ACL's source on its own trunk")
	}
	if id, ok := s.TrunkByDomain("host-b.example.org"); !ok || id != "host-b" {
		t.Errorf("TrunkByDomain(host-b.example.org) = %q %t", id, ok)
	}

	// WithACL: unsharing makes the trunk found by source again, and sharing hides it.
	un := mkACL("acl-alone", "198.51.100.7")
	s2, err := s.WithACL(un, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := s2.MatchSource(aa("198.51.100.7")); !ok || got != "alone" {
		t.Errorf("after unsharing: MatchSource = %q %t, want alone", got, ok)
	}
	s3, err := s2.WithACL(shared(un), 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := s3.MatchSource(aa("198.51.100.7")); ok {
		t.Errorf("after sharing again: MatchSource = %q, want none", got)
	}
	if got, ok := s.MatchSource(aa("198.51.100.7")); ok {
		t.Errorf("the original snapshot changed: MatchSource = %q", got)
	}
}
