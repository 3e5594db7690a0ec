package control

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus collectors. A nil *metrics records nothing.
type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	authFailures prometheus.Counter
	quotaRefused *prometheus.CounterVec
}

// newMetrics registers the collectors with reg, reusing ones already registered (a second
// [New] on the same registry shares them instead of panicking).
func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_api_requests_total",
			Help: "Control API requests by route (the documented path template), method and status code.",
		}, []string{"route", "method", "code"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sipedge_api_request_duration_seconds",
			Help:    "Control API request duration by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"})),
		authFailures: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_api_auth_failures_total",
			Help: "Control API requests rejected with 401 (missing or wrong credentials, or another account's path).",
		})),
		quotaRefused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_api_quota_refused_total",
			Help: "Control API writes refused with 429 by a per-account quota, by quota (writes, objects).",
		}, []string{"quota"})),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a name clash with a different metric is a programming error
	}
	return c
}

// methodLabel bounds the method label to the methods HTTP defines.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

func (m *metrics) observe(route, method string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, methodLabel(method), strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) quota(kind string) {
	if m != nil {
		m.quotaRefused.WithLabelValues(kind).Inc()
	}
}

func (m *metrics) authFailure() {
	if m != nil {
		m.authFailures.Inc()
	}
}
