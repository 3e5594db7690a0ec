package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/sip"
	"github.com/sipedge/sipedge/store"
)

// registerNodeMetrics adds the gauges that join several components: what the applied
// snapshot holds, how far it is behind the store, calls in flight and drain state.
// Everything is read at scrape time; nothing here touches the packet path.
func registerNodeMetrics(reg prometheus.Registerer, h *acl.Holder, st *store.Store, s *sip.Server, o *opsHandler) {
	stat := func(f func(acl.Stats) int) func() float64 {
		return func() float64 { return float64(f(h.Load().Stats())) }
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		gauge("sipedge_snapshot_prefixes", "Distinct enabled prefixes in the applied snapshot's matcher.", stat(func(s acl.Stats) int { return s.Prefixes })),
		gauge("sipedge_snapshot_trunks", "Trunks in the applied snapshot.", stat(func(s acl.Stats) int { return s.Trunks })),
		gauge("sipedge_snapshot_acls", "IP ACLs in the applied snapshot.", stat(func(s acl.Stats) int { return s.ACLs })),
		gauge("sipedge_snapshot_credentials", "Usable digest credentials in the applied snapshot.", stat(func(s acl.Stats) int { return s.Credentials })),
		gauge("sipedge_snapshot_loaded", "1 once a snapshot is applied (INVITEs are judged), else 0 (503).", func() float64 {
			if h.Load() == nil {
				return 0
			}
			return 1
		}),
		gauge("sipedge_snapshot_versions_behind", "Data-set versions the store holds that this node has not applied yet (propagation lag; -1 when the store is unreachable).", func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			v, err := st.Version(ctx)
			if err != nil {
				return -1
			}
			applied := h.Load().Version()
			if v < applied {
				return 0 // the store went back (restored dump): Watch reloads
			}
			return float64(v - applied)
		}),
		gauge("sipedge_sip_calls_in_progress", "INVITEs relayed upstream and awaiting their final answer.", func() float64 { return float64(s.ActiveCalls()) }),
		gauge("sipedge_draining", "1 while a SIGTERM drain is in progress.", func() float64 {
			if o.draining.Load() {
				return 1
			}
			return 0
		}),
	)
}
