package acl

import (
	"net/netip"
	"slices"
)

// WithACL returns a new snapshot at version in which the ACL a.UUID is a: its entries
// replaced (or the ACL added). It is the incremental form of compiling the data set again
// with a in place of the stored ACL, and answers every query the same way such a compile
// would. s itself is not changed and stays valid: the result shares everything a does not
// touch, and the prefix table is updated copy-on-write, so applying one small ACL to a
// snapshot of 100k prefixes takes microseconds instead of a full [Compile].
//
// An invalid a (see [ValidateACL]) is refused with its *[ValidationError]; the caller
// keeps s. Trunks never change here: an ACL that no trunk names only updates the stored
// ACL state. The caller orders versions; WithACL does not compare them. A nil s is
// treated as an empty snapshot.
func (s *Snapshot) WithACL(a IPACL, version uint64) (*Snapshot, error) {
	if _, err := ValidateACL(&a); err != nil {
		return nil, err
	}
	if s == nil {
		s = &Snapshot{table: new(prefixTable)}
	}
	ns := *s
	ns.version = version
	ns.problems = dropProblems(s.problems, a.UUID)

	u := s.uses[a.UUID]
	st, _ := newACLState(&a, false) // validated above; prefixes are added below if named
	i, found := findACL(s.acls, a.UUID)
	if found {
		ns.acls = slices.Clone(s.acls)
		ns.acls[i] = st
	} else {
		ns.acls = slices.Insert(slices.Clip(s.acls), i, st)
	}
	if u == nil {
		return &ns, nil
	}

	var old []netip.Prefix
	var oldState *aclState
	if found && s.acls[i].valid {
		oldState = s.acls[i]
		old = oldState.prefixes
	}
	st.self = []string{a.UUID}
	for _, e := range a.Entries {
		if e.Enabled {
			p, _ := ParsePrefix(e.IPAddress) // validated above
			st.prefixes = append(st.prefixes, p)
		}
	}
	slices.SortFunc(st.prefixes, comparePrefix)
	removed, added := diffPrefixes(old, st.prefixes)
	st.m = updateMatcher(oldState, st.prefixes, removed, added)

	ns.matchers = slices.Clone(s.matchers)
	for _, t := range u.enabled {
		ns.matchers[t] = st
	}
	if oldState == nil {
		// The trunks naming the ACL had none (missing or invalid): now they have one.
		ns.trunks = slices.Clone(s.trunks)
		for _, t := range u.all {
			p := *s.trunks[t]
			p.HasACL = true
			ns.trunks[t] = &p
		}
	}
	ns.table = applyPrefixes(s.table, st, removed, added, s.uses, s.ids)
	return &ns, nil
}

// dropProblems returns the problems not about the ACL uuid, sharing ps when there are none.
func dropProblems(ps []problem, uuid string) []problem {
	if !slices.ContainsFunc(ps, func(p problem) bool { return p.acl == uuid }) {
		return ps
	}
	out := make([]problem, 0, len(ps))
	for _, p := range ps {
		if p.acl != uuid {
			out = append(out, p)
		}
	}
	return out
}

// diffPrefixes compares two lists sorted by comparePrefix and returns what only old has
// and what only new has, both sorted.
func diffPrefixes(old, new []netip.Prefix) (removed, added []netip.Prefix) {
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		switch c := comparePrefix(old[i], new[j]); {
		case c < 0:
			removed = append(removed, old[i])
			i++
		case c > 0:
			added = append(added, new[j])
			j++
		default:
			i, j = i+1, j+1
		}
	}
	return append(removed, old[i:]...), append(added, new[j:]...)
}

// updateMatcher derives the matcher of the new prefixes. A large matcher with few changes
// is updated copy-on-write; anything else is built afresh.
func updateMatcher(old *aclState, prefixes, removed, added []netip.Prefix) matcher {
	if old == nil || old.m.big == nil || len(prefixes) <= smallACL || len(removed)+len(added) > len(prefixes)/4 {
		return newMatcher(prefixes)
	}
	b := old.m.big
	for _, p := range removed {
		b = b.DeletePersist(p)
	}
	for _, p := range added {
		b = b.InsertPersist(p)
	}
	return matcher{big: b}
}

// applyPrefixes returns t with the ACL st owning added and no longer owning removed, and
// the closures of every prefix at or below a changed one recomputed. t is not modified.
func applyPrefixes(t *prefixTable, st *aclState, removed, added []netip.Prefix, uses map[string]*aclUse, ids []TrunkID) *prefixTable {
	if len(removed)+len(added) == 0 {
		return t
	}
	// Values created here are not shared with t yet, so they may still be completed in place.
	fresh := make(map[*prefixVal]struct{}, len(removed)+len(added))
	for _, p := range removed {
		t = t.ModifyPersist(p, func(v tval, ok bool) (tval, bool) {
			if !ok {
				return v, true
			}
			owners := make([]string, 0, len(v.p.owners))
			for _, o := range v.p.owners {
				if o != st.uuid {
					owners = append(owners, o)
				}
			}
			if len(owners) == 0 {
				return v, true
			}
			nv := &prefixVal{owners: owners, trunks: v.p.trunks}
			fresh[nv] = struct{}{}
			return tval{v.match, nv}, false
		})
	}
	for _, p := range added {
		t = t.ModifyPersist(p, func(v tval, ok bool) (tval, bool) {
			nv := &prefixVal{owners: st.self}
			if ok {
				nv.trunks = v.p.trunks
				i, _ := slices.BinarySearch(v.p.owners, st.uuid)
				nv.owners = slices.Insert(slices.Clip(v.p.owners), i, st.uuid)
			}
			fresh[nv] = struct{}{}
			return tval{v.match, nv}, false
		})
	}

	type update struct {
		p netip.Prefix
		v tval
	}
	var updates []update
	var root netip.Prefix
	var stackP []netip.Prefix
	var stackT [][]int32
	for _, r := range mergePrefixes(removed, added) {
		if root.IsValid() && covers(root, r) {
			continue // already walked below root
		}
		root = r
		// The nearest prefix above root lies below no changed prefix: its closure holds.
		var base []int32
		for q, v := range t.Supernets(r) {
			if q.Bits() < r.Bits() {
				base = v.p.trunks
				break
			}
		}
		stackP, stackT = stackP[:0], stackT[:0]
		for x, v := range t.Subnets(r) {
			for len(stackP) > 0 && !covers(stackP[len(stackP)-1], x) {
				stackP, stackT = stackP[:len(stackP)-1], stackT[:len(stackT)-1]
			}
			parent := base
			if len(stackT) > 0 {
				parent = stackT[len(stackT)-1]
			}
			trunks := closure(parent, v.p.owners, uses)
			if !slices.Equal(trunks, v.p.trunks) {
				p := v.p
				if _, ok := fresh[p]; ok {
					p.trunks = trunks // not shared yet
				} else {
					p = &prefixVal{owners: p.owners, trunks: trunks}
				}
				if nv := newTval(p, ids); nv != v {
					updates = append(updates, update{x, nv})
				}
			}
			stackP, stackT = append(stackP, x), append(stackT, trunks)
		}
	}
	for _, u := range updates {
		t = t.InsertPersist(u.p, u.v)
	}
	return t
}

// mergePrefixes merges two disjoint lists sorted by comparePrefix.
func mergePrefixes(a, b []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if comparePrefix(a[0], b[0]) < 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
