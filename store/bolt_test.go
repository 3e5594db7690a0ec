package store_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// openBoltDir opens the embedded store in dir and closes it when the test ends.
func openBoltDir(t *testing.T, dir string, opts ...store.Option) *store.Store {
	t.Helper()
	s, err := store.OpenBolt(dir, opts...)
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBoltConformance(t *testing.T) {
	dirs := map[*store.Store]string{}
	storetest.Run(t,
		func(t *testing.T, opts ...store.Option) *store.Store {
			dir := filepath.Join(t.TempDir(), "data")
			s := openBoltDir(t, dir, append([]store.Option{store.WithResync(time.Second)}, opts...)...)
			dirs[s] = dir
			return s
		},
		func(t *testing.T, old *store.Store) *store.Store {
			if err := old.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s := openBoltDir(t, dirs[old], store.WithResync(time.Second))
			dirs[s] = dirs[old]
			return s
		})
}

func TestOpenBoltCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	openBoltDir(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Fatalf("data dir mode %o, want 700", perm)
	}
	if _, err := os.Stat(filepath.Join(dir, store.BoltFile)); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestOpenBoltLocked(t *testing.T) {
	dir := t.TempDir()
	openBoltDir(t, dir)
	start := time.Now()
	s, err := store.OpenBolt(dir, store.WithTimeout(200*time.Millisecond))
	if err == nil {
		_ = s.Close()
		t.Fatal("second OpenBolt of a held directory succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("error does not say the file is locked: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("OpenBolt waited %v for the lock", d)
	}
}

func TestOpenBoltNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := store.OpenBolt(f); err == nil {
		_ = s.Close()
		t.Fatal("OpenBolt on a regular file succeeded")
	}
}
