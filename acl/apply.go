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
// snapshot of 100k prefixes costs a fraction of a millisecond instead of a full [Compile]
// (see BenchmarkApplyOne).
//
// An invalid a (see [ValidateACL]) is refused with its *[ValidationError]; the caller
// keeps s. Trunks never change here: an ACL that no trunk names only updates the stored
// ACL state. The caller orders versions; WithACL does not compare them. A nil s is
// treated as an empty snapshot.
func (s *Snapshot) WithACL(a IPACL, version uint64) (*Snapshot, error) {
	if s == nil {
		s = &Snapshot{table: new(prefixTable)}
		s.flat = buildFlatIndex(s.table)
	}
	u := s.uses[a.UUID]
	st, err := newACLState(&a, u != nil)
	if err != nil {
		return nil, err
	}
	ns := *s
	ns.version = version
	ns.problems = dropProblems(s.problems, a.UUID)
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
	hadACL := found && s.acls[i].valid
	if hadACL {
		old = s.acls[i].prefixes
	}
	removed, added := diffPrefixes(old, st.prefixes)
	if !hadACL || s.acls[i].shared != st.shared {
		// The trunks naming the ACL had none (missing or invalid), or its shared mark
		// changed: they now have this one.
		ns.trunks = slices.Clone(s.trunks)
		for _, t := range u.all {
			p := *s.trunks[t]
			p.HasACL = true
			p.SharedACL = st.shared
			ns.trunks[t] = &p
		}
	}
	ns.table = applyPrefixes(s.table, st, removed, added, s.uses)
	ns.flat = s.flat.update(ns.table, append(removed, added...))
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

// applyPrefixes returns t with the ACL st owning added and no longer owning removed, and
// the closure of every prefix at or below a changed one recomputed. t is not modified.
//
// Each changed prefix is a root of work unless a changed prefix covers it. Below a root,
// the new values are computed first (supernets before subnets, so every closure extends
// its parent's), then written with one InsertPersist or DeletePersist each: every
// persistent operation clones the trie path to its prefix, so there are as few as can be.
func applyPrefixes(t *prefixTable, st *aclState, removed, added []netip.Prefix, uses map[string]*aclUse) *prefixTable {
	changes := mergeChanges(removed, added)
	type write struct {
		p   netip.Prefix
		v   *prefixVal
		del bool
	}
	var writes []write
	type below struct {
		p      netip.Prefix
		v      *prefixVal
		inT    bool // p is in t with value v
		change int8 // +1 st gains p, -1 st loses p, 0 unchanged
	}
	var work []below
	var stackP []netip.Prefix
	var stackT [][]int32
	for i := 0; i < len(changes); {
		root := changes[i].p
		// The nearest prefix above root is unchanged and below no change: its closure holds.
		var base []int32
		for q, v := range t.Supernets(root) {
			if q.Bits() < root.Bits() {
				base = v.trunks
				break
			}
		}
		// Merge what t holds below root with the changes below root, both sorted.
		work = work[:0]
		for x, v := range t.Subnets(root) {
			for i < len(changes) && comparePrefix(changes[i].p, x) < 0 {
				work = append(work, below{p: changes[i].p, change: changes[i].change})
				i++
			}
			b := below{p: x, v: v, inT: true}
			if i < len(changes) && changes[i].p == x {
				b.change = changes[i].change
				i++
			}
			work = append(work, b)
		}
		for i < len(changes) && covers(root, changes[i].p) {
			work = append(work, below{p: changes[i].p, change: changes[i].change})
			i++
		}

		stackP, stackT = stackP[:0], stackT[:0]
		for _, b := range work {
			var owners []string
			if b.inT {
				owners = b.v.owners
			}
			switch b.change {
			case +1:
				owners = withOwner(owners, st)
			case -1:
				owners = withoutOwner(owners, st.uuid)
			}
			if len(owners) == 0 {
				if b.inT {
					writes = append(writes, write{p: b.p, del: true})
				}
				continue
			}
			for len(stackP) > 0 && !covers(stackP[len(stackP)-1], b.p) {
				stackP, stackT = stackP[:len(stackP)-1], stackT[:len(stackT)-1]
			}
			parent := base
			if len(stackT) > 0 {
				parent = stackT[len(stackT)-1]
			}
			trunks := closure(parent, owners, uses)
			stackP, stackT = append(stackP, b.p), append(stackT, trunks)
			if b.inT && b.change == 0 && slices.Equal(trunks, b.v.trunks) {
				continue // unchanged
			}
			writes = append(writes, write{p: b.p, v: &prefixVal{prefix: b.p, owners: owners, trunks: trunks}})
		}
	}
	// Inserts and updates go in as one union, which clones each touched node once.
	var upserts prefixTable
	for _, w := range writes {
		if w.del {
			t = t.DeletePersist(w.p)
		} else {
			upserts.Insert(w.p, w.v)
		}
	}
	return t.UnionPersist(&upserts)
}

// withOwner returns owners with st's uuid added, sorted; owners is not modified.
func withOwner(owners []string, st *aclState) []string {
	if len(owners) == 0 {
		return st.self
	}
	i, _ := slices.BinarySearch(owners, st.uuid)
	return slices.Insert(slices.Clip(owners), i, st.uuid)
}

// withoutOwner returns owners without uuid; owners is not modified.
func withoutOwner(owners []string, uuid string) []string {
	out := make([]string, 0, len(owners))
	for _, o := range owners {
		if o != uuid {
			out = append(out, o)
		}
	}
	return out
}

// change is one prefix an ACL gains (+1) or loses (-1).
type change struct {
	p      netip.Prefix
	change int8
}

// mergeChanges merges the disjoint sorted lists removed and added into one sorted list.
func mergeChanges(removed, added []netip.Prefix) []change {
	out := make([]change, 0, len(removed)+len(added))
	for len(removed) > 0 || len(added) > 0 {
		if len(added) == 0 || (len(removed) > 0 && comparePrefix(removed[0], added[0]) < 0) {
			out, removed = append(out, change{removed[0], -1}), removed[1:]
		} else {
			out, added = append(out, change{added[0], +1}), added[1:]
		}
	}
	return out
}
