package sip

import (
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSIPpEndToEnd drives the edge with SIPp, the tool carriers test with, from the
// listed 127.0.0.2 (UDP, then TCP) and the unlisted 127.0.0.9 (refused without
// credentials, relayed with MD5 digest via -au/-ap, refused with a wrong password).
// Upstreams:
//   - `sipp -sn uas`, which ignores Record-Route: ACK and BYE arrive with no Route and are
//     routed by the node's dialog table;
//   - testdata/sipp/uas-rr.xml (the bench peer's UAS), which copies Record-Route: ACK and
//     BYE carry the edge's route token.
//
// The UAC scenarios are copies of the acceptance check's (testdata/sipp).
func TestSIPpEndToEnd(t *testing.T) {
	if os.Getenv("SIPEDGE_TEST_SIPP") == "" {
		t.Skip("set SIPEDGE_TEST_SIPP=1 to run")
	}
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatalf("sipp not installed (apt-get install sip-tester): %v", err)
	}
	t.Run("builtin uas", func(t *testing.T) { sippSuite(t, sipp, "-sn", "uas") })
	t.Run("record-routing uas", func(t *testing.T) { sippSuite(t, sipp, "-sf", filepath.Join("testdata", "sipp", "uas-rr.xml")) })
}

func sippSuite(t *testing.T, sipp string, uasScenario ...string) {
	dir := t.TempDir()
	uasPort := freePort(t, "127.0.0.1")
	uas := exec.Command(sipp, append(uasScenario, "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort), "-nostdin")...)
	uasLog, err := os.Create(filepath.Join(dir, "uas.log"))
	if err != nil {
		t.Fatal(err)
	}
	uas.Stdout, uas.Stderr = uasLog, uasLog
	if err := uas.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	t.Cleanup(func() { uas.Process.Kill(); uas.Wait(); uasLog.Close() })
	time.Sleep(300 * time.Millisecond)

	cfg := baseConfig()
	cfg.Upstream = fmt.Sprintf("sip:127.0.0.1:%d", uasPort)
	// This suite is about relaying: the unlisted digest caller runs 20 calls at 50 cps
	// (5 requests each), far over the default per-source budget (see TestSIPpFlood).
	cfg.RateLimitRequests = 1000
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	target := edge.Addr().String()

	run := func(t *testing.T, name, src, scenario string, calls int, extra ...string) (ok, failed int) {
		t.Helper()
		stat := filepath.Join(dir, name+".csv")
		args := append([]string{target, "-sf", filepath.Join("testdata", "sipp", scenario),
			"-i", src, "-p", strconv.Itoa(freePort(t, src)), "-m", strconv.Itoa(calls), "-r", "50", "-d", "0",
			"-recv_timeout", "3000", "-timeout", "40", "-timeout_error", "-nostdin",
			"-trace_stat", "-stf", stat}, extra...)
		if d := os.Getenv("SIPEDGE_SIPP_TRACE"); d != "" { // keep SIPp's message log for debugging
			args = append(args, "-trace_msg", "-message_file", filepath.Join(d, name+".msg"))
		}
		out, _ := exec.Command(sipp, args...).CombinedOutput() // exit status 1 = some calls failed
		ok, failed, err := sippCounts(stat)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, tail(out))
		}
		return ok, failed
	}

	t.Run("listed UDP 100 calls", func(t *testing.T) {
		if ok, failed := run(t, "udp", "127.0.0.2", "uac.xml", 100); ok != 100 || failed != 0 {
			t.Fatalf("%d ok, %d failed", ok, failed)
		}
	})
	t.Run("listed TCP 20 calls", func(t *testing.T) {
		if ok, failed := run(t, "tcp", "127.0.0.2", "uac.xml", 20, "-t", "t1"); ok != 20 || failed != 0 {
			t.Fatalf("%d ok, %d failed", ok, failed)
		}
	})
	t.Run("unlisted without credentials", func(t *testing.T) {
		if ok, _ := run(t, "unlisted", "127.0.0.9", "uac.xml", 10); ok != 0 {
			t.Fatalf("%d calls got through", ok)
		}
	})
	t.Run("unlisted with MD5 digest", func(t *testing.T) {
		if ok, failed := run(t, "digest", "127.0.0.9", "uac-auth.xml", 20, "-au", testUser, "-ap", testPassword, "-auth_uri", "service@"+target); ok != 20 || failed != 0 {
			t.Fatalf("%d ok, %d failed", ok, failed)
		}
	})
	t.Run("unlisted with a wrong password", func(t *testing.T) {
		if ok, _ := run(t, "wrong", "127.0.0.9", "uac-auth.xml", 5, "-au", testUser, "-ap", "wrong-password", "-auth_uri", "service@"+target); ok != 0 {
			t.Fatalf("%d calls got through", ok)
		}
	})
	eventually(t, 5*time.Second, "no call in progress", func() bool { return edge.ActiveCalls() == 0 })
	if n := edge.ActiveDialogs(); n != 0 {
		t.Errorf("%d dialogs still open after every call ended", n)
	}
}

// sippCounts reads SuccessfulCall(C) and FailedCall(C) from the last row of a SIPp
// -trace_stat CSV.
func sippCounts(path string) (ok, failed int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = ';'
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return 0, 0, err
	}
	if len(rows) < 2 {
		return 0, 0, fmt.Errorf("%s: no statistics rows", path)
	}
	col := func(name string) (int, error) {
		for i, h := range rows[0] {
			if h == name {
				last := rows[len(rows)-1]
				if i >= len(last) {
					break
				}
				return strconv.Atoi(strings.TrimSpace(last[i]))
			}
		}
		return 0, fmt.Errorf("%s: no column %s", path, name)
	}
	if ok, err = col("SuccessfulCall(C)"); err != nil {
		return 0, 0, err
	}
	failed, err = col("FailedCall(C)")
	return ok, failed, err
}

// freePort returns a port free for both UDP and TCP on ip.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	u, c, err := listenBoth(net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := u.LocalAddr().(*net.UDPAddr).Port
	u.Close()
	c.Close()
	return p
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
