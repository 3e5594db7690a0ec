package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestConsoleBrowser drives the web console in a real headless Chromium against a whole
// sipedge (embedded store, SIP on loopback): sign in (a wrong token first), create an IP
// ACL and an entry through the UI, disable the entry, explain two sources, rotate a
// credential's password, see a denial appear live after an INVITE from an unlisted source,
// filter it, and read the cluster page. Every value the page shows is checked as text; an
// ACL named with markup must show the markup as text. The page must raise no exception and
// no Content-Security-Policy violation.
//
// With SIPEDGE_SCREENSHOTS=<dir> (relative to the repository root) it writes one PNG per
// page there (docs/console/ in the repository).
func TestConsoleBrowser(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		if os.Getenv("SIPEDGE_TEST_BROWSER") != "" {
			t.Fatal("SIPEDGE_TEST_BROWSER is set but chromium is not installed (apt-get install chromium)")
		}
		t.Skip("chromium not found: install Debian's chromium and set SIPEDGE_TEST_BROWSER=1 to run the console browser test")
	}
	up := startBusyUpstream(t)
	n := startNode(t, "console-1", func(c *Config) { c.Upstream = "sip:" + up.addr.String() }, true)
	base := "http://" + n.http.String() + "/console/"

	// Security headers, checked without a browser.
	res, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("GET /console/: %d %q", res.StatusCode, ct)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
	} {
		if got := res.Header.Get(h); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to contain %q", h, got, want)
		}
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q: want frame-ancestors 'none' and nothing unsafe", csp)
	}

	b := newBrowser(t, bin)
	shots := os.Getenv("SIPEDGE_SCREENSHOTS")
	if shots != "" && !filepath.IsAbs(shots) {
		shots = filepath.Join("..", "..", shots)
	}
	shot := func(name string) {
		if shots == "" {
			return
		}
		b.eval(`document.activeElement && document.activeElement.blur(), true`)
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Sign in: a wrong token is refused on the page, the right one opens the trunks view.
	b.do(chromedp.Navigate(base))
	b.waitJS(`document.getElementById('login-form') && !document.getElementById('login').hidden`)
	shot("login")
	b.do(chromedp.SendKeys(chromedp.CSS("#auth-id"), testAuthID), chromedp.SendKeys(chromedp.CSS("#auth-token"), "wrong-token-0000000000"),
		chromedp.Click(chromedp.CSS("#login-submit")))
	b.waitJS(`!document.getElementById('login-error').hidden`)
	if got := b.text("#login-error"); !strings.Contains(got, "Wrong auth ID or token") {
		t.Errorf("login error = %q", got)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#auth-token"), testToken), chromedp.Click(chromedp.CSS("#login-submit")))
	b.waitJS(`document.querySelector('#view-trunks[data-ready]') !== null`)
	if got := b.text("#who-id"); got != testAuthID {
		t.Errorf("signed in as %q", got)
	}
	if b.eval(`document.cookie`) != "" {
		t.Error("the console set a cookie")
	}

	// An ACL and an entry, created through the UI.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="acls"]`)))
	b.waitJS(`document.querySelector('#view-acls[data-ready]') !== null`)
	b.do(chromedp.SendKeys(chromedp.CSS("#acl-name"), "office-pbx"), chromedp.SendKeys(chromedp.CSS("#acl-ip"), "127.0.0.2"),
		chromedp.Click(chromedp.CSS("#acl-create button")))
	b.waitJS(`document.querySelector('#view-acl[data-ready] tr[data-ip="127.0.0.2"]') !== null`)
	if got := b.text(".acl-name"); got != "office-pbx" {
		t.Errorf("ACL name shown as %q", got)
	}
	aclID := strings.TrimPrefix(b.eval(`location.hash`), "#/acl/")
	b.do(chromedp.SendKeys(chromedp.CSS("#entry-ip"), "127.0.0.5"), chromedp.SendKeys(chromedp.CSS("#entry-desc"), "front desk"),
		chromedp.Click(chromedp.CSS("#entry-add button")))
	b.waitJS(`document.querySelector('tr[data-ip="127.0.0.5"][data-enabled="true"]') !== null`)
	if got := b.text(`tr[data-ip="127.0.0.5"] td.desc`); got != "front desk" {
		t.Errorf("entry description shown as %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS(`tr[data-ip="127.0.0.5"] button.toggle`)))
	b.waitJS(`document.querySelector('tr[data-ip="127.0.0.5"][data-enabled="false"]') !== null`)
	// A description with markup, set through "Edit description", is shown as text.
	const markup = `main <img src=x id=pwned> & "pbx"`
	b.do(chromedp.Click(chromedp.CSS(`tr[data-ip="127.0.0.2"] td.actions button.secondary:not(.toggle)`)))
	b.waitJS(`document.querySelector('tr[data-ip="127.0.0.2"] input.desc-input') !== null`)
	b.do(chromedp.SendKeys(chromedp.CSS(`tr[data-ip="127.0.0.2"] input.desc-input`), markup),
		chromedp.Click(chromedp.CSS(`tr[data-ip="127.0.0.2"] td.desc button`)))
	b.waitJS(`document.querySelector('tr[data-ip="127.0.0.2"] input.desc-input') === null && document.querySelector('#view-acl[data-ready]') !== null`)
	if got := b.text(`tr[data-ip="127.0.0.2"] td.desc`); got != markup {
		t.Errorf("description shown as %q, want the literal %q", got, markup)
	}
	if b.eval(`String(document.getElementById('pwned') === null && document.querySelectorAll('#view img').length === 0)`) != "true" {
		t.Error("markup in a description became an element")
	}
	code, acl := n.api(t, "GET", "IPAccessControlList/"+aclID+"/", "")
	if code != 200 {
		t.Fatalf("GET the ACL the console created (%q): %d %v", aclID, code, acl)
	}
	entries, _ := acl["entries"].([]any)
	states, descs := map[string]bool{}, map[string]string{}
	for _, e := range entries {
		m, _ := e.(map[string]any)
		ip, _ := m["ip_address"].(string)
		on, _ := m["enabled"].(bool)
		states[ip] = on
		descs[ip], _ = m["description"].(string)
	}
	if descs["127.0.0.2"] != markup || descs["127.0.0.5"] != "front desk" {
		t.Errorf("stored descriptions %q", descs)
	}
	if len(states) != 2 || !states["127.0.0.2"] || states["127.0.0.5"] {
		t.Errorf("stored entries (address → enabled) = %v, want 127.0.0.2 on and 127.0.0.5 off", states)
	}
	shot("acl")

	// A trunk on that ACL (trunks are read-only in the console), then wait until the SIP
	// path's snapshot has it.
	code, tr := n.api(t, "POST", "Trunk/", `{"name":"office","ipacl_uuid":"`+aclID+`","max_concurrent":4}`)
	if code != 201 {
		t.Fatalf("create trunk: %d %v", code, tr)
	}
	trunkID, _ := tr["trunk_id"].(string)
	_, tr = n.api(t, "GET", "Trunk/"+trunkID+"/", "")
	domain, _ := tr["trunk_domain"].(string)
	eventually(t, 10*time.Second, func() error {
		if _, x := n.api(t, "POST", "Trunk/"+trunkID+"/Explain/", `{"source_ip":"127.0.0.2"}`); x["verdict"] != "allow_ip" {
			return fmt.Errorf("explain before the snapshot has the trunk: %v", x["verdict"])
		}
		return nil
	})

	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="acls"]`)))
	b.waitJS(`document.querySelector('#view-acls[data-ready] tr[data-acl]') !== null`)
	shot("acls")

	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="trunks"]`)))
	b.waitJS(`document.querySelector('#view-trunks[data-ready] tr[data-trunk]') !== null`)
	row := `#view-trunks tr[data-trunk="` + trunkID + `"]`
	if got := b.text(row + " td:nth-child(3)"); got != domain {
		t.Errorf("trunk domain shown as %q, want %q", got, domain)
	}
	if got := b.text(row + " td.calls"); got != "0" {
		t.Errorf("calls now = %q, want 0", got)
	}
	if got := b.text(row + " td:nth-child(6)"); !strings.Contains(got, "concurrent 4") {
		t.Errorf("caps shown as %q", got)
	}
	if got := b.text(row + " td:nth-child(4)"); got != "office-pbx" {
		t.Errorf("trunk's ACL shown as %q", got)
	}
	shot("trunks")

	// Explain: the disabled entry's address is refused (and the reason names the disabled
	// entry), the enabled one is allowed by IP.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="explain"]`)))
	b.waitJS(`document.querySelector('#view-explain[data-ready] #explain-form') !== null`)
	b.do(chromedp.SendKeys(chromedp.CSS("#explain-source"), "127.0.0.5"), chromedp.Click(chromedp.CSS("#explain-form button")))
	b.waitJS(`document.querySelector('#explain-result .verdict') !== null`)
	if v, why := b.text("#explain-result .verdict .badge"), b.text("#explain-result .reason"); v != "no_credential" || !strings.Contains(why, "disabled") {
		t.Errorf("explain 127.0.0.5: verdict %q, reason %q; want no_credential naming the disabled entry", v, why)
	}
	shot("explain")
	b.setValue("explain-source", "127.0.0.2")
	b.do(chromedp.Click(chromedp.CSS("#explain-form button")))
	b.waitJS(`document.querySelector('#explain-result .verdict .badge').textContent === 'allow_ip'`)
	if got := b.text("#explain-result .sip-answer"); got != "relayed upstream" {
		t.Errorf("explain 127.0.0.2: sip answer %q", got)
	}

	// Credentials: create one and rotate its password through the UI.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="credentials"]`)))
	b.waitJS(`document.querySelector('#view-credentials[data-ready] #cred-create') !== null`)
	b.do(chromedp.SendKeys(chromedp.CSS("#cred-name"), "roaming"), chromedp.SendKeys(chromedp.CSS("#cred-user"), "console-user"),
		chromedp.SendKeys(chromedp.CSS("#cred-pass"), "correct-horse-7"), chromedp.Click(chromedp.CSS("#cred-create button")))
	b.waitJS(`document.querySelector('#view-credentials[data-ready] tr[data-username="console-user"]') !== null`)
	b.do(chromedp.SendKeys(chromedp.CSS(`tr[data-username="console-user"] input.pw`), "battery-staple-8"),
		chromedp.Click(chromedp.CSS(`tr[data-username="console-user"] td.actions button`)))
	b.waitJS(`document.getElementById('flash').textContent.includes('changed')`)
	_, audit := n.api(t, "GET", "AuditLog/?limit=5", "")
	if objs, _ := audit["objects"].([]any); len(objs) == 0 ||
		objs[0].(map[string]any)["kind"] != "credential" || objs[0].(map[string]any)["action"] != "update" {
		t.Errorf("the newest audit entry is not the credential's password update: %v", audit["objects"])
	}
	shot("credentials")

	// Live denials: the stream is up, then an INVITE from an unlisted source to the
	// trunk (which has no credential) is refused with 403 and appears on the page.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="denials"]`)))
	b.waitJS(`(document.getElementById('denials-state') || {}).textContent === 'live'`)
	if code := inviteTo(t, "127.0.0.7", domain, n.sip); code != 403 {
		t.Fatalf("INVITE from unlisted 127.0.0.7 to %s: %d, want 403", domain, code)
	}
	b.waitJS(`document.querySelector('#denials-body tr[data-src^="127.0.0.7:"]') !== null`)
	denied := `#denials-body tr[data-src^="127.0.0.7:"]`
	if v, trunk := b.text(denied+" td:nth-child(5)"), b.text(denied+" td:nth-child(4)"); v != "no_credential" || trunk != "office" {
		t.Errorf("denial row: verdict %q trunk %q, want no_credential on office", v, trunk)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#filter-source"), "127.0.0.9"))
	b.waitJS(`document.querySelectorAll('#denials-body tr').length === 0`)
	b.setValue("filter-source", "127.0.0.7")
	b.waitJS(`document.querySelectorAll('#denials-body tr').length === 1`)
	b.setValue("filter-trunk", trunkID)
	if got := b.eval(`document.getElementById('filter-trunk').value`); got != trunkID {
		t.Fatalf("trunk filter holds %q, want %q", got, trunkID)
	}
	b.waitJS(`document.querySelectorAll('#denials-body tr').length === 1`)
	// A second denial while the page is open arrives live too.
	if code := inviteTo(t, "127.0.0.8", domain, n.sip); code != 403 {
		t.Fatalf("INVITE from unlisted 127.0.0.8: %d, want 403", code)
	}
	b.setValue("filter-source", "")
	b.waitJS(`document.querySelectorAll('#denials-body tr').length === 2`)
	shot("denials")

	// Cluster: this one node serves the current version.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="cluster"]`)))
	b.waitJS(`document.querySelector('#view-cluster[data-ready] #served-by') !== null`)
	if got := b.text("#served-by"); got != "served by 1 of 1 live nodes" {
		t.Errorf("cluster page says %q", got)
	}
	if got := b.text(`tr[data-node="console-1"] td:nth-child(4)`); got != "current" {
		t.Errorf("node state %q", got)
	}
	shot("cluster")

	// An API refusal is shown: the ACL is still used by the trunk (409).
	b.do(chromedp.Navigate(base + "#/acl/" + aclID))
	b.waitJS(`document.querySelector('#view-acl[data-ready] .delete-acl') !== null`)
	b.do(chromedp.Click(chromedp.CSS(".delete-acl")))
	b.waitJS(`document.querySelector('.delete-acl').textContent === 'Confirm delete this acl'`)
	b.do(chromedp.Click(chromedp.CSS(".delete-acl")))
	b.waitJS(`document.getElementById('flash').classList.contains('error')`)
	if got := b.text("#flash"); !strings.Contains(got, trunkID) {
		t.Errorf("refused ACL delete shows %q, want the 409 naming trunk %s", got, trunkID)
	}
	if code, _ := n.api(t, "GET", "IPAccessControlList/"+aclID+"/", ""); code != 200 {
		t.Errorf("ACL after a refused delete: %d", code)
	}

	// Sign out forgets the credentials.
	b.do(chromedp.Click(chromedp.CSS("#logout")))
	b.waitJS(`!document.getElementById('login').hidden && sessionStorage.length === 0`)

	b.checkConsole()
}

func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is one headless Chromium tab the test owns; chromedp ends the process on cleanup.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	messages []string // exceptions and security (CSP) messages of the page
}

func newBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-dev-shm-usage", true))
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Source == "security" || strings.Contains(m.Text, "Content Security Policy") {
				b.mu.Lock()
				b.messages = append(b.messages, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and returns its value as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// setValue sets the value of the form control with id and fires its input and change
// events, as typing or picking would.
func (b *browser) setValue(id, value string) {
	b.t.Helper()
	b.eval(`(() => { const e = document.getElementById(` + strconv.Quote(id) + `); e.value = ` + strconv.Quote(value) + `;
		e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); return true })()`)
}

// text returns the textContent of the first element matching a CSS selector ("" when none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return b.eval(`(document.querySelector(` + strconv.Quote(sel) + `) || {textContent: ''}).textContent`)
}

// waitJS polls a boolean JavaScript expression until it is true (15 s at most).
func (b *browser) waitJS(expr string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b.eval(`Boolean(`+expr+`)`) == "true" {
			return
		}
		if time.Now().After(deadline) {
			flash := b.text("#flash")
			b.t.Fatalf("browser: waited 15 s for %s (page flash: %q, hash %q)", expr, flash, b.eval(`location.hash`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkConsole fails the test on an uncaught exception or a CSP violation of the page.
func (b *browser) checkConsole() {
	b.t.Helper()
	time.Sleep(100 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.messages {
		b.t.Errorf("browser console: %s", m)
	}
}

// TestConsoleStreamEndsOnShutdown: an open live-denials stream neither keeps the process
// from stopping nor turns the stop into an error (http.Server.Shutdown waits for open
// requests; the feed is closed when it starts).
func TestConsoleStreamEndsOnShutdown(t *testing.T) {
	n := startNode(t, "console-stop", nil, true)
	req, _ := http.NewRequest("GET", "http://"+n.http.String()+"/console/api/denials", nil)
	req.SetBasicAuth(testAuthID, testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	buf := make([]byte, 256)
	if k, err := res.Body.Read(buf); err != nil || !strings.Contains(string(buf[:k]), "event: ready") {
		t.Fatalf("first bytes %q, %v; want the ready event", buf[:k], err)
	}
	start := time.Now()
	n.cancel()
	select {
	case err := <-n.done:
		n.done <- err // for startNode's cleanup
		if err != nil {
			t.Fatalf("serve returned %v with a console stream open", err)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("stopping took %v with a console stream open", d)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("serve did not return with a console stream open")
	}
}
