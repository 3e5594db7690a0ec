package acl

import "time"

// TrunkID names a trunk (the Zentrunk trunk_id).
type TrunkID string

// Trunk status values (trunk_status).
const (
	TrunkEnabled  = "enabled"
	TrunkDisabled = "disabled"
)

// Trunk directions (trunk_direction). Only outbound (PBX → edge → upstream) is relayed.
const (
	DirectionOutbound = "outbound"
	DirectionInbound  = "inbound"
)

// Digest algorithm names as they appear in Proxy-Authenticate (RFC 7616/8760).
const (
	DigestMD5    = "MD5"
	DigestSHA256 = "SHA-256"
)

// Account is one API tenant. Its token is stored only as a hash. The fields after
// TokenHash are set only through the admin API; their zero values mean the deployment
// defaults (see [Limits]).
type Account struct {
	AuthID    string `json:"auth_id"`
	Name      string `json:"name,omitempty"`
	TokenHash string `json:"token_hash"` // see control for the hash scheme
	// TrunkDomains are the trunk domains the admin granted besides "<label>.<sip domain>":
	// exact lower-case names or "*.suffix" (any name below suffix).
	TrunkDomains []string `json:"trunk_domains,omitempty"`
	// UpstreamAllow are the prefixes (canonical) the admin granted for this account's
	// upstream_uri on top of the deployment's allow list, including addresses tenants
	// are otherwise refused (loopback, link-local, the edge's own).
	UpstreamAllow []string `json:"upstream_allow,omitempty"`
	// Limits are the account's minimum prefix lengths and quotas; 0 fields are defaults.
	Limits    Limits    `json:"limits,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// Limits are per-account minimums and quotas set by the admin. A zero field means the
// default (the Default… constants); the effective value is given by the methods.
type Limits struct {
	MinPrefixV4      int `json:"min_prefix_v4,omitempty"`
	MinPrefixV6      int `json:"min_prefix_v6,omitempty"`
	MaxACLs          int `json:"max_acls,omitempty"`
	MaxEntriesPerACL int `json:"max_entries_per_acl,omitempty"`
	MaxEntries       int `json:"max_entries,omitempty"` // all ACLs of the account together
	MaxTrunks        int `json:"max_trunks,omitempty"`
	MaxCredentials   int `json:"max_credentials,omitempty"`
	WritesPerSecond  int `json:"writes_per_second,omitempty"`
	WriteBurst       int `json:"write_burst,omitempty"`
}

// Default per-account limits (see [Limits]).
const (
	DefaultMinPrefixV4      = 24
	DefaultMinPrefixV6      = 48
	DefaultMaxACLs          = 100
	DefaultMaxEntriesPerACL = 1000
	DefaultMaxEntries       = 10000
	DefaultMaxTrunks        = 100
	DefaultMaxCredentials   = 100
	DefaultWritesPerSecond  = 20
	DefaultWriteBurst       = 40
)

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Effective returns l with every zero field replaced by its default.
func (l Limits) Effective() Limits {
	return Limits{
		MinPrefixV4:      orDefault(l.MinPrefixV4, DefaultMinPrefixV4),
		MinPrefixV6:      orDefault(l.MinPrefixV6, DefaultMinPrefixV6),
		MaxACLs:          orDefault(l.MaxACLs, DefaultMaxACLs),
		MaxEntriesPerACL: orDefault(l.MaxEntriesPerACL, DefaultMaxEntriesPerACL),
		MaxEntries:       orDefault(l.MaxEntries, DefaultMaxEntries),
		MaxTrunks:        orDefault(l.MaxTrunks, DefaultMaxTrunks),
		MaxCredentials:   orDefault(l.MaxCredentials, DefaultMaxCredentials),
		WritesPerSecond:  orDefault(l.WritesPerSecond, DefaultWritesPerSecond),
		WriteBurst:       orDefault(l.WriteBurst, DefaultWriteBurst),
	}
}

// Entry is one address or CIDR of an IP ACL (the Vobiz entry object).
// IPAddress is always canonical (see [ParsePrefix]); a disabled entry matches nothing.
type Entry struct {
	ID          string    `json:"id"`
	IPAddress   string    `json:"ip_address"`
	Description string    `json:"description"`
	Enabled     bool      `json:"enabled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// IPACL is an IP access control list (Zentrunk IPAccessControlList).
type IPACL struct {
	UUID    string  `json:"ipacl_uuid"`
	Account string  `json:"account"`
	Name    string  `json:"name"`
	Entries []Entry `json:"entries"`
	// Shared is set by the admin only (hosted PBX platforms): the ACL's entries may
	// overlap other accounts' shared ACLs, and the trunks naming it are found by domain
	// only, never by source ([Snapshot.MatchSource] skips them).
	Shared    bool      `json:"shared,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// IPAddresses returns the addresses of all entries, enabled or not, in entry order
// (the Zentrunk ip_addresses view).
func (a *IPACL) IPAddresses() []string {
	out := make([]string, 0, len(a.Entries))
	for _, e := range a.Entries {
		out = append(out, e.IPAddress)
	}
	return out
}

// Credential is a digest credential. The password itself is never stored: only the
// HA1s (hex) over Realm, H(username:realm:password), for MD5 and SHA-256.
type Credential struct {
	UUID      string    `json:"credential_uuid"`
	Account   string    `json:"account"`
	Name      string    `json:"name"`
	Username  string    `json:"username"`
	Realm     string    `json:"realm"`
	HA1MD5    string    `json:"ha1_md5"`
	HA1SHA256 string    `json:"ha1_sha256"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Trunk is a Zentrunk trunk. A trunk with neither ACLUUID nor CredentialUUID accepts nothing.
type Trunk struct {
	ID               TrunkID   `json:"trunk_id"`
	Account          string    `json:"account"`
	Name             string    `json:"name"`
	Direction        string    `json:"trunk_direction"`
	Status           string    `json:"trunk_status"`
	Domain           string    `json:"trunk_domain"`
	ACLUUID          string    `json:"ipacl_uuid,omitempty"`
	CredentialUUID   string    `json:"credential_uuid,omitempty"`
	UpstreamURI      string    `json:"upstream_uri,omitempty"`
	DigestAlgorithms []string  `json:"digest_algorithms,omitempty"`
	MaxCPS           int       `json:"max_cps,omitempty"`        // 0 = unlimited
	MaxConcurrent    int       `json:"max_concurrent,omitempty"` // 0 = unlimited
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Dataset is everything a snapshot is compiled from, at one data-set version.
type Dataset struct {
	Version     uint64
	Emptied     bool // the data set was emptied on purpose by an API write
	ACLs        []IPACL
	Credentials []Credential
	Trunks      []Trunk
}

// Empty reports whether the data set holds no ACL, credential or trunk.
func (d *Dataset) Empty() bool {
	return d == nil || len(d.ACLs)+len(d.Credentials)+len(d.Trunks) == 0
}

// Ban is one source address refused by the brute-force and scanner defence until Until.
type Ban struct {
	IP       string    `json:"ip"`
	Reason   string    `json:"reason"`   // e.g. "digest_failures", "unknown_trunk", "manual"
	Failures int       `json:"failures"` // failures counted when the ban was set
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Node     string    `json:"node,omitempty"` // node that set it
}
