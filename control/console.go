package control

import (
	"embed"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
)

// The web console (issue 17): static HTML/CSS/JS under /console/, built into the binary,
// that calls the JSON API with the same account credentials (HTTP basic, sent by the
// page's fetch calls; no cookies), plus two read-only helpers the API has no route for:
// the live denial stream and the calls now in progress per trunk. See README.md, "Console".

//go:embed console
var consoleFS embed.FS

const (
	consolePath = "/console/"

	// consoleCSP admits only this origin's own script and style files: no inline script or
	// style, no eval, no framing, no plugins, no form submission (the login form is
	// handled by script; if that failed, the browser must not send the token in a URL).
	consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

	// A live denial stream lasts at most consoleStreamLife (the page reconnects), sends a
	// comment every consolePing so proxies and the page see it alive, and gives up on a
	// client that does not take a write within consoleWriteTimeout.
	consoleStreamLife   = 10 * time.Minute
	consolePing         = 15 * time.Second
	consoleWriteTimeout = 10 * time.Second

	maxCallsQuery = 50 // trunk_id values in one GET /console/api/calls
)

// WithDenials serves the live denial stream of the console (GET /console/api/denials)
// from f. Without it the stream answers 404.
func WithDenials(f *Denials) Option {
	return func(s *Server) { s.denials = f }
}

// WithCalls lets the console show the calls in progress per trunk on this node
// (GET /console/api/calls); cmd passes the SIP server's TrunkCalls. Without it the
// console shows none.
func WithCalls(calls func(acl.TrunkID) int) Option {
	return func(s *Server) { s.calls = calls }
}

// consoleRoutes registers the console's routes on the server's mux. They are not in
// s.routes: they are not part of the JSON API (nor of openapi.json).
func (s *Server) consoleRoutes() {
	if f, reg := s.denials, s.cfg.Registerer; f != nil && reg != nil {
		stat := func(pick func(published, dropped uint64, streams int) float64) func() float64 {
			return func() float64 { return pick(f.Stats()) }
		}
		register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipedge_console_denials_total",
			Help: "Denials (sip_denied events) published to the console's live feed."},
			stat(func(p, _ uint64, _ int) float64 { return float64(p) })))
		register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipedge_console_denials_dropped_total",
			Help: "Denials not delivered to a live console stream because it read too slowly."},
			stat(func(_, d uint64, _ int) float64 { return float64(d) })))
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sipedge_console_denial_streams",
			Help: "Live denial streams of the console open now."},
			stat(func(_, _ uint64, n int) float64 { return float64(n) })))
	}
	for _, rt := range []route{
		{http.MethodGet, consolePath + "{$}", authNone, s.consoleAsset},
		{http.MethodGet, consolePath + "{asset}", authNone, s.consoleAsset},
		{http.MethodGet, consolePath + "api/denials", authAnyAccount, s.consoleDenials},
		{http.MethodGet, consolePath + "api/calls", authAnyAccount, s.consoleCalls},
	} {
		p := rt.method + " " + rt.path
		h := s.wrap(rt)
		s.mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			setConsoleHeaders(w.Header()) // before authentication, so its 401 has them too
			h.ServeHTTP(w, r)
		}))
		s.patterns[p] = rt.path
	}
}

// setConsoleHeaders sets the console's security headers.
func setConsoleHeaders(h http.Header) {
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// consoleAsset serves one embedded file; /console/ is index.html.
func (s *Server) consoleAsset(c *call) error {
	name := c.r.PathValue("asset")
	if name == "" {
		name = "index.html"
	}
	b, err := consoleFS.ReadFile(path.Join("console", name))
	if err != nil {
		return notFound("no such console file: %s", name)
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	c.w.Header().Set("Content-Type", ct)
	c.w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	c.w.WriteHeader(http.StatusOK)
	if c.r.Method != http.MethodHead {
		_, _ = c.w.Write(b)
	}
	return nil
}

// denialObject is one event of the live denial stream.
type denialObject struct {
	Time      string `json:"time"`
	Src       string `json:"src"`
	Method    string `json:"method"`
	Trunk     string `json:"trunk"`
	Verdict   string `json:"verdict"`
	CallID    string `json:"call_id"`
	UserAgent string `json:"user_agent"`
	User      string `json:"user,omitempty"`
	Transport string `json:"transport"`
}

// consoleDenials streams this node's denials as server-sent events (text/event-stream):
// first the recent ones the caller may see, then live ones. An account sees the denials
// of its own trunks; the admin bearer token sees every denial, those without a trunk too.
// Events: "denial" (data: a denialObject), "dropped" (data: {"dropped": n}, events this
// stream missed because the client read too slowly).
func (s *Server) consoleDenials(c *call) error {
	if s.denials == nil {
		return notFound("no live denial feed on this server")
	}
	sub, backlog, err := s.denials.Subscribe(c.account, c.account == "")
	if errors.Is(err, ErrTooManySubscribers) {
		return &apiError{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {"10"}},
			msg: "too many live denial streams open; close a console tab or retry later"}
	}
	if err != nil {
		return err
	}
	defer sub.Close()

	rc := http.NewResponseController(c.w)
	_ = rc.SetReadDeadline(time.Time{}) // the request is read; the server's ReadTimeout would end the stream
	h := c.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	c.w.WriteHeader(http.StatusOK)
	write := func(event string, v any) error {
		b, _ := json.Marshal(v) // never holds a newline
		_ = rc.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
		if _, err := io.WriteString(c.w, "event: "+event+"\ndata: "+string(b)+"\n\n"); err != nil {
			return err
		}
		return rc.Flush()
	}
	for _, d := range backlog {
		if err := write("denial", toDenialObject(d)); err != nil {
			return nil
		}
	}
	if err := write("ready", map[string]int{"backlog": len(backlog)}); err != nil {
		return nil
	}
	ping := time.NewTicker(consolePing)
	defer ping.Stop()
	life := time.NewTimer(consoleStreamLife)
	defer life.Stop()
	var reported uint64
	for {
		select {
		case <-c.r.Context().Done():
			return nil
		case <-s.denials.Done():
			return nil
		case <-life.C:
			return nil
		case d := <-sub.C():
			if write("denial", toDenialObject(d)) != nil {
				return nil
			}
		case <-ping.C:
			if n := sub.Dropped(); n != reported {
				reported = n
				if write("dropped", map[string]uint64{"dropped": n}) != nil {
					return nil
				}
				continue
			}
			_ = rc.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
			if _, err := io.WriteString(c.w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		}
	}
}

func toDenialObject(d Denial) denialObject {
	return denialObject{Time: d.Time.UTC().Format(time.RFC3339Nano), Src: d.Src.String(), Method: d.Method,
		Trunk: d.Trunk, Verdict: d.Verdict, CallID: d.CallID, UserAgent: d.UserAgent, User: d.User, Transport: d.Transport}
}

// consoleCalls answers the calls in progress on this node for the caller's trunks named
// by ?trunk_id= (repeated, at most maxCallsQuery): {"api_id", "calls": {trunk_id: n}}.
// Another account's or an unknown trunk is left out.
func (s *Server) consoleCalls(c *call) error {
	if c.account == "" {
		return notFound("calls are shown per account: sign in with an auth_id")
	}
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	if err != nil {
		return badRequest("malformed query string: %v", err)
	}
	ids := q["trunk_id"]
	if len(ids) > maxCallsQuery {
		return badRequest("at most %d trunk_id values", maxCallsQuery)
	}
	out := make(map[string]int, len(ids))
	var snap *acl.Snapshot
	if s.snapshot != nil {
		snap = s.snapshot()
	}
	for _, id := range ids {
		p, ok := snap.Trunk(acl.TrunkID(id))
		if !ok || p.Account != c.account {
			continue
		}
		n := 0
		if s.calls != nil {
			n = s.calls(p.ID)
		}
		out[id] = n
	}
	c.writeJSON(http.StatusOK, map[string]any{"api_id": c.apiID, "calls": out})
	return nil
}
