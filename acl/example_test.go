package acl_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sipedge/sipedge/acl"
)

func ExampleCanonicalAddresses() {
	canon, warnings, err := acl.CanonicalAddresses("ip_addresses",
		[]string{" 192.0.2.0/24", "2001:DB8::/32", "192.0.2.10"})
	fmt.Println(canon, warnings, err)

	_, _, err = acl.CanonicalAddresses("ip_addresses", []string{"192.0.2.7/24", "0.0.0.0/0"})
	fmt.Println(errors.Is(err, acl.ErrInvalidPrefix))
	fmt.Println(err)
	// Output:
	// [192.0.2.0/24 2001:db8::/32 192.0.2.10] [192.0.2.10 is inside 192.0.2.0/24] <nil>
	// true
	// 2 invalid values: ip_addresses[0]: "192.0.2.7/24": host bits set, did you mean 192.0.2.0/24; ip_addresses[1]: "0.0.0.0/0": /0 would match every address
}

func ExampleSnapshot_MatchSource() {
	ds := &acl.Dataset{
		Version: 1,
		ACLs: []acl.IPACL{{UUID: "acl-office", Entries: []acl.Entry{
			{ID: "e1", IPAddress: "192.0.2.0/24", Enabled: true},
			{ID: "e2", IPAddress: "2001:db8::/32", Enabled: true},
		}}},
		Trunks: []acl.Trunk{{ID: "pbx1", Status: acl.TrunkEnabled, Domain: "pbx1.sip.example.org", ACLUUID: "acl-office"}},
	}
	var holder acl.Holder
	fmt.Println(holder.Load() == nil) // not ready yet
	s, err := acl.Compile(ds)
	if err != nil {
		panic(err)
	}
	holder.Store(s)

	s = holder.Load() // once per request
	for _, src := range []string{"::ffff:192.0.2.10", "2001:db8::5", "198.51.100.1"} {
		id, ok := s.MatchSource(netip.MustParseAddr(src))
		fmt.Println(src, id, ok)
	}
	id, _ := s.TrunkByDomain("PBX1.sip.example.org")
	fmt.Println(id, s.Allows(id, netip.MustParseAddr("192.0.2.10")))
	// Output:
	// true
	// ::ffff:192.0.2.10 pbx1 true
	// 2001:db8::5 pbx1 true
	// 198.51.100.1  false
	// pbx1 true
}

func ExampleSnapshot_WithACL() {
	s, _ := acl.Compile(&acl.Dataset{
		ACLs:   []acl.IPACL{{UUID: "acl-1", Entries: []acl.Entry{{ID: "e1", IPAddress: "192.0.2.0/24", Enabled: true}}}},
		Trunks: []acl.Trunk{{ID: "pbx1", Status: acl.TrunkEnabled, ACLUUID: "acl-1"}},
	})
	next, err := s.WithACL(acl.IPACL{UUID: "acl-1", Entries: []acl.Entry{
		{ID: "e1", IPAddress: "192.0.2.0/24", Enabled: false},
		{ID: "e2", IPAddress: "2001:db8::/32", Enabled: true},
	}}, 2)
	if err != nil {
		panic(err)
	}
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	fmt.Println("old:", s.Allows("pbx1", v4), s.Allows("pbx1", v6))
	fmt.Println("new:", next.Allows("pbx1", v4), next.Allows("pbx1", v6), next.Version())
	// Output:
	// old: true false
	// new: false true 2
}
