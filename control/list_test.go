package control

import (
	"fmt"
	"strconv"
	"testing"
)

// TestPagination covers the meta of every list at the edges: totals 0, 20, 21 and 109,
// offsets inside and past the end, and that walking "next" visits every object once.
func TestPagination(t *testing.T) {
	e := newEnv(t)
	base := "/v1/Account/" + testAuthID + "/Zentrunk/IPAccessControlList/"
	ptr := func(off int, limit int) any {
		if off < 0 {
			return nil
		}
		return base + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(off)
	}
	type want struct {
		query      string
		limit      int
		offset     int
		objects    int
		prev, next int // -1: null
	}
	check := func(t *testing.T, total int, w want) {
		t.Helper()
		r := e.do(req{method: "GET", path: "IPAccessControlList/" + w.query}).must(t, 200)
		m := r.meta(t)
		wantMeta := map[string]any{"limit": w.limit, "offset": w.offset, "total_count": total,
			"previous": ptr(w.prev, w.limit), "next": ptr(w.next, w.limit)}
		if !equalJSON(m, wantMeta) {
			t.Errorf("%s: meta %v, want %v", w.query, m, wantMeta)
		}
		if got := len(r.objects(t)); got != w.objects {
			t.Errorf("%s: %d objects, want %d", w.query, got, w.objects)
		}
	}
	created := 0
	grow := func(n int) {
		for ; created < n; created++ {
			e.createACL(fmt.Sprintf("acl%03d", created), fmt.Sprintf("10.%d.%d.0/24", created/256, created%256))
		}
	}

	t.Run("total 0", func(t *testing.T) {
		check(t, 0, want{"", 20, 0, 0, -1, -1})
		check(t, 0, want{"?offset=40", 20, 40, 0, 20, -1})
	})
	grow(20)
	t.Run("total 20", func(t *testing.T) {
		check(t, 20, want{"", 20, 0, 20, -1, -1})
		check(t, 20, want{"?limit=20&offset=0", 20, 0, 20, -1, -1})
		check(t, 20, want{"?limit=10", 10, 0, 10, -1, 10})
		check(t, 20, want{"?limit=10&offset=10", 10, 10, 10, 0, -1})
		check(t, 20, want{"?offset=20", 20, 20, 0, 0, -1})
	})
	grow(21)
	t.Run("total 21", func(t *testing.T) {
		check(t, 21, want{"", 20, 0, 20, -1, 20})
		check(t, 21, want{"?offset=20", 20, 20, 1, 0, -1})
		check(t, 21, want{"?offset=5", 20, 5, 16, 0, -1})
		check(t, 21, want{"?limit=1&offset=20", 1, 20, 1, 19, -1})
	})
	grow(109)
	t.Run("total 109", func(t *testing.T) {
		check(t, 109, want{"", 20, 0, 20, -1, 20})
		check(t, 109, want{"?offset=100", 20, 100, 9, 80, -1})
		check(t, 109, want{"?offset=89", 20, 89, 20, 69, -1})
		check(t, 109, want{"?offset=88", 20, 88, 20, 68, 108})
		check(t, 109, want{"?offset=109", 20, 109, 0, 89, -1})
		check(t, 109, want{"?offset=1000", 20, 1000, 0, 980, -1})
		check(t, 109, want{"?limit=7&offset=105", 7, 105, 4, 98, -1})

		// Walk next from the start: every ACL exactly once, in creation order.
		seen := map[string]bool{}
		var names []string
		path := base
		for pages := 0; path != ""; pages++ {
			if pages > 6 {
				t.Fatal("next never ends")
			}
			r := e.do(req{method: "GET", path: path}).must(t, 200)
			for _, o := range r.objects(t) {
				id := o["ipacl_uuid"].(string)
				if seen[id] {
					t.Errorf("%s listed twice", id)
				}
				seen[id] = true
				names = append(names, o["name"].(string))
			}
			path, _ = r.meta(t)["next"].(string)
		}
		if len(seen) != 109 {
			t.Errorf("walked %d objects, want 109", len(seen))
		}
		for i, n := range names {
			if n != fmt.Sprintf("acl%03d", i) {
				t.Errorf("position %d holds %s: not creation order", i, n)
				break
			}
		}
	})
	// Lists of other kinds share the rules; entries are paged in memory.
	t.Run("entries", func(t *testing.T) {
		addrs := make([]string, 45)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("192.0.2.%d", i+1)
		}
		id := e.createACL("many", addrs...)
		r := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/Entry/?limit=20&offset=40"}).must(t, 200)
		entryBase := base + id + "/Entry/"
		if m := r.meta(t); !equalJSON(m, map[string]any{"limit": 20, "offset": 40, "total_count": 45,
			"previous": entryBase + "?limit=20&offset=20", "next": nil}) {
			t.Errorf("entry meta %v", m)
		}
		if objs := r.objects(t); len(objs) != 5 || objs[0]["ip_address"] != "192.0.2.41" {
			t.Errorf("entry page %v", objs)
		}
		if r := e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/Entry/?offset=45"}).must(t, 200); len(r.objects(t)) != 0 {
			t.Errorf("past the end: %s", r.raw)
		}
	})
	t.Run("credentials and trunks", func(t *testing.T) {
		for i := range 3 {
			e.createCredential("c", fmt.Sprintf("page-user-%d", i))
		}
		r := e.do(req{method: "GET", path: "Credential/?limit=2"}).must(t, 200)
		if m := r.meta(t); m["total_count"] != 3.0 || m["next"] != "/v1/Account/"+testAuthID+"/Zentrunk/Credential/?limit=2&offset=2" {
			t.Errorf("credential meta %v", m)
		}
		r = e.do(req{method: "GET", path: "Trunk/?limit=5"}).must(t, 200)
		if m := r.meta(t); m["total_count"] != 0.0 || m["next"] != nil || len(r.objects(t)) != 0 {
			t.Errorf("trunk meta %v", m)
		}
	})
}

// TestAccountIsolation: account B sees and changes nothing of account A's (404), and
// lists only its own objects.
func TestAccountIsolation(t *testing.T) {
	e := newEnv(t)
	aclID := e.createACL("a-acl", "192.0.2.1")
	entryID := e.do(req{method: "GET", path: "IPAccessControlList/" + aclID + "/Entry/"}).must(t, 200).objects(t)[0]["id"].(string)
	cred := e.createCredential("a-cred", "a-user")
	trunk := e.createTrunk(map[string]any{"name": "a-trunk", "ipacl_uuid": aclID, "credential_uuid": cred})
	b := func(method, path, body string) *resp {
		return e.do(req{method: method, path: path, body: body, user: otherAuthID, pass: otherToken})
	}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "IPAccessControlList/" + aclID + "/", ""},
		{"POST", "IPAccessControlList/" + aclID + "/", `{"name":"stolen"}`},
		{"DELETE", "IPAccessControlList/" + aclID + "/", ""},
		{"GET", "IPAccessControlList/" + aclID + "/Entry/", ""},
		{"POST", "IPAccessControlList/" + aclID + "/Entry/", `{"ip_address":"203.0.113.9"}`},
		{"GET", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", ""},
		{"POST", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", `{"enabled":false}`},
		{"DELETE", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", ""},
		{"GET", "Credential/" + cred + "/", ""},
		{"POST", "Credential/" + cred + "/", `{"password":"hijacked-pw"}`},
		{"DELETE", "Credential/" + cred + "/", ""},
		{"GET", "Trunk/" + trunk + "/", ""},
		{"POST", "Trunk/" + trunk + "/", `{"trunk_status":"disabled"}`},
		{"DELETE", "Trunk/" + trunk + "/", ""},
	} {
		if r := b(tc.method, tc.path, tc.body); r.code != 404 {
			t.Errorf("B %s %s: %d, want 404: %s", tc.method, tc.path, r.code, r.raw)
		}
	}
	for _, path := range []string{"IPAccessControlList/", "Credential/", "Trunk/"} {
		r := b("GET", path, "").must(t, 200)
		if n := len(r.objects(t)); n != 0 || r.meta(t)["total_count"] != 0.0 {
			t.Errorf("B lists %d of A's objects at %s", n, path)
		}
	}
	// A's objects are untouched.
	g := e.do(req{method: "GET", path: "IPAccessControlList/" + aclID + "/"}).must(t, 200)
	if g.str("name") != "a-acl" || g.body["entries"].([]any)[0].(map[string]any)["enabled"] != true {
		t.Errorf("A's ACL changed: %s", g.raw)
	}
	if tr := e.do(req{method: "GET", path: "Trunk/" + trunk + "/"}).must(t, 200); tr.str("trunk_status") != "enabled" {
		t.Errorf("A's trunk changed: %s", tr.raw)
	}
	// B cannot attach A's objects to its own trunk.
	b("POST", "Trunk/", `{"name":"b","credential_uuid":"`+cred+`"}`).must(t, 422)
}
