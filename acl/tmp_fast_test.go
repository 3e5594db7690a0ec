package acl

import (
	"runtime"
	"testing"

	"github.com/gaissmai/bart"
)

func BenchmarkTmpAB(b *testing.B) {
	bs := newBenchSet(100000)
	s := mustCompile(b, bs.ds)
	f := new(bart.Fast[tval])
	for p, v := range s.table.All() {
		f.Insert(p, v)
	}
	mask := len(bs.addrs) - 1
	b.Run("table", func(b *testing.B) {
		runtime.GC()
		i := 0
		for b.Loop() {
			a := bs.addrs[i&mask]
			v, _ := s.table.Lookup(a)
			v2, _ := s.table.Lookup(a)
			sinkBool = v.match == v2.match
			i++
		}
	})
	b.Run("fast", func(b *testing.B) {
		runtime.GC()
		i := 0
		for b.Loop() {
			a := bs.addrs[i&mask]
			v, _ := f.Lookup(a)
			v2, _ := f.Lookup(a)
			sinkBool = v.match == v2.match
			i++
		}
	})
}
