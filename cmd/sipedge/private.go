package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/store"
)

// The data directory and the key files hold the data set and secrets: sipedge starts only
// when group and others can neither read nor write them.

// checkPrivate refuses a file (a key file, the database) that group or others may read
// or write: it holds the data set or a secret. A missing path is fine (created
// owner-only later).
func checkPrivate(what, path string) error {
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return refusePerm(what, path, perm)
	}
	return nil
}

// checkPrivateDir holds the data directory to the same rule, with one difference: a
// directory others may only list or enter (0755, what `mkdir -p` makes under the usual
// umask) exposes nothing while the files in it are owner-only, so it is tightened to
// owner-only with a warning instead of refusing the start. A directory others may write
// (they could plant a database or a key) is refused, as is one it cannot tighten. The
// files it holds are checked by checkPrivate.
func checkPrivateDir(path string, log zerolog.Logger) error {
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", path, err)
	}
	perm := fi.Mode().Perm()
	switch {
	case perm&0o077 == 0:
	case perm&0o022 != 0:
		return refusePerm("--data-dir", path, perm)
	default:
		if err := os.Chmod(path, perm&^0o077); err != nil {
			return fmt.Errorf("%w (tightening failed: %v)", refusePerm("--data-dir", path, perm), err)
		}
		log.Warn().Str("data_dir", path).Str("was", fmt.Sprintf("%04o", perm)).
			Msg("data directory was readable by group or others: tightened to owner-only")
	}
	for _, f := range []string{store.BoltFile, "nonce.key"} {
		if err := checkPrivate("file", filepath.Join(path, f)); err != nil {
			return err
		}
	}
	return nil
}

func refusePerm(what, path string, perm os.FileMode) error {
	return fmt.Errorf("%s %s is accessible to group or others (mode %04o): sipedge refuses to start; run %q",
		what, path, perm, "chmod go-rwx "+path)
}
