package control

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/hits"
	"github.com/sipedge/sipedge/store"
)

// liveSnapshot makes e's store feed a holder through its real Watch loop (what cmd does
// for the SIP path) and restarts the server with WithSnapshot(holder.Load) plus opts.
func (e *env) liveSnapshot(opts ...Option) *acl.Holder {
	e.t.Helper()
	var holder acl.Holder
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	st := e.st
	wg.Go(func() { _ = st.Watch(ctx, holder.Store) })
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	e.restartWith(nil, append([]Option{WithSnapshot(holder.Load)}, opts...)...)
	return &holder
}

// served waits until the holder serves the store's current version.
func (e *env) served(h *acl.Holder) *acl.Snapshot {
	e.t.Helper()
	v, err := e.st.Version(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s := h.Load(); s != nil && s.Version() >= v {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("snapshot version %d not served within 5s (have %d)", v, h.Load().Version())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// explainFixture is one account's set-up for Explain:
//
//	ACL office: 192.0.2.0/24, 2001:db8::/32, 198.51.100.7 (disabled)
//	credential pbx1
//	trunk both   office + pbx1
//	trunk iponly office, no credential
//	trunk digest pbx1 only
//	trunk off    office, disabled
type explainFixture struct {
	acl, office, v6, disabledEntry string
	both, iponly, digest, off      string
}

func (e *env) explainFixture() explainFixture {
	e.t.Helper()
	var f explainFixture
	f.acl = e.createACL("office", "192.0.2.0/24", "2001:db8::/32", "198.51.100.7")
	r := e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/"}).must(e.t, 200)
	for _, en := range r.body["entries"].([]any) {
		m := en.(map[string]any)
		switch m["ip_address"] {
		case "192.0.2.0/24":
			f.office = m["id"].(string)
		case "2001:db8::/32":
			f.v6 = m["id"].(string)
		case "198.51.100.7":
			f.disabledEntry = m["id"].(string)
		}
	}
	e.do(req{method: "POST", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.disabledEntry + "/", body: map[string]any{"enabled": false}}).must(e.t, 202)
	cred := e.createCredential("pbx", "pbx1")
	f.both = e.createTrunk(map[string]any{"name": "both", "ipacl_uuid": f.acl, "credential_uuid": cred})
	f.iponly = e.createTrunk(map[string]any{"name": "iponly", "ipacl_uuid": f.acl})
	f.digest = e.createTrunk(map[string]any{"name": "digest", "credential_uuid": cred})
	f.off = e.createTrunk(map[string]any{"name": "off", "ipacl_uuid": f.acl, "credential_uuid": cred, "trunk_status": "disabled"})
	return f
}

func explainReq(trunk string, body map[string]any) req {
	return req{method: "POST", path: "Trunk/" + trunk + "/Explain/", body: body}
}

func TestExplain(t *testing.T) {
	e := newEnv(t)
	holder := e.liveSnapshot()
	f := e.explainFixture()
	snap := e.served(holder)

	type matched = map[string]any
	tests := []struct {
		name      string
		trunk     string
		body      map[string]any
		verdict   string
		sip       string
		entry     matched // nil: matched_entry is null
		digest    bool
		reason    []string
		userMatch any // nil: absent
	}{
		{"allowed by IP", f.both, map[string]any{"source_ip": "192.0.2.10"}, "allow_ip", "relayed upstream",
			matched{"ipacl_uuid": f.acl, "id": f.office, "ip_address": "192.0.2.0/24"}, false,
			[]string{"192.0.2.10 is inside entry " + f.office + " (192.0.2.0/24) of IP ACL " + f.acl}, nil},
		{"IPv6", f.both, map[string]any{"source_ip": "2001:db8:5::1"}, "allow_ip", "relayed upstream",
			matched{"ipacl_uuid": f.acl, "id": f.v6, "ip_address": "2001:db8::/32"}, false, nil, nil},
		{"IPv4-mapped source is unmapped", f.both, map[string]any{"source_ip": " ::ffff:192.0.2.10 "}, "allow_ip", "relayed upstream",
			matched{"ipacl_uuid": f.acl, "id": f.office, "ip_address": "192.0.2.0/24"}, false, nil, nil},
		{"digest required", f.both, map[string]any{"source_ip": "203.0.113.9"}, "challenge", "407 Proxy Authentication Required",
			nil, true, []string{"203.0.113.9 is in no enabled entry of IP ACL " + f.acl, `digest required, answered 407 for credential "pbx1"`}, nil},
		{"disabled entry named", f.both, map[string]any{"source_ip": "198.51.100.7"}, "challenge", "407 Proxy Authentication Required",
			nil, true, []string{"entry " + f.disabledEntry + " (198.51.100.7) holds 198.51.100.7 but is disabled"}, nil},
		{"no credential", f.iponly, map[string]any{"source_ip": "203.0.113.9"}, "no_credential", "403 Forbidden",
			nil, false, []string{"the trunk has no credential: refused (403)"}, nil},
		{"digest-only trunk", f.digest, map[string]any{"source_ip": "192.0.2.10"}, "challenge", "407 Proxy Authentication Required",
			nil, true, []string{"has no IP ACL"}, nil},
		{"disabled trunk", f.off, map[string]any{"source_ip": "192.0.2.10"}, "trunk_disabled", "403 Forbidden",
			matched{"ipacl_uuid": f.acl, "id": f.office, "ip_address": "192.0.2.0/24"}, false, []string{"is disabled"}, nil},
		{"username of the trunk", f.digest, map[string]any{"source_ip": "203.0.113.9", "username": "pbx1"}, "challenge", "407 Proxy Authentication Required",
			nil, true, []string{`a right digest answer for "pbx1" would be allowed`}, true},
		{"username not of the trunk", f.digest, map[string]any{"source_ip": "203.0.113.9", "username": "mallory"}, "challenge", "407 Proxy Authentication Required",
			nil, true, []string{`"mallory" is not the trunk's credential`, "403 (auth_failed)"}, false},
		{"username for a trunk without credential", f.iponly, map[string]any{"source_ip": "203.0.113.9", "username": "pbx1"}, "no_credential", "403 Forbidden",
			nil, false, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(explainReq(tt.trunk, tt.body)).must(t, 200)
			b := r.body
			if b["verdict"] != tt.verdict || b["sip_response"] != tt.sip || b["digest_required"] != tt.digest ||
				b["trunk_id"] != tt.trunk || b["snapshot_version"] != float64(snap.Version()) {
				t.Errorf("answer %s", r.raw)
			}
			if tt.entry == nil && b["matched_entry"] != nil || tt.entry != nil && !equalJSON(b["matched_entry"], tt.entry) {
				t.Errorf("matched_entry %v, want %v", b["matched_entry"], tt.entry)
			}
			for _, s := range tt.reason {
				if !strings.Contains(r.str("reason"), s) {
					t.Errorf("reason %q does not contain %q", r.str("reason"), s)
				}
			}
			if b["username_matches"] != tt.userMatch {
				t.Errorf("username_matches %v, want %v", b["username_matches"], tt.userMatch)
			}
			if strings.Contains(strings.ToLower(string(r.raw)), "ha1") || strings.Contains(string(r.raw), "s3cret") {
				t.Errorf("secret material in %s", r.raw)
			}
		})
	}

	// Facts beside the verdict.
	r := e.do(explainReq(f.both, map[string]any{"source_ip": "::ffff:192.0.2.10"})).must(t, 200)
	if r.str("source_ip") != "192.0.2.10" || r.str("credential_username") != "pbx1" {
		t.Errorf("answer %s", r.raw)
	}
	// Both enabled trunks of the account on that ACL accept the source (the disabled one not).
	if got := toStrings(r.body["source_trunks"]); len(got) != 2 || !contains(got, f.both) || !contains(got, f.iponly) {
		t.Errorf("source_trunks %v", got)
	}
	r = e.do(explainReq(f.iponly, map[string]any{"source_ip": "192.0.2.10"})).must(t, 200)
	if r.body["credential_username"] != nil {
		t.Errorf("credential_username of a trunk without credential: %v", r.body["credential_username"])
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestExplainErrors(t *testing.T) {
	e := newEnv(t)
	holder := e.liveSnapshot()
	f := e.explainFixture()
	e.served(holder)

	for _, tt := range []struct {
		name string
		body any
		code int
		msg  string
	}{
		{"missing source_ip", map[string]any{}, 422, "source_ip is required"},
		{"CIDR", map[string]any{"source_ip": "192.0.2.0/24"}, 422, `source_ip "192.0.2.0/24": give one address, not a CIDR block`},
		{"garbage", map[string]any{"source_ip": "999.1.1.1"}, 422, `source_ip "999.1.1.1": not an IPv4 or IPv6 address`},
		{"zone", map[string]any{"source_ip": "fe80::1%eth0"}, 422, "zones are not allowed"},
		{"bad username", map[string]any{"source_ip": "192.0.2.1", "username": "a b"}, 422, "username"},
		{"wrong type", map[string]any{"source_ip": 5}, 400, "source_ip"},
		{"unknown field", map[string]any{"source_ip": "192.0.2.1", "password": "x"}, 400, "unknown field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(req{method: "POST", path: "Trunk/" + f.both + "/Explain/", body: tt.body}).must(t, tt.code)
			if !strings.Contains(r.errorText(), tt.msg) {
				t.Errorf("error %q does not contain %q", r.errorText(), tt.msg)
			}
		})
	}
	// Another account's trunk is invisible (404), as is an unknown one.
	r := e.do(req{method: "POST", path: "Trunk/" + f.both + "/Explain/", body: map[string]any{"source_ip": "192.0.2.1"},
		user: otherAuthID, pass: otherToken}).must(t, 404)
	if strings.Contains(string(r.raw), f.acl) {
		t.Errorf("404 reveals the ACL: %s", r.raw)
	}
	e.do(explainReq("00000000-0000-4000-8000-000000000000", map[string]any{"source_ip": "192.0.2.1"})).must(t, 404)
	// Another account's credentials on this account's path: 401.
	e.do(req{method: "POST", path: "/v1/Account/" + testAuthID + "/Zentrunk/Trunk/" + f.both + "/Explain/",
		body: map[string]any{"source_ip": "192.0.2.1"}, user: otherAuthID, pass: otherToken}).must(t, 401)
}

// TestExplainSourceTrunksOfOwnAccountOnly: another account's trunk accepting the same
// source is never named.
func TestExplainSourceTrunksOfOwnAccountOnly(t *testing.T) {
	e := newEnv(t)
	holder := e.liveSnapshot()
	f := e.explainFixture()
	// Accounts list the same source only with ACLs the admin shared (hosted PBX platforms).
	mine, _, err := e.st.ListACLs(context.Background(), testAuthID, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range mine {
		e.do(req{method: "POST", path: "/v1/Admin/Account/" + testAuthID + "/IPAccessControlList/" + a.UUID + "/",
			noAuth: true, body: map[string]any{"shared": true}, header: map[string]string{"Authorization": "Bearer " + testAdmin}}).must(t, 202)
	}
	otherACL := "00000000-0000-4000-8000-0000000000aa"
	if _, err := e.st.CreateACL(context.Background(), acl.IPACL{UUID: otherACL, Account: otherAuthID, Name: "theirs", Shared: true,
		Entries: []acl.Entry{{ID: "e1", IPAddress: "192.0.2.10", Enabled: true}}}); err != nil {
		t.Fatal(err)
	}
	theirs := e.do(req{method: "POST", path: "Trunk/", user: otherAuthID, pass: otherToken,
		body: map[string]any{"name": "theirs", "ipacl_uuid": otherACL}}).must(t, 201).str("trunk_id")
	e.served(holder)
	r := e.do(explainReq(f.both, map[string]any{"source_ip": "192.0.2.10"})).must(t, 200)
	if strings.Contains(string(r.raw), theirs) || strings.Contains(string(r.raw), otherACL) {
		t.Errorf("another account's trunk or ACL named: %s", r.raw)
	}
	if r.str("verdict") != "allow_ip" {
		t.Errorf("verdict %s", r.raw)
	}
}

func TestExplainNotReady(t *testing.T) {
	e := newEnv(t)
	trunk := e.createTrunk(map[string]any{"name": "t", "credential_uuid": e.createCredential("c", "u1")})
	body := map[string]any{"source_ip": "192.0.2.1"}

	// No snapshot source configured, or none loaded yet: 503 with Retry-After.
	for name, opts := range map[string][]Option{
		"not configured": nil,
		"not loaded":     {WithSnapshot(func() *acl.Snapshot { return nil })},
	} {
		t.Run(name, func(t *testing.T) {
			e.restartWith(nil, opts...)
			r := e.do(explainReq(trunk, body)).must(t, 503)
			if r.hdr.Get("Retry-After") == "" || !strings.Contains(r.errorText(), "not ready") {
				t.Errorf("%s (Retry-After %q)", r.raw, r.hdr.Get("Retry-After"))
			}
		})
	}

	// A snapshot older than the trunk: verdict none, and the answer says to wait.
	ds, err := e.st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old, err := acl.Compile(ds)
	if err != nil {
		t.Fatal(err)
	}
	late := e.createTrunk(map[string]any{"name": "late", "credential_uuid": e.createCredential("c2", "u2")})
	e.restartWith(nil, WithSnapshot(func() *acl.Snapshot { return old }))
	r := e.do(explainReq(late, body)).must(t, 200)
	if r.str("verdict") != "none" || !strings.Contains(r.str("reason"), "not in snapshot version") ||
		!strings.Contains(r.str("reason"), "/v1/Cluster/Version/") {
		t.Errorf("stale snapshot: %s", r.raw)
	}
}

// failingHits is a HitCounts whose store is down.
type failingHits struct{}

func (failingHits) Hits(context.Context, string, string) (map[string]acl.HitStat, error) {
	return nil, errors.New("store: unavailable")
}

// TestEntryHits: hits recorded the way the SIP path records them (the entry the live
// snapshot names for an allowed source) are flushed to the hit store and shown on entry
// objects everywhere they appear.
func TestEntryHits(t *testing.T) {
	e := newEnv(t)
	var mem hits.Memory
	holder := e.liveSnapshot(WithHits(&mem))
	f := e.explainFixture()
	snap := e.served(holder)

	clock := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	rec := hits.New(hits.WithClock(func() time.Time { return clock }))
	// The SIP path: an INVITE allowed by IP for trunk "both" counts against its entry.
	allowed := func(trunk string, src string) {
		t.Helper()
		tr, _ := snap.Trunk(acl.TrunkID(trunk))
		aclUUID, entryID, ok := snap.MatchedEntry(tr.ID, netip.MustParseAddr(src))
		if !ok {
			t.Fatalf("%s from %s matched no entry", trunk, src)
		}
		rec.Record(tr.Account, aclUUID, entryID)
	}
	for _, src := range []string{"192.0.2.10", "192.0.2.11", "192.0.2.200"} {
		allowed(f.both, src)
	}
	allowed(f.iponly, "2001:db8::5")
	ctx := context.Background()

	// Before the flush nothing shows.
	r := e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.office + "/"}).must(t, 200)
	if r.body["hit_count"] != float64(0) || r.body["last_matched_at"] != nil {
		t.Errorf("before flush: %s", r.raw)
	}
	if err := rec.Flush(ctx, mem.AddHits); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]any{
		f.office:        {float64(3), "2025-07-01T12:00:00Z"},
		f.v6:            {float64(1), "2025-07-01T12:00:00Z"},
		f.disabledEntry: {float64(0), nil},
	}
	check := func(where string, objs []any) {
		t.Helper()
		if len(objs) != 3 {
			t.Fatalf("%s: %d entries", where, len(objs))
		}
		for _, o := range objs {
			m := o.(map[string]any)
			w := want[m["id"].(string)]
			if m["hit_count"] != w[0] || m["last_matched_at"] != w[1] {
				t.Errorf("%s: entry %v %v: hit_count %v, last_matched_at %v; want %v", where, m["id"], m["ip_address"], m["hit_count"], m["last_matched_at"], w)
			}
		}
	}
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.office + "/"}).must(t, 200)
	check("GET entry", []any{r.body, map[string]any{"id": f.v6, "hit_count": float64(1), "last_matched_at": "2025-07-01T12:00:00Z"},
		map[string]any{"id": f.disabledEntry, "hit_count": float64(0), "last_matched_at": nil}})
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/"}).must(t, 200)
	var objs []any
	for _, o := range r.objects(t) {
		objs = append(objs, o)
	}
	check("list entries", objs)
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/"}).must(t, 200)
	check("GET ACL", r.body["entries"].([]any))
	r = e.do(req{method: "GET", path: "IPAccessControlList/"}).must(t, 200)
	check("list ACLs", r.objects(t)[0]["entries"].([]any))

	// More hits later: counts add up, last_matched_at moves.
	clock = clock.Add(time.Hour)
	rec = hits.New(hits.WithClock(func() time.Time { return clock })) // e.g. another node
	allowed(f.both, "192.0.2.10")
	if err := rec.Flush(ctx, mem.AddHits); err != nil {
		t.Fatal(err)
	}
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.office + "/"}).must(t, 200)
	if r.body["hit_count"] != float64(4) || r.body["last_matched_at"] != "2025-07-01T13:00:00Z" {
		t.Errorf("after a second node's flush: %s", r.raw)
	}
	// Another account sees nothing of it (and cannot read the ACL at all).
	e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/", user: otherAuthID, pass: otherToken}).must(t, 404)

	// A failing hit store degrades to 0/null, says so, and logs.
	e.restartWith(nil, WithHits(failingHits{}))
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.office + "/"}).must(t, 200)
	if r.body["hit_count"] != float64(0) || r.hdr.Get("X-Sipedge-Hits") != "unavailable" {
		t.Errorf("hit store down: %s (X-Sipedge-Hits %q)", r.raw, r.hdr.Get("X-Sipedge-Hits"))
	}
	if !strings.Contains(e.logText(), "entry hit counts unavailable") {
		t.Error("hit store failure not logged")
	}
	// Without WithHits: 0 and null.
	e.restartWith(nil)
	r = e.do(req{method: "GET", path: "IPAccessControlList/" + f.acl + "/Entry/" + f.office + "/"}).must(t, 200)
	if r.body["hit_count"] != float64(0) || r.body["last_matched_at"] != nil || r.hdr.Get("X-Sipedge-Hits") != "" {
		t.Errorf("without hit counting: %s", r.raw)
	}
}
