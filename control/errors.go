package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// apiError is an error that already knows its HTTP status and its client-facing message.
// Handlers return it for request problems they detect themselves; everything else is
// mapped by [call.fail].
type apiError struct {
	status int
	msg    string
	header http.Header // extra response headers (WWW-Authenticate, …)
}

func (e *apiError) Error() string { return strconv.Itoa(e.status) + ": " + e.msg }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}
func notFound(format string, args ...any) error { return errorf(http.StatusNotFound, format, args...) }
func conflict(format string, args ...any) error { return errorf(http.StatusConflict, format, args...) }
func invalid(format string, args ...any) error {
	return errorf(http.StatusUnprocessableEntity, format, args...)
}

// errorBody is the one error shape of the API.
type errorBody struct {
	APIID string `json:"api_id"`
	Error string `json:"error"`
}

// fail renders err as {api_id, error} with the status it maps to. This is the only place
// that turns errors into responses:
//
//	*store.ReplayError              not an error: the recorded answer of the
//	                                idempotent request this one repeats
//	*apiError                       its own status
//	*http.MaxBytesError             413
//	*acl.ValidationError            422 (every bad value named)
//	store.InUseError                409 naming the trunks
//	store.ErrPreconditionFailed     412 (If-Match)
//	store.ErrIdempotencyMismatch    422 (Idempotency-Key reused)
//	store.ErrNotFound               404
//	*store.QuotaError               429 (an account quota; the admin can raise it)
//	store.ErrConflict               409
//	store.ErrInvalidRef, ErrInvalid 422
//	store.ErrUnavailable            503 with Retry-After
//	anything else                   500, logged once
func (c *call) fail(err error) {
	var (
		ae     *apiError
		tooBig *http.MaxBytesError
		inUse  *store.InUseError
		bad    *acl.ValidationError
		replay *store.ReplayError
		quota  *store.QuotaError
	)
	if errors.As(err, &replay) && c.w.code == 0 {
		if err = c.replay(replay.Response); err == nil {
			return
		}
	}
	status, msg := http.StatusInternalServerError, "internal error"
	switch {
	case errors.As(err, &ae):
		status, msg = ae.status, ae.msg
		for k, vs := range ae.header {
			c.w.Header()[k] = vs
		}
	case errors.As(err, &tooBig):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)
	case errors.As(err, &bad):
		status, msg = http.StatusUnprocessableEntity, bad.Error()
	case errors.Is(err, acl.ErrInvalidPrefix):
		status, msg = http.StatusUnprocessableEntity, err.Error()
	case errors.As(err, &inUse):
		status, msg = http.StatusConflict, fmt.Sprintf("%s %s is used by trunks %s: detach or delete them first",
			kindName(inUse.Kind), inUse.ID, strings.Join(inUse.Trunks, ", "))
	case errors.Is(err, store.ErrPreconditionFailed):
		status, msg = http.StatusPreconditionFailed,
			"precondition failed: the object changed since the ETag given in If-Match; GET it again"
	case errors.Is(err, store.ErrIdempotencyMismatch):
		status, msg = http.StatusUnprocessableEntity,
			"Idempotency-Key was already used with a different request (method, path or body) within its 24 h"
	case errors.As(err, &quota):
		status, msg = http.StatusTooManyRequests, fmt.Sprintf("quota exceeded: this account may have at most %d %s; ask the admin to raise the quota", quota.Limit, quota.What)
		c.s.metrics.quota("objects")
	case errors.Is(err, store.ErrNotFound):
		status, msg = http.StatusNotFound, "not found"
	case errors.Is(err, store.ErrConflict):
		status, msg = http.StatusConflict, "conflict: "+strings.TrimPrefix(err.Error(), "store: ")
	case errors.Is(err, store.ErrInvalidRef), errors.Is(err, store.ErrInvalid):
		status, msg = http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), "store: ")
	case errors.Is(err, store.ErrUnavailable):
		status, msg = http.StatusServiceUnavailable, "store unavailable, retry later"
		c.w.Header().Set("Retry-After", "1")
	case c.r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		status, msg = http.StatusServiceUnavailable, "request canceled"
	}
	if status == http.StatusInternalServerError {
		c.s.log.Error().Err(err).Str("api_id", c.apiID).Str("method", c.r.Method).
			Str("path", c.r.URL.Path).Msg("internal error")
	}
	if status == http.StatusUnauthorized {
		c.s.metrics.authFailure()
	}
	if c.w.code != 0 {
		return // a response is already on its way; the error was logged above if it matters
	}
	c.writeJSON(status, errorBody{APIID: c.apiID, Error: msg})
}

// kindName is the client-facing name of a store object kind.
func kindName(k string) string {
	switch k {
	case "ipacl":
		return "IP access control list"
	case "credential":
		return "credential"
	}
	return k
}

// writeJSON writes v as the JSON body with status.
func (c *call) writeJSON(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.s.log.Error().Err(err).Str("api_id", c.apiID).Msg("encode response")
		status, b = http.StatusInternalServerError, []byte(`{"api_id":"`+c.apiID+`","error":"internal error"}`)
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	c.w.WriteHeader(status)
	_, _ = c.w.Write(append(b, '\n'))
}

// version sets X-Sipedge-Version, the data-set version a write produced.
func (c *call) version(v uint64) {
	c.w.Header().Set("X-Sipedge-Version", strconv.FormatUint(v, 10))
}

// noContent answers a successful delete: 204 with X-Sipedge-Version (and, with
// ?wait=all, the propagation headers: a 204 has no body).
func (c *call) noContent(v uint64) error {
	c.version(v)
	c.awaitPropagation(v)
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
