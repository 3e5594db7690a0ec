package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// tenancyBackends runs fn against bolt and, with SIPEDGE_TEST_REDIS, against Redis with
// two Stores (two nodes) on one data set: n1 and n2 are the same Store for bolt.
func tenancyBackends(t *testing.T, fn func(t *testing.T, n1, n2 *store.Store)) {
	t.Run("bolt", func(t *testing.T) {
		s := openBoltDir(t, filepath.Join(t.TempDir(), "data"))
		fn(t, s, s)
	})
	t.Run("redis", func(t *testing.T) {
		ro := redisOptions(t)
		p := testPrefix(t, ro)
		fn(t, openRedisStore(t, ro, p), openRedisStore(t, ro, p))
	})
}

func mkAccount(t *testing.T, s *store.Store, id string, lim acl.Limits) {
	t.Helper()
	if _, err := s.CreateAccount(ctx, acl.Account{AuthID: id, TokenHash: "x", Limits: lim}); err != nil {
		t.Fatalf("CreateAccount %s: %v", id, err)
	}
}

var aclSeq int

func newACL(account string, shared bool, addrs ...string) acl.IPACL {
	aclSeq++
	a := acl.IPACL{UUID: fmt.Sprintf("acl-%s-%d", account, aclSeq), Account: account, Name: "n", Shared: shared}
	for i, s := range addrs {
		a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("%s-e%d", a.UUID, i), IPAddress: s, Enabled: true})
	}
	return a
}

func TestOverlapAcrossAccounts(t *testing.T) {
	tenancyBackends(t, func(t *testing.T, n1, n2 *store.Store) {
		mkAccount(t, n1, "A", acl.Limits{})
		mkAccount(t, n1, "B", acl.Limits{})
		a := newACL("A", false, "192.0.2.10", "2001:db8:a::/48")
		if _, err := n1.CreateACL(ctx, a); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			addr string
			want error
		}{
			{"same address", "192.0.2.10", store.ErrOverlap},
			{"holds it", "192.0.2.0/24", store.ErrOverlap},
			{"inside it (v6)", "2001:db8:a:1::/64", store.ErrOverlap},
			{"beside it", "192.0.2.11", nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := n2.CreateACL(ctx, newACL("B", false, "198.51.100.0/24", tt.addr))
				if !errors.Is(err, tt.want) || (tt.want != nil && !errors.Is(err, store.ErrConflict)) {
					t.Fatalf("B's ACL with %s: %v, want %v", tt.addr, err, tt.want)
				}
				if err != nil && (contains(err.Error(), "A") || contains(err.Error(), a.UUID)) {
					t.Errorf("the 409 names the other tenant: %q", err)
				}
			})
		}
		// An update (list replace and entry add) is held to the same rule, and changes nothing.
		b := newACL("B", false, "203.0.113.0/24")
		if _, err := n1.CreateACL(ctx, b); err != nil {
			t.Fatal(err)
		}
		_, _, err := n2.UpdateACL(ctx, "B", b.UUID, func(x *acl.IPACL) error {
			x.Entries = append(x.Entries, acl.Entry{ID: "new", IPAddress: "192.0.2.10", Enabled: true})
			return nil
		})
		if !errors.Is(err, store.ErrOverlap) {
			t.Fatalf("B adds A's address: %v, want ErrOverlap", err)
		}
		if got, _ := n1.GetACL(ctx, "B", b.UUID); len(got.Entries) != 1 {
			t.Errorf("a refused update changed the ACL: %d entries", len(got.Entries))
		}
		// The same account may overlap itself.
		if _, err := n2.CreateACL(ctx, newACL("A", false, "192.0.2.10")); err != nil {
			t.Errorf("A overlapping its own entry: %v", err)
		}
		// Deleting A's ACL frees its addresses.
		if _, err := n1.DeleteACL(ctx, "A", a.UUID); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.CreateACL(ctx, newACL("B", false, "2001:db8:a::/48")); err != nil {
			t.Errorf("after A deleted it, B lists 2001:db8:a::/48: %v", err)
		}
	})
}

func TestOverlapSharedACLs(t *testing.T) {
	tenancyBackends(t, func(t *testing.T, n1, n2 *store.Store) {
		mkAccount(t, n1, "A", acl.Limits{})
		mkAccount(t, n1, "B", acl.Limits{})
		a := newACL("A", true, "192.0.2.0/24")
		if _, err := n1.CreateACL(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.CreateACL(ctx, newACL("B", false, "192.0.2.5")); !errors.Is(err, store.ErrOverlap) {
			t.Errorf("B's plain ACL over A's shared one: %v, want ErrOverlap", err)
		}
		b := newACL("B", true, "192.0.2.5")
		if _, err := n2.CreateACL(ctx, b); err != nil {
			t.Fatalf("both shared: %v", err)
		}
		// Unsharing while overlapping is refused.
		_, _, err := n1.UpdateACL(ctx, "B", b.UUID, func(x *acl.IPACL) error { x.Shared = false; return nil })
		if !errors.Is(err, store.ErrOverlap) {
			t.Errorf("unsharing an overlapping ACL: %v, want ErrOverlap", err)
		}
	})
}

func TestMinimumPrefix(t *testing.T) {
	tenancyBackends(t, func(t *testing.T, n1, n2 *store.Store) {
		mkAccount(t, n1, "A", acl.Limits{})
		for _, p := range []string{"0.0.0.0/1", "10.0.0.0/8", "192.0.2.0/25", "2001:db8::/32"} {
			_, err := n2.CreateACL(ctx, newACL("A", false, p))
			if p == "192.0.2.0/25" {
				if err != nil {
					t.Errorf("%s: %v", p, err)
				}
				continue
			}
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid (shorter than the default minimum)", p, err)
			}
		}
		if _, _, err := n1.UpdateAccount(ctx, "A", func(a *acl.Account) error { a.Limits.MinPrefixV4 = 8; return nil }); err != nil {
			t.Fatal(err)
		}
		a := newACL("A", false, "10.0.0.0/8")
		if _, err := n2.CreateACL(ctx, a); err != nil {
			t.Fatalf("/8 after the admin lowered the minimum: %v", err)
		}
		if _, _, err := n1.UpdateAccount(ctx, "A", func(a *acl.Account) error { a.Limits.MinPrefixV4 = 0; return nil }); err != nil {
			t.Fatal(err)
		}
		// An entry stored under the old minimum stays, and the ACL can still be renamed.
		if _, _, err := n2.UpdateACL(ctx, "A", a.UUID, func(x *acl.IPACL) error { x.Name = "renamed"; return nil }); err != nil {
			t.Errorf("renaming an ACL with an older /8: %v", err)
		}
	})
}

func TestQuotas(t *testing.T) {
	tenancyBackends(t, func(t *testing.T, n1, n2 *store.Store) {
		mkAccount(t, n1, "A", acl.Limits{MaxACLs: 2, MaxEntriesPerACL: 3, MaxEntries: 4, MaxTrunks: 1, MaxCredentials: 1})
		quota := func(err error) bool {
			var q *store.QuotaError
			return errors.As(err, &q) && errors.Is(err, store.ErrQuota)
		}
		if _, err := n1.CreateACL(ctx, newACL("A", false, "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")); !quota(err) {
			t.Errorf("4 entries in one ACL (max 3): %v", err)
		}
		a1 := newACL("A", false, "192.0.2.1", "192.0.2.2", "192.0.2.3")
		if _, err := n1.CreateACL(ctx, a1); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.CreateACL(ctx, newACL("A", false, "198.51.100.1", "198.51.100.2")); !quota(err) {
			t.Errorf("5 entries in the account (max 4): %v", err)
		}
		if _, err := n2.CreateACL(ctx, newACL("A", false, "198.51.100.1")); err != nil {
			t.Fatal(err)
		}
		if _, err := n1.CreateACL(ctx, newACL("A", false, "203.0.113.1")); !quota(err) {
			t.Errorf("a third ACL (max 2): %v", err)
		}
		_, _, err := n2.UpdateACL(ctx, "A", a1.UUID, func(x *acl.IPACL) error {
			x.Entries = append(x.Entries, acl.Entry{ID: "e4", IPAddress: "192.0.2.9", Enabled: true})
			return nil
		})
		if !quota(err) {
			t.Errorf("a 4th entry in an ACL (max 3): %v", err)
		}
		if _, err := n1.CreateTrunk(ctx, acl.Trunk{ID: "t1", Account: "A", Status: acl.TrunkEnabled}); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.CreateTrunk(ctx, acl.Trunk{ID: "t2", Account: "A", Status: acl.TrunkEnabled}); !quota(err) {
			t.Errorf("a second trunk (max 1): %v", err)
		}
		if _, err := n1.CreateCredential(ctx, acl.Credential{UUID: "c1", Account: "A", Username: "u1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.CreateCredential(ctx, acl.Credential{UUID: "c2", Account: "A", Username: "u2"}); !quota(err) {
			t.Errorf("a second credential (max 1): %v", err)
		}
	})
}

// Two accounts racing for one address on two nodes: exactly one account ends up listing it.
func TestOverlapRace(t *testing.T) {
	tenancyBackends(t, func(t *testing.T, n1, n2 *store.Store) {
		accounts := []string{"A", "B"}
		for _, id := range accounts {
			mkAccount(t, n1, id, acl.Limits{})
		}
		const rounds = 8
		for r := 0; r < rounds; r++ {
			addr := fmt.Sprintf("192.0.2.%d", r+1)
			var wg sync.WaitGroup
			won := make([]bool, 2)
			for i, id := range accounts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					node := []*store.Store{n1, n2}[i]
					c, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					_, err := node.CreateACL(c, newACLRace(id, r, addr))
					switch {
					case err == nil:
						won[i] = true
					case !errors.Is(err, store.ErrOverlap):
						t.Errorf("round %d, %s: %v", r, id, err)
					}
				}()
			}
			wg.Wait()
			if won[0] == won[1] {
				t.Fatalf("round %d: A won %t, B won %t: want exactly one", r, won[0], won[1])
			}
		}
	})
}

var raceMu sync.Mutex

func newACLRace(account string, r int, addr string) acl.IPACL {
	raceMu.Lock()
	defer raceMu.Unlock()
	a := newACL(account, false, addr)
	a.UUID = fmt.Sprintf("race-%s-%d", account, r)
	return a
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestOverlapNodesInTurn: two nodes adding entries in turn (a load balancer) keep their
// overlap index by catching up the one ACL each write changed, not by reading every entry
// of every account for each write, and still refuse the other account an address written
// a moment ago through the other node.
func TestOverlapNodesInTurn(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	n1, n2 := openRedisStore(t, ro, p), openRedisStore(t, ro, p)
	mkAccount(t, n1, "A", acl.Limits{})
	mkAccount(t, n1, "B", acl.Limits{})
	acls := map[string]acl.IPACL{"A": newACL("A", false, "192.0.2.1"), "B": newACL("B", false, "198.51.100.1")}
	for _, a := range acls {
		if _, err := n1.CreateACL(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	add := func(n *store.Store, acct, addr string) error {
		_, _, err := n.UpdateACL(ctx, acct, acls[acct].UUID, func(x *acl.IPACL) error {
			x.Entries = append(x.Entries, acl.Entry{ID: "e-" + addr, IPAddress: addr, Enabled: true})
			return nil
		})
		return err
	}
	// Warm both indexes.
	if err := add(n1, "A", "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	if err := add(n2, "B", "198.51.100.2"); err != nil {
		t.Fatal(err)
	}
	before := store.TenancyRebuilds(n1) + store.TenancyRebuilds(n2)
	const writes = 40
	for i := range writes {
		n, o, acct, other := n1, n2, "A", "B"
		if i%2 == 1 {
			n, o, acct, other = n2, n1, "B", "A"
		}
		addr := fmt.Sprintf("203.0.113.%d", i+1)
		if err := add(n, acct, addr); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if err := add(o, other, addr); !errors.Is(err, store.ErrOverlap) {
			t.Fatalf("write %d: %s's %s through the other node: %v, want ErrOverlap", i, other, addr, err)
		}
	}
	if r := store.TenancyRebuilds(n1) + store.TenancyRebuilds(n2) - before; r > 2 {
		t.Errorf("%d full index rebuilds for %d writes by nodes in turn, want the one-ACL catch-up", r, 2*writes)
	}
}
