package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis deployment forms --redis-url names (see [OpenRedis]).
const (
	RedisSingle   = "single"   // redis://host:6379/0, rediss://…
	RedisSentinel = "sentinel" // redis+sentinel://s1:26379,s2:26379/mymaster/0
	RedisCluster  = "cluster"  // redis+cluster://n1:6379,n2:6379
)

// LegacyRedisPrefix is the key prefix of data sets written before every key shared one
// hash tag. [OpenRedis] keeps using it when it finds such a data set (see README.md,
// "Key schema").
const LegacyRedisPrefix = "sipedge:"

// RedisTarget is a parsed --redis-url: which form, and the go-redis options of it. Exactly
// one of Single, Failover and Cluster is set.
type RedisTarget struct {
	Mode     string // RedisSingle, RedisSentinel or RedisCluster
	Single   *redis.Options
	Failover *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
}

// ParseRedisURL reads the three forms of --redis-url:
//
//	redis://host:6379/0, rediss://host:6380/0     one server (query parameters as redis.ParseURL)
//	redis+sentinel://s1:26379[,s2:26379…]/mymaster[/db]   Sentinel: master name, then db (default 0)
//	redis+cluster://n1:6379[,n2:6379…]            Redis Cluster (seed nodes; db 0 only)
//
// rediss+sentinel:// and rediss+cluster:// use TLS. A password in the URL is refused
// (passwords come from the environment: see [OpenRedis]); a user name is kept. Errors wrap
// [ErrInvalid].
func ParseRedisURL(raw string) (*RedisTarget, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: redis url: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, bad("want redis://, rediss://, redis+sentinel:// or redis+cluster://")
	}
	switch scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, bad("%v", err)
		}
		if o.Password != "" {
			return nil, bad("must not carry a password")
		}
		return &RedisTarget{Mode: RedisSingle, Single: o}, nil
	case "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
	default:
		return nil, bad("unknown scheme %q", scheme)
	}
	if strings.ContainsAny(rest, "?#") {
		return nil, bad("the %s form takes no query parameters", scheme)
	}
	var user string
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		info := rest[:at]
		rest = rest[at+1:]
		if strings.Contains(info, ":") {
			return nil, bad("must not carry a password")
		}
		u, err := url.PathUnescape(info)
		if err != nil {
			return nil, bad("user name: %v", err)
		}
		user = u
	}
	hosts, path, _ := strings.Cut(rest, "/")
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, bad("address %q: want host:port", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, bad("address %q: bad port", h)
		}
		addrs = append(addrs, h)
	}
	var tlsCfg *tls.Config
	if strings.HasPrefix(scheme, "rediss") {
		host, _, _ := net.SplitHostPort(addrs[0])
		tlsCfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	if strings.HasSuffix(scheme, "+cluster") {
		if len(segs) > 1 || (len(segs) == 1 && segs[0] != "0") {
			return nil, bad("Redis Cluster has only database 0: want redis+cluster://host1:6379,host2:6379")
		}
		return &RedisTarget{Mode: RedisCluster, Cluster: &redis.ClusterOptions{
			Addrs: addrs, Username: user, TLSConfig: tlsCfg,
		}}, nil
	}
	if len(segs) == 0 || len(segs) > 2 {
		return nil, bad("want redis+sentinel://host:26379[,host2:26379]/mastername[/db]")
	}
	db := 0
	if len(segs) == 2 {
		n, err := strconv.Atoi(segs[1])
		if err != nil || n < 0 {
			return nil, bad("database %q: want a number", segs[1])
		}
		db = n
	}
	return &RedisTarget{Mode: RedisSentinel, Failover: &redis.FailoverOptions{
		MasterName: segs[0], SentinelAddrs: addrs, Username: user, DB: db, TLSConfig: tlsCfg,
	}}, nil
}

// Describe is the target for logs and banners: the form, addresses, master and db; never
// a password.
func (t *RedisTarget) Describe() string {
	switch t.Mode {
	case RedisSentinel:
		return fmt.Sprintf("sentinel %s master %s db %d", strings.Join(t.Failover.SentinelAddrs, ","), t.Failover.MasterName, t.Failover.DB)
	case RedisCluster:
		return "cluster " + strings.Join(t.Cluster.Addrs, ",")
	default:
		return fmt.Sprintf("%s db %d", t.Single.Addr, t.Single.DB)
	}
}

// client builds the go-redis client of t with the passwords (each only when not empty)
// and deadlines reaching the socket (ContextTimeoutEnabled).
func (t *RedisTarget) client(password, sentinelPassword string) redis.UniversalClient {
	switch t.Mode {
	case RedisSentinel:
		o := *t.Failover
		o.ContextTimeoutEnabled = true
		if password != "" {
			o.Password = password
		}
		if sentinelPassword != "" {
			o.SentinelPassword = sentinelPassword
		}
		return redis.NewFailoverClient(&o)
	case RedisCluster:
		o := *t.Cluster
		o.ContextTimeoutEnabled = true
		if password != "" {
			o.Password = password
		}
		return redis.NewClusterClient(&o)
	default:
		o := *t.Single
		o.ContextTimeoutEnabled = true
		if password != "" {
			o.Password = password
		}
		return redis.NewClient(&o)
	}
}

// OpenRedis connects to the Redis named by url (--redis-url; the forms of
// [ParseRedisURL]: one server, Sentinel or Cluster) and returns a Store whose data set
// lives under the key prefix (see README.md, "Key schema"). password, when not empty, is
// the data nodes' password, and [WithSentinelPassword] the sentinels' (both come from the
// environment and are never logged). Any number of Stores, in any number of processes,
// can share one data set.
//
// Every key shares one hash tag ({sipedge} by default), so each write stays one
// MULTI/EXEC on one Cluster slot. When no prefix is given ([WithPrefix]) and Redis holds a
// data set written before the hash tag (keys under [LegacyRedisPrefix]) and none under the
// tagged prefix, the legacy prefix is kept (not in Cluster mode), and a warning says how
// to migrate.
//
// Each operation is bounded by [WithTimeout] (default 5 s); a Redis that cannot be
// reached or does not answer in time yields [ErrUnavailable], here and later. Close the
// store to close its client.
func OpenRedis(ctx context.Context, url, password string, opts ...Option) (*Store, error) {
	t, err := ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	return openRedis(ctx, t.client(password, o.sentinelPassword), t.Mode, t.Describe(), o)
}

// OpenRedisOptions is [OpenRedis] with the options of one server instead of a URL. ro is
// copied (with ContextTimeoutEnabled set, so deadlines reach the socket).
func OpenRedisOptions(ctx context.Context, ro *redis.Options, opts ...Option) (*Store, error) {
	if ro == nil {
		return nil, errors.New("store: OpenRedisOptions: nil options")
	}
	t := &RedisTarget{Mode: RedisSingle, Single: ro}
	return openRedis(ctx, t.client("", ""), t.Mode, t.Describe(), buildOptions(opts))
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func openRedis(ctx context.Context, c redis.UniversalClient, mode, desc string, o options) (*Store, error) {
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	reachable := true
	if err := c.Ping(pctx).Err(); err != nil {
		err = classifyRedis(ctx, fmt.Errorf("ping %s: %w", desc, err))
		if !o.lazy || !errors.Is(err, ErrUnavailable) {
			_ = c.Close()
			return nil, err
		}
		reachable = false
		o.log.Warn().Err(err).Msg("redis unreachable at start; serving 503 until the first load")
	}
	if !o.prefixSet {
		if mode == RedisCluster {
			o.prefix = DefaultRedisPrefix
		} else if reachable {
			o.prefix = chooseRedisPrefix(pctx, c, o)
		} else {
			o.log.Warn().Str("prefix", o.prefix).
				Msg("redis unreachable at start: cannot look for a data set under the legacy prefix " + LegacyRedisPrefix + "; using the hash-tagged prefix")
		}
	} else if mode == RedisCluster && !hashTagged(o.prefix) {
		_ = c.Close()
		return nil, fmt.Errorf("%w: redis key prefix %q: in Cluster mode it needs a hash tag, e.g. \"{sipedge}:\"", ErrInvalid, o.prefix)
	}
	b := newRedisBackend(c, o)
	s, err := newStore(b, o)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	s.log.Info().Str("redis", desc).Str("mode", mode).Str("prefix", o.prefix).Msg("redis store opened")
	return s, nil
}

// hashTagged reports whether every key under prefix hashes to one Cluster slot: the
// prefix holds a non-empty {…} (the first such pair decides the slot).
func hashTagged(prefix string) bool {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(prefix[i+1:], '}')
	return j > 0
}

// chooseRedisPrefix keeps the legacy (untagged) prefix when Redis holds a data set or a
// live node registry under it and nothing under the tagged default; otherwise the tagged
// default. The node registry counts because running older nodes rewrite it every second,
// so even a wiped legacy data set is recognised while its nodes run.
func chooseRedisPrefix(ctx context.Context, c redis.UniversalClient, o options) string {
	tagged := o.prefix
	n, err := c.Exists(ctx, tagged+"version", tagged+"nodes", tagged+"accounts").Result()
	if err != nil || n > 0 {
		return tagged
	}
	legacy, err := c.Exists(ctx, LegacyRedisPrefix+"version", LegacyRedisPrefix+"nodes", LegacyRedisPrefix+"accounts").Result()
	if err != nil || legacy == 0 {
		return tagged
	}
	o.log.Warn().Str("prefix", LegacyRedisPrefix).Str("tagged_prefix", tagged).
		Msg("redis holds a data set under the legacy key prefix: keeping it (fine for one server or Sentinel); see the README to move it under the hash tag before using Redis Cluster")
	return LegacyRedisPrefix
}
