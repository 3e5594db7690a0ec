package sip

import (
	"testing"
	"time"
)

// A dialog whose BYE never came is swept at its expiry, and its hold on the trunk's
// concurrency count goes with it; live dialogs and their holds stay.
func TestDialogSweepReleasesExpired(t *testing.T) {
	tbl := newDialogTable()
	tc := &trunkCap{}
	slot := func() *capSlot { tc.active.Add(1); return &capSlot{tc: tc} }
	now := time.Unix(1_000_000, 0)
	pbx := flow{tp: "UDP", addr: ap("127.0.0.2:5060")}
	up := flow{tp: "UDP", addr: ap("127.0.0.1:5080")}

	tbl.add("gone-1", now.Add(-time.Second), dialogGrant{pbx: pbx, up: up}, slot())
	tbl.add("gone-2", now, dialogGrant{pbx: pbx, up: up}, slot()) // expiry is exclusive: gone at its instant
	tbl.add("live", now.Add(time.Second), dialogGrant{pbx: pbx, up: up}, slot())
	if tbl.len() != 3 || tc.active.Load() != 3 {
		t.Fatalf("before: %d dialogs, %d slots", tbl.len(), tc.active.Load())
	}
	if _, ok := tbl.get("gone-1", now); ok {
		t.Fatal("an expired dialog still routes before the sweep")
	}

	tbl.sweep(now)
	if tbl.len() != 1 || tc.active.Load() != 1 {
		t.Fatalf("after sweep: %d dialogs, %d slots held, want 1 and 1", tbl.len(), tc.active.Load())
	}
	if e, ok := tbl.get("live", now); !ok || e.grant.up != up {
		t.Fatal("the live dialog was swept")
	}

	tbl.sweep(now) // nothing more, and no second release of a swept slot
	tbl.end("gone-1")
	if tbl.len() != 1 || tc.active.Load() != 1 {
		t.Fatalf("after a second sweep: %d dialogs, %d slots", tbl.len(), tc.active.Load())
	}
	tbl.end("live")
	if tbl.len() != 0 || tc.active.Load() != 0 {
		t.Fatalf("after BYE: %d dialogs, %d slots", tbl.len(), tc.active.Load())
	}
}

// Re-adding a dialog (a retransmitted 2xx) with a new slot releases the old one, so one
// call holds one slot.
func TestDialogReAddReleasesOldSlot(t *testing.T) {
	tbl := newDialogTable()
	tc := &trunkCap{}
	exp := time.Now().Add(time.Hour)
	f := flow{tp: "UDP", addr: ap("127.0.0.2:5060")}
	s1 := &capSlot{tc: tc}
	tc.active.Add(1)
	tbl.add("k", exp, dialogGrant{pbx: f, up: f}, s1)
	tbl.add("k", exp, dialogGrant{pbx: f, up: f}, s1) // same slot: kept
	if tc.active.Load() != 1 {
		t.Fatalf("same slot re-added: %d held", tc.active.Load())
	}
	s2 := &capSlot{tc: tc}
	tc.active.Add(1)
	tbl.add("k", exp, dialogGrant{pbx: f, up: f}, s2)
	if tbl.len() != 1 || tc.active.Load() != 1 {
		t.Fatalf("replaced: %d dialogs, %d slots", tbl.len(), tc.active.Load())
	}
}
