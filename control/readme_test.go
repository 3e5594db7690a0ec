package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sipedge/sipedge/store"
)

// TestReadmeQuickStart runs the curl commands of the top-level README.md's quick start (between
// <!-- quickstart --> and <!-- /quickstart -->) against a real server, so the document
// cannot rot. It understands the little shell the quick start uses: VAR=value,
// VAR=$(curl … | jq -r FILTER), curl with -sS -u -H -d -X, quotes, $VAR and line
// continuations, with curl's own rules (-d without -X is a POST, form-encoded unless a
// Content-Type is given). Any other line fails the test.
func TestReadmeQuickStart(t *testing.T) {
	// `make run`'s SIP domain: the quick start's trunk_domain must be valid there.
	e := newEnv(t, withConfig(func(c *Config) { c.SIPDomain = "sipedge.local" }))
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(raw), "<!-- quickstart -->")
	block, _, ok2 := strings.Cut(block, "<!-- /quickstart -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- quickstart --> … <!-- /quickstart --> block")
	}
	sh := &miniShell{t: t, e: e, vars: map[string]string{"AUTH_ID": testAuthID, "AUTH_TOKEN": testToken}}
	for _, line := range logicalLines(block) {
		sh.run(line)
	}
	if sh.curls < 10 {
		t.Fatalf("quick start ran %d curl commands, want the full walk-through", sh.curls)
	}

	// What the walk-through promises: each step did what it says.
	for _, v := range []string{"ACL", "CRED", "TRUNK", "ENTRY"} {
		if !uuidRE.MatchString(sh.vars[v]) {
			t.Errorf("$%s = %q, want a uuid", v, sh.vars[v])
		}
	}
	var disabled bool
	for _, s := range sh.log {
		if s.method == "POST" && strings.HasSuffix(s.path, "/Entry/"+sh.vars["ENTRY"]+"/") {
			disabled = s.code == 202
		}
	}
	if !disabled {
		t.Error("the quick start did not disable an entry")
	}
	ctx := context.Background()
	p := store.Page{Limit: 20}
	_, nACL, _ := e.st.ListACLs(ctx, testAuthID, p)
	_, nCred, _ := e.st.ListCredentials(ctx, testAuthID, p)
	_, nTrunk, _ := e.st.ListTrunks(ctx, testAuthID, p)
	if nACL+nCred+nTrunk != 0 {
		t.Errorf("after the quick start: %d ACLs, %d credentials, %d trunks left", nACL, nCred, nTrunk)
	}
	var created []string
	for _, s := range sh.log {
		created = append(created, fmt.Sprintf("%s %s → %d", s.method, s.path, s.code))
	}
	t.Logf("quick start:\n%s", strings.Join(created, "\n"))
}

// logicalLines joins backslash continuations and drops blanks, comments and fences.
func logicalLines(block string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimRight(l, " \t\r")
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		l = strings.TrimSpace(cur + l)
		cur = ""
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "```") {
			continue
		}
		out = append(out, l)
	}
	return out
}

type miniShell struct {
	t     *testing.T
	e     *env
	vars  map[string]string
	curls int
	log   []step
}

type step struct {
	method, path string
	code         int
}

var (
	assignSubst = regexp.MustCompile(`^([A-Z_][A-Z0-9_]*)=\$\((.*)\)$`)
	assignPlain = regexp.MustCompile(`^([A-Z_][A-Z0-9_]*)=(\S+)$`)
)

func (sh *miniShell) run(line string) {
	t := sh.t
	t.Helper()
	switch {
	case assignSubst.MatchString(line):
		m := assignSubst.FindStringSubmatch(line)
		cmd, filter, ok := strings.Cut(m[2], "| jq -r ")
		if !ok {
			t.Fatalf("quick start: command substitution without `| jq -r`: %s", line)
		}
		body := sh.curl(sh.words(cmd))
		f := sh.words(filter)
		if len(f) != 1 {
			t.Fatalf("quick start: jq filter %q", filter)
		}
		sh.vars[m[1]] = jqField(t, body, f[0])
	case assignPlain.MatchString(line):
		m := assignPlain.FindStringSubmatch(line)
		w := sh.words(m[2])
		if len(w) != 1 {
			t.Fatalf("quick start: assignment %q", line)
		}
		sh.vars[m[1]] = w[0]
	case strings.HasPrefix(line, "curl "):
		sh.curl(sh.words(line))
	default:
		t.Fatalf("quick start: line the test cannot run: %s", line)
	}
}

// words splits a shell command line: single quotes literal, double quotes with \ escapes
// and $VAR expansion, bare words with $VAR expansion.
func (sh *miniShell) words(s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) int { // s[i] == '$'; returns the index after the name
		j := i + 1
		braced := j < len(s) && s[j] == '{'
		if braced {
			j++
		}
		k := j
		for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
			k++
		}
		name := s[j:k]
		v, ok := sh.vars[name]
		if !ok {
			sh.t.Fatalf("quick start: $%s is not set", name)
		}
		cur.WriteString(v)
		if braced {
			k++
		}
		return k
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				sh.t.Fatalf("quick start: unterminated ' in %s", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord, i = true, i+end+2
		case c == '"':
			inWord = true
			i++
			for i < len(s) && s[i] != '"' {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
					cur.WriteByte(s[i+1])
					i += 2
				case s[i] == '$':
					i = expand(i)
				default:
					cur.WriteByte(s[i])
					i++
				}
			}
			if i >= len(s) {
				sh.t.Fatalf("quick start: unterminated \" in %s", s)
			}
			i++
		case c == '$':
			inWord = true
			i = expand(i)
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			inWord, i = true, i+2
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// curl performs one curl command line (argv[0] == "curl") and returns the body. A
// non-2xx answer fails the test: every quick start step must succeed.
func (sh *miniShell) curl(argv []string) []byte {
	t := sh.t
	t.Helper()
	if len(argv) == 0 || argv[0] != "curl" {
		t.Fatalf("quick start: not a curl command: %q", argv)
	}
	sh.curls++
	method, target, data, user := "", "", "", ""
	hasData := false
	hdr := http.Header{}
	for i := 1; i < len(argv); i++ {
		arg := argv[i]
		next := func() string {
			if i+1 >= len(argv) {
				t.Fatalf("quick start: %s needs a value", arg)
			}
			i++
			return argv[i]
		}
		switch arg {
		case "-s", "-S", "-sS", "-Ss", "--silent", "--show-error":
		case "-u", "--user":
			user = next()
		case "-H", "--header":
			k, v, ok := strings.Cut(next(), ":")
			if !ok {
				t.Fatalf("quick start: header %q", argv[i])
			}
			hdr.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		case "-d", "--data":
			if hasData {
				data += "&"
			}
			data += next()
			hasData = true
		case "-X", "--request":
			method = next()
		default:
			if strings.HasPrefix(arg, "-") || target != "" {
				t.Fatalf("quick start: curl argument the test does not know: %q", arg)
			}
			target = arg
		}
	}
	const docBase = "http://127.0.0.1:8080"
	if !strings.HasPrefix(target, docBase+"/") {
		t.Fatalf("quick start: URL %q does not start with %s", target, docBase)
	}
	if method == "" {
		method = "GET"
		if hasData {
			method = "POST"
		}
	}
	var body io.Reader
	if hasData {
		body = strings.NewReader(data)
		if hdr.Get("Content-Type") == "" {
			hdr.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	hr, err := http.NewRequest(method, sh.e.hs.URL+strings.TrimPrefix(target, docBase), body)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header = hdr
	if user != "" {
		u, p, _ := strings.Cut(user, ":")
		hr.SetBasicAuth(u, p)
	}
	r := sh.e.send(hr)
	sh.log = append(sh.log, step{method, hr.URL.Path, r.code})
	if r.code/100 != 2 {
		t.Fatalf("quick start: %s %s → %d %s", method, hr.URL.Path, r.code, r.raw)
	}
	return r.raw
}

// jqField evaluates the jq path filter the quick start uses (.a.b, .a[0].b) on body.
func jqField(t *testing.T, body []byte, filter string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("jq %s: %v", filter, err)
	}
	tok := regexp.MustCompile(`^(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\])`)
	for rest := filter; rest != ""; {
		m := tok.FindStringSubmatch(rest)
		if m == nil {
			t.Fatalf("jq filter %q not understood at %q", filter, rest)
		}
		rest = rest[len(m[0]):]
		if m[1] != "" {
			obj, _ := v.(map[string]any)
			v = obj[m[1]]
		} else {
			arr, _ := v.([]any)
			n, _ := strconv.Atoi(m[2])
			if n >= len(arr) {
				t.Fatalf("jq %s: index %d out of range in %s", filter, n, body)
			}
			v = arr[n]
		}
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("jq -r %s: %v is not a string (body %s)", filter, v, body)
	}
	return s
}
