package store_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// seedEntries stores n entries (ACLs of 1,000) in account BIG and returns the store.
func seedEntries(tb testing.TB, n int) *store.Store {
	tb.Helper()
	s, err := store.OpenBolt(filepath.Join(tb.TempDir(), "data"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	for _, id := range []string{"BIG", "B"} {
		if _, err := s.CreateAccount(ctx, acl.Account{AuthID: id, TokenHash: "x",
			Limits: acl.Limits{MaxACLs: 1000, MaxEntries: 1 << 20, MaxEntriesPerACL: 1000}}); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < n/1000; i++ {
		a := acl.IPACL{UUID: fmt.Sprintf("big-%d", i), Account: "BIG", Name: "big"}
		for j := range 1000 {
			k := i*1000 + j
			a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("e%d", k), IPAddress: fmt.Sprintf("10.%d.%d.%d", k>>16, k>>8&255, k&255), Enabled: true})
		}
		if _, err := s.CreateACL(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// With 100k entries stored, a write checks overlap against the index kept across
// writes (no rebuild per write) and stays fast; overlaps deep in the table are found.
func TestOverlapAt100kEntries(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	s := seedEntries(t, n)
	before := store.TenancyRebuilds(s)
	start := time.Now()
	const writes = 50
	for i := range writes {
		if _, err := s.CreateACL(ctx, acl.IPACL{UUID: fmt.Sprintf("b-%d", i), Account: "B", Name: "b",
			Entries: []acl.Entry{{ID: "x", IPAddress: fmt.Sprintf("192.0.2.%d", i), Enabled: true}}}); err != nil {
			t.Fatal(err)
		}
	}
	per := time.Since(start) / writes
	if r := store.TenancyRebuilds(s) - before; r > 1 {
		t.Errorf("%d index rebuilds for %d writes through one store, want at most 1", r, writes)
	}
	t.Logf("%d entries: %v per ACL create", n, per)
	last := n - 1
	for _, p := range []string{fmt.Sprintf("10.%d.%d.%d", last>>16, last>>8&255, last&255), fmt.Sprintf("10.%d.%d.0/24", last>>16, last>>8&255)} {
		_, err := s.CreateACL(ctx, acl.IPACL{UUID: "b-overlap", Account: "B", Name: "b",
			Entries: []acl.Entry{{ID: "x", IPAddress: p, Enabled: true}}})
		if !errors.Is(err, store.ErrOverlap) {
			t.Errorf("%s (BIG lists it or inside it): %v, want ErrOverlap", p, err)
		}
	}
}

func BenchmarkCreateACLAt100kEntries(b *testing.B) {
	s := seedEntries(b, 100_000)
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("b-%d", i)
		if _, err := s.CreateACL(ctx, acl.IPACL{UUID: id, Account: "B", Name: "b",
			Entries: []acl.Entry{{ID: "x", IPAddress: fmt.Sprintf("192.0.2.%d", i%250), Enabled: true}}}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.DeleteACL(ctx, "B", id); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
