// Package sip is the SIP edge of sipedge: it listens on UDP and TCP, judges every
// out-of-dialog INVITE by the socket source address and the trunk policy (IP ACL first,
// then proxy digest authentication), and relays allowed calls statefully to the trunk's
// upstream, with CANCEL, ACK and in-dialog requests in both directions.
//
// The decision follows DESIGN.md §4 and yields one typed [acl.Verdict] that picks the SIP
// response, the security log line and the metric label. The trunk policy is consumed
// through the small [Policy] interface, which *acl.Snapshot satisfies; the package never
// imports the store or the control plane, so the data path cannot block on them.
//
// Digest nonces and Record-Route tokens are stateless HMACs under a key all nodes share,
// so any node verifies what another issued, and in-dialog routing needs no dialog state:
// the Record-Route token names both ends of the dialog and is accepted only for its own
// Call-ID and tags.
//
// In front of the decision sits the edge's defence: a per-source request budget and the
// ban table are checked in sipgo's read filter, before parsing; failed digest answers and
// INVITEs to trunks a source may not use ban it for a while (shared between nodes through
// a [BanStore] the SIP path never waits for); per-trunk call caps apply once a call is
// allowed; and a PROXY protocol header names the source only when a trusted proxy sent it.
//
// The relay is built on github.com/emiago/sipgo v1.7.2 and works around its known traps
// (see the project's notes): source from the socket only, cloned and rebuilt forwarded
// requests, explicit destinations and local addresses, 2xx retransmission and CANCEL
// hooks, bounded waits, and no per-call goroutines beyond the relaying handler.
package sip
