package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func FuzzParsePrefix(f *testing.F) {
	for _, tt := range parsePrefixTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidPrefix) {
				t.Fatalf("ParsePrefix(%q): error %v does not wrap ErrInvalidPrefix", s, err)
			}
			if p.IsValid() {
				t.Fatalf("ParsePrefix(%q) returned %v with an error", s, p)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Bits() == 0 || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			t.Fatalf("ParsePrefix(%q) = %v: not canonical", s, p)
		}
		c := CanonicalString(p)
		back, err := ParsePrefix(c)
		if err != nil || back != p {
			t.Fatalf("ParsePrefix(CanonicalString(%v) = %q) = %v, %v", p, c, back, err)
		}
		if CanonicalString(back) != c {
			t.Fatalf("CanonicalString not stable for %q", c)
		}
		// Independent check with net/netip: the canonical string means the same prefix.
		want, err := netip.ParsePrefix(c)
		if err != nil {
			a, err2 := netip.ParseAddr(c)
			if err2 != nil {
				t.Fatalf("net/netip cannot parse canonical %q: %v", c, err)
			}
			want = netip.PrefixFrom(a, a.BitLen())
		}
		if want != p {
			t.Fatalf("canonical %q is %v to net/netip, want %v", c, want, p)
		}
	})
}

// fuzzBytes hands out the fuzzer's bytes, then zeros.
type fuzzBytes []byte

func (b *fuzzBytes) next() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

func (b *fuzzBytes) intn(n int) int { return int(b.next()) % n }

// prefix draws a prefix from a tiny space (10.0.0-3.x, 2001:db8::0-3:x) so that nesting
// and duplicates are frequent, and sometimes a value that is not canonical at all.
func (b *fuzzBytes) prefix() string {
	kind, x, y := b.next(), b.next(), b.next()
	if kind == 0xff {
		return []string{"garbage", "0.0.0.0/0", "10.0.0.1/8", " 10.0.0.1", "10.0.0.1/32", "::ffff:10.0.0.1"}[x%6]
	}
	if kind&1 == 0 {
		bits := []int{8, 16, 24, 26, 28, 30, 31, 32}[kind>>1&7]
		return CanonicalString(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, x & 3, y}), bits).Masked())
	}
	bits := []int{32, 64, 112, 120, 124, 126, 127, 128}[kind>>1&7]
	var a [16]byte
	a[0], a[1], a[2], a[3], a[13], a[15] = 0x20, 0x01, 0x0d, 0xb8, x&3, y
	return CanonicalString(netip.PrefixFrom(netip.AddrFrom16(a), bits).Masked())
}

func (b *fuzzBytes) acl(uuid string) IPACL {
	a := mkACL(uuid)
	for i := range b.intn(6) {
		a.Entries = append(a.Entries, Entry{ID: fmt.Sprint(i), IPAddress: b.prefix(), Enabled: b.next()&7 != 0})
	}
	return a
}

func (b *fuzzBytes) dataset() *Dataset {
	ds := &Dataset{Version: 1}
	nACL := 1 + b.intn(4)
	for i := range nACL {
		ds.ACLs = append(ds.ACLs, b.acl(fmt.Sprint("a", i)))
	}
	for i := range 1 + b.intn(5) {
		tr := mkTrunk(TrunkID(fmt.Sprint("t", i)), "")
		if n := b.intn(nACL + 2); n <= nACL { // nACL names a missing ACL, nACL+1 none
			tr.ACLUUID = fmt.Sprint("a", n)
		}
		if b.next()&3 == 0 {
			tr.Status = TrunkDisabled
		}
		ds.Trunks = append(ds.Trunks, tr)
	}
	return ds
}

// fuzzAddrs returns the edges of every prefix, their neighbours and mapped forms.
func fuzzAddrs(ds ...*Dataset) []netip.Addr {
	out := []netip.Addr{{}, aa("10.0.0.0"), aa("2001:db8::")}
	for _, d := range ds {
		for _, p := range datasetPrefixes(d) {
			first, last := p.Addr(), netipLast(p)
			out = append(out, first, last, first.Prev(), last.Next())
			if first.Is4() {
				out = append(out, netip.AddrFrom16(first.As16()))
			} else {
				out = append(out, first.WithZone("eth0"))
			}
		}
	}
	return out
}

func FuzzSnapshotVsReference(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 3, 0, 0, 1, 4, 2, 1, 0, 0, 6, 0, 7, 1, 1, 3, 1, 1, 1, 0, 1})
	f.Add([]byte{3, 5, 0, 0, 5, 1, 2, 0, 128, 1, 4, 0, 0, 1, 14, 1, 7, 1, 0xff, 1, 0, 1, 4, 0, 1, 1, 2, 2, 1, 0, 0, 1, 1, 4, 1, 2, 3})
	f.Add([]byte{1, 4, 14, 1, 1, 1, 15, 1, 1, 1, 12, 0, 9, 1, 6, 0, 3, 1, 1, 3, 0, 1, 1, 1, 2, 1, 0, 4, 14, 1, 2, 1, 0, 0, 8, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		b := fuzzBytes(data)
		ds := b.dataset()
		s, err := Compile(ds)
		if err != nil {
			t.Fatalf("Compile: %v", err) // the generator makes no structural garbage
		}
		checkAgainstReference(t, s, newReference(ds), fuzzAddrs(ds))

		// Then replace one ACL incrementally and compare with a full compile.
		a := b.acl(fmt.Sprint("a", b.intn(len(ds.ACLs)+1)))
		ns, err := s.WithACL(a, 2)
		if _, verr := ValidateACL(&a); (err != nil) != (verr != nil) {
			t.Fatalf("WithACL error %v, ValidateACL error %v", err, verr)
		}
		if err != nil {
			return
		}
		nds := withACLInDataset(ds, a, 2)
		addrs := fuzzAddrs(ds, nds)
		checkSameSnapshot(t, ns, mustCompile(t, nds))
		checkAgainstReference(t, ns, newReference(nds), addrs)
		checkAgainstReference(t, s, newReference(ds), addrs)
	})
}
