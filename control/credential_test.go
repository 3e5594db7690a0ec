package control

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func ha1(h string, user, realm, pw string) string {
	a1 := []byte(user + ":" + realm + ":" + pw)
	if h == "md5" {
		s := md5.Sum(a1)
		return hex.EncodeToString(s[:])
	}
	s := sha256.Sum256(a1)
	return hex.EncodeToString(s[:])
}

func TestCredentials(t *testing.T) {
	const pw = "first-Passw0rd"
	e := newEnv(t)
	r := e.do(req{method: "POST", path: "Credential/", body: map[string]any{"name": "pbx", "username": "pbx1@example.org", "password": pw}}).must(t, 201)
	id := r.str("credential_uuid")
	if !uuidRE.MatchString(id) || r.str("message") != "Credential created" || r.hdr.Get("X-Sipedge-Version") == "" {
		t.Fatalf("create: %s", r.raw)
	}
	// HA1s over the realm (default: the SIP domain), never the password.
	stored, err := e.st.GetCredential(context.Background(), testAuthID, id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Realm != testDomain || stored.HA1MD5 != ha1("md5", "pbx1@example.org", testDomain, pw) ||
		stored.HA1SHA256 != ha1("sha256", "pbx1@example.org", testDomain, pw) {
		t.Errorf("stored %+v", stored)
	}
	g := e.do(req{method: "GET", path: "Credential/" + id + "/"}).must(t, 200)
	want := map[string]any{"api_id": g.str("api_id"), "credential_uuid": id, "name": "pbx", "username": "pbx1@example.org",
		"realm": testDomain, "created_at": g.str("created_at"), "updated_at": g.str("updated_at")}
	if !equalJSON(g.body, want) || !matches(tsRE, g.str("created_at")) {
		t.Errorf("object %s", g.raw)
	}
	l := e.do(req{method: "GET", path: "Credential/"}).must(t, 200)
	if objs := l.objects(t); len(objs) != 1 || objs[0]["credential_uuid"] != id {
		t.Errorf("list %s", l.raw)
	}

	// Password change recomputes both HA1s.
	e.do(req{method: "POST", path: "Credential/" + id + "/", body: `{"password":"second-Passw0rd"}`}).must(t, 202)
	stored, _ = e.st.GetCredential(context.Background(), testAuthID, id)
	if stored.HA1MD5 != ha1("md5", "pbx1@example.org", testDomain, "second-Passw0rd") ||
		stored.HA1SHA256 != ha1("sha256", "pbx1@example.org", testDomain, "second-Passw0rd") {
		t.Error("password change did not recompute the HA1s")
	}
	// A username change needs the password: the HA1s cover it.
	r = e.do(req{method: "POST", path: "Credential/" + id + "/", body: `{"username":"pbx2"}`}).must(t, 422)
	if !strings.Contains(r.errorText(), "password") {
		t.Errorf("error %q", r.errorText())
	}
	e.do(req{method: "POST", path: "Credential/" + id + "/", body: `{"username":"pbx2","password":"third-Passw0rd","name":"renamed"}`}).must(t, 202)
	stored, _ = e.st.GetCredential(context.Background(), testAuthID, id)
	if stored.Username != "pbx2" || stored.Name != "renamed" || stored.HA1MD5 != ha1("md5", "pbx2", testDomain, "third-Passw0rd") {
		t.Errorf("after username change %+v", stored)
	}
	// Name only keeps the HA1s.
	e.do(req{method: "POST", path: "Credential/" + id, body: `{"name":"again"}`}).must(t, 202)
	if s2, _ := e.st.GetCredential(context.Background(), testAuthID, id); s2.HA1MD5 != stored.HA1MD5 || s2.Name != "again" {
		t.Errorf("name change touched HA1s: %+v", s2)
	}

	// Usernames are unique across all accounts.
	r = e.do(req{method: "POST", path: "Credential/", user: otherAuthID, pass: otherToken,
		body: map[string]any{"name": "x", "username": "pbx2", "password": "whatever-123"}}).must(t, 409)
	if !strings.Contains(r.errorText(), "username is not available") || strings.Contains(r.errorText(), testAuthID) {
		t.Errorf("409 %q: want a generic message naming no other account", r.errorText())
	}
	other := e.createCredential("other", "pbx3")
	e.do(req{method: "POST", path: "Credential/" + other + "/", body: `{"username":"pbx2","password":"whatever-123"}`}).must(t, 409)

	// Validation.
	for _, tc := range []struct{ body, want string }{
		{`{"username":"u1","password":"long-enough"}`, "name"},
		{`{"name":"n","password":"long-enough"}`, "username is required"},
		{`{"name":"n","username":"u1"}`, "password is required"},
		{`{"name":"n","username":"bad user","password":"long-enough"}`, "username"},
		{`{"name":"n","username":"` + strings.Repeat("u", 65) + `","password":"long-enough"}`, "64"},
		{`{"name":"n","username":"","password":"long-enough"}`, "username"},
		{`{"name":"n","username":"u1","password":"short"}`, "password: must be 8 to 128"},
		{`{"name":"n","username":"u1","password":"` + strings.Repeat("p", 129) + `"}`, "password: must be 8 to 128"},
		{`{"name":"n","username":"u1","password":"line\nbreak"}`, "password"},
	} {
		r := e.do(req{method: "POST", path: "Credential/", body: tc.body}).must(t, 422)
		if !strings.Contains(r.errorText(), tc.want) {
			t.Errorf("%s: error %q, want %q", tc.body, r.errorText(), tc.want)
		}
		if strings.Contains(r.errorText(), "short") || strings.Contains(r.errorText(), "pppp") {
			t.Errorf("error echoes the password: %q", r.errorText())
		}
	}
	e.do(req{method: "POST", path: "Credential/" + id + "/", body: `{}`}).must(t, 422)
	e.do(req{method: "POST", path: "Credential/", body: `{"name":"n","username":"u1","password":"long-enough","realm":"x"}`}).must(t, 400)

	// In use → 409 naming the trunk; then delete.
	trunk := e.createTrunk(map[string]any{"name": "t", "credential_uuid": id})
	r = e.do(req{method: "DELETE", path: "Credential/" + id + "/"}).must(t, 409)
	if !strings.Contains(r.errorText(), trunk) {
		t.Errorf("409 %q does not name trunk %s", r.errorText(), trunk)
	}
	e.do(req{method: "DELETE", path: "Trunk/" + trunk + "/"}).must(t, 204)
	e.do(req{method: "DELETE", path: "Credential/" + id + "/"}).must(t, 204)
	e.do(req{method: "GET", path: "Credential/" + id + "/"}).must(t, 404)
	e.do(req{method: "POST", path: "Credential/" + id + "/", body: `{"name":"x"}`}).must(t, 404)
	e.do(req{method: "DELETE", path: "Credential/" + id + "/"}).must(t, 404)

	// The password appears in no response and no log line.
	if logs := e.logText(); strings.Contains(logs, "Passw0rd") || strings.Contains(logs, testToken) {
		t.Errorf("secret in logs: %s", logs)
	}
}

// TestRealmConfig: Config.Realm wins over the SIP domain for the HA1s.
func TestRealmConfig(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.Realm = "edge.example.org" }))
	id := e.createCredential("c", "realm-user")
	stored, err := e.st.GetCredential(context.Background(), testAuthID, id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Realm != "edge.example.org" || stored.HA1MD5 != ha1("md5", "realm-user", "edge.example.org", "s3cret-passw0rd") {
		t.Errorf("stored %+v", stored)
	}
	if g := e.do(req{method: "GET", path: "Credential/" + id + "/"}).must(t, 200); g.str("realm") != "edge.example.org" {
		t.Errorf("realm shown %q", g.str("realm"))
	}
}
