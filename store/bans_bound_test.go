package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// The shared ban list is bounded: beyond the bound the bans that end first are evicted.
func TestBansBounded(t *testing.T) {
	banBackends(t, func(t *testing.T, b *store.Bans) {
		store.SetMaxBans(b, 5)
		now := time.Now()
		for i := range 8 {
			ban := acl.Ban{IP: fmt.Sprintf("192.0.2.%d", i+1), Reason: "digest_failures", Since: now,
				Until: now.Add(time.Hour + time.Duration(i)*time.Minute)}
			if err := b.Ban(ctx, ban); err != nil {
				t.Fatal(err)
			}
		}
		list, err := b.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 5 {
			t.Fatalf("%d bans kept, want the bound 5", len(list))
		}
		for _, bn := range list {
			if bn.IP == "192.0.2.1" || bn.IP == "192.0.2.2" || bn.IP == "192.0.2.3" {
				t.Errorf("%s kept: the bans ending first must go", bn.IP)
			}
		}
	})
}
