package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// FuzzCreateACLBody sends arbitrary bodies to POST …/IPAccessControlList/ on the real
// handler over the real store. It must never panic or answer 500, answer 2xx (201) only
// for valid input, store exactly the canonical list then, and reject everything else with
// 400, 413 or 422.
func FuzzCreateACLBody(f *testing.F) {
	for _, seed := range []string{
		`{"name":"x","ip_addresses":["192.0.2.1"]}`,
		`{"name":"x","ip_addresses":["10.0.0.5/8"]}`,
		`{"name":"x","ip_addresses":["::ffff:192.0.2.1","2001:db8::/32"]}`,
		`{"name":"x","ip_addresses":[]}`,
		`{"name":"x"}`,
		`{"name":`,
		`null`,
		`{"name":"x","ip_addresses":["192.0.2.0/24","192.0.2.7"]}`,
	} {
		f.Add([]byte(seed))
	}
	st, err := store.OpenBolt(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, _, err := Bootstrap(ctx, st, testAuthID, testToken); err != nil {
		f.Fatal(err)
	}
	// This target checks the body → stored list mapping, not the account's limits.
	if _, _, err := st.UpdateAccount(ctx, testAuthID, func(a *acl.Account) error {
		a.Limits = acl.Limits{MinPrefixV4: 1, MinPrefixV6: 1, MaxACLs: maxLimitValue, MaxEntries: maxLimitValue,
			MaxEntriesPerACL: maxEntries, WritesPerSecond: 10000, WriteBurst: 10000}
		return nil
	}); err != nil {
		f.Fatal(err)
	}
	h := New(Config{SIPDomain: testDomain}, st).Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		hr := httptest.NewRequest("POST", "/v1/Account/"+testAuthID+"/Zentrunk/IPAccessControlList/", bytes.NewReader(body))
		hr.Header.Set("Content-Type", "application/json")
		hr.SetBasicAuth(testAuthID, testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, hr)
		canon, valid := validACLBody(body)
		switch {
		case rec.Code == http.StatusCreated && valid:
			var out struct {
				UUID string `json:"ipacl_uuid"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("201 body %q: %v", rec.Body, err)
			}
			a, err := st.GetACL(ctx, testAuthID, out.UUID)
			if err != nil {
				t.Fatalf("created ACL not stored: %v", err)
			}
			if got := a.IPAddresses(); !equalJSON(got, canon) {
				t.Fatalf("stored %v, want %v", got, canon)
			}
		case valid:
			t.Fatalf("valid body %q answered %d: %s", body, rec.Code, rec.Body)
		case rec.Code/100 == 2:
			t.Fatalf("invalid body %q answered %d", body, rec.Code)
		case rec.Code != 400 && rec.Code != 413 && rec.Code != 422:
			t.Fatalf("body %q answered %d: %s", body, rec.Code, rec.Body)
		}
		var eb map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb["api_id"] == nil {
			t.Fatalf("response %q is not JSON with api_id", rec.Body)
		}
	})
}

// validACLBody is the reference for a valid create body: one JSON object with only name
// (non-empty text) and ip_addresses (non-empty, every value valid, no duplicates).
func validACLBody(body []byte) ([]string, bool) {
	if len(body) > DefaultMaxBodyBytes {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var v struct {
		Name        *string  `json:"name"`
		IPAddresses []string `json:"ip_addresses"`
	}
	if dec.Decode(&v) != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	if v.Name == nil {
		return nil, false
	}
	name := strings.TrimSpace(*v.Name)
	if name == "" || utf8.RuneCountInString(name) > maxNameLen || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return nil, false
	}
	if len(v.IPAddresses) == 0 || len(v.IPAddresses) > maxEntries {
		return nil, false
	}
	canon, _, err := acl.CanonicalAddresses("ip_addresses", v.IPAddresses)
	return canon, err == nil
}
