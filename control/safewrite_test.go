package control

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// backends runs f against the API over the embedded store and, with SIPEDGE_TEST_REDIS,
// over a Redis store.
func backends(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("bbolt", func(t *testing.T) { f(t, newEnv(t)) })
	t.Run("redis", func(t *testing.T) { f(t, newRedisEnv(t)) })
}

// newRedisEnv is newEnv over a Redis store under a key prefix of its own (deleted after
// the test).
func newRedisEnv(t *testing.T) *env {
	t.Helper()
	u := os.Getenv("SIPEDGE_TEST_REDIS")
	if u == "" {
		t.Skip("set SIPEDGE_TEST_REDIS to run")
	}
	ro, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("SIPEDGE_TEST_REDIS: %v", err)
	}
	prefix := "sipedgetest:" + uuid.NewString()[:8] + ":"
	t.Cleanup(func() {
		c := redis.NewClient(ro)
		defer c.Close()
		keys, _ := c.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	})
	st, err := store.OpenRedisOptions(context.Background(), ro, store.WithPrefix(prefix), store.WithNodeTTL(time.Hour))
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	e := &env{t: t, st: st, api: st, reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	if _, _, err := Bootstrap(context.Background(), st, testAuthID, testToken); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAccount(context.Background(), acl.Account{AuthID: otherAuthID, Name: "other",
		TokenHash: hashToken(otherToken), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	allowances(t, st)
	e.srv = New(testConfig(e), st)
	e.hs = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.close)
	return e
}

// auditLog reads the whole audit log of the test account through the API (newest first).
func (e *env) auditLog() []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for off := 0; ; off += 20 {
		r := e.do(req{method: "GET", path: "AuditLog/?limit=20&offset=" + strconv.Itoa(off)}).must(e.t, 200)
		page := r.objects(e.t)
		out = append(out, page...)
		if len(page) < 20 {
			return out
		}
	}
}

func ha1s(user, realm, password string) []string {
	a1 := user + ":" + realm + ":" + password
	m, s := md5.Sum([]byte(a1)), sha256.Sum256([]byte(a1))
	return []string{hex.EncodeToString(m[:]), hex.EncodeToString(s[:])}
}

// TestAuditLog: every write through the API is in the account's audit log, newest first,
// with who, what, before/after, version and request id; credentials without password
// or HA1s; other accounts see none of it.
func TestAuditLog(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		type write struct {
			method, path  string
			body          any
			code          int
			action, kind  string
			object        string // "" = the id the answer names
			before, after bool
		}
		aclID := e.createACL("office", "192.0.2.10")
		start := len(e.auditLog())
		entries := e.do(req{method: "GET", path: "IPAccessControlList/" + aclID + "/Entry/"}).must(t, 200).objects(t)
		firstEntry := entries[0]["id"].(string)
		const password, password2 = "s3cret-passw0rd", "an0ther-passw0rd"
		var credID, trunkID, entryID string
		steps := []write{
			{"POST", "IPAccessControlList/{acl}/", map[string]any{"name": "renamed"}, 202, "update", "ipacl", "{acl}", true, true},
			{"POST", "IPAccessControlList/{acl}/Entry/", map[string]any{"ip_address": "198.51.100.7", "description": "pbx"}, 201, "create", "entry", "", false, true},
			{"POST", "IPAccessControlList/{acl}/Entry/{entry}/", map[string]any{"enabled": false}, 202, "update", "entry", "{entry}", true, true},
			{"DELETE", "IPAccessControlList/{acl}/Entry/{entry}/", nil, 204, "delete", "entry", "{entry}", true, false},
			{"POST", "Credential/", map[string]any{"name": "c", "username": "audit-user", "password": password}, 201, "create", "credential", "", false, true},
			{"POST", "Credential/{cred}/", map[string]any{"password": password2}, 202, "update", "credential", "{cred}", true, true},
			{"POST", "Trunk/", map[string]any{"name": "t", "ipacl_uuid": "{acl}", "credential_uuid": "{cred}"}, 201, "create", "trunk", "", false, true},
			{"POST", "Trunk/{trunk}/", map[string]any{"trunk_status": "disabled"}, 202, "update", "trunk", "{trunk}", true, true},
			{"DELETE", "Trunk/{trunk}/", nil, 204, "delete", "trunk", "{trunk}", true, false},
			{"DELETE", "Credential/{cred}/", nil, 204, "delete", "credential", "{cred}", true, false},
			{"DELETE", "IPAccessControlList/{acl}/Entry/" + firstEntry + "/", nil, 204, "delete", "entry", firstEntry, true, false},
			{"DELETE", "IPAccessControlList/{acl}/", nil, 204, "delete", "ipacl", "{acl}", true, false},
		}
		subst := func(s string) string {
			return strings.NewReplacer("{acl}", aclID, "{cred}", credID, "{trunk}", trunkID, "{entry}", entryID).Replace(s)
		}
		type done struct {
			apiID, object string
			version       float64
		}
		var did []done
		for _, st := range steps {
			body := st.body
			if m, ok := body.(map[string]any); ok {
				c := map[string]any{}
				for k, v := range m {
					if s, ok := v.(string); ok {
						v = subst(s)
					}
					c[k] = v
				}
				body = c
			}
			r := e.do(req{method: st.method, path: subst(st.path), body: body}).must(t, st.code)
			object := subst(st.object)
			if object == "" {
				for _, k := range []string{"id", "credential_uuid", "trunk_id"} {
					if id := r.str(k); id != "" {
						object = id
					}
				}
			}
			switch {
			case st.kind == "entry" && st.action == "create":
				entryID = object
			case st.kind == "credential" && st.action == "create":
				credID = object
			case st.kind == "trunk" && st.action == "create":
				trunkID = object
			}
			v, _ := strconv.ParseFloat(r.hdr.Get("X-Sipedge-Version"), 64)
			did = append(did, done{r.hdr.Get("X-Api-Id"), object, v})
		}

		log := e.auditLog()
		if len(log) != start+len(steps) {
			t.Fatalf("%d audit entries, want %d", len(log), start+len(steps))
		}
		for i, st := range steps {
			got := log[len(steps)-1-i] // newest first
			want := did[i]
			if got["action"] != st.action || got["kind"] != st.kind || got["object_id"] != want.object ||
				got["actor"] != testAuthID || got["account"] != testAuthID || got["request_id"] != want.apiID ||
				got["version"] != want.version || !matches(tsRE, fmt.Sprint(got["at"])) || !uuidRE.MatchString(fmt.Sprint(got["id"])) {
				t.Errorf("step %d (%s %s): audit %v, want %+v", i, st.method, st.path, got, want)
			}
			if (got["before"] != nil) != st.before || (got["after"] != nil) != st.after {
				t.Errorf("step %d: before %v after %v", i, got["before"], got["after"])
			}
		}
		// Content: the rename, the entry's disabling.
		rename := log[len(steps)-1]
		if rename["before"].(map[string]any)["name"] != "office" || rename["after"].(map[string]any)["name"] != "renamed" {
			t.Errorf("rename audited as %v → %v", rename["before"], rename["after"])
		}
		disable := log[len(steps)-3]
		if disable["before"].(map[string]any)["enabled"] != true || disable["after"].(map[string]any)["enabled"] != false {
			t.Errorf("entry update audited as %v → %v", disable["before"], disable["after"])
		}
		// No secret in the log: not the passwords, not their HA1s.
		raw := e.do(req{method: "GET", path: "AuditLog/?limit=20"}).must(t, 200).raw
		secrets := append([]string{password, password2}, ha1s("audit-user", testDomain, password)...)
		secrets = append(secrets, ha1s("audit-user", testDomain, password2)...)
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Fatalf("the audit log holds a secret %q: %s", s, raw)
			}
		}
		if bytes.Contains(raw, []byte("ha1")) {
			t.Fatalf("the audit log names HA1 fields: %s", raw)
		}

		// Pagination as every list: limit, offset, meta.
		total := len(log)
		p := e.do(req{method: "GET", path: "AuditLog/?limit=3&offset=3"}).must(t, 200)
		m := p.meta(t)
		if m["total_count"] != float64(total) || m["limit"] != float64(3) || m["offset"] != float64(3) ||
			!strings.Contains(fmt.Sprint(m["next"]), "AuditLog/?limit=3&offset=6") ||
			!strings.Contains(fmt.Sprint(m["previous"]), "AuditLog/?limit=3&offset=0") {
			t.Errorf("meta %v", m)
		}
		if objs := p.objects(t); len(objs) != 3 || objs[0]["id"] != log[3]["id"] {
			t.Errorf("page limit=3 offset=3 is not log[3:6]")
		}
		for _, bad := range []string{"limit=0", "limit=21", "offset=-1", "limit=x"} {
			e.do(req{method: "GET", path: "AuditLog/?" + bad}).must(t, 400)
		}

		// Account isolation: the other account's log holds only its own creation; the
		// test account's log is 401 for the other's credentials.
		other := e.do(req{method: "GET", path: "AuditLog/", user: otherAuthID, pass: otherToken}).must(t, 200).objects(t)
		for _, o := range other {
			if o["account"] != otherAuthID {
				t.Fatalf("other account sees %v", o)
			}
		}
		e.do(req{method: "GET", path: "/v1/Account/" + testAuthID + "/Zentrunk/AuditLog/", user: otherAuthID, pass: otherToken}).must(t, 401)

		// Failed writes leave no entry.
		e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": "x", "ip_addresses": []string{"10.0.0.5/8"}}}).must(t, 422)
		e.do(req{method: "DELETE", path: "Trunk/" + trunkID + "/"}).must(t, 404)
		if n := len(e.auditLog()); n != total {
			t.Fatalf("failed writes changed the log: %d entries, want %d", n, total)
		}
	})
}

// TestAuditLogAdmin: accounts the admin creates are logged in the new account with the
// admin as actor, and without the token.
func TestAuditLogAdmin(t *testing.T) {
	e := newEnv(t)
	r := e.do(req{method: "POST", path: adminAccounts, noAuth: true, body: map[string]any{"name": "new", "auth_id": "MANEWACCOUNT00000001"},
		header: map[string]string{"Authorization": "Bearer " + testAdmin}}).must(t, 201)
	token := r.str("auth_token")
	log := e.do(req{method: "GET", path: "AuditLog/", user: "MANEWACCOUNT00000001", pass: token}).must(t, 200)
	objs := log.objects(t)
	if len(objs) != 1 || objs[0]["actor"] != "admin" || objs[0]["kind"] != "account" || objs[0]["action"] != "create" ||
		objs[0]["request_id"] != r.hdr.Get("X-Api-Id") {
		t.Fatalf("admin-created account's log: %s", log.raw)
	}
	if bytes.Contains(log.raw, []byte(token)) || bytes.Contains(log.raw, []byte("token_hash")) || bytes.Contains(log.raw, []byte("hmac-sha256")) {
		t.Fatalf("the log holds the token or its hash: %s", log.raw)
	}
}

// TestIdempotencyKey: a retried create with the same key is answered from the first
// one and writes nothing; another request under the key is 422.
func TestIdempotencyKey(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		key := map[string]string{"Idempotency-Key": "create-office-1"}
		body := map[string]any{"name": "office", "ip_addresses": []string{"192.0.2.10"}}
		first := e.do(req{method: "POST", path: "IPAccessControlList/", body: body, header: key}).must(t, 201)
		if first.hdr.Get("Idempotent-Replayed") != "" {
			t.Fatal("a first request marked as replayed")
		}
		before := e.version()
		log := len(e.auditLog())
		for range 3 {
			again := e.do(req{method: "POST", path: "IPAccessControlList/", body: body, header: key}).must(t, 201)
			if !bytes.Equal(again.raw, first.raw) || again.hdr.Get("X-Sipedge-Version") != first.hdr.Get("X-Sipedge-Version") ||
				again.hdr.Get("X-Api-Id") != first.hdr.Get("X-Api-Id") || again.hdr.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("retry answered %d %s %v\nfirst %s %v", again.code, again.raw, again.hdr, first.raw, first.hdr)
			}
		}
		if _, n, _ := e.st.ListACLs(context.Background(), testAuthID, store.Page{}); n != 1 || e.version() != before || len(e.auditLog()) != log {
			t.Fatalf("retries wrote: %d ACLs, version %d → %d", n, before, e.version())
		}
		// The key with another body, another path, another content type: 422, nothing written.
		for _, r := range []req{
			{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": "other", "ip_addresses": []string{"192.0.2.10"}}, header: key},
			{method: "POST", path: "Credential/", body: map[string]any{"name": "c", "username": "idem-user", "password": "s3cret-passw0rd"}, header: key},
		} {
			got := e.do(r).must(t, 422)
			if !strings.Contains(got.errorText(), "Idempotency-Key") {
				t.Errorf("error %q", got.errorText())
			}
		}
		if e.version() != before {
			t.Fatal("a rejected reuse wrote")
		}
		// Keys belong to an account.
		// (another address: accounts never list overlapping ones)
		otherBody := map[string]any{"name": "office", "ip_addresses": []string{"198.51.100.10"}}
		e.do(req{method: "POST", path: "IPAccessControlList/", body: otherBody, header: key, user: otherAuthID, pass: otherToken}).must(t, 201)
		// A failed request records nothing: the key is free for the corrected one.
		fix := map[string]string{"Idempotency-Key": "fix-me"}
		e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": "x", "ip_addresses": []string{"10.0.0.5/8"}}, header: fix}).must(t, 422)
		ok := e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": "x", "ip_addresses": []string{"10.0.0.0/8"}}, header: fix}).must(t, 201)
		// Entries, credentials, trunks and updates take keys too.
		aclID := ok.str("ipacl_uuid")
		for _, r := range []req{
			{method: "POST", path: "IPAccessControlList/" + aclID + "/Entry/", body: map[string]any{"ip_address": "10.1.0.0/16"}},
			{method: "POST", path: "Credential/", body: map[string]any{"name": "c", "username": "idem-user", "password": "s3cret-passw0rd"}},
			{method: "POST", path: "Trunk/", body: map[string]any{"name": "t", "ipacl_uuid": aclID}},
			{method: "POST", path: "IPAccessControlList/" + aclID + "/", body: map[string]any{"name": "renamed"}},
		} {
			r.header = map[string]string{"Idempotency-Key": "k-" + r.path}
			a := e.do(r)
			v := e.version()
			b := e.do(r)
			if a.code/100 != 2 || b.code != a.code || !bytes.Equal(a.raw, b.raw) || b.hdr.Get("Idempotent-Replayed") != "true" || e.version() != v {
				t.Errorf("%s %s: %d %s then %d %s (version %d → %d)", r.method, r.path, a.code, a.raw, b.code, b.raw, v, e.version())
			}
		}
		// Bad keys.
		for _, k := range []string{strings.Repeat("k", 256), "tab\tkey", "nön-ascii"} {
			e.do(req{method: "POST", path: "IPAccessControlList/", body: body, header: map[string]string{"Idempotency-Key": k}}).must(t, 400)
		}
	})
}

// TestIdempotencyKeyConcurrent: concurrent requests with one key create one object; every
// answer names it.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		const n = 8
		var wg sync.WaitGroup
		out := make([]*resp, n)
		for i := range n {
			ch := e.asyncHeader("POST", "Credential/", `{"name":"c","username":"race-user","password":"s3cret-passw0rd"}`,
				map[string]string{"Idempotency-Key": "race"})
			wg.Go(func() { out[i] = <-ch })
		}
		wg.Wait()
		id := ""
		for i, r := range out {
			if r.code != 201 {
				t.Fatalf("request %d: %d %s", i, r.code, r.raw)
			}
			if id == "" {
				id = r.str("credential_uuid")
			}
			if r.str("credential_uuid") != id {
				t.Fatalf("answers name %s and %s", id, r.str("credential_uuid"))
			}
		}
		if _, total, _ := e.st.ListCredentials(context.Background(), testAuthID, store.Page{}); total != 1 {
			t.Fatalf("%d credentials created", total)
		}
	})
}

// asyncHeader is async with extra request headers.
func (e *env) asyncHeader(method, path, body string, hdr map[string]string) <-chan *resp {
	out := make(chan *resp, 1)
	hr, err := newJSONRequest(method, e.url(testAuthID, path), body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		hr.Header.Set(k, v)
	}
	client := e.hs.Client()
	go func() {
		res, err := client.Do(hr)
		if err != nil {
			out <- &resp{code: -1, raw: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		r := &resp{code: res.StatusCode, hdr: res.Header, raw: raw}
		_ = json.Unmarshal(raw, &r.body)
		out <- r
	}()
	return out
}

// TestIfMatch: GET gives a strong ETag; If-Match with a stale or wrong one is 412 and
// changes nothing, with the current one (or *) the write goes through.
func TestIfMatch(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		aclID := e.createACL("office", "192.0.2.10", "192.0.2.11")
		credID := e.createCredential("c", "etag-user")
		trunkID := e.createTrunk(map[string]any{"name": "t"})
		entryID := e.do(req{method: "GET", path: "IPAccessControlList/" + aclID + "/Entry/"}).must(t, 200).objects(t)[0]["id"].(string)
		objects := []struct {
			name, path string
			update     map[string]any
		}{
			{"acl", "IPAccessControlList/" + aclID + "/", map[string]any{"name": "renamed"}},
			{"entry", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", map[string]any{"description": "d"}},
			{"credential", "Credential/" + credID + "/", map[string]any{"password": "an0ther-passw0rd"}},
			{"trunk", "Trunk/" + trunkID + "/", map[string]any{"trunk_status": "disabled"}},
		}
		for _, o := range objects {
			t.Run(o.name, func(t *testing.T) {
				etag := func() string {
					t.Helper()
					g := e.do(req{method: "GET", path: o.path}).must(t, 200)
					tag := g.hdr.Get("ETag")
					if !matches(`^"[A-Za-z0-9_-]{22}"$`, tag) {
						t.Fatalf("ETag %q is not a strong tag", tag)
					}
					return tag
				}
				tag := etag()
				if etag() != tag {
					t.Fatal("ETag changed without a write")
				}
				v := e.version()
				for _, bad := range []string{`"nope"`, "W/" + tag, `"a", "b"`} {
					r := e.do(req{method: "POST", path: o.path, body: o.update, header: map[string]string{"If-Match": bad}}).must(t, 412)
					if !strings.Contains(r.errorText(), "precondition failed") {
						t.Errorf("412 error %q", r.errorText())
					}
				}
				e.do(req{method: "DELETE", path: o.path, header: map[string]string{"If-Match": `"nope"`}}).must(t, 412)
				if e.version() != v || etag() != tag {
					t.Fatal("a 412 changed the object")
				}
				e.do(req{method: "POST", path: o.path, body: o.update, header: map[string]string{"If-Match": `"x", ` + tag}}).must(t, 202)
				next := etag()
				if next == tag {
					t.Fatal("the update kept the ETag")
				}
				e.do(req{method: "POST", path: o.path, body: o.update, header: map[string]string{"If-Match": tag}}).must(t, 412)
				e.do(req{method: "POST", path: o.path, body: o.update, header: map[string]string{"If-Match": "*"}}).must(t, 202)
				for _, bad := range []string{"nope", `"open`, `"a" "b"`, ""} {
					if bad == "" {
						continue // an empty header is not sent
					}
					e.do(req{method: "POST", path: o.path, body: o.update, header: map[string]string{"If-Match": bad}}).must(t, 400)
				}
			})
		}
		// Deletes with the current tag, and a missing object is 404 whatever If-Match says.
		tag := e.do(req{method: "GET", path: "Trunk/" + trunkID + "/"}).must(t, 200).hdr.Get("ETag")
		e.do(req{method: "DELETE", path: "Trunk/" + trunkID + "/", header: map[string]string{"If-Match": tag}}).must(t, 204)
		e.do(req{method: "DELETE", path: "Trunk/" + trunkID + "/", header: map[string]string{"If-Match": "*"}}).must(t, 404)
		e.do(req{method: "POST", path: "IPAccessControlList/" + aclID + "/Entry/" + uuid.NewString() + "/",
			body: map[string]any{"enabled": false}, header: map[string]string{"If-Match": "*"}}).must(t, 404)
		// An entry's tag is its own: the ACL's tag does not match it.
		aclTag := e.do(req{method: "GET", path: "IPAccessControlList/" + aclID + "/"}).must(t, 200).hdr.Get("ETag")
		e.do(req{method: "DELETE", path: "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", header: map[string]string{"If-Match": aclTag}}).must(t, 412)
	})
}

// TestIfMatchConcurrent: two updates sent at once with the same ETag: exactly one 202
// and one 412, round after round.
func TestIfMatchConcurrent(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		aclID := e.createACL("office", "192.0.2.10")
		path := "IPAccessControlList/" + aclID + "/"
		for round := range 10 {
			tag := e.do(req{method: "GET", path: path}).must(t, 200).hdr.Get("ETag")
			a := e.asyncHeader("POST", path, fmt.Sprintf(`{"name":"a%d"}`, round), map[string]string{"If-Match": tag})
			b := e.asyncHeader("POST", path, fmt.Sprintf(`{"name":"b%d"}`, round), map[string]string{"If-Match": tag})
			ra, rb := <-a, <-b
			codes := []int{ra.code, rb.code}
			if !(codes[0] == 202 && codes[1] == 412) && !(codes[0] == 412 && codes[1] == 202) {
				t.Fatalf("round %d: %d %s / %d %s, want one 202 and one 412", round, ra.code, ra.raw, rb.code, rb.raw)
			}
			winner := fmt.Sprintf("a%d", round)
			if rb.code == 202 {
				winner = fmt.Sprintf("b%d", round)
			}
			if got := e.do(req{method: "GET", path: path}).must(t, 200).str("name"); got != winner {
				t.Fatalf("round %d: stored name %q, winner %q", round, got, winner)
			}
		}
	})
}

// TestSafeWriteRoutes: the routes named for Idempotency-Key and If-Match exist.
func TestSafeWriteRoutes(t *testing.T) {
	e := newEnv(t)
	routed := map[string]bool{}
	for _, rt := range e.srv.routes {
		routed[rt.method+" "+rt.path] = true
	}
	for p := range idempotentPaths {
		if !routed["POST "+p] {
			t.Errorf("Idempotency-Key path %s has no POST route", p)
		}
	}
	for p := range conditionalPaths {
		if !routed["POST "+p] || !routed["DELETE "+p] || !routed["GET "+p] {
			t.Errorf("If-Match path %s lacks GET, POST or DELETE", p)
		}
	}
}

// TestParseIfMatch: the header grammar.
func TestParseIfMatch(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		bad  bool
	}{
		{in: []string{`*`}, want: []string{"*"}},
		{in: []string{`"a"`}, want: []string{`"a"`}},
		{in: []string{`"a", W/"b" ,"c,d"`}, want: []string{`"a"`, `W/"b"`, `"c,d"`}},
		{in: []string{`"a"`, `"b"`}, want: []string{`"a"`, `"b"`}},
		{in: []string{`""`}, want: []string{`""`}},
		{in: []string{`a`}, bad: true},
		{in: []string{`"a`}, bad: true},
		{in: []string{`"a" "b"`}, bad: true},
		{in: []string{`W/a`}, bad: true},
		{in: []string{` , `}, bad: true},
	} {
		got, err := parseIfMatch(tc.in)
		if (err != nil) != tc.bad || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("parseIfMatch(%q) = %q, %v", tc.in, got, err)
		}
	}
}
