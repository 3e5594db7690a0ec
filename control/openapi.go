package control

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3 description of every route, kept in the repository next to
// the handlers and checked against them by TestOpenAPIMatchesRoutes.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves the document (no auth: it holds no data).
func (s *Server) openAPI(c *call) error {
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(openAPIDoc)
	return nil
}
