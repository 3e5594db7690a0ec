package sip

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The SIPVicious scanners against a real edge on loopback (Debian package sipvicious).
// Each scanner binds its own unlisted source address.

// runTool runs a scanner with a hard time limit and returns its combined output.
func runTool(t *testing.T, limit time.Duration, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)       // killed when the limit passes
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // sipvicious keeps session files there
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Logf("%s killed after %v", filepath.Base(bin), limit)
	}
	return string(out)
}

// svwarFound counts the extensions in svwar's result table ("| 101 | reqauth |").
var svwarRow = regexp.MustCompile(`(?m)^\| *[0-9]+ +\|`)

func TestSvwarFindsNothing(t *testing.T) {
	svwar := needBinary(t, "svwar")
	edge, _, _ := newDefenceRig(t, nil)
	// The rate limit would drop part of a forced scan; without it every user is answered,
	// which shows the answers are the same, not just missing.
	open, _, openReg := newDefenceRig(t, func(c *Config) { c.RateLimitRequests = -1 })
	for _, tc := range []struct {
		name string
		edge *Server
		args []string
	}{
		// The acceptance check's run: svwar gives up at once, as every user is challenged.
		{"INVITE", edge, []string{"-m", "INVITE"}},
		// Forced past its sanity check, svwar compares every answer with the one for a
		// random user. INVITE (407 for everyone) and REGISTER (405) make it give up at the
		// first extension ("unknown response", "method not allowed"); OPTIONS (200 for
		// everyone) runs the whole range and finds every answer the same.
		{"INVITE forced", open, []string{"-m", "INVITE", "--force"}},
		{"REGISTER forced", open, []string{"-m", "REGISTER", "--force"}},
		{"OPTIONS forced", open, []string{"-m", "OPTIONS", "--force"}},
		{"OPTIONS forced, rate limited", edge, []string{"-m", "OPTIONS", "--force"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "127.0.0.30"
			port := strconv.Itoa(int(tc.edge.Addr().Port()))
			args := append([]string{"-b", src, "-x", src, "-P", strconv.Itoa(freePort(t, src)), "-p", port,
				"-e100-140", "-t", "0.02", "--maximumtime", "2"}, tc.args...)
			method := tc.args[1]
			before := metricValue(t, openReg, "sipedge_sip_requests_total", map[string]string{"method": method})
			out := runTool(t, 60*time.Second, svwar, append(args, "127.0.0.1")...)
			if n := len(svwarRow.FindAllString(out, -1)); n != 0 {
				t.Fatalf("svwar enumerated %d extensions:\n%s", n, out)
			}
			if n := metricValue(t, openReg, "sipedge_sip_requests_total", map[string]string{"method": method}) - before; tc.edge == open && method == "OPTIONS" && n < 41 {
				t.Fatalf("the edge saw %v of svwar's 41 %s requests: the scan did not run", n, method)
			}
			t.Logf("svwar %s: %s", tc.name, lastLine(out))
		})
	}
}

func TestSvcrackIsBanned(t *testing.T) {
	svcrack := needBinary(t, "svcrack")
	// svcrack calls from 127.0.0.1 (below), so the upstream lives elsewhere: an upstream's
	// address is never banned (DESIGN §4a).
	edge, _, reg := newDefenceRig(t, func(c *Config) { c.Upstream = "sip:127.0.0.5:5060" })
	dict := filepath.Join(t.TempDir(), "dict")
	// The right password is the 8th guess: the ban must come first.
	words := []string{"1234", "password", "admin", "pbxuser", "secret", "letmein", "qwerty", testPassword, "x"}
	if err := os.WriteFile(dict, []byte(strings.Join(words, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// svcrack (0.3.3) binds the wildcard whatever -b says, so it calls from 127.0.0.1.
	// After the ban it keeps reading the 403s the edge retransmits (it never ACKs them)
	// for Timer H (32 s): 10 s is plenty for the attack itself.
	src := "127.0.0.1"
	out := runTool(t, 10*time.Second, svcrack, "-u", testUser, "-d", dict, "-m", "INVITE",
		"-x", src, "-P", strconv.Itoa(freePort(t, src)), "-p", strconv.Itoa(int(edge.Addr().Port())),
		"-t", "0.05", "--maximumtime", "3", "127.0.0.1")
	if strings.Contains(out, "The password for") || strings.Contains(out, "[no password]") {
		t.Fatalf("svcrack cracked the password:\n%s", out)
	}
	if !edge.Bans().Banned(aa(src)) {
		t.Fatalf("svcrack's source is not banned:\n%s", out)
	}
	failed := metricValue(t, reg, "sipedge_sip_invites_total", map[string]string{"verdict": "auth_failed"})
	allowed := metricValue(t, reg, "sipedge_sip_invites_total", map[string]string{"verdict": "allow_digest"})
	if failed > DefaultBanThreshold || allowed != 0 {
		t.Fatalf("edge judged %v wrong guesses (threshold %d) and allowed %v", failed, DefaultBanThreshold, allowed)
	}
	t.Logf("svcrack: %v guesses judged before the ban; %s", failed, lastLine(out))
}

func TestSvmapSeesNoVersion(t *testing.T) {
	svmap := needBinary(t, "svmap")
	for _, ua := range []string{"", "edge.example.org"} {
		t.Run("UserAgent="+ua, func(t *testing.T) {
			edge, _, _ := newDefenceRig(t, func(c *Config) { c.UserAgent = ua })
			src := "127.0.0.32"
			out := runTool(t, 60*time.Second, svmap, "-b", src, "-x", src, "-P", strconv.Itoa(freePort(t, src)),
				"-p", strconv.Itoa(int(edge.Addr().Port())), "127.0.0.1")
			want := ua
			if want == "" {
				want = DefaultUserAgent
			}
			row := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "127.0.0.1:") {
					row = l
				}
			}
			if row == "" || !strings.Contains(row, want) {
				t.Fatalf("svmap did not see the edge as %q:\n%s", want, out)
			}
			for _, leak := range []string{"sipgo", "Go-http", "golang"} {
				if strings.Contains(strings.ToLower(out), strings.ToLower(leak)) {
					t.Fatalf("svmap output names %q:\n%s", leak, out)
				}
			}
			if regexp.MustCompile(`\d+\.\d+`).MatchString(strings.ReplaceAll(row, "127.0.0.1", "")) {
				t.Fatalf("svmap row carries a version: %q", row)
			}
			t.Logf("svmap: %s", strings.TrimSpace(row))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
