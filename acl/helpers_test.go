package acl

import (
	"fmt"
	"net/netip"
	"time"
)

// pp parses a prefix literal and panics unless it is valid and canonical (masked), so a
// typo in a test table cannot silently test something else.
func pp(s string) netip.Prefix {
	p := netip.MustParsePrefix(s)
	if p != p.Masked() {
		panic(fmt.Sprintf("pp(%q): not canonical, want %s", s, p.Masked()))
	}
	return p
}

// aa parses an address literal.
func aa(s string) netip.Addr { return netip.MustParseAddr(s) }

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// mkACL builds an ACL whose entries are the given canonical addresses, all enabled.
func mkACL(uuid string, addrs ...string) IPACL {
	a := IPACL{UUID: uuid, Account: "MA1", Name: uuid, CreatedAt: testTime, UpdatedAt: testTime}
	for i, s := range addrs {
		a.Entries = append(a.Entries, Entry{ID: fmt.Sprintf("%s-e%d", uuid, i), IPAddress: s, Enabled: true,
			CreatedAt: testTime, UpdatedAt: testTime})
	}
	return a
}

// mkTrunk builds an enabled trunk named id using the given ACL (may be "").
func mkTrunk(id TrunkID, aclUUID string) Trunk {
	return Trunk{ID: id, Account: "MA1", Name: string(id), Direction: DirectionOutbound, Status: TrunkEnabled,
		Domain: string(id) + ".example.org", ACLUUID: aclUUID, CreatedAt: testTime, UpdatedAt: testTime}
}

func mustCompile(tb interface {
	Helper()
	Fatalf(string, ...any)
}, ds *Dataset) *Snapshot {
	tb.Helper()
	s, err := Compile(ds)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return s
}
