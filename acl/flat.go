package acl

import (
	"encoding/binary"
	"iter"
	"math"
	"net/netip"
	"slices"
)

// The flat index is the read side of Snapshot.table. The bart table stays the source of
// truth (incremental updates, Explain, hit attribution); what the packet path asks — the
// prefix value in effect at one address — is answered from a layout built for that one
// question, with two dependent memory loads instead of one per trie level:
//
//   - The address space of each family is cut into 65,536 buckets by its first 16 bits.
//     A two-level directory (256 pages of 256 offsets) maps a bucket to its chunk.
//   - A chunk lists, in address order, the ranges of its bucket in which one prefix value
//     is in effect: the first entry holds the value in effect at the bucket's first
//     address (and, in its start field, the chunk's length); every further entry starts a
//     new range. A lookup scans (or, for long chunks, halves) one chunk for the last range
//     starting at or below the address. The bucket of an address no prefix touches points
//     at chunk 0, the empty one.
//
// A data set of 100k random prefixes makes chunks of one to a few entries: the directory
// page and the chunk are the only cache misses of a lookup, where a trie walk has one per
// level (BenchmarkMatch). A bucket crowded with more than crowdLimit ranges (thousands of
// entries in one /16) is left to the trie: its chunk is one entry saying so.
//
// Chunks live in immutable segments. [Snapshot.WithACL] rebuilds only the buckets the
// changed prefixes touch, appends them as one new segment and copies only the directory
// pages it rewrites; the older segments are shared with the parent snapshot. Once there
// are maxSegments segments, or their dead chunks outweigh the live ones, the live chunks
// are copied into one segment again.

const (
	bucketBits  = 16
	segShift    = 27 // a chunk offset is segment<<segShift | index in the segment (≤ 134M entries, ~60M prefixes)
	maxSegments = 1 << (32 - segShift)
	segMask     = 1<<segShift - 1
	flatLinear  = 8  // chunks up to this long are scanned, longer ones halved
	crowdLimit  = 48 // a bucket with more ranges is delegated to the bart table

	// delegated marks the one-entry chunk of a crowded bucket: the trie, whose dense
	// nodes are what crowding makes, answers for it (BenchmarkMatchCrowded).
	delegated = -2
)

// ent4 is one range of an IPv4 chunk.
type ent4 struct {
	start uint32     // first address of the range; in a chunk's first entry, the chunk's length
	trunk int32      // the one enabled trunk accepting the range, -1 for none or several, or delegated
	p     *prefixVal // the value in effect; nil: no prefix holds the range
}

// ent6 is one range of an IPv6 chunk.
type ent6 struct {
	hi, lo uint64 // first address of the range; in a chunk's first entry, hi is the length
	trunk  int32
	p      *prefixVal
}

type page = [256]uint32

// emptyPage is the directory page of 256 buckets that no prefix touches. It is shared
// and never written.
var emptyPage page

// flatFamily is the flat index of one address family.
type flatFamily[E any] struct {
	pages   [256]*page // by the first octet; then by the second
	segs    [][]E      // immutable chunk segments; segs[0][0] is the empty chunk
	live    int        // entries the directory refers to, counting a shared chunk once per bucket
	garbage int        // entries no directory page refers to any more
}

// u128 is an address of either family as a number (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) next() u128 {
	if a.lo == math.MaxUint64 {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

// family describes how one address family maps to u128 numbers and buckets.
type family[E any] struct {
	is4      bool
	max      u128                // the last address
	bucket   func(a u128) uint32 // the bucket of an address
	first    func(b uint32) u128 // the first address of a bucket
	entry    func(start u128, p *prefixVal) E
	header   func(n int, p *prefixVal) E // a chunk's first entry
	length   func(e *E) int              // a chunk's length, from its first entry
	delegate E                           // the chunk of a crowded bucket
}

var fam4 = family[ent4]{
	is4:    true,
	max:    u128{0, math.MaxUint32},
	bucket: func(a u128) uint32 { return uint32(a.lo) >> bucketBits },
	first:  func(b uint32) u128 { return u128{0, uint64(b) << bucketBits} },
	entry: func(start u128, p *prefixVal) ent4 {
		return ent4{start: uint32(start.lo), trunk: soleTrunk(p), p: p}
	},
	header:   func(n int, p *prefixVal) ent4 { return ent4{start: uint32(n), trunk: soleTrunk(p), p: p} },
	length:   func(e *ent4) int { return int(e.start) },
	delegate: ent4{start: 1, trunk: delegated},
}

var fam6 = family[ent6]{
	max:    u128{math.MaxUint64, math.MaxUint64},
	bucket: func(a u128) uint32 { return uint32(a.hi >> (64 - bucketBits)) },
	first:  func(b uint32) u128 { return u128{uint64(b) << (64 - bucketBits), 0} },
	entry: func(start u128, p *prefixVal) ent6 {
		return ent6{hi: start.hi, lo: start.lo, trunk: soleTrunk(p), p: p}
	},
	header:   func(n int, p *prefixVal) ent6 { return ent6{hi: uint64(n), trunk: soleTrunk(p), p: p} },
	length:   func(e *ent6) int { return int(e.hi) },
	delegate: ent6{hi: 1, trunk: delegated},
}

// soleTrunk is the one trunk index of p's closure, or -1 for none or several.
func soleTrunk(p *prefixVal) int32 {
	if p != nil && len(p.trunks) == 1 {
		return p.trunks[0]
	}
	return -1
}

// prefixRange returns the first and last address of p as numbers.
func prefixRange(p netip.Prefix) (lo, hi u128) {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		x := uint64(binary.BigEndian.Uint32(b[:]))
		return u128{0, x}, u128{0, x | (1<<(32-p.Bits()) - 1)}
	}
	b := a.As16()
	lo = u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	hi = lo
	if host := 128 - p.Bits(); host >= 64 {
		hi.lo = math.MaxUint64
		hi.hi |= 1<<(host-64) - 1
	} else {
		hi.lo |= 1<<host - 1
	}
	return lo, hi
}

// bucketPrefix is the prefix of bucket b of the family.
func (f *family[E]) bucketPrefix(b uint32) netip.Prefix {
	if f.is4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(b >> 8), byte(b)}), bucketBits)
	}
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{byte(b >> 8), byte(b)}), bucketBits)
}

// span is one range of a sweep: from start on, p is in effect.
type span struct {
	start u128
	p     *prefixVal
}

// sweep appends to out the ranges of [first, last] in address order: base is the value in
// effect at first (nil for none), and prefixes, in CIDR order (address, then length),
// are the prefixes inside [first, last] with their values. A prefix inside another takes
// precedence over it; adjacent ranges with the same value are merged.
func sweep(out []span, first, last u128, base *prefixVal, prefixes iter.Seq2[netip.Prefix, *prefixVal]) []span {
	out = append(out, span{first, base})
	top := len(out) - 1 // the first range of this sweep
	emit := func(start u128, p *prefixVal) {
		l := &out[len(out)-1]
		switch {
		case l.start == start:
			l.p = p
			if len(out)-1 > top && out[len(out)-2].p == p {
				out = out[:len(out)-1]
			}
		case l.p != p:
			out = append(out, span{start, p})
		}
	}
	type frame struct {
		last u128
		p    *prefixVal
	}
	var stack []frame
	current := func() *prefixVal {
		if len(stack) == 0 {
			return base
		}
		return stack[len(stack)-1].p
	}
	pop := func(before u128) { // ends every open prefix that ends before before
		for len(stack) > 0 && stack[len(stack)-1].last.less(before) {
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			emit(f.last.next(), current())
		}
	}
	for p, v := range prefixes {
		lo, hi := prefixRange(p)
		pop(lo)
		emit(lo, v)
		stack = append(stack, frame{hi, v})
	}
	pop(last) // prefixes ending at last end the sweep
	return out
}

// buildFlat builds the flat index of one family from scratch.
func buildFlat[E any](f *family[E], prefixes iter.Seq2[netip.Prefix, *prefixVal]) flatFamily[E] {
	spans := sweep(nil, u128{}, f.max, nil, prefixes)
	seg := make([]E, 1, len(spans)+len(spans)/2+1)
	seg[0] = f.header(1, nil)
	var ff flatFamily[E]
	for i := range ff.pages {
		ff.pages[i] = &emptyPage
	}
	single := map[*prefixVal]uint32{nil: 0} // buckets inside one range share its chunk
	r := 0                                  // the span in effect at the current bucket's first address
	for b := uint32(0); b < 1<<bucketBits; b++ {
		first := f.first(b)
		for r+1 < len(spans) && !first.less(spans[r+1].start) {
			r++
		}
		end := r + 1 // spans[r+1:end] start inside the bucket
		for end < len(spans) && f.bucket(spans[end].start) == b {
			end++
		}
		var off uint32
		if end == r+1 {
			o, ok := single[spans[r].p]
			if !ok {
				o = uint32(len(seg))
				seg = append(seg, f.header(1, spans[r].p))
				single[spans[r].p] = o
			}
			off = o
		} else {
			off = uint32(len(seg))
			seg = appendChunk(f, seg, spans[r].p, spans[r+1:end])
		}
		if off != 0 {
			ff.setOffset(b, off)
			ff.live += f.length(&seg[off])
		}
		r = end - 1
	}
	ff.segs = [][]E{seg}
	return ff
}

// appendChunk appends the chunk of a bucket: head in effect at its first address, then
// the ranges starting inside it; or, when there are too many, the delegated mark.
func appendChunk[E any](f *family[E], seg []E, head *prefixVal, inner []span) []E {
	if len(inner) >= crowdLimit {
		return append(seg, f.delegate)
	}
	seg = append(seg, f.header(1+len(inner), head))
	for _, s := range inner {
		seg = append(seg, f.entry(s.start, s.p))
	}
	return seg
}

// setOffset points bucket b at off in a directory being built: its pages are its own,
// except the shared empty page, which it replaces before writing.
func (ff *flatFamily[E]) setOffset(b uint32, off uint32) {
	pg := ff.pages[b>>8]
	if pg == &emptyPage {
		pg = new(page)
		ff.pages[b>>8] = pg
	}
	pg[b&0xff] = off
}

func (ff *flatFamily[E]) offset(b uint32) uint32 { return ff.pages[b>>8][b&0xff] }

// chunk returns the chunk at off.
func (ff *flatFamily[E]) chunk(f *family[E], off uint32) []E {
	seg := ff.segs[off>>segShift][off&segMask:]
	return seg[:f.length(&seg[0])]
}

// updateFlat returns ff with the buckets touched by changed rebuilt from t, which must
// already hold the changes. ff is not modified; the result shares its untouched pages and
// its segments.
func updateFlat[E any](f *family[E], ff *flatFamily[E], t *prefixTable, changed []netip.Prefix) flatFamily[E] {
	var buckets []uint32
	for _, p := range changed {
		if p.Addr().Is4() != f.is4 {
			continue
		}
		lo, hi := prefixRange(p)
		for b := f.bucket(lo); ; b++ {
			buckets = append(buckets, b)
			if b == f.bucket(hi) {
				break
			}
		}
	}
	if len(buckets) == 0 {
		return *ff
	}
	slices.Sort(buckets)
	buckets = slices.Compact(buckets)
	all := t.AllSorted6
	if f.is4 {
		all = t.AllSorted4
	}
	if len(buckets) > 1<<(bucketBits-4) { // a short prefix: cheaper from scratch
		return buildFlat(f, all())
	}

	nf := *ff
	copied := make(map[uint32]bool) // pages nf owns
	var seg []E
	var spans []span
	for _, b := range buckets {
		old := ff.offset(b)
		if old != 0 {
			n := f.length(&ff.chunk(f, old)[0])
			nf.live -= n
			nf.garbage += n
		}
		bp := f.bucketPrefix(b)
		base, _ := t.LookupPrefix(bp) // the longest prefix holding the whole bucket
		first := f.first(b)
		_, last := prefixRange(bp)
		spans = sweep(spans[:0], first, last, base, t.Subnets(bp))
		if pg := b >> 8; !copied[pg] {
			cp := *nf.pages[pg]
			nf.pages[pg] = &cp
			copied[pg] = true
		}
		var off uint32
		if len(spans) > 1 || spans[0].p != nil {
			at := len(seg)
			off = uint32(len(nf.segs))<<segShift | uint32(at)
			seg = appendChunk(f, seg, spans[0].p, spans[1:])
			nf.live += len(seg) - at
		}
		nf.pages[b>>8][b&0xff] = off
	}
	if len(seg) > 0 {
		nf.segs = append(slices.Clip(nf.segs), seg)
	}
	if len(nf.segs) == maxSegments || nf.garbage > nf.live+1024 {
		nf.compact(f)
	}
	return nf
}

// compact copies the live chunks into one new segment and points new pages at them; the
// old pages and segments are left as they are for the snapshots sharing them.
func (ff *flatFamily[E]) compact(f *family[E]) {
	seg := make([]E, 1, ff.live+1)
	seg[0] = f.header(1, nil)
	for i, pg := range ff.pages {
		if pg == &emptyPage {
			continue
		}
		np := new(page)
		for j, off := range pg {
			if off != 0 {
				np[j] = uint32(len(seg))
				seg = append(seg, ff.chunk(f, off)...)
			}
		}
		ff.pages[i] = np
	}
	ff.segs = [][]E{seg}
	ff.live = len(seg) - 1
	ff.garbage = 0
}

// find4 returns the range of the IPv4 index holding a.
func find4(ff *flatFamily[ent4], a uint32) *ent4 {
	off := ff.pages[a>>24][byte(a>>16)]
	c := ff.segs[off>>segShift][off&segMask:]
	n := int(c[0].start)
	c = c[:n]
	if n <= flatLinear {
		e := &c[0]
		for k := 1; k < n && c[k].start <= a; k++ {
			e = &c[k]
		}
		return e
	}
	lo, hi := 1, n // the answer is c[lo-1]: the last entry starting at or below a
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c[mid].start <= a {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return &c[lo-1]
}

// find6 returns the range of the IPv6 index holding hi:lo.
func find6(ff *flatFamily[ent6], hi, lo uint64) *ent6 {
	off := ff.pages[hi>>56][byte(hi>>48)]
	c := ff.segs[off>>segShift][off&segMask:]
	n := int(c[0].hi)
	c = c[:n]
	le := func(e *ent6) bool { return e.hi < hi || (e.hi == hi && e.lo <= lo) }
	if n <= flatLinear {
		e := &c[0]
		for k := 1; k < n && le(&c[k]); k++ {
			e = &c[k]
		}
		return e
	}
	l, h := 1, n
	for l < h {
		mid := int(uint(l+h) >> 1)
		if le(&c[mid]) {
			l = mid + 1
		} else {
			h = mid
		}
	}
	return &c[l-1]
}

// flatIndex is the flat index of both families.
type flatIndex struct {
	v4 flatFamily[ent4]
	v6 flatFamily[ent6]
}

func buildFlatIndex(t *prefixTable) flatIndex {
	return flatIndex{buildFlat(&fam4, t.AllSorted4()), buildFlat(&fam6, t.AllSorted6())}
}

// update returns the index of t, which differs from the table of x only inside changed.
func (x *flatIndex) update(t *prefixTable, changed []netip.Prefix) flatIndex {
	return flatIndex{updateFlat(&fam4, &x.v4, t, changed), updateFlat(&fam6, &x.v6, t, changed)}
}

// find returns the trunk index (-1 for none or several) and the prefix value (nil for
// none) in effect at a. t is the table the index describes, for crowded buckets.
func (x *flatIndex) find(t *prefixTable, a netip.Addr) (trunk int32, p *prefixVal) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		e := find4(&x.v4, binary.BigEndian.Uint32(b[:]))
		trunk, p = e.trunk, e.p
	} else if a.Is6() {
		b := a.As16()
		e := find6(&x.v6, binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]))
		trunk, p = e.trunk, e.p
	} else {
		return -1, nil
	}
	if trunk == delegated {
		p, _ = t.Lookup(a)
		trunk = soleTrunk(p)
	}
	return trunk, p
}
