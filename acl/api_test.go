package acl

import "net/netip"

// The exported API other packages were written against (once pinned by api_stub.go).
// A change of signature fails this file to compile.
var (
	_ func(string) (netip.Prefix, error)                 = ParsePrefix
	_ func(netip.Prefix) string                          = CanonicalString
	_ func(string, []string) ([]string, []string, error) = CanonicalAddresses
	_ func(*IPACL) ([]string, error)                     = ValidateACL
	_ func(*Dataset) (*Snapshot, error)                  = Compile
	_ func(*Snapshot) uint64                             = (*Snapshot).Version
	_ func(*Snapshot) bool                               = (*Snapshot).Empty
	_ func(*Snapshot, string) (TrunkID, bool)            = (*Snapshot).TrunkByDomain
	_ func(*Snapshot, netip.Addr) (TrunkID, bool)        = (*Snapshot).MatchSource
	_ func(*Snapshot, TrunkID) (*TrunkPolicy, bool)      = (*Snapshot).Trunk
	_ func(*Snapshot, TrunkID, netip.Addr) bool          = (*Snapshot).Allows
	_ func(*Snapshot, string) (*Credential, bool)        = (*Snapshot).Credential
	_ func(*Snapshot, netip.Addr, []TrunkID) []TrunkID   = (*Snapshot).AcceptingTrunks
	_ func(*Snapshot, netip.Addr) bool                   = (*Snapshot).Listed
	_ func(*Snapshot, IPACL, uint64) (*Snapshot, error)  = (*Snapshot).WithACL
	_ func(*Holder) *Snapshot                            = (*Holder).Load
	_ func(*Holder, *Snapshot)                           = (*Holder).Store
	_ func(Verdict) string                               = Verdict.String
	_ error                                              = (*ValidationError)(nil)
	_ interface{ Unwrap() error }                        = (*ValidationError)(nil)
	_                                                    = TrunkPolicy{ID: "", Account: "", Name: "", Enabled: false, Domain: "", Upstream: "", HasACL: false, Credential: nil, DigestAlgorithms: nil, MaxCPS: 0, MaxConcurrent: 0}
	_                                                    = ValidationError{Problems: []Problem{{Field: "", Value: "", Reason: ""}}}
	_ [16]struct{}                                       = [VerdictCapExceeded + 1]struct{}{}
)
