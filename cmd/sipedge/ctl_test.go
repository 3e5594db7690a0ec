package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The tests in this file run `sipedge ctl` in-process (runCtl, as main does) against a
// whole sipedge node started in-process on loopback (startNode, embedded store), and
// judge its stdout, stderr and exit code.

const ctlAdminToken = "ctl-test-admin-token-000000001"

// ctlResult is one ctl run.
type ctlResult struct {
	code           int
	stdout, stderr string
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// ctlEnvOf is the environment ctl sees for node n (nil n: an API nobody listens on).
func ctlEnvOf(n *node) map[string]string {
	url := "http://127.0.0.1:1"
	if n != nil {
		url = "http://" + n.http.String()
	}
	return map[string]string{
		"SIPEDGE_API_URL":     url,
		"SIPEDGE_AUTH_ID":     testAuthID,
		"SIPEDGE_AUTH_TOKEN":  testToken,
		"SIPEDGE_ADMIN_TOKEN": ctlAdminToken,
	}
}

func runCtlWith(t *testing.T, vars map[string]string, stdin string, args ...string) ctlResult {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := runCtl(ctx, args, env(vars), strings.NewReader(stdin), &out, &errb)
	return ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// ctlOK runs ctl against n and fails the test unless it exits 0.
func ctlOK(t *testing.T, n *node, stdin string, args ...string) ctlResult {
	t.Helper()
	r := runCtlWith(t, ctlEnvOf(n), stdin, args...)
	if r.code != 0 {
		t.Fatalf("ctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// ctlFails runs ctl against n and fails the test unless it exits with code and says
// every one of want on stderr.
func ctlFails(t *testing.T, n *node, code int, want []string, args ...string) ctlResult {
	t.Helper()
	r := runCtlWith(t, ctlEnvOf(n), "", args...)
	if r.code != code {
		t.Fatalf("ctl %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("ctl %s: stderr does not say %q: %s", strings.Join(args, " "), w, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("ctl %s failed but printed on stdout: %q", strings.Join(args, " "), r.stdout)
	}
	return r
}

// jsonOf decodes ctl's JSON output.
func jsonOf(t *testing.T, r ctlResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, r)
	}
	return m
}

// rawGet is the API's own answer to GET path, for comparing with ctl's JSON output.
func rawGet(t *testing.T, n *node, path string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.http.String()+path, nil)
	req.SetBasicAuth(testAuthID, testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", path, res.StatusCode, err)
	}
	return m
}

// sameButAPIID compares two answers of the API, whose api_id differs per request.
func sameButAPIID(a, b map[string]any) bool {
	a, b = clone(a), clone(b)
	delete(a, "api_id")
	delete(b, "api_id")
	return reflect.DeepEqual(a, b)
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkTable asserts a table: at most width columns per line, a header naming cols,
// and every cell starting exactly under its header (aligned columns).
func checkTable(t *testing.T, out string, width int, cols ...string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	hdr := lines[0]
	var starts []int
	for _, c := range cols {
		i := strings.Index(" "+hdr+" ", " "+c+" ") // a whole header word
		if i < 0 {
			t.Fatalf("header %q has no column %s", hdr, c)
		}
		starts = append(starts, utf8.RuneCountInString(hdr[:i]))
	}
	var rows [][]string
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > width {
			t.Errorf("line is %d columns wide (> %d): %q", n, width, l)
		}
		r := []rune(l)
		var cells []string
		for i, s := range starts {
			if s >= len(r) || r[s] == ' ' || (s > 0 && r[s-1] != ' ') {
				t.Fatalf("column %s is not aligned at %d in %q\n%s", cols[i], s, l, out)
			}
			end := len(r)
			if i+1 < len(starts) {
				end = starts[i+1]
			}
			cells = append(cells, strings.TrimSpace(string(r[s:end])))
		}
		rows = append(rows, cells)
	}
	return rows[1:]
}

func startCtlNode(t *testing.T) *node {
	t.Helper()
	n := startNode(t, "ctl", func(c *Config) {
		c.Secrets.AdminToken = ctlAdminToken
		c.SIPDomain = "sip.example.org"
		c.SIPRealm = c.SIPDomain
	}, true)
	n.raiseLimits(t, ctlAdminToken)
	return n
}

// TestCtl drives every command group against a live node: create/list/get/update/delete
// round trips in table and JSON output, the API's errors as exit 1 with its message,
// passwords from stdin only and never echoed, explain's verdicts, bans and the cluster.
func TestCtl(t *testing.T) {
	n := startCtlNode(t)
	zt := "/v1/Account/" + testAuthID + "/Zentrunk/"

	// ACL create: JSON output is the API's answer.
	r := ctlOK(t, n, "", "-o", "json", "acl", "create", "--name", "branch", "--ip", "192.0.2.10", "--ip", "198.51.100.0/24,2001:db8::/48")
	created := jsonOf(t, r)
	acl, _ := created["ipacl_uuid"].(string)
	if acl == "" || created["message"] != "IP access control list created" || created["api_id"] == "" || !strings.HasSuffix(r.stdout, "}\n") {
		t.Fatalf("acl create answer: %s", r)
	}

	// get: JSON passthrough equals the API's own GET; table shows the fields and entries.
	r = ctlOK(t, n, "", "acl", "get", acl, "-o", "json")
	if got, want := jsonOf(t, r), rawGet(t, n, zt+"IPAccessControlList/"+acl+"/"); !sameButAPIID(got, want) {
		t.Fatalf("ctl -o json acl get differs from the API:\n%v\n%v", got, want)
	}
	r = ctlOK(t, n, "", "acl", "get", acl)
	for _, w := range []string{"ipacl_uuid    " + acl, "name          branch", "192.0.2.10, 198.51.100.0/24, 2001:db8::/48"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("acl get table lacks %q:\n%s", w, r.stdout)
		}
	}

	// update, then list (table) shows the new name and the new list.
	r = ctlOK(t, n, "", "acl", "update", acl, "--name", "branch-2", "--ip", "192.0.2.10", "--ip", "192.0.2.64/26")
	if !strings.Contains(r.stdout, "IP access control list updated: "+acl) {
		t.Errorf("acl update: %s", r)
	}
	rows := checkTable(t, ctlOK(t, n, "", "acl", "list").stdout, 80, "IPACL_UUID", "NAME", "N", "IP_ADDRESSES")
	if len(rows) != 1 || rows[0][0] != acl || rows[0][1] != "branch-2" || rows[0][2] != "2" || rows[0][3] != "192.0.2.10, 192.0.2.64/26" {
		t.Fatalf("acl list rows: %q", rows)
	}

	// 422 and 409: exit 1, the API's message (field and value) on stderr.
	ctlFails(t, n, 1, []string{`ip_addresses[0]: "10.0.0.5/8": host bits set, did you mean 10.0.0.0/8`, "HTTP 422"},
		"acl", "create", "--name", "bad", "--ip", "10.0.0.5/8")
	ctlFails(t, n, 1, []string{`"00000000-0000-4000-8000-000000000000" not found`, "HTTP 404"}, "acl", "get", "00000000-0000-4000-8000-000000000000")

	// Entries: add, list, disable, enable, delete.
	r = ctlOK(t, n, "", "-o", "json", "entry", "add", acl, "--ip", "203.0.113.0/24", "--description", "HQ PBX")
	entry, _ := jsonOf(t, r)["id"].(string)
	if entry == "" {
		t.Fatalf("entry add: %s", r)
	}
	ctlFails(t, n, 1, []string{"203.0.113.0/24", "HTTP 409"}, "entry", "add", acl, "--ip", "203.0.113.0/24")
	rows = checkTable(t, ctlOK(t, n, "", "entry", "list", acl).stdout, 80, "ID", "IP_ADDRESS", "ENABLED", "HITS", "DESCRIPTION")
	if len(rows) != 3 || rows[2][0] != entry || rows[2][1] != "203.0.113.0/24" || rows[2][2] != "yes" || rows[2][4] != "HQ PBX" {
		t.Fatalf("entry list rows: %q", rows)
	}
	ctlOK(t, n, "", "entry", "disable", acl, entry)
	if e := jsonOf(t, ctlOK(t, n, "", "-o", "json", "entry", "get", acl, entry)); e["enabled"] != false {
		t.Fatalf("after disable: %v", e)
	}
	ctlOK(t, n, "", "entry", "enable", acl, entry)
	if e := jsonOf(t, ctlOK(t, n, "", "-o", "json", "entry", "get", acl, entry)); e["enabled"] != true {
		t.Fatalf("after enable: %v", e)
	}
	if r = ctlOK(t, n, "", "entry", "delete", acl, entry); r.stdout != "entry "+entry+" deleted\n" {
		t.Errorf("entry delete: %s", r)
	}
	if r = ctlOK(t, n, "", "-o", "json", "entry", "list", acl); strings.Contains(r.stdout, entry) {
		t.Errorf("deleted entry still listed: %s", r.stdout)
	}

	// Credentials: the password comes from stdin only and is never printed.
	const pw, pw2 = "correct-horse-battery-7", "rotated-staple-9-horse"
	r = ctlOK(t, n, pw+"\n", "-o", "json", "credential", "create", "--name", "roam", "--username", "ctl-user", "--password-stdin")
	cred, _ := jsonOf(t, r)["credential_uuid"].(string)
	if cred == "" || strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatalf("credential create: %s", r)
	}
	r = runCtlWith(t, ctlEnvOf(n), pw+"\n", "credential", "create", "--name", "dup", "--username", "ctl-user", "--password-stdin")
	// 409s name no value another tenant may use (DESIGN §4a): the field, not the username.
	if r.code != 1 || !strings.Contains(r.stderr, "username is not available") || !strings.Contains(r.stderr, "HTTP 409") || strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatalf("duplicate username: %s", r)
	}
	r = runCtlWith(t, ctlEnvOf(n), "short\n", "credential", "create", "--name", "x", "--username", "other-user", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "password") || strings.Contains(r.stdout+r.stderr, "short") {
		t.Fatalf("too short a password: %s", r)
	}
	r = ctlOK(t, n, pw2+"\r\n", "credential", "update", cred, "--password-stdin")
	if !strings.Contains(r.stdout, "Credential updated: "+cred) || strings.Contains(r.stdout+r.stderr, pw2) {
		t.Fatalf("credential update: %s", r)
	}
	rows = checkTable(t, ctlOK(t, n, "", "credential", "list").stdout, 80, "CREDENTIAL_UUID", "NAME", "USERNAME")
	if len(rows) != 1 || rows[0][0] != cred || rows[0][2] != "ctl-user" {
		t.Fatalf("credential list rows: %q", rows)
	}
	if r = ctlOK(t, n, "", "credential", "get", cred); !strings.Contains(r.stdout, "realm            sip.example.org") {
		t.Errorf("credential get: %s", r)
	}

	// Trunks: create with every flag, update, list, get.
	r = ctlOK(t, n, "", "-o", "json", "trunk", "create", "--name", "ctl-trunk", "--acl", acl, "--credential", cred,
		"--status", "disabled", "--digest-algorithms", "SHA-256,MD5", "--upstream", "sip:127.0.0.1:5080", "--max-cps", "5")
	trunk, _ := jsonOf(t, r)["trunk_id"].(string)
	if trunk == "" {
		t.Fatalf("trunk create: %s", r)
	}
	tr := jsonOf(t, ctlOK(t, n, "", "-o", "json", "trunk", "get", trunk))
	if tr["trunk_status"] != "disabled" || tr["ipacl_uuid"] != acl || tr["credential_uuid"] != cred || tr["max_cps"] != 5.0 ||
		!reflect.DeepEqual(tr["digest_algorithms"], []any{"SHA-256", "MD5"}) || tr["upstream_uri"] != "sip:127.0.0.1:5080" {
		t.Fatalf("trunk as created: %v", tr)
	}
	ctlFails(t, n, 1, []string{"trunk_status", "sometimes", "HTTP 422"}, "trunk", "update", trunk, "--status", "sometimes")
	ctlOK(t, n, "", "trunk", "update", trunk, "--status", "enabled", "--upstream", "", "--digest-algorithms", "")
	tr = jsonOf(t, ctlOK(t, n, "", "-o", "json", "trunk", "get", trunk))
	if tr["trunk_status"] != "enabled" || tr["upstream_uri"] != nil || tr["digest_algorithms"] != nil || tr["ipacl_uuid"] != acl {
		t.Fatalf("trunk after update: %v", tr)
	}
	rows = checkTable(t, ctlOK(t, n, "", "trunk", "list").stdout, 80, "TRUNK_ID", "NAME", "STATUS", "DOMAIN")
	if len(rows) != 1 || rows[0][0] != trunk || rows[0][2] != "enabled" || !strings.HasPrefix(rows[0][3], "…") || !strings.HasSuffix(rows[0][3], ".sip.example.org") {
		t.Fatalf("trunk list rows: %q", rows)
	}
	if r = ctlOK(t, n, "", "trunk", "get", trunk); !strings.Contains(r.stdout, "trunk_domain       "+trunk+".sip.example.org\n") {
		t.Errorf("trunk get: %s", r)
	}

	// Explain right after the writes: allow by IP, challenge outside the ACL.
	x := jsonOf(t, ctlOK(t, n, "", "-o", "json", "explain", "--trunk", trunk, "--source", "192.0.2.10"))
	if x["verdict"] != "allow_ip" {
		t.Fatalf("explain listed source: %v", x)
	}
	r = ctlOK(t, n, "", "explain", "--trunk", trunk, "--source", "203.0.113.7", "--username", "ctl-user")
	for _, w := range []string{"verdict           challenge\n", "digest_required   yes\n", "username_matches  yes\n"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("explain unlisted source lacks %q:\n%s", w, r.stdout)
		}
	}
	ctlFails(t, n, 1, []string{"source_ip", "192.0.2.0/24", "HTTP 422"}, "explain", "--trunk", trunk, "--source", "192.0.2.0/24")

	// In use: 409 naming the trunk; then delete in order.
	ctlFails(t, n, 1, []string{trunk, "HTTP 409"}, "acl", "delete", acl)
	ctlFails(t, n, 1, []string{trunk, "HTTP 409"}, "credential", "delete", cred)
	if r = ctlOK(t, n, "", "-o", "json", "trunk", "delete", trunk); r.stdout != "" {
		t.Errorf("JSON output of a 204 delete: %q", r.stdout)
	}
	ctlOK(t, n, "", "credential", "delete", cred)
	if r = ctlOK(t, n, "", "acl", "delete", acl); r.stdout != "IP access control list "+acl+" deleted\n" {
		t.Errorf("acl delete: %s", r)
	}
	for _, g := range []string{"acl", "credential", "trunk"} {
		if objs := jsonOf(t, ctlOK(t, n, "", "-o", "json", g, "list"))["objects"].([]any); len(objs) != 0 {
			t.Errorf("%s list after deletes: %v", g, objs)
		}
	}

	// Bans (admin token) and the cluster view.
	if r = ctlOK(t, n, "", "bans", "list"); strings.TrimSpace(r.stdout) != "IP  REASON  FAILURES  UNTIL  NODE" {
		t.Errorf("empty ban list: %q", r.stdout)
	}
	ctlFails(t, n, 1, []string{"192.0.2.99", "not banned", "HTTP 404"}, "bans", "lift", "192.0.2.99")
	noAdmin := ctlEnvOf(n)
	delete(noAdmin, "SIPEDGE_ADMIN_TOKEN")
	if r = runCtlWith(t, noAdmin, "", "bans", "list"); r.code != 2 || !strings.Contains(r.stderr, "SIPEDGE_ADMIN_TOKEN") {
		t.Errorf("bans without an admin token: %s", r)
	}
	r = ctlOK(t, n, "", "cluster", "status")
	if !strings.Contains(r.stdout, "live_nodes    1\n") || !strings.Contains(r.stdout, "ctl ") || !strings.Contains(r.stdout, n.sip.String()) {
		t.Errorf("cluster status: %s", r)
	}
	if c := jsonOf(t, ctlOK(t, n, "", "cluster", "status", "-o", "json")); c["live_nodes"] != 1.0 {
		t.Errorf("cluster status JSON: %v", c)
	}

	// Wrong credentials are the API's 401: exit 1.
	bad := ctlEnvOf(n)
	bad["SIPEDGE_AUTH_TOKEN"] = "wrong-token-0000000000000"
	if r = runCtlWith(t, bad, "", "acl", "list"); r.code != 1 || !strings.Contains(r.stderr, "HTTP 401") {
		t.Errorf("wrong token: %s", r)
	}
}

// TestCtlPaging: list commands page through everything (the API serves at most 20 per
// request); JSON output then holds every object in one answer of the API's list shape.
func TestCtlPaging(t *testing.T) {
	n := startCtlNode(t)
	const count = 45
	var ips []string
	for i := range count {
		ips = append(ips, fmt.Sprintf(`"192.0.2.%d"`, i+1))
		if code, body := n.api(t, "POST", "IPAccessControlList/", fmt.Sprintf(`{"name":"acl-%02d","ip_addresses":["198.51.100.%d"]}`, i, i+1)); code != 201 {
			t.Fatalf("create ACL %d: %d %v", i, code, body)
		}
	}
	code, body := n.api(t, "POST", "IPAccessControlList/", `{"name":"many","ip_addresses":[`+strings.Join(ips, ",")+`]}`)
	if code != 201 {
		t.Fatalf("create ACL with %d entries: %d %v", count, code, body)
	}
	many := body["ipacl_uuid"].(string)

	m := jsonOf(t, ctlOK(t, n, "", "-o", "json", "acl", "list"))
	objs := m["objects"].([]any)
	meta := m["meta"].(map[string]any)
	if len(objs) != count+1 || meta["total_count"] != float64(count+1) || meta["next"] != nil || meta["offset"] != 0.0 {
		t.Fatalf("acl list: %d objects, meta %v", len(objs), meta)
	}
	seen := map[string]bool{}
	for i, o := range objs {
		name := o.(map[string]any)["name"].(string)
		if seen[name] || (i < count && name != fmt.Sprintf("acl-%02d", i)) {
			t.Fatalf("object %d is %q (duplicate or out of order)", i, name)
		}
		seen[name] = true
	}
	rows := checkTable(t, ctlOK(t, n, "", "acl", "list").stdout, 80, "IPACL_UUID", "NAME", "N", "IP_ADDRESSES")
	if len(rows) != count+1 || rows[count][1] != "many" || rows[count][2] != fmt.Sprint(count) || !strings.HasSuffix(rows[count][3], "…") {
		t.Fatalf("acl list table: %d rows, last %q", len(rows), rows[len(rows)-1])
	}
	rows = checkTable(t, ctlOK(t, n, "", "entry", "list", many).stdout, 80, "ID", "IP_ADDRESS", "ENABLED", "HITS", "DESCRIPTION")
	if len(rows) != count || rows[count-1][1] != fmt.Sprintf("192.0.2.%d", count) {
		t.Fatalf("entry list: %d rows, last %q", len(rows), rows[len(rows)-1])
	}
}

// TestCtlUsage: bad usage is exit 2 with a message and a hint on stderr, before any
// request; --help is exit 0 with the help on stdout.
func TestCtlUsage(t *testing.T) {
	vars := ctlEnvOf(nil) // nothing listens there: usage errors must not get that far
	noCreds := ctlEnvOf(nil)
	delete(noCreds, "SIPEDGE_AUTH_TOKEN")
	for _, tc := range []struct {
		name  string
		vars  map[string]string
		stdin string
		args  []string
		want  string
	}{
		{"no command", vars, "", nil, "missing command"},
		{"unknown command", vars, "", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown subcommand", vars, "", []string{"acl", "frobnicate"}, `acl: unknown subcommand "frobnicate"`},
		{"missing subcommand", vars, "", []string{"trunk"}, "trunk: missing subcommand"},
		{"unknown flag", vars, "", []string{"acl", "list", "--bogus"}, "flag provided but not defined: -bogus"},
		{"unknown global flag", vars, "", []string{"--bogus", "acl", "list"}, "-bogus"},
		{"missing argument", vars, "", []string{"acl", "get"}, "acl get: want ID, got 0 argument(s)"},
		{"extra argument", vars, "", []string{"acl", "delete", "a", "b"}, "want ID, got 2"},
		{"empty argument", vars, "", []string{"acl", "get", " "}, "ID must not be empty"},
		{"missing required flag", vars, "", []string{"acl", "create", "--name", "x"}, "acl create: --ip is required"},
		{"explain without source", vars, "", []string{"explain", "--trunk", "t"}, "explain: --source is required"},
		{"no password flag", vars, "", []string{"credential", "create", "--name", "n", "--username", "u", "--password", "secret-123"}, "not defined: -password"},
		{"password-stdin required", vars, "", []string{"credential", "create", "--name", "n", "--username", "u"}, "--password-stdin is required"},
		{"empty stdin", vars, "", []string{"credential", "create", "--name", "n", "--username", "u", "--password-stdin"}, "standard input holds no password"},
		{"nothing to update", vars, "", []string{"trunk", "update", "t"}, "nothing to change"},
		{"bad output", vars, "", []string{"-o", "yaml", "acl", "list"}, `-o "yaml": want table or json`},
		{"bad api url", vars, "", []string{"--api-url", "ftp://x", "acl", "list"}, "--api-url"},
		{"bad int", vars, "", []string{"trunk", "create", "--name", "x", "--max-cps", "many"}, "invalid value"},
		{"no credentials", noCreds, "", []string{"acl", "list"}, "SIPEDGE_AUTH_TOKEN"},
		{"completion shell", vars, "", []string{"completion", "fish"}, `unknown subcommand "fish"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCtlWith(t, tc.vars, tc.stdin, tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--help' for usage") || r.stdout != "" {
				t.Fatalf("want exit 2 and %q on stderr, got %s", tc.want, r)
			}
		})
	}

	// The API unreachable is not bad usage: exit 1.
	if r := runCtlWith(t, vars, "", "acl", "list"); r.code != 1 || !strings.Contains(r.stderr, "cannot reach the control API at http://127.0.0.1:1") {
		t.Fatalf("unreachable API: %s", r)
	}

	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"acl", "--help"}, {"help", "acl"}, {"acl", "create", "--help"},
		{"help", "trunk", "update"}, {"explain", "--help"}, {"credential", "create", "-h"}} {
		r := runCtlWith(t, vars, "", args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: sipedge ctl") || r.stderr != "" {
			t.Errorf("%v: %s", args, r)
		}
		for _, l := range strings.Split(r.stdout, "\n") {
			if n := utf8.RuneCountInString(strings.ReplaceAll(l, "\t", "        ")); n > 100 {
				t.Errorf("%v: help line %d columns wide: %q", args, n, l)
			}
		}
	}
	top := runCtlWith(t, vars, "", "--help").stdout
	for _, w := range []string{"acl create --name NAME --ip ADDRESS", "credential create --name NAME --username USER --password-stdin",
		"explain --trunk ID --source IP", "bans lift IP", "cluster status", "completion bash", "SIPEDGE_API_URL"} {
		if !strings.Contains(top, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	if h := runCtlWith(t, vars, "", "trunk", "create", "--help").stdout; !strings.Contains(h, "-digest-algorithms") || !strings.Contains(h, "-status enabled|disabled") {
		t.Errorf("trunk create --help:\n%s", h)
	}
}

// TestCtlCompletion: both scripts are printed, and the bash one completes commands,
// subcommands, flags and flag values when bash runs it.
func TestCtlCompletion(t *testing.T) {
	vars := ctlEnvOf(nil)
	bashScript := runCtlWith(t, vars, "", "completion", "bash")
	zsh := runCtlWith(t, vars, "", "completion", "zsh")
	for _, r := range []ctlResult{bashScript, zsh} {
		if r.code != 0 || !strings.Contains(r.stdout, "complete -o default -F _sipedge sipedge") {
			t.Fatalf("completion: %s", r)
		}
		for _, w := range []string{"acl entry credential trunk explain bans cluster completion", "--password-stdin", "--digest-algorithms"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("completion script lacks %q", w)
			}
		}
	}
	if !strings.Contains(zsh.stdout, "bashcompinit") {
		t.Error("zsh script does not load bashcompinit")
	}
	dir := t.TempDir()
	script, zshScript := dir+"/sipedge.bash", dir+"/sipedge.zsh"
	if err := os.WriteFile(script, []byte(bashScript.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(zshScript, []byte(zsh.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"sipedge", ""}, "ctl"},
		{[]string{"sipedge", "ctl", ""}, "acl entry credential trunk explain bans cluster completion help"},
		{[]string{"sipedge", "ctl", "acl", "cr"}, "create"},
		{[]string{"sipedge", "ctl", "-o", "json", "entry", "d"}, "disable delete"},
		{[]string{"sipedge", "ctl", "trunk", "create", "--st"}, "--status"},
		{[]string{"sipedge", "ctl", "trunk", "update", "ID", "--status", ""}, "enabled disabled"},
		{[]string{"sipedge", "ctl", "-o", ""}, "table json"},
		{[]string{"sipedge", "ctl", "explain", "--trunk", "T", "--s"}, "--source"},
		{[]string{"sipedge", "ctl", "credential", "create", "--name", "n", "--pa"}, "--password-stdin"},
	}

	// zsh (when installed) runs the same function through bashcompinit, whose compgen
	// leaves the matching of the typed prefix to zsh: every wanted word must be offered.
	if zshBin, err := exec.LookPath("zsh"); err == nil {
		for _, tc := range cases {
			var words []string
			for _, w := range tc.words {
				words = append(words, fmt.Sprintf("%q", w))
			}
			prog := fmt.Sprintf(`source %q && print -r -- "${_comps[sipedge]}" && COMP_WORDS=(%s) && COMP_CWORD=%d && _sipedge && print -r -- "${COMPREPLY[*]}"`,
				zshScript, strings.Join(words, " "), len(tc.words)-1)
			out, err := exec.Command(zshBin, "-f", "-c", prog).CombinedOutput()
			reg, got, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			if err != nil || reg != "_bash_complete -o default -F _sipedge" {
				t.Fatalf("zsh: %s (%v)", out, err)
			}
			offered := map[string]bool{}
			for _, w := range strings.Fields(got) {
				offered[w] = true
			}
			for _, w := range strings.Fields(tc.want) {
				if !offered[w] {
					t.Errorf("zsh completing %q: %q not offered in %q", tc.words, w, got)
				}
			}
		}
	} else {
		t.Log("no zsh: its completion script is checked only as text")
	}

	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the completion with")
	}
	for _, tc := range cases {
		var words []string
		for _, w := range tc.words {
			words = append(words, fmt.Sprintf("%q", w))
		}
		prog := fmt.Sprintf(`source %q; COMP_WORDS=(%s); COMP_CWORD=%d; _sipedge; echo "${COMPREPLY[*]}"`,
			script, strings.Join(words, " "), len(tc.words)-1)
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("completing %q: got %q (%v), want %q", tc.words, out, err, tc.want)
		}
	}
}

// TestCtlTableFits: wide values are cut (marked "…") so a table fits 80 columns, ids are
// never cut, and control characters cannot break the layout.
func TestCtlTableFits(t *testing.T) {
	id := "3f1c2d4e-0000-4000-8000-00000000000a"
	var b bytes.Buffer
	err := writeTable(&b, 80, []column{{name: "ID"}, {name: "NAME", min: 10, shrink: 1}, {name: "DOMAIN", min: 16, tail: true}},
		[][]string{
			{id, "a rather long trunk name that goes on", "3f1c2d4e-0000-4000-8000-00000000000a.sip.example.org"},
			{id, "x\x1b[31m\ny", "short.example.org"},
		})
	if err != nil {
		t.Fatal(err)
	}
	rows := checkTable(t, b.String(), 80, "ID", "NAME", "DOMAIN")
	if rows[0][0] != id || !strings.HasSuffix(rows[0][1], "…") || !strings.HasPrefix(rows[0][2], "…") || !strings.HasSuffix(rows[0][2], ".example.org") {
		t.Errorf("cut row: %q", rows[0])
	}
	if rows[1][1] != "x?[31m y" || strings.ContainsAny(b.String(), "\x1b\t") {
		t.Errorf("control characters: %q", rows[1])
	}
	b.Reset()
	if err := writeFields(&b, 40, []field{{"reason", strings.Repeat("word ", 20)}, {"id", id}}); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "id      "+id { // longer than 40, but an id is never cut
			continue
		}
		if utf8.RuneCountInString(l) > 40 || !(strings.HasPrefix(l, "reason  word") || strings.HasPrefix(l, "        word")) {
			t.Errorf("wrapped field line %q", l)
		}
	}
}

func TestCtlTruncateItems(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"192.0.2.10, 198.51.100.0/24", 40, "192.0.2.10, 198.51.100.0/24"},
		{"192.0.2.10, 198.51.100.0/24, 192.0.2.64/26", 30, "192.0.2.10, 198.51.100.0/24, …"},
		{"192.0.2.10, 198.51.100.0/24, 192.0.2.64/26", 27, "192.0.2.10, …"},
		{"2001:db8:aaaa:bbbb::/64, 192.0.2.1", 15, "2001:db8:aaaa:…"},
	} {
		if got := truncateItems(tc.in, tc.n); got != tc.want || utf8.RuneCountInString(got) > tc.n {
			t.Errorf("truncateItems(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestCtlReadmeExamples: every `sipedge ctl` command in README.md's ctl block (between
// <!-- ctl --> and <!-- /ctl -->) parses: run against an API nobody listens on, each one
// gets as far as the request (exit 1, "cannot reach"), none is bad usage (exit 2).
func TestCtlReadmeExamples(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(raw), "<!-- ctl -->")
	block, _, ok2 := strings.Cut(block, "<!-- /ctl -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- ctl --> … <!-- /ctl --> block")
	}
	n := 0
	for _, line := range strings.Split(block, "\n") {
		_, cmd, found := strings.Cut(line, "sipedge ctl ")
		if !found || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		n++
		args := shellWords(cmd)
		r := runCtlWith(t, ctlEnvOf(nil), "a-password-123\n", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the control API") {
			t.Errorf("README: sipedge ctl %q: %s", args, r)
		}
	}
	if n < 10 {
		t.Fatalf("found only %d ctl commands in the README block", n)
	}
}

// shellWords splits the start of a shell command line into words, enough for the README:
// quotes, $VAR (replaced by a placeholder); it stops at an unquoted |, ), ; or #.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote, inWord = c, true
		case c == '$' && quote != '\'':
			for i+1 < len(rs) && (rs[i+1] == '_' || rs[i+1] >= 'A' && rs[i+1] <= 'Z') {
				i++
			}
			cur.WriteString("placeholder-value")
			inWord = true
		case quote == 0 && strings.ContainsRune("|);#", c):
			i = len(rs)
		case quote == 0 && c == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
