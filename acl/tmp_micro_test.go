package acl

import (
	"testing"
)

func BenchmarkMicro(b *testing.B) {
	bs := newBenchSet(100000)
	s := mustCompile(b, bs.ds)
	mask := len(bs.addrs) - 1
	b.Run("lookup", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_, ok := s.table.Lookup(bs.addrs[i&mask])
			sinkBool = ok
			i++
		}
	})
	b.Run("contains", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sinkBool = s.table.Contains(bs.addrs[i&mask])
			i++
		}
	})
	b.Run("match", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_, sinkBool = s.MatchSource(bs.addrs[i&mask])
			i++
		}
	})
	b.Run("mapid", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_, sinkBool = s.byID[bs.ids[(i*7919)%len(bs.ids)]]
			i++
		}
	})
	b.Run("allows", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sinkBool = s.Allows(bs.ids[(i*7919)%len(bs.ids)], bs.addrs[i&mask])
			i++
		}
	})
}
