package acl

import "strconv"

// Verdict is the one typed outcome of judging a SIP request. Its [Verdict.String] is a
// stable snake_case name meant for metric labels and log fields.
type Verdict uint8

// The verdicts, with the response each one leads to.
const (
	VerdictNone          Verdict = iota
	VerdictAllowIP               // source inside an enabled entry of the trunk's ACL
	VerdictAllowDigest           // valid Proxy-Authorization for a credential of the trunk
	VerdictChallenge             // 407 with fresh challenges
	VerdictStale                 // 407 stale=true
	VerdictAuthFailed            // 407 again: wrong/unknown credentials (same for unknown user and wrong password)
	VerdictNoCredential          // 403 trunk has no credential and the IP is not listed
	VerdictTrunkDisabled         // 403
	VerdictNotReady              // 503 + Retry-After, no snapshot yet
	VerdictBadSource             // dropped, unparsable socket source
	VerdictMalformed             // 400
	VerdictTooManyHops           // 483
	VerdictRateLimited           // 503 / dropped
	VerdictBanned                // dropped / 403
	VerdictDraining              // 503 during shutdown
	VerdictCapExceeded           // 503/486 call caps
	VerdictLoop                  // 482: the request already passed this edge (RFC 3261 §16.3 step 4)
)

// verdictNames is indexed by Verdict. The names are part of the metrics contract:
// dashboards and alerts select on them, so never rename one.
var verdictNames = [...]string{
	VerdictNone:          "none",
	VerdictAllowIP:       "allow_ip",
	VerdictAllowDigest:   "allow_digest",
	VerdictChallenge:     "challenge",
	VerdictStale:         "stale",
	VerdictAuthFailed:    "auth_failed",
	VerdictNoCredential:  "no_credential",
	VerdictTrunkDisabled: "trunk_disabled",
	VerdictNotReady:      "not_ready",
	VerdictBadSource:     "bad_source",
	VerdictMalformed:     "malformed",
	VerdictTooManyHops:   "too_many_hops",
	VerdictRateLimited:   "rate_limited",
	VerdictBanned:        "banned",
	VerdictDraining:      "draining",
	VerdictCapExceeded:   "cap_exceeded",
	VerdictLoop:          "loop",
}

// String returns the stable snake_case name ("allow_ip", "challenge", …), or
// "verdict(N)" for a value outside the defined set.
func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Allowed reports whether the request is let through (by IP or by digest).
func (v Verdict) Allowed() bool {
	return v == VerdictAllowIP || v == VerdictAllowDigest
}
