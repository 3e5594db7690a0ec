package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/sip"
	"github.com/sipedge/sipedge/store"
)

// opsHandler serves /healthz and /readyz.
type opsHandler struct {
	cfg      Config
	holder   *acl.Holder
	store    *store.Store
	sip      *sip.Server
	started  time.Time
	draining atomic.Bool
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// healthz: the process is alive and its HTTP server answers.
func (o *opsHandler) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": version, "uptime_seconds": int(time.Since(o.started).Seconds())})
}

// readyzBody is the /readyz answer. status is "ready", "degraded" (serving the last good
// snapshot while the store is unreachable, or came back empty: store_incident),
// "draining" or "not_ready".
type readyzBody struct {
	Status          string `json:"status"`
	SnapshotVersion uint64 `json:"snapshot_version"`
	SnapshotLoaded  bool   `json:"snapshot_loaded"`
	StoreVersion    uint64 `json:"store_version,omitempty"`
	Store           string `json:"store"` // "up" or "down"
	StoreBackend    string `json:"store_backend"`
	StoreError      string `json:"store_error,omitempty"`
	SIPListening    bool   `json:"sip_listening"`
	Draining        bool   `json:"draining"`
	ActiveCalls     int    `json:"active_calls"`   // INVITEs relayed, awaiting their final answer
	ActiveDialogs   int    `json:"active_dialogs"` // answered calls not yet ended
	// StoreIncident: the store came back empty while this node served a non-empty data set
	// (it keeps serving that; see Incident and POST /v1/Admin/Restore/).
	StoreIncident bool            `json:"store_incident"`
	Incident      *store.Incident `json:"incident,omitempty"`
	// RestorePending names the version of the data set this node kept from before an
	// empty-store incident that no restore has brought back yet (objects written into the
	// emptied store may be served meanwhile); POST /v1/Admin/Restore/ writes it back.
	RestorePending *uint64 `json:"restore_pending_version,omitempty"`
	// Subscription is the change-notice subscription's liveness probe (Redis mode).
	Subscription *subscriptionBody `json:"subscription,omitempty"`
}

// subscriptionBody is the probe of the change-notice subscription as /readyz shows it.
type subscriptionBody struct {
	Alive        bool    `json:"alive"`
	LastEchoAge  float64 `json:"last_echo_age_seconds"` // -1: none yet
	LastRTTMilli float64 `json:"last_rtt_ms"`
	DeafTotal    uint64  `json:"deaf_total"`
}

// readyz: 200 when this node can judge calls (snapshot loaded, SIP bound, not draining),
// also in degraded mode; 503 otherwise.
func (o *opsHandler) readyz(w http.ResponseWriter, r *http.Request) {
	b := readyzBody{Store: "up", StoreBackend: "embedded", Draining: o.draining.Load(), ActiveCalls: o.sip.ActiveCalls(), ActiveDialogs: o.sip.ActiveDialogs()}
	if o.cfg.RedisURL != "" {
		b.StoreBackend = "redis"
	}
	if s := o.holder.Load(); s != nil {
		b.SnapshotLoaded, b.SnapshotVersion = true, s.Version()
	}
	b.SIPListening = o.sip.Listening()
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	if v, err := o.store.Version(ctx); err != nil {
		b.Store, b.StoreError = "down", err.Error()
	} else {
		b.StoreVersion = v
	}
	if inc := o.store.Incident(); inc != nil {
		b.StoreIncident, b.Incident = true, inc
	}
	if v, ok := o.store.RestorePending(); ok {
		b.RestorePending = &v
	}
	if sub := o.store.Subscription(); sub.Probing {
		sb := &subscriptionBody{Alive: sub.Alive, LastEchoAge: -1, LastRTTMilli: float64(sub.LastRTT.Microseconds()) / 1000, DeafTotal: sub.Deaf}
		if !sub.LastEcho.IsZero() {
			sb.LastEchoAge = time.Since(sub.LastEcho).Seconds()
		}
		b.Subscription = sb
	}
	code := http.StatusOK
	switch {
	case !b.SnapshotLoaded || !b.SIPListening:
		b.Status, code = "not_ready", http.StatusServiceUnavailable
	case b.Draining:
		b.Status, code = "draining", http.StatusServiceUnavailable
	case b.Store == "down" || b.StoreIncident:
		b.Status = "degraded"
	default:
		b.Status = "ready"
	}
	writeJSON(w, code, b)
}

// servePprof serves net/http/pprof on its own listener (never on the API's: profiles and
// goroutine dumps are not for the API's clients), until ctx ends. It returns the address
// it listens on.
func servePprof(ctx context.Context, g *errgroup.Group, addr string, log zerolog.Logger) (net.Addr, error) {
	if err := loopbackOnly(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Warn().Str("addr", ln.Addr().String()).Msg("serving Go profiles on /debug/pprof/")
	serveHTTP(g, "pprof", srv, ln)
	g.Go(func() error {
		<-ctx.Done()
		return srv.Close()
	})
	return ln.Addr(), nil
}

// serveHTTP runs srv on ln in g until it is closed or shut down (which is no error).
func serveHTTP(g *errgroup.Group, name string, srv *http.Server, ln net.Listener) {
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}
