package control

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/sipedge/sipedge/store"
)

// Safe writes: who wrote (the audit log), Idempotency-Key and If-Match. All three reach
// the store as the write's options (store.Actor, store.Idempotent, store.IfMatch, kept
// in call.opts), so every check happens inside the write's own store transaction.

// Object routes (path templates). Their POST takes Idempotency-Key (a create on a list
// path, an update on an object path); the POST and DELETE of an object path take
// If-Match. TestSafeWriteRoutes checks that each is routed.
var (
	idempotentPaths = map[string]bool{
		zentrunk + "IPAccessControlList/":                               true,
		zentrunk + "IPAccessControlList/{ipacl_uuid}/":                  true,
		zentrunk + "IPAccessControlList/{ipacl_uuid}/Entry/":            true,
		zentrunk + "IPAccessControlList/{ipacl_uuid}/Entry/{entry_id}/": true,
		zentrunk + "Credential/":                                        true,
		zentrunk + "Credential/{credential_uuid}/":                      true,
		zentrunk + "Trunk/":                                             true,
		zentrunk + "Trunk/{trunk_id}/":                                  true,
	}
	conditionalPaths = map[string]bool{
		zentrunk + "IPAccessControlList/{ipacl_uuid}/":                  true,
		zentrunk + "IPAccessControlList/{ipacl_uuid}/Entry/{entry_id}/": true,
		zentrunk + "Credential/{credential_uuid}/":                      true,
		zentrunk + "Trunk/{trunk_id}/":                                  true,
	}
)

// maxIdempotencyKey is the longest Idempotency-Key accepted.
const maxIdempotencyKey = 255

// withSafeWrites makes rt, after authentication, name its caller for the audit log and,
// on the object routes above, honour Idempotency-Key (POST) and If-Match (POST, DELETE).
// A retried request answered from its idempotency record does not run rt's handler.
func (s *Server) withSafeWrites(rt route) route {
	if rt.auth == authNone {
		return rt
	}
	h := rt.h
	idempotent := rt.method == http.MethodPost && rt.auth == authAccount && idempotentPaths[rt.path]
	conditional := rt.method != http.MethodGet && rt.auth == authAccount && conditionalPaths[rt.path]
	rt.h = func(c *call) error {
		actor := c.account
		if rt.auth == authAdmin || actor == "" {
			actor = store.ActorAdmin
		}
		c.opts = append(c.opts, store.Actor(actor, c.apiID))
		if conditional {
			if vs := c.r.Header.Values("If-Match"); len(vs) > 0 {
				tags, err := parseIfMatch(vs)
				if err != nil {
					return err
				}
				c.opts = append(c.opts, store.IfMatch(tags...))
			}
		}
		if idempotent {
			if done, err := s.idempotency(c); done || err != nil {
				return err
			}
		}
		return h(c)
	}
	return rt
}

// idempotency handles Idempotency-Key: a key already answered is replayed (done), one
// used with another request is 422, a new one becomes an option of the write, which
// records its answer under it.
func (s *Server) idempotency(c *call) (done bool, err error) {
	vs := c.r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return false, nil
	}
	key := vs[0]
	if len(vs) > 1 || key == "" || len(key) > maxIdempotencyKey ||
		strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return false, badRequest("Idempotency-Key: give one value of 1 to %d printable ASCII characters", maxIdempotencyKey)
	}
	fp, err := c.fingerprint()
	if err != nil {
		return false, err
	}
	rec, err := s.st.IdempotentResponse(c.r.Context(), c.account, key, fp)
	if err != nil {
		return false, err
	}
	if rec != nil {
		return true, c.replay(rec)
	}
	c.opts = append(c.opts, store.Idempotent(store.Idempotency{
		Account: c.account, Key: key, Fingerprint: fp, Response: c.recordAnswer,
	}))
	return false, nil
}

// fingerprint identifies a request for Idempotency-Key: SHA-256 of the method, the path,
// the body's media type and the body. It reads the body (within the body limit) and
// puts it back for the handler.
func (c *call) fingerprint() (string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.w.ResponseWriter, c.r.Body, c.s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", err
		}
		return "", badRequest("reading request body: %v", err)
	}
	c.r.Body = io.NopCloser(bytes.NewReader(body))
	media := mediaJSON
	if mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type")); err == nil {
		media = mt
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n%s\n", c.r.Method, c.r.URL.Path, media)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parseIfMatch reads If-Match: "*" or a list of entity tags ("…" or W/"…"), kept as
// written (the store compares strongly, so weak tags match nothing). Anything else is
// 400.
func parseIfMatch(vs []string) ([]string, error) {
	var tags []string
	for _, v := range vs {
		rest := strings.TrimSpace(v)
		for rest != "" {
			switch {
			case rest[0] == ',' || rest[0] == ' ' || rest[0] == '\t':
				rest = rest[1:]
				continue
			case rest[0] == '*':
				tags, rest = append(tags, "*"), rest[1:]
			default:
				weak := strings.HasPrefix(rest, "W/")
				t := strings.TrimPrefix(rest, "W/")
				end := strings.IndexByte(t[min(1, len(t)):], '"')
				if t == "" || t[0] != '"' || end < 0 {
					return nil, badRequest("If-Match %q: give * or entity tags as sent in ETag (\"…\")", v)
				}
				tag := t[:end+2]
				if weak {
					tag = "W/" + tag
				}
				tags, rest = append(tags, tag), t[end+2:]
			}
			if rest = strings.TrimLeft(rest, " \t"); rest != "" && rest[0] != ',' {
				return nil, badRequest("If-Match %q: entity tags are separated by commas", v)
			}
		}
	}
	if len(tags) == 0 {
		return nil, badRequest("If-Match is empty: give * or an entity tag")
	}
	return tags, nil
}

// answer is the success response of a write: declared with [call.expect] before the
// store call, so an idempotent write can record it inside its transaction, and sent
// with [call.reply] after.
type answer struct {
	status      int
	message     string
	idField, id string
	warnings    []string // may be set up to the store's callback (inside an update's fn)
}

// expect declares the success answer of this request's write.
func (c *call) expect(status int, message, idField, id string) *answer {
	c.ans = &answer{status: status, message: message, idField: idField, id: id}
	return c.ans
}

func (a *answer) body(apiID string) map[string]any {
	b := map[string]any{"api_id": apiID, "message": a.message, a.idField: a.id}
	if len(a.warnings) > 0 {
		b["warnings"] = a.warnings
	}
	return b
}

// replayRecord is what an idempotent write records: enough to send its answer again.
type replayRecord struct {
	Status  int             `json:"status"`
	Version uint64          `json:"version"`
	APIID   string          `json:"api_id"`
	Body    json.RawMessage `json:"body"`
}

// recordAnswer is the store's idempotency callback: the answer declared with expect,
// for the write committing as v.
func (c *call) recordAnswer(v uint64) ([]byte, error) {
	if c.ans == nil {
		return nil, fmt.Errorf("control: %s %s: write without a declared answer", c.r.Method, c.r.URL.Path)
	}
	body, err := json.Marshal(c.ans.body(c.apiID))
	if err != nil {
		return nil, err
	}
	return json.Marshal(replayRecord{Status: c.ans.status, Version: v, APIID: c.apiID, Body: body})
}

// reply answers a successful write: status, X-Sipedge-Version and the declared body;
// with ?wait=all it first waits for the cluster (see [call.awaitPropagation]) and adds
// "propagation".
func (c *call) reply(a *answer, v uint64) error {
	c.version(v)
	body := a.body(c.apiID)
	if p := c.awaitPropagation(v); p != "" {
		body["propagation"] = p
	}
	c.writeJSON(a.status, body)
	return nil
}

// replay sends the recorded answer of an earlier request with the same Idempotency-Key:
// its status, body and X-Sipedge-Version, under its api_id (so X-Api-Id and the body
// agree), with Idempotent-Replayed: true. ?wait=all waits for the recorded version.
func (c *call) replay(raw []byte) error {
	var rec replayRecord
	var body map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("control: decode idempotency record: %w", err)
	}
	if err := json.Unmarshal(rec.Body, &body); err != nil {
		return fmt.Errorf("control: decode idempotency record body: %w", err)
	}
	c.s.log.Info().Str("api_id", c.apiID).Str("replayed_api_id", rec.APIID).Uint64("version", rec.Version).
		Msg("idempotent replay")
	c.apiID = rec.APIID
	h := c.w.Header()
	h.Set("X-Api-Id", rec.APIID)
	h.Set("Idempotent-Replayed", "true")
	c.version(rec.Version)
	if p := c.awaitPropagation(rec.Version); p != "" {
		body["propagation"] = p
	}
	c.writeJSON(rec.Status, body)
	return nil
}

// etag sets the ETag header of an object answer.
func (c *call) etag(tag string) { c.w.Header().Set("ETag", tag) }
