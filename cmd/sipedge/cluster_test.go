package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/testutil"
)

// The tests in this file run whole sipedge nodes in-process (serve, exactly as main does)
// against a redis-server they start themselves, and judge them with real SIP over UDP from
// loopback sources: 127.0.0.2 listed, 127.0.0.3/.4 as the test says.

const (
	testAuthID = "MACLUSTERTEST000001"
	testToken  = "cluster-test-token-000000001"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort returns a port free for UDP and TCP on 127.0.0.1 at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		u.Close()
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// redisServer is a throwaway redis-server the test owns (it may shut it down).
type redisServer struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

// startRedis starts a non-persistent redis-server on port (see startRedisArgs).
func startRedis(t *testing.T, port int) *redisServer {
	t.Helper()
	return startRedisArgs(t, port)
}

func (r *redisServer) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port), MaxRetries: -1})
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) stop() {
	if r.cmd.Process != nil && r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

// shutdown stops Redis without saving, as an outage does.
func (r *redisServer) shutdown() {
	c := r.client()
	_ = c.Do(context.Background(), "SHUTDOWN", "NOSAVE").Err()
	c.Close()
	_ = r.cmd.Wait()
}

// node is one sipedge running in-process.
type node struct {
	name      string
	sip, http netip.AddrPort
	cancel    context.CancelFunc
	done      chan error
	out       *testutil.SyncBuffer
}

func startNode(t *testing.T, name string, mod func(*Config), waitReady bool) *node {
	t.Helper()
	cfg := defaultConfig()
	cfg.SIPListen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.HTTPListen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.DataDir = t.TempDir()
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil { // sipedge refuses a data dir others can read
		t.Fatal(err)
	}
	cfg.NodeID = name
	cfg.ResyncInterval = 2 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.SIPRealm = cfg.SIPDomain
	cfg.Secrets = secrets{AuthID: testAuthID, AuthToken: testToken, NonceKey: []byte(strings.Repeat("n", 32))}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, sip: netip.MustParseAddrPort(cfg.SIPListen), http: netip.MustParseAddrPort(cfg.HTTPListen),
		done: make(chan error, 1), out: &testutil.SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	log := zerolog.New(n.out).Level(zerolog.InfoLevel)
	go func() { n.done <- serve(ctx, cfg, log, io.Discard, make(chan struct{})) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			t.Errorf("node %s did not stop within 10 s", name)
		}
	})
	if waitReady {
		eventually(t, 10*time.Second, func() error {
			if code, _ := n.readyz(); code != 200 {
				return fmt.Errorf("node %s: readyz %d", name, code)
			}
			return nil
		})
	}
	return n
}

func (n *node) readyz() (int, readyzBody) {
	var b readyzBody
	res, err := http.Get("http://" + n.http.String() + "/readyz")
	if err != nil {
		return 0, b
	}
	defer res.Body.Close()
	_ = json.NewDecoder(res.Body).Decode(&b)
	return res.StatusCode, b
}

// accountRequest is one authenticated JSON request to the test account's API.
func (n *node) accountRequest(method, path, body string) *http.Request {
	req, _ := http.NewRequest(method, "http://"+n.http.String()+"/v1/Account/"+testAuthID+"/Zentrunk/"+path, strings.NewReader(body))
	req.SetBasicAuth(testAuthID, testToken)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// doJSON sends req within timeout and returns the status, the decoded JSON body and the
// response headers.
func doJSON(req *http.Request, timeout time.Duration) (int, map[string]any, http.Header, error) {
	res, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m, res.Header, nil
}

// api sends one authenticated JSON request and returns the status and decoded body.
func (n *node) api(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	code, m, _, err := doJSON(n.accountRequest(method, path, body), 10*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, m
}

// raiseLimits lets the test account write as fast and as much as a test needs (the
// default per-account quotas are a tenant's, DESIGN §4a) and use loopback upstreams (an
// admin grant), through the admin API.
func (n *node) raiseLimits(t *testing.T, adminToken string) {
	t.Helper()
	body := `{"upstream_allow":["127.0.0.0/8"],"quotas":{"writes_per_second":10000,"write_burst":10000,"max_acls":10000,"max_entries":100000,"max_entries_per_acl":10000,"max_trunks":10000,"max_credentials":10000}}`
	req, _ := http.NewRequest("POST", "http://"+n.http.String()+"/v1/Admin/Account/"+testAuthID+"/", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("raise the test account's limits: HTTP %d", res.StatusCode)
	}
}

func eventually(t *testing.T, within time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// invite sends one INVITE over UDP from src to the edge and returns the final status code
// (0 when none came within 3 s). The upstream of these tests answers 486, so 486 means
// "relayed"; 403/407 mean judged and refused; 503 not ready.
func invite(t *testing.T, src string, edge netip.AddrPort) int {
	t.Helper()
	return inviteTo(t, src, edge.String(), edge)
}

// inviteTo is invite with sip:100@host as Request-URI (a trunk's domain, say). A final
// answer is ACKed.
func inviteTo(t *testing.T, src, host string, edge netip.AddrPort) int {
	t.Helper()
	conn, err := net.ListenPacket("udp", src+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lp := conn.LocalAddr().(*net.UDPAddr).Port
	id := randHex(8)
	msg := fmt.Sprintf("INVITE sip:100@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:pbx@%s>;tag=%s\r\nTo: <sip:100@%s>\r\n"+
		"Call-ID: %s@test\r\nCSeq: 1 INVITE\r\nUser-Agent: sipedge-test\r\nContact: <sip:pbx@%s:%d>\r\nContent-Length: 0\r\n\r\n",
		host, src, lp, id, src, id[:6], host, id, src, lp)
	if _, err := conn.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(edge)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	deadline := time.Now().Add(3 * time.Second)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return 0
		}
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "SIP/2.0" {
			continue
		}
		code, _ := strconv.Atoi(f[1])
		if code >= 200 {
			ack := strings.Replace(strings.Replace(msg, "INVITE sip:", "ACK sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 ACK", 1)
			_, _ = conn.WriteTo([]byte(ack), net.UDPAddrFromAddrPort(edge))
			return code
		}
	}
}

// busyUpstream answers every INVITE with 486 Busy Here and counts them.
type busyUpstream struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	invites int
}

func startBusyUpstream(t *testing.T) *busyUpstream {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &busyUpstream{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if !strings.HasPrefix(req, "INVITE ") {
				continue
			}
			u.mu.Lock()
			u.invites++
			u.mu.Unlock()
			var hdr strings.Builder
			hdr.WriteString("SIP/2.0 486 Busy Here\r\n")
			for _, l := range strings.Split(req, "\r\n") {
				name, _, _ := strings.Cut(l, ":")
				switch strings.ToLower(strings.TrimSpace(name)) {
				case "via", "from", "call-id", "cseq":
					hdr.WriteString(l + "\r\n")
				case "to":
					hdr.WriteString(l + ";tag=up" + randHex(3) + "\r\n")
				}
			}
			hdr.WriteString("Content-Length: 0\r\n\r\n")
			_, _ = conn.WriteTo([]byte(hdr.String()), from)
		}
	}()
	return u
}

func requireCluster(t *testing.T) {
	t.Helper()
	if os.Getenv("SIPEDGE_TEST_REDIS") == "" {
		t.Skip("set SIPEDGE_TEST_REDIS to run (make test does)")
	}
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
}

// TestClusterConverges runs three nodes on one Redis: a write through one node's API is
// enforced by all three (add and revoke), also after the pub/sub connections are killed;
// stale or duplicate pokes never roll a node back; a Redis outage leaves every node serving
// its last snapshot (degraded, writes 503), a node started during the outage answers 503
// until its first load, and all converge on a Redis that comes back empty and is reseeded.
func TestClusterConverges(t *testing.T) {
	requireCluster(t)
	rport := freePort(t)
	rs := startRedis(t, rport)
	up := startBusyUpstream(t)
	withRedis := func(c *Config) { c.RedisURL = rs.url(); c.Upstream = "sip:" + up.addr.String() }
	a := startNode(t, "a", withRedis, true)
	b := startNode(t, "b", withRedis, true)
	c := startNode(t, "c", withRedis, true)
	nodes := []*node{a, b, c}

	code, body := a.api(t, "POST", "IPAccessControlList/", `{"name":"pbx","ip_addresses":["127.0.0.2/32"]}`)
	if code != 201 {
		t.Fatalf("create ACL: %d %v", code, body)
	}
	aclID := body["ipacl_uuid"].(string)
	if code, body = a.api(t, "POST", "Trunk/", `{"name":"t","ipacl_uuid":"`+aclID+`"}`); code != 201 {
		t.Fatalf("create trunk: %d %v", code, body)
	}
	verdicts := func(src string, want int, ns ...*node) time.Duration {
		t.Helper()
		return eventually(t, 5*time.Second, func() error {
			for _, n := range ns {
				if got := invite(t, src, n.sip); got != want {
					return fmt.Errorf("node %s: INVITE from %s → %d, want %d", n.name, src, got, want)
				}
			}
			return nil
		})
	}
	verdicts("127.0.0.2", 486, nodes...)
	verdicts("127.0.0.3", 407, nodes...)

	// Add through B, enforced everywhere.
	if code, _ := b.api(t, "POST", "IPAccessControlList/"+aclID+"/", `{"ip_addresses":["127.0.0.2/32","127.0.0.3"]}`); code != 202 {
		t.Fatalf("update via b: %d", code)
	}
	t.Logf("add converged on 3 nodes in %v", verdicts("127.0.0.3", 486, nodes...))

	// Kill every pub/sub connection, then revoke through C: nodes still converge.
	rc := rs.client()
	defer rc.Close()
	if err := rc.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.api(t, "POST", "IPAccessControlList/"+aclID+"/", `{"ip_addresses":["127.0.0.2/32"]}`); code != 202 {
		t.Fatalf("update via c: %d", code)
	}
	t.Logf("revocation after pub/sub kill converged in %v", verdicts("127.0.0.3", 407, nodes...))

	// Stale and duplicate pokes never roll a node back.
	_, st := a.readyz()
	for _, v := range []string{"0", "1", strconv.FormatUint(st.SnapshotVersion, 10), "garbage"} {
		rc.Publish(context.Background(), "{sipedge}:changes", v)
	}
	time.Sleep(300 * time.Millisecond)
	for _, n := range nodes {
		if _, r := n.readyz(); r.SnapshotVersion < st.SnapshotVersion {
			t.Fatalf("node %s rolled back to %d (was %d)", n.name, r.SnapshotVersion, st.SnapshotVersion)
		}
	}
	verdicts("127.0.0.3", 407, nodes...)

	// Outage: keep serving the last good snapshot; degraded readiness; writes fail fast.
	rs.shutdown()
	for _, n := range nodes {
		if got := invite(t, "127.0.0.2", n.sip); got != 486 {
			t.Fatalf("node %s during the outage: listed source → %d, want 486", n.name, got)
		}
		eventually(t, 5*time.Second, func() error {
			if code, r := n.readyz(); code != 200 || r.Status != "degraded" {
				return fmt.Errorf("node %s readyz during outage: %d %+v", n.name, code, r)
			}
			return nil
		})
	}
	start := time.Now()
	if code, _ := a.api(t, "POST", "IPAccessControlList/", `{"name":"x","ip_addresses":["192.0.2.1"]}`); code != 503 {
		t.Fatalf("write during the outage: %d, want 503", code)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("write during the outage took %v", d)
	}

	// A node started while Redis is down answers 503 until its first load.
	d := startNode(t, "d", withRedis, false)
	eventually(t, 10*time.Second, func() error {
		if got := invite(t, "127.0.0.2", d.sip); got != 503 {
			return fmt.Errorf("node d before its first load: %d, want 503", got)
		}
		return nil
	})
	if code, _ := d.readyz(); code != 503 {
		t.Fatalf("node d readyz before its first load: %d", code)
	}

	// Redis comes back empty (versions start again from 0); the operator reseeds through
	// the API of node d once its bootstrap account exists.
	rs = startRedis(t, rport)
	all := append(nodes, d)
	eventually(t, 15*time.Second, func() error {
		code, body := d.api(t, "POST", "IPAccessControlList/", `{"name":"pbx","ip_addresses":["127.0.0.4"]}`)
		if code != 201 {
			return fmt.Errorf("reseed ACL: %d %v", code, body)
		}
		aclID = body["ipacl_uuid"].(string)
		return nil
	})
	if code, body := d.api(t, "POST", "Trunk/", `{"name":"t","ipacl_uuid":"`+aclID+`"}`); code != 201 {
		t.Fatalf("reseed trunk: %d %v", code, body)
	}
	t.Logf("reseeded data set converged on 4 nodes in %v", verdicts("127.0.0.4", 486, all...))
	verdicts("127.0.0.2", 407, all...)
}
