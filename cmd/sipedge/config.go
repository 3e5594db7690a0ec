package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/control"
	"github.com/sipedge/sipedge/store"
)

// Config is everything sipedge needs to start, from flags and SIPEDGE_* environment variables.
// Secrets never come from flags: see [secrets].
type Config struct {
	SIPListen        string
	SIPAdvertise     string
	HTTPListen       string
	DataDir          string
	RedisURL         string
	Upstream         string
	SIPDomain        string
	SIPRealm         string
	DigestAlgorithms []string
	NonceTTL         time.Duration
	ResyncInterval   time.Duration
	DrainTimeout     time.Duration
	LogLevel         string
	LogFormat        string
	SIPLogLevel      string
	NodeID           string
	UserAgent        string
	// IdentityHeaderPrefix and StripHeaders are the trust boundary's header rules (sip.Config).
	IdentityHeaderPrefix string
	StripHeaders         string
	TransactionLinger    time.Duration
	PprofListen          string // "" = off
	UDPReaders           int    // 0 = sip's default (1)
	ShowVersion          bool

	// Brute-force and scanner defence, rate limit and call caps (sip.Config fields of the same names).
	BanThreshold       int
	BanWindow          time.Duration
	BanTTL             time.Duration
	BanAction          string
	RateLimit          int
	RateLimitWindow    time.Duration
	RateLimitListed    int
	ConcurrentCapCode  int
	ProxyHeaderTimeout time.Duration
	APIAllow           string // comma-separated CIDRs; "" = every source
	TrustedProxies     string // comma-separated CIDRs of load balancers (PROXY protocol, X-Forwarded-For)
	MetricsAllow       string // comma-separated CIDRs allowed to /metrics; "" = as APIAllow
	UpstreamAllow      string // comma-separated CIDRs tenants' upstream_uri must resolve inside; "" = the default upstream's addresses

	apiAllow, trustedProxies, metricsAllow, upstreamAllow []netip.Prefix // parsed by Validate

	Secrets secrets
}

// secrets come only from the environment (or files named by it) and are never logged.
type secrets struct {
	AuthID        string // SIPEDGE_AUTH_ID (not secret, but travels with the token)
	AuthToken     string // SIPEDGE_AUTH_TOKEN
	AdminToken    string // SIPEDGE_ADMIN_TOKEN
	RedisPassword string // SIPEDGE_REDIS_PASSWORD
	// SentinelPassword authenticates to the Sentinels of a redis+sentinel:// URL.
	SentinelPassword string // SIPEDGE_SENTINEL_PASSWORD
	NonceKey         []byte // SIPEDGE_NONCE_KEY or the file SIPEDGE_NONCE_KEY_FILE
}

func defaultConfig() Config {
	return Config{
		SIPListen:            "0.0.0.0:5060",
		HTTPListen:           "127.0.0.1:8080",
		DataDir:              "./sipedge-data",
		Upstream:             "sip:127.0.0.1:5080",
		SIPDomain:            "sipedge.local",
		DigestAlgorithms:     []string{acl.DigestMD5}, // one challenge: DESIGN §4.5
		NonceTTL:             300 * time.Second,
		ResyncInterval:       30 * time.Second,
		DrainTimeout:         30 * time.Second,
		LogLevel:             "info",
		LogFormat:            "json",
		SIPLogLevel:          "warn",
		UserAgent:            "sipedge",
		IdentityHeaderPrefix: "X-Sipedge-",
		StripHeaders:         "P-Asserted-Identity,P-Preferred-Identity,Remote-Party-ID",
		BanThreshold:         5,
		BanWindow:            time.Minute,
		BanTTL:               10 * time.Minute,
		BanAction:            "drop",
		RateLimit:            30,
		RateLimitWindow:      2 * time.Second,
		ConcurrentCapCode:    486,
		ProxyHeaderTimeout:   5 * time.Second,
	}
}

// envName maps a flag name to its environment variable: sip-listen → SIPEDGE_SIP_LISTEN.
func envName(flagName string) string {
	return "SIPEDGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args, then fills every flag not given on the command line
// from its SIPEDGE_* variable, then secrets, then validates.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("sipedge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	algs := strings.Join(c.DigestAlgorithms, ",")
	fs.StringVar(&c.SIPListen, "sip-listen", c.SIPListen, "SIP listen address, UDP and TCP on the same port")
	fs.StringVar(&c.SIPAdvertise, "sip-advertise", c.SIPAdvertise, "host[:port] put in Via and Record-Route (default: the listen address)")
	fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "control API, /metrics, /healthz and /readyz listen address")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded store (ignored with --redis-url)")
	fs.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "share one data set between nodes: redis://host:6379/0, rediss://…, redis+sentinel://s1:26379,s2:26379/mymaster/0 or redis+cluster://n1:6379,n2:6379 (passwords: SIPEDGE_REDIS_PASSWORD, SIPEDGE_SENTINEL_PASSWORD)")
	fs.StringVar(&c.Upstream, "upstream", c.Upstream, "default upstream for allowed INVITEs (a trunk's upstream_uri overrides it)")
	fs.StringVar(&c.SIPDomain, "sip-domain", c.SIPDomain, "domain under which trunks get their default trunk_domain <trunk_id>.<sip-domain>")
	fs.StringVar(&c.SIPRealm, "sip-realm", c.SIPRealm, "digest realm of every challenge and stored HA1 (default: --sip-domain); changing it requires resetting passwords")
	fs.StringVar(&algs, "digest-algorithms", algs, "default challenges, comma separated, most preferred first: MD5 (one challenge), or e.g. SHA-256,MD5")
	fs.DurationVar(&c.NonceTTL, "nonce-ttl", c.NonceTTL, "lifetime of a digest nonce")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", c.ResyncInterval, "backstop full reload interval of the data set")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "on SIGTERM, how long in-flight calls may take to finish")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or console")
	fs.StringVar(&c.SIPLogLevel, "sip-log-level", c.SIPLogLevel, "level of sipgo's own logs (debug, info, warn, error)")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "name of this node in the cluster view (default: hostname + random suffix)")
	fs.StringVar(&c.IdentityHeaderPrefix, "identity-header-prefix", c.IdentityHeaderPrefix, "prefix of the headers the edge adds for the core (<prefix>Trunk, Account, Auth, User); PBX headers with it are removed")
	fs.StringVar(&c.StripHeaders, "strip-headers", c.StripHeaders, "comma-separated headers removed from PBXs' initial INVITEs before the core")
	fs.StringVar(&c.UserAgent, "user-agent", c.UserAgent, "Server/User-Agent header the edge sends (no version by default)")
	fs.DurationVar(&c.TransactionLinger, "transaction-linger", c.TransactionLinger, "how long finished SIP transactions are kept for retransmissions (0: RFC 3261 64*T1 = 32s)")
	fs.IntVar(&c.UDPReaders, "udp-readers", c.UDPReaders, "goroutines reading, parsing and handling the SIP UDP socket (0: one per CPU, at most 16)")
	fs.StringVar(&c.PprofListen, "pprof-listen", c.PprofListen, "serve Go's /debug/pprof/ profiles on this address, e.g. 127.0.0.1:6060 (default: off; never expose it)")
	fs.StringVar(&c.APIAllow, "api-allow", c.APIAllow, "comma-separated CIDRs allowed to reach the HTTP API and /metrics (default: everyone)")
	fs.StringVar(&c.MetricsAllow, "metrics-allow", c.MetricsAllow, "comma-separated CIDRs allowed to scrape /metrics (default: as --api-allow)")
	fs.StringVar(&c.UpstreamAllow, "upstream-allow", c.UpstreamAllow, "comma-separated CIDRs a tenant's upstream_uri must resolve inside (default: the addresses of --upstream); loopback, link-local and the edge's own addresses need the admin")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", c.TrustedProxies, "comma-separated CIDRs of load balancers whose PROXY protocol (SIP over TCP) and X-Forwarded-For (HTTP) are believed")
	fs.IntVar(&c.BanThreshold, "ban-threshold", c.BanThreshold, "failed digests / unknown-trunk INVITEs per source within --ban-window that ban it (-1: no bans)")
	fs.DurationVar(&c.BanWindow, "ban-window", c.BanWindow, "window in which --ban-threshold failures are counted")
	fs.DurationVar(&c.BanTTL, "ban-ttl", c.BanTTL, "how long a source stays banned")
	fs.StringVar(&c.BanAction, "ban-action", c.BanAction, "what a banned source gets: drop (silence) or 403")
	fs.IntVar(&c.RateLimit, "rate-limit", c.RateLimit, "requests per --rate-limit-window a source not listed in any ACL may send before being dropped (-1: off)")
	fs.DurationVar(&c.RateLimitWindow, "rate-limit-window", c.RateLimitWindow, "window of --rate-limit")
	fs.IntVar(&c.RateLimitListed, "rate-limit-listed", c.RateLimitListed, "the same limit for sources listed in an ACL (0: exempt)")
	fs.IntVar(&c.ConcurrentCapCode, "concurrent-cap-code", c.ConcurrentCapCode, "SIP answer when a trunk's max_concurrent is reached: 486 or 503")
	fs.DurationVar(&c.ProxyHeaderTimeout, "proxy-header-timeout", c.ProxyHeaderTimeout, "how long a trusted proxy may take to send its PROXY protocol header")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	c.DigestAlgorithms = splitList(algs)
	if c.NodeID == "" {
		host, _ := os.Hostname()
		if ap, err := netip.ParseAddrPort(c.SIPListen); err == nil {
			host += ":" + strconv.Itoa(int(ap.Port()))
		}
		c.NodeID = host
	}
	if c.SIPRealm == "" {
		c.SIPRealm = c.SIPDomain
	}
	s, err := readSecrets(getenv)
	if err != nil {
		return c, err
	}
	c.Secrets = s
	return c, c.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func readSecrets(getenv func(string) string) (secrets, error) {
	s := secrets{
		AuthID:           getenv("SIPEDGE_AUTH_ID"),
		AuthToken:        getenv("SIPEDGE_AUTH_TOKEN"),
		AdminToken:       getenv("SIPEDGE_ADMIN_TOKEN"),
		RedisPassword:    getenv("SIPEDGE_REDIS_PASSWORD"),
		SentinelPassword: getenv("SIPEDGE_SENTINEL_PASSWORD"),
	}
	key := getenv("SIPEDGE_NONCE_KEY")
	if f := getenv("SIPEDGE_NONCE_KEY_FILE"); f != "" {
		if key != "" {
			return s, errors.New("set SIPEDGE_NONCE_KEY or SIPEDGE_NONCE_KEY_FILE, not both")
		}
		if err := checkPrivate("SIPEDGE_NONCE_KEY_FILE", f); err != nil {
			return s, err
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return s, fmt.Errorf("SIPEDGE_NONCE_KEY_FILE: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if key != "" {
		if len(key) < 32 {
			return s, fmt.Errorf("SIPEDGE_NONCE_KEY: %d characters, want at least 32", len(key))
		}
		s.NonceKey = []byte(key)
	}
	return s, nil
}

// Validate reports the first bad setting, naming the flag, the value and why.
func (c *Config) Validate() error {
	if err := validHostPort("sip-listen", c.SIPListen); err != nil {
		return err
	}
	if err := validHostPort("http-listen", c.HTTPListen); err != nil {
		return err
	}
	if c.SIPAdvertise != "" && strings.ContainsAny(c.SIPAdvertise, " \r\n;,<>\"") {
		return fmt.Errorf("--sip-advertise %q: not a host[:port]", c.SIPAdvertise)
	}
	if c.RedisURL == "" && c.DataDir == "" {
		return errors.New("--data-dir: empty (the embedded store needs a directory)")
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				return errors.New("--redis-url: must not carry a password; use SIPEDGE_REDIS_PASSWORD (and SIPEDGE_SENTINEL_PASSWORD)")
			}
		}
		if _, err := store.ParseRedisURL(c.RedisURL); err != nil || u == nil || u.Host == "" {
			why := "want redis://host:port/db, rediss://…, redis+sentinel://host:26379[,host2:26379]/mastername/db or redis+cluster://host1:6379,host2:6379"
			if err != nil {
				why = err.Error() + ": " + why
			}
			return fmt.Errorf("--redis-url %q: %s", redactURL(c.RedisURL), why)
		}
	}
	if err := validSIPURI("upstream", c.Upstream); err != nil {
		return err
	}
	if c.SIPDomain == "" || strings.ContainsAny(c.SIPDomain, " \r\n;:/@") {
		return fmt.Errorf("--sip-domain %q: not a domain name", c.SIPDomain)
	}
	if strings.ContainsAny(c.SIPRealm, "\"\r\n\\") {
		return fmt.Errorf("--sip-realm %q: must not contain quotes, backslashes or line breaks", c.SIPRealm)
	}
	if len(c.DigestAlgorithms) == 0 {
		return errors.New("--digest-algorithms: empty")
	}
	seen := map[string]bool{}
	for _, a := range c.DigestAlgorithms {
		if a != acl.DigestMD5 && a != acl.DigestSHA256 {
			return fmt.Errorf("--digest-algorithms: %q is not MD5 or SHA-256", a)
		}
		if seen[a] {
			return fmt.Errorf("--digest-algorithms: %q twice", a)
		}
		seen[a] = true
	}
	for name, d := range map[string]time.Duration{"nonce-ttl": c.NonceTTL, "resync-interval": c.ResyncInterval, "drain-timeout": c.DrainTimeout} {
		if d <= 0 {
			return fmt.Errorf("--%s %s: must be positive", name, d)
		}
	}
	if c.TransactionLinger < 0 {
		return fmt.Errorf("--transaction-linger %s: must not be negative", c.TransactionLinger)
	}
	if c.UDPReaders < 0 || c.UDPReaders > 64 {
		return fmt.Errorf("--udp-readers %d: must be 0 (default) to 64", c.UDPReaders)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return fmt.Errorf("--log-format %q: want json or console", c.LogFormat)
	}
	for name, l := range map[string]string{"log-level": c.LogLevel, "sip-log-level": c.SIPLogLevel} {
		switch l {
		case "debug", "info", "warn", "error":
		default:
			return fmt.Errorf("--%s %q: want debug, info, warn or error", name, l)
		}
	}
	switch c.BanAction {
	case "drop", "403":
	default:
		return fmt.Errorf("--ban-action %q: want drop or 403", c.BanAction)
	}
	if c.ConcurrentCapCode != 486 && c.ConcurrentCapCode != 503 {
		return fmt.Errorf("--concurrent-cap-code %d: want 486 or 503", c.ConcurrentCapCode)
	}
	for name, d := range map[string]time.Duration{"ban-window": c.BanWindow, "ban-ttl": c.BanTTL, "rate-limit-window": c.RateLimitWindow, "proxy-header-timeout": c.ProxyHeaderTimeout} {
		if d <= 0 {
			return fmt.Errorf("--%s %s: must be positive", name, d)
		}
	}
	if c.BanThreshold == 0 || c.BanThreshold < -1 {
		return fmt.Errorf("--ban-threshold %d: want a positive count, or -1 for no bans", c.BanThreshold)
	}
	if c.RateLimit == 0 || c.RateLimit < -1 || c.RateLimitListed < 0 {
		return fmt.Errorf("--rate-limit %d / --rate-limit-listed %d: want a positive count (-1 / 0 to turn off)", c.RateLimit, c.RateLimitListed)
	}
	var err error
	if c.apiAllow, err = control.ParsePrefixes(c.APIAllow); err != nil {
		return fmt.Errorf("--api-allow: %w", err)
	}
	if c.trustedProxies, err = control.ParsePrefixes(c.TrustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if c.metricsAllow, err = control.ParsePrefixes(c.MetricsAllow); err != nil {
		return fmt.Errorf("--metrics-allow: %w", err)
	}
	if c.MetricsAllow == "" {
		c.metricsAllow = c.apiAllow
	}
	if c.upstreamAllow, err = control.ParsePrefixes(c.UpstreamAllow); err != nil {
		return fmt.Errorf("--upstream-allow: %w", err)
	}
	if err := loopbackOnly(c.PprofListen); err != nil {
		return err
	}
	if c.NodeID == "" || len(c.NodeID) > 128 || strings.ContainsAny(c.NodeID, " /\r\n\t") {
		return fmt.Errorf("--node-id %q: want 1-128 characters without spaces or slashes", c.NodeID)
	}
	if strings.ContainsAny(c.UserAgent, "\r\n") {
		return errors.New("--user-agent: must not contain line breaks")
	}
	return nil
}

// loopbackOnly refuses a --pprof-listen address that is not loopback: profiles and
// goroutine dumps are never for the network.
func loopbackOnly(addr string) error {
	if addr == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("--pprof-listen %q: must be a loopback ip:port (e.g. 127.0.0.1:6060 or [::1]:6060): profiles are never served to the network", addr)
	}
	return nil
}

func validHostPort(name, v string) error {
	if _, err := netip.ParseAddrPort(v); err != nil {
		return fmt.Errorf("--%s %q: want ip:port (e.g. 0.0.0.0:5060 or [::]:5060): %v", name, v, err)
	}
	return nil
}

func validSIPURI(name, v string) error {
	if strings.ContainsAny(v, " \r\n<>\"") {
		return fmt.Errorf("--%s %q: not a SIP URI", name, v)
	}
	rest, ok := strings.CutPrefix(v, "sip:")
	if !ok {
		rest, ok = strings.CutPrefix(v, "sips:")
	}
	if !ok || rest == "" || strings.HasPrefix(rest, ":") {
		return fmt.Errorf("--%s %q: want sip:host[:port]", name, v)
	}
	return nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable>"
	}
	return u.Redacted()
}
