package control

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
)

// MinTokenLength is the shortest auth token (or admin token) accepted from an operator.
// Generated tokens have 40 characters.
const MinTokenLength = 16

const (
	generatedTokenLen  = 40 // ≈238 bits over A-Z a-z 0-9
	generatedAuthIDLen = 18 // after "MA", over A-Z 0-9 (≈93 bits)
	maxAuthIDLen       = 64
	tokenScheme        = "hmac-sha256"
	basicChallenge     = `Basic realm="sipedge"`
	bearerChallenge    = `Bearer realm="sipedge-admin"`
	adminAccounts      = "/v1/Admin/Account/"
)

// Account tokens are stored as "hmac-sha256:<salt>:<mac>", mac = HMAC-SHA256(salt, token),
// both hex. The salt makes equal tokens hash differently and rules out precomputed tables.
// A slow password hash (bcrypt, argon2) is deliberately not used: tokens are machine
// generated with ≈238 bits of entropy (operator-chosen ones must have at least
// MinTokenLength characters), so guessing one from a leaked hash is infeasible at any hash
// speed, while every API request verifies the token, and a slow hash there would cost tens
// of milliseconds of CPU per request and hand out a cheap denial of service.

// hashToken returns the stored form of token with a fresh random salt.
func hashToken(token string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return tokenScheme + ":" + hex.EncodeToString(salt) + ":" + hex.EncodeToString(tokenMAC(salt, token))
}

func tokenMAC(salt []byte, token string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(token))
	return m.Sum(nil)
}

// verifyToken reports whether token matches the stored hash, in time independent of
// where they differ. An unparsable hash matches nothing.
func verifyToken(stored, token string) bool {
	scheme, rest, _ := strings.Cut(stored, ":")
	saltHex, macHex, _ := strings.Cut(rest, ":")
	salt, err1 := hex.DecodeString(saltHex)
	want, err2 := hex.DecodeString(macHex)
	if scheme != tokenScheme || err1 != nil || err2 != nil || len(salt) == 0 || len(want) != sha256.Size {
		salt, want = make([]byte, 16), make([]byte, sha256.Size) // same work, no match
		_ = subtle.ConstantTimeCompare(tokenMAC(salt, token), want)
		return false
	}
	return subtle.ConstantTimeCompare(tokenMAC(salt, token), want) == 1
}

// dummyHash is verified against when the auth_id is unknown, so an unknown account
// costs as much as a wrong token.
var dummyHash = hashToken("sipedge-no-such-account")

func sum256(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// randomString returns n characters drawn uniformly from alphabet with crypto/rand.
func randomString(alphabet string, n int) string {
	out := make([]byte, n)
	buf := make([]byte, 1)
	limit := 256 - 256%len(alphabet) // reject bytes that would bias the draw
	for i := 0; i < n; {
		_, _ = rand.Read(buf)
		if int(buf[0]) < limit {
			out[i] = alphabet[int(buf[0])%len(alphabet)]
			i++
		}
	}
	return string(out)
}

const (
	upperDigits = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	alnum       = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

func newAuthID() string { return "MA" + randomString(upperDigits, generatedAuthIDLen) }
func newToken() string  { return randomString(alnum, generatedTokenLen) }

// validAuthID checks an auth_id: 1..64 of A-Z a-z 0-9 _ - (it appears in URL paths and
// as the basic-auth user name).
func validAuthID(id string) error {
	if id == "" || len(id) > maxAuthIDLen {
		return fmt.Errorf("auth_id %q: must be 1 to %d characters", id, maxAuthIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("auth_id %q: character %q not allowed: use A-Z, a-z, 0-9, _ and -", id, c)
		}
	}
	return nil
}

// Bootstrap creates the first account when the store has none, so a fresh deployment can
// be managed at all. An empty authID gets a generated one ("MA" + 18 characters); an empty
// token gets a generated one, returned as generatedToken for the caller to show once (it
// is stored only hashed). A token shorter than [MinTokenLength] is rejected. When any
// account exists already, or another node created one concurrently, it does nothing and
// returns created == false.
func Bootstrap(ctx context.Context, st store.API, authID, token string) (created bool, generatedToken string, err error) {
	accts, err := st.Accounts(ctx)
	if err != nil {
		return false, "", fmt.Errorf("control: bootstrap: list accounts: %w", err)
	}
	if len(accts) > 0 {
		return false, "", nil
	}
	if authID == "" {
		authID = newAuthID()
	} else if err := validAuthID(authID); err != nil {
		return false, "", fmt.Errorf("control: bootstrap: %v", err)
	}
	if token == "" {
		token = newToken()
		generatedToken = token
	} else if len(token) < MinTokenLength {
		return false, "", fmt.Errorf("control: bootstrap: auth token must be at least %d characters", MinTokenLength)
	}
	a := acl.Account{AuthID: authID, Name: "bootstrap", TokenHash: hashToken(token), CreatedAt: nowUTC()}
	if _, err := st.CreateAccount(ctx, a); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return false, "", nil
		}
		return false, "", fmt.Errorf("control: bootstrap: create account %s: %w", authID, err)
	}
	return true, generatedToken, nil
}

// authAccount checks HTTP basic auth against the stored token hash and that the
// authenticated auth_id is the one in the path. Both failures are 401 (never 403 or 404),
// so a caller learns nothing about other accounts.
func (s *Server) authAccount(c *call) error {
	user, err := s.basicAccount(c)
	if err != nil {
		return err
	}
	if c.r.PathValue("auth_id") != user {
		return unauthorized(basicChallenge, "the credentials are not those of the account in the path")
	}
	c.account = user
	return nil
}

// basicAccount verifies HTTP basic auth against the stored token hash, in constant time
// and with the same work for an unknown auth_id, and returns the authenticated auth_id.
func (s *Server) basicAccount(c *call) (string, error) {
	user, pass, ok := c.r.BasicAuth()
	if !ok {
		return "", unauthorized(basicChallenge, "missing or malformed HTTP basic auth: send auth_id:auth_token")
	}
	a, err := s.st.Account(c.r.Context(), user)
	switch {
	case errors.Is(err, store.ErrNotFound):
		verifyToken(dummyHash, pass)
		return "", unauthorized(basicChallenge, "invalid auth_id or auth_token")
	case err != nil:
		return "", err
	case !verifyToken(a.TokenHash, pass):
		return "", unauthorized(basicChallenge, "invalid auth_id or auth_token")
	}
	c.acct = &a
	return user, nil
}

// authAdmin checks Authorization: Bearer <Config.AdminToken> in constant time.
func (s *Server) authAdmin(c *call) error {
	scheme, tok, _ := strings.Cut(c.r.Header.Get("Authorization"), " ")
	given := sum256(strings.TrimSpace(tok))
	if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(given[:], s.adminSum[:]) != 1 {
		return unauthorized(bearerChallenge, "missing or invalid admin bearer token")
	}
	return nil
}

func unauthorized(challenge, msg string) error {
	return &apiError{status: http.StatusUnauthorized, msg: msg,
		header: http.Header{"Www-Authenticate": {challenge}}}
}

// accountObject is an account as the admin API shows it: never its token.
type accountObject struct {
	AuthID    string `json:"auth_id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

func (s *Server) adminListAccounts(c *call) error {
	p, err := c.page()
	if err != nil {
		return err
	}
	all, err := s.st.Accounts(c.r.Context())
	if err != nil {
		return err
	}
	var out []accountObject
	for _, a := range window(all, p) {
		out = append(out, accountObject{AuthID: a.AuthID, Name: a.Name, CreatedAt: stamp(a.CreatedAt)})
	}
	return list(c, adminAccounts, p, len(all), out)
}

type accountRequest struct {
	AuthID *string `json:"auth_id"`
	Name   *string `json:"name"`
}

// adminCreateAccount adds an account with a generated token, shown in this response only.
func (s *Server) adminCreateAccount(c *call) error {
	var req accountRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	name, err := requiredText("name", req.Name, maxNameLen)
	if err != nil {
		return err
	}
	id := newAuthID()
	if req.AuthID != nil && *req.AuthID != "" {
		if err := validAuthID(*req.AuthID); err != nil {
			return invalid("%v", err)
		}
		id = *req.AuthID
	}
	token := newToken()
	v, err := s.st.CreateAccount(c.r.Context(), acl.Account{AuthID: id, Name: name, TokenHash: hashToken(token), CreatedAt: s.clock()}, c.opts...)
	if errors.Is(err, store.ErrConflict) {
		return conflict("auth_id is not available")
	}
	if err != nil {
		return err
	}
	c.version(v)
	c.writeJSON(http.StatusCreated, map[string]any{
		"api_id":     c.apiID,
		"message":    "account created; the auth_token is shown only once",
		"auth_id":    id,
		"name":       name,
		"auth_token": token,
	})
	return nil
}
