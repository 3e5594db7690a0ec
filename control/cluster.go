package control

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sipedge/sipedge/store"
)

// Cluster is the node registry the API reads: every live edge node with the data-set
// version it serves. *store.Store implements it (its heartbeat registry).
type Cluster interface {
	// Nodes lists the live nodes; an unreachable registry is store.ErrUnavailable.
	Nodes(ctx context.Context) ([]store.NodeStatus, error)
}

// WithCluster enables GET /v1/Cluster/, GET /v1/Cluster/Version/{version}/ and ?wait=all
// on writes, over the node registry c. Without it those endpoints answer 404 and
// ?wait=all is 400.
func WithCluster(c Cluster) Option {
	return func(s *Server) { s.cluster = c }
}

// Bounds of ?wait=all (see README.md, "Propagation").
const (
	DefaultWaitTimeout = 5 * time.Second  // when wait_timeout is not given
	MaxWaitTimeout     = 30 * time.Second // longest wait_timeout accepted

	// The registry is polled from waitPollMin, growing by half up to waitPollMax: a node
	// that applies a version reports it within a round trip, so most waits end in the
	// first few milliseconds, and a long wait costs at most 50 polls a second.
	waitPollMin = time.Millisecond
	waitPollMax = 20 * time.Millisecond
)

const clusterPath = "/v1/Cluster/"

// waitSpec is a parsed ?wait=all[&wait_timeout=…].
type waitSpec struct {
	timeout time.Duration
}

// withWait makes rt, when it is a write of an account's objects, parse ?wait= and
// ?wait_timeout= before its handler runs (so a bad value is a 400 that changes nothing).
// The waiting itself happens where writes are answered ([call.awaitPropagation]).
func (s *Server) withWait(rt route) route {
	if rt.auth != authAccount || rt.method == http.MethodGet || rt.method == http.MethodHead {
		return rt
	}
	h := rt.h
	rt.h = func(c *call) error {
		w, err := s.parseWait(c.r)
		if err != nil {
			return err
		}
		c.wait = w
		return h(c)
	}
	return rt
}

// parseWait reads ?wait=all and ?wait_timeout= (a Go duration such as 2s or 500ms, or
// whole seconds), nil when wait is absent.
func (s *Server) parseWait(r *http.Request) (*waitSpec, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("malformed query string: %v", err)
	}
	vs, waiting := q["wait"]
	tvs, timed := q["wait_timeout"]
	if !waiting {
		if timed {
			return nil, badRequest("wait_timeout needs wait=all")
		}
		return nil, nil
	}
	if len(vs) != 1 || vs[0] != "all" {
		return nil, badRequest("wait %q: the only value is \"all\"", strings.Join(vs, ","))
	}
	if s.cluster == nil {
		return nil, badRequest("wait=all: this server has no cluster registry")
	}
	w := &waitSpec{timeout: DefaultWaitTimeout}
	if timed {
		d, ok := waitTimeout(tvs)
		if !ok {
			return nil, badRequest("wait_timeout %q: must be a duration from 1ms to %s (e.g. 2s, 500ms)",
				strings.Join(tvs, ","), MaxWaitTimeout)
		}
		w.timeout = d
	}
	return w, nil
}

func waitTimeout(vs []string) (time.Duration, bool) {
	if len(vs) != 1 || vs[0] == "" || len(vs[0]) > 16 {
		return 0, false
	}
	d, err := time.ParseDuration(vs[0])
	if err != nil {
		n, ok := queryInt(vs)
		if !ok {
			return 0, false
		}
		d = time.Duration(n) * time.Second
	}
	return d, d >= time.Millisecond && d <= MaxWaitTimeout
}

// Values of "propagation" in a write answered with ?wait=all.
const (
	propagationComplete = "complete" // every live node serves the write's version
	propagationTimeout  = "timeout"  // wait_timeout ran out first; the write is committed
)

// awaitPropagation is the ?wait=all step of answering a committed write of version v:
// it waits until every live node serves v (or the wait_timeout runs out, or the client
// goes away), sets X-Sipedge-Served-By: N/M and X-Sipedge-Propagation, and returns the
// "propagation" value for the body. Without ?wait=all it does nothing and returns "".
func (c *call) awaitPropagation(v uint64) string {
	if c.wait == nil {
		return ""
	}
	start := time.Now()
	served, live, ok := c.s.awaitVersion(c.r.Context(), v, c.wait.timeout)
	p := propagationComplete
	if !ok {
		p = propagationTimeout
	}
	h := c.w.Header()
	h.Set("X-Sipedge-Served-By", strconv.Itoa(served)+"/"+strconv.Itoa(live))
	h.Set("X-Sipedge-Propagation", p)
	c.s.log.Debug().Str("api_id", c.apiID).Uint64("version", v).Int("served_by", served).Int("live_nodes", live).
		Str("propagation", p).Dur("waited", time.Since(start)).Msg("wait=all")
	return p
}

// awaitVersion polls the registry until every live node (at least one) serves v of the
// current data set (same epoch, version ≥ v), or timeout. It returns the last counts it
// saw and whether they were complete. A registry or store error counts as not yet: the
// write is committed either way.
func (s *Server) awaitVersion(ctx context.Context, v uint64, timeout time.Duration) (served, live int, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pause := waitPollMin
	t := time.NewTimer(pause)
	defer t.Stop()
	var head *store.Head // the epoch v belongs to, read once
	for {
		if head == nil {
			if h, err := s.st.Head(ctx); err == nil {
				head = &h
			}
		}
		if nodes, err := s.cluster.Nodes(ctx); err == nil && head != nil {
			served, live = len(nodes)-len(behind(nodes, *head, v)), len(nodes)
			if live > 0 && served == live {
				return served, live, true
			}
		} else if err == nil {
			live = len(nodes)
		}
		t.Reset(pause)
		select {
		case <-ctx.Done():
			return served, live, false
		case <-t.C:
		}
		pause = min(pause*3/2, waitPollMax)
	}
}

// behind returns the nodes that do not serve version v of the data set whose head is h:
// they applied an older version, or a snapshot of another epoch (a data set that was
// wiped and reseeded restarts its versions, so a number alone proves nothing).
func behind(nodes []store.NodeStatus, h store.Head, v uint64) []store.NodeStatus {
	var out []store.NodeStatus
	for _, n := range nodes {
		if !n.Serves(h, v) {
			out = append(out, n)
		}
	}
	return out
}

// authAnyAccount accepts HTTP basic auth of any account (the cluster endpoints show no
// account's data), or the admin bearer token when one is configured. Failures are 401
// as in [Server.authAccount].
func (s *Server) authAnyAccount(c *call) error {
	scheme, _, _ := strings.Cut(c.r.Header.Get("Authorization"), " ")
	if s.cfg.AdminToken != "" && strings.EqualFold(scheme, "Bearer") {
		return s.authAdmin(c)
	}
	user, err := s.basicAccount(c)
	if err != nil {
		return err
	}
	c.account = user
	return nil
}

// nodeObject is one live node as the API shows it. Timestamps are null before the node
// applied its first snapshot (applied_at) or when it did not say (started_at).
type nodeObject struct {
	NodeID         string  `json:"node_id"`
	AppliedVersion uint64  `json:"applied_version"`
	Epoch          *string `json:"epoch"`
	AppliedAt      *string `json:"applied_at"`
	Address        string  `json:"address"`
	StartedAt      *string `json:"started_at"`
}

func toNodeObjects(nodes []store.NodeStatus) []nodeObject {
	out := make([]nodeObject, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nodeObject{NodeID: n.NodeID, AppliedVersion: n.AppliedVersion, Epoch: nullable(n.Epoch),
			AppliedAt: optStamp(n.AppliedAt), Address: n.Address, StartedAt: optStamp(n.StartedAt)})
	}
	return out
}

func optStamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := stamp(t)
	return &s
}

type clusterBody struct {
	APIID       string       `json:"api_id"`
	DataVersion uint64       `json:"data_version"`
	DataEpoch   *string      `json:"data_epoch"`
	LiveNodes   int          `json:"live_nodes"`
	Nodes       []nodeObject `json:"nodes"`
}

type versionBody struct {
	APIID       string       `json:"api_id"`
	Version     uint64       `json:"version"`
	DataVersion uint64       `json:"data_version"`
	DataEpoch   *string      `json:"data_epoch"`
	ServedBy    int          `json:"served_by"`
	LiveNodes   int          `json:"live_nodes"`
	Message     string       `json:"message"`
	NodesBehind []nodeObject `json:"nodes_behind"`
}

// clusterState reads the live nodes and the current data-set version and epoch.
func (s *Server) clusterState(c *call) ([]store.NodeStatus, store.Head, error) {
	if s.cluster == nil {
		return nil, store.Head{}, notFound("no cluster registry on this server")
	}
	nodes, err := s.cluster.Nodes(c.r.Context())
	if err != nil {
		return nil, store.Head{}, err
	}
	h, err := s.st.Head(c.r.Context())
	if err != nil {
		return nil, store.Head{}, err
	}
	return nodes, h, nil
}

// clusterNodes lists the live nodes and the version each serves.
func (s *Server) clusterNodes(c *call) error {
	nodes, h, err := s.clusterState(c)
	if err != nil {
		return err
	}
	c.writeJSON(http.StatusOK, clusterBody{APIID: c.apiID, DataVersion: h.Version, DataEpoch: nullable(h.Epoch),
		LiveNodes: len(nodes), Nodes: toNodeObjects(nodes)})
	return nil
}

// clusterVersion answers how many live nodes serve data-set version {version} (the
// X-Sipedge-Version of a write) or a later one of the current epoch.
func (s *Server) clusterVersion(c *call) error {
	if s.cluster == nil {
		return notFound("no cluster registry on this server")
	}
	raw := c.r.PathValue("version")
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return badRequest("version %q: must be a non-negative integer (a data-set version, as in X-Sipedge-Version)", raw)
	}
	nodes, h, err := s.clusterState(c)
	if err != nil {
		return err
	}
	late := behind(nodes, h, v)
	served := len(nodes) - len(late)
	c.writeJSON(http.StatusOK, versionBody{
		APIID: c.apiID, Version: v, DataVersion: h.Version, DataEpoch: nullable(h.Epoch), ServedBy: served, LiveNodes: len(nodes),
		Message:     fmt.Sprintf("served by %d of %d live nodes", served, len(nodes)),
		NodesBehind: toNodeObjects(late),
	})
	return nil
}
