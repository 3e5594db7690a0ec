package acl

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gaissmai/bart"
)

// ErrInvalidDataset is wrapped by the error [Compile] returns for structural garbage that
// no fail-closed reading can make safe (duplicate trunk ids, trunk domains or credential
// usernames). The caller keeps its previous snapshot.
var ErrInvalidDataset = errors.New("acl: invalid data set")

// TrunkPolicy is the compiled, immutable view of one trunk inside a [Snapshot]. It is shared
// by every reader of the snapshot: do not modify it or its slices.
type TrunkPolicy struct {
	ID        TrunkID
	Account   string
	Name      string
	Direction string // trunk_direction, as stored
	Enabled   bool   // trunk_status is exactly "enabled"; anything else is disabled (fail closed)
	Domain    string // trunk_domain, lower-cased; "" = the trunk is found by source IP only
	Upstream  string // upstream_uri; "" = the deployment default
	// HasACL reports that the trunk names an IP ACL that exists and is valid. Its enabled
	// entries (possibly none) are what [Snapshot.Allows] checks. False when the trunk names
	// no ACL, or one that is missing or invalid: the trunk then accepts no IP.
	HasACL bool
	// SharedACL reports that the trunk's (valid) ACL is marked shared by the admin: the
	// trunk is found by its domain only, never by source ([Snapshot.MatchSource] skips
	// it), since other accounts' shared ACLs may list the same sources. [Snapshot.Allows]
	// still admits its sources once the trunk is found by domain.
	SharedACL bool
	// ACLUUID is the ipacl_uuid the trunk names, as stored ("" = none), whether or not it
	// resolved (see HasACL). It lets slow paths ([Snapshot.Explain]) and hit counting
	// ([Snapshot.MatchedEntry]) name the entry that let a source in.
	ACLUUID          string
	Credential       *Credential // nil = none (or the named credential is missing/invalid)
	DigestAlgorithms []string    // nil = the deployment default order; only DigestMD5 and DigestSHA256
	MaxCPS           int
	MaxConcurrent    int
}

// outbound reports whether the trunk relays calls from its PBX upstream (an unset
// direction counts as outbound).
func (t *TrunkPolicy) outbound() bool { return t.Direction == "" || t.Direction == DirectionOutbound }

// TakesCalls reports whether the trunk's PBX may place calls through it: the trunk is
// enabled and outbound.
func (t *TrunkPolicy) TakesCalls() bool { return t.Enabled && t.outbound() }

// Snapshot is an immutable compiled data set: trunks, the IP ACLs they use and the
// credentials, at one data-set version. Build one with [Compile] (or derive one with
// [Snapshot.WithACL]) and publish it through a [Holder].
//
// All query methods are safe for concurrent use, allocate nothing, take no lock, and are
// nil-safe: a nil *Snapshot means "not ready" and answers no to everything. Every query
// that takes a source address unmaps IPv4-mapped IPv6 and ignores IPv6 zones first; an
// invalid address matches nothing. What queries return points into the snapshot and is
// shared by all readers: never modify it. A zero Snapshot is valid and empty, but build
// real ones with Compile.
type Snapshot struct {
	version uint64

	trunks   []*TrunkPolicy         // sorted by ID; a trunk's index in it is its "trunk index"
	ids      []TrunkID              // by trunk index, the IDs of trunks (contiguous for AcceptingTrunks)
	byID     map[TrunkID]int32      // ID → trunk index
	byDomain map[string]int32       // lower-cased trunk_domain → trunk index
	creds    map[string]*Credential // username → credential
	byCred   map[string]credUse     // credential uuid → the trunks naming it (resolved)
	ncreds   int                    // credentials in the data set, for Empty

	acls []*aclState        // every stored ACL, valid or not, sorted by uuid
	uses map[string]*aclUse // ACL uuid → the trunks naming it; trunks never change after Compile

	// table maps every enabled entry of every valid ACL that some trunk names to the sorted
	// enabled trunk indices whose ACL holds that prefix or any prefix of the table covering
	// it (the closure). Every prefix of the table holding an address covers the longest
	// match, so one lookup yields exactly the enabled trunks that accept the address.
	table *prefixTable
	// flat answers the per-packet questions of table from a layout with fewer cache
	// misses (see flat.go); it always describes exactly table.
	flat flatIndex

	problems []problem
}

// prefixTable is the type of Snapshot.table.
type prefixTable = bart.Table[*prefixVal]

// prefixVal is the value of one prefix in Snapshot.table: shared, immutable.
type prefixVal struct {
	prefix netip.Prefix // the table prefix this value belongs to (for the matched entry)
	owners []string     // sorted uuids of the named ACLs with this prefix as an enabled entry
	trunks []int32      // closure, see Snapshot.table; often shared with an aclUse slice
}

// aclUse lists the trunks naming one ACL uuid, by trunk index, sorted.
type aclUse struct {
	all     []int32 // enabled or not: for HasACL and Listed
	enabled []int32 // for matching
}

// aclState is one stored ACL. Only the ACLs some trunk names carry their prefixes: an ACL
// no trunk names matches nothing anyway.
type aclState struct {
	uuid     string
	valid    bool           // passed ValidateACL (and its uuid is unique in the data set)
	shared   bool           // IPACL.Shared: its trunks are found by domain only
	prefixes []netip.Prefix // enabled entries, sorted by comparePrefix
	entryIDs []string       // entryIDs[i] is the id of the entry of prefixes[i]
	self     []string       // []string{uuid}, shared by the prefixVals this ACL alone owns
}

// problem is a Problem found while compiling, tagged with the ACL uuid it concerns so
// that WithACL can drop it once that ACL is replaced by a valid one.
type problem struct {
	Problem
	acl string
}

// Compile builds an immutable snapshot of ds. It reads ds defensively, as it may come from
// a shared store written by anyone:
//
//   - Structural garbage fails the whole compile with an error wrapping
//     [ErrInvalidDataset]: an empty or duplicate trunk_id, a trunk_domain used twice
//     (compared case-insensitively), a credential username used twice. The caller keeps its
//     previous snapshot.
//   - Anything else that is wrong fails closed for the objects it touches and is reported
//     by [Snapshot.Problems]: an ACL that is invalid (see [ValidateACL]) or whose uuid
//     appears twice counts as missing, so trunks naming it accept no IP; a trunk naming a
//     missing credential gets none; a credential without uuid or username, or with a
//     duplicate uuid, is dropped. Nothing ever widens into "allow all".
//
// ds is not retained. A nil ds compiles to an empty snapshot.
func Compile(ds *Dataset) (*Snapshot, error) {
	if ds == nil {
		ds = &Dataset{}
	}
	if err := checkStructure(ds); err != nil {
		return nil, err
	}
	s := &Snapshot{version: ds.Version, ncreds: len(ds.Credentials)}
	credByUUID := s.compileCredentials(ds.Credentials)
	s.compileTrunks(ds.Trunks, credByUUID)
	s.compileACLs(ds.ACLs)
	s.resolveACLs()
	s.table = buildTable(s.acls, s.uses)
	s.flat = buildFlatIndex(s.table)
	return s, nil
}

// checkStructure finds the errors that fail a whole compile.
func checkStructure(ds *Dataset) error {
	var msgs []string
	ids := make(map[TrunkID]struct{}, len(ds.Trunks))
	domains := make(map[string]TrunkID, len(ds.Trunks))
	for i := range ds.Trunks {
		t := &ds.Trunks[i]
		if t.ID == "" {
			msgs = append(msgs, fmt.Sprintf("trunks[%d]: empty trunk_id", i))
			continue
		}
		if _, dup := ids[t.ID]; dup {
			msgs = append(msgs, fmt.Sprintf("duplicate trunk_id %q", t.ID))
		}
		ids[t.ID] = struct{}{}
		if t.Domain == "" {
			continue
		}
		d := lowerASCII(t.Domain)
		if other, dup := domains[d]; dup {
			msgs = append(msgs, fmt.Sprintf("trunk_domain %q of trunk %q is also the domain of trunk %q", t.Domain, t.ID, other))
			continue
		}
		domains[d] = t.ID
	}
	users := make(map[string]string, len(ds.Credentials))
	for i := range ds.Credentials {
		c := &ds.Credentials[i]
		if c.Username == "" {
			continue // dropped as invalid, not ambiguous
		}
		if other, dup := users[c.Username]; dup {
			msgs = append(msgs, fmt.Sprintf("username %q of credential %q is also the username of credential %q", c.Username, c.UUID, other))
			continue
		}
		users[c.Username] = c.UUID
	}
	if msgs == nil {
		return nil
	}
	const most = 10
	if len(msgs) > most {
		msgs = append(msgs[:most], fmt.Sprintf("and %d more", len(msgs)-most))
	}
	return fmt.Errorf("%w: %s", ErrInvalidDataset, strings.Join(msgs, "; "))
}

func (s *Snapshot) problem(acl, field, value, reason string) {
	s.problems = append(s.problems, problem{Problem{Field: field, Value: value, Reason: reason}, acl})
}

// compileCredentials copies the valid credentials, indexes them by username and returns
// them by uuid for the trunks.
func (s *Snapshot) compileCredentials(in []Credential) map[string]*Credential {
	count := make(map[string]int, len(in))
	for i := range in {
		count[in[i].UUID]++
	}
	slab := make([]Credential, 0, len(in))
	byUUID := make(map[string]*Credential, len(in))
	s.creds = make(map[string]*Credential, len(in))
	for i := range in {
		c := &in[i]
		field := "credentials[" + c.UUID + "]"
		switch {
		case c.UUID == "":
			s.problem("", "credentials["+strconv.Itoa(i)+"].credential_uuid", "", "empty uuid, credential dropped")
			continue
		case count[c.UUID] > 1:
			s.problem("", field, c.UUID, "duplicate credential_uuid, every copy dropped")
			continue
		case c.Username == "":
			s.problem("", field+".username", "", "empty username, credential dropped")
			continue
		}
		slab = append(slab, *c)
		p := &slab[len(slab)-1]
		byUUID[p.UUID] = p
		s.creds[p.Username] = p
	}
	return byUUID
}

// compileTrunks builds the trunk policies sorted by id, the id and domain indexes and the
// ACL uses. ACLs are resolved later by resolveACLs.
func (s *Snapshot) compileTrunks(in []Trunk, credByUUID map[string]*Credential) {
	sorted := make([]*Trunk, len(in))
	for i := range in {
		sorted[i] = &in[i]
	}
	slices.SortFunc(sorted, func(a, b *Trunk) int { return cmp.Compare(a.ID, b.ID) })

	slab := make([]TrunkPolicy, len(sorted))
	s.trunks = make([]*TrunkPolicy, len(sorted))
	s.ids = make([]TrunkID, len(sorted))
	s.byID = make(map[TrunkID]int32, len(sorted))
	s.byDomain = make(map[string]int32, len(sorted))
	s.byCred = make(map[string]credUse)
	s.uses = make(map[string]*aclUse)
	for i, t := range sorted {
		field := "trunks[" + string(t.ID) + "]"
		p := &slab[i]
		*p = TrunkPolicy{
			ID:            t.ID,
			Account:       t.Account,
			Name:          t.Name,
			Direction:     t.Direction,
			Enabled:       t.Status == TrunkEnabled,
			Domain:        lowerASCII(t.Domain),
			Upstream:      t.UpstreamURI,
			ACLUUID:       t.ACLUUID,
			MaxCPS:        t.MaxCPS,
			MaxConcurrent: t.MaxConcurrent,
		}
		if t.Status != TrunkEnabled && t.Status != TrunkDisabled {
			s.problem("", field+".trunk_status", t.Status, "unknown status, trunk disabled")
		}
		p.DigestAlgorithms = s.digestAlgorithms(field, t.DigestAlgorithms)
		if t.CredentialUUID != "" {
			if c, ok := credByUUID[t.CredentialUUID]; ok {
				p.Credential = c
				u := s.byCred[c.UUID]
				u.n++
				switch {
				case p.TakesCalls() && u.takes == 0:
					u.trunk, u.takes = int32(i), 1
				case p.TakesCalls():
					u.takes++
				case u.n == 1:
					u.trunk = int32(i)
				}
				s.byCred[c.UUID] = u
			} else {
				s.problem("", field+".credential_uuid", t.CredentialUUID, "no such valid credential, trunk has none")
			}
		}
		s.trunks[i] = p
		s.ids[i] = t.ID
		s.byID[t.ID] = int32(i)
		if p.Domain != "" {
			s.byDomain[p.Domain] = int32(i)
		}
		if t.ACLUUID != "" {
			u := s.uses[t.ACLUUID]
			if u == nil {
				u = new(aclUse)
				s.uses[t.ACLUUID] = u
			}
			u.all = append(u.all, int32(i))
			if p.Enabled {
				u.enabled = append(u.enabled, int32(i))
			}
		}
	}
}

// digestAlgorithms keeps the known algorithm names (case-insensitively, written the
// canonical way), once each, in the given order.
func (s *Snapshot) digestAlgorithms(field string, in []string) []string {
	var out []string
	for _, a := range in {
		var name string
		switch {
		case strings.EqualFold(a, DigestMD5):
			name = DigestMD5
		case strings.EqualFold(a, DigestSHA256):
			name = DigestSHA256
		default:
			s.problem("", field+".digest_algorithms", a, "unknown digest algorithm, ignored")
			continue
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// compileACLs stores every ACL by uuid, validated; ACLs some trunk names also get their
// enabled prefixes.
func (s *Snapshot) compileACLs(in []IPACL) {
	count := make(map[string]int, len(in))
	for i := range in {
		count[in[i].UUID]++
	}
	s.acls = make([]*aclState, 0, len(count))
	for i := range in {
		a := &in[i]
		switch n := count[a.UUID]; {
		case a.UUID == "":
			s.problem("", "ipacls["+strconv.Itoa(i)+"].ipacl_uuid", "", "empty uuid, ACL dropped")
			continue
		case n == 0:
			continue // a duplicate, already stored
		case n > 1:
			s.problem(a.UUID, "ipacls["+a.UUID+"]", a.UUID, "duplicate ipacl_uuid, ACL treated as missing")
			s.acls = append(s.acls, &aclState{uuid: a.UUID})
			count[a.UUID] = 0 // report and store it once
			continue
		}
		st, err := newACLState(a, s.uses[a.UUID] != nil)
		if err != nil {
			var ve *ValidationError
			errors.As(err, &ve)
			for _, p := range ve.Problems {
				s.problem(a.UUID, "ipacls["+a.UUID+"]."+p.Field, p.Value, p.Reason)
			}
		}
		s.acls = append(s.acls, st)
	}
	slices.SortFunc(s.acls, func(a, b *aclState) int { return strings.Compare(a.uuid, b.uuid) })
}

// newACLState validates a and compiles it. The prefixes are kept only when some trunk
// names the ACL (named). An invalid ACL yields a state with valid == false.
func newACLState(a *IPACL, named bool) (*aclState, error) {
	st := &aclState{uuid: a.UUID, shared: a.Shared}
	if _, err := ValidateACL(a); err != nil {
		return st, err
	}
	st.valid = true
	if !named {
		return st, nil
	}
	st.self = []string{a.UUID}
	n := 0
	for _, e := range a.Entries {
		if e.Enabled {
			n++
		}
	}
	if n == 0 {
		return st, nil
	}
	st.prefixes = make([]netip.Prefix, 0, n)
	st.entryIDs = make([]string, 0, n)
	for _, e := range a.Entries {
		if !e.Enabled {
			continue
		}
		p, _ := ParsePrefix(e.IPAddress) // validated above
		st.prefixes = append(st.prefixes, p)
		st.entryIDs = append(st.entryIDs, e.ID)
	}
	sort.Sort(byPrefix{st.prefixes, st.entryIDs})
	return st, nil
}

// byPrefix sorts prefixes by comparePrefix and their entry ids along with them.
type byPrefix struct {
	p  []netip.Prefix
	id []string
}

func (b byPrefix) Len() int           { return len(b.p) }
func (b byPrefix) Less(i, j int) bool { return comparePrefix(b.p[i], b.p[j]) < 0 }
func (b byPrefix) Swap(i, j int) {
	b.p[i], b.p[j] = b.p[j], b.p[i]
	b.id[i], b.id[j] = b.id[j], b.id[i]
}

// findACL returns the index of uuid in acls, or where it would be inserted.
func findACL(acls []*aclState, uuid string) (int, bool) {
	return slices.BinarySearchFunc(acls, uuid, func(st *aclState, uuid string) int {
		return strings.Compare(st.uuid, uuid)
	})
}

// resolveACLs marks the trunks whose ACL exists and is valid, and reports the others.
func (s *Snapshot) resolveACLs() {
	for uuid, u := range s.uses {
		i, found := findACL(s.acls, uuid)
		switch {
		case !found:
			for _, t := range u.all {
				s.problem(uuid, "trunks["+string(s.trunks[t].ID)+"].ipacl_uuid", uuid, "no such IP ACL, trunk accepts no IP")
			}
			continue
		case !s.acls[i].valid:
			for _, t := range u.all {
				s.problem(uuid, "trunks["+string(s.trunks[t].ID)+"].ipacl_uuid", uuid, "IP ACL is invalid, trunk accepts no IP")
			}
			continue
		}
		for _, t := range u.all {
			s.trunks[t].HasACL = true
			s.trunks[t].SharedACL = s.acls[i].shared
		}
	}
	slices.SortStableFunc(s.problems, func(a, b problem) int { return strings.Compare(a.Field, b.Field) })
}

// buildTable builds Snapshot.table from the named valid ACLs.
func buildTable(acls []*aclState, uses map[string]*aclUse) *prefixTable {
	type owned struct {
		p  netip.Prefix
		st *aclState
	}
	var all []owned
	for _, st := range acls {
		if st.valid && uses[st.uuid] != nil {
			for _, p := range st.prefixes {
				all = append(all, owned{p, st})
			}
		}
	}
	// Sorted by prefix, supernets first, then by owner uuid.
	slices.SortFunc(all, func(a, b owned) int {
		if c := comparePrefix(a.p, b.p); c != 0 {
			return c
		}
		return strings.Compare(a.st.uuid, b.st.uuid)
	})

	t := new(prefixTable)
	slab := make([]prefixVal, 0, len(all))
	var stack []*prefixVal // the covering chain of the current prefix
	var stackP []netip.Prefix
	for i := 0; i < len(all); {
		p := all[i].p
		j := i + 1
		for j < len(all) && all[j].p == p {
			j++
		}
		var owners []string
		if j == i+1 {
			owners = all[i].st.self
		} else {
			owners = make([]string, 0, j-i)
			for _, o := range all[i:j] {
				owners = append(owners, o.st.uuid)
			}
		}
		i = j

		for len(stackP) > 0 && !covers(stackP[len(stackP)-1], p) {
			stack, stackP = stack[:len(stack)-1], stackP[:len(stackP)-1]
		}
		var parent []int32
		if len(stack) > 0 {
			parent = stack[len(stack)-1].trunks
		}
		slab = append(slab, prefixVal{prefix: p, owners: owners, trunks: closure(parent, owners, uses)})
		v := &slab[len(slab)-1]
		t.Insert(p, v)
		stack, stackP = append(stack, v), append(stackP, p)
	}
	return t
}

// closure is parent ∪ the enabled trunks of every owner, reusing an input slice whenever
// it already is the answer.
func closure(parent []int32, owners []string, uses map[string]*aclUse) []int32 {
	out := parent
	for _, o := range owners {
		if u := uses[o]; u != nil {
			out = union(out, u.enabled)
		}
	}
	return out
}

// union merges two sorted sets. It returns a or b itself when one contains the other,
// so shared sets stay shared; it never modifies its inputs.
func union(a, b []int32) []int32 {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]int32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(append(out, a[i:]...), b[j:]...)
	switch len(out) {
	case len(a):
		return a
	case len(b):
		return b
	}
	return out
}

// Version is the data-set version the snapshot was compiled at (0 for nil).
func (s *Snapshot) Version() uint64 {
	if s == nil {
		return 0
	}
	return s.version
}

// Empty reports whether the snapshot holds no trunk, no ACL and no credential
// (counting invalid ones too). A nil snapshot is empty.
func (s *Snapshot) Empty() bool {
	return s == nil || len(s.trunks)+len(s.acls)+s.ncreds == 0
}

// Problems lists what [Compile] dropped or ignored to fail closed (invalid ACLs, missing
// references, unknown statuses and algorithms), for logs and a metric; nil when the data
// set was clean. It allocates a new slice on each call.
func (s *Snapshot) Problems() []Problem {
	if s == nil || len(s.problems) == 0 {
		return nil
	}
	out := make([]Problem, len(s.problems))
	for i, p := range s.problems {
		out[i] = p.Problem
	}
	return out
}

// TrunkByDomain returns the trunk whose trunk_domain equals host, ignoring ASCII case,
// enabled or not.
func (s *Snapshot) TrunkByDomain(host string) (TrunkID, bool) {
	if s == nil || host == "" {
		return "", false
	}
	i, ok := s.byDomain[host]
	if !ok {
		if !hasUpperASCII(host) {
			return "", false
		}
		var buf [256]byte
		if len(host) > len(buf) {
			i, ok = s.byDomain[lowerASCII(host)]
		} else {
			b := buf[:len(host)]
			copy(b, host)
			for k, c := range b {
				if 'A' <= c && c <= 'Z' {
					b[k] = c + 'a' - 'A'
				}
			}
			i, ok = s.byDomain[string(b)]
		}
		if !ok {
			return "", false
		}
	}
	return s.ids[i], true
}

func hasUpperASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// lowerASCII lower-cases ASCII letters only; it returns s itself when there are none.
func lowerASCII(s string) string {
	if !hasUpperASCII(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// MatchSource returns the single enabled trunk whose ACL has an enabled entry holding src,
// leaving out the trunks whose ACL is shared ([TrunkPolicy.SharedACL]: found by domain
// only). It reports false when there is none or several (two trunks sharing one ACL are
// several): the caller then goes to digest without a trunk.
func (s *Snapshot) MatchSource(src netip.Addr) (TrunkID, bool) {
	if s == nil || s.table == nil {
		return "", false
	}
	t, _ := s.sourceTrunk(src)
	if t < 0 {
		return "", false
	}
	return s.ids[t], true
}

// sourceTrunk is MatchSource by trunk index (-1: none or several), with the table value
// in effect at src (nil: no prefix holds it), from one index walk. s.table is not nil.
func (s *Snapshot) sourceTrunk(src netip.Addr) (int32, *prefixVal) {
	t, p := s.flat.find(s.table, src)
	if t >= 0 {
		if s.trunks[t].SharedACL {
			return -1, p
		}
		return t, p
	}
	if p == nil {
		return -1, nil
	}
	// Several trunks: the answer is the single one not found by domain only.
	one := int32(-1)
	for _, i := range p.trunks {
		if s.trunks[i].SharedACL {
			continue
		}
		if one >= 0 {
			return -1, p
		}
		one = i
	}
	return one, p
}

// Trunk returns the policy of trunk id, enabled or not (shared: do not modify).
func (s *Snapshot) Trunk(id TrunkID) (*TrunkPolicy, bool) {
	if s == nil {
		return nil, false
	}
	i, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return s.trunks[i], true
}

// Allows reports whether trunk id is enabled and src is inside an enabled entry of its
// ACL. A missing trunk, a trunk without (valid) ACL and an empty ACL allow nothing.
//
// It asks the same index as [Snapshot.MatchSource] and looks id up in the trunks in effect
// at src, rather than keeping one matcher per ACL: there is one lookup per source, and no
// id → trunk map lookup at all.
func (s *Snapshot) Allows(id TrunkID, src netip.Addr) bool {
	if s == nil || s.table == nil || id == "" {
		return false
	}
	t, p := s.flat.find(s.table, src)
	switch {
	case t >= 0:
		return s.ids[t] == id
	case p == nil:
		return false
	}
	return s.holds(p.trunks, id)
}

// holds reports whether the sorted set of trunk indices holds trunk id. Trunk indices are
// in id order, so a large set is searched by halves.
func (s *Snapshot) holds(set []int32, id TrunkID) bool {
	lo, hi := 0, len(set)
	for hi-lo > 8 {
		mid := int(uint(lo+hi) >> 1)
		switch c := strings.Compare(string(s.ids[set[mid]]), string(id)); {
		case c == 0:
			return true
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	for _, i := range set[lo:hi] {
		if s.ids[i] == id {
			return true
		}
	}
	return false
}

// credUse is how trunks use one credential.
type credUse struct {
	n     int   // trunks naming it
	takes int   // of which TakesCalls
	trunk int32 // the first that takes calls, else the first
}

// CredentialTrunk returns the trunk an INVITE authenticated by credential uuid alone (no
// trunk by domain or source) belongs to, and how many trunks use that credential:
//
//   - the one trunk using it that takes calls ([TrunkPolicy.TakesCalls]);
//   - when none of them takes calls, one of them, so the caller answers as for a
//     disabled trunk rather than letting its PBX around the disable;
//   - nil when no trunk uses it, or several take calls (ambiguous).
func (s *Snapshot) CredentialTrunk(uuid string) (*TrunkPolicy, int) {
	if s == nil {
		return nil, 0
	}
	u, ok := s.byCred[uuid]
	if !ok || u.takes > 1 {
		return nil, u.n
	}
	return s.trunks[u.trunk], u.n
}

// Credential returns the credential with exactly this username (shared: do not modify),
// whether or not a trunk uses it.
func (s *Snapshot) Credential(username string) (*Credential, bool) {
	if s == nil {
		return nil, false
	}
	c, ok := s.creds[username]
	return c, ok
}

// AcceptingTrunks appends to dst every enabled trunk whose ACL has an enabled entry
// holding src, sorted by id, and returns the extended slice. It allocates only when dst
// has no room.
func (s *Snapshot) AcceptingTrunks(src netip.Addr, dst []TrunkID) []TrunkID {
	if s == nil || s.table == nil {
		return dst
	}
	_, p := s.flat.find(s.table, src)
	if p == nil {
		return dst
	}
	for _, i := range p.trunks {
		dst = append(dst, s.ids[i])
	}
	return dst
}

// Listed reports whether src is inside an enabled entry of an ACL that some trunk, enabled
// or not, names: such sources are known PBXs, which are exempt from bans.
func (s *Snapshot) Listed(src netip.Addr) bool {
	if s == nil || s.table == nil {
		return false
	}
	_, p := s.flat.find(s.table, src)
	return p != nil
}

// Stats counts what a snapshot holds, for metrics and /readyz.
type Stats struct {
	Trunks      int // all trunks, enabled or not
	ACLs        int // stored ACLs
	Prefixes    int // distinct enabled prefixes in the matcher
	Credentials int // usable credentials
}

// Stats returns the sizes of s (zero for nil). It walks nothing: O(1).
func (s *Snapshot) Stats() Stats {
	if s == nil {
		return Stats{}
	}
	st := Stats{Trunks: len(s.trunks), ACLs: len(s.acls), Credentials: len(s.creds)}
	if s.table != nil {
		st.Prefixes = s.table.Size()
	}
	return st
}
