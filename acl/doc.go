// Package acl decides which trunk a SIP source belongs to: it holds the policy value types
// (trunks, IP ACLs, credentials, verdicts), validates and canonicalises addresses and CIDR
// blocks, and compiles a data set into an immutable [Snapshot] whose lock-free, allocation-free
// queries answer the per-INVITE questions ("which trunk is this source?", "does trunk T accept
// it?"). A [Holder] publishes the current snapshot with one atomic pointer.
//
// The package imports nothing of sipedge: store builds snapshots, sip only reads them.
package acl
