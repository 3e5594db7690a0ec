package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// knownSettings is every flag name and every SIPEDGE_* variable sipedge reads.
func knownSettings(t *testing.T) (flags map[string]bool, envs map[string]bool) {
	t.Helper()
	flags, envs = map[string]bool{}, map[string]bool{}
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// Re-run the real parser's flag definitions through -h to list them.
	_, err := parseConfig([]string{"-h"}, env(nil), io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	var buf bytes.Buffer
	_, _ = parseConfig([]string{"-h"}, env(nil), &buf)
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(buf.String(), -1) {
		flags[m[1]] = true
		envs[envName(m[1])] = true
	}
	for _, s := range []string{"SIPEDGE_AUTH_ID", "SIPEDGE_AUTH_TOKEN", "SIPEDGE_ADMIN_TOKEN", "SIPEDGE_REDIS_PASSWORD", "SIPEDGE_NONCE_KEY", "SIPEDGE_NONCE_KEY_FILE"} {
		envs[s] = true
	}
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in -h output", len(flags))
	}
	return flags, envs
}

func deployFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir("../../deploy", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("deploy/: %v (%d files)", err, len(out))
	}
	return out
}

// TestDeployFilesUseRealSettings: every --flag and SIPEDGE_* name in deploy/ exists.
func TestDeployFilesUseRealSettings(t *testing.T) {
	flags, envs := knownSettings(t)
	flagRe := regexp.MustCompile(`(?:^|[\s"'\[,])--([a-z][a-z0-9-]+)`)
	envRe := regexp.MustCompile(`SIPEDGE_[A-Z0-9_]+`)
	for _, p := range deployFiles(t) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "sipp") || strings.Contains(line, "redis-server") || strings.Contains(line, "kubectl") || strings.Contains(line, "--from") {
				continue // other programs' flags
			}
			for _, m := range flagRe.FindAllStringSubmatch(line, -1) {
				if !flags[m[1]] && m[1] != "version" {
					t.Errorf("%s: flag --%s does not exist", p, m[1])
				}
			}
		}
		for _, e := range envRe.FindAllString(string(b), -1) {
			if !envs[e] {
				t.Errorf("%s: %s is not a sipedge setting", p, e)
			}
		}
	}
}

func TestDeployYAMLParsesAndProbesReadyz(t *testing.T) {
	var sawDeployment, sawCompose bool
	for _, p := range deployFiles(t) {
		if !strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml") {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if doc["kind"] == "Deployment" {
				sawDeployment = true
				s := strings.ReplaceAll(mustYAML(t, doc), " ", "")
				if !strings.Contains(s, "path:/readyz") {
					t.Errorf("%s: Deployment has no readiness probe on /readyz", p)
				}
			}
			if _, ok := doc["services"]; ok {
				sawCompose = true
				svcs := doc["services"].(map[string]any)
				for _, want := range []string{"redis", "edge-a", "edge-b", "upstream", "pbx"} {
					if _, ok := svcs[want]; !ok {
						t.Errorf("%s: compose lacks service %s", p, want)
					}
				}
			}
		}
		f.Close()
	}
	if !sawDeployment || !sawCompose {
		t.Fatalf("deployment %v compose %v", sawDeployment, sawCompose)
	}
}

func mustYAML(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// systemd-analyze insists that ExecStart exists: point it at a real executable.
	b, err := os.ReadFile("../../deploy/systemd/sipedge.service")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	unit := filepath.Join(t.TempDir(), "sipedge.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/sipedge"), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	// Only complaints about this unit count; the host's own units are not ours.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "sipedge.service") && !strings.Contains(l, "EnvironmentFile") {
			ours = append(ours, l)
		}
	}
	if len(ours) > 0 || (err != nil && len(strings.TrimSpace(string(out))) == 0) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestFail2banFilterMatchesSecurityLine(t *testing.T) {
	b, err := os.ReadFile("../../deploy/fail2ban/sipedge.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^failregex = (.+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no failregex")
	}
	if host := fail2banHost(t, string(m[1]), securityLineSample); host != "192.0.2.10" {
		t.Fatalf("filter finds %q in %s", host, securityLineSample)
	}
}

// fail2banHost applies a fail2ban failregex (its <HOST> tag as an IPv4/IPv6 group) to line.
func fail2banHost(t *testing.T, failregex, line string) string {
	t.Helper()
	re := regexp.MustCompile(strings.ReplaceAll(failregex, `<HOST>`, `([0-9a-fA-F.:]+?)`))
	g := re.FindStringSubmatch(line)
	if g == nil {
		return ""
	}
	return g[1]
}

// securityLineSample is the shape of sip's security event line (sip/handler.go logDecision);
// TestEdgeEndToEnd checks the filter against lines the running edge really wrote.
const securityLineSample = `{"level":"warn","component":"sip","event":"sip_denied","src":"192.0.2.10:5060","trunk":"none","verdict":"auth_failed","call_id":"a84b4c76e66710","user_agent":"friendly-scanner","transport":"UDP","time":"2026-11-23T08:00:00Z","message":"INVITE denied"}`

// TestDeployAPIAllowWhereverPublic: every deploy file that binds the API to all
// interfaces also sets --api-allow (issue 14: the image served the API on 0.0.0.0 to
// everyone).
func TestDeployAPIAllowWhereverPublic(t *testing.T) {
	public := regexp.MustCompile(`(?:http-listen[= ]|SIPEDGE_HTTP_LISTEN[=:]\s*)(?:0\.0\.0\.0|\[::\]):`)
	allow := regexp.MustCompile(`(?m)^[^#]*(?:--api-allow=|SIPEDGE_API_ALLOW[=:]\s*)\S`)
	n := 0
	for _, p := range deployFiles(t) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !public.Match(b) {
			continue
		}
		n++
		if !allow.Match(b) {
			t.Errorf("%s binds the API to every interface without --api-allow / SIPEDGE_API_ALLOW", p)
		}
	}
	if n == 0 {
		t.Fatal("no deploy file binds the API publicly: the check checks nothing")
	}
}
