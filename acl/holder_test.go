package acl

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

func TestHolderZeroValue(t *testing.T) {
	var h Holder
	if h.Load() != nil {
		t.Fatal("zero Holder is not empty")
	}
	var nilHolder *Holder
	if nilHolder.Load() != nil {
		t.Fatal("nil Holder loads a snapshot")
	}
	s1 := mustCompile(t, &Dataset{Version: 1})
	s2 := mustCompile(t, &Dataset{Version: 2})
	h.Store(s1)
	if h.Load() != s1 {
		t.Fatal("Load after Store")
	}
	if old := h.Swap(s2); old != s1 || h.Load() != s2 {
		t.Fatal("Swap")
	}
	if h.CompareAndSwap(s1, s1) || !h.CompareAndSwap(s2, s1) || h.Load() != s1 {
		t.Fatal("CompareAndSwap")
	}
}

// TestHolderConcurrentSwap is meant for -race: readers hammer Load and the queries while
// a writer publishes 1000 snapshots. Snapshot version v allows exactly the address
// versionAddr(v) for trunk "t"; a reader must never see any other answer, nor a version
// going backwards.
func TestHolderConcurrentSwap(t *testing.T) {
	versionAddr := func(v uint64) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(v >> 8), byte(v)}) }
	dataset := func(v uint64) *Dataset {
		ds := &Dataset{Version: v, ACLs: []IPACL{mkACL("acl-t", versionAddr(v).String())},
			Trunks: []Trunk{mkTrunk("t", "acl-t")}}
		for i := range 50 { // background trunks, so the table is not trivial
			id := fmt.Sprintf("bg-%d", i)
			ds.ACLs = append(ds.ACLs, mkACL("acl-"+id, fmt.Sprintf("10.%d.0.0/16", i+1)))
			ds.Trunks = append(ds.Trunks, mkTrunk(TrunkID(id), "acl-"+id))
		}
		return ds
	}
	const versions = 1000
	var h Holder
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for !stop.Load() {
				s := h.Load()
				if s == nil {
					if s.Allows("t", versionAddr(1)) {
						t.Error("nil snapshot allows")
					}
					continue
				}
				v := s.Version()
				if v < last {
					t.Errorf("version went back from %d to %d", last, v)
				}
				last = v
				if id, ok := s.MatchSource(versionAddr(v)); !ok || id != "t" {
					t.Errorf("v%d: MatchSource(%v) = %q, %v", v, versionAddr(v), id, ok)
				}
				if !s.Allows("t", versionAddr(v)) || s.Allows("t", versionAddr(v-1)) || s.Allows("t", versionAddr(v+1)) {
					t.Errorf("v%d: Allows answers for another version", v)
				}
				if !s.Listed(versionAddr(v)) || s.Listed(versionAddr(v+1)) {
					t.Errorf("v%d: Listed answers for another version", v)
				}
				if id, ok := s.MatchSource(aa("10.7.1.1")); !ok || id != "bg-6" {
					t.Errorf("v%d: background trunk lost: %q, %v", v, id, ok)
				}
				reads.Add(1)
			}
		}()
	}
	s := mustCompile(t, dataset(1))
	h.Store(s)
	for v := uint64(2); v <= versions; v++ {
		var err error
		if v%100 == 0 {
			s, err = Compile(dataset(v)) // full reload now and then, as the store does
		} else {
			s, err = s.WithACL(mkACL("acl-t", versionAddr(v).String()), v)
		}
		if err != nil {
			t.Fatal(err)
		}
		h.Store(s)
	}
	stop.Store(true)
	wg.Wait()
	if h.Load().Version() != versions {
		t.Errorf("final version %d", h.Load().Version())
	}
	t.Logf("%d consistent reads while swapping %d snapshots", reads.Load(), versions)
}
