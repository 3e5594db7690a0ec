package control

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// withCluster restarts e's API server with WithCluster(cl) (the shared harness builds
// servers without options).
func (e *env) withCluster(cl Cluster) *env {
	e.t.Helper()
	e.hs.Close()
	e.reg = prometheus.NewRegistry()
	cfg := Config{SIPDomain: testDomain, AdminToken: testAdmin, MaxBodyBytes: maxBodyBytes,
		Logger: zerolog.New(syncWriter{e.logs}), Registerer: e.reg}
	e.srv = New(cfg, e.api, WithCluster(cl))
	e.hs = httptest.NewServer(e.srv.Handler())
	return e
}

// runNode makes the env's store a live node "edge-a": Watch feeds a holder and reports
// every apply to the registry, whose heartbeat interval is an hour, so only those
// reports move it; leases last an hour, so no node drops out during a test. It returns
// the holder.
func (e *env) runNode() *acl.Holder {
	e.t.Helper()
	var holder acl.Holder
	st := e.st // opened with leases of an hour (see env.open)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = st.Watch(ctx, holder.Store) }) // Watch reports each apply itself
	wg.Go(func() { _ = st.RunHeartbeat(ctx, st.SelfStatus("edge-a", "192.0.2.1:5060", time.Now()), time.Hour) })
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	v := e.version()
	e.waitNode("edge-a", v)
	return &holder
}

func (e *env) version() uint64 {
	e.t.Helper()
	v, err := e.st.Version(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitNode waits until node id reports version v or later.
func (e *env) waitNode(id string, v uint64) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes, err := e.st.Nodes(context.Background())
		if err != nil {
			e.t.Fatal(err)
		}
		for _, n := range nodes {
			if n.NodeID == id && n.AppliedVersion >= v {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("node %s did not report version %d: %+v", id, v, nodes)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// beat reports node "edge-b" (test-controlled) at version v of the current epoch.
func (e *env) beat(v uint64) {
	e.t.Helper()
	e.beatEpoch(v, e.head().Epoch)
}

// beatEpoch reports node "edge-b" at version v of epoch.
func (e *env) beatEpoch(v uint64, epoch string) {
	e.t.Helper()
	if err := e.st.Heartbeat(context.Background(), store.NodeStatus{NodeID: "edge-b", AppliedVersion: v,
		Epoch: epoch, AppliedAt: time.Now(), Address: "192.0.2.2:5060"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) head() store.Head {
	e.t.Helper()
	h, err := e.st.Head(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// async sends an authenticated JSON request on its own goroutine; the result arrives on
// the channel (code -1 on a transport error).
func (e *env) async(method, path, body string) <-chan *resp {
	return e.asyncHeader(method, path, body, nil)
}

func TestClusterList(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	e.createACL("pbx", "192.0.2.10")
	v := e.version()
	e.waitNode("edge-a", v)
	e.beat(v - 1)

	for name, r := range map[string]req{
		"own account":   {method: "GET", path: "/v1/Cluster/"},
		"other account": {method: "GET", path: "/v1/Cluster", user: otherAuthID, pass: otherToken},
		"admin token":   {method: "GET", path: "/v1/Cluster/", noAuth: true, header: map[string]string{"Authorization": "Bearer " + testAdmin}},
	} {
		t.Run(name, func(t *testing.T) {
			got := e.do(r).must(t, 200)
			nodes, _ := got.body["nodes"].([]any)
			if len(nodes) != 2 || got.body["live_nodes"] != float64(2) || got.body["data_version"] != float64(v) {
				t.Fatalf("body %s", got.raw)
			}
			a, b := nodes[0].(map[string]any), nodes[1].(map[string]any)
			if a["node_id"] != "edge-a" || a["applied_version"] != float64(v) || a["address"] != "192.0.2.1:5060" ||
				!matches(tsRE, fmt.Sprint(a["applied_at"])) || !matches(tsRE, fmt.Sprint(a["started_at"])) {
				t.Errorf("node a %v", a)
			}
			if b["node_id"] != "edge-b" || b["applied_version"] != float64(v-1) || b["started_at"] != nil {
				t.Errorf("node b %v", b)
			}
		})
	}
	for name, r := range map[string]req{
		"no auth":     {method: "GET", path: "/v1/Cluster/", noAuth: true},
		"wrong token": {method: "GET", path: "/v1/Cluster/", user: testAuthID, pass: "wrong-token-0000000000"},
		"bad bearer":  {method: "GET", path: "/v1/Cluster/", noAuth: true, header: map[string]string{"Authorization": "Bearer nope"}},
	} {
		t.Run(name, func(t *testing.T) {
			e.do(r).must(t, 401)
		})
	}
}

func TestClusterVersion(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	w := e.do(req{method: "POST", path: "IPAccessControlList/", body: map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.1"}}}).must(t, 201)
	v, err := strconv.ParseUint(w.hdr.Get("X-Sipedge-Version"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	e.waitNode("edge-a", v)
	e.beat(v - 1)

	for _, tc := range []struct {
		v        uint64
		served   int
		behindID []string
	}{
		{v - 1, 2, nil},
		{v, 1, []string{"edge-b"}},
		{v + 1, 0, []string{"edge-a", "edge-b"}},
	} {
		r := e.do(req{method: "GET", path: fmt.Sprintf("/v1/Cluster/Version/%d/", tc.v)}).must(t, 200)
		want := fmt.Sprintf("served by %d of 2 live nodes", tc.served)
		if r.body["version"] != float64(tc.v) || r.body["served_by"] != float64(tc.served) || r.body["live_nodes"] != float64(2) ||
			r.str("message") != want || r.body["data_version"] != float64(v) {
			t.Errorf("version %d: %s", tc.v, r.raw)
		}
		var ids []string
		for _, n := range r.body["nodes_behind"].([]any) {
			ids = append(ids, n.(map[string]any)["node_id"].(string))
		}
		if strings.Join(ids, ",") != strings.Join(tc.behindID, ",") {
			t.Errorf("version %d: nodes_behind %v, want %v", tc.v, ids, tc.behindID)
		}
	}
	// The node catches up.
	e.beat(v)
	r := e.do(req{method: "GET", path: fmt.Sprintf("/v1/Cluster/Version/%d", v)}).must(t, 200)
	if r.str("message") != "served by 2 of 2 live nodes" || len(r.body["nodes_behind"].([]any)) != 0 {
		t.Errorf("after catching up: %s", r.raw)
	}

	for _, bad := range []string{"abc", "-1", "%2B1", "1.5", "18446744073709551616", "0x10"} {
		r := e.do(req{method: "GET", path: "/v1/Cluster/Version/" + bad + "/"})
		if r.code != 400 || !strings.Contains(r.errorText(), "non-negative integer") {
			t.Errorf("version %q: %d %s", bad, r.code, r.raw)
		}
	}
}

// TestWaitAllWaitsForEveryNode: a write with ?wait=all answers only after the second
// (test-controlled) node reports its version.
func TestWaitAllWaitsForEveryNode(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	before := e.version()
	e.beat(before)

	pending := e.async("POST", "IPAccessControlList/?wait=all&wait_timeout=10s", `{"name":"w","ip_addresses":["192.0.2.7"]}`)
	v := before + 1
	deadline := time.Now().Add(5 * time.Second)
	for e.version() < v {
		if time.Now().After(deadline) {
			t.Fatal("the write did not commit")
		}
		time.Sleep(2 * time.Millisecond)
	}
	e.waitNode("edge-a", v)
	// Node a serves it, node b does not: the request stays open.
	r := e.do(req{method: "GET", path: fmt.Sprintf("/v1/Cluster/Version/%d/", v)}).must(t, 200)
	if r.str("message") != "served by 1 of 2 live nodes" {
		t.Fatalf("while waiting: %s", r.raw)
	}
	select {
	case r := <-pending:
		t.Fatalf("answered before node b caught up: %d %s %v", r.code, r.raw, r.hdr)
	case <-time.After(300 * time.Millisecond):
	}
	caughtUp := time.Now()
	e.beat(v)
	var got *resp
	select {
	case got = <-pending:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after node b caught up")
	}
	if d := time.Since(caughtUp); d > time.Second {
		t.Errorf("answered %v after node b caught up", d)
	}
	if got.code != 201 || got.str("propagation") != "complete" || got.str("ipacl_uuid") == "" ||
		got.hdr.Get("X-Sipedge-Served-By") != "2/2" || got.hdr.Get("X-Sipedge-Propagation") != "complete" ||
		got.hdr.Get("X-Sipedge-Version") != strconv.FormatUint(v, 10) {
		t.Fatalf("answer %d %s %v", got.code, got.raw, got.hdr)
	}
}

// TestWaitAllTimeout: a node that never catches up makes the write answer 2xx after the
// wait_timeout, naming the shortfall; the write is committed.
func TestWaitAllTimeout(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	e.beat(0) // node b stays at 0 for good

	start := time.Now()
	r := e.do(req{method: "POST", path: "IPAccessControlList/?wait=all&wait_timeout=300ms",
		body: map[string]any{"name": "t", "ip_addresses": []string{"192.0.2.8"}}}).must(t, 201)
	d := time.Since(start)
	if d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("answered after %v, want about 300ms", d)
	}
	if r.str("propagation") != "timeout" || r.hdr.Get("X-Sipedge-Served-By") != "1/2" || r.hdr.Get("X-Sipedge-Propagation") != "timeout" {
		t.Fatalf("answer %s %v", r.raw, r.hdr)
	}
	id := r.str("ipacl_uuid")
	e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 200)

	// A delete has no body: the headers carry the result.
	del := e.do(req{method: "DELETE", path: "IPAccessControlList/" + id + "/?wait=all&wait_timeout=1"}).must(t, 204)
	if len(del.raw) != 0 || del.hdr.Get("X-Sipedge-Served-By") != "1/2" || del.hdr.Get("X-Sipedge-Propagation") != "timeout" {
		t.Fatalf("delete %q %v", del.raw, del.hdr)
	}
	e.do(req{method: "GET", path: "IPAccessControlList/" + id + "/"}).must(t, 404)
}

// TestWaitAllEveryWrite: every write route accepts ?wait=all and answers as usual plus
// the propagation result; reads ignore it.
func TestWaitAllEveryWrite(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	holder := e.runNode()
	aclID := e.createACL("pbx", "192.0.2.10")
	credID := e.createCredential("c", "wait-user")
	trunkID := e.createTrunk(map[string]any{"name": "t", "ipacl_uuid": aclID})
	entryID := e.do(req{method: "POST", path: "IPAccessControlList/" + aclID + "/Entry/", body: map[string]any{"ip_address": "198.51.100.1"}}).must(t, 201).str("id")

	const q = "?wait=all&wait_timeout=5s"
	steps := []struct {
		name   string
		method string
		path   string
		body   any
		code   int
	}{
		{"create acl", "POST", "IPAccessControlList/", map[string]any{"name": "n", "ip_addresses": []string{"203.0.113.1"}}, 201},
		{"update acl", "POST", "IPAccessControlList/" + aclID + "/", map[string]any{"name": "renamed"}, 202},
		{"add entry", "POST", "IPAccessControlList/" + aclID + "/Entry/", map[string]any{"ip_address": "198.51.100.2"}, 201},
		{"update entry", "POST", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", map[string]any{"enabled": false}, 202},
		{"delete entry", "DELETE", "IPAccessControlList/" + aclID + "/Entry/" + entryID + "/", nil, 204},
		{"create credential", "POST", "Credential/", map[string]any{"name": "c2", "username": "wait-user2", "password": "s3cret-passw0rd"}, 201},
		{"update credential", "POST", "Credential/" + credID + "/", map[string]any{"name": "c-renamed"}, 202},
		{"create trunk", "POST", "Trunk/", map[string]any{"name": "t2", "credential_uuid": credID}, 201},
		{"update trunk", "POST", "Trunk/" + trunkID + "/", map[string]any{"trunk_status": "disabled"}, 202},
		{"delete trunk", "DELETE", "Trunk/" + trunkID + "/", nil, 204},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := e.do(req{method: st.method, path: st.path + q, body: st.body}).must(t, st.code)
			v, _ := strconv.ParseUint(r.hdr.Get("X-Sipedge-Version"), 10, 64)
			if r.hdr.Get("X-Sipedge-Served-By") != "1/1" || r.hdr.Get("X-Sipedge-Propagation") != "complete" {
				t.Fatalf("headers %v", r.hdr)
			}
			if st.code != 204 && r.str("propagation") != "complete" {
				t.Fatalf("body %s", r.raw)
			}
			// Complete means the node's data path serves the version now.
			if got := holder.Load().Version(); got < v {
				t.Fatalf("answered at version %d while the node serves %d", v, got)
			}
		})
	}
	// Without wait: no propagation fields.
	r := e.do(req{method: "POST", path: "IPAccessControlList/" + aclID + "/", body: map[string]any{"name": "again"}}).must(t, 202)
	if _, ok := r.body["propagation"]; ok || r.hdr.Get("X-Sipedge-Served-By") != "" {
		t.Fatalf("no wait asked, got %s %v", r.raw, r.hdr)
	}
	// Reads do not look at wait (it is not a read parameter).
	e.do(req{method: "GET", path: "IPAccessControlList/?wait=all"}).must(t, 200)
}

func TestWaitAllBadRequests(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	aclID := e.createACL("pbx", "192.0.2.10")
	before := e.version()
	body := map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.99"}}
	for _, tc := range []struct{ query, want string }{
		{"wait=some", `the only value is "all"`},
		{"wait=", `the only value is "all"`},
		{"wait=all&wait=all", `the only value is "all"`},
		{"wait_timeout=2s", "wait_timeout needs wait=all"},
		{"wait=all&wait_timeout=0", "must be a duration"},
		{"wait=all&wait_timeout=0s", "must be a duration"},
		{"wait=all&wait_timeout=-1s", "must be a duration"},
		{"wait=all&wait_timeout=31s", "must be a duration"},
		{"wait=all&wait_timeout=1h", "must be a duration"},
		{"wait=all&wait_timeout=abc", "must be a duration"},
		{"wait=all&wait_timeout=", "must be a duration"},
		{"wait=all&wait_timeout=1s&wait_timeout=2s", "must be a duration"},
		{"wait=all&wait_timeout=%zz", "malformed query string"},
	} {
		for _, w := range []req{
			{method: "POST", path: "IPAccessControlList/?" + tc.query, body: body},
			{method: "POST", path: "IPAccessControlList/" + aclID + "/?" + tc.query, body: map[string]any{"name": "y"}},
			{method: "DELETE", path: "IPAccessControlList/" + aclID + "/?" + tc.query},
		} {
			r := e.do(w)
			if r.code != 400 || !strings.Contains(r.errorText(), tc.want) {
				t.Errorf("%s %s: %d %s, want 400 %q", w.method, w.path, r.code, r.raw, tc.want)
			}
		}
	}
	if v := e.version(); v != before {
		t.Fatalf("rejected requests wrote: version %d → %d", before, v)
	}
	// Accepted forms: whole seconds and Go durations up to 30s.
	for _, ok := range []string{"1", "30", "30s", "1500ms"} {
		e.do(req{method: "POST", path: "IPAccessControlList/" + aclID + "/?wait=all&wait_timeout=" + ok, body: map[string]any{"name": ok}}).must(t, 202)
	}
	// Auth comes first: a bad wait on an unauthenticated write is 401.
	e.do(req{method: "POST", path: "IPAccessControlList/?wait=bad", body: body, noAuth: true}).must(t, 401)
}

// TestClusterAbsent: without WithCluster the cluster endpoints are 404 (after auth) and
// ?wait=all is 400, changing nothing.
func TestClusterAbsent(t *testing.T) {
	e := newEnv(t)
	e.do(req{method: "GET", path: "/v1/Cluster/"}).must(t, 404)
	e.do(req{method: "GET", path: "/v1/Cluster/Version/1/"}).must(t, 404)
	e.do(req{method: "GET", path: "/v1/Cluster/Version/abc/"}).must(t, 404)
	e.do(req{method: "GET", path: "/v1/Cluster/", noAuth: true}).must(t, 401)
	before := e.version()
	r := e.do(req{method: "POST", path: "IPAccessControlList/?wait=all", body: map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.1"}}}).must(t, 400)
	if !strings.Contains(r.errorText(), "no cluster registry") {
		t.Errorf("error %q", r.errorText())
	}
	if e.version() != before {
		t.Fatal("a rejected wait=all wrote")
	}
	// Writes without wait are unaffected.
	e.createACL("ok", "192.0.2.1")
}

// failingCluster is a registry that is down.
type failingCluster struct{ calls atomic.Int32 }

func (f *failingCluster) Nodes(context.Context) ([]store.NodeStatus, error) {
	f.calls.Add(1)
	return nil, fmt.Errorf("%w: test registry down", store.ErrUnavailable)
}

// TestClusterUnavailable: a registry that cannot be read is 503 on the cluster endpoints;
// a write with ?wait=all still commits and answers 2xx with propagation timeout 0/0.
func TestClusterUnavailable(t *testing.T) {
	e := newEnv(t)
	fc := &failingCluster{}
	e.withCluster(fc)
	r := e.do(req{method: "GET", path: "/v1/Cluster/"}).must(t, 503)
	if r.hdr.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	e.do(req{method: "GET", path: "/v1/Cluster/Version/3/"}).must(t, 503)
	before := e.version()
	w := e.do(req{method: "POST", path: "IPAccessControlList/?wait=all&wait_timeout=200ms",
		body: map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.1"}}}).must(t, 201)
	if w.str("propagation") != "timeout" || w.hdr.Get("X-Sipedge-Served-By") != "0/0" || e.version() != before+1 {
		t.Fatalf("answer %s %v", w.raw, w.hdr)
	}
	if n := fc.calls.Load(); n < 3 {
		t.Errorf("the registry was polled %d times in 200ms", n)
	}
}

// TestClusterEpoch: a node counts as serving version V only with the data set's current
// epoch; a node still on a wiped data set's epoch serves nothing of the new one, however
// high its version number.
func TestClusterEpoch(t *testing.T) {
	e := newEnv(t)
	e.withCluster(e.st)
	e.runNode()
	e.createACL("pbx", "192.0.2.10")
	v := e.version()
	e.waitNode("edge-a", v)
	epoch := e.head().Epoch
	e.beatEpoch(v+100, "5d1c5a8e-0000-4000-8000-00000000dead")

	r := e.do(req{method: "GET", path: fmt.Sprintf("/v1/Cluster/Version/%d/", v)}).must(t, 200)
	behind, _ := r.body["nodes_behind"].([]any)
	if r.str("message") != "served by 1 of 2 live nodes" || r.str("data_epoch") != epoch || len(behind) != 1 ||
		behind[0].(map[string]any)["node_id"] != "edge-b" {
		t.Fatalf("stale-epoch node counted: %s", r.raw)
	}
	nodes := e.do(req{method: "GET", path: "/v1/Cluster/"}).must(t, 200)
	if nodes.str("data_epoch") != epoch {
		t.Fatalf("data_epoch %q, want %q", nodes.str("data_epoch"), epoch)
	}
	for _, n := range nodes.body["nodes"].([]any) {
		n := n.(map[string]any)
		if want := map[string]string{"edge-a": epoch, "edge-b": "5d1c5a8e-0000-4000-8000-00000000dead"}[n["node_id"].(string)]; n["epoch"] != want {
			t.Errorf("node %v: epoch %v, want %s", n["node_id"], n["epoch"], want)
		}
	}
	w := e.do(req{method: "POST", path: "IPAccessControlList/?wait=all&wait_timeout=200ms",
		body: map[string]any{"name": "x", "ip_addresses": []string{"192.0.2.11"}}}).must(t, 201)
	if w.str("propagation") != "timeout" || w.hdr.Get("X-Sipedge-Served-By") != "1/2" {
		t.Fatalf("wait=all with a stale-epoch node: %s %v", w.raw, w.hdr)
	}
	// On the current epoch it counts.
	e.beat(e.version())
	r = e.do(req{method: "GET", path: fmt.Sprintf("/v1/Cluster/Version/%d/", e.version())}).must(t, 200)
	if r.str("message") != "served by 2 of 2 live nodes" {
		t.Fatalf("after catching up: %s", r.raw)
	}
}
