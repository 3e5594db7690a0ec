package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIPListen != "0.0.0.0:5060" || c.HTTPListen != "127.0.0.1:8080" || c.DataDir != "./sipedge-data" {
		t.Errorf("defaults: %+v", c)
	}
	if c.SIPRealm != c.SIPDomain {
		t.Errorf("realm defaults to the domain: %q vs %q", c.SIPRealm, c.SIPDomain)
	}
	if strings.Join(c.DigestAlgorithms, ",") != "MD5" { // one MD5 challenge by default (DESIGN §4.5)
		t.Errorf("digest order %v", c.DigestAlgorithms)
	}
}

func TestParseConfigEnvAndFlagPrecedence(t *testing.T) {
	e := env(map[string]string{
		"SIPEDGE_SIP_LISTEN":        "127.0.0.1:5070",
		"SIPEDGE_HTTP_LISTEN":       "127.0.0.1:9000",
		"SIPEDGE_NONCE_TTL":         "90s",
		"SIPEDGE_DIGEST_ALGORITHMS": "SHA-256, MD5",
		"SIPEDGE_AUTH_TOKEN":        "tok",
		"SIPEDGE_NONCE_KEY":         strings.Repeat("k", 32),
	})
	c, err := parseConfig([]string{"--http-listen", "127.0.0.1:9100"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIPListen != "127.0.0.1:5070" {
		t.Errorf("env not applied: %q", c.SIPListen)
	}
	if c.HTTPListen != "127.0.0.1:9100" {
		t.Errorf("flag must win over env: %q", c.HTTPListen)
	}
	if c.NonceTTL != 90*time.Second || strings.Join(c.DigestAlgorithms, ",") != "SHA-256,MD5" {
		t.Errorf("ttl %v algs %v", c.NonceTTL, c.DigestAlgorithms)
	}
	if c.Secrets.AuthToken != "tok" || len(c.Secrets.NonceKey) != 32 {
		t.Errorf("secrets not read from env")
	}
}

func TestParseConfigRejects(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string // substring of the error: names the setting
	}{
		{"bad listen", []string{"--sip-listen", "nonsense"}, nil, "--sip-listen"},
		{"bad http", []string{"--http-listen", "localhost"}, nil, "--http-listen"},
		{"bad upstream", []string{"--upstream", "http://x"}, nil, "--upstream"},
		{"redis scheme", []string{"--redis-url", "http://127.0.0.1:6379"}, nil, "--redis-url"},
		{"redis password in url", []string{"--redis-url", "redis://:pw@127.0.0.1:6379/0"}, nil, "SIPEDGE_REDIS_PASSWORD"},
		{"sentinel password in url", []string{"--redis-url", "redis+sentinel://:pw@127.0.0.1:26379/m/0"}, nil, "SIPEDGE_SENTINEL_PASSWORD"},
		{"sentinel without master", []string{"--redis-url", "redis+sentinel://127.0.0.1:26379"}, nil, "mastername"},
		{"cluster db", []string{"--redis-url", "redis+cluster://127.0.0.1:6379/3"}, nil, "--redis-url"},
		{"redis without host", []string{"--redis-url", "redis:///0"}, nil, "--redis-url"},
		{"bad algorithm", []string{"--digest-algorithms", "MD5,SHA-1"}, nil, "SHA-1"},
		{"duplicate algorithm", []string{"--digest-algorithms", "MD5,MD5"}, nil, "twice"},
		{"zero ttl", []string{"--nonce-ttl", "0s"}, nil, "--nonce-ttl"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"env bad duration", nil, map[string]string{"SIPEDGE_DRAIN_TIMEOUT": "soon"}, "SIPEDGE_DRAIN_TIMEOUT"},
		{"short nonce key", nil, map[string]string{"SIPEDGE_NONCE_KEY": "short"}, "SIPEDGE_NONCE_KEY"},
		{"realm quote", []string{"--sip-realm", `a"b`}, nil, "--sip-realm"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), ":pw@") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("redis-url"); got != "SIPEDGE_REDIS_URL" {
		t.Fatal(got)
	}
}

// TestParseConfigRedisForms: the Sentinel and Cluster forms of --redis-url are accepted,
// with both passwords from the environment only.
func TestParseConfigRedisForms(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:6379/0",
		"rediss://redis.example.org:6380/1",
		"redis+sentinel://127.0.0.1:26379,127.0.0.2:26379/mymaster/0",
		"redis+cluster://127.0.0.1:6379,127.0.0.2:6379",
	} {
		env := map[string]string{"SIPEDGE_REDIS_PASSWORD": "data-pw", "SIPEDGE_SENTINEL_PASSWORD": "sentinel-pw"}
		c, err := parseConfig([]string{"--redis-url", u}, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if c.Secrets.RedisPassword != "data-pw" || c.Secrets.SentinelPassword != "sentinel-pw" {
			t.Fatalf("%s: secrets %+v", u, c.Secrets)
		}
	}
}
