package control

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// TestAdminRestore: POST /v1/Admin/Restore/ needs the admin token and from_node, answers
// 409 when from_node is not this node, and otherwise writes this node's last good data
// set back at a version above the current one, answering the counts and the version
// (also in X-Sipedge-Version). A server without a restorer answers 404.
func TestAdminRestore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.Watch(ctx, func(*acl.Snapshot) {}) }()
	defer func() { cancel(); <-done; _ = st.Close() }()
	if _, _, err := Bootstrap(ctx, st, testAuthID, testToken); err != nil {
		t.Fatal(err)
	}
	v, err := st.CreateACL(ctx, acl.IPACL{UUID: "acl-1", Account: testAuthID, Name: "pbx",
		Entries: []acl.Entry{{ID: "e1", IPAddress: "192.0.2.10", Enabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for st.AppliedVersion() < v {
		time.Sleep(5 * time.Millisecond)
	}
	post := func(h http.Handler, query, token string) (int, map[string]any, string) {
		r := httptest.NewRequest(http.MethodPost, adminRestore+query, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var m map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m, w.Header().Get("X-Sipedge-Version")
	}
	cfg := Config{AdminToken: testAdmin}
	h := New(cfg, st, WithRestore("n1", st)).Handler()
	if code, _, _ := post(h, "?from_node=n1", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _, _ := post(h, "", testAdmin); code != 400 {
		t.Fatalf("no from_node: %d", code)
	}
	if code, body, _ := post(h, "?from_node=n2", testAdmin); code != 409 {
		t.Fatalf("another node: %d %v", code, body)
	}
	code, body, hv := post(h, "?from_node=n1", testAdmin)
	if code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	rv := uint64(body["version"].(float64))
	if rv <= v || hv != strconv.FormatUint(rv, 10) || body["from_version"].(float64) != float64(v) {
		t.Fatalf("restore answer %v (X-Sipedge-Version %s), want a version above %d", body, hv, v)
	}
	if c := body["counts"].(map[string]any); c["accounts"].(float64) != 1 || c["ipacls"].(float64) != 1 || c["entries"].(float64) != 1 {
		t.Fatalf("counts %v", c)
	}
	if a, err := st.GetACL(ctx, testAuthID, "acl-1"); err != nil || len(a.Entries) != 1 {
		t.Fatalf("ACL after the restore: %+v %v", a, err)
	}
	if code, _, _ := post(New(cfg, st).Handler(), "?from_node=n1", testAdmin); code != 404 {
		t.Fatalf("without a restorer: %d", code)
	}
}
