package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The digest nonce key: SIPEDGE_NONCE_KEY wins; in embedded mode a generated key is kept
// in the data directory (owner-only) so a restart keeps issued nonces valid; a damaged
// key file is an error, not a silent new key; in Redis mode without a key each start gets
// a fresh random one (and a warning).
func TestNonceKey(t *testing.T) {
	var logged bytes.Buffer
	log := zerolog.New(&logged)
	dir := filepath.Join(t.TempDir(), "data")

	set := Config{DataDir: dir}
	set.Secrets.NonceKey = []byte("from-the-environment-0123456789abcdef")
	if k, err := nonceKey(set, log); err != nil || string(k) != string(set.Secrets.NonceKey) {
		t.Fatalf("configured key: %q, %v", k, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("a configured key still wrote a key file")
	}

	first, err := nonceKey(Config{DataDir: dir}, log)
	if err != nil || len(first) != 64 {
		t.Fatalf("generated key %q, %v", first, err)
	}
	path := filepath.Join(dir, "nonce.key")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if again, err := nonceKey(Config{DataDir: dir}, log); err != nil || string(again) != string(first) {
		t.Fatalf("after a restart the key changed: %q → %q (%v)", first, again, err)
	}

	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := nonceKey(Config{DataDir: dir}, log); err == nil || !strings.Contains(err.Error(), "shorter than 32") {
		t.Fatalf("damaged key file: %q, %v", k, err)
	}

	redis := Config{DataDir: dir, RedisURL: "redis://127.0.0.1:1"}
	a, errA := nonceKey(redis, log)
	b, errB := nonceKey(redis, log)
	if errA != nil || errB != nil || len(a) != 64 || string(a) == string(b) {
		t.Fatalf("Redis mode without a key: %q, %q (%v, %v)", a, b, errA, errB)
	}
	if !strings.Contains(logged.String(), "SIPEDGE_NONCE_KEY is not set") {
		t.Fatalf("no warning for a per-node key: %s", logged.String())
	}
}
