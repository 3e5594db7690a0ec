package acl

// THIS FILE IS A STUB that pins the exported API while the real implementation is written.
// The acl implementer replaces it (deletes it) with real code having exactly these signatures.

import (
	"errors"
	"net/netip"
)

// ErrInvalidPrefix is wrapped by every address/CIDR validation error.
var ErrInvalidPrefix = errors.New("acl: invalid address")

// ParsePrefix validates and canonicalises one ip_address value ("192.0.2.1", "10.0.0.0/8",
// "2001:db8::/32", "::ffff:1.2.3.4" → 1.2.3.4/32). Errors wrap ErrInvalidPrefix and name value and reason.
func ParsePrefix(s string) (netip.Prefix, error) { panic("stub") }

// CanonicalString is the stored form of p: a bare address for /32 and /128, else CIDR.
func CanonicalString(p netip.Prefix) string { panic("stub") }

// ValidationError lists every bad value of one list (field, value, reason) at once.
type ValidationError struct{ Problems []Problem }
type Problem struct{ Field, Value, Reason string }

func (e *ValidationError) Error() string { return "stub" }
func (e *ValidationError) Unwrap() error { return ErrInvalidPrefix }

// CanonicalAddresses validates a whole ip_addresses list (non-empty, no duplicates after
// canonicalisation, no /0) and returns the canonical strings plus overlap warnings.
func CanonicalAddresses(field string, in []string) (canon []string, warnings []string, err error) {
	panic("stub")
}

// ValidateACL checks a stored ACL (entries canonical, unique, non-empty) as Compile does.
func ValidateACL(a *IPACL) (warnings []string, err error) { panic("stub") }

// Verdict is the one typed outcome of judging a SIP request.
type Verdict uint8

const (
	VerdictNone Verdict = iota
	VerdictAllowIP
	VerdictAllowDigest
	VerdictChallenge     // 407 with fresh challenges
	VerdictStale         // 407 stale=true
	VerdictAuthFailed    // 403 wrong/unknown credentials (same for unknown user and wrong password)
	VerdictNoCredential  // 403 trunk has no credential and the IP is not listed
	VerdictTrunkDisabled // 403
	VerdictNotReady      // 503 + Retry-After, no snapshot yet
	VerdictBadSource     // dropped, unparsable socket source
	VerdictMalformed     // 400
	VerdictTooManyHops   // 483
	VerdictRateLimited   // 503 / dropped
	VerdictBanned        // dropped / 403
	VerdictDraining      // 503 during shutdown
	VerdictCapExceeded   // 503/486 call caps
)

func (v Verdict) String() string { panic("stub") }

// TrunkPolicy is the compiled, immutable view of one trunk inside a Snapshot.
type TrunkPolicy struct {
	ID               TrunkID
	Account          string
	Name             string
	Enabled          bool
	Domain           string
	Upstream         string      // upstream_uri; "" = the deployment default
	HasACL           bool
	Credential       *Credential // nil = none
	DigestAlgorithms []string    // nil = the deployment default order
	MaxCPS           int
	MaxConcurrent    int
}

// Snapshot is an immutable compiled data set. All methods are safe for concurrent use,
// allocate nothing, take no lock, and are nil-safe (a nil *Snapshot answers "no").
type Snapshot struct{}

func Compile(ds *Dataset) (*Snapshot, error)                         { panic("stub") }
func (s *Snapshot) Version() uint64                                  { panic("stub") }
func (s *Snapshot) Empty() bool                                      { panic("stub") }
func (s *Snapshot) TrunkByDomain(host string) (TrunkID, bool)        { panic("stub") } // case-insensitive
func (s *Snapshot) MatchSource(src netip.Addr) (TrunkID, bool)       { panic("stub") } // the single enabled trunk whose ACL holds src
func (s *Snapshot) Trunk(id TrunkID) (*TrunkPolicy, bool)            { panic("stub") }
func (s *Snapshot) Allows(id TrunkID, src netip.Addr) bool           { panic("stub") } // src in an enabled entry of id's ACL
func (s *Snapshot) Credential(username string) (*Credential, bool)   { panic("stub") }
func (s *Snapshot) AcceptingTrunks(src netip.Addr, dst []TrunkID) []TrunkID { panic("stub") }
func (s *Snapshot) Listed(src netip.Addr) bool                       { panic("stub") } // inside any enabled entry of any ACL
func (s *Snapshot) WithACL(a IPACL, version uint64) (*Snapshot, error) { panic("stub") }

// Holder publishes the current snapshot. The zero value is ready (nil = not ready).
type Holder struct{}

func (h *Holder) Load() *Snapshot   { panic("stub") }
func (h *Holder) Store(s *Snapshot) { panic("stub") }
