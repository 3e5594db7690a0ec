package control

import (
	"context"
	"net/http"

	"github.com/sipedge/sipedge/store"
)

// Restore after an empty store (DESIGN.md §5): POST /v1/Admin/Restore/?from_node=ID, sent
// to node ID, writes that node's last good data set back into the store in one transaction
// (new epoch, a version above anything served, one audit entry per account), replacing
// whatever the store holds now.

const adminRestore = "/v1/Admin/Restore/"

// Restorer is a node's last good data set and the store it can be written back into.
// *store.Store implements it.
type Restorer interface {
	// LastGood is the whole data set this node applied last; nil before the first.
	LastGood() *store.Backup
	// Restore replaces the store's data set by b.
	Restore(ctx context.Context, b *store.Backup, o store.RestoreOptions) (uint64, error)
}

// WithRestore enables POST /v1/Admin/Restore/ (which also needs [Config.AdminToken]) on
// the node named nodeID, over r. Without it the route answers 404.
func WithRestore(nodeID string, r Restorer) Option {
	return func(s *Server) { s.nodeID, s.restorer = nodeID, r }
}

func (s *Server) adminRestore(c *call) error {
	if s.restorer == nil {
		return notFound("this server keeps no data set to restore")
	}
	from := c.r.URL.Query().Get("from_node")
	if from == "" {
		return badRequest("from_node: name the node whose last good data set is written back (send the request to that node)")
	}
	if from != s.nodeID {
		return conflict("this is node %q, not %q: send the restore to the node that holds the data set", s.nodeID, from)
	}
	b := s.restorer.LastGood()
	if b == nil {
		return conflict("node %q has not applied any data set yet: nothing to restore", s.nodeID)
	}
	var floor uint64 // above every version a live node serves
	if s.cluster != nil {
		if nodes, err := s.cluster.Nodes(c.r.Context()); err == nil {
			for _, n := range nodes {
				floor = max(floor, n.AppliedVersion)
			}
		}
	}
	v, err := s.restorer.Restore(c.r.Context(), b, store.RestoreOptions{
		FromNode: from, MinVersion: floor, Actor: store.ActorAdmin, RequestID: c.apiID,
	})
	if err != nil {
		return err
	}
	s.log.Warn().Str("api_id", c.apiID).Str("from_node", from).Uint64("version", v).
		Uint64("from_version", b.Version).Msg("data set restored from this node's last good copy")
	c.version(v)
	c.writeJSON(http.StatusOK, map[string]any{
		"api_id":       c.apiID,
		"message":      "data set restored",
		"from_node":    from,
		"from_version": b.Version,
		"from_epoch":   b.Epoch,
		"version":      v,
		"counts":       b.Counts(),
	})
	return nil
}
