package store_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// An ACL update is audited as a diff: the changed fields and the entries added, removed
// or changed — not the whole list twice — and every before/after stays bounded.
func TestAuditRecordsADiff(t *testing.T) {
	s := openBoltDir(t, filepath.Join(t.TempDir(), "data"))
	mkAccount(t, s, "A", acl.Limits{MaxEntriesPerACL: 5000, MaxEntries: 5000})
	a := acl.IPACL{UUID: "big", Account: "A", Name: "office"}
	for i := range 1000 {
		a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("e%04d", i), IPAddress: fmt.Sprintf("10.%d.%d.1", i/250, i%250), Enabled: true,
			Description: strings.Repeat("d", 40)})
	}
	if _, err := s.CreateACL(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.UpdateACL(ctx, "A", "big", func(x *acl.IPACL) error {
		x.Entries = append(x.Entries[1:], acl.Entry{ID: "new", IPAddress: "192.0.2.1", Enabled: true})
		x.Entries[0].Enabled = false // e0001
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	log, _, err := s.Audit(ctx, "A", store.Page{Limit: 2})
	if err != nil || len(log) != 2 {
		t.Fatalf("audit: %d entries, %v", len(log), err)
	}
	upd, create := log[0], log[1]
	var before, after struct {
		Name    *string     `json:"name"`
		Entries []acl.Entry `json:"entries"`
	}
	if err := json.Unmarshal(upd.Before, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(upd.After, &after); err != nil {
		t.Fatal(err)
	}
	ids := func(es []acl.Entry) string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s:%t", e.ID, e.Enabled))
		}
		return strings.Join(out, ",")
	}
	if got := ids(before.Entries); got != "e0001:true,e0000:true" {
		t.Errorf("before entries %s, want the changed e0001 (old form) and the removed e0000", got)
	}
	if got := ids(after.Entries); got != "e0001:false,new:true" {
		t.Errorf("after entries %s, want the changed e0001 (new form) and the added one", got)
	}
	if before.Name != nil || after.Name != nil {
		t.Errorf("an unchanged name is in the diff: %s → %s", upd.Before, upd.After)
	}
	if len(upd.Before)+len(upd.After) > 2000 {
		t.Errorf("the diff of 3 entries takes %d bytes", len(upd.Before)+len(upd.After))
	}
	// The create of 1000 entries: bounded, with a marker of what was left out.
	if len(create.After) > store.MaxAuditObjectBytes {
		t.Errorf("create audited in %d bytes, more than %d", len(create.After), store.MaxAuditObjectBytes)
	}
	var c struct {
		Entries []acl.Entry `json:"entries"`
		Omitted int         `json:"entries_omitted"`
		Name    string      `json:"name"`
	}
	if err := json.Unmarshal(create.After, &c); err != nil {
		t.Fatal(err)
	}
	if c.Name != "office" || len(c.Entries) == 0 || len(c.Entries)+c.Omitted != 1000 {
		t.Errorf("create: %d entries kept, %d omitted, name %q", len(c.Entries), c.Omitted, c.Name)
	}
}
