package sip

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// A flood from unlisted sources at a bounded rate must not starve the listed PBX: the
// per-source rate limit drops the flood before parsing, listed sources are exempt.

// flooder sends OPTIONS and INVITEs (no credentials) from ip at rate per second until
// ctx ends, and counts the answers it gets.
type flooder struct {
	sent, answered atomic.Int64
}

func (f *flooder) run(ctx context.Context, t *testing.T, ip string, edge string, rate int) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	dst, _ := net.ResolveUDPAddr("udp4", edge)
	go func() { // count requests answered (distinct Call-IDs: finals are retransmitted)
		buf := make([]byte, 4096)
		seen := map[string]bool{}
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if m, err := sipmsg.ParseMessage(buf[:n]); err == nil {
				if id := m.CallID(); id != nil && !seen[string(*id)] {
					seen[string(*id)] = true
					f.answered.Add(1)
				}
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	src := c.LocalAddr().String()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		method := "OPTIONS"
		if i%2 == 1 {
			method = "INVITE"
		}
		raw := replace(rawRequest(method, "sip:service@"+edge), "127.0.0.9:5099", src)
		if _, err := c.WriteTo(raw, dst); err == nil {
			f.sent.Add(1)
		}
	}
}

func TestFloodDoesNotStarveListedPBX(t *testing.T) {
	edge, _, reg := newDefenceRig(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	floods := make([]*flooder, 4)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range floods {
		floods[i] = &flooder{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			floods[i].run(ctx, t, fmt.Sprintf("127.0.0.%d", 10+i), edge.Addr().String(), 100)
		}()
	}

	pbx := newUAC(t, "127.0.0.2", "UDP", edge.Addr())
	const calls = 100
	ok := 0
	for range calls {
		res, inv, codes := pbx.call("", "", "")
		if res.StatusCode != 200 {
			t.Logf("listed call answered %d (%v)", res.StatusCode, codes)
			continue
		}
		pbx.ack(inv, res)
		if bye := pbx.bye(inv, res); bye.StatusCode == 200 {
			ok++
		}
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(start)

	if ok*100 < calls*99 {
		t.Fatalf("listed PBX completed %d of %d calls under the flood (< 99%%)", ok, calls)
	}
	// Each flooder gets at most its budget answered: 30 at once, then 15/s.
	budget := float64(DefaultRateLimitRequests) + float64(DefaultRateLimitRequests)*elapsed.Seconds()/DefaultRateLimitWindow.Seconds()
	for i, f := range floods {
		sent, answered := f.sent.Load(), f.answered.Load()
		t.Logf("flooder %d: sent %d, answered %d, budget %.0f over %v", i, sent, answered, budget, elapsed.Round(time.Millisecond))
		if float64(answered) > budget+2 {
			t.Errorf("flooder %d got %d answers, budget %.0f", i, answered, budget)
		}
		if sent < 2*int64(budget) {
			t.Errorf("flooder %d sent only %d: the test did not flood", i, sent)
		}
	}
	if v := metricValue(t, reg, "sipedge_sip_rate_limited_total", nil); v == 0 {
		t.Error("sipedge_sip_rate_limited_total not counted")
	}
}

// TestSIPpFlood: unlisted SIPp UACs flood OPTIONS and INVITEs at a bounded rate while a
// listed SIPp UAC keeps calling through the edge: at least 99 % of its calls succeed.
func TestSIPpFlood(t *testing.T) {
	sipp := needBinary(t, "sipp")
	dir := t.TempDir()
	uasPort := freePort(t, "127.0.0.1")
	uas := exec.Command(sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort), "-nostdin")
	if err := uas.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	t.Cleanup(func() { uas.Process.Kill(); uas.Wait() })
	time.Sleep(300 * time.Millisecond)

	reg := newRegistry()
	cfg := baseConfig()
	cfg.Upstream = fmt.Sprintf("sip:127.0.0.1:%d", uasPort)
	cfg.Registerer = reg
	edge := startServer(t, cfg, policyOf(mustCompile(t, testDataset(""))))
	target := edge.Addr().String()

	sippRun := func(name, src, scenario string, calls, rate int) *exec.Cmd {
		stat := filepath.Join(dir, name+".csv")
		cmd := exec.Command(sipp, target, "-sf", filepath.Join("testdata", "sipp", scenario),
			"-i", src, "-p", strconv.Itoa(freePort(t, src)), "-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate),
			"-d", "0", "-recv_timeout", "3000", "-timeout", "40", "-timeout_error", "-nostdin",
			"-trace_stat", "-stf", stat)
		cmd.Stdout, cmd.Stderr = nil, nil
		return cmd
	}
	// Floods: 2 × OPTIONS and 1 × INVITE (unlisted: 407), 60/s each for 5 s.
	var floods []*exec.Cmd
	for i, sc := range []string{"options.xml", "options.xml", "uac.xml"} {
		c := sippRun(fmt.Sprintf("flood%d", i), fmt.Sprintf("127.0.0.%d", 20+i), sc, 300, 60)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		floods = append(floods, c)
	}
	t.Cleanup(func() {
		for _, c := range floods {
			c.Process.Kill()
			c.Wait()
		}
	})
	time.Sleep(500 * time.Millisecond) // the flood is on
	listed := sippRun("listed", "127.0.0.2", "uac.xml", 100, 25)
	out, _ := listed.CombinedOutput()
	ok, failed, err := sippCounts(filepath.Join(dir, "listed.csv"))
	if err != nil {
		t.Fatalf("listed UAC: %v\n%s", err, tail(out))
	}
	for _, c := range floods {
		c.Wait()
	}
	t.Logf("listed: %d ok, %d failed; rate limited: %v", ok, failed,
		metricValue(t, reg, "sipedge_sip_rate_limited_total", nil))
	if ok < 99 {
		t.Fatalf("listed SIPp UAC: %d of 100 calls succeeded under the flood", ok)
	}
	if metricValue(t, reg, "sipedge_sip_rate_limited_total", nil) == 0 {
		t.Fatal("the flood was not rate limited")
	}
	if os.Getenv("SIPEDGE_SIPP_TRACE") != "" {
		t.Logf("stats in %s", dir)
	}
}
