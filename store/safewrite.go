package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sipedge/sipedge/acl"
)

// What a write's options say (see [API], [WriteOption]). They are read once per write, at
// its start; none of them is ever stored except as the write's audit entry and
// idempotency record.
type writeMeta struct {
	actor, requestID string
	idem             *Idempotency
	ifMatch          []string // nil: no precondition
	entry            string   // the entry an UpdateACL is about
}

// WriteOption shapes one write of [API]: who makes it ([Actor]), what it is about
// ([ForEntry]), its precondition ([IfMatch]) and its idempotency ([Idempotent]). Options
// apply in order; a later one of the same kind wins.
type WriteOption func(*writeMeta)

func metaOf(opts []WriteOption) writeMeta {
	var m writeMeta
	for _, o := range opts {
		if o != nil {
			o(&m)
		}
	}
	return m
}

// Actors recorded in the audit log besides an account's auth_id.
const (
	ActorAdmin  = "admin"  // the admin API
	ActorSystem = "system" // a write that names no actor (bootstrap, tools)
)

// Actor names who makes the write (an auth_id, or [ActorAdmin]) and the request it
// belongs to (the API's api_id), for the audit log.
func Actor(actor, requestID string) WriteOption {
	return func(m *writeMeta) { m.actor, m.requestID = actor, requestID }
}

// ForEntry says that the UpdateACL is a change of one entry of the ACL, entryID: its
// audit entry is of kind "entry" (create, update or delete, with the entry's before and
// after), and [IfMatch] is checked against the entry's ETag instead of the ACL's. Other
// writes ignore it.
func ForEntry(entryID string) WriteOption {
	return func(m *writeMeta) { m.entry = entryID }
}

// IfMatch makes an UpdateX or DeleteX conditional: inside the write
// transaction, the object's current [ETag] must equal one of tags, or the write fails
// with [ErrPreconditionFailed] and changes nothing. "*" matches any existing object;
// weak tags (W/"…") never match (If-Match compares strongly). A missing object is
// ErrNotFound as without a precondition. Creates ignore it.
//
// Because the check runs in the write's own transaction (and Redis retries re-read the
// object), of several writers holding the same ETag exactly one succeeds: every
// successful update changes the object's ETag (see [Store.UpdateACL]).
func IfMatch(tags ...string) WriteOption {
	tags = slices.Clone(tags)
	if tags == nil {
		tags = []string{}
	}
	return func(m *writeMeta) { m.ifMatch = tags }
}

// precondition checks etag, the current ETag of the object a write changes, against the
// If-Match tags.
func (m *writeMeta) precondition(etag string) error {
	if m.ifMatch == nil {
		return nil
	}
	for _, tag := range m.ifMatch {
		if tag == "*" || tag == etag {
			return nil
		}
	}
	return fmt.Errorf("%w: the object's ETag is now %s", ErrPreconditionFailed, etag)
}

// ETag is the strong entity tag of a stored object: a quoted base64url SHA-256 (128
// bits) of its stored JSON, with a credential's HA1s left out (they are
// password-equivalent and must not leak through a hash anyone could test guesses
// against; updated_at, which every successful update changes, still moves the tag when
// only the password changed). The same object value always has the same tag, on every
// node.
func ETag[T acl.IPACL | acl.Entry | acl.Credential | acl.Trunk](obj T) string {
	var v any = obj
	if c, ok := v.(acl.Credential); ok {
		c.HA1MD5, c.HA1SHA256 = "", ""
		v = c
	}
	raw, err := json.Marshal(v)
	if err != nil { // the acl types always marshal
		panic(fmt.Sprintf("store: ETag: %v", err))
	}
	sum := sha256.Sum256(raw)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// Idempotency asks a write to be done at most once per key: see [Idempotent].
type Idempotency struct {
	// Account scopes the key (the same key in two accounts are two keys).
	Account string
	// Key is the client's idempotency key (stored hashed).
	Key string
	// Fingerprint identifies the request (e.g. a hash of method, path and body): a key
	// reused with another fingerprint is [ErrIdempotencyMismatch].
	Fingerprint string
	// Response builds the response to record for the write committing as version. It is
	// called inside the write transaction after the write's own changes succeeded (in
	// Redis mode possibly more than once), and what it returns is given back, as
	// [ReplayError.Response], to every later write with the same key and fingerprint
	// until the record expires ([WithIdempotencyTTL]).
	Response func(version uint64) ([]byte, error)
}

// Idempotent makes the write idempotent under i.Key: inside its transaction it first
// looks the key up; a record with the same fingerprint ends the write with a
// [*ReplayError] carrying the recorded response, one with another fingerprint with
// [ErrIdempotencyMismatch], both without writing anything. Otherwise the write commits
// together with a record of i.Response(version), so a crash can never leave a record
// without its write or a write without its record.
func Idempotent(i Idempotency) WriteOption {
	return func(m *writeMeta) { m.idem = &i }
}

// idemRecord is the stored form of one idempotency key.
type idemRecord struct {
	Fingerprint string    `json:"fingerprint"`
	Expires     time.Time `json:"expires"`
	Response    []byte    `json:"response"`
}

// idemKeyHash is how a client key is stored: fixed length, no odd bytes in key names.
func idemKeyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// replayed looks the key of i up in t: a live record ends the write (see Idempotent).
func replayed(t tx, i *Idempotency, now time.Time) error {
	raw, err := t.idem(i.Account, idemKeyHash(i.Key))
	if err != nil || raw == nil {
		return err
	}
	var rec idemRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("store: decode idempotency record: %w", err)
	}
	switch {
	case !now.Before(rec.Expires):
		return nil // expired; the backend drops it (bbolt lazily)
	case rec.Fingerprint != i.Fingerprint:
		return ErrIdempotencyMismatch
	}
	return &ReplayError{Response: rec.Response}
}

// recordIdempotency stores the record of i for the write committing as v.
func (s *Store) recordIdempotency(t tx, i *Idempotency, v uint64) error {
	if i.Response == nil {
		return fmt.Errorf("store: idempotency key without a response")
	}
	resp, err := i.Response(v)
	if err != nil {
		return err
	}
	now := time.Now()
	rec := idemRecord{Fingerprint: i.Fingerprint, Expires: now.Add(s.idemTTL), Response: resp}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode idempotency record: %w", err)
	}
	return t.putIdem(i.Account, idemKeyHash(i.Key), raw, rec.Expires)
}

// IdempotentResponse looks an idempotency key of account up outside any write: the
// response recorded for it when fingerprint matches, nil when the key is unknown (or
// expired), [ErrIdempotencyMismatch] when it was used with another fingerprint. The
// API uses it to answer a retry before doing any work; the write's own check
// ([Idempotent]) still decides races.
func (s *Store) IdempotentResponse(ctx context.Context, account, key, fingerprint string) ([]byte, error) {
	var resp []byte
	err := s.read(ctx, func(t tx) error {
		err := replayed(t, &Idempotency{Account: account, Key: key, Fingerprint: fingerprint}, time.Now())
		if r, ok := err.(*ReplayError); ok {
			resp = r.Response
			return nil
		}
		return err
	})
	return resp, err
}
