package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// exampleDataset is a small data set covering the query paths.
//
//	pbx-a  enabled   acl-a: 192.0.2.0/24, 2001:db8:a::/48, 198.51.100.7 (disabled entry)
//	pbx-b  enabled   acl-b: 192.0.2.128/25 (inside pbx-a's /24), 203.0.113.5
//	pbx-c  enabled   acl-shared: 198.51.100.16/28
//	pbx-d  enabled   acl-shared (the same ACL as pbx-c)
//	pbx-off disabled acl-off: 203.0.113.99
//	pbx-empty enabled acl-empty: no entries
//	pbx-missing enabled names acl-nope, which does not exist
//	pbx-digest enabled, no ACL, credential cred-1
//	acl-unused: 100.64.0.0/10, named by no trunk
func exampleDataset() *Dataset {
	aclA := mkACL("acl-a", "192.0.2.0/24", "2001:db8:a::/48", "198.51.100.7")
	aclA.Entries[2].Enabled = false
	ds := &Dataset{
		Version: 7,
		ACLs: []IPACL{
			aclA,
			mkACL("acl-b", "192.0.2.128/25", "203.0.113.5"),
			mkACL("acl-shared", "198.51.100.16/28"),
			mkACL("acl-off", "203.0.113.99"),
			mkACL("acl-empty"),
			mkACL("acl-unused", "100.64.0.0/10"),
		},
		Credentials: []Credential{
			{UUID: "cred-1", Username: "alice", Realm: "sip.example.org", HA1MD5: "x", HA1SHA256: "y"},
			{UUID: "cred-2", Username: "Bob", Realm: "sip.example.org"},
		},
		Trunks: []Trunk{
			mkTrunk("pbx-b", "acl-b"),
			mkTrunk("pbx-a", "acl-a"),
			mkTrunk("pbx-c", "acl-shared"),
			mkTrunk("pbx-d", "acl-shared"),
			mkTrunk("pbx-off", "acl-off"),
			mkTrunk("pbx-empty", "acl-empty"),
			mkTrunk("pbx-missing", "acl-nope"),
			mkTrunk("pbx-digest", ""),
		},
	}
	ds.Trunks[4].Status = TrunkDisabled
	ds.Trunks[7].CredentialUUID = "cred-1"
	ds.Trunks[7].Domain = "Digest.Example.ORG"
	ds.Trunks[0].DigestAlgorithms = []string{"sha-256", "MD5", "SHA-256", "SHA-512"}
	return ds
}

func TestSnapshotQueries(t *testing.T) {
	s := mustCompile(t, exampleDataset())
	tests := []struct {
		src       string
		match     TrunkID // "" = no single trunk
		accepting []TrunkID
		listed    bool
	}{
		{src: "192.0.2.1", match: "pbx-a", accepting: []TrunkID{"pbx-a"}, listed: true},
		{src: "192.0.2.200", accepting: []TrunkID{"pbx-a", "pbx-b"}, listed: true}, // nested: several
		{src: "::ffff:192.0.2.1", match: "pbx-a", accepting: []TrunkID{"pbx-a"}, listed: true},
		{src: "2001:db8:a::5", match: "pbx-a", accepting: []TrunkID{"pbx-a"}, listed: true},
		{src: "2001:db8:a::5%eth0", match: "pbx-a", accepting: []TrunkID{"pbx-a"}, listed: true},
		{src: "2001:db8:b::5", listed: false},
		{src: "198.51.100.7"},                                                        // disabled entry
		{src: "198.51.100.20", accepting: []TrunkID{"pbx-c", "pbx-d"}, listed: true}, // shared ACL: several
		{src: "203.0.113.5", match: "pbx-b", accepting: []TrunkID{"pbx-b"}, listed: true},
		{src: "203.0.113.99", listed: true}, // disabled trunk: listed, never matched
		{src: "100.64.0.1"},                 // ACL no trunk names
		{src: "192.0.3.1"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			src := aa(tt.src)
			id, ok := s.MatchSource(src)
			if ok != (tt.match != "") || id != tt.match {
				t.Errorf("MatchSource = %q, %v; want %q", id, ok, tt.match)
			}
			if got := s.AcceptingTrunks(src, nil); !slices.Equal(got, tt.accepting) {
				t.Errorf("AcceptingTrunks = %q, want %q", got, tt.accepting)
			}
			for _, tr := range []TrunkID{"pbx-a", "pbx-b", "pbx-c", "pbx-d", "pbx-off", "pbx-empty", "pbx-missing", "pbx-digest", "nope"} {
				if got, want := s.Allows(tr, src), slices.Contains(tt.accepting, tr); got != want {
					t.Errorf("Allows(%s) = %v, want %v", tr, got, want)
				}
			}
			if got := s.Listed(src); got != tt.listed {
				t.Errorf("Listed = %v, want %v", got, tt.listed)
			}
		})
	}
}

func TestSnapshotTrunksAndCredentials(t *testing.T) {
	s := mustCompile(t, exampleDataset())
	if s.Version() != 7 || s.Empty() {
		t.Errorf("Version, Empty = %d, %v; want 7, false", s.Version(), s.Empty())
	}
	for _, tt := range []struct {
		host string
		want TrunkID
	}{
		{"pbx-a.example.org", "pbx-a"},
		{"PBX-A.Example.Org", "pbx-a"},
		{"digest.example.org", "pbx-digest"}, // stored mixed case
		{"DIGEST.EXAMPLE.ORG", "pbx-digest"},
		{"pbx-off.example.org", "pbx-off"}, // disabled trunks are found: they answer 403
		{"pbx-a.example.org.evil", ""},
		{"", ""},
		{strings.Repeat("A", 300), ""},
	} {
		id, ok := s.TrunkByDomain(tt.host)
		if id != tt.want || ok != (tt.want != "") {
			t.Errorf("TrunkByDomain(%q) = %q, %v; want %q", tt.host, id, ok, tt.want)
		}
	}

	b, ok := s.Trunk("pbx-b")
	if !ok || b.ID != "pbx-b" || !b.Enabled || !b.HasACL || b.Domain != "pbx-b.example.org" || b.Direction != DirectionOutbound {
		t.Errorf("Trunk(pbx-b) = %+v, %v", b, ok)
	}
	if want := []string{DigestSHA256, DigestMD5}; !slices.Equal(b.DigestAlgorithms, want) {
		t.Errorf("DigestAlgorithms = %q, want %q", b.DigestAlgorithms, want)
	}
	if p, _ := s.Trunk("pbx-off"); p.Enabled || !p.HasACL {
		t.Errorf("pbx-off: Enabled %v HasACL %v, want false true", p.Enabled, p.HasACL)
	}
	for _, id := range []TrunkID{"pbx-missing", "pbx-digest"} {
		if p, _ := s.Trunk(id); p.HasACL {
			t.Errorf("%s: HasACL true, want false", id)
		}
	}
	if p, _ := s.Trunk("pbx-empty"); !p.HasACL {
		t.Errorf("pbx-empty: HasACL false, want true (its ACL exists, with no entries)")
	}
	d, _ := s.Trunk("pbx-digest")
	c, ok := s.Credential("alice")
	if !ok || c.UUID != "cred-1" || d.Credential != c {
		t.Errorf("Credential(alice) = %+v, %v; trunk credential %p, want the same pointer", c, ok, d.Credential)
	}
	if tp, n := s.CredentialTrunk("cred-1"); n != 1 || tp != d {
		t.Errorf("CredentialTrunk(cred-1) = %v, %d; want pbx-digest, 1", tp, n)
	}
	if tp, n := s.CredentialTrunk("cred-none"); n != 0 || tp != nil {
		t.Errorf("CredentialTrunk(cred-none) = %v, %d; want nil, 0", tp, n)
	}
	if tp, n := (*Snapshot)(nil).CredentialTrunk("cred-1"); n != 0 || tp != nil {
		t.Errorf("nil snapshot: CredentialTrunk = %v, %d", tp, n)
	}
	for _, tc := range []struct {
		name   string
		status string // of a second trunk using cred-1
		want   TrunkID
	}{
		{"shared by two trunks taking calls: ambiguous", TrunkEnabled, ""},
		{"shared with a disabled trunk: the one taking calls", TrunkDisabled, "pbx-digest"},
	} {
		shared := exampleDataset()
		shared.Trunks = append(shared.Trunks, Trunk{ID: "pbx-digest-2", Status: tc.status, CredentialUUID: "cred-1"})
		tp, n := mustCompile(t, shared).CredentialTrunk("cred-1")
		if got := TrunkID(""); n != 2 || (tp != nil && tp.ID != tc.want) || (tp == nil) != (tc.want == "") {
			if tp != nil {
				got = tp.ID
			}
			t.Errorf("%s: CredentialTrunk = %q, %d; want %q, 2", tc.name, got, n, tc.want)
		}
	}
	off := exampleDataset() // only disabled trunks use it: one of them, to answer 403
	for i := range off.Trunks {
		if off.Trunks[i].CredentialUUID == "cred-1" {
			off.Trunks[i].Status = TrunkDisabled
		}
	}
	if tp, n := mustCompile(t, off).CredentialTrunk("cred-1"); n != 1 || tp == nil || tp.TakesCalls() {
		t.Errorf("credential of a disabled trunk: CredentialTrunk = %+v, %d; want that trunk", tp, n)
	}
	for _, user := range []string{"Alice", "bob", "", "nobody"} {
		if _, ok := s.Credential(user); ok {
			t.Errorf("Credential(%q) found, usernames are exact", user)
		}
	}
	if _, ok := s.Trunk("nope"); ok {
		t.Errorf("Trunk(nope) found")
	}
	var problems []string
	for _, p := range s.Problems() {
		problems = append(problems, p.String())
	}
	want := []string{
		`trunks[pbx-b].digest_algorithms: "SHA-512": unknown digest algorithm, ignored`,
		`trunks[pbx-missing].ipacl_uuid: "acl-nope": no such IP ACL, trunk accepts no IP`,
	}
	if !slices.Equal(problems, want) {
		t.Errorf("Problems:\n got %q\nwant %q", problems, want)
	}
}

// TestSnapshotFailsClosed checks that nothing bad in the data set widens access.
func TestSnapshotFailsClosed(t *testing.T) {
	src := aa("192.0.2.10")
	tests := []struct {
		name    string
		edit    func(ds *Dataset)
		problem string // substring of one of Problems(); "" = none expected
	}{
		{name: "missing ACL", edit: func(ds *Dataset) { ds.ACLs = nil }, problem: "no such IP ACL"},
		{name: "empty ACL", edit: func(ds *Dataset) { ds.ACLs[0].Entries = nil }},
		{name: "disabled entry", edit: func(ds *Dataset) { ds.ACLs[0].Entries[0].Enabled = false }},
		{name: "disabled trunk", edit: func(ds *Dataset) { ds.Trunks[0].Status = TrunkDisabled }},
		{name: "unknown status", edit: func(ds *Dataset) { ds.Trunks[0].Status = "Enabled" }, problem: "unknown status"},
		{name: "no ACL named", edit: func(ds *Dataset) { ds.Trunks[0].ACLUUID = "" }},
		{name: "non-canonical entry", edit: func(ds *Dataset) { ds.ACLs[0].Entries[0].IPAddress = "192.0.2.10/24" }, problem: "did you mean 192.0.2.0/24"},
		{name: "garbage entry beside a good one", edit: func(ds *Dataset) {
			ds.ACLs[0].Entries = append(ds.ACLs[0].Entries, Entry{ID: "x", IPAddress: "0.0.0.0/0", Enabled: true})
		}, problem: "/0 would match every address"},
		{name: "duplicate entry ids", edit: func(ds *Dataset) {
			ds.ACLs[0].Entries = append(ds.ACLs[0].Entries, Entry{ID: ds.ACLs[0].Entries[0].ID, IPAddress: "192.0.2.99", Enabled: true})
		}, problem: "duplicate of entries[0].id"},
		{name: "duplicate ACL uuid", edit: func(ds *Dataset) { ds.ACLs = append(ds.ACLs, mkACL("acl-1", "192.0.2.0/24")) },
			problem: "duplicate ipacl_uuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := &Dataset{ACLs: []IPACL{mkACL("acl-1", "192.0.2.0/24")}, Trunks: []Trunk{mkTrunk("t1", "acl-1")}}
			if s := mustCompile(t, ds); !s.Allows("t1", src) {
				t.Fatalf("baseline does not allow %v", src)
			}
			tt.edit(ds)
			s := mustCompile(t, ds)
			if id, ok := s.MatchSource(src); ok {
				t.Errorf("MatchSource = %q", id)
			}
			if s.Allows("t1", src) {
				t.Errorf("Allows(t1) = true")
			}
			if got := s.AcceptingTrunks(src, nil); got != nil {
				t.Errorf("AcceptingTrunks = %q", got)
			}
			found := tt.problem == ""
			for _, p := range s.Problems() {
				found = found || strings.Contains(p.String(), tt.problem)
			}
			if !found {
				t.Errorf("Problems() = %q, want one containing %q", s.Problems(), tt.problem)
			}
		})
	}
}

func TestNilSnapshot(t *testing.T) {
	var s *Snapshot
	src := aa("192.0.2.1")
	if _, ok := s.MatchSource(src); ok {
		t.Error("MatchSource on nil")
	}
	if s.Allows("t", src) || s.Listed(src) || s.AcceptingTrunks(src, nil) != nil {
		t.Error("nil snapshot allows")
	}
	if _, ok := s.TrunkByDomain("t.example.org"); ok {
		t.Error("TrunkByDomain on nil")
	}
	if _, ok := s.Trunk("t"); ok {
		t.Error("Trunk on nil")
	}
	if _, ok := s.Credential("u"); ok {
		t.Error("Credential on nil")
	}
	if s.Version() != 0 || !s.Empty() || s.Problems() != nil {
		t.Error("nil snapshot: want version 0, empty, no problems")
	}
	if got := testing.AllocsPerRun(100, func() {
		s.MatchSource(src)
		s.Allows("t", src)
		s.Listed(src)
		s.TrunkByDomain("T.example.org")
		s.Trunk("t")
		s.Credential("u")
		s.AcceptingTrunks(src, nil)
	}); got != 0 {
		t.Errorf("queries on nil allocate %v times", got)
	}
}

func TestSnapshotInvalidSource(t *testing.T) {
	s := mustCompile(t, exampleDataset())
	var zero netip.Addr
	if _, ok := s.MatchSource(zero); ok || s.Allows("pbx-a", zero) || s.Listed(zero) || s.AcceptingTrunks(zero, nil) != nil {
		t.Error("the invalid address matched")
	}
}

func TestSnapshotZeroAllocs(t *testing.T) {
	s := mustCompile(t, exampleDataset())
	big := mkACL("acl-big")
	for i := range 40 {
		big.Entries = append(big.Entries, Entry{ID: fmt.Sprint(i), IPAddress: fmt.Sprintf("10.%d.0.0/16", i), Enabled: true})
	}
	ds := exampleDataset()
	ds.ACLs = append(ds.ACLs, big)
	ds.Trunks = append(ds.Trunks, mkTrunk("pbx-big", "acl-big"))
	sBig := mustCompile(t, ds)
	dst := make([]TrunkID, 0, 8)
	tests := []struct {
		name string
		fn   func()
	}{
		{"MatchSource hit", func() { s.MatchSource(aa("192.0.2.1")) }},
		{"MatchSource v6", func() { s.MatchSource(aa("2001:db8:a::1")) }},
		{"MatchSource mapped", func() { s.MatchSource(aa("::ffff:192.0.2.1")) }},
		{"MatchSource miss", func() { s.MatchSource(aa("192.0.3.1")) }},
		{"Allows small", func() { s.Allows("pbx-a", aa("192.0.2.1")) }},
		{"Allows zone", func() { s.Allows("pbx-a", aa("2001:db8:a::1%eth0")) }},
		{"Allows big", func() { sBig.Allows("pbx-big", aa("10.39.1.1")) }},
		{"Allows unknown", func() { s.Allows("nope", aa("192.0.2.1")) }},
		{"TrunkByDomain lower", func() { s.TrunkByDomain("pbx-a.example.org") }},
		{"TrunkByDomain mixed", func() { s.TrunkByDomain("PBX-A.example.org") }},
		{"TrunkByDomain miss", func() { s.TrunkByDomain("Nope.example.org") }},
		{"Credential", func() { s.Credential("alice") }},
		{"Trunk", func() { s.Trunk("pbx-a") }},
		{"Listed", func() { s.Listed(aa("203.0.113.99")) }},
		{"AcceptingTrunks with room", func() { dst = s.AcceptingTrunks(aa("192.0.2.200"), dst[:0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(200, tt.fn); got != 0 {
				t.Errorf("%s allocates %v times per run", tt.name, got)
			}
		})
	}
	if !sBig.Allows("pbx-big", aa("10.39.1.1")) || sBig.Allows("pbx-big", aa("10.40.1.1")) {
		t.Error("big ACL answers wrong")
	}
}

func TestCompileRejectsStructuralGarbage(t *testing.T) {
	tests := []struct {
		name string
		edit func(ds *Dataset)
		want string
	}{
		{"duplicate trunk id", func(ds *Dataset) { ds.Trunks = append(ds.Trunks, mkTrunk("pbx-a", "")) }, `duplicate trunk_id "pbx-a"`},
		{"empty trunk id", func(ds *Dataset) { ds.Trunks[1].ID = "" }, "empty trunk_id"},
		{"duplicate domain", func(ds *Dataset) {
			tr := mkTrunk("pbx-z", "")
			tr.Domain = "PBX-A.example.org"
			ds.Trunks = append(ds.Trunks, tr)
		}, `trunk_domain "PBX-A.example.org" of trunk "pbx-z" is also the domain of trunk "pbx-a"`},
		{"duplicate username", func(ds *Dataset) {
			ds.Credentials = append(ds.Credentials, Credential{UUID: "cred-9", Username: "alice"})
		}, `username "alice" of credential "cred-9" is also the username of credential "cred-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := exampleDataset()
			tt.edit(ds)
			s, err := Compile(ds)
			if !errors.Is(err, ErrInvalidDataset) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile = %v, %v; want error containing %q", s, err, tt.want)
			}
			if s != nil {
				t.Errorf("got a snapshot with the error")
			}
		})
	}
}

func TestCompileDropsBadCredentials(t *testing.T) {
	ds := exampleDataset()
	ds.Credentials = append(ds.Credentials,
		Credential{UUID: "cred-1", Username: "mallory"}, // duplicate uuid: both copies go
		Credential{UUID: "", Username: "nouuid"},
		Credential{UUID: "cred-3", Username: ""},
	)
	s := mustCompile(t, ds)
	for _, user := range []string{"alice", "mallory", "nouuid"} {
		if _, ok := s.Credential(user); ok {
			t.Errorf("Credential(%q) found", user)
		}
	}
	if _, ok := s.Credential("Bob"); !ok {
		t.Errorf("Credential(Bob) lost")
	}
	if p, _ := s.Trunk("pbx-digest"); p.Credential != nil {
		t.Errorf("pbx-digest keeps an ambiguous credential")
	}
	if n := len(s.Problems()); n < 4 {
		t.Errorf("Problems() = %q, want 4 or more", s.Problems())
	}
}

func TestCompileDoesNotRetainDataset(t *testing.T) {
	ds := exampleDataset()
	s := mustCompile(t, ds)
	ds.ACLs[0].Entries[0].IPAddress = "192.0.3.0/24"
	ds.Trunks[1].Status = TrunkDisabled
	ds.Credentials[0].Username = "eve"
	ds.Trunks[0].DigestAlgorithms[0] = "MD5"
	if !s.Allows("pbx-a", aa("192.0.2.1")) || s.Allows("pbx-a", aa("192.0.3.1")) {
		t.Error("snapshot follows edits of the data set")
	}
	if c, ok := s.Credential("alice"); !ok || c.Username != "alice" {
		t.Error("credential follows edits of the data set")
	}
}

func TestEmpty(t *testing.T) {
	for _, ds := range []*Dataset{nil, {}, {Version: 3}} {
		if s := mustCompile(t, ds); !s.Empty() {
			t.Errorf("Compile(%+v).Empty() = false", ds)
		}
	}
	for _, ds := range []*Dataset{
		{ACLs: []IPACL{mkACL("a")}},
		{Credentials: []Credential{{UUID: "c", Username: "u"}}},
		{Trunks: []Trunk{mkTrunk("t", "")}},
	} {
		if s := mustCompile(t, ds); s.Empty() {
			t.Errorf("Compile(%+v).Empty() = true", ds)
		}
	}
}

// TestAllowsManySharers covers trunk sets too large for a linear look.
func TestAllowsManySharers(t *testing.T) {
	ds := &Dataset{ACLs: []IPACL{mkACL("shared", "192.0.2.0/24"), mkACL("host", "192.0.2.5")}}
	var want []TrunkID
	for i := range 40 {
		id := TrunkID(fmt.Sprintf("t%02d", i))
		tr := mkTrunk(id, "shared")
		if i%7 == 3 {
			tr.Status = TrunkDisabled
		} else {
			want = append(want, id)
		}
		ds.Trunks = append(ds.Trunks, tr)
	}
	ds.Trunks = append(ds.Trunks, mkTrunk("t17a", "host"))
	s := mustCompile(t, ds)
	if got := s.AcceptingTrunks(aa("192.0.2.9"), nil); !slices.Equal(got, want) {
		t.Errorf("AcceptingTrunks = %q, want %q", got, want)
	}
	for _, tr := range ds.Trunks {
		for _, src := range []string{"192.0.2.5", "192.0.2.9"} {
			wantOK := tr.Status == TrunkEnabled && (tr.ID != "t17a" || src == "192.0.2.5")
			if got := s.Allows(tr.ID, aa(src)); got != wantOK {
				t.Errorf("Allows(%s, %s) = %v, want %v", tr.ID, src, got, wantOK)
			}
		}
	}
	for _, id := range []TrunkID{"t", "t17b", "t99", "u", ""} {
		if s.Allows(id, aa("192.0.2.5")) {
			t.Errorf("Allows(%q) = true for a trunk that does not exist", id)
		}
	}
}

func TestStats(t *testing.T) {
	if (*Snapshot)(nil).Stats() != (Stats{}) {
		t.Fatal("nil snapshot has stats")
	}
	ds := &Dataset{Version: 3,
		ACLs: []IPACL{{UUID: "a1", Account: "MA1", Entries: []Entry{
			{ID: "e1", IPAddress: "192.0.2.1", Enabled: true},
			{ID: "e2", IPAddress: "198.51.100.0/24", Enabled: true},
			{ID: "e3", IPAddress: "2001:db8::/32", Enabled: false},
		}}},
		Credentials: []Credential{{UUID: "c1", Account: "MA1", Username: "u1", Realm: "r", HA1MD5: "00000000000000000000000000000000", HA1SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}},
		Trunks:      []Trunk{{ID: "t1", Account: "MA1", Status: TrunkEnabled, Domain: "t1.example.org", ACLUUID: "a1", CredentialUUID: "c1"}},
	}
	s, err := Compile(ds)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Stats()
	if got.Trunks != 1 || got.ACLs != 1 || got.Prefixes != 2 {
		t.Fatalf("stats %+v, want 1 trunk, 1 ACL, 2 enabled prefixes", got)
	}
}
