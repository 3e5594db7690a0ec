package store

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload results, the values of sipedge_store_reloads_total{result}.
const (
	resultFull        = "full"        // full load + compile applied
	resultIncremental = "incremental" // one ACL swapped into the previous snapshot
	resultUnchanged   = "unchanged"   // full load found the applied version
	resultKeptEmpty   = "kept_empty"  // empty data set refused: the old snapshot stays
	resultError       = "error"       // load or compile failed: the old snapshot stays
)

// metrics is nil-safe: a Store opened without WithMetrics records nothing.
type metrics struct {
	reloads *prometheus.CounterVec
	version prometheus.Gauge
	compile prometheus.Histogram
	up      prometheus.Gauge
	evicted prometheus.Counter // bans evicted by the MaxBans bound
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_store_reloads_total",
			Help: "Snapshot reloads by Watch, by result (full, incremental, unchanged, kept_empty, error).",
		}, []string{"result"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_snapshot_version",
			Help: "Data-set version of the snapshot Watch applied last.",
		}),
		compile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sipedge_snapshot_compile_seconds",
			Help:    "Time to build a snapshot (full compile or incremental update).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_store_up",
			Help: "1 while the last store access by Watch succeeded, else 0.",
		}),
	}
	m.evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipedge_store_bans_evicted_total",
		Help: "Bans evicted from the shared ban list because it held MaxBans (the bans ending first go).",
	})
	for _, r := range []string{resultFull, resultIncremental, resultUnchanged, resultKeptEmpty, resultError} {
		m.reloads.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.reloads, m.version, m.compile, m.up, m.evicted} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("store: register metrics (one store per registry): %w", err)
		}
	}
	return m, nil
}

func (m *metrics) reload(result string) {
	if m != nil {
		m.reloads.WithLabelValues(result).Inc()
	}
}

func (m *metrics) applied(v uint64) {
	if m != nil {
		m.version.Set(float64(v))
	}
}

func (m *metrics) compiled(seconds float64) {
	if m != nil {
		m.compile.Observe(seconds)
	}
}

func (m *metrics) bansEvicted(n int) {
	if m != nil && n > 0 {
		m.evicted.Add(float64(n))
	}
}

func (m *metrics) setUp(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}

// registerProbeMetrics registers sipedge_store_incident and the probe's metrics: sipedge_store_subscription_deaf_total
// (deaf subscriptions found and replaced) and sipedge_store_subscription_echo_age_seconds
// (time since this node last heard its own probe; -1 before the first echo or without a
// subscription to probe).
func registerProbeMetrics(reg prometheus.Registerer, status func() SubscriptionStatus, incident func() bool) error {
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sipedge_store_incident",
			Help: "1 while the store came back empty and this node keeps serving its last good data set (restore it), else 0.",
		}, func() float64 {
			if incident() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sipedge_store_subscription_deaf_total",
			Help: "Change-notice subscriptions found deaf by the publish-and-echo probe (each replaced, followed by a full reload).",
		}, func() float64 { return float64(status().Deaf) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sipedge_store_subscription_echo_age_seconds",
			Help: "Seconds since this node last received its own subscription probe (-1: none yet, or nothing to probe).",
		}, func() float64 {
			st := status()
			if !st.Probing || st.LastEcho.IsZero() {
				return -1
			}
			return time.Since(st.LastEcho).Seconds()
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("store: register metrics (one store per registry): %w", err)
		}
	}
	return nil
}
