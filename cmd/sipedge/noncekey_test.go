package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/sipedge/sipedge/store"
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

// The data directory and the nonce key files hold the data set and a secret: group- or
// world-accessible key files and a data directory others may write refuse the start with a
// message naming the path and the fix; a data directory others may only list (`mkdir -p`
// under umask 022) is tightened to owner-only.
func TestPrivatePathsRefused(t *testing.T) {
	log := zerolog.Nop()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := nonceKey(Config{DataDir: dir}, log); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "nonce.key")
	for _, tc := range []struct {
		name string
		path string
		mode os.FileMode
	}{
		{"world-readable key file", key, 0o644},
		{"group-writable key file", key, 0o620},
		{"world-writable data dir", dir, 0o703},
		{"group-writable data dir", dir, 0o770},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chmod(tc.path, tc.mode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(key, 0o600)
			defer os.Chmod(dir, 0o700)
			_, err := nonceKey(Config{DataDir: dir}, log)
			if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "chmod go-rwx") {
				t.Fatalf("mode %04o on %s: err %v, want a refusal naming the path and the fix", tc.mode, tc.path, err)
			}
		})
	}
	if _, err := nonceKey(Config{DataDir: dir}, log); err != nil {
		t.Fatalf("private again: %v", err)
	}
	for _, mode := range []os.FileMode{0o755, 0o750, 0o711} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := nonceKey(Config{DataDir: dir}, log); err != nil {
			t.Fatalf("data dir %04o: %v, want it tightened", mode, err)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != mode&0o700 {
			t.Fatalf("data dir %04o: now %v (%v), want %04o", mode, fi.Mode().Perm(), err, mode&0o700)
		}
	}
	// A database file others can read is refused even in a private directory.
	db := filepath.Join(dir, store.BoltFile)
	if err := os.WriteFile(db, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(dir, log); err == nil || !strings.Contains(err.Error(), db) {
		t.Fatalf("world-readable %s: %v", db, err)
	}
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}

	// SIPEDGE_NONCE_KEY_FILE: the same rule.
	f := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f, []byte(strings.Repeat("k", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "SIPEDGE_NONCE_KEY_FILE" {
			return f
		}
		return ""
	}
	if _, err := readSecrets(getenv); err == nil || !strings.Contains(err.Error(), f) {
		t.Fatalf("world-readable SIPEDGE_NONCE_KEY_FILE: %v", err)
	}
	if err := os.Chmod(f, 0o400); err != nil {
		t.Fatal(err)
	}
	if s, err := readSecrets(getenv); err != nil || len(s.NonceKey) != 40 {
		t.Fatalf("owner-only key file: %v", err)
	}
}
