package main

import "testing"

// releases runs a releaser over ticks (true: busy) with a large heap and returns the ticks
// (0-based) at which it released.
func releases(r *releaser, ticks []bool, retained uint64) []int {
	var at []int
	for i, busy := range ticks {
		var allocated uint64
		if busy {
			allocated = idleAllocBytes + 1
		}
		if r.step(allocated, retained) {
			at = append(at, i)
		}
	}
	return at
}

func quietTicks(n int) []bool { return make([]bool, n) }

func TestReleaser(t *testing.T) {
	const big, small = minRetainedBytes + 1, minRetainedBytes - 1
	// Start-up, then a quiet period with no load before it: never (a release as traffic
	// starts would cost that traffic latency).
	var r releaser
	if at := releases(&r, quietTicks(60), big); len(at) != 0 {
		t.Fatalf("released at %v with no load before", at)
	}
	// Load, then quiet: the first release after quietBeforeRelease quiet ticks, then
	// every releaseEvery, maxIdleReleases in all.
	ticks := append([]bool{true, true, true}, quietTicks(80)...)
	at := releases(&r, ticks, big)
	if len(at) != maxIdleReleases {
		t.Fatalf("released %d times (%v), want %d", len(at), at, maxIdleReleases)
	}
	for i, tick := range at {
		if want := 3 + quietBeforeRelease - 1 + i*releaseEvery; tick != want {
			t.Fatalf("release %d at tick %d, want %d (all: %v)", i, tick, want, at)
		}
	}
	// Load coming back resets the count: the next quiet period releases again.
	if at := releases(&r, append([]bool{true}, quietTicks(quietBeforeRelease)...), big); len(at) != 1 {
		t.Fatalf("after new load: released at %v, want once", at)
	}
	// Busy ticks never release; a small heap is not worth a forced GC.
	r = releaser{}
	if at := releases(&r, []bool{true, true, true, true}, big); len(at) != 0 {
		t.Fatalf("released under load at %v", at)
	}
	if at := releases(&r, quietTicks(40), small); len(at) != 0 {
		t.Fatalf("released a small heap at %v", at)
	}
}
