package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/control"
	"github.com/sipedge/sipedge/hits"
	"github.com/sipedge/sipedge/sip"
	"github.com/sipedge/sipedge/store"
)

// errDrained ends the run group after a completed SIGTERM drain; it is not a failure.
var errDrained = errors.New("drained")

// serve builds every component, runs them under one errgroup, and returns when ctx is
// cancelled (SIGINT), a drain completes (SIGTERM), or a component fails.
func serve(ctx context.Context, cfg Config, log zerolog.Logger, stdout io.Writer, drain <-chan struct{}) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sipedge_build_info", Help: "Always 1; the version label names the build.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)

	if cfg.RedisURL == "" {
		if err := checkPrivateDir(cfg.DataDir, log); err != nil {
			return err
		}
	}
	st, err := openStore(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer st.Close()

	created, token, err := bootstrap(ctx, st, &cfg)
	pendingBootstrap := errors.Is(err, store.ErrUnavailable) && cfg.RedisURL != ""
	if err != nil && !pendingBootstrap {
		return fmt.Errorf("bootstrap account: %w", err)
	}

	nonceKey, err := nonceKey(cfg, log)
	if err != nil {
		return err
	}

	var holder acl.Holder
	policy := func() sip.Policy {
		if s := holder.Load(); s != nil {
			return s
		}
		return nil // no snapshot yet: 503 + Retry-After
	}
	// sipgo logs some paths only through its default logger (TCP connections): bridge both.
	sipLog := newSlogBridge(log, cfg.SIPLogLevel)
	sipmsg.SetDefaultLogger(sipLog)
	// Per-entry hit counts: counted lock-free on the SIP path, flushed every 10 s into the
	// store, which sums them across nodes.
	rec := hits.New(hits.WithLogger(log.With().Str("component", "hits").Logger()), hits.WithRegisterer(reg))
	sipOpts := []sip.Option{sip.WithHitRecorder(rec)}
	var liveNodes atomic.Int64 // Redis mode: live nodes, to split cluster-wide call caps
	if cfg.RedisURL != "" {
		guardLog := log.With().Str("component", "sip").Logger().Sample(&zerolog.BasicSampler{N: 100})
		sipOpts = append(sipOpts, sip.WithReplayGuard(st.ReplayGuard(), func(err error) {
			guardLog.Warn().Err(err).Msg("digest replay guard unavailable; this node's cache decides")
		}))
		sipOpts = append(sipOpts, sip.WithBanStore(st.Bans()),
			sip.WithNodeCount(func() int { return max(int(liveNodes.Load()), 1) }))
	}
	// The console's live denials: this node's sip_denied events, bounded, fanned out to
	// the open console tabs of the accounts they belong to.
	denials := control.NewDenials(0, 0, 0, 0)
	sipSrv, err := sip.New(sip.Config{
		Listen:                  cfg.SIPListen,
		Advertise:               cfg.SIPAdvertise,
		Upstream:                cfg.Upstream,
		Realm:                   cfg.SIPRealm,
		DigestAlgorithms:        cfg.DigestAlgorithms,
		NonceKey:                nonceKey,
		NonceTTL:                cfg.NonceTTL,
		UserAgent:               cfg.UserAgent,
		IdentityHeaderPrefix:    cfg.IdentityHeaderPrefix,
		StripHeaders:            splitList(cfg.StripHeaders),
		TransactionLinger:       cfg.TransactionLinger,
		UDPReaders:              cfg.UDPReaders,
		NodeName:                cfg.NodeID,
		TrustedProxies:          cfg.trustedProxies,
		BanThreshold:            cfg.BanThreshold,
		BanWindow:               cfg.BanWindow,
		BanTTL:                  cfg.BanTTL,
		BanAction:               cfg.BanAction,
		RateLimitRequests:       cfg.RateLimit,
		RateLimitWindow:         cfg.RateLimitWindow,
		RateLimitListedRequests: cfg.RateLimitListed,
		ConcurrentCapCode:       cfg.ConcurrentCapCode,
		ProxyHeaderTimeout:      cfg.ProxyHeaderTimeout,
		Logger:                  log.With().Str("component", "sip").Logger(),
		SlogLogger:              sipLog,
		Registerer:              reg,
		OnDenied:                func(e sip.DenialEvent) { denials.Publish(toDenial(e)) },
	}, policy, sipOpts...)
	if err != nil {
		return fmt.Errorf("sip: %w", err)
	}

	own, names := edgeIdentity(ctx, cfg, log)
	apiCfg := control.Config{
		SIPDomain:       cfg.SIPDomain,
		Realm:           cfg.SIPRealm,
		AdminToken:      cfg.Secrets.AdminToken,
		APIAllow:        cfg.apiAllow,
		MetricsAllow:    cfg.metricsAllow,
		TrustedProxies:  cfg.trustedProxies,
		ReservedDomains: names,
		OwnAddrs:        own,
		UpstreamAllow:   upstreamAllow(ctx, cfg, log),
		Logger:          log,
		Registerer:      reg,
	}
	if err := apiCfg.Validate(); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	api := control.New(apiCfg, st, control.WithCluster(st), control.WithSnapshot(holder.Load),
		control.WithBans(sipSrv.Bans()), control.WithHits(st), control.WithRestore(cfg.NodeID, st),
		control.WithDenials(denials), control.WithCalls(sipSrv.TrunkCalls))

	ops := &opsHandler{cfg: cfg, holder: &holder, store: st, sip: sipSrv, started: time.Now()}
	registerNodeMetrics(reg, &holder, st, sipSrv, ops)
	mux := http.NewServeMux()
	mux.Handle("/v1/", api.Handler())
	mux.Handle("/console/", api.Handler())
	mux.Handle("GET /metrics", api.Guard(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	mux.HandleFunc("GET /healthz", ops.healthz)
	mux.HandleFunc("GET /readyz", ops.readyz)
	httpSrv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	httpSrv.RegisterOnShutdown(denials.Close) // Shutdown waits for open requests: end the streams
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("--http-listen %s: %w", cfg.HTTPListen, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.PprofListen != "" {
		if _, err := servePprof(gctx, g, cfg.PprofListen, log); err != nil {
			return err
		}
	}
	if pendingBootstrap {
		// Redis is down at start: serve (503 until the first snapshot) and create the
		// bootstrap account once the store answers.
		log.Warn().Msg("store unavailable: the bootstrap account is created once it answers")
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-time.After(time.Second):
				}
				created, token, err := bootstrap(gctx, st, &cfg)
				if errors.Is(err, store.ErrUnavailable) {
					continue
				}
				if err != nil {
					return fmt.Errorf("bootstrap account: %w", err)
				}
				printAccount(stdout, cfg, created, token)
				return nil
			}
		})
	}
	if cfg.RedisURL != "" && cfg.Secrets.AuthID != "" && cfg.Secrets.AuthToken != "" {
		g.Go(func() error { return keepBootstrapAccount(gctx, st, cfg, log) })
	}
	g.Go(func() error {
		err := st.Watch(gctx, holder.Store) // Watch also tells the heartbeat (?wait=all)
		if gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("store watch: %w", err)
	})
	if cfg.RedisURL != "" {
		g.Go(func() error { return countNodes(gctx, st, &liveNodes) })
	}
	g.Go(func() error { return rec.Run(gctx, st.AddHits, hits.DefaultFlushInterval) })
	g.Go(func() error { return runIdleRelease(gctx, log) })
	g.Go(func() error {
		return st.RunHeartbeat(gctx, st.SelfStatus(cfg.NodeID, advertised(cfg), time.Now()), store.DefaultHeartbeat)
	})
	g.Go(func() error {
		if err := sipSrv.Run(gctx); err != nil && gctx.Err() == nil {
			return fmt.Errorf("sip: %w", err)
		}
		return nil
	})
	serveHTTP(g, "http", httpSrv, ln)
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-drain:
		}
		ops.draining.Store(true)
		sipSrv.Drain()
		deadline := time.NewTimer(cfg.DrainTimeout)
		defer deadline.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for inFlight(sipSrv) > 0 {
			select {
			case <-gctx.Done():
				return nil
			case <-deadline.C:
				log.Warn().Int("calls_in_progress", inFlight(sipSrv)).Msg("drain timeout: stopping with calls in progress")
				return errDrained
			case <-tick.C:
			}
		}
		log.Info().Msg("drain complete")
		return errDrained
	})

	banner(stdout, cfg, ln.Addr().String())
	printAccount(stdout, cfg, created, token)
	err = g.Wait()
	if errors.Is(err, errDrained) {
		return nil
	}
	return err
}

// toDenial carries a SIP denial event over to the console's feed (control does not import sip).
func toDenial(e sip.DenialEvent) control.Denial {
	return control.Denial{Time: e.Time, Src: e.Src, Method: e.Method, Trunk: e.Trunk, Account: e.Account,
		Verdict: e.Verdict, CallID: e.CallID, UserAgent: e.UserAgent, User: e.User, Transport: e.Transport}
}

// countNodes keeps n at the number of live nodes in the registry (Redis mode), for the
// per-node share of cluster-wide call caps; on a registry error it keeps the last count.
func countNodes(ctx context.Context, st *store.Store, n *atomic.Int64) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if ns, err := st.Nodes(ctx); err == nil && len(ns) > 0 {
			n.Store(int64(len(ns)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// advertised is the SIP address other nodes and operators see for this node.
func advertised(cfg Config) string {
	if cfg.SIPAdvertise != "" {
		return cfg.SIPAdvertise
	}
	return cfg.SIPListen
}

// inFlight counts what a drain waits for: calls being set up and answered dialogs.
func inFlight(s *sip.Server) int { return s.ActiveCalls() + s.ActiveDialogs() }

func openStore(ctx context.Context, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*store.Store, error) {
	opts := []store.Option{
		store.WithLogger(log.With().Str("component", "store").Logger()),
		store.WithResync(cfg.ResyncInterval),
		store.WithMetrics(reg),
	}
	if cfg.RedisURL != "" {
		redis.SetLogger(redisLog{log.With().Str("component", "go-redis").Logger()})
		opts = append(opts, store.WithLazyConnect(), store.WithSentinelPassword(cfg.Secrets.SentinelPassword))
		return store.OpenRedis(ctx, cfg.RedisURL, cfg.Secrets.RedisPassword, opts...)
	}
	return store.OpenBolt(cfg.DataDir, opts...)
}

// nonceKey returns the digest nonce key: from the environment, else (embedded mode) a key
// kept in the data directory so restarts keep issued nonces valid. In Redis mode every node
// must share the key; without one, nonces verify only on the node that issued them.
func nonceKey(cfg Config, log zerolog.Logger) ([]byte, error) {
	if len(cfg.Secrets.NonceKey) > 0 {
		return cfg.Secrets.NonceKey, nil
	}
	if cfg.RedisURL != "" {
		log.Warn().Msg("SIPEDGE_NONCE_KEY is not set: digest nonces verify only on the node that issued them")
		return randomKey()
	}
	path := filepath.Join(cfg.DataDir, "nonce.key")
	if err := checkPrivateDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	if err := checkPrivate("nonce key file", path); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(path); err == nil {
		if k := strings.TrimSpace(string(b)); len(k) >= 32 {
			return []byte(k), nil
		}
		return nil, fmt.Errorf("%s: shorter than 32 characters", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := randomKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, k, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return k, nil
}

func randomKey() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(hex.EncodeToString(b)), nil
}

// bootstrap creates the first account when the store has none; a generated auth_id is
// written back into cfg so the banner can show it.
func bootstrap(ctx context.Context, st *store.Store, cfg *Config) (created bool, token string, err error) {
	created, token, err = control.Bootstrap(ctx, st, cfg.Secrets.AuthID, cfg.Secrets.AuthToken)
	if err == nil && created && cfg.Secrets.AuthID == "" {
		// Bootstrap generated the auth_id too: it is the store's only account.
		if accts, err := st.Accounts(ctx); err == nil && len(accts) == 1 {
			cfg.Secrets.AuthID = accts[0].AuthID
		}
	}
	return created, token, err
}

// banner tells a newcomer what runs where, once, on stdout.
func banner(w io.Writer, cfg Config, httpAddr string) {
	storeDesc := "embedded (bbolt) in " + cfg.DataDir
	if cfg.RedisURL != "" {
		storeDesc = "redis " + redactURL(cfg.RedisURL)
	}
	fmt.Fprintf(w, "sipedge %s\n", version)
	fmt.Fprintf(w, "  SIP        udp+tcp %s (realm %q, trunk domains *.%s)\n", cfg.SIPListen, cfg.SIPRealm, cfg.SIPDomain)
	fmt.Fprintf(w, "  upstream   %s\n", cfg.Upstream)
	fmt.Fprintf(w, "  API        http://%s/v1/Account/{auth_id}/Zentrunk/  (also /metrics /healthz /readyz)\n", httpAddr)
	fmt.Fprintf(w, "  console    http://%s/console/  (same auth_id and token)\n", httpAddr)
	fmt.Fprintf(w, "  store      %s\n", storeDesc)
}

// printAccount reports a bootstrap account. A generated token is printed only here and
// only on the start that created it.
func printAccount(w io.Writer, cfg Config, created bool, token string) {
	switch {
	case created && token != "":
		fmt.Fprintf(w, "  account    created; this token is shown once, keep it:\n")
		fmt.Fprintf(w, "             export AUTH_ID=%s AUTH_TOKEN=%s\n", cfg.Secrets.AuthID, token)
	case created:
		fmt.Fprintf(w, "  account    %s created from SIPEDGE_AUTH_ID / SIPEDGE_AUTH_TOKEN\n", cfg.Secrets.AuthID)
	}
}
