package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/store"
)

// The tests in this file run sipedge nodes against Redis high-availability setups they
// start themselves (DESIGN.md §5): a master, a replica and three Sentinels on loopback, all
// stopped by PID; and a Redis that comes back empty.

const haAdminToken = "ha-test-admin-token-000000001"

// startRedisArgs starts a non-persistent redis-server on port with extra arguments.
func startRedisArgs(t *testing.T, port int, args ...string) *redisServer {
	t.Helper()
	bin := os.Getenv("SIPEDGE_TEST_REDIS_BIN")
	if bin == "" {
		bin = "redis-server"
	}
	all := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)
	cmd := exec.Command(bin, all...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	r := &redisServer{t: t, port: port, cmd: cmd}
	t.Cleanup(r.stop)
	c := r.client()
	defer c.Close()
	eventually(t, 5*time.Second, func() error { return c.Ping(context.Background()).Err() })
	return r
}

// sentinelRig is one master, one replica and three Sentinels (quorum 2, down after 1 s).
type sentinelRig struct {
	master, replica *redisServer
	sentinels       []*redisServer
	url             string
}

func startSentinelRig(t *testing.T) *sentinelRig {
	t.Helper()
	m := startRedisArgs(t, freePort(t))
	r := startRedisArgs(t, freePort(t), "--replicaof", "127.0.0.1", strconv.Itoa(m.port))
	rig := &sentinelRig{master: m, replica: r}
	bin := os.Getenv("SIPEDGE_TEST_REDIS_BIN")
	if bin == "" {
		bin = "redis-server"
	}
	var addrs []string
	for i := range 3 {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n"+
			"sentinel parallel-syncs mymaster 1\n", port, dir, m.port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf, "--sentinel")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sentinel %d: %v", i, err)
		}
		s := &redisServer{t: t, port: port, cmd: cmd}
		t.Cleanup(s.stop)
		rig.sentinels = append(rig.sentinels, s)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	rig.url = "redis+sentinel://" + strings.Join(addrs, ",") + "/mymaster/0"
	return rig
}

// ready waits until every Sentinel knows the replica and the two others and has quorum,
// and the replica has everything the master wrote.
func (rig *sentinelRig) ready(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 20*time.Second, func() error {
		for _, s := range rig.sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port)})
			reps, err1 := sc.Replicas(ctx, "mymaster").Result()
			peers, err2 := sc.Sentinels(ctx, "mymaster").Result()
			_, err3 := sc.CkQuorum(ctx, "mymaster").Result()
			sc.Close()
			if err1 != nil || err2 != nil || err3 != nil || len(reps) != 1 || len(peers) != 2 {
				return fmt.Errorf("sentinel :%d: %d replicas, %d peers, %v %v %v", s.port, len(reps), len(peers), err1, err2, err3)
			}
		}
		mc := rig.master.client()
		defer mc.Close()
		if n, err := mc.Do(ctx, "WAIT", 1, 200).Int(); err != nil || n != 1 {
			return fmt.Errorf("replica not in sync: %v %v", n, err)
		}
		return nil
	})
}

// masterPort is the master's port according to the first Sentinel (0 when unknown).
func (rig *sentinelRig) masterPort() int {
	sc := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rig.sentinels[0].port)})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(context.Background(), "mymaster").Result()
	if err != nil || len(addr) != 2 {
		return 0
	}
	p, _ := strconv.Atoi(addr[1])
	return p
}

// apiReq sends one authenticated request with optional headers; status, body, version
// header, and a transport error as status 0.
func (n *node) apiReq(method, path, body string, hdr map[string]string) (int, map[string]any, uint64) {
	req := n.accountRequest(method, path, body)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	code, m, h, err := doJSON(req, 8*time.Second)
	if err != nil {
		return 0, nil, 0
	}
	v, _ := strconv.ParseUint(h.Get("X-Sipedge-Version"), 10, 64)
	return code, m, v
}

// admin sends one admin request (bearer token).
func (n *node) admin(t *testing.T, method, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+n.http.String()+path, nil)
	req.Header.Set("Authorization", "Bearer "+haAdminToken)
	code, m, _, err := doJSON(req, 20*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, m
}

// failoverRun is what one failover measured.
type failoverRun struct {
	firstWrite, converged time.Duration // from the master's shutdown
	writes, retried       int
}

// TestSentinelFailover: two nodes on redis+sentinel://. Under a stream of API writes
// (each with its own Idempotency-Key, retried with it until it succeeds) and SIP calls,
// the master is shut down and the Sentinels promote the replica. Asserted: writes during
// the failover answer 2xx or 503 (never anything else); afterwards every write is in the
// data set exactly once (none lost, none doubled); every node converges on the new master
// without a restart; a listed source is relayed throughout; a revocation written after
// the failover is enforced by every node at most a second after it serves that version.
// SIPEDGE_HA_RUNS=5 repeats it and logs the medians (the figures of the README);
// SIPEDGE_HA_KILL=1 kills the master with SIGKILL instead (Redis replicates
// asynchronously: the last acknowledged writes may be lost, which the test then reports).
func TestSentinelFailover(t *testing.T) {
	requireCluster(t)
	runs := 1
	if n, err := strconv.Atoi(os.Getenv("SIPEDGE_HA_RUNS")); err == nil && n > 1 {
		runs = n
	}
	var res []failoverRun
	for i := range runs {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) { res = append(res, failoverOnce(t)) })
	}
	if len(res) == 0 {
		return
	}
	med := func(f func(failoverRun) time.Duration) time.Duration {
		ds := make([]time.Duration, len(res))
		for i, r := range res {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	t.Logf("failover over %d runs, median from the master's shutdown: first successful write %.2f s, all nodes converged %.2f s",
		len(res), med(func(r failoverRun) time.Duration { return r.firstWrite }).Seconds(),
		med(func(r failoverRun) time.Duration { return r.converged }).Seconds())
}

func failoverOnce(t *testing.T) failoverRun {
	rig := startSentinelRig(t)
	up := startBusyUpstream(t)
	withRig := func(c *Config) {
		c.RedisURL = rig.url
		c.Upstream = "sip:" + up.addr.String()
		c.Secrets.AdminToken = haAdminToken
	}
	a := startNode(t, "a", withRig, true)
	b := startNode(t, "b", withRig, true)
	nodes := []*node{a, b}
	a.raiseLimits(t, haAdminToken) // the write stream outpaces a tenant's default write rate

	code, body := a.api(t, "POST", "IPAccessControlList/", `{"name":"pbx","ip_addresses":["127.0.0.2/32"]}`)
	if code != 201 {
		t.Fatalf("create ACL: %d %v", code, body)
	}
	acl1 := body["ipacl_uuid"].(string)
	if code, body = a.api(t, "POST", "Trunk/", `{"name":"t","ipacl_uuid":"`+acl1+`"}`); code != 201 {
		t.Fatalf("create trunk: %d %v", code, body)
	}
	code, body = a.api(t, "POST", "IPAccessControlList/", `{"name":"pbx3","ip_addresses":["127.0.0.3/32"]}`)
	if code != 201 {
		t.Fatalf("create ACL: %d %v", code, body)
	}
	acl3 := body["ipacl_uuid"].(string)
	if code, body = a.api(t, "POST", "Trunk/", `{"name":"t3","ipacl_uuid":"`+acl3+`"}`); code != 201 {
		t.Fatalf("create trunk: %d %v", code, body)
	}
	code, body = a.api(t, "GET", "IPAccessControlList/"+acl3+"/Entry/", "")
	if code != 200 {
		t.Fatalf("list entries: %d %v", code, body)
	}
	entry3 := body["objects"].([]any)[0].(map[string]any)["id"].(string)
	eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
				if got := invite(t, src, n.sip); got != 486 {
					return fmt.Errorf("node %s: %s → %d before the failover", n.name, src, got)
				}
			}
		}
		return nil
	})
	rig.ready(t)

	// The write stream: entry i (10.9.x.y/32, description w-i) added to acl1 through a or b
	// alternately, each retried with its own Idempotency-Key until it succeeds.
	var (
		stop      atomic.Bool
		mu        sync.Mutex
		committed = map[int]uint64{} // write → version it committed as
		badCodes  []string
		retried   int
		firstOK   time.Time // first success of an attempt started after the master was down
		shutdown  time.Time
		down      time.Time // the master process has exited
		wg        sync.WaitGroup
	)
	writer := func(w int) {
		defer wg.Done()
		for i := w; !stop.Load(); i += 2 {
			n := nodes[i%2]
			path := "IPAccessControlList/" + acl1 + "/Entry/"
			payload := fmt.Sprintf(`{"ip_address":"10.9.%d.%d/32","description":"w-%d"}`, i/250, i%250+1, i)
			key := fmt.Sprintf("ha-%d-%s", i, randHex(4))
			deadline := time.Now().Add(30 * time.Second)
			for attempt := 0; ; attempt++ {
				sent := time.Now()
				code, body, v := n.apiReq("POST", path, payload, map[string]string{"Idempotency-Key": key})
				if code == 201 {
					mu.Lock()
					committed[i] = v
					if attempt > 0 {
						retried++
					}
					if !down.IsZero() && sent.After(down) && firstOK.IsZero() {
						firstOK = time.Now()
					}
					mu.Unlock()
					break
				}
				if code != 503 && code != 0 {
					mu.Lock()
					badCodes = append(badCodes, fmt.Sprintf("write %d (attempt %d, node %s): HTTP %d %v", i, attempt, n.name, code, body["error"]))
					mu.Unlock()
				}
				if time.Now().After(deadline) {
					mu.Lock()
					badCodes = append(badCodes, fmt.Sprintf("write %d: no success within 30 s (last %d)", i, code))
					mu.Unlock()
					break
				}
				time.Sleep(100 * time.Millisecond)
				n = nodes[(i+attempt+1)%2] // a retry may go to the other node: the key is shared
			}
		}
	}
	// The call stream: the listed source through both nodes, all the time.
	var calls, callFails atomic.Int64
	caller := func() {
		defer wg.Done()
		for !stop.Load() {
			for _, n := range nodes {
				calls.Add(1)
				if got := invite(t, "127.0.0.2", n.sip); got != 486 {
					if got2 := invite(t, "127.0.0.2", n.sip); got2 != 486 { // one lost datagram is no verdict
						callFails.Add(1)
						t.Logf("call from the listed source through %s: %d, then %d", n.name, got, got2)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wg.Add(3)
	go writer(0)
	go writer(1)
	go caller()
	time.Sleep(500 * time.Millisecond)

	// Fail the master over.
	mc := rig.master.client()
	mu.Lock()
	shutdown = time.Now()
	mu.Unlock()
	if os.Getenv("SIPEDGE_HA_KILL") != "" { // SIGKILL: no hand-over to the replica (see README)
		_ = rig.master.cmd.Process.Kill()
	} else {
		_ = mc.Do(context.Background(), "SHUTDOWN", "NOSAVE").Err()
	}
	mc.Close()
	_ = rig.master.cmd.Wait()
	mu.Lock()
	down = time.Now()
	mu.Unlock()
	eventually(t, 20*time.Second, func() error {
		if p := rig.masterPort(); p != rig.replica.port {
			return fmt.Errorf("sentinels name :%d as master, want the replica :%d", p, rig.replica.port)
		}
		return nil
	})
	promoted := time.Since(shutdown)
	eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if firstOK.IsZero() {
			return fmt.Errorf("no write sent after the master's exit succeeded")
		}
		return nil
	})

	// Revoke 127.0.0.3 on the new master; then every node converges (serves that version).
	var rv uint64
	// 30 s: on a loaded 2-vCPU machine the sentinels may take a second round.
	eventually(t, 30*time.Second, func() error {
		code, body, v := a.apiReq("POST", "IPAccessControlList/"+acl3+"/Entry/"+entry3+"/", `{"enabled":false}`, nil)
		if code != 202 {
			return fmt.Errorf("revocation: HTTP %d %v", code, body)
		}
		rv = v
		return nil
	})
	convergedAt := time.Now()
	eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if _, r := n.readyz(); r.SnapshotVersion < rv || r.Store != "up" {
				return fmt.Errorf("node %s: snapshot %d store %s, want ≥ %d", n.name, r.SnapshotVersion, r.Store, rv)
			}
		}
		convergedAt = time.Now()
		return nil
	})
	for _, n := range nodes {
		start := time.Now()
		if got := invite(t, "127.0.0.3", n.sip); got == 486 {
			t.Errorf("node %s relays the revoked 127.0.0.3 after serving the revocation (%v after convergence)", n.name, time.Since(convergedAt))
		}
		if d := time.Since(start); d > time.Second {
			t.Logf("judging the revoked source took %v on %s", d, n.name)
		}
	}
	time.Sleep(time.Second) // writes go on against the new master
	stop.Store(true)
	wg.Wait()

	// Every write is there exactly once.
	mu.Lock()
	defer mu.Unlock()
	for _, s := range badCodes {
		t.Error(s)
	}
	if callFails.Load() > 0 {
		t.Errorf("%d of %d calls from the listed source were not relayed during the failover", callFails.Load(), calls.Load())
	}
	code, body = b.api(t, "GET", "IPAccessControlList/"+acl1+"/", "")
	if code != 200 {
		t.Fatalf("get ACL: %d %v", code, body)
	}
	seen := map[string]int{}
	for _, e := range body["entries"].([]any) {
		seen[e.(map[string]any)["description"].(string)]++
	}
	for i := range committed {
		if n := seen[fmt.Sprintf("w-%d", i)]; n != 1 {
			t.Errorf("write %d (committed as version %d) is in the data set %d times", i, committed[i], n)
		}
	}
	for d, n := range seen {
		if i, err := strconv.Atoi(strings.TrimPrefix(d, "w-")); err == nil && committed[i] == 0 {
			t.Errorf("entry %s (%d times) was written but never answered 201", d, n)
		}
	}
	// Exactly one audit entry per write: a write committed twice (an EXEC replayed) would
	// leave two, even where the data set cannot show it.
	st, err := store.OpenRedis(context.Background(), rig.url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	audit, _, err := st.Audit(context.Background(), testAuthID, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	for _, e := range audit {
		if e.Kind == store.AuditKindEntry && e.Action == store.AuditCreate {
			var after struct {
				Description string `json:"description"`
			}
			_ = json.Unmarshal(e.After, &after)
			audited[after.Description]++
		}
	}
	versions := map[uint64]int{}
	for i, v := range committed {
		versions[v]++
		if n := audited[fmt.Sprintf("w-%d", i)]; n != 1 {
			t.Errorf("write %d has %d audit entries, want 1", i, n)
		}
	}
	for v, n := range versions {
		if n > 1 {
			t.Errorf("%d writes answered with version %d", n, v)
		}
	}
	if len(committed) < 10 {
		t.Errorf("only %d writes committed", len(committed))
	}
	r := failoverRun{firstWrite: firstOK.Sub(shutdown), converged: convergedAt.Sub(shutdown), writes: len(committed), retried: retried}
	t.Logf("master exited %.2f s after SHUTDOWN; replica promoted at %.2f s; first write sent after the exit succeeded at %.2f s, converged %.2f s; %d writes (%d retried after a 503), %d calls",
		down.Sub(shutdown).Seconds(), promoted.Seconds(), r.firstWrite.Seconds(), r.converged.Seconds(), r.writes, r.retried, calls.Load())
	return r
}

// TestEmptyRedisRestore: Redis comes back empty (FLUSHALL, then a fresh server). Both
// nodes keep relaying what they served; the bootstrap account from the environment is
// back within seconds; /readyz reports the incident (snapshot_version ≠ store_version);
// a restore sent to the wrong node is 409; the restore sent to node a brings back every
// ACL and trunk (store tests check credentials' HA1s and token hashes), at a version above what was
// served, with an audit entry; both nodes serve it and the incident ends.
func TestEmptyRedisRestore(t *testing.T) {
	requireCluster(t)
	for _, wipe := range []string{"flushall", "restart"} {
		t.Run(wipe, func(t *testing.T) { emptyRestoreOnce(t, wipe) })
	}
}

func emptyRestoreOnce(t *testing.T, wipe string) {
	rport := freePort(t)
	rs := startRedis(t, rport)
	up := startBusyUpstream(t)
	with := func(c *Config) {
		c.RedisURL = rs.url()
		c.Upstream = "sip:" + up.addr.String()
		c.Secrets.AdminToken = haAdminToken
	}
	a := startNode(t, "a", with, true)
	b := startNode(t, "b", with, true)
	nodes := []*node{a, b}
	var ids []string
	for i, src := range []string{"127.0.0.2", "127.0.0.4"} {
		code, body := a.api(t, "POST", "IPAccessControlList/", `{"name":"pbx","ip_addresses":["`+src+`/32"]}`)
		if code != 201 {
			t.Fatalf("create ACL: %d %v", code, body)
		}
		id := body["ipacl_uuid"].(string)
		ids = append(ids, id)
		if code, body = a.api(t, "POST", "Trunk/", fmt.Sprintf(`{"name":"t%d","ipacl_uuid":"%s"}`, i, id)); code != 201 {
			t.Fatalf("create trunk: %d %v", code, body)
		}
	}
	slices.Sort(ids)
	listIDs := func(n *node) ([]string, int) {
		code, body, _ := n.apiReq("GET", "IPAccessControlList/?limit=20", "", nil)
		var out []string
		if code == 200 {
			for _, o := range body["objects"].([]any) {
				out = append(out, o.(map[string]any)["ipacl_uuid"].(string))
			}
		}
		slices.Sort(out)
		return out, code
	}
	relayAll := func(when string) {
		t.Helper()
		eventually(t, 5*time.Second, func() error {
			for _, n := range nodes {
				for _, src := range []string{"127.0.0.2", "127.0.0.4"} {
					if got := invite(t, src, n.sip); got != 486 {
						return fmt.Errorf("%s: node %s: %s → %d", when, n.name, src, got)
					}
				}
			}
			return nil
		})
	}
	relayAll("before the wipe")
	_, before := a.readyz()

	switch wipe {
	case "flushall":
		rc := rs.client()
		if err := rc.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	default:
		rs.stop()
		rs = startRedis(t, rport)
	}
	wiped := time.Now()
	relayAll("right after the wipe")
	// Polled once a second, alternating nodes: a missing account is a failed
	// authentication, and the API blocks a client after 10 a minute.
	for k := 0; ; k++ {
		if _, code := listIDs(nodes[k%2]); code == 200 {
			break
		} else if time.Since(wiped) > 15*time.Second {
			t.Fatalf("bootstrap account not back 15 s after the wipe: HTTP %d", code)
		}
		time.Sleep(time.Second)
	}
	accountBack := time.Since(wiped)
	eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if code, r := n.readyz(); code != 200 || !r.StoreIncident || r.Incident == nil || r.SnapshotVersion != before.SnapshotVersion ||
				r.StoreVersion == r.SnapshotVersion || r.Status != "degraded" ||
				r.RestorePending == nil || *r.RestorePending != before.SnapshotVersion {
				return fmt.Errorf("node %s readyz during the incident: %d %+v", n.name, code, r)
			}
		}
		return nil
	})
	relayAll("during the incident")

	if code, body := b.admin(t, "POST", "/v1/Admin/Restore/?from_node=a"); code != 409 {
		t.Fatalf("restore of a's data set sent to b: %d %v, want 409", code, body)
	}
	start := time.Now()
	code, body := a.admin(t, "POST", "/v1/Admin/Restore/?from_node=a")
	if code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	took := time.Since(start)
	rv := uint64(body["version"].(float64))
	if rv <= before.SnapshotVersion {
		t.Fatalf("restored at version %d, not above the served %d", rv, before.SnapshotVersion)
	}
	eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			got, _ := listIDs(n)
			if !slices.Equal(got, ids) {
				return fmt.Errorf("node %s lists %v, want %v", n.name, got, ids)
			}
			if _, r := n.readyz(); r.SnapshotVersion != r.StoreVersion || r.StoreVersion != rv || r.StoreIncident || r.Status != "ready" ||
				r.RestorePending != nil {
				return fmt.Errorf("node %s readyz after the restore: %+v", n.name, r)
			}
		}
		return nil
	})
	relayAll("after the restore")
	code, body = a.api(t, "GET", "AuditLog/?limit=1", "")
	if code != 200 {
		t.Fatalf("audit log: %d %v", code, body)
	}
	if e := body["objects"].([]any)[0].(map[string]any); e["action"] != "restore" || e["kind"] != "dataset" || e["actor"] != "admin" {
		t.Fatalf("newest audit entry after the restore: %v", e)
	}
	t.Logf("%s: bootstrap account back %.1f s after the wipe; restore took %v", wipe, accountBack.Seconds(), took.Round(time.Millisecond))
}
