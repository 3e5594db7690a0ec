package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// The audit log, If-Match and idempotency: what every write records and checks inside
// its own transaction.

// auditOf returns account's whole audit log, newest first.
func auditOf(t *testing.T, s *store.Store, account string) []store.AuditEntry {
	t.Helper()
	entries, total, err := s.Audit(ctx, account, store.Page{})
	if err != nil {
		t.Fatalf("Audit(%s): %v", account, err)
	}
	if total != len(entries) {
		t.Fatalf("Audit(%s): %d entries, total %d", account, len(entries), total)
	}
	return entries
}

// field decodes one field of an audit before/after object ("" when absent or null).
func field(t *testing.T, raw json.RawMessage, name string) string {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("audit object %s: %v", raw, err)
	}
	if m[name] == nil {
		return ""
	}
	return fmt.Sprint(m[name])
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func testAudit(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	actor := store.Actor(accA, "req-1")
	entryOpts := func(id string) []store.WriteOption {
		return []store.WriteOption{store.Actor(accA, "req-e"), store.ForEntry(id)}
	}
	type want struct {
		v                    uint64
		action, kind, object string
		actor, request       string
	}
	var wants []want
	w := func(action, kind, object, actor, request string, write func() (uint64, error)) {
		t.Helper()
		wants = append(wants, want{must(t, s, write), action, kind, object, actor, request})
	}
	update := func(o []store.WriteOption, id string, fn func(*acl.IPACL) error) func() (uint64, error) {
		return func() (uint64, error) { _, v, err := s.UpdateACL(ctx, accA, id, fn, o...); return v, err }
	}
	w("create", "ipacl", "acl-1", accA, "req-1", func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1"), actor) })
	w("update", "ipacl", "acl-1", accA, "req-1", update([]store.WriteOption{actor}, "acl-1", func(a *acl.IPACL) error { a.Name = "renamed"; return nil }))
	w("create", "entry", "e-new", accA, "req-e", update(entryOpts("e-new"), "acl-1", func(a *acl.IPACL) error {
		a.Entries = append(a.Entries, entry("e-new", "203.0.113.9"))
		return nil
	}))
	w("update", "entry", "e-new", accA, "req-e", update(entryOpts("e-new"), "acl-1", func(a *acl.IPACL) error {
		a.Entries[1].Enabled = false
		return nil
	}))
	w("delete", "entry", "e-new", accA, "req-e", update(entryOpts("e-new"), "acl-1", func(a *acl.IPACL) error {
		a.Entries = a.Entries[:1]
		return nil
	}))
	cred := mkCred(accA, "cred-1", "alice")
	cred.HA1MD5, cred.HA1SHA256 = "5ec7e7ha1md5aaaaaaaaaaaaaaaaaaaa", "5ec7e7ha1sha256bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	w("create", "credential", "cred-1", accA, "req-1", func() (uint64, error) { return s.CreateCredential(ctx, cred, actor) })
	w("update", "credential", "cred-1", accA, "req-1", func() (uint64, error) {
		_, v, err := s.UpdateCredential(ctx, accA, "cred-1", func(c *acl.Credential) error {
			c.HA1MD5, c.HA1SHA256 = "5ec7e7newmd5cccccccccccccccccccc", "5ec7e7newsha256dddddddddddddddddddddddddddddddddddddddddddddddddd"
			return nil
		}, actor)
		return v, err
	})
	w("create", "trunk", "t1", accA, "req-1", func() (uint64, error) {
		return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "acl-1", "cred-1"), actor)
	})
	w("update", "trunk", "t1", accA, "req-1", func() (uint64, error) {
		_, v, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.Status = acl.TrunkDisabled; return nil }, actor)
		return v, err
	})
	w("delete", "trunk", "t1", accA, "req-1", func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1", actor) })
	w("delete", "credential", "cred-1", accA, "req-1", func() (uint64, error) { return s.DeleteCredential(ctx, accA, "cred-1", actor) })
	// No actor option: "system".
	w("delete", "ipacl", "acl-1", store.ActorSystem, "", func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-1") })

	got := auditOf(t, s, accA)
	if len(got) != len(wants)+1 {
		t.Fatalf("%d audit entries, want %d (the account and every write)", len(got), len(wants)+1)
	}
	// The oldest: the account itself (seedAccounts names no actor), without its token hash.
	first := got[len(got)-1]
	if first.Kind != "account" || first.Action != "create" || first.ObjectID != accA || first.Actor != store.ActorSystem ||
		!isNull(first.Before) || field(t, first.After, "auth_id") != accA || field(t, first.After, "token_hash") != "" {
		t.Fatalf("account entry %+v (after %s)", first, first.After)
	}
	ids := map[string]bool{}
	for i, w := range wants {
		e := got[len(wants)-1-i] // newest first
		if e.Version != w.v || e.Action != w.action || e.Kind != w.kind || e.ObjectID != w.object ||
			e.Actor != w.actor || e.RequestID != w.request || e.Account != accA {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
		if e.At.IsZero() || e.ID == "" || ids[e.ID] {
			t.Errorf("entry %d: at %v, id %q (unique ids)", i, e.At, e.ID)
		}
		ids[e.ID] = true
		if (w.action == "create") != isNull(e.Before) || (w.action == "delete") != isNull(e.After) {
			t.Errorf("entry %d (%s): before %s after %s", i, w.action, e.Before, e.After)
		}
	}
	byVersion := func(v uint64) store.AuditEntry {
		for _, e := range got {
			if e.Version == v {
				return e
			}
		}
		t.Fatalf("no audit entry of version %d", v)
		return store.AuditEntry{}
	}
	if e := byVersion(wants[1].v); field(t, e.Before, "name") != "acl acl-1" || field(t, e.After, "name") != "renamed" {
		t.Errorf("ACL rename: before %s after %s", e.Before, e.After)
	}
	if e := byVersion(wants[2].v); field(t, e.After, "ip_address") != "203.0.113.9" || field(t, e.After, "enabled") != "true" {
		t.Errorf("entry create: after %s", e.After)
	}
	if e := byVersion(wants[3].v); field(t, e.Before, "enabled") != "true" || field(t, e.After, "enabled") != "false" {
		t.Errorf("entry update: before %s after %s", e.Before, e.After)
	}
	if e := byVersion(wants[4].v); field(t, e.Before, "id") != "e-new" {
		t.Errorf("entry delete: before %s", e.Before)
	}
	if e := byVersion(wants[7].v); field(t, e.After, "trunk_domain") != "t1.example.org" {
		t.Errorf("trunk create: after %s", e.After)
	}
	// Credentials are logged without their HA1s, before and after.
	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("5ec7e7")) || bytes.Contains(raw, []byte("ha1")) {
		t.Fatalf("the audit log holds HA1s: %s", raw)
	}
	if e := byVersion(wants[5].v); field(t, e.After, "username") != "alice" {
		t.Errorf("credential create: after %s", e.After)
	}

	// An account created by the admin: logged in that account, with the admin as actor.
	must(t, s, func() (uint64, error) {
		return s.CreateAccount(ctx,
			acl.Account{AuthID: accB, Name: "b", TokenHash: "hmac-sha256:5ec7e7salt:5ec7e7mac"}, store.Actor(store.ActorAdmin, "req-admin"))
	})
	b := auditOf(t, s, accB)
	if len(b) != 1 || b[0].Kind != "account" || b[0].Actor != store.ActorAdmin || b[0].RequestID != "req-admin" ||
		strings.Contains(string(b[0].After), "5ec7e7") || field(t, b[0].After, "name") != "b" {
		t.Fatalf("admin-created account: %+v %s", b, b[0].After)
	}
	if n := len(auditOf(t, s, accA)); n != len(got) {
		t.Fatalf("account A's log grew to %d with B's creation", n)
	}
}

func testAuditPages(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	for i := range 24 {
		must(t, s, func() (uint64, error) {
			return s.CreateCredential(ctx, mkCred(accA, fmt.Sprintf("ca%02d", i), fmt.Sprintf("ua%02d", i)))
		})
		if i%8 == 0 {
			must(t, s, func() (uint64, error) {
				return s.CreateCredential(ctx, mkCred(accB, fmt.Sprintf("cb%02d", i), fmt.Sprintf("ub%02d", i)))
			})
		}
	}
	all := auditOf(t, s, accA)
	if len(all) != 25 {
		t.Fatalf("A has %d audit entries, want 25", len(all))
	}
	if !slices.IsSortedFunc(all, func(a, b store.AuditEntry) int { return -cmpUint(a.Version, b.Version) }) {
		t.Fatal("audit log not newest first")
	}
	for _, e := range all {
		if e.Account != accA || strings.HasPrefix(e.ObjectID, "cb") {
			t.Fatalf("A's log holds %+v", e)
		}
	}
	for _, e := range auditOf(t, s, accB) {
		if e.Account != accB || strings.HasPrefix(e.ObjectID, "ca") {
			t.Fatalf("B's log holds %+v", e)
		}
	}
	for _, limit := range []int{1, 7, 20} {
		var pages []store.AuditEntry
		for off := 0; off < 25+limit; off += limit {
			page, total, err := s.Audit(ctx, accA, store.Page{Offset: off, Limit: limit})
			if err != nil || total != 25 || len(page) != min(limit, max(25-off, 0)) {
				t.Fatalf("page %d/%d: %d entries, total %d, %v", off, limit, len(page), total, err)
			}
			pages = append(pages, page...)
		}
		if !slices.EqualFunc(pages, all, func(a, b store.AuditEntry) bool { return a.ID == b.ID }) {
			t.Fatalf("pages of %d do not add up to the whole log", limit)
		}
	}
	if _, _, err := s.Audit(ctx, accA, store.Page{Offset: -1}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("negative offset: %v", err)
	}
	if l, n, err := s.Audit(ctx, "MNOSUCH", store.Page{}); err != nil || n != 0 || len(l) != 0 {
		t.Fatalf("unknown account's log: %v %d %v", l, n, err)
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testAuditLimit(t *testing.T, s *store.Store) { // opened with WithAuditLimit(5)
	seedAccounts(t, s, accA)
	var versions []uint64
	for i := range 12 {
		versions = append(versions, must(t, s, func() (uint64, error) {
			return s.CreateCredential(ctx, mkCred(accA, fmt.Sprintf("c%02d", i), fmt.Sprintf("u%02d", i)))
		}))
	}
	got := auditOf(t, s, accA)
	if len(got) != 5 {
		t.Fatalf("%d entries kept, want the newest 5", len(got))
	}
	for i, e := range got {
		if want := versions[len(versions)-1-i]; e.Version != want {
			t.Fatalf("entry %d at version %d, want %d", i, e.Version, want)
		}
	}
}

func testIfMatch(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1", "192.0.2.2")) })
	must(t, s, func() (uint64, error) { return s.CreateCredential(ctx, mkCred(accA, "cred-1", "alice")) })
	must(t, s, func() (uint64, error) { return s.CreateTrunk(ctx, mkTrunk(accA, "t1", "t1.example.org", "", "")) })
	getACL := func() acl.IPACL {
		t.Helper()
		a, err := s.GetACL(ctx, accA, "acl-1")
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	rename := func(name string) func(*acl.IPACL) error {
		return func(a *acl.IPACL) error { a.Name = name; return nil }
	}
	a := getACL()
	tag := store.ETag(a)
	if tag != store.ETag(getACL()) || !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || len(tag) < 20 {
		t.Fatalf("ETag %s: not a stable strong tag", tag)
	}
	for _, bad := range [][]string{{`"nope"`}, {"W/" + tag}, {}} {
		unchanged(t, s, store.ErrPreconditionFailed, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", rename("x"), store.IfMatch(bad...))
			return err
		})
	}
	upd, _, err := s.UpdateACL(ctx, accA, "acl-1", rename("matched"), store.IfMatch(`"other"`, tag))
	if err != nil || upd.Name != "matched" {
		t.Fatalf("update with the current tag: %+v, %v", upd, err)
	}
	if now := store.ETag(getACL()); now != store.ETag(upd) || now == tag {
		t.Fatalf("tag after the update %s (returned object %s, before %s)", now, store.ETag(upd), tag)
	}
	unchanged(t, s, store.ErrPreconditionFailed, func() error {
		_, _, err := s.UpdateACL(ctx, accA, "acl-1", rename("stale"), store.IfMatch(tag))
		return err
	})
	// "*" means "exists"; a missing object is still ErrNotFound.
	if _, _, err := s.UpdateACL(ctx, accA, "acl-1", rename("star"), store.IfMatch("*")); err != nil {
		t.Fatalf("If-Match *: %v", err)
	}
	unchanged(t, s, store.ErrNotFound, func() error {
		_, _, err := s.UpdateACL(ctx, accA, "acl-none", rename("x"), store.IfMatch("*"))
		return err
	})
	// Every successful update moves the tag, even one that changes nothing else.
	for range 3 {
		before := store.ETag(getACL())
		if _, _, err := s.UpdateACL(ctx, accA, "acl-1", func(*acl.IPACL) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if store.ETag(getACL()) == before {
			t.Fatal("a no-op update left the ETag as it was")
		}
	}

	// Entries: ForEntry checks the entry's own tag.
	a = getACL()
	e0, e1 := a.Entries[0], a.Entries[1]
	disable := func(a *acl.IPACL) error { a.Entries[0].Enabled = false; return nil }
	for _, bad := range []string{store.ETag(a), store.ETag(e1)} {
		unchanged(t, s, store.ErrPreconditionFailed, func() error {
			_, _, err := s.UpdateACL(ctx, accA, "acl-1", disable, store.ForEntry(e0.ID), store.IfMatch(bad))
			return err
		})
	}
	if _, _, err := s.UpdateACL(ctx, accA, "acl-1", disable, store.ForEntry(e0.ID), store.IfMatch(store.ETag(e0))); err != nil {
		t.Fatalf("entry update with the entry's tag: %v", err)
	}

	// Credentials: the tag leaves the HA1s out, yet a password change moves it.
	c, err := s.GetCredential(ctx, accA, "cred-1")
	if err != nil {
		t.Fatal(err)
	}
	twin := c
	twin.HA1MD5, twin.HA1SHA256 = "ffffffffffffffffffffffffffffffff", "ee"
	if store.ETag(twin) != store.ETag(c) {
		t.Fatal("the credential ETag depends on the HA1s")
	}
	ctag := store.ETag(c)
	if _, _, err := s.UpdateCredential(ctx, accA, "cred-1", func(c *acl.Credential) error {
		c.HA1MD5 = "ffffffffffffffffffffffffffffffff"
		return nil
	}, store.IfMatch(ctag)); err != nil {
		t.Fatal(err)
	}
	unchanged(t, s, store.ErrPreconditionFailed, func() error {
		_, _, err := s.UpdateCredential(ctx, accA, "cred-1", func(*acl.Credential) error { return nil }, store.IfMatch(ctag))
		return err
	})
	unchanged(t, s, store.ErrPreconditionFailed, func() error {
		_, err := s.DeleteCredential(ctx, accA, "cred-1", store.IfMatch(ctag))
		return err
	})

	// Trunks and deletes.
	tr, err := s.GetTrunk(ctx, accA, "t1")
	if err != nil {
		t.Fatal(err)
	}
	unchanged(t, s, store.ErrPreconditionFailed, func() error {
		_, _, err := s.UpdateTrunk(ctx, accA, "t1", func(tr *acl.Trunk) error { tr.Name = "x"; return nil }, store.IfMatch(`"nope"`))
		return err
	})
	unchanged(t, s, store.ErrPreconditionFailed, func() error { _, err := s.DeleteTrunk(ctx, accA, "t1", store.IfMatch(`"nope"`)); return err })
	must(t, s, func() (uint64, error) { return s.DeleteTrunk(ctx, accA, "t1", store.IfMatch(store.ETag(tr))) })
	unchanged(t, s, store.ErrPreconditionFailed, func() error { _, err := s.DeleteACL(ctx, accA, "acl-1", store.IfMatch(tag)); return err })
	must(t, s, func() (uint64, error) {
		return s.DeleteACL(ctx, accA, "acl-1", store.IfMatch(store.ETag(getACL())))
	})
	// Creates ignore it.
	must(t, s, func() (uint64, error) {
		return s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.3"), store.IfMatch(`"nope"`))
	})
}

// testIfMatchConcurrent: writers holding the same ETag race; exactly one wins.
func testIfMatchConcurrent(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1")) })
	a, err := s.GetACL(ctx, accA, "acl-1")
	if err != nil {
		t.Fatal(err)
	}
	tag, before := store.ETag(a), version(t, s)
	const writers = 10
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			_, _, errs[i] = s.UpdateACL(ctx, accA, "acl-1", func(a *acl.IPACL) error {
				a.Name = fmt.Sprintf("writer %d", i)
				return nil
			}, store.IfMatch(tag))
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won < 0:
			won = i
		case err == nil:
			t.Fatalf("writers %d and %d both succeeded with the same ETag", won, i)
		case !errors.Is(err, store.ErrPreconditionFailed):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer succeeded")
	}
	if v := version(t, s); v != before+1 {
		t.Fatalf("version %d after one successful write from %d", v, before)
	}
	if got, _ := s.GetACL(ctx, accA, "acl-1"); got.Name != fmt.Sprintf("writer %d", won) {
		t.Fatalf("stored name %q, winner %d", got.Name, won)
	}
}

// replays runs a write that must be answered from an idempotency record and asserts it
// changed nothing; it returns the recorded response.
func replays(t *testing.T, s *store.Store, write func() error) []byte {
	t.Helper()
	before, audit := dump(t, s), auditDump(t, s)
	err := write()
	var rep *store.ReplayError
	if !errors.As(err, &rep) {
		t.Fatalf("got %v, want a *store.ReplayError", err)
	}
	if !bytes.Equal(before, dump(t, s)) || !bytes.Equal(audit, auditDump(t, s)) {
		t.Fatal("a replayed write changed the store")
	}
	return rep.Response
}

func idem(account, key, fp string) store.Idempotency {
	return store.Idempotency{Account: account, Key: key, Fingerprint: fp, Response: func(v uint64) ([]byte, error) {
		return fmt.Appendf(nil, `{"key":%q,"version":%d}`, key, v), nil
	}}
}

func testIdempotency(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA, accB)
	lookup := func(account, key, fp string) ([]byte, error) {
		t.Helper()
		return s.IdempotentResponse(ctx, account, key, fp)
	}
	if r, err := lookup(accA, "key-1", "fp-1"); r != nil || err != nil {
		t.Fatalf("unknown key: %s, %v", r, err)
	}
	k1 := store.Idempotent(idem(accA, "key-1", "fp-1"))
	v1 := must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1"), k1) })
	want := fmt.Sprintf(`{"key":"key-1","version":%d}`, v1)
	// A retry, even with another object (the fingerprint is the caller's business).
	if r := replays(t, s, func() error { _, err := s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.2"), k1); return err }); string(r) != want {
		t.Fatalf("replayed %s, want %s", r, want)
	}
	if r, err := lookup(accA, "key-1", "fp-1"); string(r) != want || err != nil {
		t.Fatalf("lookup: %s, %v", r, err)
	}
	if _, err := lookup(accA, "key-1", "fp-2"); !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Fatalf("lookup with another fingerprint: %v", err)
	}
	unchanged(t, s, store.ErrIdempotencyMismatch, func() error {
		_, err := s.CreateACL(ctx, mkACL(accA, "acl-3", "192.0.2.3"), store.Idempotent(idem(accA, "key-1", "fp-2")))
		return err
	})
	// Keys are per account.
	if r, err := lookup(accB, "key-1", "fp-1"); r != nil || err != nil {
		t.Fatalf("B sees A's key: %s, %v", r, err)
	}
	must(t, s, func() (uint64, error) {
		return s.CreateACL(ctx, mkACL(accB, "acl-b", "192.0.2.4"), store.Idempotent(idem(accB, "key-1", "fp-1")))
	})

	// A failed write records nothing: its retry runs for real.
	k2 := store.Idempotent(idem(accA, "key-2", "fp"))
	unchanged(t, s, store.ErrConflict, func() error { _, err := s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.9"), k2); return err })
	if r, err := lookup(accA, "key-2", "fp"); r != nil || err != nil {
		t.Fatalf("a failed write left a record: %s, %v", r, err)
	}
	boom := errors.New("response broke")
	unchanged(t, s, boom, func() error {
		i := idem(accA, "key-2", "fp")
		i.Response = func(uint64) ([]byte, error) { return nil, boom }
		_, err := s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.2"), store.Idempotent(i))
		return err
	})
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.2"), k2) })

	// Updates and deletes too; a replay does not even run fn.
	k3 := store.Idempotent(idem(accA, "key-3", "fp"))
	var calls atomic.Int32
	rename := func(a *acl.IPACL) error { calls.Add(1); a.Name = "once"; return nil }
	v3 := must(t, s, func() (uint64, error) { _, v, err := s.UpdateACL(ctx, accA, "acl-1", rename, k3); return v, err })
	calls.Store(0)
	if r := replays(t, s, func() error { _, _, err := s.UpdateACL(ctx, accA, "acl-1", rename, k3); return err }); !strings.Contains(string(r), fmt.Sprint(v3)) {
		t.Fatalf("update replay %s", r)
	}
	if calls.Load() != 0 {
		t.Fatal("a replayed update ran fn")
	}
	k4 := store.Idempotent(idem(accA, "key-4", "fp"))
	must(t, s, func() (uint64, error) { return s.DeleteACL(ctx, accA, "acl-2", k4) })
	replays(t, s, func() error { _, err := s.DeleteACL(ctx, accA, "acl-2", k4); return err })
}

// testIdempotencyConcurrent: concurrent writers with one key: one writes, the others get
// its response.
func testIdempotencyConcurrent(t *testing.T, s *store.Store) {
	seedAccounts(t, s, accA)
	before := version(t, s)
	k := store.Idempotent(idem(accA, "race", "fp"))
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			// One username: a writer that reads the key before the winner commits and the
			// username after must still end in the replay, not in "username taken".
			_, errs[i] = s.CreateCredential(ctx, mkCred(accA, fmt.Sprintf("c%d", i), "race-user"), k)
		})
	}
	wg.Wait()
	wrote, replayed := 0, 0
	for i, err := range errs {
		var rep *store.ReplayError
		switch {
		case err == nil:
			wrote++
		case errors.As(err, &rep) && string(rep.Response) == fmt.Sprintf(`{"key":"race","version":%d}`, before+1):
			replayed++
		default:
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if wrote != 1 || replayed != writers-1 {
		t.Fatalf("%d writes and %d replays, want 1 and %d", wrote, replayed, writers-1)
	}
	if _, n, _ := s.ListCredentials(ctx, accA, store.Page{}); n != 1 || version(t, s) != before+1 {
		t.Fatalf("%d credentials at version %d, want 1 at %d", n, version(t, s), before+1)
	}
}

func testIdempotencyExpires(t *testing.T, s *store.Store) { // opened with WithIdempotencyTTL(300ms)
	seedAccounts(t, s, accA)
	k := store.Idempotent(idem(accA, "short", "fp"))
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-1", "192.0.2.1"), k) })
	replays(t, s, func() error { _, err := s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.2"), k); return err })
	time.Sleep(400 * time.Millisecond)
	if r, err := s.IdempotentResponse(ctx, accA, "short", "fp"); r != nil || err != nil {
		t.Fatalf("expired key still answers: %s, %v", r, err)
	}
	must(t, s, func() (uint64, error) { return s.CreateACL(ctx, mkACL(accA, "acl-2", "192.0.2.2"), k) })
	replays(t, s, func() error { _, err := s.CreateACL(ctx, mkACL(accA, "acl-3", "192.0.2.3"), k); return err })
}
