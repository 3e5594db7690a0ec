package control

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/store"
)

var tsRE = `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`

func TestACLLifecycle(t *testing.T) {
	e := newEnv(t)
	r := e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{
		"name": "office", "ip_addresses": []string{"192.0.2.10", "198.51.100.0/24", "2001:DB8::/32"}}}).must(t, 201)
	id := r.str("ipacl_uuid")
	if !uuidRE.MatchString(id) {
		t.Fatalf("ipacl_uuid %q is not a uuid v4", id)
	}
	if r.str("message") != "IP access control list created" {
		t.Errorf("message %q", r.str("message"))
	}
	v1, err := strconv.ParseUint(r.hdr.Get("X-Sipedge-Version"), 10, 64)
	if err != nil || v1 == 0 {
		t.Fatalf("X-Sipedge-Version %q", r.hdr.Get("X-Sipedge-Version"))
	}
	if _, ok := r.body["warnings"]; ok {
		t.Errorf("warnings without overlap: %s", r.raw)
	}

	// GET: canonical addresses, entries, timestamps.
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if got := g.body["ip_addresses"]; !equalJSON(got, []string{"192.0.2.10", "198.51.100.0/24", "2001:db8::/32"}) {
		t.Errorf("ip_addresses %v", got)
	}
	if g.str("name") != "office" || g.str("ipacl_uuid") != id {
		t.Errorf("object %s", g.raw)
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if !matches(tsRE, g.str(k)) {
			t.Errorf("%s %q not ISO 8601 UTC", k, g.str(k))
		}
	}
	entries := g.body["entries"].([]any)
	if len(entries) != 3 {
		t.Fatalf("entries %v", entries)
	}
	first := entries[0].(map[string]any)
	if first["ip_address"] != "192.0.2.10" || first["enabled"] != true || first["description"] != "" || !uuidRE.MatchString(first["id"].(string)) {
		t.Errorf("entry %v", first)
	}
	keepID := entries[1].(map[string]any)["id"]

	// Rename only: addresses unchanged.
	u := e.do(req{method: "POST", path: "IPAccessControlList/" + id, body: `{"name":"office-2"}`}).must(t, 202)
	if u.str("ipacl_uuid") != id || u.str("message") != "IP access control list updated" {
		t.Errorf("update body %s", u.raw)
	}
	v2, _ := strconv.ParseUint(u.hdr.Get("X-Sipedge-Version"), 10, 64)
	if v2 <= v1 {
		t.Errorf("version %d after %d", v2, v1)
	}
	// Replace the list: the kept address keeps its entry id.
	e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/", body: map[string]any{
		"ip_addresses": []string{"203.0.113.0/24", "198.51.100.0/24"}}}).must(t, 202)
	g = e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if g.str("name") != "office-2" || !equalJSON(g.body["ip_addresses"], []string{"203.0.113.0/24", "198.51.100.0/24"}) {
		t.Fatalf("after update %s", g.raw)
	}
	if got := g.body["entries"].([]any)[1].(map[string]any)["id"]; got != keepID {
		t.Errorf("kept address got entry id %v, want %v", got, keepID)
	}

	// Overlap warning.
	w := e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/", body: map[string]any{
		"ip_addresses": []string{"203.0.113.0/24", "203.0.113.7"}}}).must(t, 202)
	if !equalJSON(w.body["warnings"], []string{"203.0.113.7 is inside 203.0.113.0/24"}) {
		t.Errorf("warnings %v", w.body["warnings"])
	}

	d := e.do(req{method: "DELETE", path: "IPAccessControlList/" + id + "/"}).must(t, 204)
	if len(d.raw) != 0 || d.hdr.Get("X-Sipedge-Version") == "" {
		t.Errorf("delete: body %q version %q", d.raw, d.hdr.Get("X-Sipedge-Version"))
	}
	e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 404)
	e.do(req{method: "DELETE", path: "IPAccessControlList/" + id + "/"}).must(t, 404)
	e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/", body: `{"name":"x"}`}).must(t, 404)
}

func TestACLValidation(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		body string
		code int
		want []string // substrings of the error
	}{
		{"missing ip_addresses", `{"name":"x"}`, 422, []string{"ip_addresses is required"}},
		{"null ip_addresses", `{"name":"x","ip_addresses":null}`, 422, []string{"ip_addresses is required"}},
		{"empty list", `{"name":"x","ip_addresses":[]}`, 422, []string{"must not be empty"}},
		{"host bits", `{"name":"x","ip_addresses":["10.0.0.5/8"]}`, 422, []string{`"10.0.0.5/8"`, "10.0.0.0/8"}},
		{"garbage", `{"name":"x","ip_addresses":["999.1.1.1"]}`, 422, []string{`"999.1.1.1"`}},
		{"slash zero", `{"name":"x","ip_addresses":["0.0.0.0/0"]}`, 422, []string{"/0"}},
		{"duplicate after canonicalisation", `{"name":"x","ip_addresses":["192.0.2.1","192.0.2.1/32"]}`, 422, []string{"duplicate"}},
		{"every bad value named", `{"name":"x","ip_addresses":["192.0.2.1","bad1","10.0.0.5/8","bad2"]}`, 422,
			[]string{"ip_addresses[1]", `"bad1"`, "ip_addresses[2]", "ip_addresses[3]", `"bad2"`}},
		{"missing name", `{"ip_addresses":["192.0.2.1"]}`, 422, []string{"name is required"}},
		{"blank name", `{"name":"  ","ip_addresses":["192.0.2.1"]}`, 422, []string{"name"}},
		{"control char in name", `{"name":"a\u0007b","ip_addresses":["192.0.2.1"]}`, 422, []string{"control"}},
		{"long name", `{"name":"` + strings.Repeat("n", 129) + `","ip_addresses":["192.0.2.1"]}`, 422, []string{"128"}},
		{"malformed JSON", `{"name":`, 400, []string{"malformed JSON"}},
		{"unknown field", `{"name":"x","ip_addresses":["192.0.2.1"],"color":"red"}`, 400, []string{`unknown field "color"`}},
		{"wrong type", `{"name":"x","ip_addresses":"192.0.2.1"}`, 400, []string{"ip_addresses", "array"}},
		{"wrong element type", `{"name":"x","ip_addresses":[1]}`, 400, []string{"ip_addresses", "every element must be a string"}},
		{"not an object", `["192.0.2.1"]`, 400, []string{"JSON object"}},
		{"trailing data", `{"name":"x","ip_addresses":["192.0.2.1"]} {}`, 400, []string{"after the object"}},
		{"empty body", ``, 400, []string{"empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(req{method: "POST", path: "IPAccessControlList/", body: tc.body}).must(t, tc.code)
			for _, w := range tc.want {
				if !strings.Contains(r.errorText(), w) {
					t.Errorf("error %q does not contain %q", r.errorText(), w)
				}
			}
		})
	}
	// Nothing was written by any of them.
	if _, total, err := e.st.ListACLs(context.Background(), testAuthID, store.Page{Limit: 20}); err != nil || total != 0 {
		t.Fatalf("after rejected creates: total %d, err %v", total, err)
	}
	id := e.createACL("ok", "192.0.2.1")
	for _, tc := range []struct{ body, want string }{
		{`{}`, "nothing to update"},
		{`{"ip_addresses":[]}`, "must not be empty"},
		{`{"ip_addresses":["192.0.2.300"]}`, "192.0.2.300"},
		{`{"name":""}`, "name"},
	} {
		r := e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/", body: tc.body}).must(t, 422)
		if !strings.Contains(r.errorText(), tc.want) {
			t.Errorf("update %s: error %q", tc.body, r.errorText())
		}
	}
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if g.str("name") != "ok" || !equalJSON(g.body["ip_addresses"], []string{"192.0.2.1"}) {
		t.Errorf("rejected updates changed the ACL: %s", g.raw)
	}
}

func TestEntries(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("pbx", "192.0.2.10")
	base := "IPAccessControlList/" + id + "/Entry/"

	l := e.do(req{method: "GET", path: base}).must(t, 200)
	objs := l.objects(t)
	if len(objs) != 1 || objs[0]["ip_address"] != "192.0.2.10" {
		t.Fatalf("entries %s", l.raw)
	}
	if m := l.meta(t); m["total_count"] != 1.0 || m["next"] != nil || m["previous"] != nil {
		t.Errorf("meta %v", m)
	}

	a := e.do(req{method: "POST", path: base, body: `{"ip_address":"198.51.100.0/24","description":"office"}`}).must(t, 201)
	eid := a.str("id")
	if !uuidRE.MatchString(eid) || a.str("message") != "IP access control list entry created" || a.hdr.Get("X-Sipedge-Version") == "" {
		t.Fatalf("add: %s %v", a.raw, a.hdr)
	}
	// Without the trailing slash, and disabled from the start.
	d := e.do(req{method: "POST", path: strings.TrimSuffix(base, "/"), body: `{"ip_address":"2001:db8::1","enabled":false}`}).must(t, 201)
	// Inside another entry: added, with a warning.
	w := e.do(req{method: "POST", path: base, body: `{"ip_address":"198.51.100.7"}`}).must(t, 201)
	if !equalJSON(w.body["warnings"], []string{"198.51.100.7 is inside 198.51.100.0/24"}) {
		t.Errorf("warnings %s", w.raw)
	}

	// Duplicate (also after canonicalisation) → 409; invalid → 422; missing → 422.
	e.do(req{method: "POST", path: base, body: `{"ip_address":"198.51.100.0/24"}`}).must(t, 409)
	e.do(req{method: "POST", path: base, body: `{"ip_address":"::ffff:192.0.2.10"}`}).must(t, 409)
	r := e.do(req{method: "POST", path: base, body: `{"ip_address":"198.51.100.1/24"}`}).must(t, 422)
	if !strings.Contains(r.errorText(), "ip_address") || !strings.Contains(r.errorText(), "198.51.100.0/24") {
		t.Errorf("error %q", r.errorText())
	}
	e.do(req{method: "POST", path: base, body: `{"description":"no address"}`}).must(t, 422)
	e.do(req{method: "POST", path: base, body: `{"ip_address":"192.0.2.99","enabled":"yes"}`}).must(t, 400)

	g := e.do(req{method: "GET", path: base + eid + "/"}).must(t, 200)
	if g.str("id") != eid || g.str("ip_address") != "198.51.100.0/24" || g.str("description") != "office" || g.body["enabled"] != true {
		t.Errorf("entry %s", g.raw)
	}
	if g2 := e.do(req{method: "GET", path: base + d.str("id")}).must(t, 200); g2.body["enabled"] != false {
		t.Errorf("entry added disabled: %s", g2.raw)
	}

	// Disable: kept, listed, still in ip_addresses.
	u := e.do(req{method: "POST", path: base + eid + "/", body: `{"enabled":false,"description":"paused"}`}).must(t, 202)
	if u.str("id") != eid || u.hdr.Get("X-Sipedge-Version") == "" {
		t.Errorf("update body %s", u.raw)
	}
	g = e.do(req{method: "GET", path: base + eid + "/"}).must(t, 200)
	if g.body["enabled"] != false || g.str("description") != "paused" {
		t.Errorf("after disable %s", g.raw)
	}
	acl := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if !slices.Contains(toStrings(acl.body["ip_addresses"]), "198.51.100.0/24") {
		t.Errorf("disabled entry left ip_addresses: %s", acl.raw)
	}
	if got := len(e.do(req{method: "GET", path: base}).must(t, 200).objects(t)); got != 4 {
		t.Errorf("%d entries listed, want 4", got)
	}
	stored, err := e.st.GetACL(context.Background(), testAuthID, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range stored.Entries {
		if en.ID == eid && en.Enabled {
			t.Error("store still has the entry enabled")
		}
	}

	// Change the address; to another entry's address → 409.
	e.do(req{method: "POST", path: base + eid + "/", body: `{"ip_address":"192.0.2.10"}`}).must(t, 409)
	e.do(req{method: "POST", path: base + eid + "/", body: `{"ip_address":"203.0.113.0/24"}`}).must(t, 202)
	e.do(req{method: "POST", path: base + eid + "/", body: `{}`}).must(t, 422)
	e.do(req{method: "POST", path: base + eid + "/", body: `{"description":"` + strings.Repeat("d", 256) + `"}`}).must(t, 422)
	if g := e.do(req{method: "GET", path: base + eid + "/"}).must(t, 200); g.str("ip_address") != "203.0.113.0/24" {
		t.Errorf("after address change %s", g.raw)
	}

	// Unknown entry / ACL.
	e.do(req{method: "GET", path: base + "00000000-0000-4000-8000-000000000000/"}).must(t, 404)
	e.do(req{method: "POST", path: base + "00000000-0000-4000-8000-000000000000/", body: `{"enabled":true}`}).must(t, 404)
	e.do(req{method: "DELETE", path: base + "00000000-0000-4000-8000-000000000000/"}).must(t, 404)
	e.do(req{method: "GET", path: "IPAccessControlList/00000000-0000-4000-8000-000000000000/Entry/"}).must(t, 404)
	e.do(req{method: "POST", path: "IPAccessControlList/00000000-0000-4000-8000-000000000000/Entry/", body: `{"ip_address":"192.0.2.1"}`}).must(t, 404)

	// Delete.
	e.do(req{method: "DELETE", path: base + eid + "/"}).must(t, 204)
	e.do(req{method: "GET", path: base + eid + "/"}).must(t, 404)
	if got := len(e.do(req{method: "GET", path: base}).must(t, 200).objects(t)); got != 3 {
		t.Errorf("%d entries after delete, want 3", got)
	}
}

func TestACLDeleteInUse(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("pbx", "192.0.2.10")
	t1 := e.createTrunk(map[string]any{"name": "a", "ipacl_uuid": id})
	t2 := e.createTrunk(map[string]any{"name": "b", "ipacl_uuid": id})
	r := e.do(req{method: "DELETE", path: "IPAccessControlList/" + id + "/"}).must(t, 409)
	for _, tid := range []string{t1, t2} {
		if !strings.Contains(r.errorText(), tid) {
			t.Errorf("409 %q does not name trunk %s", r.errorText(), tid)
		}
	}
	e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	e.do(req{method: "DELETE", path: "Trunk/" + t1 + "/"}).must(t, 204)
	e.do(req{method: "DELETE", path: "Trunk/" + t2 + "/"}).must(t, 204)
	e.do(req{method: "DELETE", path: "IPAccessControlList/" + id + "/"}).must(t, 204)
}

func TestFormBodies(t *testing.T) {
	e := newEnv(t)
	r := e.do(req{method: "POST", path: "IPAccessControlList/", body: url.Values{
		"name": {"form"}, "ip_addresses": {"192.0.2.1, 192.0.2.2", "198.51.100.0/24"}}}).must(t, 201)
	id := r.str("ipacl_uuid")
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if !equalJSON(g.body["ip_addresses"], []string{"192.0.2.1", "192.0.2.2", "198.51.100.0/24"}) {
		t.Errorf("form ip_addresses %v", g.body["ip_addresses"])
	}
	a := e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/Entry/", body: url.Values{
		"ip_address": {"203.0.113.5"}, "enabled": {"false"}, "description": {"via form"}}}).must(t, 201)
	en := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/Entry/" + a.str("id") + "/"}).must(t, 200)
	if en.body["enabled"] != false || en.str("description") != "via form" {
		t.Errorf("form entry %s", en.raw)
	}
	e.do(req{method: "POST", path: "Trunk/", body: url.Values{"name": {"t"}, "max_cps": {"5"}, "ipacl_uuid": {id},
		"digest_algorithms[]": {"SHA-256", "MD5"}}}).must(t, 201)
	for name, v := range map[string]url.Values{
		"unknown key":   {"name": {"x"}, "ip_addresses": {"192.0.2.9"}, "colour": {"red"}},
		"bad bool":      {"ip_address": {"192.0.2.9"}, "enabled": {"maybe"}},
		"repeated name": {"name": {"x", "y"}, "ip_addresses": {"192.0.2.9"}},
	} {
		path := "IPAccessControlList/"
		if _, ok := v["ip_address"]; ok {
			path += id + "/Entry/"
		}
		if r := e.do(req{method: "POST", path: path, body: v}); r.code != 400 {
			t.Errorf("%s: %d, want 400: %s", name, r.code, r.raw)
		}
	}
	if r := e.do(req{method: "POST", path: "IPAccessControlList/", body: url.Values{"name": {"x"}, "ip_addresses": {""}}}); r.code != 422 {
		t.Errorf("empty form list: %d, want 422", r.code)
	}
}

// TestConcurrentEntryAdds: 50 parallel adds to one ACL all land (no lost update).
func TestConcurrentEntryAdds(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("busy", "192.0.2.1")
	const n = 50
	errs := make(chan string, n)
	start := make(chan struct{})
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			body := `{"ip_address":"198.51.100.` + strconv.Itoa(i+1) + `"}`
			hr, _ := newJSONRequest("POST", e.url(testAuthID, "IPAccessControlList/"+id+"/Entry/"), body)
			res, err := e.hs.Client().Do(hr)
			if err != nil {
				errs <- err.Error()
				return
			}
			res.Body.Close()
			if res.StatusCode != 201 {
				errs <- "status " + res.Status
			}
		}()
	}
	close(start)
	for range n {
		<-done
	}
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	got := toStrings(g.body["ip_addresses"])
	if len(got) != n+1 {
		t.Fatalf("%d addresses after %d concurrent adds, want %d", len(got), n, n+1)
	}
	for i := range n {
		if !slices.Contains(got, "198.51.100."+strconv.Itoa(i+1)) {
			t.Errorf("198.51.100.%d lost", i+1)
		}
	}
}

// TestRestartDurability: what the API wrote is there after the store is closed and
// reopened on the same directory.
func TestRestartDurability(t *testing.T) {
	e := newEnv(t)
	id := e.createACL("durable", "192.0.2.1", "2001:db8::/48")
	eid := e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/Entry/", body: `{"ip_address":"198.51.100.0/24","enabled":false,"description":"off"}`}).must(t, 201).str("id")
	cred := e.createCredential("c", "durable-user")
	trunk := e.createTrunk(map[string]any{"name": "t", "ipacl_uuid": id, "credential_uuid": cred})
	before := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	version, _ := e.api.Version(context.Background())

	e.close()
	e.open()
	if v, _ := e.api.Version(context.Background()); v != version {
		t.Errorf("version %d after reopen, want %d", v, version)
	}
	after := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	delete(before.body, "api_id")
	delete(after.body, "api_id")
	if !equalJSON(before.body, after.body) {
		t.Errorf("ACL changed across restart:\nbefore %v\nafter  %v", before.body, after.body)
	}
	en := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/Entry/" + eid + "/"}).must(t, 200)
	if en.body["enabled"] != false || en.str("description") != "off" {
		t.Errorf("entry after restart %s", en.raw)
	}
	e.do(req{method: "GET", path: "Credential/" + cred + "/"}).must(t, 200)
	tr := e.do(req{method: "GET", path: "Trunk/" + trunk + "/"}).must(t, 200)
	if tr.str("ipacl_uuid") != id || tr.str("credential_uuid") != cred {
		t.Errorf("trunk after restart %s", tr.raw)
	}
	if l := e.do(req{method: "GET", path: "IPAccessControlList/?limit=1"}).must(t, 200); l.meta(t)["total_count"] != 1.0 {
		t.Errorf("total_count after restart %v", l.meta(t)["total_count"])
	}
}

// TestTimestamps: created_at/updated_at come from the clock, in UTC with seconds.
func TestTimestamps(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("X", 3600))
	e := newEnv(t)
	e.srv = New(Config{SIPDomain: testDomain}, e.api, WithClock(func() time.Time { return now }))
	e.hs.Config.Handler = e.srv.Handler()
	id := e.createACL("clock", "192.0.2.1")
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if g.str("created_at") != "2025-03-04T04:06:07Z" || g.str("updated_at") != "2025-03-04T04:06:07Z" {
		t.Errorf("timestamps %s %s", g.str("created_at"), g.str("updated_at"))
	}
	now = now.Add(time.Hour)
	e.do(req{method: "POST", path: "IPAccessControlList/" + id + "/", body: `{"name":"later"}`}).must(t, 202)
	g = e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)
	if g.str("created_at") != "2025-03-04T04:06:07Z" || g.str("updated_at") != "2025-03-04T05:06:07Z" {
		t.Errorf("after update %s %s", g.str("created_at"), g.str("updated_at"))
	}
}
