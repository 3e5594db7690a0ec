package sip

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"

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

// cancelTable remembers, for each INVITE being relayed, the source address it came from,
// by its top Via branch, so a CANCEL is matched by branch and source (DESIGN §4): a
// branch seen on the wire does not let anyone else cancel the call. Entries live exactly
// as long as the relay of their INVITE, so the table is bounded by the pending
// transactions. Safe for concurrent use.
type cancelTable struct {
	seed   maphash.Seed
	shards [32]cancelShard
}

type cancelShard struct {
	mu sync.Mutex
	m  map[string]netip.Addr
}

func newCancelTable() *cancelTable {
	t := &cancelTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[string]netip.Addr{}
	}
	return t
}

func (t *cancelTable) shard(branch string) *cancelShard {
	return &t.shards[maphash.String(t.seed, branch)%uint64(len(t.shards))]
}

func (t *cancelTable) put(branch string, src netip.Addr) {
	sh := t.shard(branch)
	sh.mu.Lock()
	sh.m[branch] = src.Unmap()
	sh.mu.Unlock()
}

func (t *cancelTable) del(branch string) {
	sh := t.shard(branch)
	sh.mu.Lock()
	delete(sh.m, branch)
	sh.mu.Unlock()
}

// foreign reports whether branch belongs to an INVITE being relayed that came from
// another address than src.
func (t *cancelTable) foreign(branch string, src netip.Addr) bool {
	sh := t.shard(branch)
	sh.mu.Lock()
	from, ok := sh.m[branch]
	sh.mu.Unlock()
	return ok && from != src.Unmap()
}

// viaBranch is the branch of req's top Via ("" when none).
func viaBranch(req *sipmsg.Request) string {
	v := req.Via()
	if v == nil || v.Params == nil {
		return ""
	}
	b, _ := v.Params.Get("branch")
	return b
}

// rawCancelBranch returns the top Via branch of a raw datagram that is a CANCEL request,
// without parsing it (the read filter's cheap look); ok is false for anything else.
func rawCancelBranch(data []byte) (branch string, ok bool) {
	if !bytes.HasPrefix(data, []byte("CANCEL ")) {
		return "", false
	}
	rest := data
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", true
		}
		line := bytes.TrimRight(rest[:i], "\r")
		rest = rest[i+1:]
		if len(line) == 0 {
			return "", true // end of headers: no Via
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		if !bytes.EqualFold(name, []byte("Via")) && !bytes.EqualFold(name, []byte("v")) {
			continue
		}
		val := line[colon+1:]
		if c := bytes.IndexByte(val, ','); c >= 0 {
			val = val[:c]
		}
		j := bytes.Index(bytes.ToLower(val), []byte("branch="))
		if j < 0 {
			return "", true
		}
		b := val[j+len("branch="):]
		end := bytes.IndexAny(b, "; \t,")
		if end >= 0 {
			b = b[:end]
		}
		return string(b), true
	}
	return "", true
}
