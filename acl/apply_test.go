package acl

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestWithACLReplacesEntries(t *testing.T) {
	old := mustCompile(t, exampleDataset())
	a := mkACL("acl-a", "192.0.2.0/25", "2001:db8:a::/48", "203.0.113.5")
	s, err := old.WithACL(a, 8)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src           string
		before, after []TrunkID
	}{
		{"192.0.2.1", []TrunkID{"pbx-a"}, []TrunkID{"pbx-a"}},
		{"192.0.2.200", []TrunkID{"pbx-a", "pbx-b"}, []TrunkID{"pbx-b"}}, // /24 gone
		{"203.0.113.5", []TrunkID{"pbx-b"}, []TrunkID{"pbx-a", "pbx-b"}}, // now shared with pbx-b
		{"2001:db8:a::1", []TrunkID{"pbx-a"}, []TrunkID{"pbx-a"}},
	}
	for _, tt := range tests {
		if got := old.AcceptingTrunks(aa(tt.src), nil); !slices.Equal(got, tt.before) {
			t.Errorf("old snapshot: AcceptingTrunks(%s) = %q, want %q", tt.src, got, tt.before)
		}
		if got := s.AcceptingTrunks(aa(tt.src), nil); !slices.Equal(got, tt.after) {
			t.Errorf("new snapshot: AcceptingTrunks(%s) = %q, want %q", tt.src, got, tt.after)
		}
	}
	if old.Version() != 7 || s.Version() != 8 {
		t.Errorf("versions %d → %d, want 7 → 8", old.Version(), s.Version())
	}
	checkSameSnapshot(t, s, mustCompile(t, withACLInDataset(exampleDataset(), a, 8)))
}

func TestWithACLResolvesMissingACL(t *testing.T) {
	old := mustCompile(t, exampleDataset())
	s, err := old.WithACL(mkACL("acl-nope", "192.0.2.77"), 8)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := old.Trunk("pbx-missing"); p.HasACL {
		t.Error("old snapshot changed: pbx-missing has an ACL")
	}
	if p, _ := s.Trunk("pbx-missing"); !p.HasACL {
		t.Error("pbx-missing has no ACL after WithACL")
	}
	if !s.Allows("pbx-missing", aa("192.0.2.77")) || old.Allows("pbx-missing", aa("192.0.2.77")) {
		t.Error("Allows(pbx-missing) wrong")
	}
	for _, p := range s.Problems() {
		if p.Value == "acl-nope" {
			t.Errorf("problem %q survives its fix", p)
		}
	}
	if len(old.Problems()) != 2 {
		t.Errorf("old snapshot problems changed: %q", old.Problems())
	}
}

func TestWithACLUnusedACL(t *testing.T) {
	old := mustCompile(t, exampleDataset())
	for _, uuid := range []string{"acl-unused", "acl-brand-new"} {
		s, err := old.WithACL(mkACL(uuid, "192.0.2.0/24", "198.51.100.0/24"), 8)
		if err != nil {
			t.Fatal(err)
		}
		if s.table != old.table || &s.trunks[0] != &old.trunks[0] {
			t.Errorf("%s: an ACL no trunk names rebuilt the table or the trunks", uuid)
		}
		if s.Listed(aa("198.51.100.1")) {
			t.Errorf("%s: an ACL no trunk names is listed", uuid)
		}
		if i, ok := findACL(s.acls, uuid); !ok || !s.acls[i].valid {
			t.Errorf("%s: not stored", uuid)
		}
	}
}

func TestWithACLRejectsInvalid(t *testing.T) {
	old := mustCompile(t, exampleDataset())
	bad := mkACL("acl-a", "192.0.2.0/24", "10.0.0.5/8")
	s, err := old.WithACL(bad, 8)
	if s != nil || !errors.Is(err, ErrInvalidPrefix) {
		t.Fatalf("WithACL(invalid) = %v, %v; want nil and ErrInvalidPrefix", s, err)
	}
	if !old.Allows("pbx-a", aa("192.0.2.1")) {
		t.Error("old snapshot changed")
	}
}

func TestWithACLOnNil(t *testing.T) {
	var old *Snapshot
	s, err := old.WithACL(mkACL("acl-1", "192.0.2.0/24"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != 3 || s.Empty() || s.Listed(aa("192.0.2.1")) {
		t.Errorf("WithACL on nil: version %d, empty %v", s.Version(), s.Empty())
	}
}

// TestWithACLLargeACL changes a few entries of a large ACL.
func TestWithACLLargeACL(t *testing.T) {
	var addrs []string
	for i := range 100 {
		addrs = append(addrs, fmt.Sprintf("10.%d.%d.0/24", i/10, i%10))
	}
	ds := &Dataset{ACLs: []IPACL{mkACL("big", addrs...)}, Trunks: []Trunk{mkTrunk("t", "big")}}
	old := mustCompile(t, ds)
	a := mkACL("big", append(slices.Clone(addrs[2:]), "192.0.2.0/24", "10.0.0.128/25")...)
	s, err := old.WithACL(a, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		src      string
		old, new bool
	}{
		{"10.0.0.1", true, false},
		{"10.0.0.129", true, true},
		{"10.0.1.1", true, false},
		{"10.0.2.1", true, true},
		{"192.0.2.1", false, true},
		{"10.9.9.1", true, true},
	} {
		if got := old.Allows("t", aa(tt.src)); got != tt.old {
			t.Errorf("old Allows(%s) = %v, want %v", tt.src, got, tt.old)
		}
		if got := s.Allows("t", aa(tt.src)); got != tt.new {
			t.Errorf("new Allows(%s) = %v, want %v", tt.src, got, tt.new)
		}
	}
	checkSameSnapshot(t, s, mustCompile(t, withACLInDataset(ds, a, 2)))
}
