package main

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/control"
	"github.com/sipedge/sipedge/store"
)

// bootstrapCheckEvery is how often a Redis-mode node checks that the bootstrap account of
// its environment still exists.
const bootstrapCheckEvery = 2 * time.Second

// keepBootstrapAccount re-creates the bootstrap account from SIPEDGE_AUTH_ID /
// SIPEDGE_AUTH_TOKEN when Redis comes back empty (no persistence, wiped), so the operator
// can use the API again at once; the rest of the data set comes back with POST
// /v1/Admin/Restore/. It checks one key every bootstrapCheckEvery and creates the account
// only when the store holds no account at all (an account the admin deleted while others
// exist stays deleted). Several nodes racing create it once.
func keepBootstrapAccount(ctx context.Context, st *store.Store, cfg Config, log zerolog.Logger) error {
	t := time.NewTicker(bootstrapCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := st.Account(ctx, cfg.Secrets.AuthID); !errors.Is(err, store.ErrNotFound) {
			continue // present, or the store cannot say now
		}
		created, _, err := control.Bootstrap(ctx, st, cfg.Secrets.AuthID, cfg.Secrets.AuthToken)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Msg("bootstrap account missing and not re-created; retrying")
		case created:
			ev := log.Warn().Str("auth_id", cfg.Secrets.AuthID)
			if inc := st.Incident(); inc != nil {
				ev = ev.Uint64("snapshot_version", inc.SnapshotVersion)
			}
			ev.Msg("the store held no account: bootstrap account re-created from the environment; if Redis came back empty, restore the data set (POST /v1/Admin/Restore/?from_node=…)")
		}
	}
}
