package control

import (
	"context"
	"strings"
	"testing"

	"github.com/sipedge/sipedge/acl"
)

func TestTrunks(t *testing.T) {
	e := newEnv(t)
	aclID := e.createACL("pbx", "192.0.2.10")
	cred := e.createCredential("c", "trunk-user")

	// Defaults: outbound, enabled, <trunk_id>.<sip domain>.
	r := e.do(req{method: "POST", path: "Trunk/", body: map[string]any{"name": "plain", "ipacl_uuid": aclID}}).must(t, 201)
	id := r.str("trunk_id")
	if !uuidRE.MatchString(id) || r.str("message") != "Trunk created" || r.hdr.Get("X-Sipedge-Version") == "" {
		t.Fatalf("create %s", r.raw)
	}
	if _, ok := r.body["warnings"]; ok {
		t.Errorf("unexpected warnings %s", r.raw)
	}
	g := e.do(req{method: "GET", path: "Trunk/" + id + "/"}).must(t, 200)
	want := map[string]any{
		"api_id": g.str("api_id"), "trunk_id": id, "name": "plain", "trunk_direction": "outbound", "trunk_status": "enabled",
		"trunk_domain": id + "." + testDomain, "ipacl_uuid": aclID, "credential_uuid": nil, "upstream_uri": nil,
		"digest_algorithms": nil, "max_cps": 0, "max_concurrent": 0,
		"created_at": g.str("created_at"), "updated_at": g.str("updated_at"),
	}
	if !equalJSON(g.body, want) || !matches(tsRE, g.str("updated_at")) {
		t.Errorf("object\n got %s\nwant %v", g.raw, want)
	}

	// Everything set; domain lowercased, upstream canonical, algorithms canonical.
	r = e.do(req{method: "POST", path: "Trunk", body: map[string]any{
		"name": "full", "trunk_direction": "inbound", "trunk_status": "disabled", "trunk_domain": "PBX1.Example.ORG",
		"ipacl_uuid": aclID, "credential_uuid": cred, "upstream_uri": "SIP:Core.Example.org:5070",
		"digest_algorithms": []string{"sha-256", "md5"}, "max_cps": 10, "max_concurrent": 30}}).must(t, 201)
	full := r.str("trunk_id")
	if !equalJSON(r.body["warnings"], []string{"only outbound trunks are relayed: this inbound trunk is stored but carries no call"}) {
		t.Errorf("warnings %s", r.raw)
	}
	stored, err := e.st.GetTrunk(context.Background(), testAuthID, acl.TrunkID(full))
	if err != nil {
		t.Fatal(err)
	}
	if stored.Domain != "pbx1.example.org" || stored.UpstreamURI != "sip:core.example.org:5070" ||
		!equalJSON(stored.DigestAlgorithms, []string{"SHA-256", "MD5"}) || stored.MaxCPS != 10 || stored.MaxConcurrent != 30 ||
		stored.Direction != "inbound" || stored.Status != "disabled" || stored.CredentialUUID != cred {
		t.Errorf("stored %+v", stored)
	}

	// A trunk with nothing to accept calls is stored, with a warning.
	r = e.do(req{method: "POST", path: "Trunk/", body: `{"name":"empty"}`}).must(t, 201)
	if !strings.Contains(strings.Join(toStrings(r.body["warnings"]), " "), "accepts no call") {
		t.Errorf("warnings %s", r.raw)
	}

	// Domain taken, also by another account → 409, domains compared lowercase.
	r = e.do(req{method: "POST", path: "Trunk/", body: `{"name":"dup","trunk_domain":"pbx1.example.org"}`}).must(t, 409)
	if !strings.Contains(r.errorText(), "trunk_domain is not available") {
		t.Errorf("409 %q", r.errorText())
	}
	// Another account: outside its SIP-domain label and not granted → 422; a label under
	// the SIP domain this account uses → 409 naming nothing of this account.
	e.do(req{method: "POST", path: "Trunk/", user: otherAuthID, pass: otherToken, body: `{"name":"dup","trunk_domain":"PBX1.example.org"}`}).must(t, 422)
	mine := e.do(req{method: "POST", path: "Trunk/", body: `{"name":"mine","trunk_domain":"taken.` + testDomain + `"}`}).must(t, 201).str("trunk_id")
	r = e.do(req{method: "POST", path: "Trunk/", user: otherAuthID, pass: otherToken, body: `{"name":"dup","trunk_domain":"TAKEN.` + testDomain + `"}`}).must(t, 409)
	if strings.Contains(r.errorText(), testAuthID) || strings.Contains(r.errorText(), "mine") || strings.Contains(r.errorText(), "taken") {
		t.Errorf("409 %q names this account's trunk", r.errorText())
	}
	e.do(req{method: "DELETE", path: "Trunk/" + mine + "/"}).must(t, 204)

	// Unknown references → 422 naming them; another account's ACL is unknown too.
	otherACL := e.do(req{method: "POST", path: "IPAccessControlList/", user: otherAuthID, pass: otherToken,
		body: `{"name":"o","ip_addresses":["203.0.113.1"]}`}).must(t, 201).str("ipacl_uuid")
	for _, body := range []string{
		`{"name":"x","ipacl_uuid":"00000000-0000-4000-8000-000000000000"}`,
		`{"name":"x","credential_uuid":"00000000-0000-4000-8000-000000000000"}`,
		`{"name":"x","ipacl_uuid":"` + otherACL + `"}`,
	} {
		r := e.do(req{method: "POST", path: "Trunk/", body: body}).must(t, 422)
		if !strings.Contains(r.errorText(), "no such") {
			t.Errorf("%s: %q", body, r.errorText())
		}
	}

	// Field validation.
	for _, tc := range []struct{ body, want string }{
		{`{"trunk_domain":"a.example.org"}`, "name is required"},
		{`{"name":"x","trunk_direction":"sideways"}`, "trunk_direction"},
		{`{"name":"x","trunk_status":"on"}`, "trunk_status"},
		{`{"name":"x","trunk_domain":"bad_domain.example.org"}`, "trunk_domain"},
		{`{"name":"x","trunk_domain":"-a.example.org"}`, "trunk_domain"},
		{`{"name":"x","trunk_domain":"a..example.org"}`, "trunk_domain"},
		{`{"name":"x","trunk_domain":"192.0.2.1"}`, "trunk_domain"},
		{`{"name":"x","upstream_uri":"http://core.example.org"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:core.example.org:0"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:core.example.org:70000"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:core.example.org\r\nVia: x"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:user@core.example.org"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:2001:db8::1"}`, "upstream_uri"},
		{`{"name":"x","upstream_uri":"sip:"}`, "upstream_uri"},
		{`{"name":"x","digest_algorithms":["MD5","md5"]}`, "duplicate"},
		{`{"name":"x","digest_algorithms":["SHA-512"]}`, "digest_algorithms"},
		{`{"name":"x","max_cps":-1}`, "max_cps"},
		{`{"name":"x","max_concurrent":-5}`, "max_concurrent"},
	} {
		r := e.do(req{method: "POST", path: "Trunk/", body: tc.body}).must(t, 422)
		if !strings.Contains(r.errorText(), tc.want) {
			t.Errorf("%s: error %q, want %q", tc.body, r.errorText(), tc.want)
		}
	}
	// sips: is refused until the SIP layer can relay over TLS (tenancy_test.go).
	for _, ok := range []string{"sip:[2001:db8::1]:5061", "sip:192.0.2.1", "sip:core.example.org"} {
		e.do(req{method: "POST", path: "Trunk/" + id + "/", body: map[string]any{"upstream_uri": ok}}).must(t, 202)
	}
	e.do(req{method: "POST", path: "Trunk/", body: `{"name":"x","max_cps":"ten"}`}).must(t, 400)

	// Update: disable, detach the ACL, restore the default domain and algorithms.
	u := e.do(req{method: "POST", path: "Trunk/" + full + "/", body: `{"trunk_status":"enabled","trunk_direction":"outbound","credential_uuid":"","trunk_domain":"","digest_algorithms":[],"upstream_uri":""}`}).must(t, 202)
	if u.str("trunk_id") != full || u.str("message") != "Trunk updated" {
		t.Errorf("update %s", u.raw)
	}
	g = e.do(req{method: "GET", path: "Trunk/" + full + "/"}).must(t, 200)
	if g.str("trunk_status") != "enabled" || g.body["credential_uuid"] != nil || g.str("trunk_domain") != full+"."+testDomain ||
		g.body["digest_algorithms"] != nil || g.body["upstream_uri"] != nil || g.str("ipacl_uuid") != aclID {
		t.Errorf("after update %s", g.raw)
	}
	e.do(req{method: "POST", path: "Trunk/" + full + "/", body: `{}`}).must(t, 422)
	e.do(req{method: "POST", path: "Trunk/" + full + "/", body: `{"trunk_domain":"` + id + "." + testDomain + `"}`}).must(t, 409)
	e.do(req{method: "POST", path: "Trunk/" + full + "/", body: `{"ipacl_uuid":"00000000-0000-4000-8000-000000000000"}`}).must(t, 422)

	l := e.do(req{method: "GET", path: "Trunk/"}).must(t, 200)
	if got := len(l.objects(t)); got != 3 {
		t.Errorf("%d trunks listed, want 3", got)
	}
	e.do(req{method: "DELETE", path: "Trunk/" + full + "/"}).must(t, 204)
	e.do(req{method: "GET", path: "Trunk/" + full + "/"}).must(t, 404)
	e.do(req{method: "POST", path: "Trunk/" + full + "/", body: `{"name":"x"}`}).must(t, 404)
	e.do(req{method: "DELETE", path: "Trunk/" + full + "/"}).must(t, 404)
	// The freed domain can be taken again.
	e.do(req{method: "POST", path: "Trunk/", body: `{"name":"again","trunk_domain":"pbx1.example.org"}`}).must(t, 201)
}

// TestTrunkDomainRequiredWithoutSIPDomain: no SIP domain configured → trunk_domain required.
func TestTrunkDomainRequiredWithoutSIPDomain(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SIPDomain = "" }))
	r := e.do(req{method: "POST", path: "Trunk/", body: `{"name":"x"}`}).must(t, 422)
	if !strings.Contains(r.errorText(), "trunk_domain is required") {
		t.Errorf("error %q", r.errorText())
	}
	e.do(req{method: "POST", path: "Trunk/", body: `{"name":"x","trunk_domain":"x.example.org"}`}).must(t, 201)
}
