package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/acl"
)

func TestConsoleAssets(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path, ctype string
		code        int
	}{
		{"/console/", "text/html", 200},
		{"/console/index.html", "text/html", 200},
		{"/console/app.js", "text/javascript", 200},
		{"/console/style.css", "text/css", 200},
		{"/console/favicon.svg", "image/svg+xml", 200},
		{"/console/nope.js", "application/json", 404},
		{"/console/api/denials", "application/json", 401}, // no credentials
		{"/console/api/calls", "application/json", 401},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, err := e.hs.Client().Get(e.hs.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			r := &resp{code: res.StatusCode, hdr: res.Header, raw: body}
			if r.code != tc.code || !strings.HasPrefix(r.hdr.Get("Content-Type"), tc.ctype) {
				t.Fatalf("%d %q, want %d %s", r.code, r.hdr.Get("Content-Type"), tc.code, tc.ctype)
			}
			if tc.code == 200 && len(body) == 0 {
				t.Error("empty body")
			}
			for h, want := range map[string]string{
				"Content-Security-Policy": consoleCSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
				"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
			} {
				if got := r.hdr.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			if r.hdr.Get("Set-Cookie") != "" {
				t.Error("the console sets a cookie")
			}
		})
	}
	for _, directive := range []string{"default-src 'self'", "script-src 'self';", "style-src 'self';", "frame-ancestors 'none'", "form-action 'none'"} {
		if !strings.Contains(consoleCSP, directive) {
			t.Errorf("CSP lacks %q", directive)
		}
	}
	if strings.Contains(consoleCSP, "unsafe") || strings.Contains(consoleCSP, "*") {
		t.Errorf("CSP allows too much: %s", consoleCSP)
	}
	// Another method on a console file is 405, a path that is not clean 404.
	if r := e.do(req{method: "POST", path: "/console/app.js", body: "{}", noAuth: true}); r.code != 405 {
		t.Errorf("POST /console/app.js: %d, want 405", r.code)
	}
	hr, _ := http.NewRequest("GET", e.hs.URL+"/console/x/../app.js", nil)
	hr.URL.Path = "/console/x/../app.js" // as sent, not cleaned by the client
	if r := e.send(hr); r.code != 404 {
		t.Errorf("unclean path: %d, want 404", r.code)
	}
}

// TestConsoleSourcesEscape checks the rules the CSP and the escaping rely on in the
// shipped files: no inline script or style, no event-handler attributes, and no API value
// ever parsed as HTML (no innerHTML, outerHTML, insertAdjacentHTML, document.write, eval).
func TestConsoleSourcesEscape(t *testing.T) {
	html, err := os.ReadFile("console/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?s)<script([^>]*)>(.*?)</script>`).FindAllSubmatch(html, -1) {
		if !bytes.Contains(m[1], []byte("src=")) || len(bytes.TrimSpace(m[2])) > 0 {
			t.Errorf("index.html: inline script %q", m[0])
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`javascript:`),
	} {
		if m := bad.Find(html); m != nil {
			t.Errorf("index.html: %q", m)
		}
	}
	js, err := os.ReadFile("console/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "localStorage", "document.cookie"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if !strings.Contains(string(js), "credentials: 'omit'") {
		t.Error("app.js does not send its requests with credentials: 'omit'")
	}
}

// sseStream reads the events of one live denial stream.
type sseStream struct {
	res    *http.Response
	events chan sseEvent
}

type sseEvent struct {
	name string
	data map[string]any
}

func (e *env) openDenials(user, pass, bearer string) (*sseStream, int) {
	e.t.Helper()
	hr, _ := http.NewRequest("GET", e.hs.URL+"/console/api/denials", nil)
	if bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+bearer)
	} else {
		hr.SetBasicAuth(user, pass)
	}
	res, err := e.hs.Client().Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return nil, res.StatusCode
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Errorf("stream Content-Type %q", ct)
	}
	s := &sseStream{res: res, events: make(chan sseEvent, 64)}
	e.t.Cleanup(func() { res.Body.Close() })
	go func() {
		defer close(s.events)
		br := bufio.NewReader(res.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if ev.name != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			}
		}
	}()
	return s, 200
}

// next returns the next event other than a ping (fails after 5 s).
func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
	return sseEvent{}
}

// quiet checks that no event arrives within d.
func (s *sseStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if ok {
			t.Errorf("unexpected event %s %v", ev.name, ev.data)
		}
	case <-time.After(d):
	}
}

func TestConsoleDenialStream(t *testing.T) {
	e := newEnv(t)
	f := NewDenials(0, 0, 2, 0)
	e.liveSnapshot(WithDenials(f))
	src := netip.MustParseAddrPort("203.0.113.7:5060")

	// Published before anyone listens: the backlog.
	f.Publish(Denial{Time: time.Now(), Src: src, Method: "INVITE", Trunk: "t-mine", Account: testAuthID, Verdict: "no_credential",
		CallID: `x"</script><img src=x>`, UserAgent: "friendly-scanner", Transport: "udp"})

	mine, code := e.openDenials(testAuthID, testToken, "")
	if code != 200 {
		t.Fatalf("open stream: %d", code)
	}
	other, _ := e.openDenials(otherAuthID, otherToken, "")
	admin, _ := e.openDenials("", "", testAdmin)

	ev := mine.next(t)
	if ev.name != "denial" || ev.data["src"] != "203.0.113.7:5060" || ev.data["trunk"] != "t-mine" || ev.data["verdict"] != "no_credential" ||
		ev.data["call_id"] != `x"</script><img src=x>` || ev.data["user_agent"] != "friendly-scanner" {
		t.Errorf("backlog event %s %v", ev.name, ev.data)
	}
	if ev := mine.next(t); ev.name != "ready" || ev.data["backlog"] != 1.0 {
		t.Errorf("after the backlog: %s %v, want ready {backlog: 1}", ev.name, ev.data)
	}
	if ev := other.next(t); ev.name != "ready" || ev.data["backlog"] != 0.0 {
		t.Errorf("other account: %s %v, want ready with an empty backlog", ev.name, ev.data)
	}
	if ev := admin.next(t); ev.name != "denial" {
		t.Errorf("admin backlog: %s %v", ev.name, ev.data)
	}
	admin.next(t) // ready

	f.Publish(Denial{Time: time.Now(), Src: src, Method: "INVITE", Trunk: "t-other", Account: otherAuthID, Verdict: "auth_failed"})
	f.Publish(Denial{Time: time.Now(), Src: src, Method: "BYE", Verdict: "bad_route"}) // no trunk
	f.Publish(Denial{Time: time.Now(), Src: src, Method: "INVITE", Trunk: "t-mine", Account: testAuthID, Verdict: "trunk_disabled"})

	if ev := mine.next(t); ev.data["verdict"] != "trunk_disabled" {
		t.Errorf("account saw %v, want only its own trunk_disabled", ev.data)
	}
	mine.quiet(t, 100*time.Millisecond)
	if ev := other.next(t); ev.data["verdict"] != "auth_failed" {
		t.Errorf("other account saw %v, want only its auth_failed", ev.data)
	}
	other.quiet(t, 100*time.Millisecond)
	for _, want := range []string{"auth_failed", "bad_route", "trunk_disabled"} {
		if ev := admin.next(t); ev.data["verdict"] != want {
			t.Errorf("admin saw %v, want %s", ev.data, want)
		}
	}

	if got := e.metric("sipedge_console_denials_total", nil); got != 4 {
		t.Errorf("sipedge_console_denials_total = %v, want 4", got)
	}
	// Bounded: a third stream of one account is refused.
	if _, code := e.openDenials(testAuthID, testToken, ""); code != 200 {
		t.Fatalf("second stream of the account: %d", code)
	}
	if _, code := e.openDenials(testAuthID, testToken, ""); code != http.StatusTooManyRequests {
		t.Errorf("third stream of the account: %d, want 429", code)
	}
	// Wrong credentials are 401, like the API.
	if _, code := e.openDenials(testAuthID, "wrong-token-00000000", ""); code != 401 {
		t.Errorf("wrong token: %d, want 401", code)
	}

	// Closing the feed (server shutdown) ends every stream.
	f.Close()
	for _, s := range []*sseStream{mine, other, admin} {
		select {
		case _, ok := <-s.events:
			for ok {
				_, ok = <-s.events
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream outlived the feed")
		}
	}
}

func TestConsoleDenialStreamNotConfigured(t *testing.T) {
	e := newEnv(t)
	if _, code := e.openDenials(testAuthID, testToken, ""); code != 404 {
		t.Errorf("stream without WithDenials: %d, want 404", code)
	}
}

func TestConsoleCalls(t *testing.T) {
	e := newEnv(t)
	holder := e.liveSnapshot(WithCalls(func(id acl.TrunkID) int { return len(id) % 7 }))
	mine := e.createTrunk(map[string]any{"name": "mine", "ipacl_uuid": e.createACL("office", "192.0.2.0/24")})
	r := e.do(req{method: "POST", path: "Trunk/", user: otherAuthID, pass: otherToken,
		body: map[string]any{"name": "theirs"}})
	theirs := r.str("trunk_id")
	e.served(holder)

	r = e.do(req{method: "GET", path: "/console/api/calls?trunk_id=" + mine + "&trunk_id=" + theirs + "&trunk_id=nope"}).must(t, 200)
	calls, _ := r.body["calls"].(map[string]any)
	if len(calls) != 1 || calls[mine] != float64(len(mine)%7) {
		t.Errorf("calls = %v, want only %s: %d", calls, mine, len(mine)%7)
	}
	if r := e.do(req{method: "GET", path: "/console/api/calls?trunk_id=" + mine, header: map[string]string{"Authorization": "Bearer " + testAdmin}}); r.code != 404 {
		t.Errorf("admin: %d, want 404 (calls are per account)", r.code)
	}
	if r := e.do(req{method: "GET", path: "/console/api/calls?" + strings.Repeat("trunk_id=x&", maxCallsQuery+1)}); r.code != 400 {
		t.Errorf("%d trunk ids: %d, want 400", maxCallsQuery+1, r.code)
	}
}
