package sip

import (
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// TestOnDenied: every request the security log records as sip_denied reaches
// Config.OnDenied, even with the log off; a plain challenge does not.
func TestOnDenied(t *testing.T) {
	var mu sync.Mutex
	var got []DenialEvent
	cfg := baseConfig()
	cfg.Logger = zerolog.Nop() // the hook does not depend on the (sampled) log
	cfg.OnDenied = func(e DenialEvent) { mu.Lock(); got = append(got, e); mu.Unlock() }
	ds := testDataset("")
	for i := range ds.Trunks {
		ds.Trunks[i].Account = "MA-" + string(ds.Trunks[i].ID)
	}
	s := newUnitServer(t, cfg, policyOf(mustCompile(t, ds)))
	unlisted := "127.0.0.9:5099"

	for _, tc := range []struct {
		name                             string
		raw                              []byte
		code                             int
		method, trunk, verdict, callerUA string
	}{
		{"challenge: not a denial", rawRequest("INVITE", "sip:service@127.0.0.1:5060"), 407, "", "", "", ""},
		{"no credential", rawRequest("INVITE", "sip:1@t3.example.org", "User-Agent: probe"), 403, "INVITE", "t3", "no_credential", "probe"},
		{"disabled trunk", rawRequest("INVITE", "sip:1@t2.example.org"), 403, "INVITE", "t2", "trunk_disabled", ""},
		{"in-dialog without our route", replace(rawRequest("BYE", "sip:pbx@192.0.2.7"), "To: <sip:pbx@192.0.2.7>", "To: <sip:pbx@192.0.2.7>;tag=x"),
			403, "BYE", "", "bad_route", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			if res := lastCode(t, serve(t, s, tc.raw, unlisted)); res.StatusCode != tc.code {
				t.Fatalf("answer %d, want %d", res.StatusCode, tc.code)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.verdict == "" {
				if len(got) != 0 {
					t.Fatalf("events %+v, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(got), got)
			}
			e := got[0]
			if e.Method != tc.method || e.Trunk != tc.trunk || e.Verdict != tc.verdict || e.Src != ap(unlisted) ||
				e.CallID == "" || e.UserAgent != tc.callerUA || e.Transport != "udp" || e.Time.IsZero() ||
				(e.Trunk != "" && e.Account != "MA-"+e.Trunk) || (e.Trunk == "" && e.Account != "") {
				t.Fatalf("event %+v", e)
			}
		})
	}
}
