package sip

import (
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/acl"
)

// The trust boundary towards the core (DESIGN §4). An initial INVITE from a PBX loses
// what a PBX may not assert — preloaded Routes and maddr (buildForward), the identity
// headers below — and gains what the core needs to bill and route by: the trunk, the
// account and how the call was authenticated.

// Default names of the identity headers (Config.IdentityHeaderPrefix + these).
const (
	DefaultIdentityHeaderPrefix = "X-Sipedge-"
	identTrunk                  = "Trunk"
	identAccount                = "Account"
	identAuth                   = "Auth"
	identUser                   = "User"
)

// DefaultStripHeaders are the headers an initial INVITE from a PBX never carries to the
// core: a PBX must not speak for the network's identity assertions (RFC 3325 trust
// domain; Remote-Party-ID is its pre-standard form).
var DefaultStripHeaders = []string{"P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID"}

// headerPolicy applies the boundary's header rules. Immutable after New.
type headerPolicy struct {
	strip    map[string]struct{} // lower-case header names removed
	prefixes []string            // lower-case name prefixes removed (the identity prefix)
	trunk    string              // names of the headers added
	account  string
	auth     string
	user     string
}

func newHeaderPolicy(prefix string, strip []string) headerPolicy {
	p := headerPolicy{strip: make(map[string]struct{}, len(strip))}
	for _, h := range strip {
		p.strip[strings.ToLower(strings.TrimSpace(h))] = struct{}{}
	}
	if prefix != "" {
		p.prefixes = []string{strings.ToLower(prefix)}
	}
	p.trunk, p.account, p.auth, p.user = prefix+identTrunk, prefix+identAccount, prefix+identAuth, prefix+identUser
	return p
}

// untrusted reports whether a PBX's header by this name is removed before the core.
func (p *headerPolicy) untrusted(name string) bool {
	if len(name) == 0 {
		return false
	}
	var buf [64]byte
	if len(name) > len(buf) {
		return p.untrustedLower(strings.ToLower(name))
	}
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return p.untrustedLower(string(b))
}

func (p *headerPolicy) untrustedLower(name string) bool {
	if _, ok := p.strip[name]; ok {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

// add appends the identity headers of an allowed call's decision.
func (p *headerPolicy) add(fw *sipmsg.Request, d *decision) {
	if d.Trunk == nil {
		return
	}
	fw.AppendHeader(sipmsg.NewHeader(p.trunk, string(d.Trunk.ID)))
	fw.AppendHeader(sipmsg.NewHeader(p.account, d.Trunk.Account))
	switch d.Verdict {
	case acl.VerdictAllowIP:
		fw.AppendHeader(sipmsg.NewHeader(p.auth, "ip"))
	case acl.VerdictAllowDigest:
		fw.AppendHeader(sipmsg.NewHeader(p.auth, "digest"))
		if d.Credential != nil {
			fw.AppendHeader(sipmsg.NewHeader(p.user, d.Credential.Username))
		}
	}
}
