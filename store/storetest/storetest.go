// Package storetest is the conformance suite every [store.Store] backend must pass: the
// integrity rules, versioning, pagination, concurrency, the emptied marker, Watch and,
// where the backend keeps data across a reopen, durability.
//
// A backend's test calls [Run] with a function that opens a fresh, empty store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// Open returns a fresh, empty store opened with opts. Closing it is the opener's job
// (t.Cleanup).
type Open func(t *testing.T, opts ...store.Option) *store.Store

// Reopen closes old and opens the same data set again (a process restart).
type Reopen func(t *testing.T, old *store.Store) *store.Store

// Run runs the conformance suite. reopen may be nil when the backend has no notion of a
// restart; the durability test is skipped then.
func Run(t *testing.T, open Open, reopen Reopen) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *store.Store)
	}{
		{"Accounts", testAccounts},
		{"ACLCRUD", testACLCRUD},
		{"CredentialCRUD", testCredentialCRUD},
		{"TrunkCRUD", testTrunkCRUD},
		{"AccountIsolation", testIsolation},
		{"ObjectNeedsAccount", testNeedsAccount},
		{"InvalidInput", testInvalidInput},
		{"DuplicateID", testDuplicateID},
		{"DomainUnique", testDomainUnique},
		{"UsernameUnique", testUsernameUnique},
		{"InvalidRefs", testInvalidRefs},
		{"InUse", testInUse},
		{"FailedWriteChangesNothing", testFailedWrite},
		{"Pagination", testPagination},
		{"ConcurrentWriters", testConcurrentWriters},
		{"LoadConsistent", testLoadConsistent},
		{"Emptied", testEmptied},
		{"Watch", testWatch},
		{"Audit", testAudit},
		{"AuditIsolationAndPages", testAuditPages},
		{"IfMatch", testIfMatch},
		{"IfMatchConcurrent", testIfMatchConcurrent},
		{"Idempotency", testIdempotency},
		{"IdempotencyConcurrent", testIdempotencyConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	t.Run("AuditLimit", func(t *testing.T) { testAuditLimit(t, open(t, store.WithAuditLimit(5))) })
	t.Run("IdempotencyExpires", func(t *testing.T) {
		testIdempotencyExpires(t, open(t, store.WithIdempotencyTTL(300*time.Millisecond)))
	})
	t.Run("Restart", func(t *testing.T) {
		if reopen == nil {
			t.Skip("backend has no restart")
		}
		testRestart(t, open(t), reopen)
	})
}

// ---- helpers ----

var ctx = context.Background()

const (
	accA = "MAAAAAAAAAAAAAAAAAAA"
	accB = "MBBBBBBBBBBBBBBBBBBB"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func entry(id, addr string) acl.Entry {
	return acl.Entry{ID: id, IPAddress: addr, Description: "pbx " + id, Enabled: true, CreatedAt: t0, UpdatedAt: t0}
}

func mkACL(account, id string, addrs ...string) acl.IPACL {
	a := acl.IPACL{UUID: id, Account: account, Name: "acl " + id}
	for i, ad := range addrs {
		a.Entries = append(a.Entries, entry(fmt.Sprintf("%s-e%d", id, i), ad))
	}
	return a
}

func mkCred(account, id, user string) acl.Credential {
	return acl.Credential{UUID: id, Account: account, Name: "cred " + id, Username: user,
		Realm: "example.org", HA1MD5: "0123456789abcdef0123456789abcdef", HA1SHA256: "00ff"}
}

func mkTrunk(account, id, domain, aclID, credID string) acl.Trunk {
	return acl.Trunk{ID: acl.TrunkID(id), Account: account, Name: "trunk " + id,
		Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled, Domain: domain,
		ACLUUID: aclID, CredentialUUID: credID}
}

func version(t *testing.T, s *store.Store) uint64 {
	t.Helper()
	v, err := s.Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	return v
}

// bumped asserts a write succeeded and moved the version from before by exactly 1.
func bumped(t *testing.T, s *store.Store, before, got uint64, err error) uint64 {
	t.Helper()
	if err != nil {
		t.Fatalf("write failed: %v", err)
	}
	if got != before+1 {
		t.Fatalf("write returned version %d, want %d", got, before+1)
	}
	if now := version(t, s); now != got {
		t.Fatalf("Version() = %d after a write that returned %d", now, got)
	}
	return got
}

// must runs a write and asserts it bumped the version by 1.
func must(t *testing.T, s *store.Store, write func() (uint64, error)) uint64 {
	t.Helper()
	before := version(t, s)
	v, err := write()
	return bumped(t, s, before, v, err)
}

// dump is the whole data set at its version, as comparable bytes.
func dump(t *testing.T, s *store.Store) []byte {
	t.Helper()
	ds, err := s.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	raw, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// auditDump is the audit log of every account (and of the accounts the suite names
// without creating them), as comparable bytes.
func auditDump(t *testing.T, s *store.Store) []byte {
	t.Helper()
	accts, err := s.Accounts(ctx)
	if err != nil {
		t.Fatalf("Accounts: %v", err)
	}
	ids := []string{"MNONE", accA, accB}
	for _, a := range accts {
		ids = append(ids, a.AuthID)
	}
	logs := map[string][]store.AuditEntry{}
	for _, id := range ids {
		entries, total, err := s.Audit(ctx, id, store.Page{})
		if err != nil {
			t.Fatalf("Audit(%s): %v", id, err)
		}
		if total != len(entries) {
			t.Fatalf("Audit(%s): %d entries, total %d", id, len(entries), total)
		}
		logs[id] = entries
	}
	raw, err := json.Marshal(logs)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unchanged runs a write that must fail with want and asserts it changed nothing: not
// the data set, not its version, not any audit log.
func unchanged(t *testing.T, s *store.Store, want error, write func() error) error {
	t.Helper()
	before, audit := dump(t, s), auditDump(t, s)
	err := write()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
	if after := dump(t, s); !bytes.Equal(before, after) {
		t.Fatalf("failed write changed the data set:\nbefore %s\nafter  %s", before, after)
	}
	if after := auditDump(t, s); !bytes.Equal(audit, after) {
		t.Fatalf("failed write changed an audit log:\nbefore %s\nafter  %s", audit, after)
	}
	return err
}

func seedAccounts(t *testing.T, s *store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		must(t, s, func() (uint64, error) { return s.CreateAccount(ctx, acl.Account{AuthID: id, Name: id, TokenHash: "h"}) })
	}
}

func entryAddrs(a acl.IPACL) []string { return a.IPAddresses() }

// ---- tests ----

func testAccounts(t *testing.T, s *store.Store) {
	if v := version(t, s); v != 0 {
		t.Fatalf("fresh store at version %d, want 0", v)
	}
	if got, err := s.Accounts(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Accounts on a fresh store = %v, %v", got, err)
	}
	must(t, s, func() (uint64, error) {
		return s.CreateAccount(ctx, acl.Account{AuthID: accB, Name: "b", TokenHash: "hb", CreatedAt: t0.Add(time.Hour)})
	})
	must(t, s, func() (uint64, error) {
		return s.CreateAccount(ctx, acl.Account{AuthID: accA, Name: "a", TokenHash: "ha", CreatedAt: t0})
	})
	unchanged(t, s, store.ErrConflict, func() error {
		_, err := s.CreateAccount(ctx, acl.Account{AuthID: accA, Name: "again"})
		return err
	})
	a, err := s.Account(ctx, accA)
	if err != nil || a.Name != "a" || a.TokenHash != "ha" || !a.CreatedAt.Equal(t0) {
		t.Fatalf("Account(%s) = %+v, %v", accA, a, err)
	}
	if _, err := s.Account(ctx, "MNOSUCHACCOUNT"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown account: %v, want ErrNotFound", err)
	}
	all, err := s.Accounts(ctx)
	if err != nil || len(all) != 2 || all[0].AuthID != accA || all[1].AuthID != accB {
		t.Fatalf("Accounts = %+v, %v; want [A B] by created_at", all, err)
	}
	// A store-filled created_at.
	must(t, s, func() (uint64, error) { return s.CreateAccount(ctx, acl.Account{AuthID: "MC", TokenHash: "h"}) })
	if c, err := s.Account(ctx, "MC"); err != nil || c.CreatedAt.IsZero() {
		t.Fatalf("created_at not filled: %+v, %v", c, err)
	}
}

func testACLCRUD(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	in := mkACL(accA, "acl-1", "192.0.2.10", "198.51.100.0/24", "2001:db8::/48")
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, in) })
	got, err := s.GetACL(ctx, accA, "acl-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != in.Name || !slices.Equal(entryAddrs(got), entryAddrs(in)) || got.Account != accA {
		t.Fatalf("GetACL = %+v, want %+v", got, in)
	}
	if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Fatalf("timestamps not filled: created %v updated %v", got.CreatedAt, got.UpdatedAt)
	}
	list, total, err := s.ListACLs(ctx, accA, store.Page{})
	if err != nil || total != 1 || len(list) != 1 || list[0].UUID != "acl-1" {
		t.Fatalf("ListACLs = %v, %d, %v", list, total, err)
	}

	before := version(t, s)
	later := got.UpdatedAt.Add(time.Hour)
	upd, v, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
		a.Name = "renamed"
		a.Entries = append(a.Entries[:1], entry("new", "203.0.113.7"))
		a.Entries[0].Enabled = false
		a.UpdatedAt = later
		return nil
	})
	bumped(t, s, before, v, err)
	if upd.Name != "renamed" || !slices.Equal(entryAddrs(upd), []string{"192.0.2.10", "203.0.113.7"}) || upd.Entries[0].Enabled {
		t.Fatalf("UpdateACL returned %+v", upd)
	}
	if !upd.UpdatedAt.Equal(later) || !upd.CreatedAt.Equal(got.CreatedAt) {
		t.Fatalf("UpdateACL timestamps: created %v updated %v", upd.CreatedAt, upd.UpdatedAt)
	}
	if again, _ := s.GetACL(ctx, accA, "acl-1"); again.Name != "renamed" || len(again.Entries) != 2 || again.Entries[0].Enabled {
		t.Fatalf("update not stored: %+v", again)
	}
	// An update that leaves updated_at alone gets a fresh one... or at least not an older one.
	upd2, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error { a.Name = "again"; return nil })
	if err != nil || upd2.UpdatedAt.Equal(later) {
		t.Fatalf("updated_at not refreshed: %v, %v", upd2.UpdatedAt, err)
	}
	// An ACL may lose all its entries (they are deleted one by one).
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error { a.Entries = nil; return nil })
		return v, err
	})

	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
	if _, err := s.GetACL(ctx, accA, "acl-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetACL after delete: %v", err)
	}
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.DeleteACL(ctx, accA, "acl-1"); return err })
	unchanged(t, s, store.ErrNotFound, func() error {
		_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(*acl.IPACL) error { return nil })
		return err
	})
	// The id is free again.
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, in) })
}

func testCredentialCRUD(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	in := mkCred(accA, "cred-1", "alice")
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, in) })
	got, err := s.GetCredential(ctx, accA, "cred-1")
	if err != nil || got.Username != "alice" || got.HA1MD5 != in.HA1MD5 || got.HA1SHA256 != in.HA1SHA256 || got.Realm != "example.org" {
		t.Fatalf("GetCredential = %+v, %v", got, err)
	}
	list, total, err := s.ListCredentials(ctx, accA, store.Page{})
	if err != nil || total != 1 || len(list) != 1 || list[0].UUID != "cred-1" {
		t.Fatalf("ListCredentials = %v, %d, %v", list, total, err)
	}
	before := version(t, s)
	upd, v, err := s.UpdateCredential(ctx, accA, "cred-1", func(c *acl.Credential) error {
		c.Username, c.HA1MD5, c.Name = "alice2", "ffffffffffffffffffffffffffffffff", "renamed"
		return nil
	})
	bumped(t, s, before, v, err)
	if upd.Username != "alice2" || upd.Name != "renamed" {
		t.Fatalf("UpdateCredential = %+v", upd)
	}
	if again, _ := s.GetCredential(ctx, accA, "cred-1"); again.Username != "alice2" || again.HA1MD5 != upd.HA1MD5 {
		t.Fatalf("update not stored: %+v", again)
	}
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
	if _, err := s.GetCredential(ctx, accA, "cred-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetCredential after delete: %v", err)
	}
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.DeleteCredential(ctx, accA, "cred-1"); return err })
}

func testTrunkCRUD(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.10")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	in := mkTrunk(accA, "trunk-1", "trunk-1.example.org", "acl-1", "cred-1")
	in.DigestAlgorithms = []string{acl.DigestSHA256, acl.DigestMD5}
	in.UpstreamURI = "sip:core.example.org:5060"
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, in) })
	got, err := s.GetTrunk(ctx, accA, "trunk-1")
	if err != nil || got.Domain != in.Domain || got.ACLUUID != "acl-1" || got.CredentialUUID != "cred-1" ||
		!slices.Equal(got.DigestAlgorithms, in.DigestAlgorithms) || got.UpstreamURI != in.UpstreamURI {
		t.Fatalf("GetTrunk = %+v, %v", got, err)
	}
	list, total, err := s.ListTrunks(ctx, accA, store.Page{})
	if err != nil || total != 1 || len(list) != 1 || list[0].ID != "trunk-1" {
		t.Fatalf("ListTrunks = %v, %d, %v", list, total, err)
	}
	before := version(t, s)
	upd, v, err := s.UpdateTrunk(ctx, accA, "trunk-1", func(tr *acl.Trunk) error {
		tr.Status, tr.ACLUUID, tr.Domain = acl.TrunkDisabled, "", "other.example.org"
		return nil
	})
	bumped(t, s, before, v, err)
	if upd.Status != acl.TrunkDisabled || upd.ACLUUID != "" || upd.Domain != "other.example.org" {
		t.Fatalf("UpdateTrunk = %+v", upd)
	}
	// A trunk with neither ACL nor credential is storable (it accepts nothing).
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "bare", "bare.example.org", "", "")) })
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "trunk-1") })
	if _, err := s.GetTrunk(ctx, accA, "trunk-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTrunk after delete: %v", err)
	}
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.DeleteTrunk(ctx, accA, "trunk-1"); return err })
	// Deleting the trunk released the ACL and credential.
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
}

func testIsolation(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-a", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-a", "alice")) })
	must(t, s, func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "trunk-a", "a.example.org", "acl-a", "cred-a"))
	})

	notFound := []struct {
		name string
		op   func() error
	}{
		{"GetACL", func() error { _, err := s.GetACL(ctx, accB, "acl-a"); return err }},
		{"UpdateACL", func() error {
			_, _, err := s.UpdateACL(ctx, accB, "acl-a", func(a *acl.IPACL) error { a.Name = "stolen"; return nil })
			return err
		}},
		{"DeleteACL", func() error { _, err := s.DeleteACL(ctx, accB, "acl-a"); return err }},
		{"GetCredential", func() error { _, err := s.GetCredential(ctx, accB, "cred-a"); return err }},
		{"UpdateCredential", func() error {
			_, _, err := s.UpdateCredential(ctx, accB, "cred-a", func(c *acl.Credential) error { c.Name = "stolen"; return nil })
			return err
		}},
		{"DeleteCredential", func() error { _, err := s.DeleteCredential(ctx, accB, "cred-a"); return err }},
		{"GetTrunk", func() error { _, err := s.GetTrunk(ctx, accB, "trunk-a"); return err }},
		{"UpdateTrunk", func() error {
			_, _, err := s.UpdateTrunk(ctx, accB, "trunk-a", func(tr *acl.Trunk) error { tr.Name = "stolen"; return nil })
			return err
		}},
		{"DeleteTrunk", func() error { _, err := s.DeleteTrunk(ctx, accB, "trunk-a"); return err }},
	}
	for _, tc := range notFound {
		t.Run(tc.name, func(t *testing.T) { unchanged(t, s, store.ErrNotFound, tc.op) })
	}
	if l, n, err := s.ListACLs(ctx, accB, store.Page{}); err != nil || n != 0 || len(l) != 0 {
		t.Fatalf("B sees A's ACLs: %v %d %v", l, n, err)
	}
	if l, n, err := s.ListCredentials(ctx, accB, store.Page{}); err != nil || n != 0 || len(l) != 0 {
		t.Fatalf("B sees A's credentials: %v %d %v", l, n, err)
	}
	if l, n, err := s.ListTrunks(ctx, accB, store.Page{}); err != nil || n != 0 || len(l) != 0 {
		t.Fatalf("B sees A's trunks: %v %d %v", l, n, err)
	}
	// A still sees everything of its own.
	if _, n, _ := s.ListTrunks(ctx, accA, store.Page{}); n != 1 {
		t.Fatalf("A lists %d trunks, want 1", n)
	}
}

func testNeedsAccount(t *testing.T, s *store.Store) {
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.CreateACL(ctx, mkACL("MNONE", "x", "192.0.2.1")); return err })
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.CreateCredential(ctx, mkCred("MNONE", "x", "u")); return err })
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.CreateTrunk(ctx, mkTrunk("MNONE", "x", "", "", "")); return err })
	if v := version(t, s); v != 0 {
		t.Fatalf("failed writes moved the version to %d", v)
	}
}

func testInvalidInput(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	cases := []struct {
		name string
		op   func() error
	}{
		{"empty account id", func() error { _, err := s.CreateAccount(ctx, acl.Account{}); return err }},
		{"acl empty id", func() error { _, err := s.CreateACL(ctx, mkACL(accA, "", "192.0.2.1")); return err }},
		{"acl slash in id", func() error { _, err := s.CreateACL(ctx, mkACL(accA, "a/b", "192.0.2.1")); return err }},
		{"acl host bits set", func() error { _, err := s.CreateACL(ctx, mkACL(accA, "x", "10.0.0.5/8")); return err }},
		{"acl duplicate address", func() error { _, err := s.CreateACL(ctx, mkACL(accA, "x", "192.0.2.1", "192.0.2.1")); return err }},
		{"acl not canonical", func() error { _, err := s.CreateACL(ctx, mkACL(accA, "x", "192.0.2.1/32")); return err }},
		{"credential without username", func() error { _, err := s.CreateCredential(ctx, mkCred(accA, "c", "")); return err }},
		{"trunk empty id", func() error { _, err := s.CreateTrunk(ctx, mkTrunk(accA, "", "", "", "")); return err }},
		{"negative page", func() error { _, _, err := s.ListACLs(ctx, accA, store.Page{Offset: -1}); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { unchanged(t, s, store.ErrInvalid, tc.op) })
	}
	// The acl validation error is kept for the API's message.
	_, err := s.CreateACL(ctx, mkACL(accA, "x", "10.0.0.5/8"))
	var ve *acl.ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, acl.ErrInvalidPrefix) {
		t.Fatalf("CreateACL error %v does not carry the *acl.ValidationError", err)
	}
}

func testDuplicateID(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "trunk-1", "t1.example.org", "", "")) })
	for _, acc := range []string{accA, accB} { // ids are unique across accounts
		unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateACL(ctx, mkACL(acc, "acl-1", "192.0.2.2")); return err })
		unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateCredential(ctx, mkCred(acc, "cred-1", "bob")); return err })
		unchanged(t, s, store.ErrConflict, func() error {
			_, err := s.CreateTrunk(ctx, mkTrunk(acc, "trunk-1", "t2.example.org", "", ""))
			return err
		})
	}
}

func testDomainUnique(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "ta", "PBX1.example.org", "", "")) })
	unchanged(t, s, store.ErrConflict, func() error {
		_, err := s.CreateTrunk(ctx, mkTrunk(accB, "tb", "pbx1.EXAMPLE.org", "", ""))
		return err
	})
	unchanged(t, s, store.ErrConflict, func() error {
		_, err := s.CreateTrunk(ctx, mkTrunk(accA, "ta2", "pbx1.example.org", "", ""))
		return err
	})
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accB, "tb", "pbx2.example.org", "", "")) })
	unchanged(t, s, store.ErrConflict, func() error {
		_, _, err := s.UpdateTrunk(ctx, accB, "tb", func(tr *acl.Trunk) error { tr.Domain = "Pbx1.Example.Org"; return nil })
		return err
	})
	// A trunk may keep (or re-case) its own domain.
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateTrunk(ctx, accA, "ta", func(tr *acl.Trunk) error { tr.Domain = "pbx1.example.org"; return nil })
		return v, err
	})
	// Moving away frees the old domain; deleting frees the current one.
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateTrunk(ctx, accA, "ta", func(tr *acl.Trunk) error { tr.Domain = "pbx3.example.org"; return nil })
		return v, err
	})
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateTrunk(ctx, accB, "tb", func(tr *acl.Trunk) error { tr.Domain = "PBX1.example.org"; return nil })
		return v, err
	})
	unchanged(t, s, store.ErrConflict, func() error {
		_, err := s.CreateTrunk(ctx, mkTrunk(accB, "tc", "pbx3.example.org", "", ""))
		return err
	})
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "ta") })
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accB, "tc", "pbx3.example.org", "", "")) })
}

func testUsernameUnique(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "ca", "alice")) })
	unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateCredential(ctx, mkCred(accB, "cb", "alice")); return err })
	unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateCredential(ctx, mkCred(accA, "ca2", "alice")); return err })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accB, "cb", "bob")) })
	unchanged(t, s, store.ErrConflict, func() error {
		_, _, err := s.UpdateCredential(ctx, accB, "cb", func(c *acl.Credential) error { c.Username = "alice"; return nil })
		return err
	})
	// Renaming frees the old username, deleting frees the current one.
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateCredential(ctx, accA, "ca", func(c *acl.Credential) error { c.Username = "carol"; return nil })
		return v, err
	})
	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateCredential(ctx, accB, "cb", func(c *acl.Credential) error { c.Username = "alice"; return nil })
		return v, err
	})
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "ca") })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accB, "cc", "carol")) })
}

func testInvalidRefs(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-a", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-a", "alice")) })
	bad := []acl.Trunk{
		mkTrunk(accA, "t1", "t1.example.org", "acl-missing", ""),
		mkTrunk(accA, "t1", "t1.example.org", "", "cred-missing"),
		mkTrunk(accB, "t1", "t1.example.org", "acl-a", ""),  // another account's ACL
		mkTrunk(accB, "t1", "t1.example.org", "", "cred-a"), // another account's credential
	}
	for i, tr := range bad {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			unchanged(t, s, store.ErrInvalidRef, func() error { _, err := s.CreateTrunk(ctx, tr); return err })
		})
	}
	must(t, s, func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "acl-a", "cred-a"))
	})
	unchanged(t, s, store.ErrInvalidRef, func() error {
		_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.ACLUUID = "acl-missing"; return nil })
		return err
	})
	unchanged(t, s, store.ErrInvalidRef, func() error {
		_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.CredentialUUID = "cred-missing"; return nil })
		return err
	})
}

func testInUse(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "t2", "t2.example.org", "acl-1", "cred-1"))
	})
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "acl-1", "")) })
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "t3", "t3.example.org", "", "")) })

	check := func(err error, kind, id string, trunks ...string) {
		t.Helper()
		var iu *store.InUseError
		if !errors.As(err, &iu) {
			t.Fatalf("got %v, want *InUseError", err)
		}
		if iu.Kind != kind || iu.ID != id || !slices.Equal(iu.Trunks, trunks) {
			t.Fatalf("InUseError = %+v, want %s %s used by %v", iu, kind, id, trunks)
		}
	}
	err := unchanged(t, s, store.ErrConflict, func() error { _, err := s.DeleteACL(ctx, accA, "acl-1"); return err })
	check(err, "ipacl", "acl-1", "t1", "t2")
	err = unchanged(t, s, store.ErrConflict, func() error { _, err := s.DeleteCredential(ctx, accA, "cred-1"); return err })
	check(err, "credential", "cred-1", "t2")

	must(t, s, func() (uint64, error) {
		_, v, err := s.UpdateTrunk(ctx, accA, "t2", func(tr *acl.Trunk) error { tr.ACLUUID, tr.CredentialUUID = "", ""; return nil })
		return v, err
	})
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
	err = unchanged(t, s, store.ErrConflict, func() error { _, err := s.DeleteACL(ctx, accA, "acl-1"); return err })
	check(err, "ipacl", "acl-1", "t1")
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1") })
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
}

func testFailedWrite(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "acl-1", "")) })
	before := version(t, s)
	boom := errors.New("caller says no")

	// fn's own error comes back unchanged (not wrapped), after fn already mutated its copy.
	_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
		a.Name, a.Entries = "half-done", nil
		return boom
	})
	if err != boom {
		t.Fatalf("UpdateACL fn error came back as %v", err)
	}
	cases := []struct {
		name string
		want error
		op   func() error
	}{
		{"acl fn error", boom, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error { a.Name = "x"; return boom })
			return err
		}},
		{"credential fn error", boom, func() error {
			_, _, err := s.UpdateCredential(ctx, accA, "cred-1", func(c *acl.Credential) error { c.Username = "x"; return boom })
			return err
		}},
		{"trunk fn error", boom, func() error {
			_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.Domain = "x.example.org"; return boom })
			return err
		}},
		{"acl id change", store.ErrInvalid, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error { a.UUID = "other"; return nil })
			return err
		}},
		{"acl account change", store.ErrInvalid, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error { a.Account = accB; return nil })
			return err
		}},
		{"credential id change", store.ErrInvalid, func() error {
			_, _, err := s.UpdateCredential(ctx, accA, "cred-1", func(c *acl.Credential) error { c.UUID = "other"; return nil })
			return err
		}},
		{"trunk id change", store.ErrInvalid, func() error {
			_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.ID = "other"; return nil })
			return err
		}},
		{"trunk account change", store.ErrInvalid, func() error {
			_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.Account = accB; return nil })
			return err
		}},
		{"acl invalid entries", store.ErrInvalid, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, entry("bad", "10.0.0.5/8"))
				return nil
			})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { unchanged(t, s, tc.want, tc.op) })
	}
	if v := version(t, s); v != before {
		t.Fatalf("failed writes moved the version from %d to %d", before, v)
	}
	if a, _ := s.GetACL(ctx, accA, "acl-1"); a.Name != "acl acl-1" || len(a.Entries) != 1 {
		t.Fatalf("ACL changed by failed writes: %+v", a)
	}
}

func testPagination(t *testing.T, s *store.Store) {
	// An object of another account must not be counted.
	seedAccounts(t, s, "MOTHER")
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL("MOTHER", "acl-other", "198.51.100.1")) })
	for _, total := range []int{0, 20, 21, 109} {
		t.Run(fmt.Sprint(total), func(t *testing.T) {
			account := fmt.Sprintf("MPAGE%d", total)
			must(t, s, func() (uint64, error) { // above the default quota of ACLs
				return s.CreateAccount(ctx, acl.Account{AuthID: account, TokenHash: "h", Limits: acl.Limits{MaxACLs: 200}})
			})
			rng := rand.New(rand.NewPCG(uint64(total), 7))
			for i := range total {
				a := mkACL(account, fmt.Sprintf("acl-%03d-%d", rng.IntN(1000), i), fmt.Sprintf("10.%d.0.1", total))
				// Few distinct created_at values, so id breaks most ties.
				a.CreatedAt = t0.Add(time.Duration(rng.IntN(5)) * time.Second)
				must(t, s, func() (uint64, error) { return s.CreateACL(ctx, a) })
			}
			all, n, err := s.ListACLs(ctx, account, store.Page{})
			if err != nil || n != total || len(all) != total {
				t.Fatalf("ListACLs(all) = %d objects, total %d, %v; want %d", len(all), n, err, total)
			}
			if !slices.IsSortedFunc(all, func(a, b acl.IPACL) int {
				if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
					return c
				}
				return cmpString(a.UUID, b.UUID)
			}) {
				t.Fatalf("list not ordered by created_at, id")
			}
			for _, limit := range []int{1, 7, 20} {
				var got []acl.IPACL
				for off := 0; off < total+limit; off += limit {
					page, n, err := s.ListACLs(ctx, account, store.Page{Offset: off, Limit: limit})
					if err != nil || n != total {
						t.Fatalf("page %d/%d: total %d, %v", off, limit, n, err)
					}
					if want := min(limit, max(total-off, 0)); len(page) != want {
						t.Fatalf("page offset %d limit %d has %d objects, want %d", off, limit, len(page), want)
					}
					got = append(got, page...)
				}
				if !slices.EqualFunc(got, all, func(a, b acl.IPACL) bool { return a.UUID == b.UUID }) {
					t.Fatalf("pages of %d do not add up to the full list", limit)
				}
			}
			page, n, err := s.ListACLs(ctx, account, store.Page{Offset: total + 5, Limit: 20})
			if err != nil || n != total || page == nil || len(page) != 0 {
				t.Fatalf("offset past the end = %v (nil %t), total %d, %v", page, page == nil, n, err)
			}
		})
	}
	// Credentials and trunks page the same way.
	seedAccounts(t, s, "MPAGEX")
	for i := range 21 {
		must(t, s, func() (uint64, error) {
			return s.CreateCredential(ctx, mkCred("MPAGEX", fmt.Sprintf("c%02d", i), fmt.Sprintf("u%02d", i)))
		})
		must(t, s, func() (uint64, error) {
			return s.CreateTrunk(ctx, mkTrunk("MPAGEX", fmt.Sprintf("t%02d", i), fmt.Sprintf("t%02d.example.org", i), "", ""))
		})
	}
	creds, n, err := s.ListCredentials(ctx, "MPAGEX", store.Page{Offset: 20, Limit: 20})
	if err != nil || n != 21 || len(creds) != 1 {
		t.Fatalf("ListCredentials page 2 = %d objects, total %d, %v", len(creds), n, err)
	}
	trunks, n, err := s.ListTrunks(ctx, "MPAGEX", store.Page{Offset: 0, Limit: 20})
	if err != nil || n != 21 || len(trunks) != 20 {
		t.Fatalf("ListTrunks page 1 = %d objects, total %d, %v", len(trunks), n, err)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testConcurrentWriters(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "198.51.100.0/24")) })
	before := version(t, s)
	const writers = 50
	var wg sync.WaitGroup
	versions := make([]uint64, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, versions[i], errs[i] = s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, entry(fmt.Sprintf("w%d", i), fmt.Sprintf("192.0.2.%d", i+1)))
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != before+1+uint64(i) {
			t.Fatalf("writers got versions %v, want %d..%d each once", versions, before+1, before+writers)
		}
	}
	if v := version(t, s); v != before+writers {
		t.Fatalf("version %d after %d writers from %d", v, writers, before)
	}
	a, err := s.GetACL(ctx, accA, "acl-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Entries) != writers+1 {
		t.Fatalf("ACL has %d entries, want %d", len(a.Entries), writers+1)
	}
	have := make(map[string]bool)
	for _, e := range a.Entries {
		have[e.IPAddress] = true
	}
	for i := range writers {
		if !have[fmt.Sprintf("192.0.2.%d", i+1)] {
			t.Fatalf("entry of writer %d lost", i)
		}
	}
}

func testLoadConsistent(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	v0 := version(t, s)
	const writes = 40
	done := make(chan struct{})
	var wg sync.WaitGroup
	var loads, bad int
	var mu sync.Mutex
	var firstBad string
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				ds, err := s.Load(ctx)
				mu.Lock()
				loads++
				// Every write below adds exactly one object, alternating kinds and accounts.
				if err != nil || uint64(len(ds.ACLs)+len(ds.Credentials)+len(ds.Trunks)) != ds.Version-v0 {
					bad++
					if firstBad == "" {
						firstBad = fmt.Sprintf("err %v, ds %+v", err, ds)
					}
				}
				mu.Unlock()
			}
		})
	}
	for i := range writes {
		acc := []string{accA, accB}[i%2]
		id := fmt.Sprintf("o%02d", i)
		var err error
		switch i % 3 {
		case 0:
			_, err = s.CreateACL(ctx, mkACL(acc, id, map[string]string{accA: "192.0.2.1", accB: "198.51.100.1"}[acc]))
		case 1:
			_, err = s.CreateCredential(ctx, mkCred(acc, id, "user-"+id))
		default:
			_, err = s.CreateTrunk(ctx, mkTrunk(acc, id, id+".example.org", "", ""))
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	close(done)
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of %d loads were inconsistent; first: %s", bad, loads, firstBad)
	}
	ds, err := s.Load(ctx)
	if err != nil || ds.Version != v0+writes || len(ds.ACLs) != 14 || len(ds.Credentials) != 13 || len(ds.Trunks) != 13 {
		t.Fatalf("final Load: version %d (want %d), %d/%d/%d objects, %v", ds.Version, v0+writes,
			len(ds.ACLs), len(ds.Credentials), len(ds.Trunks), err)
	}
	// Load covers all accounts, each list ordered by account.
	if !slices.IsSortedFunc(ds.ACLs, func(a, b acl.IPACL) int { return cmpString(a.Account, b.Account) }) {
		t.Fatal("Load ACLs not grouped by account")
	}
	t.Logf("%d consistent loads during %d writes", loads, writes)
}

func testEmptied(t *testing.T, s *store.Store) {
	state := func(wantEmpty, wantEmptied bool) {
		t.Helper()
		ds, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ds.Empty() != wantEmpty || ds.Emptied != wantEmptied {
			t.Fatalf("Load: Empty %t Emptied %t, want %t %t", ds.Empty(), ds.Emptied, wantEmpty, wantEmptied)
		}
	}
	state(true, false) // fresh: empty, but never emptied on purpose
	seedAccounts(t, s, accA)
	state(true, false)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	state(false, false)
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
	state(false, false)
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
	state(true, true)
	// Account writes do not touch the marker; a failed write does not either.
	seedAccounts(t, s, accB)
	unchanged(t, s, store.ErrNotFound, func() error { _, err := s.DeleteTrunk(ctx, accA, "none"); return err })
	state(true, true)
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "", "")) })
	state(false, false)
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1") })
	state(true, true)
}

// watchRecorder collects what Watch applies.
type watchRecorder struct {
	mu    sync.Mutex
	snaps []*acl.Snapshot
}

func (r *watchRecorder) apply(s *acl.Snapshot) {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
}

func (r *watchRecorder) last() *acl.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil
	}
	return r.snaps[len(r.snaps)-1]
}

func (r *watchRecorder) versions() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.snaps))
	for i, s := range r.snaps {
		out[i] = s.Version()
	}
	return out
}

// StartWatch runs s.Watch until the test ends and returns a function that waits (up to
// 10 s) for a snapshot at version v or later and returns it.
func StartWatch(t *testing.T, s *store.Store) (waitFor func(v uint64) *acl.Snapshot, versions func() []uint64) {
	t.Helper()
	wctx, cancel := context.WithCancel(context.Background())
	rec := &watchRecorder{}
	done := make(chan error, 1)
	go func() { done <- s.Watch(wctx, rec.apply) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context was canceled")
		}
	})
	waitFor = func(v uint64) *acl.Snapshot {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if snap := rec.last(); snap != nil && snap.Version() >= v {
				return snap
			}
			if time.Now().After(deadline) {
				t.Fatalf("no snapshot at version %d within 10s; applied %v", v, rec.versions())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return waitFor, rec.versions
}

func testWatch(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.0/24")) })
	v := version(t, s)
	waitFor, versions := StartWatch(t, s)
	snap := waitFor(v)
	if snap.Version() != v || s.AppliedVersion() != v {
		t.Fatalf("first snapshot at %d (applied %d), want %d", snap.Version(), s.AppliedVersion(), v)
	}

	// A burst of writes: the snapshot catches up with the last one.
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "T1.example.org", "acl-1", "cred-1"))
	})
	for i := range 5 {
		must(t, s, func() (uint64, error) {
			_, v, err := s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, entry(fmt.Sprintf("x%d", i), fmt.Sprintf("203.0.113.%d", i+1)))
				return nil
			})
			return v, err
		})
	}
	v = version(t, s)
	snap = waitFor(v)
	if snap.Version() != v {
		t.Fatalf("snapshot at %d, want %d", snap.Version(), v)
	}
	src := netip.MustParseAddr("203.0.113.5")
	if id, ok := snap.TrunkByDomain("t1.example.org"); !ok || id != "t1" {
		t.Fatalf("TrunkByDomain = %q %t", id, ok)
	}
	if !snap.Allows("t1", src) || !snap.Allows("t1", netip.MustParseAddr("192.0.2.77")) {
		t.Fatal("snapshot does not allow the ACL's sources")
	}
	if id, ok := snap.MatchSource(src); !ok || id != "t1" {
		t.Fatalf("MatchSource(%v) = %q %t", src, id, ok)
	}
	if _, ok := snap.Credential("alice"); !ok {
		t.Fatal("credential missing from snapshot")
	}

	// A failed write produces no new version.
	_, _, _ = s.UpdateACL(ctx, accA, "acl-1", func(*acl.IPACL) error { return errors.New("no") })

	// Emptying on purpose is applied (an empty snapshot replaces the non-empty one).
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1") })
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
	v = version(t, s)
	snap = waitFor(v)
	if !snap.Empty() || snap.Version() != v {
		t.Fatalf("deliberately emptied data set not applied: version %d empty %t", snap.Version(), snap.Empty())
	}
	vs := versions()
	if !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) {
		t.Fatalf("snapshots applied out of order or twice: %v", vs)
	}
	if s.AppliedVersion() != v {
		t.Fatalf("AppliedVersion %d, want %d", s.AppliedVersion(), v)
	}
}

func testRestart(t *testing.T, s *store.Store, reopen Reopen) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "acl-1", "cred-1"))
	})
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-2", "bob")) })
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-2") })
	v := version(t, s)
	before := dump(t, s)

	s = reopen(t, s)
	if got := version(t, s); got != v {
		t.Fatalf("version %d after restart, want %d", got, v)
	}
	if after := dump(t, s); !bytes.Equal(before, after) {
		t.Fatalf("data changed across restart:\nbefore %s\nafter  %s", before, after)
	}
	// The indexes survived too.
	unchanged(t, s, store.ErrConflict, func() error {
		_, err := s.CreateTrunk(ctx, mkTrunk(accA, "t2", "T1.example.org", "", ""))
		return err
	})
	unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateCredential(ctx, mkCred(accA, "cred-3", "alice")); return err })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-2", "bob")) })

	// So does the emptied marker.
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1") })
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1") })
	must(t, s, func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-2") })
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })
	v = version(t, s)
	s = reopen(t, s)
	ds, err := s.Load(ctx)
	if err != nil || ds.Version != v || !ds.Empty() || !ds.Emptied {
		t.Fatalf("after restart: %+v, %v; want empty, emptied, version %d", ds, err, v)
	}
}
