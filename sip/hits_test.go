package sip

import (
	"sync"
	"testing"
	"time"
)

type hitLog struct {
	mu   sync.Mutex
	hits []string
}

func (h *hitLog) Record(account, aclUUID, entryID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hits = append(h.hits, account+"/"+aclUUID+"/"+entryID)
}

// TestHitRecorded: an INVITE allowed by IP counts one hit on the entry that matched; a
// challenged one counts nothing.
func TestHitRecorded(t *testing.T) {
	cfg := baseConfig()
	cfg.UpstreamTimeout = 200 * time.Millisecond
	cfg.Upstream = "sip:" + deadUDPPort(t)
	ds := testDataset("")
	ds.ACLs[0].Account, ds.Trunks[0].Account = "MA1", "MA1"
	snap := mustCompile(t, ds)
	var rec hitLog
	s, err := New(cfg, policyOf(snap), WithHitRecorder(&rec))
	if err != nil {
		t.Fatal(err)
	}
	startUnit(t, s)

	serve(t, s, rawRequest("INVITE", "sip:service@127.0.0.1:5060"), "127.0.0.9:5099")
	serve(t, s, rawRequest("INVITE", "sip:service@127.0.0.1:5060"), "127.0.0.2:5099")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.hits) != 1 || rec.hits[0] != "MA1/acl-pbx/e1" {
		t.Fatalf("hits %v, want exactly one on MA1/acl-pbx/e1", rec.hits)
	}
}
