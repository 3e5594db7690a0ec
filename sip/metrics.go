package sip

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
)

// metrics holds the sipedge_sip_* collectors. A nil *metrics records nothing, so a server
// built without a Registerer pays nothing per request.
type metrics struct {
	invites  *prometheus.CounterVec // trunk, verdict, transport
	digest   *prometheus.CounterVec // result
	requests *prometheus.CounterVec // method, transport
	relayed  prometheus.Counter
	upstream *prometheus.CounterVec // class
	decision prometheus.Histogram
	relay    prometheus.Histogram
	dropped  *prometheus.CounterVec // reason
	bans     *prometheus.CounterVec // reason
	caps     *prometheus.CounterVec // kind
	proxy    *prometheus.CounterVec // result
	banStore prometheus.Counter
	// Resolved once: the read filter counts with them per datagram.
	rateLimited   prometheus.Counter
	droppedBanned prometheus.Counter
	trunkMu       sync.RWMutex
	trunkSeen     map[acl.TrunkID]string
}

// maxTrunkLabels caps the trunk label's cardinality: the first 100 distinct trunk ids
// keep their own series, later ones share "other".
const maxTrunkLabels = 100

// Reasons of sipedge_sip_dropped_total.
const (
	dropBadSource     = "bad_source"     // socket source unparsable
	dropGarbage       = "garbage"        // UDP datagram that is not SIP (read filter)
	dropBadRoute      = "bad_route"      // in-dialog request without a valid route token
	dropAck           = "ack"            // ACK that could not be routed
	dropOverload      = "overload"       // MaxPendingTransactions reached
	dropRespondFailed = "respond_failed" // writing a response failed
	dropStrayResponse = "stray_response" // response matching no transaction
	dropCanceled      = "canceled"       // upstream answer after the caller canceled
	dropDialRefused   = "dial_refused"   // sipgo tried to connect somewhere on its own
	dropDialogsFull   = "dialogs_full"   // dialog table at its cap (call relayed, not tracked)
	dropBanned        = "banned"         // request or connection from a banned source
	dropCancelSource  = "cancel_source"  // CANCEL for an INVITE another address sent
	dropReplayGuard   = "replay_guard"   // the cluster-wide replay guard failed (node cache decided)
	dropTCPConns      = "tcp_conns"      // TCP connection over the per-source or total bound
	dropUnparsable    = "unparsable"     // request sipgo could not parse: answered 400/416, not relayed
	dropLoopRecycled  = "loop_recycled"  // not a message: a UDP read loop restarted to forget its sources
)

// Results of sipedge_sip_proxy_protocol_total: what became of a TCP connection's PROXY
// protocol handling.
const (
	proxyAccepted  = "accepted"  // trusted peer, header honoured: its source stands for the connection
	proxyLocal     = "local"     // trusted peer, LOCAL/UNKNOWN header (health check): the peer is the source
	proxyAbsent    = "absent"    // trusted peer sent no header: the peer is the source
	proxyInvalid   = "invalid"   // trusted peer sent a broken header: closed
	proxyUntrusted = "untrusted" // a PROXY header from a peer not trusted: closed
	proxyOverload  = "overload"  // too many header reads pending: closed
)

func newMetrics(reg prometheus.Registerer, activeDialogs, bannedSources func() float64, transactions func() (live, finished int)) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		invites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_invites_total",
			Help: "Out-of-dialog INVITEs by trunk, verdict and transport.",
		}, []string{"trunk", "verdict", "transport"}),
		digest: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_digest_total",
			Help: "Proxy-Authorization checks by result.",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_requests_total",
			Help: "SIP requests received by method and transport.",
		}, []string{"method", "transport"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_relayed_calls_total",
			Help: "INVITEs relayed upstream that were answered 2xx.",
		}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_upstream_responses_total",
			Help: "Responses received from upstream by class (1xx..6xx, timeout, error).",
		}, []string{"class"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sipedge_sip_decision_seconds",
			Help:    "Time to judge one out-of-dialog INVITE.",
			Buckets: []float64{1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2},
		}),
		relay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sipedge_sip_relay_seconds",
			Help:    "Time from relaying an INVITE upstream to its final response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_dropped_total",
			Help: "Messages dropped or refused without relaying, by reason.",
		}, []string{"reason"}),
		bans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_bans_total",
			Help: "Sources banned by this node, by reason (digest_failures, unknown_trunk).",
		}, []string{"reason"}),
		caps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_cap_rejections_total",
			Help: "INVITEs refused by a trunk's call caps or its share of pending INVITEs, by kind (cps, concurrent, pending).",
		}, []string{"kind"}),
		proxy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_proxy_protocol_total",
			Help: "TCP connections by PROXY protocol result (accepted, local, absent, invalid, untrusted, overload).",
		}, []string{"result"}),
		banStore: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_ban_store_errors_total",
			Help: "Failed calls to the shared ban store (the node then counts and bans alone).",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_rate_limited_total",
			Help: "Requests (UDP) and connections or reads (TCP) dropped by the per-source rate limit.",
		}),
		trunkSeen: map[acl.TrunkID]string{},
	}
	m.droppedBanned = m.dropped.WithLabelValues(dropBanned)
	dialogs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_sip_active_dialogs",
		Help: "Calls answered 2xx through this edge and not yet ended by BYE (or DialogTimeout).",
	}, activeDialogs)
	banned := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_sip_banned_sources",
		Help: "Sources (IPv4 addresses, IPv6 /64s) banned on this node now.",
	}, bannedSources)
	txLive := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sipedge_sip_transactions",
		Help:        "Transactions in the relay's table: in progress (live), or finished and kept to absorb retransmissions (finished).",
		ConstLabels: prometheus.Labels{"state": "live"},
	}, func() float64 { l, _ := transactions(); return float64(l) })
	txFinished := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sipedge_sip_transactions",
		Help:        "Transactions in the relay's table: in progress (live), or finished and kept to absorb retransmissions (finished).",
		ConstLabels: prometheus.Labels{"state": "finished"},
	}, func() float64 { _, f := transactions(); return float64(f) })
	for _, c := range []prometheus.Collector{m.invites, m.digest, m.requests, m.relayed, m.upstream, m.decision,
		m.relay, m.dropped, dialogs, m.bans, m.caps, m.proxy, m.banStore, m.rateLimited, banned, txLive, txFinished} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) trunkLabel(id acl.TrunkID) string {
	if id == "" {
		return "none"
	}
	m.trunkMu.RLock()
	l, ok := m.trunkSeen[id]
	n := len(m.trunkSeen)
	m.trunkMu.RUnlock()
	if ok {
		return l
	}
	if n >= maxTrunkLabels {
		return "other"
	}
	m.trunkMu.Lock()
	defer m.trunkMu.Unlock()
	if l, ok := m.trunkSeen[id]; ok {
		return l
	}
	if len(m.trunkSeen) >= maxTrunkLabels {
		return "other"
	}
	m.trunkSeen[id] = string(id)
	return string(id)
}

func (m *metrics) invite(id acl.TrunkID, v acl.Verdict, tp string) {
	if m != nil {
		m.invites.WithLabelValues(m.trunkLabel(id), v.String(), tp).Inc()
	}
}

func (m *metrics) digestResult(r digestResult) {
	if m != nil && r != digestNone {
		m.digest.WithLabelValues(r.String()).Inc()
	}
}

func (m *metrics) request(method, tp string) {
	if m != nil {
		m.requests.WithLabelValues(methodLabel(method), tp).Inc()
	}
}

func (m *metrics) relayedCall() {
	if m != nil {
		m.relayed.Inc()
	}
}

func (m *metrics) upstreamResponse(class string) {
	if m != nil {
		m.upstream.WithLabelValues(class).Inc()
	}
}

func (m *metrics) decisionSeconds(s float64) {
	if m != nil {
		m.decision.Observe(s)
	}
}

func (m *metrics) relaySeconds(s float64) {
	if m != nil {
		m.relay.Observe(s)
	}
}

func (m *metrics) drop(reason string) {
	if m != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) ban(reason string) {
	if m != nil {
		m.bans.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) capRejected(kind string) {
	if m != nil {
		m.caps.WithLabelValues(kind).Inc()
	}
}

func (m *metrics) proxyResult(result string) {
	if m != nil {
		m.proxy.WithLabelValues(result).Inc()
	}
}

func (m *metrics) banStoreError() {
	if m != nil {
		m.banStore.Inc()
	}
}

func (m *metrics) rateLimit() {
	if m != nil {
		m.rateLimited.Inc()
	}
}

func (m *metrics) bannedDrop() {
	if m != nil {
		m.droppedBanned.Inc()
	}
}

// methodLabel bounds the method label: the method is attacker-controlled.
func methodLabel(m string) string {
	switch m {
	case "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "UPDATE", "INFO",
		"PRACK", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH":
		return m
	}
	return "other"
}

// statusClass is the class label of an upstream response.
func statusClass(code int) string {
	switch {
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	case code < 600:
		return "5xx"
	}
	return "6xx"
}
